//! The networks fkp trains, built with dfdx: the seed paper's LeNet-style CNN,
//! AlexNet, ResNet-18/34/50 and Darknet-53, each ending in a runtime-sized
//! regression head, plus the masked loss.
//!
//! Every network takes grey images `(batch, 1, side, side)` scaled to [0, 1]
//! (a `GreyTo<C>` first layer repeats the channel when `channels = 3`) and
//! returns `(batch, outputs)` normalised coordinates.

mod alexnet;
mod darknet;
mod layers;
mod lenet;
pub mod loss;
mod resnet;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::prelude::*;

crate::config_choice! {
    /// The architectures of `[model] arch`.
    pub enum Arch {
        LeNet = "lenet",
        AlexNet = "alexnet",
        ResNet18 = "resnet18",
        ResNet34 = "resnet34",
        ResNet50 = "resnet50",
        Darknet53 = "darknet53",
    }
}

/// What a network is built from: the config's choices and the data's sizes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    /// 1, or 3 to repeat the grey channel.
    pub channels: usize,
    /// Overrides the head's dropout (lenet and alexnet: 0.5; others: none).
    pub dropout: Option<f64>,
    /// Image side in pixels.
    pub side: usize,
    /// Output width: two per keypoint.
    pub outputs: usize,
}

/// How the layers that shrink the image change its side: enough to tell the
/// smallest image an architecture accepts and the width of its flattened features.
pub struct Geometry {
    /// (kernel, stride, padding) of each side-changing layer, in order.
    pub layers: &'static [(usize, usize, usize)],
    pub channels_out: usize,
}

impl Geometry {
    /// The side after all layers, or None when the image is too small.
    pub fn output_side(&self, side: usize) -> Option<usize> {
        self.layers.iter().try_fold(side, |s, &(k, stride, pad)| {
            let padded = s + 2 * pad;
            (padded >= k).then(|| (padded - k) / stride + 1)
        })
    }

    fn flat_width(&self, side: usize) -> usize {
        let out = self.output_side(side).unwrap_or(0);
        self.channels_out * out * out
    }

    /// The smallest side that leaves at least one pixel.
    pub fn min_side(&self) -> usize {
        (1..4096)
            .find(|&s| self.output_side(s).is_some_and(|o| o > 0))
            .unwrap_or(4096)
    }
}

impl Arch {
    pub fn geometry(self) -> &'static Geometry {
        match self {
            Arch::LeNet => &lenet::GEOMETRY,
            Arch::AlexNet => &alexnet::GEOMETRY,
            Arch::ResNet18 | Arch::ResNet34 | Arch::ResNet50 => &resnet::GEOMETRY,
            Arch::Darknet53 => &darknet::GEOMETRY,
        }
    }
}

pub type Images<D, T = NoneTape> = Tensor<(usize, Const<1>, usize, usize), f32, D, T>;
pub type Outputs<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

/// What the training and prediction code needs of a network, whatever its type.
pub trait Network<D: Device<f32>>:
    TensorCollection<f32, D>
    + Module<Images<D>, Output = Outputs<D>, Error = D::Err>
    + ModuleMut<Images<D, OwnedTape<f32, D>>, Output = Outputs<D, OwnedTape<f32, D>>, Error = D::Err>
{
}

impl<D: Device<f32>, N> Network<D> for N where
    N: TensorCollection<f32, D>
        + Module<Images<D>, Output = Outputs<D>, Error = D::Err>
        + ModuleMut<Images<D, OwnedTape<f32, D>>, Output = Outputs<D, OwnedTape<f32, D>>, Error = D::Err>
{
}

/// Work to do with a freshly built network of any architecture. Each
/// architecture is its own type, so this is how one piece of code serves all.
pub trait WithNetwork<D: Device<f32>> {
    type Output;
    fn run<N: Network<D> + 'static>(self, network: N) -> Self::Output;
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{arch} needs images of at least {min}x{min} pixels; these are {side}x{side}")]
    TooSmall {
        arch: &'static str,
        min: usize,
        side: usize,
    },
    #[error("channels must be 1 or 3, not {0}")]
    Channels(usize),
    #[error("cannot build the network: {0}")]
    Device(String),
}

/// A device fkp trains on: dfdx's CPU, or its CUDA device with the `cuda` feature.
/// Each architecture is built for each backend in [`backend!`], where the
/// compiler can check every layer's kernels for that device.
pub trait Backend: Device<f32> + Cache + DeviceBuildExt + TensorToArray<Rank0, f32, Array = f32> {
    /// Builds the network `spec` describes on `dev` and hands it to `job`.
    fn build_network<W: WithNetwork<Self>>(
        dev: &Self,
        spec: &ModelSpec,
        job: W,
    ) -> Result<W::Output, ModelError>;
}

/// Checks that `spec` can be built at all: the image must survive every
/// downsampling layer, and `channels` must be 1 or 3.
fn check(spec: &ModelSpec) -> Result<(), ModelError> {
    let geometry = spec.arch.geometry();
    if geometry.output_side(spec.side).is_none_or(|s| s == 0) {
        return Err(ModelError::TooSmall {
            arch: spec.arch.name(),
            min: geometry.min_side(),
            side: spec.side,
        });
    }
    if !matches!(spec.channels, 1 | 3) {
        return Err(ModelError::Channels(spec.channels));
    }
    Ok(())
}

macro_rules! backend {
    ($device:ty) => {
        impl Backend for $device {
            fn build_network<W: WithNetwork<Self>>(
                dev: &Self,
                spec: &ModelSpec,
                job: W,
            ) -> Result<W::Output, ModelError> {
                check(spec)?;
                let e = |e: <$device as HasErr>::Err| ModelError::Device(format!("{e:?}"));
                Ok(match (spec.arch, spec.channels == 3) {
                    (Arch::LeNet, false) => job.run(lenet::build::<1, Self>(dev, spec).map_err(e)?),
                    (Arch::LeNet, true) => job.run(lenet::build::<3, Self>(dev, spec).map_err(e)?),
                    (Arch::AlexNet, false) => job.run(alexnet::build::<1, Self>(dev, spec).map_err(e)?),
                    (Arch::AlexNet, true) => job.run(alexnet::build::<3, Self>(dev, spec).map_err(e)?),
                    (Arch::ResNet18, false) => job.run(resnet::build18::<1, Self>(dev, spec).map_err(e)?),
                    (Arch::ResNet18, true) => job.run(resnet::build18::<3, Self>(dev, spec).map_err(e)?),
                    (Arch::ResNet34, false) => job.run(resnet::build34::<1, Self>(dev, spec).map_err(e)?),
                    (Arch::ResNet34, true) => job.run(resnet::build34::<3, Self>(dev, spec).map_err(e)?),
                    (Arch::ResNet50, false) => job.run(resnet::build50::<1, Self>(dev, spec).map_err(e)?),
                    (Arch::ResNet50, true) => job.run(resnet::build50::<3, Self>(dev, spec).map_err(e)?),
                    (Arch::Darknet53, false) => job.run(darknet::build::<1, Self>(dev, spec).map_err(e)?),
                    (Arch::Darknet53, true) => job.run(darknet::build::<3, Self>(dev, spec).map_err(e)?),
                })
            }
        }
    };
}

backend!(Cpu);
#[cfg(feature = "cuda")]
backend!(Cuda);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_gives_the_flattened_width_and_the_smallest_side() {
        assert_eq!(lenet::GEOMETRY.output_side(96), Some(11));
        assert_eq!(lenet::GEOMETRY.flat_width(96), 128 * 11 * 11);
        assert_eq!(alexnet::GEOMETRY.output_side(96), Some(2));
        assert_eq!(resnet::GEOMETRY.output_side(96), Some(3));
        assert_eq!(lenet::GEOMETRY.min_side(), 16);
        assert!(alexnet::GEOMETRY.min_side() > 60);
    }

    /// Forward and backward on a tiny batch for every architecture and both
    /// channel counts: the output has the data's width and the loss is finite.
    struct ForwardBackward {
        batch: usize,
        side: usize,
    }

    impl WithNetwork<Cpu> for ForwardBackward {
        type Output = (usize, usize, f32);
        fn run<N: Network<Cpu> + 'static>(self, mut network: N) -> Self::Output {
            let dev = Cpu::seed_from_u64(3);
            let x: Images<Cpu> = dev.sample_uniform_like(&(self.batch, Const, self.side, self.side));
            let mut grads = network.alloc_grads();
            let y = network.forward_mut(x.traced(grads));
            let (rows, cols) = *y.shape();
            let target: Outputs<Cpu> = dev.zeros_like(&(rows, cols));
            let mask: Outputs<Cpu> = dev.ones_like(&(rows, cols));
            let loss = loss::masked_mse(y, target, mask);
            let value = loss.array();
            grads = loss.backward();
            network.zero_grads(&mut grads);
            (rows, cols, value)
        }
    }

    #[test]
    fn every_architecture_runs_forward_and_backward() {
        let dev = Cpu::seed_from_u64(0);
        for arch in [
            Arch::LeNet,
            Arch::AlexNet,
            Arch::ResNet18,
            Arch::ResNet34,
            Arch::ResNet50,
            Arch::Darknet53,
        ] {
            for channels in [1, 3] {
                let side = arch.geometry().min_side().max(32) + 8;
                let spec = ModelSpec {
                    arch,
                    channels,
                    dropout: None,
                    side,
                    outputs: 6,
                };
                let (rows, cols, loss) =
                    Cpu::build_network(&dev, &spec, ForwardBackward { batch: 2, side }).unwrap();
                assert_eq!((rows, cols), (2, 6), "{arch:?} x{channels}");
                assert!(loss.is_finite(), "{arch:?} x{channels}: loss {loss}");
            }
        }
    }

    #[test]
    fn too_small_images_are_a_clear_error() {
        let dev = Cpu::default();
        let spec = ModelSpec {
            arch: Arch::AlexNet,
            channels: 1,
            dropout: None,
            side: 24,
            outputs: 30,
        };
        let error = Cpu::build_network(&dev, &spec, ForwardBackward { batch: 1, side: 24 }).unwrap_err();
        assert!(
            error.to_string().starts_with("alexnet needs images of at least"),
            "{error}"
        );
    }
}
