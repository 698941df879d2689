//! The layer kinds, each defined once: how a pipeline writes it ([`SPELLINGS`]:
//! a bare string, a table keyed by its name, its other keys with their ranges
//! and defaults), how it describes itself ([`Op::describe`]) and its shape rule
//! ([`Op::step`]: the output, parameters and multiply-adds, or why it cannot
//! take its input).
//!
//! The reader ([`super::graph::read`]) goes through [`SPELLINGS`] instead of
//! lists of names; shape inference ([`super::graph::shape`]) applies
//! [`Op::step`] once, and the builder ([`super::net`]) and the ONNX export
//! ([`crate::commands::export::onnx`]) size each layer from the shapes it found.
//!
//! Every match over [`Op`] names each kind, with no catch-all. Adding a kind is
//! a variant of [`Op`] (its fields are its settings, which the train stage's
//! cache key records) and its entry in [`SPELLINGS`]; the compiler then lists
//! each match to extend: here its description, shape rule, flow and strides;
//! in `net` how it is built (with weights, or kept as its `Op`) and its
//! forward pass; in `commands::export::onnx` its nodes. Then a row in
//! docs/pipeline-reference.md. (`sigmoid` was added this way.)
//!
//! A block (`{ block = "NAME" }`) is spelt like a layer, but it is many: the
//! reader expands it and every walk follows its uses ([`Step::Block`]).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::graph::BlockUse;
use super::graph::shape::{Shape, window_side};
use crate::config::{Location, Node, Table};

/// One layer's kind and settings: the serde form is the train stage's cache key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    Conv {
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    },
    /// Per-channel batch norm (epsilon 1e-5, momentum 0.1, as PyTorch).
    #[serde(rename = "batchnorm")]
    BatchNorm,
    Relu,
    LeakyRelu {
        slope: f64,
    },
    /// The logistic function, 1 / (1 + e^-x).
    Sigmoid,
    #[serde(rename = "maxpool")]
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    #[serde(rename = "avgpool")]
    AvgPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    GlobalAvgPool,
    Dropout {
        p: f64,
    },
    Flatten,
    Dense {
        units: usize,
    },
    /// Enlarges a map `factor` times in each direction.
    Upsample {
        factor: usize,
        mode: UpsampleMode,
    },
    /// One map per keypoint to its coordinates (integral regression, Sun et
    /// al. 2018): a softmax over each map's positions, its values divided by
    /// `temperature`, then the expected position. As a network's last layer
    /// it gives the coordinates itself, and there is no output layer.
    SoftArgmax {
        temperature: f64,
    },
    /// A named block, once per repetition.
    Block {
        name: String,
        uses: Vec<BlockUse>,
    },
}

/// How `upsample` fills the new positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    /// Each value repeated over a `factor` x `factor` square.
    Nearest,
    /// Interpolated between the four nearest values, the corners kept where
    /// they are (PyTorch's `align_corners = True`).
    Bilinear,
}

// ---- Spelling: how a pipeline writes each kind ----

/// LeakyReLU's slope when none is given (PyTorch's default).
const DEFAULT_SLOPE: f64 = 0.01;
/// Ranges of the numbers layers take: wide enough for any real network,
/// narrow enough that none exhausts memory.
const FILTERS: RangeInclusive<usize> = 1..=65_536;
const WINDOW: RangeInclusive<usize> = 1..=64;
const PADDING: RangeInclusive<usize> = 0..=64;
const UNITS: RangeInclusive<usize> = 1..=1 << 20;
const MAX_DROPOUT: f64 = 0.95;
const MAX_SLOPE: f64 = 1.0;
const UPSAMPLE: RangeInclusive<usize> = 2..=16;
const MAX_TEMPERATURE: f64 = 100.0;

/// How a pipeline writes one kind. The order of [`SPELLINGS`] is the order
/// messages list the kinds in.
pub struct Spelling {
    pub name: &'static str,
    pub written: Written,
}

pub enum Written {
    /// A string (`"relu"`).
    Bare(Op),
    /// A table keyed by the name (`{ conv = 32, kernel = 3 }`); the example is
    /// shown when the name is written alone.
    Table { example: &'static str, form: TableForm },
    /// Either: the string takes the defaults (`"leaky_relu"`, `{ leaky_relu = 0.2 }`).
    BareOrTable(Op, TableForm),
}

pub enum TableForm {
    /// A layer: its keys besides its name, and how its values read.
    Layer {
        keys: &'static [&'static str],
        read: fn(&mut dyn NumberReader, &LayerTable) -> Option<ReadLayer>,
    },
    /// A block's use, which the reader expands.
    Block,
}

impl Spelling {
    /// The layer a bare string makes.
    pub fn bare(&self) -> Option<&Op> {
        match &self.written {
            Written::Bare(op) | Written::BareOrTable(op, _) => Some(op),
            Written::Table { .. } => None,
        }
    }

    pub fn table(&self) -> Option<&TableForm> {
        match &self.written {
            Written::Table { form, .. } | Written::BareOrTable(_, form) => Some(form),
            Written::Bare(_) => None,
        }
    }
}

pub const SPELLINGS: &[Spelling] = &[
    Spelling {
        name: "conv",
        written: Written::Table {
            example: "{ conv = 32, kernel = 3 }",
            form: TableForm::Layer {
                keys: &["kernel", "stride", "padding", "bias"],
                read: read_conv,
            },
        },
    },
    Spelling {
        name: "maxpool",
        written: Written::Table {
            example: "{ maxpool = 2 }",
            form: TableForm::Layer {
                keys: &["stride", "padding"],
                read: read_maxpool,
            },
        },
    },
    Spelling {
        name: "avgpool",
        written: Written::Table {
            example: "{ avgpool = 2 }",
            form: TableForm::Layer {
                keys: &["stride", "padding"],
                read: read_avgpool,
            },
        },
    },
    Spelling {
        name: "dense",
        written: Written::Table {
            example: "{ dense = 500 }",
            form: TableForm::Layer {
                keys: &[],
                read: |v, t| {
                    let units = v.count(t.value, "units", UNITS)?;
                    Some(ReadLayer::new(Op::Dense { units }))
                },
            },
        },
    },
    Spelling {
        name: "dropout",
        written: Written::Table {
            example: "{ dropout = 0.5 }",
            form: TableForm::Layer {
                keys: &[],
                read: |v, t| {
                    let p = v.fraction(t.value, "dropout", MAX_DROPOUT)?;
                    Some(ReadLayer::new(Op::Dropout { p }))
                },
            },
        },
    },
    Spelling {
        name: "relu",
        written: Written::Bare(Op::Relu),
    },
    Spelling {
        name: "batchnorm",
        written: Written::Bare(Op::BatchNorm),
    },
    Spelling {
        name: "flatten",
        written: Written::Bare(Op::Flatten),
    },
    Spelling {
        name: "global_avg_pool",
        written: Written::Bare(Op::GlobalAvgPool),
    },
    Spelling {
        name: "leaky_relu",
        written: Written::BareOrTable(
            Op::LeakyRelu { slope: DEFAULT_SLOPE },
            TableForm::Layer {
                keys: &[],
                read: |v, t| {
                    let slope = v.fraction(t.value, "slope", MAX_SLOPE)?;
                    Some(ReadLayer::new(Op::LeakyRelu { slope }))
                },
            },
        ),
    },
    Spelling {
        name: "sigmoid",
        written: Written::Bare(Op::Sigmoid),
    },
    Spelling {
        name: "upsample",
        written: Written::Table {
            example: "{ upsample = 2 }",
            form: TableForm::Layer {
                keys: &["mode"],
                read: read_upsample,
            },
        },
    },
    Spelling {
        name: "soft_argmax",
        written: Written::BareOrTable(
            Op::SoftArgmax { temperature: 1.0 },
            TableForm::Layer {
                keys: &[],
                read: |v, t| {
                    let temperature = v.fraction(t.value, "temperature", MAX_TEMPERATURE)?;
                    if temperature <= 0.0 {
                        v.error(t.at, "the temperature divides the maps: it is above 0".into());
                        return None;
                    }
                    Some(ReadLayer::new(Op::SoftArgmax { temperature }))
                },
            },
        ),
    },
    Spelling {
        name: "block",
        written: Written::Table {
            example: "{ block = \"basic\", filters = 64 }",
            form: TableForm::Block,
        },
    },
];

/// The names written as bare strings, in [`SPELLINGS`] order.
pub fn bare_names() -> impl Iterator<Item = &'static str> {
    SPELLINGS.iter().filter(|s| s.bare().is_some()).map(|s| s.name)
}

/// The names that key a layer table, in [`SPELLINGS`] order.
pub fn table_names() -> impl Iterator<Item = &'static str> {
    SPELLINGS.iter().filter(|s| s.table().is_some()).map(|s| s.name)
}

/// A layer table as its kind reads it.
pub struct LayerTable<'a> {
    /// The value of the kind's own key: `32` in `{ conv = 32, kernel = 3 }`.
    pub value: &'a Node,
    pub table: &'a Table,
    /// Where the whole layer is written.
    pub at: &'a Location,
}

/// A layer as read, and whether it states a conv's `bias` (else the reader
/// decides it from the next layer).
pub struct ReadLayer {
    pub op: Op,
    pub states_bias: bool,
}

impl ReadLayer {
    pub fn new(op: Op) -> ReadLayer {
        ReadLayer {
            op,
            states_bias: false,
        }
    }
}

/// The reader's checks of a layer's numbers, which may name a block's
/// parameters; each reports its own mistake and gives None.
pub trait NumberReader {
    fn count(&mut self, node: &Node, what: &str, range: RangeInclusive<usize>) -> Option<usize>;
    /// A number in [0, max].
    fn fraction(&mut self, node: &Node, what: &str, max: f64) -> Option<f64>;
    fn error(&mut self, at: &Location, message: String);

    /// An optional key of `table`, or `default`.
    fn option(
        &mut self,
        table: &Table,
        name: &str,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> Option<usize> {
        match table.get(name) {
            Some(entry) => self.count(&entry.node, name, range),
            None => Some(default),
        }
    }
}

fn read_conv(v: &mut dyn NumberReader, t: &LayerTable) -> Option<ReadLayer> {
    let filters = v.count(t.value, "filters", FILTERS)?;
    let Some(kernel) = t.table.get("kernel") else {
        v.error(t.at, "a conv needs `kernel`: { conv = 32, kernel = 3 }".into());
        return None;
    };
    let kernel = v.count(&kernel.node, "kernel", WINDOW)?;
    let stride = v.option(t.table, "stride", 1, WINDOW)?;
    let padding = v.option(t.table, "padding", 0, PADDING)?;
    let (bias, states_bias) = match t.table.get("bias") {
        Some(e) => match e.node.value {
            crate::config::Value::Boolean(b) => (b, true),
            _ => {
                v.error(&e.node.at, "`bias` is true or false".into());
                return None;
            }
        },
        None => (true, false),
    };
    let op = Op::Conv {
        filters,
        kernel,
        stride,
        padding,
        bias,
    };
    Some(ReadLayer { op, states_bias })
}

/// A pooling's window: its size is the kind's value, its stride that by default.
fn read_window(v: &mut dyn NumberReader, t: &LayerTable) -> Option<(usize, usize, usize)> {
    let kernel = v.count(t.value, "kernel", WINDOW)?;
    let stride = v.option(t.table, "stride", kernel, WINDOW)?;
    let padding = v.option(t.table, "padding", 0, PADDING)?;
    if 2 * padding > kernel {
        let message = format!("padding {padding} is more than half the {kernel}x{kernel} window");
        v.error(t.at, message);
        return None;
    }
    Some((kernel, stride, padding))
}

fn read_maxpool(v: &mut dyn NumberReader, t: &LayerTable) -> Option<ReadLayer> {
    let (kernel, stride, padding) = read_window(v, t)?;
    Some(ReadLayer::new(Op::MaxPool {
        kernel,
        stride,
        padding,
    }))
}

fn read_avgpool(v: &mut dyn NumberReader, t: &LayerTable) -> Option<ReadLayer> {
    let (kernel, stride, padding) = read_window(v, t)?;
    Some(ReadLayer::new(Op::AvgPool {
        kernel,
        stride,
        padding,
    }))
}

fn read_upsample(v: &mut dyn NumberReader, t: &LayerTable) -> Option<ReadLayer> {
    let factor = v.count(t.value, "factor", UPSAMPLE)?;
    let mode = match t.table.get("mode").map(|e| (&e.node.value, &e.node.at)) {
        None => UpsampleMode::Nearest,
        Some((crate::config::Value::String(mode), _)) if mode == "nearest" => UpsampleMode::Nearest,
        Some((crate::config::Value::String(mode), _)) if mode == "bilinear" => UpsampleMode::Bilinear,
        Some((_, at)) => {
            v.error(at, "`mode` is \"nearest\" or \"bilinear\"".into());
            return None;
        }
    };
    Some(ReadLayer::new(Op::Upsample { factor, mode }))
}

// ---- What each kind does with what flows in ----

/// What flows out of the layers read so far, as far as the reader needs to
/// know to check a block's shortcut: the channels of a map, or flat features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flow {
    Map(usize),
    Flat,
}

/// What a layer makes of its input, for one image.
pub enum Step<'a> {
    Layer {
        output: Shape,
        parameters: usize,
        mult_adds: u64,
    },
    /// A block is its uses, which the walk follows layer by layer.
    Block { name: &'a str, uses: &'a [BlockUse] },
}

impl Op {
    /// A short description for tables and messages: `conv 64 3x3/2`.
    pub fn describe(&self) -> String {
        match self {
            Op::Conv {
                filters,
                kernel,
                stride,
                padding,
                bias,
            } => {
                let mut text = format!("conv {filters} {kernel}x{kernel}");
                if *stride != 1 {
                    text += &format!("/{stride}");
                }
                text += &padding_text(*padding);
                if !bias {
                    text += " no bias";
                }
                text
            }
            Op::BatchNorm => "batchnorm".into(),
            Op::Relu => "relu".into(),
            Op::LeakyRelu { slope } => format!("leaky_relu {slope}"),
            Op::Sigmoid => "sigmoid".into(),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => describe_pool("maxpool", *kernel, *stride, *padding),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => describe_pool("avgpool", *kernel, *stride, *padding),
            Op::GlobalAvgPool => "global_avg_pool".into(),
            Op::Dropout { p } => format!("dropout {p}"),
            Op::Flatten => "flatten".into(),
            Op::Dense { units } => format!("dense {units}"),
            Op::Upsample { factor, mode } => match mode {
                UpsampleMode::Nearest => format!("upsample {factor}"),
                UpsampleMode::Bilinear => format!("upsample {factor} bilinear"),
            },
            Op::SoftArgmax { temperature } if *temperature == 1.0 => "soft_argmax".into(),
            Op::SoftArgmax { temperature } => format!("soft_argmax {temperature}"),
            Op::Block { name, uses } => format!("block {name} x{}", uses.len()),
        }
    }

    /// The shape rule: what the layer makes of `input`, in a network whose
    /// images are `side` pixels; or why it cannot take `input`.
    pub fn step(&self, input: Shape, side: usize) -> Result<Step<'_>, String> {
        let layer = |output, parameters, mult_adds| Step::Layer {
            output,
            parameters,
            mult_adds,
        };
        Ok(match self {
            Op::Conv {
                filters,
                kernel,
                stride,
                padding,
                bias,
            } => {
                let (c, h, w) = needs_map(input, "a conv")?;
                let why = "too many poolings or strides";
                let (oh, ow) = window((*kernel, *stride, *padding), (h, w), side, why)?;
                let weights = filters * c * kernel * kernel;
                let biases = if *bias { *filters } else { 0 };
                layer(
                    Shape::Map(*filters, oh, ow),
                    weights + biases,
                    (weights * oh * ow) as u64,
                )
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let (c, h, w) = needs_map(input, "a pooling")?;
                let (oh, ow) = window((*kernel, *stride, *padding), (h, w), side, "too many poolings")?;
                layer(Shape::Map(c, oh, ow), 0, 0)
            }
            Op::BatchNorm => layer(input, 2 * features(input), 0),
            Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid | Op::Dropout { .. } => layer(input, 0, 0),
            Op::GlobalAvgPool => {
                let (c, ..) = needs_map(input, "global_avg_pool")?;
                layer(Shape::Flat(c), 0, 0)
            }
            Op::Flatten => match input {
                Shape::Map(c, h, w) => layer(Shape::Flat(c * h * w), 0, 0),
                Shape::Flat(n) => return Err(format!("gets {n} features that are flat already")),
            },
            Op::Dense { units } => match input {
                Shape::Flat(n) => layer(Shape::Flat(*units), n * units + units, (n * units) as u64),
                Shape::Map(..) => {
                    return Err(format!(
                        "gets a {input} map, but dense needs flat features: add \"flatten\" or \"global_avg_pool\" before it"
                    ));
                }
            },
            Op::Upsample { factor, .. } => {
                let (c, h, w) = needs_map(input, "upsample")?;
                layer(Shape::Map(c, h * factor, w * factor), 0, 0)
            }
            Op::SoftArgmax { .. } => {
                let (c, ..) = needs_map(input, "soft_argmax")?;
                layer(Shape::Flat(2 * c), 0, 0)
            }
            Op::Block { name, uses } => Step::Block { name, uses },
        })
    }

    /// What flows out of the layer when `flow` flows in (a block's own layers
    /// are followed as they are read).
    pub fn flow(&self, flow: Flow) -> Flow {
        match self {
            Op::Conv { filters, .. } => Flow::Map(*filters),
            Op::Flatten | Op::GlobalAvgPool | Op::Dense { .. } | Op::SoftArgmax { .. } => Flow::Flat,
            Op::BatchNorm
            | Op::Upsample { .. }
            | Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Sigmoid
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::Dropout { .. }
            | Op::Block { .. } => flow,
        }
    }

    /// Whether the layer (or a block's layers) moves with a stride above 1:
    /// then it shrinks the map, and a block's shortcut must too.
    pub fn strides(&self) -> bool {
        match self {
            Op::Conv { stride, .. } | Op::MaxPool { stride, .. } | Op::AvgPool { stride, .. } => *stride > 1,
            Op::Block { uses, .. } => uses.iter().any(|u| u.body.iter().any(|l| l.op.strides())),
            Op::BatchNorm
            | Op::Relu
            | Op::LeakyRelu { .. }
            | Op::Sigmoid
            | Op::GlobalAvgPool
            | Op::Dropout { .. }
            | Op::Flatten
            | Op::Dense { .. }
            | Op::Upsample { .. }
            | Op::SoftArgmax { .. } => false,
        }
    }
}

/// The position `soft_argmax` gives each cell of an `h` x `w` map of a `side`
/// x `side` image, `(x, y)` row by row: the centre of the pixels it covers,
/// in the coordinates the targets use (pixel `p` at `(p - side / 2) / (side /
/// 2)`, pixels numbered from 0 at their centres, as Kaggle's are). One
/// definition for the network and its ONNX export.
pub fn soft_argmax_positions(h: usize, w: usize, side: usize) -> Vec<f32> {
    let half = side as f64 / 2.0;
    let centre = |cell: usize, cells: usize| {
        let pixel = (cell as f64 + 0.5) * side as f64 / cells as f64 - 0.5;
        ((pixel - half) / half) as f32
    };
    (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [centre(x, w), centre(y, h)]))
        .collect()
}

fn padding_text(padding: usize) -> String {
    if padding > 0 {
        format!(" pad {padding}")
    } else {
        String::new()
    }
}

fn describe_pool(name: &str, kernel: usize, stride: usize, padding: usize) -> String {
    let mut text = format!("{name} {kernel}");
    if stride != kernel {
        text += &format!("/{stride}");
    }
    text + &padding_text(padding)
}

/// The channels of a map, or the width of flat features: what batch norm
/// normalises one by one.
pub fn features(shape: Shape) -> usize {
    match shape {
        Shape::Map(c, ..) => c,
        Shape::Flat(n) => n,
    }
}

fn needs_map(input: Shape, what: &str) -> Result<(usize, usize, usize), String> {
    match input {
        Shape::Map(c, h, w) => Ok((c, h, w)),
        Shape::Flat(n) => Err(format!(
            "gets {n} flat features, but {what} needs a map: move it before what made the features flat (\"flatten\", \"global_avg_pool\", \"dense\" or \"soft_argmax\")"
        )),
    }
}

/// The sides of a window's output, or why there are none.
fn window(
    (kernel, stride, padding): (usize, usize, usize),
    (h, w): (usize, usize),
    side: usize,
    why: &str,
) -> Result<(usize, usize), String> {
    match (
        window_side(h, kernel, stride, padding),
        window_side(w, kernel, stride, padding),
    ) {
        (Some(oh), Some(ow)) => Ok((oh, ow)),
        _ => Err(format!(
            "gets a {h}x{w} map from a {side}x{side} input, smaller than its {kernel}x{kernel} window: {why}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn each_kind_is_spelt_once_and_a_bare_one_is_named_as_it_is_written() {
        let names: BTreeSet<&str> = SPELLINGS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SPELLINGS.len());
        for spelling in SPELLINGS {
            if let Some(op) = spelling.bare() {
                // The cache key and `fkp model` use the name the pipeline writes.
                assert_eq!(serde_json::to_value(op).unwrap()["kind"], spelling.name);
                assert!(op.describe().starts_with(spelling.name), "{}", op.describe());
            }
        }
    }
}
