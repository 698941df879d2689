//! The ingest stage: Kaggle-layout CSV (plain, gzip or zip) to Parquet, validated.
//!
//! Writes to its cache entry's `data/`: `train.parquet`, `test.parquet` and
//! `lookup.parquet` (when configured) and `ingest.json` (image side, coordinate
//! names, counts). Writes `ingest/summary.md` to the pipeline's reports.

mod config;
mod summary;

use std::path::Path;

pub use config::{IngestConfig, OnBadRow};
pub use summary::IngestMeta;

use super::{FileInput, Stage, StageContext, StageError, StageKind, StageOutcome};
use crate::data::kaggle_csv::{self, ParseOptions};
use crate::data::{DataError, lookup, parquet};
use crate::fsutil;

pub const TRAIN_FILE: &str = "train.parquet";
pub const TEST_FILE: &str = "test.parquet";
pub const LOOKUP_FILE: &str = "lookup.parquet";
pub const META_FILE: &str = "ingest.json";

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

pub struct IngestStage {
    config: IngestConfig,
}

impl IngestStage {
    pub fn new(config: IngestConfig) -> Self {
        IngestStage { config }
    }

    fn options(&self) -> ParseOptions {
        ParseOptions {
            skip_bad_rows: self.config.on_bad_row == OnBadRow::Skip,
            coordinate_tolerance: self.config.coordinate_tolerance as f32,
            ignore_coordinates: false,
        }
    }
}

impl Stage for IngestStage {
    fn kind(&self) -> StageKind {
        StageKind::Ingest
    }

    fn version(&self) -> u32 {
        1
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("the ingest config serialises")
    }

    fn reads(&self) -> &'static [&'static str] {
        &[]
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
        let parsed = kaggle_csv::read(train_path, options, ctx.console)?;
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

        let mut test_ids = None;
        if let Some(test_path) = &self.config.test {
            let test = kaggle_csv::read(test_path, options, ctx.console)?;
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

        write_json(&ctx.data_dir.join(META_FILE), &meta)?;
        let report = ctx.report_dir.join("ingest");
        let write_io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IngestError::Write { path, source }
        };
        std::fs::create_dir_all(&report).map_err(write_io(&report))?;
        let summary_path = report.join("summary.md");
        std::fs::write(&summary_path, meta.markdown()).map_err(write_io(&summary_path))?;
        Ok(StageOutcome {
            summary: Some(meta.terminal_tables()),
        })
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), IngestError> {
    let text = serde_json::to_vec_pretty(value).expect("plain data serialises");
    fsutil::write_atomic(path, &text).map_err(|source| IngestError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the `ingest.json` an ingest entry wrote: what later stages learn about the data.
pub fn read_meta(data_dir: &Path) -> Result<IngestMeta, DataError> {
    let path = data_dir.join(META_FILE);
    let text = std::fs::read(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| DataError::Corrupt {
        path,
        message: e.to_string(),
    })
}
