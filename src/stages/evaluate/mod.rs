//! The evaluate stage: scores the trained model in pixels over labelled points
//! only (filled values never count), overall, per keypoint and as PCK at 5% and
//! 10% of the inter-ocular distance, next to the mean-shape baseline.
//!
//! Scores the validation split; with `truth`, the same rows against a fully
//! labelled copy of the data; with `data`, every row of another labelled file.
//! Writes `reports/<pipeline>/metrics.json`, `metrics.md` and a grid of
//! validation faces with predicted (crosses) and true (dots) keypoints.

mod config;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use config::EvaluateConfig;

use super::{FileInput, Stage, StageContext, StageDef, StageError, StageKind, StageOutcome, StageTables};
use crate::data::augment::FlipMap;
use crate::data::parquet::{FacePredictions, write_predictions};
use crate::data::prepared::{Prepared, Split};
use crate::data::{DataError, FaceTable};
use crate::metrics::{PixelErrors, pck, per_keypoint, pixel_errors};
use crate::report::faces::{Face, FaceGrid};
use crate::report::{Cell, ReportError, ReportTable, plot};
use crate::stages::ingest::{self, Labels};
use crate::stages::prepare::PREPARED_FILE;
use crate::stages::train::{self, TrainedModel};
use crate::training::{Session, TrainError, Tta, ensemble, predict_pixels_tta};

pub const METRICS_FILE: &str = "metrics.json";
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
    Report(#[from] ReportError),
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
        5
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

/// Scores of one set of faces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scores {
    pub rows: usize,
    pub labelled_points: usize,
    pub rmse_px: f64,
    pub mae_px: f64,
    /// % of labelled keypoints within 5% / 10% of the inter-ocular distance.
    pub pck_5: Option<f64>,
    pub pck_10: Option<f64>,
    /// RMSE of predicting the training split's mean shape for every face.
    pub mean_shape_rmse_px: f64,
    pub per_keypoint: Vec<KeypointScore>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeypointScore {
    pub keypoint: String,
    pub labelled_points: usize,
    pub rmse_px: Option<f64>,
}

/// `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    /// The train stage's `model.json` (an ensemble's first member's).
    pub model: TrainedModel,
    /// What the pipeline predicts: the model's, or the ensemble's averaged
    /// predictions, with `tta`.
    #[serde(flatten)]
    pub scores: ScoreSet,
    /// `[evaluate] tta`: the scores above average each face's prediction with
    /// these transforms' (none: plain predictions).
    #[serde(default)]
    pub tta: Vec<Tta>,
    /// With `tta`, the same scores from plain predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_tta: Option<ScoreSet>,
    /// A seed ensemble's members, each scored alone, in `seeds` order; empty
    /// for one model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberScores>,
}

/// The scores of one set of predictions: the validation faces against their
/// own labels and, with `truth`, against the full labels; every row of the
/// `data` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreSet {
    pub validation: Scores,
    /// The validation rows against the `truth` file's labels.
    pub validation_full_labels: Option<Scores>,
    /// Every row of the `data` file.
    pub data: Option<Scores>,
}

impl ScoreSet {
    /// The validation score a comparison uses: against full labels when there
    /// are, else the validation labels; and which it is.
    pub fn headline(&self) -> (&Scores, &'static str) {
        match &self.validation_full_labels {
            Some(full) => (full, "full labels"),
            None => (&self.validation, "validation labels"),
        }
    }
}

/// One member of a seed ensemble, alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberScores {
    pub seed: u64,
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// With `tta`, as the ensemble's.
    #[serde(flatten)]
    pub scores: ScoreSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_tta: Option<ScoreSet>,
}

impl Metrics {
    /// The numbers to show first, in one line: RMSE over labelled points (on
    /// the full labels when there is a truth file) and PCK at 10%.
    pub fn headline(&self) -> String {
        let scores = &self.scores;
        let mut line = format!("val RMSE {:.3} px", scores.validation.rmse_px);
        if let Some(full) = &scores.validation_full_labels {
            line.push_str(&format!(" ({:.3} px on full labels)", full.rmse_px));
        }
        if let Some(pck) = scores.validation.pck_10 {
            line.push_str(&format!(", PCK@10% {pck:.1}%"));
        }
        if let Some(data) = &scores.data {
            line.push_str(&format!(", data RMSE {:.3} px", data.rmse_px));
        }
        if !self.members.is_empty() {
            line.push_str(&format!(" (ensemble of {})", self.members.len()));
        }
        line
    }

    /// Reads an evaluate entry's `metrics.json`.
    pub fn read(data_dir: &Path) -> Option<Metrics> {
        let bytes = std::fs::read(data_dir.join(METRICS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// One model's (or the ensemble's) coordinates in pixels for the validation
/// faces and the `data` file's.
struct Predicted {
    val: Vec<f32>,
    data: Option<Vec<f32>>,
}

impl Predicted {
    fn average(all: &[Predicted]) -> Predicted {
        let vals: Vec<&[f32]> = all.iter().map(|p| p.val.as_slice()).collect();
        let datas: Option<Vec<&[f32]>> = all.iter().map(|p| p.data.as_deref()).collect();
        Predicted {
            val: ensemble::average(&vals),
            data: datas.map(|d| ensemble::average(&d)),
        }
    }
}

/// What predictions are scored against.
struct Scorer<'a> {
    prepared: &'a Prepared,
    /// The `truth` file's labels for the validation rows.
    full_labels: Option<(Vec<f32>, Vec<u8>)>,
    /// The `data` file's faces and labels.
    data: Option<(FaceTable, Vec<f32>, Vec<u8>)>,
    keypoints: &'a [String],
    mean_shape: Vec<f32>,
}

impl Scorer<'_> {
    fn predict(
        &self,
        session: &dyn Session,
        tta: &[Tta],
        flips: &FlipMap,
    ) -> Result<Predicted, EvaluateError> {
        let val = &self.prepared.val;
        let data = match &self.data {
            Some((faces, _, _)) => Some(predict_pixels_tta(
                session,
                &faces.pixels,
                faces.len(),
                faces.side,
                tta,
                flips,
            )?),
            None => None,
        };
        Ok(Predicted {
            val: predict_pixels_tta(session, &val.images, val.len(), self.prepared.side, tta, flips)?,
            data,
        })
    }

    fn score(&self, predicted: &Predicted) -> ScoreSet {
        let val = &self.prepared.val;
        let score = |pixels: &[f32], targets: &[f32], labelled: &[u8]| {
            score(pixels, targets, labelled, self.keypoints, &self.mean_shape)
        };
        ScoreSet {
            validation: score(&predicted.val, &val.targets, &val.labelled),
            validation_full_labels: self
                .full_labels
                .as_ref()
                .map(|(targets, labelled)| score(&predicted.val, targets, labelled)),
            data: match (&self.data, &predicted.data) {
                (Some((_, targets, labelled)), Some(pixels)) => Some(score(pixels, targets, labelled)),
                _ => None,
            },
        }
    }
}

impl EvaluateStage {
    fn evaluate(&self, ctx: &StageContext) -> Result<StageOutcome, EvaluateError> {
        let prepared = Prepared::read(&ctx.upstream_file(StageKind::Prepare, PREPARED_FILE)?)?;
        let rules = ingest::ReadingRules::read(&ctx.upstream_file(StageKind::Ingest, ingest::RULES_FILE)?)?;
        // One model, or each member of a seed ensemble, in `seeds` order.
        let metas = ctx.upstream_files(StageKind::Train, train::MODEL_META)?;
        let weights = ctx.upstream_files(StageKind::Train, train::MODEL_FILE)?;
        let models = metas
            .iter()
            .zip(&weights)
            .map(|((_, meta), (_, weights))| train::load_trained(meta, weights))
            .collect::<Result<Vec<_>, _>>()?;
        let trained = &models
            .first()
            .ok_or(super::UpstreamError::Instances {
                stage: StageKind::Evaluate,
                upstream: StageKind::Train,
                count: 0,
            })?
            .1;
        let keypoints = &trained.keypoint_names;
        let full_labels = match &self.config.truth {
            Some(path) => {
                let truth = ingest::read_like_training(path, &rules, Labels::Required, ctx.console)?;
                Some(truth_for(&truth, &prepared, path)?)
            }
            None => None,
        };
        let data = match &self.config.data {
            Some(path) => {
                let faces = ingest::read_like_training(path, &rules, Labels::Required, ctx.console)?;
                let labelled: Vec<u8> = faces.coords.iter().map(|v| u8::from(!v.is_nan())).collect();
                let targets: Vec<f32> = faces
                    .coords
                    .iter()
                    .map(|v| if v.is_nan() { 0.0 } else { *v })
                    .collect();
                Some((faces, targets, labelled))
            }
            None => None,
        };
        let scorer = Scorer {
            prepared: &prepared,
            full_labels,
            data,
            keypoints,
            mean_shape: mean_shape(&prepared.train, prepared.coordinate_names.len()),
        };

        let tta = &self.config.tta;
        let flips = FlipMap::from_keypoint_names(keypoints);
        let started = std::time::Instant::now();
        let with_tta = models
            .iter()
            .map(|(session, _)| scorer.predict(session.as_ref(), tta, &flips))
            .collect::<Result<Vec<_>, _>>()?;
        // Volatile: kept in timing.json beside training's images/s, never in a key.
        let predicted_images =
            models.len() * (prepared.val.len() + scorer.data.as_ref().map_or(0, |d| d.0.len()));
        let inference = serde_json::json!({
            "device": models[0].0.device(),
            "images": predicted_images,
            "images_per_s": predicted_images as f64 / started.elapsed().as_secs_f64().max(1e-9),
        });
        let plain = match tta.is_empty() {
            true => Vec::new(),
            false => models
                .iter()
                .map(|(session, _)| scorer.predict(session.as_ref(), &[], &flips))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let predicted = Predicted::average(&with_tta);
        let members = match models.len() {
            1 => Vec::new(),
            _ => models
                .iter()
                .enumerate()
                .map(|(i, (_, model))| MemberScores {
                    seed: model.seed,
                    epochs_run: model.epochs_run,
                    best_epoch: model.best_epoch,
                    scores: scorer.score(&with_tta[i]),
                    without_tta: plain.get(i).map(|p| scorer.score(p)),
                })
                .collect(),
        };
        let metrics = Metrics {
            model: trained.clone(),
            scores: scorer.score(&predicted),
            tta: tta.clone(),
            without_tta: (!plain.is_empty()).then(|| scorer.score(&Predicted::average(&plain))),
            members,
        };

        // Per face, against the best labels there are: what a report compares.
        let (targets, labelled) = scorer
            .full_labels
            .as_ref()
            .map_or((&prepared.val.targets, &prepared.val.labelled), |(t, l)| (t, l));
        let val_pixels = &predicted.val;
        write_predictions(
            &ctx.data_dir.join(PREDICTIONS_FILE),
            &face_predictions(&prepared, val_pixels, targets, labelled),
        )?;
        let json = serde_json::to_vec_pretty(&metrics).map_err(|e| ReportError::write(ctx.data_dir, e))?;
        let write =
            |path: &Path, bytes: &[u8]| std::fs::write(path, bytes).map_err(|e| ReportError::write(path, e));
        write(&ctx.data_dir.join(METRICS_FILE), &json)?;
        write(&ctx.report_dir.join(METRICS_FILE), &json)?;

        let overall = overall_table(&metrics);
        let per_keypoint = keypoint_table(&metrics);
        let members = members_table(&metrics);
        let members_section = match &members {
            Some(table) => format!("\n\n## Members of the ensemble\n\n{}", table.to_markdown()),
            None => String::new(),
        };
        let markdown = format!(
            "# Evaluation\n\n{}\n\n{}{members_section}\n\n## Per keypoint (RMSE, pixels)\n\n{}\n\n\
             {}\n\n![validation faces: dots true, crosses predicted](predictions.png)\n",
            describe_models(&metrics),
            overall.to_markdown(),
            per_keypoint.to_markdown(),
            curve_links(&metrics),
        );
        write(&ctx.report_dir.join("metrics.md"), markdown.as_bytes())?;
        overall.write_parquet(&ctx.report_dir.join("metrics.parquet"))?;
        per_keypoint.write_parquet(&ctx.report_dir.join("metrics_per_keypoint.parquet"))?;

        let rows: Vec<usize> = (0..prepared.val.len()).take(self.config.samples).collect();
        let coords = prepared.coordinate_names.len();
        let true_coords: Vec<Vec<f32>> = rows
            .iter()
            .map(|&row| {
                (0..coords)
                    .map(|c| {
                        let i = row * coords + c;
                        if prepared.val.labelled[i] == 1 {
                            prepared.val.targets[i]
                        } else {
                            f32::NAN
                        }
                    })
                    .collect()
            })
            .collect();
        let pixels = prepared.side * prepared.side;
        let grid = FaceGrid {
            title: format!(
                "Validation faces: dots true labels, crosses {} predictions",
                trained.spec.graph.name
            ),
            faces: rows
                .iter()
                .zip(&true_coords)
                .map(|(&row, truth)| {
                    let predicted = &val_pixels[row * coords..(row + 1) * coords];
                    let errors = pixel_errors(
                        predicted,
                        &prepared.val.targets[row * coords..(row + 1) * coords],
                        &prepared.val.labelled[row * coords..(row + 1) * coords],
                    );
                    Face {
                        image: &prepared.val.images[row * pixels..(row + 1) * pixels],
                        coords: truth,
                        predicted: Some(predicted),
                        caption: format!(
                            "row {}: RMSE {:.2} px",
                            prepared.val.source_rows[row], errors.rmse
                        ),
                    }
                })
                .collect(),
            side: prepared.side,
            keypoint_names: keypoints,
            columns: None,
        };
        plot::save(&grid, ctx.report_dir, "predictions")?;
        let mut summary = format!("{}\n{}", overall.to_terminal(), per_keypoint.to_terminal());
        if let Some(table) = &members {
            summary = format!("{}\n{summary}", table.to_terminal());
        }
        Ok(StageOutcome {
            headline: Some(metrics.headline()),
            summary: Some(summary),
            timing: Some(serde_json::json!({ "inference": inference })),
            earlier_seconds: 0.0,
        })
    }
}

/// The first line of `metrics.md`: which model, or which ensemble.
fn describe_models(metrics: &Metrics) -> String {
    let model = &metrics.model;
    match metrics.members.as_slice() {
        [] => format!(
            "{} ({} parameters), {} epochs on {}; best epoch {}.",
            model.spec.graph.name, model.parameters, model.epochs_run, model.device, model.best_epoch
        ),
        members => {
            let seeds: Vec<String> = members.iter().map(|m| m.seed.to_string()).collect();
            format!(
                "An ensemble of {} {} models ({} parameters each) on {}, trained with seeds {}: \
                 the scores average their predictions.",
                members.len(),
                model.spec.graph.name,
                model.parameters,
                model.device,
                seeds.join(", ")
            )
        }
    }
}

/// Links to the learning curves: the model's, or each member's in its folder.
fn curve_links(metrics: &Metrics) -> String {
    match metrics.members.as_slice() {
        [] => "![learning curves](learning_curves.png)".to_string(),
        members => members
            .iter()
            .map(|m| {
                format!(
                    "![learning curves, seed {0}](seed-{0}/learning_curves.png)",
                    m.seed
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

/// Each member of an ensemble alone, beside the ensemble: validation RMSE
/// (on full labels where there are), with and without TTA.
fn members_table(metrics: &Metrics) -> Option<ReportTable> {
    if metrics.members.is_empty() {
        return None;
    }
    let (_, scored_on) = metrics.scores.headline();
    let has_tta = !metrics.tta.is_empty();
    let mut columns = vec![
        "model".to_string(),
        "epochs run".to_string(),
        "best epoch".to_string(),
        format!("RMSE px ({scored_on})"),
        format!("PCK@10% ({scored_on})"),
    ];
    if has_tta {
        columns.push(format!("RMSE px without TTA ({scored_on})"));
    }
    let mut table = ReportTable::new(columns, 3);
    let mut push = |name: String, epochs: Cell, best: Cell, scores: &ScoreSet, plain: Option<&ScoreSet>| {
        let (headline, _) = scores.headline();
        let mut row = vec![
            Cell::from(name),
            epochs,
            best,
            headline.rmse_px.into(),
            headline.pck_10.into(),
        ];
        if has_tta {
            row.push(plain.map(|p| p.headline().0.rmse_px).into());
        }
        table.push(row);
    };
    for member in &metrics.members {
        push(
            format!("seed {}", member.seed),
            member.epochs_run.into(),
            member.best_epoch.into(),
            &member.scores,
            member.without_tta.as_ref(),
        );
    }
    push(
        "ensemble (mean of predictions)".to_string(),
        Cell::Text(String::new()),
        Cell::Text(String::new()),
        &metrics.scores,
        metrics.without_tta.as_ref(),
    );
    Some(table)
}

/// The training split's mean of each coordinate over real labels.
fn mean_shape(train: &Split, coords: usize) -> Vec<f32> {
    (0..coords)
        .map(|c| {
            let (sum, n) = (0..train.len())
                .filter(|row| train.labelled[row * coords + c] == 1)
                .fold((0.0f64, 0usize), |(s, n), row| {
                    (s + f64::from(train.targets[row * coords + c]), n + 1)
                });
            (sum / n.max(1) as f64) as f32
        })
        .collect()
}

fn score(pred: &[f32], targets: &[f32], labelled: &[u8], keypoints: &[String], mean_shape: &[f32]) -> Scores {
    let coords = keypoints.len() * 2;
    let errors: PixelErrors = pixel_errors(pred, targets, labelled);
    let baseline: Vec<f32> = (0..pred.len()).map(|i| mean_shape[i % coords]).collect();
    Scores {
        rows: pred.len() / coords.max(1),
        labelled_points: errors.count,
        rmse_px: errors.rmse,
        mae_px: errors.mae,
        pck_5: pck(pred, targets, labelled, keypoints, 0.05),
        pck_10: pck(pred, targets, labelled, keypoints, 0.10),
        mean_shape_rmse_px: pixel_errors(&baseline, targets, labelled).rmse,
        per_keypoint: keypoints
            .iter()
            .zip(per_keypoint(pred, targets, labelled, coords))
            .map(|(name, (rmse, count))| KeypointScore {
                keypoint: name.clone(),
                labelled_points: count,
                rmse_px: rmse,
            })
            .collect(),
    }
}

/// Each validation face's prediction, scoring labels and RMSE over them.
fn face_predictions(
    prepared: &Prepared,
    pixels: &[f32],
    targets: &[f32],
    labelled: &[u8],
) -> FacePredictions {
    let coords = prepared.coordinate_names.len();
    let truth: Vec<f32> = targets
        .iter()
        .zip(labelled)
        .map(|(&t, &l)| if l == 1 { t } else { f32::NAN })
        .collect();
    let face_rmse_px = (0..prepared.val.len())
        .map(|row| {
            let range = row * coords..(row + 1) * coords;
            let errors = pixel_errors(&pixels[range.clone()], &targets[range.clone()], &labelled[range]);
            if errors.count == 0 { f64::NAN } else { errors.rmse }
        })
        .collect();
    FacePredictions {
        coordinate_names: prepared.coordinate_names.clone(),
        source_rows: prepared.val.source_rows.clone(),
        predicted: pixels.to_vec(),
        truth,
        face_rmse_px,
    }
}

/// The `truth` file's labels for the validation rows, matched by source row and
/// checked to be the same faces.
fn truth_for(truth: &FaceTable, prepared: &Prepared, path: &Path) -> Result<(Vec<f32>, Vec<u8>), DataError> {
    let mismatch = |message: String| DataError::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    let pixels = prepared.side * prepared.side;
    let (mut targets, mut labelled) = (Vec::new(), Vec::new());
    for (i, &source_row) in prepared.val.source_rows.iter().enumerate() {
        let row = source_row as usize;
        if row >= truth.len() || truth.image(row) != &prepared.val.images[i * pixels..(i + 1) * pixels] {
            return Err(mismatch(format!(
                "data row {row} is not the same face as the ingested row {row}: `truth` must be the same file with more labels"
            )));
        }
        for &v in truth.row_coords(row) {
            targets.push(if v.is_nan() { 0.0 } else { v });
            labelled.push(u8::from(!v.is_nan()));
        }
    }
    Ok((targets, labelled))
}

fn overall_table(metrics: &Metrics) -> ReportTable {
    let mut table = ReportTable::new(
        [
            "scored on",
            "faces",
            "points",
            "RMSE px",
            "MAE px",
            "PCK@5%",
            "PCK@10%",
            "mean-shape RMSE px",
        ],
        3,
    );
    let with = if metrics.tta.is_empty() { "" } else { ", with TTA" };
    let plain = metrics.without_tta.as_ref();
    let sets = [
        (
            "validation (sparse labels)",
            with,
            Some(&metrics.scores.validation),
        ),
        (
            "validation (full labels)",
            with,
            metrics.scores.validation_full_labels.as_ref(),
        ),
        ("data file", with, metrics.scores.data.as_ref()),
        (
            "validation (sparse labels)",
            ", without TTA",
            plain.map(|p| &p.validation),
        ),
        (
            "validation (full labels)",
            ", without TTA",
            plain.and_then(|p| p.validation_full_labels.as_ref()),
        ),
        ("data file", ", without TTA", plain.and_then(|p| p.data.as_ref())),
    ];
    for (name, how, scores) in sets {
        if let Some(s) = scores {
            table.push(vec![
                format!("{name}{how}").into(),
                s.rows.into(),
                s.labelled_points.into(),
                s.rmse_px.into(),
                s.mae_px.into(),
                s.pck_5.into(),
                s.pck_10.into(),
                s.mean_shape_rmse_px.into(),
            ]);
        }
    }
    table
}

fn keypoint_table(metrics: &Metrics) -> ReportTable {
    let full = metrics.scores.validation_full_labels.as_ref();
    let mut columns = vec!["keypoint", "points", "validation RMSE px"];
    if full.is_some() {
        columns.extend(["points (full labels)", "RMSE px (full labels)"]);
    }
    let mut table = ReportTable::new(columns, 3);
    for (k, score) in metrics.scores.validation.per_keypoint.iter().enumerate() {
        let mut row = vec![
            Cell::from(score.keypoint.clone()),
            score.labelled_points.into(),
            score.rmse_px.into(),
        ];
        if let Some(full) = full {
            row.push(full.per_keypoint[k].labelled_points.into());
            row.push(full.per_keypoint[k].rmse_px.into());
        }
        table.push(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_shape_uses_real_training_labels_only() {
        let train = Split {
            images: vec![0; 3],
            targets: vec![2.0, 10.0, 4.0, 0.0, 99.0, 0.0],
            labelled: vec![1, 1, 1, 0, 0, 0],
            loss_mask: vec![1, 1, 1, 0, 1, 0],
            source_rows: vec![0, 1, 2],
        };
        assert_eq!(mean_shape(&train, 2), [3.0, 10.0]);
    }
}
