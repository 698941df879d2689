//! `fkp predict`: runs a pipeline's trained model on any Kaggle-layout file and
//! writes one row of coordinates per input row, or Kaggle's `RowId,Location`
//! submission file; or on image files ([`images`]), one row per image.
//!
//! The steps it shares with `fkp export` (the one pipeline of the file, its
//! model trained first if needed, its test-time augmentation) are here too.

pub mod images;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;

use super::signals::interruptible;
use super::{Context, Error, Exit};
use crate::console::Console;
use crate::dag::{self, DagError, Graph, RunOptions, RunReport};
use crate::data::augment::FlipMap;
use crate::data::{DataError, lookup};
use crate::pipeline::Pipeline;
use crate::stages::StageKind;
use crate::stages::ingest::{self, Labels};
use crate::stages::train::{MODEL_FILE, MODEL_META, TrainedModel, load_trained};
use crate::training::{Session, TrainError, Tta, predict_ensemble};
use crate::workspace::WorkspaceLock;

#[derive(Args)]
pub(super) struct PredictArgs {
    /// The pipeline whose model predicts (TOML).
    #[arg(value_name = "PIPELINE.toml")]
    pipeline: PathBuf,
    /// A Kaggle-layout file (.csv, .csv.gz or .zip) with an `Image` column;
    /// coordinate columns in it are ignored.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "images",
        conflicts_with = "images"
    )]
    input: Option<PathBuf>,
    /// PNG or JPEG files, or folders of them (their .png, .jpg and .jpeg
    /// files), each a face crop like Kaggle's: one row per image, the
    /// file name and the coordinates in the image's own pixels.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    images: Vec<PathBuf>,
    /// Where to write the predictions (CSV).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Write Kaggle's `RowId,Location` submission, using [ingest] lookup.
    #[arg(long, conflicts_with = "images")]
    submission: bool,
    /// Plain predictions, without the test-time augmentation of the
    /// pipeline's `[evaluate] tta`.
    #[arg(long)]
    no_tta: bool,
    /// With --images: also write each image with its keypoints drawn and
    /// numbered, as DIR/<file stem>.png.
    #[arg(long, value_name = "DIR", requires = "images")]
    draw: Option<PathBuf>,
    /// With --images: stop at the first image that cannot be read, writing
    /// nothing (by default it is reported and the others get their rows).
    #[arg(long, requires = "images")]
    fail_fast: bool,
}

pub(super) fn execute(args: PredictArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&[args.pipeline])?;
    let options = super::run::local_options(context)?;
    let lock = context.lock()?;
    let predicted = interruptible(
        context.console,
        |cancel| {
            let request = PredictRequest {
                input: match &args.input {
                    Some(input) => PredictInput::Csv(input),
                    None => PredictInput::Images(&args.images),
                },
                output: &args.output,
                submission: args.submission,
                tta: !args.no_tta,
                draw: args.draw.as_deref(),
                fail_fast: args.fail_fast,
                run: RunOptions {
                    cancel: cancel.clone(),
                    ..options.clone()
                },
            };
            predict(&graph, &lock, &request, context.console)
        },
        PredictError::dag,
    )?;
    let rows = match predicted {
        Ok(rows) => rows,
        Err(exit) => return Ok(exit),
    };
    let wrote = format!("wrote {rows} rows to {}", args.output.display());
    context.console.status(&wrote);
    Ok(Exit::Success)
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Dag(#[from] DagError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("pipeline `{0}` has no [train] stage: there is no model to predict with")]
    NoModel(String),
    #[error(
        "the file holds several pipelines ({0}, the variants of its [sweep]): predict and export use one; \
         write the variant you want as a pipeline of its own"
    )]
    SeveralPipelines(String),
    #[error("--submission needs `lookup` (Kaggle's IdLookupTable.csv) in [ingest] of pipeline `{0}`")]
    NoLookup(String),
    #[error("{path} has no `ImageId` column, which a submission needs to match the lookup table")]
    NoImageIds { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("--output {path} is {what}: refusing to overwrite it")]
    OutputIsInput { path: PathBuf, what: String },
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error(
        "{failed} of {total} image(s) could not be predicted ({written} row(s) written to {output}):\n{list}"
    )]
    SomeImagesFailed {
        failed: usize,
        total: usize,
        written: usize,
        output: PathBuf,
        list: String,
    },
}

impl PredictError {
    /// The run's error, when running the pipeline (training it first) failed.
    pub fn dag(&self) -> Option<&DagError> {
        match self {
            PredictError::Dag(error) => Some(error),
            _ => None,
        }
    }
}

/// The files a pipeline reads (its own files and its stages' inputs), each
/// with what it is, for refusing to write over one.
pub fn pipeline_inputs(pipeline: &Pipeline) -> Vec<(PathBuf, String)> {
    let mut inputs = Vec::new();
    for source in &pipeline.sources {
        inputs.push((source.clone(), "a pipeline file".to_string()));
    }
    for stage in &pipeline.stages {
        for input in stage.file_inputs() {
            inputs.push((input.path, format!("`{}.{}`", stage.kind(), input.role)));
        }
    }
    inputs
}

/// Checks, before anything trains, that `output` can be written: its folder exists.
pub fn check_output_folder(output: &Path) -> Result<(), std::io::Error> {
    let folder = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a folder", folder.display()),
        )),
        Err(error) => Err(std::io::Error::new(
            error.kind(),
            format!("its folder {}: {error}", folder.display()),
        )),
    }
}

/// Checks that `output` names none of `inputs`; returns what it names if it does.
pub fn overwritten_input(output: &Path, inputs: &[(PathBuf, String)]) -> Option<String> {
    let output = output.canonicalize().ok()?; // a new file
    inputs
        .iter()
        .find(|(path, _)| path.canonicalize().is_ok_and(|p| p == output))
        .map(|(_, what)| what.clone())
}

/// The pipeline a file names for predict and export: not a report's members,
/// and one, not a sweep's variants; it must train a model.
pub fn the_pipeline(graph: &Graph) -> Result<&Pipeline, PredictError> {
    let named: Vec<&Pipeline> = (0..graph.pipelines.len())
        .filter(|&i| !graph.is_member(i))
        .map(|i| &graph.pipelines[i])
        .collect();
    let [pipeline] = named[..] else {
        return Err(PredictError::SeveralPipelines(
            named
                .iter()
                .map(|p| format!("`{}`", p.name))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    };
    if pipeline.stage(StageKind::Train).is_none() {
        return Err(PredictError::NoModel(pipeline.name.clone()));
    }
    Ok(pipeline)
}

/// Runs the pipeline up to its training (from the cache when it can) and returns
/// the run and the `data/` folder of each trained model: one, or every member
/// of a seed ensemble, in `seeds` order. `run` is how it builds; its cancel
/// stops the training at its next safe point, as in `fkp run`.
pub fn train_first(
    graph: &Graph,
    pipeline: &Pipeline,
    lock: &WorkspaceLock,
    run: &RunOptions,
    console: &Console,
) -> Result<(RunReport, Vec<PathBuf>), PredictError> {
    let options = RunOptions {
        until: Some(StageKind::Train),
        ..run.clone()
    };
    let report = dag::run(graph, lock, &options, console)?;
    let members: Vec<PathBuf> = report
        .data_dirs_of(&pipeline.name, StageKind::Train)
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    if members.is_empty() {
        return Err(PredictError::NoModel(pipeline.name.clone()));
    }
    Ok((report, members))
}

/// The test-time augmentation of the pipeline's `[evaluate] tta` (none without it).
pub fn pipeline_tta(pipeline: &Pipeline) -> Vec<Tta> {
    pipeline
        .stage(StageKind::Evaluate)
        .and_then(|s| serde_json::from_value(s.config()["tta"].clone()).ok())
        .unwrap_or_default()
}

/// What predictions are made from.
#[derive(Clone, Copy)]
pub enum PredictInput<'a> {
    /// A Kaggle-layout file.
    Csv(&'a Path),
    /// Image files and folders of them.
    Images(&'a [PathBuf]),
}

pub struct PredictRequest<'a> {
    pub input: PredictInput<'a>,
    pub output: &'a Path,
    pub submission: bool,
    /// Use the test-time augmentation of the pipeline's `[evaluate] tta`.
    pub tta: bool,
    /// Images only: also write each image with its keypoints drawn here.
    pub draw: Option<&'a Path>,
    /// Images only: stop at the first image that cannot be read.
    pub fail_fast: bool,
    /// How a training it runs first builds: its Ctrl-C, the remote cache, jobs.
    pub run: RunOptions,
}

/// Trains first if the model is not cached, then predicts. Returns the number of
/// rows written.
pub fn predict(
    graph: &Graph,
    lock: &WorkspaceLock,
    request: &PredictRequest,
    console: &Console,
) -> Result<usize, PredictError> {
    let pipeline = the_pipeline(graph)?;
    let mut inputs = pipeline_inputs(pipeline);
    match request.input {
        PredictInput::Csv(path) => inputs.insert(0, (path.to_path_buf(), "the --input file".to_string())),
        PredictInput::Images(paths) => {
            for path in paths {
                inputs.push((path.clone(), "an --images file".to_string()));
            }
        }
    }
    if let Some(what) = overwritten_input(request.output, &inputs) {
        return Err(PredictError::OutputIsInput {
            path: request.output.to_path_buf(),
            what,
        });
    }
    // What is read and written is checked before any training: a typo fails at once.
    check_output_folder(request.output).map_err(|source| PredictError::Write {
        path: request.output.to_path_buf(),
        source,
    })?;
    let image_files = match request.input {
        PredictInput::Images(paths) => Some(images::collect(paths, request.draw)?),
        PredictInput::Csv(path) => {
            crate::data::source::check_readable(path)?;
            None
        }
    };
    let (report, members) = train_first(graph, pipeline, lock, &request.run, console)?;
    // One model, or every member of a seed ensemble: their predictions are averaged.
    let mut sessions = Vec::new();
    let mut trained = None;
    for dir in &members {
        let (session, model) = load_trained(&dir.join(MODEL_META), &dir.join(MODEL_FILE))?;
        sessions.push(session);
        trained.get_or_insert(model);
    }
    let trained = trained.ok_or_else(|| PredictError::NoModel(pipeline.name.clone()))?;
    if sessions.len() > 1 {
        console.status(&format!(
            "predicting with an ensemble of {} models ([train] seeds): their predictions are averaged",
            sessions.len()
        ));
    }
    // The pipeline's own evaluate settings, as its scores were computed.
    let tta: Vec<Tta> = match request.tta {
        true => pipeline_tta(pipeline),
        false => Vec::new(),
    };
    if !tta.is_empty() {
        let names: Vec<&str> = tta.iter().map(|t| t.name()).collect();
        console.status(&format!(
            "predicting with test-time augmentation ([evaluate] tta = {names:?}; --no-tta for plain predictions)"
        ));
    }
    let model = Model {
        sessions: &sessions,
        trained: &trained,
        tta: &tta,
    };
    match request.input {
        PredictInput::Images(_) => {
            let files = image_files.unwrap_or_default();
            images::predict_images(&files, &model, request, console)
        }
        PredictInput::Csv(input) => {
            let ingest_dir = report
                .data_dir(&pipeline.name, StageKind::Ingest)
                .ok_or_else(|| PredictError::NoModel(pipeline.name.clone()))?;
            predict_csv(pipeline, input, ingest_dir, &model, request, console)
        }
    }
}

/// A trained model ready to predict.
pub struct Model<'a> {
    pub sessions: &'a [Box<dyn Session>],
    pub trained: &'a TrainedModel,
    pub tta: &'a [Tta],
}

impl Model<'_> {
    /// Pixels of `rows` grey `side` x `side` faces, in the training side's pixels.
    pub fn predict(&self, images: &[u8], rows: usize) -> Result<Vec<f32>, PredictError> {
        let flips = FlipMap::from_keypoint_names(&self.trained.keypoint_names);
        Ok(predict_ensemble(
            self.sessions,
            images,
            rows,
            self.trained.spec.side,
            self.tta,
            &flips,
        )?)
    }
}

fn predict_csv(
    pipeline: &Pipeline,
    input: &Path,
    ingest_dir: &Path,
    model: &Model,
    request: &PredictRequest,
    console: &Console,
) -> Result<usize, PredictError> {
    let trained = model.trained;
    let rules = ingest::ReadingRules::read(&ingest_dir.join(ingest::RULES_FILE))?;
    let faces = ingest::read_like_training(input, &rules, Labels::Ignored, console)?;
    let flips = FlipMap::from_keypoint_names(&trained.keypoint_names);
    let predictions = predict_ensemble(
        model.sessions,
        &faces.pixels,
        faces.len(),
        faces.side,
        model.tta,
        &flips,
    )?;
    let coords = trained.coordinate_names.len();

    let mut text = String::new();
    let rows = if request.submission {
        let lookup_path = pipeline
            .stage(StageKind::Ingest)
            .and_then(|ingest| {
                ingest
                    .file_inputs()
                    .into_iter()
                    .find(|input| input.role == "lookup")
            })
            .map(|input| input.path)
            .ok_or_else(|| PredictError::NoLookup(pipeline.name.clone()))?;
        let ids = faces.image_ids.as_ref().ok_or_else(|| PredictError::NoImageIds {
            path: input.to_path_buf(),
        })?;
        let table = lookup::read_lookup(&lookup_path, &trained.coordinate_names, Some(ids), console)?;
        let row_of: HashMap<i64, usize> = ids.iter().enumerate().map(|(row, &id)| (id, row)).collect();
        text.push_str("RowId,Location\n");
        for i in 0..table.len() {
            let row = row_of[&table.image_ids[i]];
            let column = trained
                .coordinate_names
                .iter()
                .position(|n| *n == table.feature_names[i])
                .expect("parse_lookup checked every feature name");
            // Kaggle scores locations inside the image only.
            let location = predictions[row * coords + column].clamp(0.0, faces.side as f32);
            text.push_str(&format!("{},{location}\n", table.row_ids[i]));
        }
        table.len()
    } else {
        text.push_str(&trained.coordinate_names.join(","));
        text.push('\n');
        for row in predictions.chunks(coords) {
            let fields: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            text.push_str(&fields.join(","));
            text.push('\n');
        }
        faces.len()
    };
    write_output(request.output, text.as_bytes())?;
    Ok(rows)
}

pub(crate) fn write_output(path: &Path, bytes: &[u8]) -> Result<(), PredictError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|source| PredictError::Write {
        path: path.to_path_buf(),
        source,
    })
}
