//! `fkp predict`: runs a pipeline's trained model on any Kaggle-layout file and
//! writes one row of coordinates per input row, or Kaggle's `RowId,Location`
//! submission file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::console::Console;
use crate::dag::{self, DagError, Graph, RunOptions};
use crate::data::augment::FlipMap;
use crate::data::{DataError, lookup};
use crate::pipeline::Pipeline;
use crate::stages::StageKind;
use crate::stages::ingest::{self, Labels};
use crate::stages::train::{MODEL_FILE, MODEL_META, load_trained};
use crate::training::{TrainError, Tta, predict_ensemble};
use crate::workspace::WorkspaceLock;

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
        "the file holds several pipelines ({0}, the variants of its [sweep]): predict uses one; \
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
}

/// Checks that `--output` names none of the files predict or the pipeline reads.
fn refuse_to_overwrite_inputs(pipeline: &Pipeline, request: &PredictRequest) -> Result<(), PredictError> {
    let Ok(output) = request.output.canonicalize() else {
        return Ok(()); // a new file
    };
    let mut inputs = vec![(request.input.to_path_buf(), "the --input file".to_string())];
    for source in &pipeline.sources {
        inputs.push((source.clone(), "a pipeline file".to_string()));
    }
    for stage in &pipeline.stages {
        for input in stage.file_inputs() {
            inputs.push((input.path, format!("`{}.{}`", stage.kind(), input.role)));
        }
    }
    match inputs
        .into_iter()
        .find(|(path, _)| path.canonicalize().is_ok_and(|p| p == output))
    {
        Some((_, what)) => Err(PredictError::OutputIsInput {
            path: request.output.to_path_buf(),
            what,
        }),
        None => Ok(()),
    }
}

pub struct PredictRequest<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub submission: bool,
    /// Use the test-time augmentation of the pipeline's `[evaluate] tta`.
    pub tta: bool,
}

/// Trains first if the model is not cached, then predicts. Returns the number of
/// rows written.
pub fn predict(
    graph: &Graph,
    lock: &WorkspaceLock,
    request: &PredictRequest,
    console: &Console,
) -> Result<usize, PredictError> {
    // The named file's pipeline: not a report's members, and one, not a sweep's variants.
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
    refuse_to_overwrite_inputs(pipeline, request)?;
    let options = RunOptions {
        until: Some(StageKind::Train),
        ..RunOptions::default()
    };
    let report = dag::run(graph, lock, &options, console)?;
    let data_dir = |kind| {
        report
            .data_dir(&pipeline.name, kind)
            .ok_or_else(|| PredictError::NoModel(pipeline.name.clone()))
    };
    // One model, or every member of a seed ensemble: their predictions are averaged.
    let mut sessions = Vec::new();
    let mut trained = None;
    for dir in report.data_dirs_of(&pipeline.name, StageKind::Train) {
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
    let rules = ingest::ReadingRules::read(&data_dir(StageKind::Ingest)?.join(ingest::RULES_FILE))?;
    let faces = ingest::read_like_training(request.input, &rules, Labels::Ignored, console)?;
    // The pipeline's own evaluate settings, as its scores were computed.
    let tta: Vec<Tta> = match request.tta {
        true => pipeline
            .stage(StageKind::Evaluate)
            .and_then(|s| serde_json::from_value(s.config()["tta"].clone()).ok())
            .unwrap_or_default(),
        false => Vec::new(),
    };
    if !tta.is_empty() {
        let names: Vec<&str> = tta.iter().map(|t| t.name()).collect();
        console.status(&format!(
            "predicting with test-time augmentation ([evaluate] tta = {names:?}; --no-tta for plain predictions)"
        ));
    }
    let flips = FlipMap::from_keypoint_names(&trained.keypoint_names);
    let predictions = predict_ensemble(&sessions, &faces.pixels, faces.len(), faces.side, &tta, &flips)?;
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
            path: request.input.to_path_buf(),
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
    crate::fsutil::write_atomic(request.output, text.as_bytes()).map_err(|source| PredictError::Write {
        path: request.output.to_path_buf(),
        source,
    })?;
    Ok(rows)
}
