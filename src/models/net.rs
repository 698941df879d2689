//! The one network type fkp trains: a [`Network`] built into dfdx layers whose
//! sizes are known at run time. Presets and custom graphs alike become a
//! [`GraphNet`]. Each layer is sized from what it gets in the graph's shape
//! inference ([`super::graph::shape::infer`]), which every build runs first.
//! Layers with weights are built as such; the others keep their [`Op`], which
//! is all they need, whatever the dtype and device.
//!
//! Weights are named after the graph (`layers.4.0.body.0.weight`,
//! `head.0.weight`, `output.weight`), which is how they appear in the
//! safetensors checkpoint. They are created in that order from the device's
//! random numbers: convolutions uniform in ±1/sqrt(fan_in) without a random
//! bias, dense layers as torch.nn.Linear, batch norm at scale 1 and shift 0.

use dfdx::nn::modules::{Module, ModuleMut};
use dfdx::nn::tensor_collection::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::nn::{batch_norm_infer, batch_norm_train};
use dfdx::prelude::*;
use dfdx::tensor_ops::Pool2DKind;
use num_traits::Float;
use rand_distr::uniform::SampleUniform;

use super::graph::shape::{Inputs, Shape, Summary};
use super::graph::{BlockUse, Layer, Network, Op, Shortcut};
use super::kinds::{features, soft_argmax_positions};
use super::layers::RtLinear;
use super::{Backend, Images, ModelError, Outputs};

/// Batch norm's constants, as PyTorch's defaults.
const BN_EPSILON: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

type Map<E, D, T> = Tensor<(usize, usize, usize, usize), E, D, T>;
type Flat<E, D, T> = Tensor<(usize, usize), E, D, T>;
type Vector<E, D> = Tensor<(usize,), E, D>;
/// The tape of a training step.
type Taped<D> = OwnedTape<f32, D>;
/// A final `soft_argmax`'s maps as distributions over their cells, `(b * k, h * w)`.
pub type MapDistributions<D> = Flat<f32, D, Taped<D>>;

/// What flows between layers: a batch of maps, or of flat features.
enum Act<D: Storage<f32>, T> {
    Map(Map<f32, D, T>),
    Flat(Flat<f32, D, T>),
}

#[derive(Debug, Clone)]
pub struct GraphNet<E: Dtype, D: Storage<E>> {
    channels: usize,
    pub layers: Layers<E, D>,
    pub head: Layers<E, D>,
    /// None when the network ends in `soft_argmax`, which gives the coordinates.
    pub output: Option<RtLinear<E, D>>,
}

#[derive(Debug, Clone)]
pub struct Layers<E: Dtype, D: Storage<E>>(Vec<NetLayer<E, D>>);

#[derive(Debug, Clone)]
pub enum NetLayer<E: Dtype, D: Storage<E>> {
    Conv(Conv<E, D>),
    BatchNorm(Norm<E, D>),
    Dense(RtLinear<E, D>),
    Block(Vec<NetBlock<E, D>>),
    /// `soft_argmax`: no weights, but the positions it averages over.
    SoftArgmax(Positions),
    /// A layer without weights: its description is all it needs.
    Weightless(Op),
}

/// What `soft_argmax` needs besides its input: the position of each cell of
/// the map, as the coordinates the network predicts.
#[derive(Debug, Clone)]
pub struct Positions {
    temperature: f32,
    /// `(x, y)` of each cell, row by row: `(h * w, 2)`.
    cells: Vec<f32>,
    /// The width of a cell in the targets' coordinates.
    cell_width: f32,
}

impl Positions {
    /// For an `h` x `w` map of a `side` x `side` image.
    fn new(temperature: f64, (h, w): (usize, usize), side: usize) -> Positions {
        Positions {
            temperature: temperature as f32,
            cells: soft_argmax_positions(h, w, side),
            // Targets run from -1 to 1 across the side.
            cell_width: 2.0 / w as f32,
        }
    }

    /// `(b, k, h, w)` maps to `(b, 2k)` coordinates, x then y per keypoint.
    fn forward<D: Device<f32>, T: Tape<f32, D>>(&self, x: Map<f32, D, T>) -> Result<Act<D, T>, D::Err> {
        let (b, k, ..) = *x.shape();
        self.coordinates(self.distributions(x)?, b, k)
    }

    /// Like `forward`, keeping the maps as distributions over their cells,
    /// `(b * k, h * w)`, on the same tape in `kept`: what DSNT's regulariser
    /// compares with the labels.
    fn forward_keeping_maps<D: Device<f32>>(
        &self,
        x: Map<f32, D, Taped<D>>,
        kept: &mut Option<MapDistributions<D>>,
    ) -> Result<Act<D, Taped<D>>, D::Err> {
        let (b, k, ..) = *x.shape();
        // Off the tape and back, as a residual's input: both uses' gradients
        // reach the softmax.
        let (distributions, tape) = self.distributions(x)?.split_tape();
        *kept = Some(distributions.retaped());
        self.coordinates(distributions.put_tape(tape), b, k)
    }

    /// Each map's softmax (after dividing by the temperature): `(b * k, h * w)`.
    fn distributions<D: Device<f32>, T: Tape<f32, D>>(
        &self,
        x: Map<f32, D, T>,
    ) -> Result<Flat<f32, D, T>, D::Err> {
        let (b, k, h, w) = *x.shape();
        x.try_reshape_like(&(b * k, h * w))?
            .try_mul(1.0 / self.temperature)?
            .try_softmax::<Axis<1>>()
    }

    /// The expected position under each distribution, as `(b, 2k)` coordinates.
    fn coordinates<D: Device<f32>, T: Tape<f32, D>>(
        &self,
        distributions: Flat<f32, D, T>,
        b: usize,
        k: usize,
    ) -> Result<Act<D, T>, D::Err> {
        let cells = distributions
            .device()
            .try_tensor_from_vec(self.cells.clone(), (self.cells.len() / 2, 2))?;
        let coordinates = distributions.try_matmul(cells)?;
        Ok(Act::Flat(coordinates.try_reshape_like(&(b, 2 * k))?))
    }
}

#[derive(Debug, Clone)]
pub struct Conv<E: Dtype, D: Storage<E>> {
    /// `(out, in, k, k)`, like torch.nn.Conv2d.weight.
    weight: Map<E, D, NoneTape>,
    bias: Option<Vector<E, D>>,
    stride: usize,
    padding: usize,
}

#[derive(Debug, Clone)]
pub struct Norm<E: Dtype, D: Storage<E>> {
    scale: Vector<E, D>,
    bias: Vector<E, D>,
    running_mean: Vector<E, D>,
    running_var: Vector<E, D>,
}

#[derive(Debug, Clone)]
pub struct NetBlock<E: Dtype, D: Storage<E>> {
    body: Layers<E, D>,
    residual: bool,
    /// Empty for an identity shortcut.
    projection: Layers<E, D>,
    after_add: Layers<E, D>,
}

/// Uniform in ±sqrt(1/fan_in), computed in `E` as dfdx's Conv2D does.
fn reset_conv<E: Dtype + Float + SampleUniform, D: Device<E>>(
    t: &mut Map<E, D, NoneTape>,
) -> Result<(), D::Err> {
    let (_, inputs, k, _) = *t.shape();
    let bound = E::from_f64(1.0 / (inputs * k * k).max(1) as f64)
        .unwrap_or(E::one())
        .sqrt();
    t.try_fill_with_distr(rand_distr::Uniform::new(-bound, bound))
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> GraphNet<E, D> {
    /// Builds `graph` with an output layer of `outputs` units, each layer sized
    /// from what it gets in `summary`, the graph's shape inference.
    pub fn build(dev: &D, graph: &Network, summary: &Summary, outputs: usize) -> Result<Self, ModelError> {
        let side = match summary.input {
            Shape::Map(_, side, _) => side,
            Shape::Flat(_) => 0,
        };
        let mut builder = Builder {
            dev,
            inputs: summary.inputs(),
            side,
        };
        let layers = builder.list("layers", &graph.layers)?;
        let head = builder.list("head", &graph.head)?;
        let output = match graph.reads_coordinates() {
            true => None,
            false => Some(RtLinear::new(dev, features(builder.input("output")?), outputs).map_err(device)?),
        };
        Ok(GraphNet {
            channels: graph.channels,
            layers,
            head,
            output,
        })
    }
}

fn device<Err: std::fmt::Debug>(error: Err) -> ModelError {
    ModelError::Device(format!("{error:?}"))
}

/// Creates layers in order (the order their weights draw random numbers in).
struct Builder<'a, D> {
    dev: &'a D,
    inputs: Inputs<'a>,
    /// The images' side.
    side: usize,
}

impl<D> Builder<'_, D> {
    fn input(&self, path: &str) -> Result<Shape, ModelError> {
        self.inputs.of(path).ok_or_else(|| {
            ModelError::Shape(format!("{path} is not in the network whose shapes were followed"))
        })
    }

    fn list<E: Dtype + Float + SampleUniform>(
        &mut self,
        path: &str,
        layers: &[Layer],
    ) -> Result<Layers<E, D>, ModelError>
    where
        D: Device<E>,
    {
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| self.layer(&format!("{path}.{i}"), &l.op))
            .collect::<Result<_, _>>()
            .map(Layers)
    }

    fn layer<E: Dtype + Float + SampleUniform>(
        &mut self,
        path: &str,
        op: &Op,
    ) -> Result<NetLayer<E, D>, ModelError>
    where
        D: Device<E>,
    {
        Ok(match op {
            Op::Conv {
                filters,
                kernel,
                stride,
                padding,
                bias,
            } => {
                let channels = features(self.input(path)?);
                let conv = Conv::new(
                    self.dev,
                    (*filters, channels, *kernel),
                    *bias,
                    (*stride, *padding),
                );
                NetLayer::Conv(conv.map_err(device)?)
            }
            Op::BatchNorm => {
                NetLayer::BatchNorm(Norm::new(self.dev, features(self.input(path)?)).map_err(device)?)
            }
            Op::Dense { units } => {
                let inputs = features(self.input(path)?);
                NetLayer::Dense(RtLinear::new(self.dev, inputs, *units).map_err(device)?)
            }
            Op::Block { uses, .. } => NetLayer::Block(
                uses.iter()
                    .enumerate()
                    .map(|(r, u)| self.block(&format!("{path}.{r}"), u))
                    .collect::<Result<_, _>>()?,
            ),
            Op::SoftArgmax { temperature } => match self.input(path)? {
                Shape::Map(_, h, w) => NetLayer::SoftArgmax(Positions::new(*temperature, (h, w), self.side)),
                Shape::Flat(_) => return Err(ModelError::Shape(format!("{path} (soft_argmax) needs a map"))),
            },
            Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Sigmoid
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::Dropout { .. }
            | Op::Flatten
            | Op::Upsample { .. } => NetLayer::Weightless(op.clone()),
        })
    }

    fn block<E: Dtype + Float + SampleUniform>(
        &mut self,
        path: &str,
        block: &BlockUse,
    ) -> Result<NetBlock<E, D>, ModelError>
    where
        D: Device<E>,
    {
        let body = self.list(&format!("{path}.body"), &block.body)?;
        let projection = match &block.shortcut {
            Shortcut::Projection { layers } => self.list(&format!("{path}.projection"), layers)?,
            Shortcut::None | Shortcut::Identity => Layers(Vec::new()),
        };
        Ok(NetBlock {
            body,
            residual: block.shortcut != Shortcut::None,
            projection,
            after_add: self.list(&format!("{path}.after_add"), &block.after_add)?,
        })
    }
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> Conv<E, D> {
    /// `filters` maps from `channels`, through a `kernel` x `kernel` window.
    fn new(
        dev: &D,
        (filters, channels, kernel): (usize, usize, usize),
        bias: bool,
        (stride, padding): (usize, usize),
    ) -> Result<Self, D::Err> {
        let mut weight = dev.try_zeros_like(&(filters, channels, kernel, kernel))?;
        reset_conv(&mut weight)?;
        let bias = match bias {
            true => Some(dev.try_zeros_like(&(filters,))?),
            false => None,
        };
        Ok(Conv {
            weight,
            bias,
            stride,
            padding,
        })
    }
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> Norm<E, D> {
    fn new(dev: &D, features: usize) -> Result<Self, D::Err> {
        Ok(Norm {
            scale: dev.try_ones_like(&(features,))?,
            bias: dev.try_zeros_like(&(features,))?,
            running_mean: dev.try_zeros_like(&(features,))?,
            running_var: dev.try_ones_like(&(features,))?,
        })
    }
}

// ---- Forward ----

impl<D: Device<f32>, T: Tape<f32, D>> Act<D, T> {
    fn flat(self) -> Result<Flat<f32, D, T>, D::Err> {
        match self {
            Act::Flat(x) => Ok(x),
            Act::Map(x) => {
                let (b, c, h, w) = *x.shape();
                x.try_reshape_like(&(b, c * h * w))
            }
        }
    }

    fn with_empty_tape(&self) -> Act<D, T> {
        match self {
            Act::Map(x) => Act::Map(x.with_empty_tape()),
            Act::Flat(x) => Act::Flat(x.with_empty_tape()),
        }
    }

    fn add(self, other: Act<D, T>) -> Result<Act<D, T>, D::Err> {
        Ok(match (self, other) {
            (Act::Map(a), Act::Map(b)) => Act::Map(a.try_add(b)?),
            (Act::Flat(a), Act::Flat(b)) => Act::Flat(a.try_add(b)?),
            (a, b) => Act::Flat(a.flat()?.try_add(b.flat()?)?),
        })
    }
}

impl<D: Backend> NetLayer<f32, D> {
    fn infer(&self, x: Act<D, NoneTape>) -> Result<Act<D, NoneTape>, D::Err> {
        match self {
            NetLayer::Conv(conv) => conv.forward(x),
            NetLayer::BatchNorm(n) => {
                let args = (&n.running_var, &n.running_mean, &n.scale, &n.bias, BN_EPSILON);
                Ok(match x {
                    Act::Map(x) => Act::Map(batch_norm_infer::<usize, _, f32, D, Axes3<0, 2, 3>>(
                        x, args.0, args.1, args.2, args.3, args.4,
                    )?),
                    Act::Flat(x) => Act::Flat(batch_norm_infer::<usize, _, f32, D, Axis<0>>(
                        x, args.0, args.1, args.2, args.3, args.4,
                    )?),
                })
            }
            NetLayer::Dense(dense) => Ok(Act::Flat(dense.try_forward(x.flat()?)?)),
            NetLayer::Block(uses) => uses.iter().try_fold(x, |x, block| block.infer(x)),
            NetLayer::SoftArgmax(positions) => x.on_map(|x| positions.forward(x)),
            NetLayer::Weightless(op) => weightless(op, x, false),
        }
    }

    fn train(&mut self, x: Act<D, OwnedTape<f32, D>>) -> Result<Act<D, OwnedTape<f32, D>>, D::Err> {
        match self {
            NetLayer::Conv(conv) => conv.forward(x),
            NetLayer::BatchNorm(n) => Ok(match x {
                Act::Map(x) => Act::Map(batch_norm_train::<usize, _, f32, D, _, Axes3<0, 2, 3>>(
                    x,
                    &mut n.running_var,
                    &mut n.running_mean,
                    &n.scale,
                    &n.bias,
                    BN_EPSILON,
                    BN_MOMENTUM,
                )?),
                Act::Flat(x) => Act::Flat(batch_norm_train::<usize, _, f32, D, _, Axis<0>>(
                    x,
                    &mut n.running_var,
                    &mut n.running_mean,
                    &n.scale,
                    &n.bias,
                    BN_EPSILON,
                    BN_MOMENTUM,
                )?),
            }),
            NetLayer::Dense(dense) => Ok(Act::Flat(dense.try_forward(x.flat()?)?)),
            NetLayer::Block(uses) => uses.iter_mut().try_fold(x, |x, block| block.train(x)),
            NetLayer::SoftArgmax(positions) => x.on_map(|x| positions.forward(x)),
            NetLayer::Weightless(op) => weightless(op, x, true),
        }
    }
}

impl<D: Backend> Conv<f32, D> {
    fn forward<T: Tape<f32, D>>(&self, x: Act<D, T>) -> Result<Act<D, T>, D::Err> {
        x.on_map(|x| {
            let y = D::conv2d(x, self.weight.clone(), self.stride, self.padding)?;
            Ok(Act::Map(match &self.bias {
                Some(bias) => {
                    let shape = *y.shape();
                    y.try_add(
                        bias.retaped::<T>()
                            .try_broadcast_like::<_, Axes3<0, 2, 3>>(&shape)?,
                    )?
                }
                None => y,
            }))
        })
    }
}

// Folding batch norm into the convolution before it, for inference: batch
// norm's (x - mean) * scale / sqrt(var + eps) + bias is per output channel, so
// it is the convolution with each output channel's filter scaled and a bias
// added. One broadcast add replaces batch norm's three passes over the maps.
// The folded network predicts what the network does, up to rounding.
impl<D: Backend> GraphNet<f32, D> {
    /// This network for inference, each batch norm that directly follows a
    /// convolution folded into it.
    pub fn folded(&self) -> Result<Self, D::Err> {
        Ok(GraphNet {
            channels: self.channels,
            layers: self.layers.folded()?,
            head: self.head.folded()?,
            output: self.output.clone(),
        })
    }
}

impl<D: Backend> Layers<f32, D> {
    fn folded(&self) -> Result<Self, D::Err> {
        let mut folded = Vec::with_capacity(self.0.len());
        let mut layers = self.0.iter().peekable();
        while let Some(layer) = layers.next() {
            folded.push(match (layer, layers.peek()) {
                (NetLayer::Conv(conv), Some(NetLayer::BatchNorm(norm))) => {
                    layers.next();
                    NetLayer::Conv(conv.folded(norm)?)
                }
                (NetLayer::Block(uses), _) => {
                    NetLayer::Block(uses.iter().map(NetBlock::folded).collect::<Result<_, _>>()?)
                }
                (layer, _) => layer.clone(),
            });
        }
        Ok(Layers(folded))
    }
}

impl<D: Backend> NetBlock<f32, D> {
    fn folded(&self) -> Result<Self, D::Err> {
        Ok(NetBlock {
            body: self.body.folded()?,
            residual: self.residual,
            projection: self.projection.folded()?,
            after_add: self.after_add.folded()?,
        })
    }
}

impl<D: Backend> Conv<f32, D> {
    /// This convolution followed by `norm` (inference mode), as one
    /// convolution; the arithmetic in f64, rounded once.
    fn folded(&self, norm: &Norm<f32, D>) -> Result<Self, D::Err> {
        let wide = |t: &Vector<f32, D>| t.as_vec().into_iter().map(f64::from).collect::<Vec<_>>();
        let (scale, shift, mean, var) = (
            wide(&norm.scale),
            wide(&norm.bias),
            wide(&norm.running_mean),
            wide(&norm.running_var),
        );
        let factor: Vec<f64> = scale
            .iter()
            .zip(&var)
            .map(|(s, v)| s / (v + BN_EPSILON).sqrt())
            .collect();
        let shape = *self.weight.shape();
        let per_filter = shape.1 * shape.2 * shape.3;
        let weight: Vec<f32> = self
            .weight
            .as_vec()
            .into_iter()
            .enumerate()
            .map(|(i, w)| (f64::from(w) * factor[i / per_filter]) as f32)
            .collect();
        let own_bias = match &self.bias {
            Some(bias) => wide(bias),
            None => vec![0.0; shape.0],
        };
        let bias: Vec<f32> = (0..shape.0)
            .map(|o| ((own_bias[o] - mean[o]) * factor[o] + shift[o]) as f32)
            .collect();
        let dev = self.weight.device();
        Ok(Conv {
            weight: dev.try_tensor_from_vec(weight, shape)?,
            bias: Some(dev.try_tensor_from_vec(bias, (shape.0,))?),
            stride: self.stride,
            padding: self.padding,
        })
    }
}

/// A layer without weights, the same in training and inference except
/// dropout, which only drops in training.
fn weightless<D: Backend, T: Tape<f32, D> + 'static>(
    op: &Op,
    x: Act<D, T>,
    training: bool,
) -> Result<Act<D, T>, D::Err> {
    let pool = |x: Act<D, T>, kind, kernel, stride, padding| {
        x.on_map(|x| Ok(Act::Map(D::pool2d(x, kind, kernel, stride, padding)?)))
    };
    match op {
        Op::Relu => x.map(|t| t.try_relu(), |t| t.try_relu()),
        Op::LeakyRelu { slope } => {
            let slope = *slope as f32;
            x.map(|t| t.try_prelu(slope), |t| t.try_prelu(slope))
        }
        Op::Sigmoid => x.map(|t| t.try_sigmoid(), |t| t.try_sigmoid()),
        Op::MaxPool {
            kernel,
            stride,
            padding,
        } => pool(x, Pool2DKind::Max, *kernel, *stride, *padding),
        Op::AvgPool {
            kernel,
            stride,
            padding,
        } => pool(x, Pool2DKind::Avg, *kernel, *stride, *padding),
        Op::GlobalAvgPool => x.on_map(|x| Ok(Act::Flat(x.try_mean::<_, Axes2<2, 3>>()?))),
        Op::Dropout { p } if training && *p > 0.0 => x.map(|t| t.try_dropout(*p), |t| t.try_dropout(*p)),
        Op::Dropout { .. } => Ok(x),
        Op::Flatten => Ok(Act::Flat(x.flat()?)),
        Op::Upsample { factor, mode } => x.on_map(|x| Ok(Act::Map(D::upsample(x, *factor, *mode)?))),
        // Built with what they hold (`Builder::layer`), never weightless.
        Op::Conv { .. } | Op::BatchNorm | Op::Dense { .. } | Op::Block { .. } | Op::SoftArgmax { .. } => {
            Ok(x)
        }
    }
}

impl<D: Device<f32>, T: Tape<f32, D>> Act<D, T> {
    fn map(
        self,
        on_map: impl FnOnce(Map<f32, D, T>) -> Result<Map<f32, D, T>, D::Err>,
        on_flat: impl FnOnce(Flat<f32, D, T>) -> Result<Flat<f32, D, T>, D::Err>,
    ) -> Result<Act<D, T>, D::Err> {
        Ok(match self {
            Act::Map(x) => Act::Map(on_map(x)?),
            Act::Flat(x) => Act::Flat(on_flat(x)?),
        })
    }

    /// A layer that takes maps: shape inference lets no flat features reach it.
    fn on_map(
        self,
        layer: impl FnOnce(Map<f32, D, T>) -> Result<Act<D, T>, D::Err>,
    ) -> Result<Act<D, T>, D::Err> {
        match self {
            Act::Map(x) => layer(x),
            Act::Flat(x) => Ok(Act::Flat(x)),
        }
    }
}

impl<D: Backend> Layers<f32, D> {
    fn infer(&self, x: Act<D, NoneTape>) -> Result<Act<D, NoneTape>, D::Err> {
        self.0.iter().try_fold(x, |x, layer| layer.infer(x))
    }

    fn train(&mut self, x: Act<D, OwnedTape<f32, D>>) -> Result<Act<D, OwnedTape<f32, D>>, D::Err> {
        self.0.iter_mut().try_fold(x, |x, layer| layer.train(x))
    }
}

// A residual block adds its input, taken off the tape first, as dfdx's
// Residual and GeneralizedResidual do, so gradients accumulate in their order.
impl<D: Backend> NetBlock<f32, D> {
    fn infer(&self, x: Act<D, NoneTape>) -> Result<Act<D, NoneTape>, D::Err> {
        let y = match (self.residual, self.projection.0.is_empty()) {
            (false, _) => self.body.infer(x)?,
            (true, true) => self.body.infer(x.with_empty_tape())?.add(x)?,
            (true, false) => self
                .body
                .infer(x.with_empty_tape())?
                .add(self.projection.infer(x)?)?,
        };
        self.after_add.infer(y)
    }

    fn train(&mut self, x: Act<D, OwnedTape<f32, D>>) -> Result<Act<D, OwnedTape<f32, D>>, D::Err> {
        let y = match (self.residual, self.projection.0.is_empty()) {
            (false, _) => self.body.train(x)?,
            (true, true) => self.body.train(x.with_empty_tape())?.add(x)?,
            (true, false) => {
                let body = self.body.train(x.with_empty_tape())?;
                body.add(self.projection.train(x)?)?
            }
        };
        self.after_add.train(y)
    }
}

impl<D: Device<f32>> GraphNet<f32, D> {
    /// The coordinates: the output layer's, or those `soft_argmax` gave.
    fn output<T: Tape<f32, D>>(&self, x: Act<D, T>) -> Result<Outputs<D, T>, D::Err> {
        match &self.output {
            Some(dense) => dense.try_forward(x.flat()?),
            None => x.flat(),
        }
    }

    /// Grey images to `channels` channels (a copy of the grey one each).
    fn input<T: Tape<f32, D>>(&self, x: Images<D, T>) -> Result<Act<D, T>, D::Err> {
        let (b, _, h, w) = *x.shape();
        let c = self.channels;
        if c == 1 {
            return Ok(Act::Map(x.try_reshape_like(&(b, 1, h, w))?));
        }
        let x: Tensor<(usize, usize, usize), f32, D, T> = x.try_reshape_like(&(b, h, w))?;
        // A broadcast is a strided view; convolutions need contiguous memory,
        // which reshaping a non-contiguous tensor provides.
        let x = x.try_broadcast_like::<_, Axis<1>>(&(b, c, h, w))?;
        Ok(Act::Map(x.try_reshape_like(&(b, c, h, w))?))
    }
}

impl<D: Backend> Module<Images<D>> for GraphNet<f32, D> {
    type Output = Outputs<D>;
    type Error = D::Err;

    fn try_forward(&self, x: Images<D>) -> Result<Outputs<D>, D::Err> {
        let x = self.head.infer(self.layers.infer(self.input(x)?)?)?;
        self.output(x)
    }
}

impl<D: Backend> ModuleMut<Images<D, OwnedTape<f32, D>>> for GraphNet<f32, D> {
    type Output = Outputs<D, OwnedTape<f32, D>>;
    type Error = D::Err;

    fn try_forward_mut(&mut self, x: Images<D, OwnedTape<f32, D>>) -> Result<Self::Output, D::Err> {
        Ok(self.train_forward(x, false)?.coordinates)
    }
}

/// A training forward pass: the coordinates, and a final `soft_argmax`'s
/// distributions when asked for and the network has one.
pub struct TrainForward<D: Storage<f32>> {
    pub coordinates: Outputs<D, Taped<D>>,
    pub maps: Option<MapDistributions<D>>,
}

impl<D: Backend> GraphNet<f32, D> {
    /// The training forward pass; with `keep_maps`, also the distributions
    /// of a final `soft_argmax` (None for a network without one).
    pub fn train_forward(
        &mut self,
        x: Images<D, Taped<D>>,
        keep_maps: bool,
    ) -> Result<TrainForward<D>, D::Err> {
        let mut x = self.input(x)?;
        let mut maps = None;
        let keep_at = (keep_maps && self.soft_argmax_cells().is_some())
            .then(|| self.layers.0.len() + self.head.0.len() - 1);
        for (index, layer) in self.layers.0.iter_mut().chain(&mut self.head.0).enumerate() {
            x = match layer {
                NetLayer::SoftArgmax(positions) if Some(index) == keep_at => {
                    x.on_map(|x| positions.forward_keeping_maps(x, &mut maps))?
                }
                layer => layer.train(x)?,
            };
        }
        Ok(TrainForward {
            coordinates: self.output(x)?,
            maps,
        })
    }

    /// The position of each cell of a final `soft_argmax`'s maps, `(x, y)`
    /// row by row in the targets' coordinates, and a cell's width in them.
    pub fn soft_argmax_cells(&self) -> Option<(&[f32], f32)> {
        // The last layer, in `head` or, with an empty head, in `layers`.
        match self.head.0.last().or(self.layers.0.last()) {
            Some(NetLayer::SoftArgmax(positions)) => Some((&positions.cells, positions.cell_width)),
            _ => None,
        }
    }
}

// ---- Tensors: names, gradients, optimisers and safetensors ----
//
// dfdx lists a module's tensors from its type; a graph's are only known at run
// time, so each level reads them from the module the walk holds (patch 0011).
// Only dfdx's BuildModule walks without one, and it never builds a GraphNet.

impl<E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for GraphNet<E, D> {
    type To<E2: Dtype, D2: Device<E2>> = GraphNet<E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let channels = visitor.module().map_or(1, |m| m.channels);
        let layers = Self::module("layers", |s| &s.layers, |s| &mut s.layers);
        let head = Self::module("head", |s| &s.head, |s| &mut s.head);
        if visitor.module().is_some_and(|m| m.output.is_none()) {
            return visitor.visit_fields((layers, head), move |(layers, head)| GraphNet {
                channels,
                layers,
                head,
                output: None,
            });
        }
        let output = Self::module(
            "output",
            |s| s.output.as_ref().expect(WRONG_VARIANT),
            |s| s.output.as_mut().expect(WRONG_VARIANT),
        );
        visitor.visit_fields((layers, head, output), move |(layers, head, output)| GraphNet {
            channels,
            layers,
            head,
            output: Some(output),
        })
    }
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for Layers<E, D> {
    type To<E2: Dtype, D2: Device<E2>> = Layers<E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let count = visitor.module().map_or(0, |m| m.0.len());
        let names: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        let fields = names
            .iter()
            .enumerate()
            .map(|(i, name)| Self::module(name, move |s| &s.0[i], move |s| &mut s.0[i]))
            .collect::<Vec<_>>();
        visitor.visit_fields(fields, Layers)
    }
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for NetBlock<E, D> {
    type To<E2: Dtype, D2: Device<E2>> = NetBlock<E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let residual = visitor.module().is_some_and(|m| m.residual);
        visitor.visit_fields(
            (
                Self::module("body", |s| &s.body, |s| &mut s.body),
                Self::module("projection", |s| &s.projection, |s| &mut s.projection),
                Self::module("after_add", |s| &s.after_add, |s| &mut s.after_add),
            ),
            move |(body, projection, after_add)| NetBlock {
                body,
                residual,
                projection,
                after_add,
            },
        )
    }
}

const WRONG_VARIANT: &str = "the walk lists the fields of the variant it holds";

/// `$get`/`$get_mut`: the payload of variant `$variant`, for the walk that
/// lists that variant's fields.
macro_rules! variant_accessors {
    ($($get:ident, $get_mut:ident, $variant:ident, $payload:ty;)+) => {
        impl<E: Dtype, D: Storage<E>> NetLayer<E, D> {
            $(
                fn $get(&self) -> &$payload {
                    match self {
                        NetLayer::$variant(v) => v,
                        _ => unreachable!("{WRONG_VARIANT}"),
                    }
                }
                fn $get_mut(&mut self) -> &mut $payload {
                    match self {
                        NetLayer::$variant(v) => v,
                        _ => unreachable!("{WRONG_VARIANT}"),
                    }
                }
            )+
        }
    };
}

variant_accessors! {
    conv, conv_mut, Conv, Conv<E, D>;
    norm, norm_mut, BatchNorm, Norm<E, D>;
    dense, dense_mut, Dense, RtLinear<E, D>;
    uses, uses_mut, Block, Vec<NetBlock<E, D>>;
}

impl<E: Dtype, D: Storage<E>> NetLayer<E, D> {
    fn conv_bias(&self) -> &Vector<E, D> {
        self.conv().bias.as_ref().expect(WRONG_VARIANT)
    }
    fn conv_bias_mut(&mut self) -> &mut Vector<E, D> {
        self.conv_mut().bias.as_mut().expect(WRONG_VARIANT)
    }
}

impl<E: Dtype + Float + SampleUniform, D: Device<E>> TensorCollection<E, D> for NetLayer<E, D> {
    type To<E2: Dtype, D2: Device<E2>> = NetLayer<E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let Some(layer) = visitor.module() else {
            return visitor.visit_fields((), |()| NetLayer::Weightless(Op::Relu));
        };
        match layer {
            NetLayer::Conv(c) => {
                let (stride, padding, bias) = (c.stride, c.padding, c.bias.is_some());
                Self::conv_fields(visitor, stride, padding, bias)
            }
            NetLayer::BatchNorm(_) => Self::norm_fields(visitor),
            NetLayer::Dense(_) => Self::dense_fields(visitor),
            NetLayer::Block(uses) => {
                let count = uses.len();
                Self::block_fields(visitor, count)
            }
            // Host values, the same for every dtype and device.
            NetLayer::SoftArgmax(positions) => {
                let positions = positions.clone();
                visitor.visit_fields((), move |()| NetLayer::SoftArgmax(positions))
            }
            // Its description is all it is, the same for every dtype and device.
            NetLayer::Weightless(op) => {
                let op = op.clone();
                visitor.visit_fields((), move |()| NetLayer::Weightless(op))
            }
        }
    }
}

/// What a walk over a layer's tensors gives back: the layer in the walk's dtype
/// and device, when the walk builds one.
type Visited<E, D, V> = Result<
    Option<
        NetLayer<
            <V as ModuleVisitor<NetLayer<E, D>, E, D>>::E2,
            <V as ModuleVisitor<NetLayer<E, D>, E, D>>::D2,
        >,
    >,
    <V as ModuleVisitor<NetLayer<E, D>, E, D>>::Err,
>;

/// Each kind's tensors, in the order the walk lists them.
impl<E: Dtype + Float + SampleUniform, D: Device<E>> NetLayer<E, D> {
    fn conv_fields<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Visited<E, D, V> {
        let weight = Self::tensor(
            "weight",
            |s| &s.conv().weight,
            |s| &mut s.conv_mut().weight,
            TensorOptions::with_shape((0, 0, 0, 0), true, reset_conv::<E, D>),
        );
        let conv = move |weight, bias| {
            NetLayer::Conv(Conv {
                weight,
                bias,
                stride,
                padding,
            })
        };
        if bias {
            let bias = Self::tensor("bias", |s| s.conv_bias(), |s| s.conv_bias_mut(), zeros(true));
            visitor.visit_fields((weight, bias), move |(weight, bias)| conv(weight, Some(bias)))
        } else {
            visitor.visit_fields(weight, move |weight| conv(weight, None))
        }
    }

    fn norm_fields<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Visited<E, D, V> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "scale",
                    |s| &s.norm().scale,
                    |s| &mut s.norm_mut().scale,
                    ones(true),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.norm().bias,
                    |s| &mut s.norm_mut().bias,
                    zeros(true),
                ),
                Self::tensor(
                    "running_mean",
                    |s| &s.norm().running_mean,
                    |s| &mut s.norm_mut().running_mean,
                    zeros(false),
                ),
                Self::tensor(
                    "running_var",
                    |s| &s.norm().running_var,
                    |s| &mut s.norm_mut().running_var,
                    ones(false),
                ),
            ),
            |(scale, bias, running_mean, running_var)| {
                NetLayer::BatchNorm(Norm {
                    scale,
                    bias,
                    running_mean,
                    running_var,
                })
            },
        )
    }

    /// Named like a conv's (`head.0.weight`), not as a module of its own.
    fn dense_fields<V: ModuleVisitor<Self, E, D>>(visitor: &mut V) -> Visited<E, D, V> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.dense().weight,
                    |s| &mut s.dense_mut().weight,
                    RtLinear::weight_options(),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.dense().bias,
                    |s| &mut s.dense_mut().bias,
                    RtLinear::bias_options(),
                ),
            ),
            |(weight, bias)| NetLayer::Dense(RtLinear { weight, bias }),
        )
    }

    fn block_fields<V: ModuleVisitor<Self, E, D>>(visitor: &mut V, count: usize) -> Visited<E, D, V> {
        let names: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        let fields = names
            .iter()
            .enumerate()
            .map(|(i, name)| Self::module(name, move |s| &s.uses()[i], move |s| &mut s.uses_mut()[i]))
            .collect::<Vec<_>>();
        visitor.visit_fields(fields, NetLayer::Block)
    }
}

fn zeros<E: Dtype, D: Device<E>>(do_gradient_update: bool) -> TensorOptions<(usize,), E, D> {
    TensorOptions::with_shape((0,), do_gradient_update, |t| t.try_fill_with_zeros())
}

fn ones<E: Dtype, D: Device<E>>(do_gradient_update: bool) -> TensorOptions<(usize,), E, D> {
    TensorOptions::with_shape((0,), do_gradient_update, |t| t.try_fill_with_ones())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::graph::read::tests::read;
    use crate::models::kinds::UpsampleMode;
    use crate::models::{ModelSpec, loss};

    #[test]
    fn a_sigmoid_reads_keeps_its_input_shape_squashes_and_passes_gradients_back() {
        let (graph, errors) = read(
            "layers = [{ conv = 2, kernel = 3 }, \"sigmoid\", \"flatten\"]\nhead = [{ dense = 4 }, \"sigmoid\"]\n",
        );
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(graph.layers[1].op, Op::Sigmoid);
        let spec = ModelSpec {
            graph,
            side: 8,
            outputs: 2,
        };
        let summary = spec.check().unwrap();
        let sigmoid = &summary.rows[1];
        assert_eq!(
            (sigmoid.path.as_str(), sigmoid.what.as_str()),
            ("layers.1", "sigmoid")
        );
        assert_eq!((sigmoid.output, sigmoid.parameters), (Shape::Map(2, 6, 6), 0));

        let dev = Cpu::seed_from_u64(0);
        let mut network = spec.build(&dev).unwrap();
        // Inference: what the first sigmoid makes of the conv's output.
        let x: Images<Cpu> = dev.sample_uniform_like(&(3, Const, 8, 8));
        let conv = network.layers.0[0]
            .infer(network.input(x.clone()).unwrap())
            .unwrap();
        let squashed = network.layers.0[1].infer(conv.with_empty_tape()).unwrap();
        let (Act::Map(conv), Act::Map(squashed)) = (conv, squashed) else {
            panic!("a sigmoid keeps a map a map")
        };
        for (before, after) in conv.as_vec().into_iter().zip(squashed.as_vec()) {
            assert!(
                (after - 1.0 / (1.0 + (-before).exp())).abs() < 1e-6,
                "{before} -> {after}"
            );
        }
        assert_eq!(*network.forward(x.clone()).shape(), (3, 2));

        // Training: the gradient reaches the conv behind both sigmoids.
        let grads = network.alloc_grads();
        let y = network.forward_mut(x.traced(grads));
        let target: Outputs<Cpu> = dev.ones_like(&(3, 2));
        let mask: Outputs<Cpu> = dev.ones_like(&(3, 2));
        let grads = loss::masked_mse(y, target, mask).backward();
        let NetLayer::Conv(conv) = &network.layers.0[0] else {
            panic!("layers.0 is the conv")
        };
        assert!(grads.get(&conv.weight).as_vec().iter().any(|g| *g != 0.0));
    }

    /// Every batch norm's four vectors, wherever it sits.
    fn norms(layers: &mut Layers<f32, Cpu>) -> Vec<&mut Norm<f32, Cpu>> {
        let mut found = Vec::new();
        for layer in &mut layers.0 {
            match layer {
                NetLayer::BatchNorm(norm) => found.push(norm),
                NetLayer::Block(uses) => {
                    for block in uses {
                        for part in [&mut block.body, &mut block.projection, &mut block.after_add] {
                            found.extend(norms(part));
                        }
                    }
                }
                _ => {}
            }
        }
        found
    }

    #[test]
    fn folding_batch_norm_into_the_convolutions_predicts_the_same() {
        // A conv with a bias and one without, each followed by batch norm, a
        // residual block with a projection, and a batch norm after a ReLU
        // (not after a convolution: it stays).
        let (graph, errors) = read(
            "layers = [{ conv = 4, kernel = 3, padding = 1, bias = true }, \"batchnorm\", \"relu\", \
             { block = \"b\", filters = 6, stride = 2 }, \"relu\", \"batchnorm\", \"flatten\"]\n\
             head = []\n\
             [blocks.b]\n\
             layers = [{ conv = \"filters\", kernel = 3, stride = \"stride\", padding = 1 }, \"batchnorm\"]\n\
             residual = true\n\
             projection = [{ conv = \"filters\", kernel = 1, stride = \"stride\" }, \"batchnorm\"]\n",
        );
        assert!(errors.is_empty(), "{errors:#?}");
        let spec = ModelSpec {
            graph,
            side: 8,
            outputs: 3,
        };
        spec.check().unwrap();
        let dev = Cpu::seed_from_u64(1);
        let mut network = spec.build(&dev).unwrap();
        // statistics and affine terms far from the identity batch norm starts as
        for norm in norms(&mut network.layers) {
            let n = norm.scale.shape().0;
            norm.scale = dev.sample_uniform_like(&(n,)) + 0.5;
            norm.bias = dev.sample_normal_like(&(n,));
            norm.running_mean = dev.sample_normal_like(&(n,));
            norm.running_var = dev.sample_uniform_like(&(n,)) * 3.0 + 0.1;
        }
        let folded = network.folded().unwrap();
        let count = |net: &GraphNet<f32, Cpu>| norms(&mut net.clone().layers).len();
        assert_eq!((count(&network), count(&folded)), (4, 1));

        let x: Images<Cpu> = dev.sample_uniform_like(&(5, Const, 8, 8));
        let want = network.forward(x.clone()).as_vec();
        let got = folded.forward(x).as_vec();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    /// One map per keypoint: each cell's position is the centre of the pixels
    /// it covers, in the targets' coordinates.
    #[test]
    fn soft_argmax_cells_sit_at_the_centres_of_their_pixels() {
        // A map as fine as the image: cell p is pixel p, at (p - 48) / 48.
        let fine = soft_argmax_positions(96, 96, 96);
        assert_eq!(fine.len(), 96 * 96 * 2);
        assert_eq!((fine[0], fine[1]), (-1.0, -1.0));
        let (x, y) = (fine[2 * (95 * 96 + 10)], fine[2 * (95 * 96 + 10) + 1]);
        assert_eq!((x, y), ((10.0 - 48.0) / 48.0, (95.0 - 48.0) / 48.0));
        // A 12x12 map: cell 0 covers pixels 0..=7, centred at 3.5.
        let coarse = soft_argmax_positions(12, 12, 96);
        assert_eq!(coarse[0], (3.5 - 48.0) / 48.0);
    }

    #[test]
    fn soft_argmax_reads_each_peak_as_its_position_with_gradients_to_every_cell() {
        let (graph, errors) = read(
            "layers = [{ conv = 2, kernel = 1 }, { upsample = 2 }, { soft_argmax = 0.01 }]\nhead = []\n",
        );
        assert!(errors.is_empty(), "{errors:#?}");
        let spec = ModelSpec {
            graph,
            side: 4,
            outputs: 4,
        };
        let summary = spec.check().unwrap();
        assert_eq!(summary.rows.last().unwrap().output, Shape::Flat(4));
        assert!(summary.rows.iter().all(|r| r.path != "output"), "no output layer");
        let dev = Cpu::seed_from_u64(0);
        let network = spec.build(&dev).unwrap();
        assert!(network.output.is_none());

        // Two 4x4 maps, each with one high cell: keypoint 0 at (x 3, y 1), 1 at (0, 2).
        let positions = Positions::new(0.01, (4, 4), 4);
        let mut maps = vec![0.0f32; 2 * 16];
        maps[4 + 3] = 1.0;
        maps[16 + 2 * 4] = 1.0;
        let x: Map<f32, Cpu, NoneTape> = dev.tensor_from_vec(maps.clone(), (1, 2, 4, 4));
        let Act::Flat(points) = positions.forward(x).unwrap() else {
            panic!("coordinates are flat")
        };
        let at = |p: f32| (p - 2.0) / 2.0;
        let want = [at(3.0), at(1.0), at(0.0), at(2.0)];
        for (got, want) in points.as_vec().iter().zip(want) {
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }

        // Softer, the gradient reaches every cell of every map.
        let soft = Positions::new(1.0, (4, 4), 4);
        let x: Map<f32, Cpu, NoneTape> = dev.tensor_from_vec(maps, (1, 2, 4, 4));
        let Act::Flat(points) = soft.forward(x.leaky_trace()).unwrap() else {
            panic!("coordinates are flat")
        };
        let grads = points.sum::<Rank0, _>().backward();
        assert!(grads.get(&x).as_vec().iter().all(|g| *g != 0.0));
    }

    #[test]
    fn keeping_the_maps_changes_no_coordinate_and_both_losses_reach_the_weights() {
        let (graph, errors) = read(
            "layers = [{ conv = 2, kernel = 3, padding = 1 }, { upsample = 2 }, \"soft_argmax\"]\nhead = []\n",
        );
        assert!(errors.is_empty(), "{errors:#?}");
        let spec = ModelSpec {
            graph,
            side: 4,
            outputs: 4,
        };
        let dev = Cpu::seed_from_u64(1);
        let mut network = spec.build(&dev).unwrap();
        let (cells, cell_width) = network.soft_argmax_cells().unwrap();
        let cells = cells.to_vec();
        assert_eq!((cells.len(), cell_width), (2 * 64, 0.25), "8x8 maps");
        let x: Images<Cpu> = dev.sample_uniform_like(&(3, Const, 4, 4));
        let targets: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 8.0).collect();
        let mask = vec![1.0f32; 12];
        let regulariser = loss::MapRegulariser {
            weight: 1.0,
            sigma_px: None,
        };
        let coordinate_loss = |points| {
            loss::masked_mse(
                points,
                dev.tensor_from_vec(targets.clone(), (3, 4)),
                dev.ones_like(&(3, 4)),
            )
        };
        let weight_grads = |network: &mut GraphNet<f32, Cpu>, coordinates: bool, maps: bool| {
            let grads = network.alloc_grads();
            let pass = network.train_forward(x.clone().traced(grads), maps).unwrap();
            let mut total = coordinate_loss(pass.coordinates) * if coordinates { 1.0 } else { 0.0 };
            if let Some(distributions) = pass.maps {
                total = total + regulariser.masked(distributions, (&cells, 0.25), &targets, &mask, 2.0);
            }
            let grads = total.backward();
            let NetLayer::Conv(conv) = &network.layers.0[0] else {
                panic!("a conv first")
            };
            grads.get(&conv.weight).as_vec()
        };

        let grads = network.alloc_grads();
        let plain = network.train_forward(x.clone().traced(grads), false).unwrap();
        assert!(plain.maps.is_none());
        let grads = network.alloc_grads();
        let kept = network.train_forward(x.clone().traced(grads), true).unwrap();
        assert_eq!(
            plain.coordinates.as_vec(),
            kept.coordinates.as_vec(),
            "the same coordinates, bit for bit"
        );
        let maps = kept.maps.unwrap();
        assert_eq!(*maps.shape(), (6, 64));
        for row in maps.as_vec().chunks_exact(64) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }

        // Gradients of the sum are the sums of each loss's: the two uses of the
        // maps meet on one tape.
        let coordinates_only = weight_grads(&mut network, true, false);
        let regulariser_only = weight_grads(&mut network, false, true);
        let both = weight_grads(&mut network, true, true);
        assert!(
            regulariser_only.iter().any(|g| g.abs() > 1e-6),
            "{regulariser_only:?}"
        );
        for ((a, b), sum) in coordinates_only.iter().zip(&regulariser_only).zip(&both) {
            assert!(
                (a + b - sum).abs() < 1e-5 * (1.0 + sum.abs()),
                "{a} + {b} vs {sum}"
            );
        }
    }

    #[test]
    fn upsampling_repeats_or_interpolates_and_keeps_the_corners() {
        let dev = Cpu::seed_from_u64(0);
        let map = |values: Vec<f32>| -> Map<f32, Cpu, NoneTape> { dev.tensor_from_vec(values, (1, 1, 2, 2)) };
        let nearest = Cpu::upsample(map(vec![1.0, 2.0, 3.0, 4.0]), 2, UpsampleMode::Nearest).unwrap();
        assert_eq!(
            nearest.as_vec(),
            [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
        );
        let bilinear = Cpu::upsample(map(vec![0.0, 3.0, 6.0, 9.0]), 2, UpsampleMode::Bilinear).unwrap();
        // Corners kept; in between by thirds (align_corners).
        assert_eq!(
            bilinear.as_vec(),
            [0., 1., 2., 3., 2., 3., 4., 5., 4., 5., 6., 7., 6., 7., 8., 9.]
        );
    }
}
