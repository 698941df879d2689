//! The report stage: compares other pipelines. `[report] pipelines` names pipeline
//! files; the graph runs them first and this stage reads their training history,
//! metrics, per-face predictions, EDA numbers and configurations, ranks them and
//! draws them side by side.
//!
//! The cache entry holds only exact outputs (`data/comparison.json`, tables,
//! plots); wall times and images/s come from the members' `timing.json` into
//! this entry's own, and the published views (`index.md`, `index.html`,
//! `report.json`) are rendered with them at publish time.

mod comparison;
mod config;
mod figures;
pub mod views;

use std::path::{Path, PathBuf};

pub use comparison::{Comparison, DataSummary, MemberResult, Row, RowTiming, SCHEMA, SortBy};
pub use config::{DEFAULT_FACES, ReportConfig};

use super::{
    FileInput, MemberInfo, Stage, StageContext, StageDef, StageError, StageKind, StageOutcome, StageTables,
};
use crate::config::{ConfigError, ConfigErrorKind, Location};
use crate::data::DataError;
use crate::data::parquet::{FacePredictions, read_predictions};
use crate::data::prepared::Prepared;
use crate::render::faces::{Face, FaceGrid};
use crate::render::{RenderError, plot};
use crate::stages::eda;
use crate::stages::evaluate::{METRICS_FILE, Metrics, MetricsReadError, PREDICTIONS_FILE};
use crate::stages::prepare::PREPARED_FILE;
use crate::stages::train::{HISTORY_FILE, read_history};

/// The comparison without timings: what the report's views are rendered from.
pub const COMPARISON_FILE: &str = "comparison.json";

#[derive(Debug, thiserror::Error)]
pub enum ReportStageError {
    #[error(transparent)]
    Upstream(#[from] super::UpstreamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Report(#[from] RenderError),
    #[error("pipeline `{pipeline}`: cannot read {path}: {message}")]
    Member {
        pipeline: String,
        path: PathBuf,
        message: String,
    },
    #[error("pipeline `{pipeline}`: {source}")]
    Metrics {
        pipeline: String,
        source: MetricsReadError,
    },
    #[error("pipeline `{pipeline}` has no [{stage}] stage, whose {file} the report reads")]
    NoStage {
        pipeline: String,
        stage: StageKind,
        file: &'static str,
    },
}

/// `[report]`'s keys, and what it holds of each member: `members.<name>.stages.<label>.<key>`
/// is that member's stage key (`` `lenet`: `[train] lr` ``), its name and
/// description are its `[pipeline]`'s, `order` is the list of `pipelines`.
fn key_name(rest: &str) -> String {
    let toml_key = super::toml_key;
    if let Some(member) = rest.strip_prefix("members.") {
        // A name may hold dots: it ends where one of MemberInfo's fields starts.
        let split = member.find(".stages.").or_else(|| {
            [".description", ".toml_blake3", ".name"]
                .iter()
                .find(|field| member.ends_with(*field))
                .map(|field| member.len() - field.len())
        });
        let (name, key) = match split {
            Some(at) => (&member[..at], &member[at + 1..]),
            None => (member, ""),
        };
        let what = match key.split_once('.') {
            Some(("stages", stage_key)) => {
                // The label (`train#seed-1`) names the kind before any `#`.
                let (label, key) = stage_key.split_once('.').unwrap_or((stage_key, ""));
                let kind = label.split('#').next().unwrap_or(label);
                super::key_name(format!("{kind}.{key}").trim_end_matches('.'))
            }
            _ => match key {
                "" => "the member".to_string(),
                "toml_blake3" => "its pipeline file".to_string(),
                "description" | "name" => toml_key("pipeline", key),
                other => format!("`{other}`"),
            },
        };
        return format!("`{name}`: {what}");
    }
    match rest {
        "name" | "description" => toml_key("pipeline", rest),
        _ => match rest.strip_prefix("order") {
            Some(index) => format!("`[report] pipelines{index}`"),
            None => toml_key("report", rest),
        },
    }
}

pub static DEF: StageDef = StageDef {
    name: "report",
    also_configured_by: &[],
    reads: &[
        (StageKind::Eda, eda::NUMBERS_FILE),
        (StageKind::Prepare, PREPARED_FILE),
        (StageKind::Train, HISTORY_FILE),
        (StageKind::Evaluate, METRICS_FILE),
        (StageKind::Evaluate, PREDICTIONS_FILE),
    ],
    reads_members: true,
    optional_reads: &[StageKind::Eda],
    read,
    key_name,
};

fn read(tables: &mut StageTables) -> Vec<Box<dyn Stage>> {
    let config = ReportConfig::read(&mut tables.main);
    vec![Box::new(ReportStage {
        config,
        this: None,
        members: Vec::new(),
    })]
}

pub struct ReportStage {
    config: ReportConfig,
    /// The report's own pipeline (name, description), once linked.
    this: Option<MemberInfo>,
    members: Vec<MemberInfo>,
}

impl Stage for ReportStage {
    fn kind(&self) -> StageKind {
        StageKind::Report
    }

    fn version(&self) -> u32 {
        // 2: ensembles, test-time flips and seed groups in the comparison;
        // augmentation strengths printed as f32.
        2
    }

    /// Its table and everything it shows of each member besides the outputs it
    /// reads: names, descriptions and configurations.
    fn config(&self) -> serde_json::Value {
        let mut config = super::key_config(&self.config);
        if let Some(this) = &self.this {
            config["name"] = this.name.clone().into();
            config["description"] = this.description.clone().into();
        }
        // By name, so that `status` names what changed (`report.members.a.description`).
        config["order"] = self
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
            .into();
        let members: std::collections::BTreeMap<&str, &MemberInfo> =
            self.members.iter().map(|m| (m.name.as_str(), m)).collect();
        config["members"] = super::key_config(&members);
        config
    }

    fn file_inputs(&self) -> Vec<FileInput> {
        Vec::new()
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        Ok(self.compare(ctx)?)
    }

    fn member_files(&self) -> Vec<(PathBuf, Location)> {
        self.config.pipelines.clone()
    }

    fn link_members(&mut self, this: MemberInfo, members: Vec<MemberInfo>) -> Result<(), ConfigError> {
        if let (Some(baseline), Some(at)) = (&self.config.baseline, &self.config.baseline_at)
            && !members.iter().any(|m| &m.name == baseline)
        {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            let kind = ConfigErrorKind::InvalidValue {
                key: "report.baseline".to_string(),
                message: format!(
                    "`{}` is not one of the listed pipelines",
                    crate::text::excerpt(baseline)
                ),
            };
            return Err(ConfigError::new(kind, at).with_help(format!("listed: {}", names.join(", "))));
        }
        self.this = Some(this);
        self.members = members;
        Ok(())
    }

    fn render_views(&self, entry: &Path, dir: &Path) -> Result<Vec<PathBuf>, StageError> {
        Ok(views::publish(entry, dir)?)
    }
}

/// Where one member's outputs are: the file of each of the report's `reads`
/// ([`DEF`]), `None` where the member has no such stage (no [eda], say).
pub struct MemberFiles {
    files: Vec<((StageKind, &'static str), Option<PathBuf>)>,
}

impl MemberFiles {
    /// Each file the report reads, where `locate` finds it.
    pub fn locate(mut locate: impl FnMut(StageKind, &'static str) -> Option<PathBuf>) -> MemberFiles {
        MemberFiles {
            files: DEF
                .reads
                .iter()
                .map(|&(kind, file)| ((kind, file), locate(kind, file)))
                .collect(),
        }
    }

    /// The file, where the member has the stage that writes it.
    fn optional(&self, kind: StageKind, file: &'static str) -> Option<&Path> {
        self.files
            .iter()
            .find(|(read, _)| *read == (kind, file))
            .and_then(|(_, path)| path.as_deref())
    }

    /// The file, which every member has.
    fn required(
        &self,
        info: &MemberInfo,
        kind: StageKind,
        file: &'static str,
    ) -> Result<&Path, ReportStageError> {
        self.optional(kind, file)
            .ok_or_else(|| ReportStageError::NoStage {
                pipeline: info.name.clone(),
                stage: kind,
                file,
            })
    }
}

/// What the report's tables and pictures are made from.
#[derive(Debug)]
pub struct Compared {
    pub comparison: Comparison,
    predictions: Vec<FacePredictions>,
    /// The first member's prepared data: the faces the pictures show.
    first_prepared: Option<PathBuf>,
}

/// Reads every member's outputs and builds the comparison (without timings).
pub fn gather(
    this: Option<&MemberInfo>,
    members: &[(&MemberInfo, MemberFiles)],
    baseline: Option<&str>,
    sort_by: SortBy,
) -> Result<Compared, ReportStageError> {
    let mut results = Vec::new();
    let mut predictions = Vec::new();
    for (info, files) in members {
        let member_error = |path: &Path, message: String| ReportStageError::Member {
            pipeline: info.name.clone(),
            path: path.to_path_buf(),
            message,
        };
        let metrics =
            Metrics::read(files.required(info, StageKind::Evaluate, METRICS_FILE)?).map_err(|source| {
                ReportStageError::Metrics {
                    pipeline: info.name.clone(),
                    source,
                }
            })?;
        let history_file = files.required(info, StageKind::Train, HISTORY_FILE)?;
        let history = read_history(history_file).map_err(|m| member_error(history_file, m))?;
        predictions.push(read_predictions(files.required(
            info,
            StageKind::Evaluate,
            PREDICTIONS_FILE,
        )?)?);
        results.push(MemberResult {
            info,
            metrics,
            history,
        });
    }
    let eda: Vec<(&MemberInfo, &Path)> = members
        .iter()
        .filter_map(|(info, files)| Some((*info, files.optional(StageKind::Eda, eda::NUMBERS_FILE)?)))
        .collect();
    let comparison = comparison::build(
        this.map_or("compare", |t| t.name.as_str()),
        this.and_then(|t| t.description.as_deref()),
        &results,
        baseline,
        sort_by,
        data_summaries(&eda)?,
    );
    Ok(Compared {
        comparison,
        predictions,
        first_prepared: members
            .first()
            .map(|(info, files)| {
                files
                    .required(info, StageKind::Prepare, PREPARED_FILE)
                    .map(Path::to_path_buf)
            })
            .transpose()?,
    })
}

impl Compared {
    /// Draws the report's pictures (PNG and SVG) into `dir`.
    pub fn draw(&self, faces: usize, dir: &Path) -> Result<(), ReportStageError> {
        let rows = &self.comparison.rows;
        plot::save(&figures::ValidationCurves { rows }, dir, "val_rmse_curves")?;
        plot::save(&figures::TrainLossCurves { rows }, dir, "train_loss_curves")?;
        plot::save(
            &figures::KeypointBars {
                keypoints: &self.comparison.keypoints,
                rows,
            },
            dir,
            "keypoint_rmse",
        )?;
        // Box plots in rank order, like the tables.
        let face_errors: Vec<(String, Vec<f64>)> = self
            .ranked_members()
            .map(|(row, p)| (row.pipeline.clone(), p.face_rmse_px.clone()))
            .collect();
        plot::save(
            &figures::ErrorDistribution {
                pipelines: &face_errors,
            },
            dir,
            "face_rmse_distribution",
        )?;
        if let Some(prepared) = &self.first_prepared {
            let images = Prepared::read(prepared)?;
            self.draw_faces(&images, faces, dir)?;
        }
        Ok(())
    }

    /// Each row with its member's predictions, in rank order.
    fn ranked_members(&self) -> impl Iterator<Item = (&Row, &FacePredictions)> {
        self.comparison
            .rows
            .iter()
            .map(|row| (row, &self.predictions[row.member]))
    }

    /// The validation faces every member scored, worst first by their mean
    /// error over the members: a row per face, a column per pipeline.
    fn draw_faces(&self, images: &Prepared, count: usize, dir: &Path) -> Result<(), RenderError> {
        let coords = images.coordinate_names.len();
        let image_row = |source: u32| images.val.source_rows.iter().position(|&s| s == source);
        let index_in = |p: &FacePredictions, source: u32| p.source_rows.iter().position(|&s| s == source);
        let mut shared: Vec<(u32, f64)> = self.predictions[0]
            .source_rows
            .iter()
            .filter(|&&source| image_row(source).is_some())
            .filter_map(|&source| {
                let errors: Option<Vec<f64>> = self
                    .predictions
                    .iter()
                    .map(|p| index_in(p, source).map(|i| p.face_rmse_px[i]))
                    .collect();
                let errors = errors?;
                let mean = errors.iter().sum::<f64>() / errors.len() as f64;
                mean.is_finite().then_some((source, mean))
            })
            .collect();
        shared.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        shared.truncate(count);

        let pixels = images.side * images.side;
        let mut faces = Vec::new();
        for &(source, _) in &shared {
            let image_index = image_row(source).unwrap_or_default();
            for (row, p) in self.ranked_members() {
                let i = index_in(p, source).unwrap_or_default();
                faces.push(Face {
                    image: &images.val.images[image_index * pixels..(image_index + 1) * pixels],
                    coords: &p.truth[i * coords..(i + 1) * coords],
                    predicted: Some(&p.predicted[i * coords..(i + 1) * coords]),
                    caption: format!("{}: {:.2} px", row.pipeline, p.face_rmse_px[i]),
                });
            }
        }
        let grid = FaceGrid {
            title: "Worst faces (rows) by pipeline (columns)".to_string(),
            faces,
            side: images.side,
            keypoint_names: &self.comparison.keypoints,
            columns: Some(self.comparison.rows.len()),
        };
        plot::save(&grid, dir, "faces_by_pipeline")
    }
}

impl ReportStage {
    fn compare(&self, ctx: &StageContext) -> Result<StageOutcome, ReportStageError> {
        // Every file the report reads, of every member that has it.
        let upstream = DEF
            .reads
            .iter()
            .map(|&(kind, file)| Ok(((kind, file), ctx.upstream_files(kind, file)?)))
            .collect::<Result<Vec<_>, super::UpstreamError>>()?;
        let members: Vec<(&MemberInfo, MemberFiles)> = self
            .members
            .iter()
            .map(|info| {
                let files = MemberFiles::locate(|kind, file| {
                    let (_, found) = upstream.iter().find(|(read, _)| *read == (kind, file))?;
                    // The first of a seed ensemble's trainings.
                    let (_, path) = found.iter().find(|(pipeline, _)| *pipeline == info.name)?;
                    Some(path.clone())
                });
                (info, files)
            })
            .collect();
        let compared = gather(
            self.this.as_ref(),
            &members,
            self.config.baseline.as_deref(),
            self.config.sort_by,
        )?;
        let comparison = &compared.comparison;
        let json_path = ctx.data_dir.join(COMPARISON_FILE);
        crate::fsutil::write_json(&json_path, comparison).map_err(|e| RenderError::write(&json_path, e))?;
        let keypoints = comparison.keypoint_table();
        comparison
            .table()
            .write_parquet(&ctx.data_dir.join("comparison.parquet"))?;
        keypoints.write_parquet(&ctx.data_dir.join("keypoints.parquet"))?;
        compared.draw(self.config.faces, ctx.report_dir)?;

        let timing: Vec<(String, Option<RowTiming>)> = ctx
            .upstream_timing(StageKind::Train)
            .into_iter()
            .map(|(pipeline, timing)| (pipeline.to_string(), timing.as_ref().and_then(train_timing)))
            .collect();
        // The summary is kept in the manifest, which must be exact: timings are
        // printed apart.
        ctx.console.result_detail(
            &views::with_timing(comparison, &timing)
                .timing_table()
                .to_terminal(),
        );
        Ok(StageOutcome {
            headline: Some(headline(comparison)),
            summary: Some(format!(
                "{}\n{}\n{}{}",
                comparison.scored_on(),
                comparison.table().to_terminal(),
                comparison.seed_table().map_or(String::new(), |t| format!(
                    "{}\n{}\n",
                    views::SEEDS_TITLE,
                    t.to_terminal()
                )),
                keypoints.to_terminal()
            )),
            timing: Some(serde_json::to_value(&timing).unwrap_or_default()),
            earlier_seconds: 0.0,
        })
    }
}

/// `4 pipelines ranked by rmse; first `ml-resnet`, 2.104 px RMSE, PCK@10% 91.2%`.
fn headline(comparison: &comparison::Comparison) -> String {
    let n = comparison.rows.len();
    let mut line = format!(
        "{n} pipeline{} ranked by {}",
        if n == 1 { "" } else { "s" },
        comparison.sort_by
    );
    if let Some(first) = comparison.rows.first() {
        line.push_str(&format!(
            "; first `{}`, {:.3} px RMSE",
            first.pipeline, first.rmse_px
        ));
        if let Some(pck) = first.pck_10 {
            line.push_str(&format!(", PCK@10% {pck:.1}%"));
        }
    }
    line
}

/// One summary per distinct data set (members with byte-identical EDA numbers
/// share one), of the members with [eda].
fn data_summaries(eda: &[(&MemberInfo, &Path)]) -> Result<Vec<DataSummary>, ReportStageError> {
    let mut seen: Vec<(Vec<u8>, DataSummary)> = Vec::new();
    for (member, path) in eda {
        let member_error = |message: String| ReportStageError::Member {
            pipeline: member.name.clone(),
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| member_error(e.to_string()))?;
        if let Some((_, summary)) = seen.iter_mut().find(|(b, _)| *b == bytes) {
            summary.pipelines.push(member.name.clone());
            continue;
        }
        let numbers: eda::Patterns =
            serde_json::from_slice(&bytes).map_err(|e| member_error(e.to_string()))?;
        let faces: usize = numbers.patterns.iter().map(|(_, rows)| rows).sum();
        let keypoints = numbers.patterns.first().map_or(0, |(present, _)| present.len());
        let complete_faces = numbers
            .patterns
            .iter()
            .filter(|(present, _)| present.iter().all(|&p| p))
            .map(|(_, rows)| rows)
            .sum();
        let labelled_pct = (0..keypoints)
            .map(|k| {
                let labelled: usize = numbers
                    .patterns
                    .iter()
                    .filter(|(present, _)| present.get(k).copied().unwrap_or(false))
                    .map(|(_, rows)| rows)
                    .sum();
                100.0 * labelled as f64 / faces.max(1) as f64
            })
            .collect();
        seen.push((
            bytes,
            DataSummary {
                pipelines: vec![member.name.clone()],
                faces,
                complete_faces,
                labelled_pct,
            },
        ));
    }
    Ok(seen.into_iter().map(|(_, summary)| summary).collect())
}

/// A train entry's `timing.json` as the report shows it.
pub fn train_timing(timing: &serde_json::Value) -> Option<RowTiming> {
    let seconds = timing["seconds"].as_f64()?;
    let rates: Vec<f64> = timing["stage"]["epochs"]
        .as_array()
        .map(|epochs| epochs.iter().filter_map(|e| e["images_per_s"].as_f64()).collect())
        .unwrap_or_default();
    Some(RowTiming {
        train_seconds: seconds,
        images_per_s: (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64),
    })
}
