//! The networks fkp trains, built with dfdx from graphs: the built-in
//! architectures are graph presets ([`presets`]), and a pipeline may lay its
//! own layers over one or write a network of its own ([`graph`]). One builder
//! ([`net`]) turns any graph into a network. Plus the masked loss.
//!
//! Every network takes grey images `(batch, 1, side, side)` scaled to [0, 1]
//! (repeated to `channels` channels) and returns `(batch, outputs)` normalised
//! coordinates.

pub mod graph;
pub mod kinds;
mod layers;
pub mod loss;
pub mod net;
pub mod presets;

use dfdx::prelude::*;

use crate::config::{ConfigError, ConfigErrorKind};

pub use graph::Network;
pub use net::GraphNet;
pub use presets::Arch;

/// What a network is built from: the graph and the data's sizes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub graph: Network,
    /// Image side in pixels.
    pub side: usize,
    /// Output width: two per keypoint.
    pub outputs: usize,
}

pub type Images<D, T = NoneTape> = Tensor<(usize, Const<1>, usize, usize), f32, D, T>;
pub type Outputs<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Shape(String),
    #[error("cannot build the network: {0}")]
    Device(String),
}

type Map<D, T> = Tensor<(usize, usize, usize, usize), f32, D, T>;

/// A device fkp trains on: dfdx's CPU, or its CUDA device with the `cuda` feature.
/// dfdx keeps its convolution and pooling kernels' traits private, so they are
/// reached through this trait, implemented where the device is known.
/// `CopyRange` (fkp's patch) reads and writes device buffers a chunk at a time,
/// for checkpoints.
pub trait Backend: Device<f32> + Cache + CopyRange<f32> + TensorToArray<Rank0, f32, Array = f32> {
    /// `x` convolved with `weight` `(out, in, k, k)`.
    fn conv2d<T: Tape<f32, Self>>(
        x: Map<Self, T>,
        weight: Map<Self, NoneTape>,
        stride: usize,
        padding: usize,
    ) -> Result<Map<Self, T>, Self::Err>;

    fn pool2d<T: Tape<f32, Self>>(
        x: Map<Self, T>,
        kind: dfdx::tensor_ops::Pool2DKind,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Map<Self, T>, Self::Err>;

    /// `x` enlarged `factor` times in each direction.
    fn upsample<T: Tape<f32, Self> + 'static>(
        x: Map<Self, T>,
        factor: usize,
        mode: kinds::UpsampleMode,
    ) -> Result<Map<Self, T>, Self::Err>;
}

macro_rules! backend {
    ($device:ty) => {
        impl Backend for $device {
            fn conv2d<T: Tape<f32, Self>>(
                x: Map<Self, T>,
                weight: Map<Self, NoneTape>,
                stride: usize,
                padding: usize,
            ) -> Result<Map<Self, T>, Self::Err> {
                (x, weight).try_conv2d(stride, padding, 1usize, 1usize)
            }

            fn pool2d<T: Tape<f32, Self>>(
                x: Map<Self, T>,
                kind: dfdx::tensor_ops::Pool2DKind,
                kernel: usize,
                stride: usize,
                padding: usize,
            ) -> Result<Map<Self, T>, Self::Err> {
                x.try_pool2d(kind, kernel, stride, padding, 1usize)
            }

            fn upsample<T: Tape<f32, Self> + 'static>(
                x: Map<Self, T>,
                factor: usize,
                mode: kinds::UpsampleMode,
            ) -> Result<Map<Self, T>, Self::Err> {
                use dfdx::tensor_ops::{Bilinear, NearestNeighbor};
                let (_, _, h, w) = *x.shape();
                match mode {
                    kinds::UpsampleMode::Nearest => {
                        x.try_upscale2d_like(NearestNeighbor, h * factor, w * factor)
                    }
                    kinds::UpsampleMode::Bilinear => x.try_upscale2d_like(Bilinear, h * factor, w * factor),
                }
            }
        }
    };
}

backend!(Cpu);
#[cfg(feature = "cuda")]
backend!(Cuda);

impl ModelSpec {
    /// Checks that every layer can take what it gets, and returns the summary.
    pub fn check(&self) -> Result<graph::shape::Summary, ModelError> {
        graph::shape::infer(&self.graph, self.side, Some(self.outputs))
            .map_err(|e| ModelError::Shape(shape_error(&e).to_string()))
    }

    /// Builds the network on `dev`, its weights drawn from the device's random numbers.
    pub fn build<D: Backend>(&self, dev: &D) -> Result<GraphNet<f32, D>, ModelError> {
        let summary = self.check()?;
        GraphNet::build(dev, &self.graph, &summary, self.outputs)
    }
}

/// A shape error as a configuration error: at the file and line of the layer,
/// when it was read from one.
pub fn shape_error(error: &graph::shape::ShapeError) -> ConfigError {
    let kind = ConfigErrorKind::InvalidValue {
        key: "model".into(),
        message: error.to_string(),
    };
    match &error.at {
        Some(at) => ConfigError::new(kind, at),
        None => ConfigError::without_location(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forward and backward on a tiny batch: the output has the data's width
    /// and the loss is finite.
    fn forward_backward(spec: &ModelSpec) -> (usize, usize, f32) {
        let dev = Cpu::seed_from_u64(3);
        let mut network = spec.build(&dev).unwrap();
        let x: Images<Cpu> = dev.sample_uniform_like(&(2, Const, spec.side, spec.side));
        let grads = network.alloc_grads();
        let y = network.forward_mut(x.traced(grads));
        let (rows, cols) = *y.shape();
        let target: Outputs<Cpu> = dev.zeros_like(&(rows, cols));
        let mask: Outputs<Cpu> = dev.ones_like(&(rows, cols));
        let loss = loss::masked_mse(y, target, mask);
        let value = loss.array();
        let _ = loss.backward();
        (rows, cols, value)
    }

    #[test]
    fn every_preset_trains_a_step_and_counts_its_parameters_as_pytorch() {
        // PyTorch's counts for one channel and 30 outputs (bench/torch_train_speed.py).
        let pytorch = [
            (Arch::LeNet, 8_051_502),
            (Arch::AlexNet, 23_557_982),
            (Arch::ResNet18, 11_185_630),
            (Arch::ResNet34, 21_293_790),
            (Arch::ResNet50, 23_563_230),
            (Arch::Darknet53, 40_615_102),
        ];
        for (arch, parameters) in pytorch {
            let at_96 = ModelSpec {
                graph: arch.graph(1),
                side: 96,
                outputs: 30,
            };
            let built = at_96.build(&Cpu::default()).unwrap();
            assert_eq!(built.num_trainable_params(), parameters, "{arch:?}");
            assert_eq!(at_96.check().unwrap().parameters, parameters, "{arch:?}");
            for channels in [1, 3] {
                let side = if arch == Arch::AlexNet { 72 } else { 40 };
                let spec = ModelSpec {
                    graph: arch.graph(channels),
                    side,
                    outputs: 6,
                };
                let (rows, cols, loss) = forward_backward(&spec);
                assert_eq!((rows, cols), (2, 6), "{arch:?} x{channels}");
                assert!(loss.is_finite(), "{arch:?} x{channels}: loss {loss}");
            }
        }
    }

    #[test]
    fn too_many_poolings_name_the_layer_and_the_shape_it_met() {
        let spec = ModelSpec {
            graph: Arch::AlexNet.graph(1),
            side: 20,
            outputs: 30,
        };
        let error = spec.build(&Cpu::default()).unwrap_err().to_string();
        assert!(
            error.contains("layers.7 (maxpool 3/2) gets a 1x1 map from a 20x20 input, smaller than its 3x3 window: too many poolings"),
            "{error}"
        );
        assert!(error.contains("src/models/presets/alexnet.toml:4:"), "{error}");
    }

    #[test]
    fn weights_are_named_after_the_graph() {
        let spec = ModelSpec {
            graph: Arch::ResNet18.graph(1),
            side: 96,
            outputs: 30,
        };
        let network = spec.build(&Cpu::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        network.save_safetensors(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let file = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
        for expected in [
            "layers.0.weight",
            "layers.1.scale",
            "layers.1.running_var",
            "layers.4.0.body.3.weight",
            "layers.5.0.projection.0.weight",
            "layers.5.0.projection.1.bias",
            "output.weight",
            "output.bias",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.starts_with("layers.4.0.projection")),
            "identity shortcuts have no weights"
        );
        // Dense layers are named like the others.
        let lenet = ModelSpec {
            graph: Arch::LeNet.graph(1),
            side: 96,
            outputs: 30,
        };
        let lenet_path = dir.path().join("lenet.safetensors");
        lenet
            .build(&Cpu::default())
            .unwrap()
            .save_safetensors(&lenet_path)
            .unwrap();
        let bytes = std::fs::read(&lenet_path).unwrap();
        let file = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut lenet_names: Vec<&str> = file.names().into_iter().collect();
        lenet_names.sort();
        assert_eq!(
            lenet_names,
            [
                "head.0.bias",
                "head.0.weight",
                "head.3.bias",
                "head.3.weight",
                "layers.0.bias",
                "layers.0.weight",
                "layers.4.bias",
                "layers.4.weight",
                "layers.8.bias",
                "layers.8.weight",
                "output.bias",
                "output.weight"
            ]
        );
        // And a checkpoint loads back into a network built the same way.
        let mut again = spec.build(&Cpu::seed_from_u64(9)).unwrap();
        again.load_safetensors(&path).unwrap();
        let weight = |n: &GraphNet<f32, Cpu>| n.output.as_ref().unwrap().weight.as_vec();
        assert_eq!(weight(&again), weight(&network));
    }
}
