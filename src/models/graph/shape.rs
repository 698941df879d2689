//! Following an image through a [`Network`]: the shape after every layer, each
//! layer's parameters and multiply-adds, and a clear error where a layer
//! cannot take what it gets. Each layer's rule is its kind's
//! ([`crate::models::kinds`]); this walk follows blocks and their shortcuts.

use std::collections::BTreeMap;
use std::fmt;

use super::{BlockUse, Layer, Network, Op, Shortcut};
use crate::config::Location;
use crate::models::kinds::{Step, features};

/// What flows between layers, for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Channels, height, width.
    Map(usize, usize, usize),
    Flat(usize),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Map(c, h, w) => write!(f, "{c}x{h}x{w}"),
            Shape::Flat(n) => write!(f, "{n}"),
        }
    }
}

/// One row of `fkp model`: a layer, or a block's residual sum.
#[derive(Debug, Clone)]
pub struct Row {
    /// The layer's name, as its weights are named: `layers.4.0.body.1`.
    pub path: String,
    /// How many blocks deep it sits.
    pub depth: usize,
    pub what: String,
    pub input: Shape,
    pub output: Shape,
    pub parameters: usize,
    pub mult_adds: u64,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub input: Shape,
    pub rows: Vec<Row>,
    pub parameters: usize,
    pub mult_adds: u64,
}

impl Summary {
    /// What each layer gets, by path: how the builder and the ONNX export size
    /// the layers, from this one inference.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs(self.rows.iter().map(|r| (r.path.as_str(), r.input)).collect())
    }
}

/// The input of every layer of a summary, by path.
pub struct Inputs<'a>(BTreeMap<&'a str, Shape>);

impl Inputs<'_> {
    /// None only for a path the summary has no layer at: a graph other than the one inferred.
    pub fn of(&self, path: &str) -> Option<Shape> {
        self.0.get(path).copied()
    }
}

/// A layer that cannot take its input.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path} ({what}) {message}")]
pub struct ShapeError {
    pub path: String,
    pub what: String,
    pub message: String,
    pub at: Option<Location>,
}

/// The side of a convolution's or pooling's output for an input of `side`,
/// or None when the padded input is smaller than the window.
pub fn window_side(side: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    (side + 2 * padding >= kernel).then(|| (side + 2 * padding - kernel) / stride + 1)
}

/// Follows a `side` x `side` grey image through `graph` and its output layer of
/// `outputs` units (a dense layer; none after a final `soft_argmax`, whose
/// maps must then be one per keypoint). `outputs` is None before the data is
/// known: the layers are checked, not the width of what they end in.
pub fn infer(graph: &Network, side: usize, outputs: Option<usize>) -> Result<Summary, ShapeError> {
    let mut walk = Walk {
        side,
        rows: Vec::new(),
    };
    let input = Shape::Map(graph.channels, side, side);
    let mut shape = walk.list("layers", 0, &graph.layers, input)?;
    shape = walk.list("head", 0, &graph.head, shape)?;
    if graph.reads_coordinates() {
        if let Some(outputs) = outputs
            && shape != Shape::Flat(outputs)
        {
            let last = walk.rows.last().map(|r| r.path.clone()).unwrap_or_default();
            return Err(ShapeError {
                path: last,
                what: "soft_argmax".into(),
                message: format!(
                    "gets {} maps, but the data has {} keypoints: end with {{ conv = {}, kernel = 1 }} before it",
                    features(shape) / 2,
                    outputs / 2,
                    outputs / 2
                ),
                at: graph.last_written(),
            });
        }
    } else {
        if let Shape::Map(..) = shape {
            return Err(ShapeError {
                path: "output".into(),
                what: "dense, one unit per coordinate".into(),
                message: format!(
                    "gets a {shape} map: end `layers` or `head` with \"flatten\" or \"global_avg_pool\", or with \"soft_argmax\""
                ),
                at: graph.last_written(),
            });
        }
        let output = Layer {
            op: Op::Dense {
                units: outputs.unwrap_or(1),
            },
            at: None,
        };
        walk.layer("output", 0, &output, shape)?;
    }
    Ok(Summary {
        input,
        parameters: walk.rows.iter().map(|r| r.parameters).sum(),
        mult_adds: walk.rows.iter().map(|r| r.mult_adds).sum(),
        rows: walk.rows,
    })
}

struct Walk {
    side: usize,
    rows: Vec<Row>,
}

impl Walk {
    fn list(
        &mut self,
        path: &str,
        depth: usize,
        layers: &[Layer],
        mut shape: Shape,
    ) -> Result<Shape, ShapeError> {
        for (i, layer) in layers.iter().enumerate() {
            shape = self.layer(&format!("{path}.{i}"), depth, layer, shape)?;
        }
        Ok(shape)
    }

    fn layer(&mut self, path: &str, depth: usize, layer: &Layer, input: Shape) -> Result<Shape, ShapeError> {
        let side = self.side;
        let fail = |message: String| ShapeError {
            path: path.to_string(),
            what: layer.op.describe(),
            message,
            at: layer.at.clone(),
        };
        let (output, parameters, mult_adds) = match layer.op.step(input, side).map_err(fail)? {
            Step::Layer {
                output,
                parameters,
                mult_adds,
            } => (output, parameters, mult_adds),
            Step::Block { name, uses } => {
                let mut shape = input;
                for (r, block_use) in uses.iter().enumerate() {
                    shape =
                        self.block_use(&format!("{path}.{r}"), depth + 1, name, block_use, shape, layer)?;
                }
                return Ok(shape);
            }
        };
        self.rows.push(Row {
            path: path.to_string(),
            depth,
            what: layer.op.describe(),
            input,
            output,
            parameters,
            mult_adds,
        });
        if let Shape::Map(_, 0, _) | Shape::Map(_, _, 0) = output {
            return Err(fail(format!("leaves an empty map from a {side}x{side} input")));
        }
        Ok(output)
    }

    fn block_use(
        &mut self,
        path: &str,
        depth: usize,
        name: &str,
        block_use: &BlockUse,
        input: Shape,
        layer: &Layer,
    ) -> Result<Shape, ShapeError> {
        let body = self.list(&format!("{path}.body"), depth, &block_use.body, input)?;
        let shortcut = match &block_use.shortcut {
            Shortcut::None => {
                return self.list(&format!("{path}.after_add"), depth, &block_use.after_add, body);
            }
            Shortcut::Identity => input,
            Shortcut::Projection { layers } => {
                self.list(&format!("{path}.projection"), depth, layers, input)?
            }
        };
        if body != shortcut {
            return Err(ShapeError {
                path: path.to_string(),
                what: format!("block {name}"),
                message: format!(
                    "cannot add its input to its output: the layers give {body}, the shortcut {shortcut}"
                ),
                at: layer.at.clone(),
            });
        }
        self.rows.push(Row {
            path: format!("{path}.add"),
            depth,
            what: "add shortcut".into(),
            input: body,
            output: body,
            parameters: 0,
            mult_adds: 0,
        });
        self.list(&format!("{path}.after_add"), depth, &block_use.after_add, body)
    }
}
