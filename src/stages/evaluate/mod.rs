//! The evaluate stage: scores the trained model in pixels over labelled points
//! only (filled values never count), overall, per keypoint and as PCK at 5% and
//! 10% of the inter-ocular distance, next to the mean-shape baseline.
//!
//! Scores the validation split; with `truth`, the same rows against a fully
//! labelled copy of the data; with `data`, every row of another labelled file.
//! Writes `reports/<pipeline>/metrics.json`, `metrics.md` and a grid of
//! validation faces with predicted (crosses) and true (dots) keypoints.

mod config;
mod metrics_json;
mod scoring;
mod tables;

use std::path::Path;

pub use config::EvaluateConfig;
pub use metrics_json::{
    KeypointScore, METRICS_FILE, MemberScores, Metrics, MetricsReadError, ScoreSet, Scores,
};
use scoring::{LoadedModel, Scorer};

use super::{FileInput, Stage, StageContext, StageDef, StageError, StageKind, StageOutcome, StageTables};
use crate::data::DataError;
use crate::data::augment::FlipMap;
use crate::data::parquet::write_predictions;
use crate::data::prepared::Prepared;
use crate::metrics::pixel_errors;
use crate::render::faces::{Face, FaceGrid};
use crate::render::{RenderError, plot};
use crate::stages::ingest::{self, Labels, ReadingRules};
use crate::stages::prepare::PREPARED_FILE;
use crate::stages::train::{self, TrainedModel};
use crate::training::TrainError;

pub const PREDICTIONS_FILE: &str = "predictions.parquet";

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Upstream(#[from] super::UpstreamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Report(#[from] RenderError),
    /// Training validates on the same labels, so this is a damaged entry.
    #[error("the validation split has no labelled point to score the model on")]
    NothingLabelled,
}

/// `[evaluate]`'s keys are as written; fkp adds the kernels it infers with.
fn key_name(rest: &str) -> String {
    match rest {
        "inference" => "fkp's inference kernels for [evaluate]".to_string(),
        "numerics" => "fkp's numerics patches for [evaluate]".to_string(),
        _ => super::toml_key("evaluate", rest),
    }
}

pub static DEF: StageDef = StageDef {
    name: "evaluate",
    also_configured_by: &[],
    reads: &[
        (StageKind::Ingest, ingest::RULES_FILE),
        (StageKind::Prepare, PREPARED_FILE),
        (StageKind::Train, train::MODEL_FILE),
        (StageKind::Train, train::MODEL_META),
    ],
    reads_members: false,
    optional_reads: &[],
    read,
    key_name,
};

fn read(tables: &mut StageTables) -> Vec<Box<dyn Stage>> {
    vec![Box::new(EvaluateStage {
        config: EvaluateConfig::read(&mut tables.main),
    })]
}

pub struct EvaluateStage {
    config: EvaluateConfig,
}

impl Stage for EvaluateStage {
    fn kind(&self) -> StageKind {
        StageKind::Evaluate
    }

    fn version(&self) -> u32 {
        // 4: metrics.json says which test-time augmentation its scores use.
        // 5: seed ensembles: averaged predictions, and `members`.
        // 6: predictions with batch norm folded into the convolutions.
        6
    }

    /// The configuration, with the numerics its predictions are computed with
    /// (on the CPU).
    fn config(&self) -> serde_json::Value {
        let mut config = super::key_config(&self.config);
        config["inference"] = format!("cpu {}", crate::training::numerics::cpu_kernels()).into();
        config["numerics"] = crate::training::numerics::dfdx_source_hash().into();
        config
    }

    fn file_inputs(&self) -> Vec<FileInput> {
        let mut inputs = Vec::new();
        for (role, path) in [("data", &self.config.data), ("truth", &self.config.truth)] {
            if let Some(path) = path {
                inputs.push(FileInput {
                    role,
                    path: path.clone(),
                });
            }
        }
        inputs
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        Ok(self.evaluate(ctx)?)
    }
}

impl EvaluateStage {
    /// Predicts, scores, and writes the scores, tables and pictures.
    fn evaluate(&self, ctx: &StageContext) -> Result<StageOutcome, EvaluateError> {
        let prepared = Prepared::read(&ctx.upstream_file(StageKind::Prepare, PREPARED_FILE)?)?;
        let models = load_models(ctx)?;
        let trained = &models[0].1;
        let keypoints = &trained.keypoint_names;
        let scorer = self.scorer(ctx, &prepared, keypoints)?;
        let flips = FlipMap::from_keypoint_names(keypoints);
        let predictions = scorer.predict_models(&models, &self.config.tta, &flips)?;
        let metrics = scorer.metrics(&models, &predictions, &self.config.tta)?;

        let val_pixels = &predictions.averaged.val;
        // Per face, against the best labels there are: what a report compares.
        write_predictions(
            &ctx.data_dir.join(PREDICTIONS_FILE),
            &scoring::face_predictions(&prepared, val_pixels, scorer.best_labels()),
        )?;
        write_metrics(ctx, &metrics)?;
        let tables = tables::MetricsTables::of(&metrics);
        tables.write(ctx.report_dir)?;
        self.draw_faces(ctx.report_dir, &prepared, trained, val_pixels)?;
        Ok(StageOutcome {
            headline: Some(metrics.headline()),
            summary: Some(tables.summary()),
            timing: Some(serde_json::json!({ "inference": predictions.inference })),
            earlier_seconds: 0.0,
        })
    }

    /// What predictions are scored against: the validation split, with the
    /// `truth` file's labels and the `data` file's faces where configured.
    fn scorer<'a>(
        &self,
        ctx: &StageContext,
        prepared: &'a Prepared,
        keypoints: &'a [String],
    ) -> Result<Scorer<'a>, EvaluateError> {
        let rules = ReadingRules::read(&ctx.upstream_file(StageKind::Ingest, ingest::RULES_FILE)?)?;
        let read = |path: &Path| ingest::read_like_training(path, &rules, Labels::Required, ctx.console);
        let full_labels = match &self.config.truth {
            Some(path) => Some(scoring::truth_for(&read(path)?, prepared, path)?),
            None => None,
        };
        let data = match &self.config.data {
            Some(path) => {
                let faces = read(path)?;
                let labels = scoring::labels_of(&faces.coords);
                Some((faces, labels))
            }
            None => None,
        };
        Ok(Scorer::new(prepared, full_labels, data, keypoints))
    }

    /// A grid of the first `samples` validation faces with their true (dots)
    /// and predicted (crosses) keypoints.
    fn draw_faces(
        &self,
        report_dir: &Path,
        prepared: &Prepared,
        trained: &TrainedModel,
        val_pixels: &[f32],
    ) -> Result<(), RenderError> {
        let val = &prepared.val;
        let coords = prepared.coordinate_names.len();
        let pixels = prepared.side * prepared.side;
        let rows: Vec<usize> = (0..val.len()).take(self.config.samples).collect();
        let truths: Vec<Vec<f32>> = rows
            .iter()
            .map(|&row| {
                let range = row * coords..(row + 1) * coords;
                scoring::labels_or_nan(&val.targets[range.clone()], &val.labelled[range])
            })
            .collect();
        let faces = rows
            .iter()
            .zip(&truths)
            .map(|(&row, truth)| {
                let range = row * coords..(row + 1) * coords;
                let predicted = &val_pixels[range.clone()];
                let source_row = val.source_rows[row];
                let caption = match pixel_errors(predicted, &val.targets[range.clone()], &val.labelled[range])
                {
                    Some(errors) => format!("row {source_row}: RMSE {:.2} px", errors.rmse),
                    None => format!("row {source_row}: no label"),
                };
                Face {
                    image: &val.images[row * pixels..(row + 1) * pixels],
                    coords: truth,
                    predicted: Some(predicted),
                    caption,
                }
            })
            .collect();
        let grid = FaceGrid {
            title: format!(
                "Validation faces: dots true labels, crosses {} predictions",
                trained.spec.graph.name
            ),
            faces,
            side: prepared.side,
            keypoint_names: &trained.keypoint_names,
            columns: None,
        };
        plot::save(&grid, report_dir, "predictions")
    }
}

/// The trained network: one model, or each member of a seed ensemble, in
/// `seeds` order.
fn load_models(ctx: &StageContext) -> Result<Vec<LoadedModel>, EvaluateError> {
    let metas = ctx.upstream_files(StageKind::Train, train::MODEL_META)?;
    let weights = ctx.upstream_files(StageKind::Train, train::MODEL_FILE)?;
    let models = metas
        .iter()
        .zip(&weights)
        .map(|((_, meta), (_, weights))| train::load_trained(meta, weights))
        .collect::<Result<Vec<_>, _>>()?;
    if models.is_empty() {
        return Err(super::UpstreamError::Instances {
            stage: StageKind::Evaluate,
            upstream: StageKind::Train,
            count: 0,
        }
        .into());
    }
    Ok(models)
}

/// `metrics.json`, into the entry and the report folder.
fn write_metrics(ctx: &StageContext, metrics: &Metrics) -> Result<(), RenderError> {
    let json = serde_json::to_vec_pretty(metrics).map_err(|e| RenderError::write(ctx.data_dir, e))?;
    for dir in [ctx.data_dir, ctx.report_dir] {
        let path = dir.join(METRICS_FILE);
        std::fs::write(&path, &json).map_err(|e| RenderError::write(&path, e))?;
    }
    Ok(())
}
