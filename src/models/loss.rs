//! The training losses, over the targets a mask selects. With `prepare.missing
//! = "mask"` the mask is 0 for missing labels, so they contribute neither loss
//! nor gradient (ML-ResNet's masked loss); otherwise it is all ones.
//!
//! Targets are normalised coordinates (pixels / half the side, centred). MSE
//! works on them as they are; the other losses work on errors in pixels, so
//! their settings (`smooth_l1_beta`, `wing_w`, `wing_epsilon`, `awing_*`) are
//! in pixels whatever the image side.

use dfdx::prelude::*;

/// `[train] loss` with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossFunction {
    /// Mean squared error of the normalised coordinates.
    Mse,
    /// Mean absolute error in pixels.
    L1,
    /// PyTorch's smooth L1 in pixels: `0.5 x² / beta` below `beta`, `|x| - 0.5 beta` above.
    SmoothL1 { beta: f32 },
    /// Wing loss (Feng et al., CVPR 2018) in pixels: `w ln(1 + |x| / epsilon)`
    /// below `w`, `|x| - C` above, where `C` joins the two.
    Wing { w: f32, epsilon: f32 },
    /// Adaptive wing loss (Wang et al., ICCV 2019) on errors in pixels:
    /// `omega ln(1 + (|x| / epsilon)^alpha)` below `theta`, linear above with
    /// the slope and value that join it there. The paper's exponent is
    /// `alpha - y` with `y` a heatmap's target intensity; a coordinate has
    /// none, so the exponent is `alpha`: smooth at zero (no kink as in L1 or
    /// wing), logarithmic up to `theta`.
    AdaptiveWing {
        omega: f32,
        theta: f32,
        epsilon: f32,
        alpha: f32,
    },
}

impl LossFunction {
    /// The loss of `pred` against `target` over the values `mask` selects, as a
    /// mean over them; `pixels_per_unit` turns normalised coordinates into pixels.
    pub fn masked<D, T>(
        self,
        pred: Tensor<(usize, usize), f32, D, T>,
        target: Tensor<(usize, usize), f32, D>,
        mask: Tensor<(usize, usize), f32, D>,
        pixels_per_unit: f32,
    ) -> Tensor<Rank0, f32, D, T>
    where
        D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>,
        T: Tape<f32, D>,
    {
        let each = match self {
            LossFunction::Mse => return masked_mse(pred, target, mask),
            LossFunction::L1 => (pred - target).abs() * pixels_per_unit,
            LossFunction::SmoothL1 { beta } => {
                let pred_px = pred * pixels_per_unit;
                // dfdx's Huber error with delta = beta is beta times smooth L1.
                pred_px.huber_error(target * pixels_per_unit, beta) / beta
            }
            LossFunction::Wing { w, epsilon } => {
                let error = ((pred - target) * pixels_per_unit).abs();
                let near = error.lt(w);
                let joint = w - w * (1.0 + w / epsilon).ln();
                let linear = error.with_empty_tape() - joint;
                let log = (error / epsilon + 1.0).ln() * w;
                near.choose(log, linear)
            }
            LossFunction::AdaptiveWing {
                omega,
                theta,
                epsilon,
                alpha,
            } => {
                let error = ((pred - target) * pixels_per_unit).abs();
                let near = error.lt(theta);
                let (slope, offset) = adaptive_wing_joint(omega, theta, epsilon, alpha);
                let linear = error.with_empty_tape() * slope - offset;
                let log = ((error / epsilon).powf(alpha) + 1.0).ln() * omega;
                near.choose(log, linear)
            }
        };
        masked_mean(each, mask)
    }
}

/// Adaptive wing's linear part above `theta`, `slope |x| - offset`: the
/// slope and value of the logarithmic part at `theta`.
fn adaptive_wing_joint(omega: f32, theta: f32, epsilon: f32, alpha: f32) -> (f32, f32) {
    let ratio = theta / epsilon;
    let slope = omega * alpha * ratio.powf(alpha - 1.0) / (epsilon * (1.0 + ratio.powf(alpha)));
    let offset = theta * slope - omega * (1.0 + ratio.powf(alpha)).ln();
    (slope, offset)
}

/// `sum(mask * (pred - target)^2) / max(1, sum(mask))`.
pub fn masked_mse<D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>, T: Tape<f32, D>>(
    pred: Tensor<(usize, usize), f32, D, T>,
    target: Tensor<(usize, usize), f32, D>,
    mask: Tensor<(usize, usize), f32, D>,
) -> Tensor<Rank0, f32, D, T> {
    masked_mean((pred - target).square(), mask)
}

/// `sum(mask * each) / max(1, sum(mask))`.
fn masked_mean<D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>, T: Tape<f32, D>>(
    each: Tensor<(usize, usize), f32, D, T>,
    mask: Tensor<(usize, usize), f32, D>,
) -> Tensor<Rank0, f32, D, T> {
    let count = mask.clone().sum::<Rank0, _>().array().max(1.0);
    (each * mask).sum::<Rank0, _>() / count
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

    /// The loss of each error (in pixels), by its formula.
    fn reference(loss: LossFunction, x: f64) -> f64 {
        let a = x.abs();
        match loss {
            LossFunction::Mse => unreachable!("MSE is checked on its own"),
            LossFunction::L1 => a,
            LossFunction::SmoothL1 { beta } => {
                let beta = f64::from(beta);
                if a < beta {
                    0.5 * a * a / beta
                } else {
                    a - 0.5 * beta
                }
            }
            LossFunction::Wing { w, epsilon } => {
                let (w, epsilon) = (f64::from(w), f64::from(epsilon));
                if a < w {
                    w * (1.0 + a / epsilon).ln()
                } else {
                    a - (w - w * (1.0 + w / epsilon).ln())
                }
            }
            LossFunction::AdaptiveWing {
                omega,
                theta,
                epsilon,
                alpha,
            } => {
                let [omega, theta, epsilon, alpha] = [omega, theta, epsilon, alpha].map(f64::from);
                let log = |a: f64| omega * (1.0 + (a / epsilon).powf(alpha)).ln();
                if a < theta {
                    log(a)
                } else {
                    // The line through (theta, log(theta)) with log's slope there.
                    let h = 1e-6;
                    let slope = (log(theta + h) - log(theta - h)) / (2.0 * h);
                    log(theta) + slope * (a - theta)
                }
            }
        }
    }

    const PIXEL_LOSSES: [LossFunction; 5] = [
        LossFunction::L1,
        LossFunction::SmoothL1 { beta: 1.0 },
        LossFunction::Wing {
            w: 10.0,
            epsilon: 2.0,
        },
        LossFunction::AdaptiveWing {
            omega: 14.0,
            theta: 0.5,
            epsilon: 1.0,
            alpha: 2.1,
        },
        // theta well inside the errors, so both parts are checked.
        LossFunction::AdaptiveWing {
            omega: 10.0,
            theta: 5.0,
            epsilon: 2.0,
            alpha: 2.1,
        },
    ];

    #[test]
    fn pixel_losses_follow_their_formulas_and_skip_missing_labels() {
        let dev = Cpu::default();
        // Errors of -30, -4, -0.5, 0.25, 3 and 12 pixels at 48 pixels per unit;
        // the fifth value is a missing label.
        let errors_px = [-30.0f32, -4.0, -0.5, 0.25, 3.0, 12.0];
        let target = vec![0.1f32; 6];
        let pred: Vec<f32> = errors_px.iter().map(|e| 0.1 + e / 48.0).collect();
        let mask = vec![1.0f32, 1.0, 1.0, 1.0, 0.0, 1.0];
        for loss in PIXEL_LOSSES {
            let value = loss
                .masked(
                    dev.tensor_from_vec(pred.clone(), (2, 3)),
                    dev.tensor_from_vec(target.clone(), (2, 3)),
                    dev.tensor_from_vec(mask.clone(), (2, 3)),
                    48.0,
                )
                .array();
            let want: f64 = errors_px
                .iter()
                .zip(&mask)
                .map(|(&e, &m)| f64::from(m) * reference(loss, f64::from(e)))
                .sum::<f64>()
                / 5.0;
            assert!(
                (f64::from(value) - want).abs() < 1e-3 * want.max(1.0),
                "{loss:?}: {value} vs {want}"
            );
        }
    }

    #[test]
    fn pixel_losses_have_the_gradients_of_their_formulas() {
        let dev = Cpu::default();
        let errors_px = [-30.0f32, -4.0, -0.5, 0.25, 3.0, 12.0];
        let pred_values: Vec<f32> = errors_px.iter().map(|e| e / 48.0).collect();
        let mask = vec![1.0f32, 1.0, 1.0, 1.0, 0.0, 1.0];
        for loss in PIXEL_LOSSES {
            let pred: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(pred_values.clone(), (2, 3));
            let value = loss.masked(
                pred.leaky_trace(),
                dev.zeros_like(&(2, 3)),
                dev.tensor_from_vec(mask.clone(), (2, 3)),
                48.0,
            );
            let grads = value.backward().get(&pred).as_vec();
            for (i, (&e, &m)) in errors_px.iter().zip(&mask).enumerate() {
                // d/dpred of reference(48 pred) / 5, by central differences.
                let h = 1e-4;
                let x = f64::from(e);
                let slope = (reference(loss, x + h) - reference(loss, x - h)) / (2.0 * h);
                let want = f64::from(m) * slope * 48.0 / 5.0;
                let got = f64::from(grads[i]);
                assert!(
                    (got - want).abs() < 1e-3 * want.abs().max(1.0),
                    "{loss:?} at {e} px: {got} vs {want}"
                );
            }
        }
    }
}
