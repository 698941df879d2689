//! The ingest stage: Kaggle-layout CSV (plain, gzip or zip) to Parquet, validated.
//!
//! Writes to its cache entry's `data/`: `train.parquet`, `test.parquet` and
//! `lookup.parquet` (when configured), `ingest.json` (image side, coordinate
//! names, counts) and `rules.json` (what other files of the pipeline are read
//! with: see [`read_like_training`]). Writes `ingest/summary.md` to the
//! pipeline's reports.

mod config;
mod summary;

use std::path::Path;

pub use config::{IngestConfig, OnBadRow};
pub use summary::IngestMeta;

use super::{FileInput, Stage, StageContext, StageDef, StageError, StageKind, StageOutcome, StageTables};
use crate::console::Console;
use crate::data::kaggle_csv::{self, ParseOptions};
use crate::data::source::Member;
use crate::data::{DataError, FaceTable, lookup, parquet};
use crate::fsutil;

pub const TRAIN_FILE: &str = "train.parquet";
pub const TEST_FILE: &str = "test.parquet";
pub const LOOKUP_FILE: &str = "lookup.parquet";
pub const META_FILE: &str = "ingest.json";
pub const RULES_FILE: &str = "rules.json";

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub static DEF: StageDef = StageDef {
    name: "ingest",
    also_configured_by: &[],
    reads: &[],
    reads_members: false,
    optional_reads: &[],
    read,
    key_name: |rest| super::toml_key("ingest", rest),
};

fn read(tables: &mut StageTables) -> Vec<Box<dyn Stage>> {
    vec![Box::new(IngestStage {
        config: IngestConfig::read(&mut tables.main),
    })]
}

pub struct IngestStage {
    config: IngestConfig,
}

impl IngestStage {
    fn options(&self) -> ParseOptions {
        ParseOptions {
            skip_bad_rows: self.config.on_bad_row == OnBadRow::Skip,
            coordinate_tolerance: self.config.coordinate_tolerance as f32,
            ignore_coordinates: false,
            side: self
                .config
                .image_side
                .map(|side| (side, "as [ingest] image_side says")),
        }
    }
}

impl Stage for IngestStage {
    fn kind(&self) -> StageKind {
        StageKind::Ingest
    }

    fn version(&self) -> u32 {
        2
    }

    fn config(&self) -> serde_json::Value {
        super::key_config(&self.config)
    }

    fn file_inputs(&self) -> Vec<FileInput> {
        let mut inputs = vec![FileInput {
            role: "train",
            path: self.config.train.clone(),
        }];
        if let Some(path) = &self.config.test {
            inputs.push(FileInput {
                role: "test",
                path: path.clone(),
            });
        }
        if let Some(path) = &self.config.lookup {
            inputs.push(FileInput {
                role: "lookup",
                path: path.clone(),
            });
        }
        inputs
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        Ok(self.ingest(ctx)?)
    }
}

impl IngestStage {
    fn ingest(&self, ctx: &StageContext) -> Result<StageOutcome, IngestError> {
        let options = self.options();
        let train_path = &self.config.train;
        let parsed = kaggle_csv::read(train_path, Member::Training, options, ctx.console)?;
        let train = parsed.table;
        if train.coordinate_names.is_empty() {
            return Err(DataError::Header {
                path: train_path.clone(),
                message: "the training file has no keypoint coordinate columns".to_string(),
            }
            .into());
        }
        for skipped in &parsed.skipped {
            ctx.console.detail(&format!("skipped {skipped}"));
        }
        parquet::write_faces(&ctx.data_dir.join(TRAIN_FILE), &train)?;
        let mut meta = IngestMeta::of_train(&train, &parsed.skipped);
        let rules = ReadingRules {
            side: train.side,
            coordinate_names: train.coordinate_names.clone(),
            coordinate_tolerance: self.config.coordinate_tolerance,
        };

        let mut test_ids = None;
        if let Some(test_path) = &self.config.test {
            let test = kaggle_csv::read(test_path, Member::Test, options, ctx.console)?;
            if test.table.side != train.side {
                return Err(DataError::Mismatch {
                    path: test_path.clone(),
                    message: format!(
                        "images are {0}x{0} but the training images are {1}x{1}",
                        test.table.side, train.side
                    ),
                }
                .into());
            }
            parquet::write_faces(&ctx.data_dir.join(TEST_FILE), &test.table)?;
            meta.test_rows = Some(test.table.len());
            meta.test_skipped = Some(test.skipped.len());
            test_ids = test.table.image_ids;
        }
        if let Some(lookup_path) = &self.config.lookup {
            let table = lookup::read_lookup(
                lookup_path,
                &train.coordinate_names,
                test_ids.as_deref(),
                ctx.console,
            )?;
            parquet::write_lookup(&ctx.data_dir.join(LOOKUP_FILE), &table)?;
            meta.lookup_rows = Some(table.len());
        }

        let write_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IngestError::Write { path, source }
        };
        let meta_path = ctx.data_dir.join(META_FILE);
        fsutil::write_json(&meta_path, &meta).map_err(write_error(&meta_path))?;
        let rules_path = ctx.data_dir.join(RULES_FILE);
        fsutil::write_json(&rules_path, &rules).map_err(write_error(&rules_path))?;
        let report = ctx.report_dir.join("ingest");
        std::fs::create_dir_all(&report).map_err(write_error(&report))?;
        let summary_path = report.join("summary.md");
        std::fs::write(&summary_path, meta.markdown()).map_err(write_error(&summary_path))?;
        Ok(StageOutcome {
            headline: Some(meta.headline()),
            summary: Some(meta.terminal_tables()),
            timing: None,
            earlier_seconds: 0.0,
        })
    }
}

/// Whether a file read like the training file must carry its coordinate columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// Labelled data (`val_file`, `truth`, `data`): the same coordinate columns
    /// as the training file, checked the same way.
    Required,
    /// Faces only predicted on: coordinate columns, if any, are ignored.
    Ignored,
}

/// What the pipeline's other files are read with: the training file's image
/// side and coordinate columns, and `[ingest] coordinate_tolerance`. Kept apart
/// from `ingest.json`, so that stages reading it do not rerun when only counts
/// change (say, a test file is added).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadingRules {
    pub side: usize,
    pub coordinate_names: Vec<String>,
    pub coordinate_tolerance: f64,
}

impl ReadingRules {
    pub fn read(path: &Path) -> Result<ReadingRules, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| DataError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Reads another Kaggle-layout file under the rules the pipeline's training file
/// was ingested with, every row required to pass: the one reader for prepare's
/// `val_file`, evaluate's `truth` and `data`, and `fkp predict`'s input.
pub fn read_like_training(
    path: &Path,
    rules: &ReadingRules,
    labels: Labels,
    console: &Console,
) -> Result<FaceTable, DataError> {
    let options = ParseOptions {
        skip_bad_rows: false,
        coordinate_tolerance: rules.coordinate_tolerance as f32,
        ignore_coordinates: labels == Labels::Ignored,
        side: Some((rules.side, "like the training images")),
    };
    // Of Kaggle's competition archive, labelled files are the training member.
    let member = match labels {
        Labels::Required => Member::Training,
        Labels::Ignored => Member::Test,
    };
    let faces = kaggle_csv::read(path, member, options, console)?.table;
    if labels == Labels::Required && faces.coordinate_names != rules.coordinate_names {
        return Err(DataError::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "its {} coordinate columns differ from the training file's {}",
                faces.coordinate_names.len(),
                rules.coordinate_names.len()
            ),
        });
    }
    Ok(faces)
}
