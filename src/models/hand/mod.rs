//! The hand-typed networks the graph presets replace, kept (in tests only)
//! until the presets are shown to match them: same parameter count, and the
//! same output for the same weights.

mod alexnet;
mod darknet;
mod lenet;
mod resnet;

use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorRef,
};
use dfdx::prelude::*;

use super::{Arch, Images, ModelSpec as GraphSpec, Outputs};

pub struct ModelSpec {
    pub dropout: Option<f64>,
    pub side: usize,
    pub outputs: usize,
}

pub struct Geometry {
    pub layers: &'static [(usize, usize, usize)],
    pub channels_out: usize,
}

impl Geometry {
    fn output_side(&self, side: usize) -> Option<usize> {
        self.layers.iter().try_fold(side, |s, &(k, stride, pad)| {
            let padded = s + 2 * pad;
            (padded >= k).then(|| (padded - k) / stride + 1)
        })
    }

    fn flat_width(&self, side: usize) -> usize {
        let out = self.output_side(side).unwrap_or(0);
        self.channels_out * out * out
    }
}

/// Every tensor's values, in the order dfdx walks them.
struct Collect(Vec<Vec<f32>>);
impl TensorVisitor<f32, Cpu> for Collect {
    type Viewer = ViewTensorRef;
    type Err = CpuError;
    type E2 = f32;
    type D2 = Cpu;
    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, Cpu>,
        t: &Tensor<S, f32, Cpu>,
    ) -> Result<Option<Tensor<S, f32, Cpu>>, CpuError> {
        self.0.push(t.as_vec());
        Ok(None)
    }
}

/// Writes values into every tensor, in walk order, checking their sizes.
struct Assign(std::vec::IntoIter<Vec<f32>>);
impl TensorVisitor<f32, Cpu> for Assign {
    type Viewer = ViewTensorMut;
    type Err = CpuError;
    type E2 = f32;
    type D2 = Cpu;
    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, Cpu>,
        t: &mut Tensor<S, f32, Cpu>,
    ) -> Result<Option<Tensor<S, f32, Cpu>>, CpuError> {
        let values = self.0.next().expect("as many tensors");
        assert_eq!(values.len(), t.shape().num_elements(), "tensor sizes differ");
        t.copy_from(&values);
        Ok(None)
    }
}

fn values<M: TensorCollection<f32, Cpu>>(m: &M) -> Vec<Vec<f32>> {
    let mut c = Collect(Vec::new());
    M::iter_tensors(&mut RecursiveWalker { m, f: &mut c }).unwrap();
    c.0
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// (hand params, graph params, largest inference difference, largest training difference, same initial weights)
fn compare<N>(hand: &mut N, arch: Arch, channels: usize, side: usize) -> (usize, usize, f32, f32, bool)
where
    N: TensorCollection<f32, Cpu>
        + Module<Images<Cpu>, Output = Outputs<Cpu>>
        + ModuleMut<Images<Cpu, OwnedTape<f32, Cpu>>, Output = Outputs<Cpu, OwnedTape<f32, Cpu>>>,
{
    let dev = Cpu::seed_from_u64(7);
    let spec = GraphSpec {
        graph: arch.graph(channels),
        side,
        outputs: 30,
    };
    let mut graph = spec.build(&dev).unwrap();
    let hand_values = values(hand);
    let same_init = values(&graph) == hand_values;
    let mut assign = Assign(hand_values.into_iter());
    GraphNet::iter_tensors(&mut RecursiveWalker {
        m: &mut graph,
        f: &mut assign,
    })
    .unwrap();
    let x: Images<Cpu> = dev.sample_uniform_like(&(4, Const, side, side));
    let infer = max_diff(
        &hand.forward(x.clone()).as_vec(),
        &graph.forward(x.clone()).as_vec(),
    );
    dev.reseed(11);
    let a = hand.forward_mut(x.clone().traced(hand.alloc_grads())).as_vec();
    dev.reseed(11);
    let b = graph.forward_mut(x.traced(graph.alloc_grads())).as_vec();
    let train = max_diff(&a, &b);
    (
        hand.num_trainable_params(),
        graph.num_trainable_params(),
        infer,
        train,
        same_init,
    )
}

use super::GraphNet;

#[test]
fn presets_match_the_hand_typed_networks() {
    let spec = |side| ModelSpec {
        dropout: None,
        side,
        outputs: 30,
    };
    let mut rows = Vec::new();
    for channels in [1, 3] {
        macro_rules! case {
            ($arch:expr, $build:expr, $side:expr) => {{
                let dev = Cpu::seed_from_u64(7);
                let mut hand = $build(&dev, &spec($side)).unwrap();
                let row = compare(&mut hand, $arch, channels, $side);
                eprintln!("{:?} x{channels}: {:?}", $arch, row);
                rows.push(($arch, channels, row));
            }};
        }
        if channels == 1 {
            case!(Arch::LeNet, lenet::build::<1, Cpu>, 96);
            case!(Arch::AlexNet, alexnet::build::<1, Cpu>, 96);
            case!(Arch::ResNet18, resnet::build18::<1, Cpu>, 96);
            case!(Arch::ResNet34, resnet::build34::<1, Cpu>, 96);
            case!(Arch::ResNet50, resnet::build50::<1, Cpu>, 96);
            case!(Arch::Darknet53, darknet::build::<1, Cpu>, 96);
        } else {
            case!(Arch::LeNet, lenet::build::<3, Cpu>, 96);
            case!(Arch::ResNet18, resnet::build18::<3, Cpu>, 64);
        }
    }
    for (arch, channels, (hand, graph, infer, train, _)) in rows {
        assert_eq!(hand, graph, "{arch:?} x{channels}");
        assert!(
            infer <= 1e-5 && train <= 1e-5,
            "{arch:?} x{channels}: {infer} {train}"
        );
    }
}
