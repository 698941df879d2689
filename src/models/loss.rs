//! Mean squared error over the targets a mask selects. With `prepare.missing =
//! "mask"` the mask is 0 for missing labels, so they contribute neither loss
//! nor gradient (ML-ResNet's masked loss); otherwise it is all ones.

use dfdx::prelude::*;

/// `sum(mask * (pred - target)^2) / max(1, sum(mask))`.
pub fn masked_mse<D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>, T: Tape<f32, D>>(
    pred: Tensor<(usize, usize), f32, D, T>,
    target: Tensor<(usize, usize), f32, D>,
    mask: Tensor<(usize, usize), f32, D>,
) -> Tensor<Rank0, f32, D, T> {
    let count = mask.clone().sum::<Rank0, _>().array().max(1.0);
    let squared = (pred - target).square() * mask;
    squared.sum::<Rank0, _>() / count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_labels_get_exactly_zero_gradient() {
        let dev = Cpu::default();
        let pred: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(vec![1.0, 2.0, 3.0, 4.0], (2, 2));
        let target = dev.tensor_from_vec(vec![0.0, 0.0, 99.0, 0.0], (2, 2));
        let mask = dev.tensor_from_vec(vec![1.0, 1.0, 0.0, 1.0], (2, 2));
        let loss = masked_mse(pred.leaky_trace(), target, mask);
        // (1 + 4 + 16) / 3 labelled values; the 99 is ignored.
        assert!((loss.array() - 7.0).abs() < 1e-6);
        let grads = loss.backward();
        let g = grads.get(&pred).as_vec();
        assert_eq!(g[2], 0.0, "no gradient from the missing label");
        assert!((g[0] - 2.0 * 1.0 / 3.0).abs() < 1e-6);
        assert!((g[3] - 2.0 * 4.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn a_full_mask_is_plain_mse() {
        let dev = Cpu::default();
        let pred: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(vec![1.0, -1.0], (1, 2));
        let target = dev.tensor_from_vec(vec![0.0, 0.0], (1, 2));
        let mask = dev.ones_like(&(1, 2));
        assert!((masked_mse(pred, target, mask).array() - 1.0).abs() < 1e-6);
    }
}
