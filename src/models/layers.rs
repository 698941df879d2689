//! A dense layer dfdx lacks: one whose sizes are known only at run time (the
//! output width comes from the data: 30 for Kaggle, 136 for 68 landmarks; the
//! input width from the graph before it).

use dfdx::nn::modules::{Module, NonMutableModule};
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::prelude::*;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

/// Uniform in ±1/sqrt(fan_in), as torch.nn.Linear initialises.
fn reset_uniform<S: Shape, E, D>(t: &mut Tensor<S, E, D>, fan_in: usize) -> Result<(), D::Err>
where
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    let bound = E::ONE / E::from_usize(fan_in.max(1)).unwrap_or(E::ONE).sqrt();
    t.try_fill_with_distr(rand_distr::Uniform::new(-bound, bound))
}

/// `y = x W^T + b` with `in` and `out` chosen at run time.
#[derive(Clone, Debug)]
pub struct RtLinear<E: Dtype, D: Storage<E>> {
    /// `(out, in)`, like torch.nn.Linear.weight.
    pub weight: Tensor<(usize, usize), E, D>,
    pub bias: Tensor<(usize,), E, D>,
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> RtLinear<E, D> {
    pub fn new(dev: &D, inputs: usize, outputs: usize) -> Result<Self, D::Err> {
        let mut weight = dev.try_zeros_like(&(outputs, inputs))?;
        let mut bias = dev.try_zeros_like(&(outputs,))?;
        reset_uniform(&mut weight, inputs)?;
        reset_uniform(&mut bias, inputs)?;
        Ok(RtLinear { weight, bias })
    }
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> RtLinear<E, D> {
    /// The options dfdx's walks see for the weight and the bias. Their shapes only
    /// matter to dfdx's BuildModule, which cannot build a runtime-sized layer;
    /// [`RtLinear::new`] does. Optimisers, gradients and safetensors all work
    /// from the live tensors.
    pub fn weight_options() -> TensorOptions<(usize, usize), E, D> {
        TensorOptions::with_shape((0, 0), true, |t| {
            let fan_in = t.shape().1;
            reset_uniform(t, fan_in)
        })
    }

    pub fn bias_options() -> TensorOptions<(usize,), E, D> {
        TensorOptions::with_shape((0,), true, |t| {
            let n = t.shape().0;
            reset_uniform(t, n)
        })
    }
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for RtLinear<E, D> {
    type To<E2: Dtype, D2: Device<E2>> = RtLinear<E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor("weight", |s| &s.weight, |s| &mut s.weight, Self::weight_options()),
                Self::tensor("bias", |s| &s.bias, |s| &mut s.bias, Self::bias_options()),
            ),
            |(weight, bias)| RtLinear { weight, bias },
        )
    }
}

impl<E: Dtype, D: Storage<E>> NonMutableModule for RtLinear<E, D> {}

impl<B: Dim, K: Dim, E: Dtype, D: Device<E>, T: Tape<E, D>> Module<Tensor<(B, K), E, D, T>>
    for RtLinear<E, D>
{
    type Output = Tensor<(B, usize), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, K), E, D, T>) -> Result<Self::Output, D::Err> {
        let (b, k) = *x.shape();
        let x: Tensor<(B, usize), E, D, T> = x.try_reshape_like(&(b, k.size()))?;
        let weight_t = self.weight.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?;
        let y = x.try_matmul(weight_t)?;
        let shape = *y.shape();
        y.try_add(self.bias.retaped::<T>().try_broadcast_like(&shape)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_linear_maps_any_width() {
        let dev = Cpu::seed_from_u64(0);
        let layer = RtLinear::<f32, Cpu>::new(&dev, 7, 3).unwrap();
        let x: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 7));
        let y = layer.forward(x);
        assert_eq!(*y.shape(), (4, 3));
    }
}
