//! `fkp export`: a pipeline's trained network as an ONNX model that maps
//! pixels to keypoints in pixels by itself ([`onnx`] builds the graph; [`proto`]
//! holds ONNX's protobuf messages). Trains first if needed, as `fkp predict`.

pub mod onnx;
pub mod proto;

use std::path::{Path, PathBuf};

pub use onnx::{Checkpoint, Export, InputType, OnnxError};

use clap::Args;

use super::signals::interruptible;
use super::{Context, Error, Exit, count};
use crate::commands::predict::{self, PredictError};
use crate::console::Console;
use crate::dag::{Graph, RunOptions};
use crate::stages::train::{MODEL_FILE, MODEL_META, TrainedModel};
use crate::training::Tta;
use crate::workspace::WorkspaceLock;

#[derive(Args)]
pub(super) struct ExportArgs {
    /// The pipeline whose model is exported (TOML).
    #[arg(value_name = "PIPELINE.toml")]
    pipeline: PathBuf,
    /// Where to write the model (default: <pipeline name>.onnx).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The plain network, without the test-time augmentation of the
    /// pipeline's `[evaluate] tta`.
    #[arg(long)]
    no_tta: bool,
    /// The type of the input `image`: float32 or uint8 pixels, 0-255.
    #[arg(long, value_enum, default_value_t = InputType::Float)]
    input_type: InputType,
}

pub(super) fn execute(args: ExportArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&[args.pipeline])?;
    let options = super::run::local_options(context)?;
    let lock = context.lock()?;
    let exported = interruptible(
        context.console,
        |cancel| {
            let request = ExportRequest {
                output: args.output.as_deref(),
                tta: !args.no_tta,
                input_type: args.input_type,
                run: RunOptions {
                    cancel: cancel.clone(),
                    ..options.clone()
                },
            };
            export(&graph, &lock, &request, context.console)
        },
        ExportError::dag,
    )?;
    match exported {
        Ok(exported) => {
            context.console.status(&exported.summary());
            Ok(Exit::Success)
        }
        Err(exit) => Ok(exit),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Predict(#[from] PredictError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the ensemble's members are different networks: {first} and {other} (is the cache sound?)")]
    MixedEnsemble { first: PathBuf, other: PathBuf },
    #[error("--output {path} is {what}: refusing to overwrite it")]
    OutputIsInput { path: PathBuf, what: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl ExportError {
    /// The run's error, when running the pipeline (training it first) failed.
    pub fn dag(&self) -> Option<&crate::dag::DagError> {
        match self {
            ExportError::Predict(error) => error.dag(),
            _ => None,
        }
    }
}

pub struct ExportRequest<'a> {
    /// Where to write; default `<pipeline name>.onnx` in the current folder.
    pub output: Option<&'a Path>,
    /// Put the pipeline's `[evaluate] tta` inside the graph.
    pub tta: bool,
    pub input_type: InputType,
    /// How a training it runs first builds: its Ctrl-C, the remote cache, jobs.
    pub run: RunOptions,
}

/// What was written.
#[derive(Debug)]
pub struct Exported {
    pub path: PathBuf,
    pub bytes: usize,
    /// The checkpoints' sizes together.
    pub weights_bytes: u64,
    pub members: usize,
    pub tta: Vec<Tta>,
}

impl Exported {
    /// The line `fkp export` ends with: the file, its size and what it holds.
    fn summary(&self) -> String {
        let mut what = String::from("the network");
        if self.members > 1 {
            what = format!("the mean of {} networks ([train] seeds)", self.members);
        }
        if !self.tta.is_empty() {
            let names: Vec<&str> = self.tta.iter().map(|t| t.name()).collect();
            what += &format!(" with test-time augmentation {names:?} (--no-tta: without)");
        }
        format!(
            "wrote {} ({}, {:.1} MB; weights {:.1} MB): {what}, ONNX opset {}",
            self.path.display(),
            count(self.bytes, "byte", "bytes"),
            self.bytes as f64 / 1e6,
            self.weights_bytes as f64 / 1e6,
            onnx::OPSET,
        )
    }
}

/// Reads a train entry's `model.json`.
pub fn read_trained(path: &Path) -> Result<TrainedModel, ExportError> {
    let read_error = |message: String| ExportError::Read {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| read_error(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| read_error(e.to_string()))
}

/// Trains the pipeline if needed and writes its network as ONNX.
pub fn export(
    graph: &Graph,
    lock: &WorkspaceLock,
    request: &ExportRequest,
    console: &Console,
) -> Result<Exported, ExportError> {
    let pipeline = predict::the_pipeline(graph)?;
    let output = match request.output {
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(format!("{}.onnx", pipeline.name)),
    };
    if let Some(what) = predict::overwritten_input(&output, &predict::pipeline_inputs(pipeline)) {
        return Err(ExportError::OutputIsInput { path: output, what });
    }
    // Before any training: a folder that is not there fails at once.
    predict::check_output_folder(&output).map_err(|source| ExportError::Write {
        path: output.clone(),
        source,
    })?;
    let (_, members) = predict::train_first(graph, pipeline, lock, &request.run, console)?;
    let mut trained: Vec<TrainedModel> = Vec::new();
    let mut checkpoints = Vec::new();
    let mut weights_bytes = 0;
    for dir in &members {
        let model = read_trained(&dir.join(MODEL_META))?;
        if let Some(first) = trained.first()
            && (first.spec != model.spec || first.keypoint_names != model.keypoint_names)
        {
            return Err(ExportError::MixedEnsemble {
                first: members[0].join(MODEL_META),
                other: dir.join(MODEL_META),
            });
        }
        let weights = dir.join(MODEL_FILE);
        weights_bytes += std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0);
        checkpoints.push(Checkpoint::read(&weights)?);
        trained.push(model);
    }
    let tta = match request.tta {
        true => predict::pipeline_tta(pipeline),
        false => Vec::new(),
    };
    // A train entry's key is its folder's name: `.fkp/entries/train/<key>/data`.
    let keys: Vec<String> = members
        .iter()
        .map(|dir| {
            dir.parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let description = pipeline.description.clone().unwrap_or_default();
    let export = describe(
        pipeline.name.as_str(),
        &description,
        &trained,
        &checkpoints,
        &keys,
        &tta,
        request.input_type,
    );
    let bytes = onnx::encode(&onnx::build(&export)?);
    crate::fsutil::write_atomic(&output, &bytes).map_err(|source| ExportError::Write {
        path: output.clone(),
        source,
    })?;
    Ok(Exported {
        path: output,
        bytes: bytes.len(),
        weights_bytes,
        members: members.len(),
        tta,
    })
}

/// The export of `trained` (one model, or an ensemble's members, the same
/// network) with its metadata: what a user of the file needs to know.
pub fn describe<'a>(
    name: &'a str,
    description: &str,
    trained: &'a [TrainedModel],
    checkpoints: &'a [Checkpoint],
    train_keys: &[String],
    tta: &'a [Tta],
    input_type: InputType,
) -> Export<'a> {
    let model = &trained[0];
    let spec = &model.spec;
    let tta_text = match tta.is_empty() {
        true => "none".to_string(),
        false => tta.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
    };
    let input = match input_type {
        InputType::Float => "float",
        InputType::Uint8 => "uint8",
    };
    let json = |names: &[String]| serde_json::to_string(names).unwrap_or_default();
    let seeds: Vec<String> = trained.iter().map(|t| t.seed.to_string()).collect();
    let mut doc = format!(
        "fkp pipeline `{name}`: {} network ({} parameters), trained {} epoch(s). Input `image`: \
         [N, 1, {side}, {side}] grey {input} pixels 0-255. Output `keypoints`: [N, {}] pixels, x then y \
         of each keypoint in the metadata's `coordinate_names` order, pixel centres at integers.",
        spec.graph.name,
        model.parameters,
        model.epochs_run,
        spec.outputs,
        side = spec.side,
    );
    if trained.len() > 1 {
        doc += &format!(
            " The mean of {} models (seeds {}).",
            trained.len(),
            seeds.join(", ")
        );
    }
    if !tta.is_empty() {
        doc += " Each face is also predicted mirrored, and the two predictions averaged.";
    }
    if !description.is_empty() {
        doc += &format!(" {description}");
    }
    let metadata = vec![
        ("pipeline".to_string(), name.to_string()),
        ("train_key".to_string(), train_keys.join(",")),
        ("fkp_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("keypoint_names".to_string(), json(&model.keypoint_names)),
        ("coordinate_names".to_string(), json(&model.coordinate_names)),
        ("image_side".to_string(), spec.side.to_string()),
        ("image_channels".to_string(), "1".to_string()),
        ("network_channels".to_string(), spec.graph.channels.to_string()),
        ("input_type".to_string(), input.to_string()),
        (
            "input_divisor".to_string(),
            model.scaling.input_divisor.to_string(),
        ),
        ("output_scale".to_string(), model.scaling.output_scale.to_string()),
        (
            "output_offset".to_string(),
            model.scaling.output_offset.to_string(),
        ),
        ("architecture".to_string(), spec.graph.name.clone()),
        ("tta".to_string(), tta_text),
        ("ensemble_size".to_string(), trained.len().to_string()),
        ("seeds".to_string(), seeds.join(",")),
    ];
    Export {
        spec,
        members: checkpoints,
        input_divisor: model.scaling.input_divisor,
        output_scale: model.scaling.output_scale,
        output_offset: model.scaling.output_offset,
        keypoint_names: &model.keypoint_names,
        tta,
        input_type,
        name,
        doc,
        metadata,
    }
}
