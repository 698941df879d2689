//! A trained network as an ONNX graph: the layers of a [`crate::models::Network`] as ONNX
//! operators, with the weights of its safetensors checkpoint, and around them
//! what fkp does to pixels before and after the network, so the file maps
//! pixels to keypoints in pixels by itself.
//!
//! The graph, for input `image` `[N, 1, side, side]` (uint8 or float, 0-255):
//!
//! 1. `Cast` to float (uint8 input), `Div` by `input_divisor` (255);
//! 2. with test-time flips, `Gather` the columns in reverse (the mirror image)
//!    and `Concat` it after the batch: the network sees `2N` faces at once;
//! 3. `Concat` the grey channel `channels` times (the network's own input);
//! 4. each member of the ensemble: its layers, then `Mul` by `output_scale`
//!    and `Add` `output_offset` (pixels);
//! 5. with flips: `Reshape` to `[2, N, coords]`, the mirror's half mapped back
//!    (`Gather` each keypoint's partner, x to `(side - 1) - x`) and averaged
//!    with the plain half, as `Tta::HFlip` does;
//! 6. `Mean` over the members; the result is `keypoints` `[N, coords]`.
//!
//! Opset 13 (IR version 7): the oldest opset with every operator above in its
//! current form, accepted by ONNX Runtime, TensorRT, OpenVINO and the common
//! converters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use prost::Message;

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, data_type, tensor_shape_proto,
    type_proto,
};
use crate::data::augment::FlipMap;
use crate::models::ModelSpec;
use crate::models::graph::shape::Shape;
use crate::models::graph::shape::{Inputs, Summary};
use crate::models::graph::{BlockUse, Layer, Op, Shortcut};
use crate::models::kinds::{UpsampleMode, features, soft_argmax_positions};
use crate::training::Tta;

/// The opset the file imports, and the IR version that goes with it.
pub const OPSET: i64 = 13;
pub const IR_VERSION: i64 = 7;
/// Batch norm's epsilon, as fkp's networks use it (PyTorch's default).
const BN_EPSILON: f32 = 1e-5;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read the checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("cannot export {layer}: {message} (checkpoint {path})")]
    Layer {
        layer: String,
        message: String,
        path: PathBuf,
    },
    #[error(
        "the checkpoint {path} holds tensors the network has no layer for: {names} (is it this pipeline's?)"
    )]
    Unused { path: PathBuf, names: String },
    #[error("cannot export the network: {0}")]
    Network(String),
}

/// The image type of the input `image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// float32 pixels 0-255.
    Float,
    /// uint8 pixels, as decoded from an image file.
    Uint8,
}

/// One checkpoint's tensors: float32 values, little-endian as both
/// safetensors and ONNX store them.
pub struct Checkpoint {
    pub path: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

impl Checkpoint {
    pub fn read(path: &Path) -> Result<Checkpoint, OnnxError> {
        let fail = |message: String| OnnxError::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        Checkpoint::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint, OnnxError> {
        let fail = |message: String| OnnxError::Checkpoint {
            path: path.to_path_buf(),
            message,
        };
        let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| fail(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(fail(format!(
                    "tensor `{name}` is {:?}; fkp's networks are float32",
                    view.dtype()
                )));
            }
            tensors.insert(name, (view.shape().to_vec(), view.data().to_vec()));
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
        })
    }
}

/// Everything the ONNX file is made from.
pub struct Export<'a> {
    pub spec: &'a ModelSpec,
    /// One checkpoint, or a seed ensemble's, averaged.
    pub members: &'a [Checkpoint],
    /// input = pixels / `input_divisor`; pixels = output * `output_scale` + `output_offset`.
    pub input_divisor: f32,
    pub output_scale: f32,
    pub output_offset: f32,
    pub keypoint_names: &'a [String],
    /// Test-time augmentation inside the graph.
    pub tta: &'a [Tta],
    pub input_type: InputType,
    /// The graph's name (the pipeline's).
    pub name: &'a str,
    pub doc: String,
    /// `metadata_props`, in this order.
    pub metadata: Vec<(String, String)>,
}

/// The model, ready to write: the same bytes for the same export.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

pub fn build(export: &Export) -> Result<ModelProto, OnnxError> {
    let summary = check(export)?;
    let inputs = summary.inputs();
    let mut g = Emitter::default();
    let x = scaled_input(&mut g, export);
    let ensemble = export.members.len() > 1;
    let scale = g.scalar("output_scale", export.output_scale);
    let offset = g.scalar("output_offset", export.output_offset);
    let mut outputs = Vec::new();
    for (m, checkpoint) in export.members.iter().enumerate() {
        let prefix = if ensemble {
            format!("member{m}.")
        } else {
            String::new()
        };
        let mut network = MemberGraph {
            g: &mut g,
            checkpoint,
            prefix: &prefix,
            inputs: &inputs,
            side: export.spec.side,
            used: BTreeSet::new(),
        };
        let y = network.run(export.spec, &x)?;
        network.check_all_used()?;
        let y = g.node("Mul", &format!("{prefix}output.scaled"), &[&y, &scale], vec![]);
        let mut y = g.node("Add", &format!("{prefix}output.pixels"), &[&y, &offset], vec![]);
        if export.tta.contains(&Tta::HFlip) {
            let (side, coords) = (export.spec.side, export.spec.outputs);
            y = average_with_mirrored(&mut g, &prefix, &y, side, coords, export.keypoint_names);
        }
        outputs.push(y);
    }
    let inputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    // The last node writes `keypoints` itself.
    let last = if ensemble { "Mean" } else { "Identity" };
    g.node(last, "keypoints", &inputs, vec![]);
    Ok(model(export, g))
}

/// The network's shapes, once the export is known to make sense.
fn check(export: &Export) -> Result<Summary, OnnxError> {
    let spec = export.spec;
    let summary = spec.check().map_err(|e| OnnxError::Network(e.to_string()))?;
    if export.members.is_empty() {
        return Err(OnnxError::Network("no trained model to export".into()));
    }
    if export.keypoint_names.len() * 2 != spec.outputs {
        return Err(OnnxError::Network(format!(
            "{} keypoint names for {} outputs",
            export.keypoint_names.len(),
            spec.outputs
        )));
    }
    Ok(summary)
}

/// Steps 1 to 3: pixels to the network's input.
fn scaled_input(g: &mut Emitter, export: &Export) -> String {
    let mut x = "image".to_string();
    if export.input_type == InputType::Uint8 {
        x = g.node("Cast", "pixels", &[&x], vec![int("to", data_type::FLOAT.into())]);
    }
    let divisor = g.scalar("input_divisor", export.input_divisor);
    x = g.node("Div", "scaled", &[&x, &divisor], vec![]);
    if export.tta.contains(&Tta::HFlip) {
        let side = export.spec.side;
        let columns: Vec<i64> = (0..side as i64).rev().collect();
        let reversed = g.int64s("tta.reversed_columns", &[side], &columns);
        let mirrored = g.node("Gather", "tta.mirrored", &[&x, &reversed], vec![int("axis", 3)]);
        x = g.node("Concat", "tta.batch", &[&x, &mirrored], vec![int("axis", 0)]);
    }
    let channels = export.spec.graph.channels;
    if channels > 1 {
        let copies: Vec<&str> = vec![x.as_str(); channels];
        x = g.node("Concat", "channels", &copies, vec![int("axis", 1)]);
    }
    x
}

/// The model around the graph the emitter holds: its input and output, opset and metadata.
fn model(export: &Export, g: Emitter) -> ModelProto {
    let (side, coords) = (export.spec.side, export.spec.outputs);
    let batch = || tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimParam("N".into())),
        denotation: None,
    };
    let dim = |n: usize| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(n as i64)),
        denotation: None,
    };
    let (elem, what) = match export.input_type {
        InputType::Float => (data_type::FLOAT, "float"),
        InputType::Uint8 => (data_type::UINT8, "uint8"),
    };
    let graph = GraphProto {
        node: g.nodes,
        name: Some(export.name.to_string()),
        initializer: g.initializers,
        doc_string: Some(export.doc.clone()),
        input: vec![value_info(
            "image",
            elem,
            vec![batch(), dim(1), dim(side), dim(side)],
            &format!("grey faces, {what} pixels 0-255, {side}x{side}, row-major"),
        )],
        output: vec![value_info(
            "keypoints",
            data_type::FLOAT,
            vec![batch(), dim(coords)],
            "x then y of each keypoint, in pixels of the input (pixel centres at integers)",
        )],
        value_info: Vec::new(),
    };
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("fkp".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(export.doc.clone()),
        graph: Some(graph),
        metadata_props: export
            .metadata
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key.clone()),
                value: Some(value.clone()),
            })
            .collect(),
    }
}

/// A float or uint8 tensor of the graph's input or output.
fn value_info(name: &str, elem: i32, dims: Vec<tensor_shape_proto::Dimension>, doc: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            denotation: None,
        }),
        doc_string: Some(doc.into()),
    }
}

/// Step 5: `y` holds the plain faces' pixels, then their mirrors'. Keypoint k of
/// a face is averaged with its partner's point in the mirror, x mapped back to
/// `(side - 1) - x` (as `training::tta`).
fn average_with_mirrored(
    g: &mut Emitter,
    prefix: &str,
    y: &str,
    side: usize,
    coords: usize,
    keypoint_names: &[String],
) -> String {
    let flips = FlipMap::from_keypoint_names(keypoint_names);
    let halves = g.int64s(&format!("{prefix}tta.halves"), &[3], &[2, -1, coords as i64]);
    let split = g.node("Reshape", &format!("{prefix}tta.split"), &[y, &halves], vec![]);
    let first = g.int64s(&format!("{prefix}tta.first"), &[], &[0]);
    let second = g.int64s(&format!("{prefix}tta.second"), &[], &[1]);
    let plain = g.node(
        "Gather",
        &format!("{prefix}tta.plain"),
        &[&split, &first],
        vec![int("axis", 0)],
    );
    let mirror = g.node(
        "Gather",
        &format!("{prefix}tta.mirror"),
        &[&split, &second],
        vec![int("axis", 0)],
    );
    let mut partners = Vec::with_capacity(coords);
    let mut sign = Vec::with_capacity(coords);
    let mut shift = Vec::with_capacity(coords);
    let last = (side - 1) as f32;
    for k in 0..coords / 2 {
        let p = flips.partner(k) as i64;
        partners.extend([2 * p, 2 * p + 1]);
        sign.extend([-1.0, 1.0]);
        shift.extend([last, 0.0]);
    }
    let partners = g.int64s(&format!("{prefix}tta.partners"), &[coords], &partners);
    let sign = g.floats(&format!("{prefix}tta.sign"), &[coords], &sign);
    let shift = g.floats(&format!("{prefix}tta.shift"), &[coords], &shift);
    let half = g.scalar(&format!("{prefix}tta.half"), 0.5);
    let swapped = g.node(
        "Gather",
        &format!("{prefix}tta.swapped"),
        &[&mirror, &partners],
        vec![int("axis", 1)],
    );
    let flipped = g.node("Mul", &format!("{prefix}tta.flipped"), &[&swapped, &sign], vec![]);
    let mapped = g.node(
        "Add",
        &format!("{prefix}tta.mapped_back"),
        &[&flipped, &shift],
        vec![],
    );
    let sum = g.node("Add", &format!("{prefix}tta.sum"), &[&plain, &mapped], vec![]);
    g.node("Mul", &format!("{prefix}tta.average"), &[&sum, &half], vec![])
}

/// Nodes and initializers, in the order they are added.
#[derive(Default)]
struct Emitter {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Emitter {
    /// Adds a node named `name` whose one output is also `name`.
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            domain: None,
            attribute,
            doc_string: None,
        });
        name.to_string()
    }

    fn initializer(&mut self, name: &str, dims: &[usize], data_type: i32, raw: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type),
            name: Some(name.to_string()),
            doc_string: None,
            raw_data: Some(raw),
        });
        name.to_string()
    }

    fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, data_type::FLOAT, raw)
    }

    fn scalar(&mut self, name: &str, value: f32) -> String {
        self.floats(name, &[], &[value])
    }

    fn int64s(&mut self, name: &str, dims: &[usize], values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, data_type::INT64, raw)
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INT),
        i: Some(value),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::STRING),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::FLOAT),
        f: Some(value),
        ..Default::default()
    }
}

/// One member's layers, named after the graph as its checkpoint is.
struct MemberGraph<'a> {
    g: &'a mut Emitter,
    checkpoint: &'a Checkpoint,
    /// `member1.` for an ensemble's members, else empty.
    prefix: &'a str,
    /// What each layer gets, as the shape check found.
    inputs: &'a Inputs<'a>,
    /// The images' side.
    side: usize,
    used: BTreeSet<String>,
}

impl MemberGraph<'_> {
    fn run(&mut self, spec: &ModelSpec, x: &str) -> Result<String, OnnxError> {
        let graph = &spec.graph;
        let x = self.list("layers", &graph.layers, x.to_string())?;
        let x = self.list("head", &graph.head, x)?;
        if graph.reads_coordinates() {
            return Ok(x);
        }
        self.layer("output", &Op::Dense { units: spec.outputs }, x)
    }

    /// Every tensor of the checkpoint belongs to a layer.
    fn check_all_used(&self) -> Result<(), OnnxError> {
        let unused: Vec<String> = (self.checkpoint.tensors.keys())
            .filter(|name| !self.used.contains(*name))
            .map(|name| format!("`{name}`"))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        Err(OnnxError::Unused {
            path: self.checkpoint.path.clone(),
            names: unused.join(", "),
        })
    }

    fn list(&mut self, path: &str, layers: &[Layer], mut x: String) -> Result<String, OnnxError> {
        for (i, layer) in layers.iter().enumerate() {
            x = self.layer(&format!("{path}.{i}"), &layer.op, x)?;
        }
        Ok(x)
    }

    fn fail(&self, path: &str, op: &Op, message: String) -> OnnxError {
        OnnxError::Layer {
            layer: format!("{path} ({})", op.describe()),
            message,
            path: self.checkpoint.path.clone(),
        }
    }

    /// What the layer at `path` gets.
    fn input(&self, path: &str, op: &Op) -> Result<Shape, OnnxError> {
        self.inputs.of(path).ok_or_else(|| {
            let message = "the shape check did not reach it".to_string();
            self.fail(path, op, message)
        })
    }

    /// What the layer at `path` gets: the channels of a map, or the width of flat features.
    fn features(&self, path: &str, op: &Op) -> Result<usize, OnnxError> {
        Ok(features(self.input(path, op)?))
    }

    /// A checkpoint tensor of `layer`, checked against the shape the graph gives it.
    fn weight(&mut self, path: &str, op: &Op, tensor: &str, dims: &[usize]) -> Result<String, OnnxError> {
        let name = format!("{path}.{tensor}");
        let Some((shape, bytes)) = self.checkpoint.tensors.get(&name) else {
            return Err(self.fail(path, op, format!("the checkpoint has no tensor `{name}`")));
        };
        if shape.as_slice() != dims {
            let message =
                format!("tensor `{name}` is {shape:?} in the checkpoint, but the graph makes it {dims:?}");
            return Err(self.fail(path, op, message));
        }
        let bytes = bytes.clone();
        self.used.insert(name.clone());
        Ok(self
            .g
            .initializer(&format!("{}{name}", self.prefix), dims, data_type::FLOAT, bytes))
    }

    /// The layer's nodes, named after its path; returns its output.
    fn layer(&mut self, path: &str, op: &Op, x: String) -> Result<String, OnnxError> {
        let node = format!("{}{path}", self.prefix);
        Ok(match op {
            Op::Conv {
                filters,
                kernel,
                stride,
                padding,
                bias,
            } => {
                let channels = self.features(path, op)?;
                let mut inputs = vec![
                    x,
                    self.weight(path, op, "weight", &[*filters, channels, *kernel, *kernel])?,
                ];
                if *bias {
                    inputs.push(self.weight(path, op, "bias", &[*filters])?);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let mut attributes = window(*kernel, *stride, *padding);
                attributes.extend([ints("dilations", &[1, 1]), int("group", 1)]);
                self.g.node("Conv", &node, &inputs, attributes)
            }
            Op::BatchNorm => {
                let n = self.features(path, op)?;
                let mut inputs = vec![x];
                for tensor in ["scale", "bias", "running_mean", "running_var"] {
                    inputs.push(self.weight(path, op, tensor, &[n])?);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                // Inference form: the running statistics (flat features as N x C).
                let epsilon = vec![float("epsilon", BN_EPSILON)];
                self.g.node("BatchNormalization", &node, &inputs, epsilon)
            }
            Op::Relu => self.g.node("Relu", &node, &[&x], vec![]),
            Op::LeakyRelu { slope } => {
                let alpha = vec![float("alpha", *slope as f32)];
                self.g.node("LeakyRelu", &node, &[&x], alpha)
            }
            Op::Sigmoid => self.g.node("Sigmoid", &node, &[&x], vec![]),
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => self
                .g
                .node("MaxPool", &node, &[&x], window(*kernel, *stride, *padding)),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let mut attributes = window(*kernel, *stride, *padding);
                // fkp divides by the whole window, padding included.
                attributes.push(int("count_include_pad", 1));
                self.g.node("AveragePool", &node, &[&x], attributes)
            }
            Op::GlobalAvgPool => {
                let pool = format!("{node}.pool");
                let pooled = self.g.node("GlobalAveragePool", &pool, &[&x], vec![]);
                self.g.node("Flatten", &node, &[&pooled], vec![int("axis", 1)])
            }
            // Off at inference, as in fkp: no node.
            Op::Dropout { .. } => x,
            Op::Flatten => self.g.node("Flatten", &node, &[&x], vec![int("axis", 1)]),
            Op::Dense { units } => {
                let n = self.features(path, op)?;
                let weight = self.weight(path, op, "weight", &[*units, n])?;
                let bias = self.weight(path, op, "bias", &[*units])?;
                let transposed = vec![int("transB", 1)];
                self.g.node("Gemm", &node, &[&x, &weight, &bias], transposed)
            }
            Op::Upsample { factor, mode } => {
                let f = *factor as f32;
                let scales = self.g.floats(&format!("{node}.scales"), &[4], &[1.0, 1.0, f, f]);
                // dfdx's kernels: nearest takes floor(out / factor), bilinear keeps the corners.
                let attributes = match mode {
                    UpsampleMode::Nearest => vec![
                        string("mode", "nearest"),
                        string("coordinate_transformation_mode", "asymmetric"),
                        string("nearest_mode", "floor"),
                    ],
                    UpsampleMode::Bilinear => vec![
                        string("mode", "linear"),
                        string("coordinate_transformation_mode", "align_corners"),
                    ],
                };
                self.g.node("Resize", &node, &[&x, "", &scales], attributes)
            }
            Op::SoftArgmax { temperature } => self.soft_argmax(path, op, *temperature, x)?,
            Op::Block { uses, .. } => {
                let mut x = x;
                for (r, block_use) in uses.iter().enumerate() {
                    x = self.block_use(&format!("{path}.{r}"), block_use, x)?;
                }
                x
            }
        })
    }

    /// `[N, K, H, W]` maps to `[N, 2K]` coordinates, as the network's layer:
    /// each map a row, divided by the temperature, softmax, times the cells'
    /// positions.
    fn soft_argmax(&mut self, path: &str, op: &Op, temperature: f64, x: String) -> Result<String, OnnxError> {
        let Shape::Map(k, h, w) = self.input(path, op)? else {
            return Err(self.fail(path, op, "it gets flat features, not maps".into()));
        };
        let node = format!("{}{path}", self.prefix);
        let rows_shape = self
            .g
            .int64s(&format!("{node}.rows_shape"), &[2], &[-1, (h * w) as i64]);
        let rows = self
            .g
            .node("Reshape", &format!("{node}.rows"), &[&x, &rows_shape], vec![]);
        let inverse = self
            .g
            .scalar(&format!("{node}.inverse_temperature"), (1.0 / temperature) as f32);
        let scaled = self
            .g
            .node("Mul", &format!("{node}.scaled"), &[&rows, &inverse], vec![]);
        let weights = self.g.node(
            "Softmax",
            &format!("{node}.softmax"),
            &[&scaled],
            vec![int("axis", 1)],
        );
        let positions = soft_argmax_positions(h, w, self.side);
        let cells = self
            .g
            .floats(&format!("{node}.positions"), &[h * w, 2], &positions);
        let points = self
            .g
            .node("MatMul", &format!("{node}.points"), &[&weights, &cells], vec![]);
        let flat_shape = self.g.int64s(&format!("{node}.shape"), &[2], &[-1, 2 * k as i64]);
        Ok(self.g.node("Reshape", &node, &[&points, &flat_shape], vec![]))
    }

    fn block_use(&mut self, path: &str, block_use: &BlockUse, x: String) -> Result<String, OnnxError> {
        let body = self.list(&format!("{path}.body"), &block_use.body, x.clone())?;
        let add = format!("{}{path}.add", self.prefix);
        let sum = match &block_use.shortcut {
            Shortcut::None => body,
            Shortcut::Identity => self.g.node("Add", &add, &[&body, &x], vec![]),
            Shortcut::Projection { layers } => {
                let projected = self.list(&format!("{path}.projection"), layers, x)?;
                self.g.node("Add", &add, &[&body, &projected], vec![])
            }
        };
        self.list(&format!("{path}.after_add"), &block_use.after_add, sum)
    }
}

/// A convolution's or pooling's window, as ONNX attributes.
fn window(kernel: usize, stride: usize, padding: usize) -> Vec<AttributeProto> {
    vec![
        ints("kernel_shape", &[kernel, kernel]),
        ints("strides", &[stride, stride]),
        ints("pads", &[padding; 4]),
    ]
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::{Cpu, SaveToSafetensors};

    use super::*;
    use crate::models::graph::Network;
    use crate::models::{Arch, ModelSpec};

    fn names() -> Vec<String> {
        ["left_eye_center", "right_eye_center", "nose_tip"]
            .map(String::from)
            .to_vec()
    }

    fn spec(graph: Network) -> ModelSpec {
        ModelSpec {
            graph,
            side: 32,
            outputs: 6,
        }
    }

    /// A freshly built network's checkpoint, as bytes.
    fn checkpoint_bytes(spec: &ModelSpec, seed: u64) -> Vec<u8> {
        let dev = Cpu::seed_from_u64(seed);
        let net = spec.build(&dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        net.save_safetensors(&path).unwrap();
        std::fs::read(&path).unwrap()
    }

    fn checkpoint(spec: &ModelSpec, seed: u64) -> Checkpoint {
        Checkpoint::from_bytes(Path::new("model.safetensors"), &checkpoint_bytes(spec, seed)).unwrap()
    }

    fn export<'a>(
        spec: &'a ModelSpec,
        members: &'a [Checkpoint],
        names: &'a [String],
        tta: &'a [Tta],
    ) -> Export<'a> {
        Export {
            spec,
            members,
            input_divisor: 255.0,
            output_scale: 16.0,
            output_offset: 16.0,
            keypoint_names: names,
            tta,
            input_type: InputType::Float,
            name: "p",
            doc: String::new(),
            metadata: vec![("pipeline".into(), "p".into())],
        }
    }

    fn ops(model: &ModelProto) -> Vec<&str> {
        let graph = model.graph.as_ref().unwrap();
        graph.node.iter().map(|n| n.op_type.as_deref().unwrap()).collect()
    }

    fn layer(op: Op) -> Layer {
        Layer { op, at: None }
    }

    /// Average pooling with padding, leaky ReLU, batch norm on flat features.
    fn custom() -> Network {
        Network {
            name: "custom".into(),
            channels: 3,
            layers: vec![
                layer(Op::Conv {
                    filters: 4,
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                    bias: true,
                }),
                layer(Op::LeakyRelu { slope: 0.1 }),
                layer(Op::AvgPool {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                }),
                layer(Op::Flatten),
            ],
            head: vec![
                layer(Op::Dense { units: 8 }),
                layer(Op::BatchNorm),
                layer(Op::Dropout { p: 0.5 }),
            ],
            at: None,
        }
    }

    #[test]
    fn every_tensor_becomes_an_initializer_named_as_in_the_checkpoint() {
        for graph in [Arch::LeNet.graph(1), Arch::ResNet18.graph(1), custom()] {
            let spec = spec(graph);
            let members = [checkpoint(&spec, 1)];
            let names = names();
            let model = build(&export(&spec, &members, &names, &[])).unwrap();
            let graph = model.graph.as_ref().unwrap();
            let initializers: BTreeSet<&str> = graph
                .initializer
                .iter()
                .map(|t| t.name.as_deref().unwrap())
                .collect();
            for name in members[0].tensors.keys() {
                assert!(initializers.contains(name.as_str()), "{name}");
            }
            let nodes = ops(&model);
            assert_eq!(nodes.last(), Some(&"Identity"));
            assert_eq!(graph.node.last().unwrap().output, ["keypoints"]);
            // The same export, the same bytes.
            assert_eq!(
                encode(&model),
                encode(&build(&export(&spec, &members, &names, &[])).unwrap())
            );
        }
        let spec = spec(custom());
        let members = [checkpoint(&spec, 1)];
        let names = names();
        let model = build(&export(&spec, &members, &names, &[])).unwrap();
        let graph = model.graph.as_ref().unwrap();
        assert_eq!(
            ops(&model),
            [
                "Div",
                "Concat",
                "Conv",
                "LeakyRelu",
                "AveragePool",
                "Flatten",
                "Gemm",
                "BatchNormalization",
                "Gemm",
                "Mul",
                "Add",
                "Identity"
            ],
            "dropout is no node; three channels are the grey one three times"
        );
        let pool = graph
            .node
            .iter()
            .find(|n| n.op_type.as_deref() == Some("AveragePool"))
            .unwrap();
        let include = pool
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some("count_include_pad"))
            .unwrap();
        assert_eq!(include.i, Some(1), "fkp divides by the whole window");
    }

    #[test]
    fn test_time_flips_and_an_ensemble_are_inside_the_graph() {
        let spec = spec(Arch::LeNet.graph(1));
        let members = [checkpoint(&spec, 1), checkpoint(&spec, 2)];
        let names = names();
        let model = build(&export(&spec, &members, &names, &[Tta::HFlip])).unwrap();
        let graph = model.graph.as_ref().unwrap();
        let nodes = ops(&model);
        assert_eq!(nodes.last(), Some(&"Mean"));
        assert_eq!(
            nodes.iter().filter(|o| **o == "Reshape").count(),
            2,
            "each member maps its mirror back"
        );
        for member in ["member0.layers.0.weight", "member1.output.bias"] {
            assert!(
                graph
                    .initializer
                    .iter()
                    .any(|t| t.name.as_deref() == Some(member)),
                "{member}"
            );
        }
        // Keypoint k of the mirror is its partner's: left and right eyes swap,
        // the nose stays; x becomes 31 - x.
        let tensor = |name: &str| {
            graph
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
                .unwrap()
        };
        let partners: Vec<i64> = tensor("member0.tta.partners")
            .raw_data
            .as_ref()
            .unwrap()
            .chunks(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(partners, [2, 3, 0, 1, 4, 5]);
        let shift: Vec<f32> = tensor("member0.tta.shift")
            .raw_data
            .as_ref()
            .unwrap()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(shift, [31.0, 0.0, 31.0, 0.0, 31.0, 0.0]);
    }

    #[test]
    fn a_checkpoint_that_does_not_fit_the_graph_is_an_error_naming_the_layer() {
        let resnet = spec(Arch::ResNet18.graph(1));
        let bytes = checkpoint_bytes(&resnet, 1);
        let names = names();
        let mut missing = Checkpoint::from_bytes(Path::new("m.safetensors"), &bytes).unwrap();
        missing.tensors.remove("layers.4.0.body.3.weight");
        let error = build(&export(&resnet, &[missing], &names, &[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "cannot export layers.4.0.body.3 (conv 64 3x3 pad 1 no bias): the checkpoint has no tensor \
             `layers.4.0.body.3.weight` (checkpoint m.safetensors)"
        );
        // Another network's weights: the first layer that differs.
        let lenet = spec(Arch::LeNet.graph(1));
        let other = Checkpoint::from_bytes(Path::new("m.safetensors"), &bytes).unwrap();
        let error = build(&export(&lenet, &[other], &names, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot export layers.0 (conv 32 3x3): tensor `layers.0.weight` is [64, 1, 7, 7] in the checkpoint, but the graph makes it [32, 1, 3, 3]"),
            "{error}"
        );
        // Tensors no layer names.
        let mut extra =
            Checkpoint::from_bytes(Path::new("m.safetensors"), &checkpoint_bytes(&lenet, 1)).unwrap();
        extra
            .tensors
            .insert("layers.99.weight".into(), (vec![1], vec![0; 4]));
        let error = build(&export(&lenet, &[extra], &names, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("holds tensors the network has no layer for: `layers.99.weight`"),
            "{error}"
        );
        // Not a checkpoint at all.
        let error = Checkpoint::from_bytes(Path::new("m.safetensors"), b"nonsense")
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with("cannot read the checkpoint m.safetensors: "),
            "{error}"
        );
    }
}
