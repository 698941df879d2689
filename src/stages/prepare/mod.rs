//! The prepare stage: splits the ingested faces into training and validation
//! sets and applies the missing-label strategy to the training set only.
//!
//! The split comes first and depends only on `seed` and `val` (or `val_file`), so
//! every strategy and model validates on the same rows. Validation rows are never
//! filled or dropped: they are scored on their real labels.
//!
//! Writes `data/prepared.safetensors` (see [`crate::data::prepared`]) and
//! `data/prepare.json`; reports `reports/<pipeline>/prepare/summary.md`.

mod config;

use rand::SeedableRng;
use rand::seq::SliceRandom;

pub use config::{Missing, PrepareConfig};

use super::{FileInput, Stage, StageContext, StageDef, StageError, StageKind, StageOutcome, StageTables};
use crate::config::{ConfigError, ConfigErrorKind, Location};
use crate::console::Console;
use crate::data::prepared::{Prepared, Split};
use crate::data::summary::describe;
use crate::data::{DataError, FaceTable, parquet};
use crate::render::{Cell, RenderError, ReportTable};
use crate::stages::ingest::{self, Labels, ReadingRules};

pub const PREPARED_FILE: &str = "prepared.safetensors";
pub const META_FILE: &str = "prepare.json";

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Upstream(#[from] super::UpstreamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Report(#[from] RenderError),
    /// A configuration that only the data shows to be unworkable.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

pub static DEF: StageDef = StageDef {
    name: "prepare",
    also_configured_by: &[],
    reads: &[
        (StageKind::Ingest, ingest::TRAIN_FILE),
        (StageKind::Ingest, ingest::RULES_FILE),
    ],
    reads_members: false,
    optional_reads: &[],
    read,
    key_name: |rest| super::toml_key("prepare", rest),
};

fn read(tables: &mut StageTables) -> Vec<Box<dyn Stage>> {
    vec![Box::new(PrepareStage {
        config: PrepareConfig::read(&mut tables.main),
    })]
}

pub struct PrepareStage {
    config: PrepareConfig,
}

impl Stage for PrepareStage {
    fn kind(&self) -> StageKind {
        StageKind::Prepare
    }

    fn version(&self) -> u32 {
        2
    }

    fn config(&self) -> serde_json::Value {
        super::key_config(&self.config)
    }

    fn file_inputs(&self) -> Vec<FileInput> {
        self.config
            .val_file
            .iter()
            .map(|path| FileInput {
                role: "val_file",
                path: path.clone(),
            })
            .collect()
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        Ok(self.prepare(ctx)?)
    }
}

/// What prepare did, kept in `prepare.json` and shown as a table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PrepareMeta {
    pub missing: Missing,
    pub seed: u64,
    pub val_share: Option<f64>,
    /// Whether validation comes from `val_file` (its content is in the cache key;
    /// its path is not, so it is not written here either).
    pub val_from_file: bool,
    pub train_rows: usize,
    pub val_rows: usize,
    /// Training rows removed by `drop`.
    pub dropped_rows: usize,
    /// Training labels that are real.
    pub real_labels: usize,
    /// Training labels filled by `mean`/`median`.
    pub filled_labels: usize,
    /// Training labels left missing, which the loss ignores (`mask`).
    pub masked_labels: usize,
    /// Validation labels that are real (the only ones ever scored).
    pub val_labels: usize,
    /// The value each coordinate's missing labels were filled with.
    pub fill_values: Option<Vec<f64>>,
}

fn config_error(at: &Option<Location>, key: &str, message: String) -> PrepareError {
    let kind = ConfigErrorKind::InvalidValue {
        key: format!("prepare.{key}"),
        message,
    };
    match at {
        Some(at) => ConfigError::new(kind, at).into(),
        None => ConfigError::without_location(kind).into(),
    }
}

impl PrepareStage {
    fn prepare(&self, ctx: &StageContext) -> Result<StageOutcome, PrepareError> {
        let faces = parquet::read_faces(&ctx.upstream_file(StageKind::Ingest, ingest::TRAIN_FILE)?)?;
        let rules = ingest::ReadingRules::read(&ctx.upstream_file(StageKind::Ingest, ingest::RULES_FILE)?)?;
        let (train_rows, val) = self.split(&faces, &rules, ctx.console)?;
        let (train, meta) = self.training_split(&faces, &train_rows, &val)?;
        let prepared = Prepared {
            side: faces.side,
            coordinate_names: faces.coordinate_names.clone(),
            train,
            val,
        };
        prepared.write(&ctx.data_dir.join(PREPARED_FILE))?;
        let meta_path = ctx.data_dir.join(META_FILE);
        crate::fsutil::write_json(&meta_path, &meta).map_err(|e| RenderError::write(&meta_path, e))?;

        let table = summary_table(&meta);
        let fills = fill_table(&faces.coordinate_names, &meta);
        let dir = ctx.report_dir.join("prepare");
        std::fs::create_dir_all(&dir).map_err(|e| RenderError::write(&dir, e))?;
        let mut markdown = format!(
            "# Prepare\n\nMissing labels: `{}`; split seed {}.\n\n{}\n",
            meta.missing.name(),
            meta.seed,
            table.to_markdown()
        );
        if let Some(fills) = &fills {
            markdown.push_str(&format!(
                "\n## Fill values (training split only)\n\n{}\n",
                fills.to_markdown()
            ));
        }
        let path = dir.join("summary.md");
        std::fs::write(&path, markdown).map_err(|e| RenderError::write(&path, e))?;
        Ok(StageOutcome {
            headline: Some(headline(&meta)),
            summary: Some(table.to_terminal()),
            timing: None,
            earlier_seconds: 0.0,
        })
    }

    /// Training row indices and the validation split: a seeded shuffle of the
    /// ingested rows, or every row when a separate `val_file` validates.
    fn split(
        &self,
        faces: &FaceTable,
        rules: &ReadingRules,
        console: &Console,
    ) -> Result<(Vec<usize>, Split), PrepareError> {
        if let Some(path) = &self.config.val_file {
            let val_faces = ingest::read_like_training(path, rules, Labels::Required, console)?;
            let all: Vec<usize> = (0..val_faces.len()).collect();
            return Ok(((0..faces.len()).collect(), validation_split(&val_faces, &all)));
        }
        let mut order: Vec<usize> = (0..faces.len()).collect();
        order.shuffle(&mut rand_pcg::Pcg64Mcg::seed_from_u64(self.config.seed));
        let n_val = (faces.len() as f64 * self.config.val).round() as usize;
        if n_val == 0 || n_val == faces.len() {
            return Err(config_error(
                &self.config.split_at,
                "val",
                format!(
                    "holding out {} of {} rows leaves {} for validation and {} for training: both need rows",
                    self.config.val,
                    faces.len(),
                    n_val,
                    faces.len() - n_val
                ),
            ));
        }
        let mut val_rows = order[..n_val].to_vec();
        let mut train_rows = order[n_val..].to_vec();
        val_rows.sort_unstable();
        train_rows.sort_unstable();
        Ok((train_rows, validation_split(faces, &val_rows)))
    }

    fn training_split(
        &self,
        faces: &FaceTable,
        rows: &[usize],
        val: &Split,
    ) -> Result<(Split, PrepareMeta), PrepareError> {
        let width = faces.coordinate_names.len();
        let complete = |row: &usize| faces.row_coords(*row).iter().all(|v| !v.is_nan());
        let kept: Vec<usize> = match self.config.missing {
            Missing::Drop => rows.iter().copied().filter(complete).collect(),
            _ => rows.to_vec(),
        };
        if kept.is_empty() {
            return Err(config_error(
                &self.config.missing_at,
                "missing",
                format!(
                    "\"drop\" leaves no training rows: none of the {} has every label",
                    rows.len()
                ),
            ));
        }
        let fill_values = match self.config.missing {
            Missing::Mean | Missing::Median => Some(self.fill_values(faces, rows)?),
            Missing::Drop | Missing::Mask => None,
        };
        let mut split = Split::default();
        let (mut real, mut filled, mut masked) = (0, 0, 0);
        for &row in &kept {
            split.images.extend_from_slice(faces.image(row));
            split.source_rows.push(faces.source_rows[row]);
            for (c, &value) in faces.row_coords(row).iter().enumerate() {
                let labelled = !value.is_nan();
                let target = match (&fill_values, labelled) {
                    (_, true) => value,
                    (Some(fills), false) => fills[c] as f32,
                    (None, false) => 0.0,
                };
                split.targets.push(target);
                split.labelled.push(u8::from(labelled));
                split.loss_mask.push(u8::from(labelled || fill_values.is_some()));
                match (labelled, fill_values.is_some()) {
                    (true, _) => real += 1,
                    (false, true) => filled += 1,
                    (false, false) => masked += 1,
                }
            }
        }
        debug_assert_eq!(split.targets.len(), kept.len() * width);
        let meta = PrepareMeta {
            missing: self.config.missing,
            seed: self.config.seed,
            val_share: self.config.val_file.is_none().then_some(self.config.val),
            val_from_file: self.config.val_file.is_some(),
            train_rows: kept.len(),
            val_rows: val.len(),
            dropped_rows: rows.len() - kept.len(),
            real_labels: real,
            filled_labels: filled,
            masked_labels: masked,
            val_labels: val.labelled.iter().map(|&l| usize::from(l)).sum(),
            fill_values,
        };
        Ok((split, meta))
    }

    /// Each coordinate's mean or median over the training rows only.
    fn fill_values(&self, faces: &FaceTable, rows: &[usize]) -> Result<Vec<f64>, PrepareError> {
        (0..faces.coordinate_names.len())
            .map(|c| {
                let summary = describe(rows.iter().map(|&row| {
                    let v = faces.row_coords(row)[c];
                    (!v.is_nan()).then_some(f64::from(v))
                }));
                let value = match self.config.missing {
                    Missing::Mean => summary.mean,
                    _ => summary.median,
                };
                value.ok_or_else(|| {
                    config_error(
                        &self.config.missing_at,
                        "missing",
                        format!(
                            "`{}` has no label in the training split, so there is nothing to fill it with",
                            faces.coordinate_names[c]
                        ),
                    )
                })
            })
            .collect()
    }
}

/// Validation rows keep their real labels only: never filled, never dropped.
fn validation_split(faces: &FaceTable, rows: &[usize]) -> Split {
    let mut split = Split::default();
    for &row in rows {
        split.images.extend_from_slice(faces.image(row));
        split.source_rows.push(faces.source_rows[row]);
        for &value in faces.row_coords(row) {
            let labelled = !value.is_nan();
            split.targets.push(if labelled { value } else { 0.0 });
            split.labelled.push(u8::from(labelled));
            split.loss_mask.push(u8::from(labelled));
        }
    }
    split
}

/// `240 training and 60 validation rows; missing labels masked (2400 of 7200
/// ignored by the loss)`.
fn headline(meta: &PrepareMeta) -> String {
    let labels = meta.real_labels + meta.filled_labels + meta.masked_labels;
    let missing = match meta.missing {
        Missing::Drop => format!("rows missing a label dropped ({})", meta.dropped_rows),
        Missing::Mask => format!(
            "missing labels masked ({} of {labels} ignored by the loss)",
            meta.masked_labels
        ),
        Missing::Mean | Missing::Median => format!(
            "missing labels filled with the {} ({} of {labels})",
            meta.missing.name(),
            meta.filled_labels
        ),
    };
    format!(
        "{} training and {} validation rows; {missing}",
        meta.train_rows, meta.val_rows
    )
}

fn summary_table(meta: &PrepareMeta) -> ReportTable {
    let mut table = ReportTable::new(["", "value"], 0);
    let split = match (meta.val_from_file, meta.val_share) {
        (true, _) => "the rows of `val_file`".to_string(),
        (false, Some(share)) => format!("{:.0}% held out (seed {})", share * 100.0, meta.seed),
        (false, None) => String::new(),
    };
    let rows: [(&str, Cell); 9] = [
        ("missing labels", meta.missing.name().into()),
        ("split", split.into()),
        ("training rows", meta.train_rows.into()),
        ("training rows dropped", meta.dropped_rows.into()),
        ("training labels: real", meta.real_labels.into()),
        ("training labels: filled", meta.filled_labels.into()),
        (
            "training labels: masked (ignored by the loss)",
            meta.masked_labels.into(),
        ),
        ("validation rows", meta.val_rows.into()),
        ("validation labels (real only)", meta.val_labels.into()),
    ];
    for (label, value) in rows {
        table.push(vec![label.into(), value]);
    }
    table
}

fn fill_table(names: &[String], meta: &PrepareMeta) -> Option<ReportTable> {
    let fills = meta.fill_values.as_ref()?;
    let mut table = ReportTable::new(["coordinate", meta.missing.name()], 3);
    for (name, value) in names.iter().zip(fills) {
        table.push(vec![name.clone().into(), (*value).into()]);
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faces() -> FaceTable {
        let nan = f32::NAN;
        // 10 rows; rows 0, 3, 6, 9 miss keypoint b.
        let coords = (0..10)
            .flat_map(|r| {
                let missing = r % 3 == 0;
                [
                    r as f32,
                    1.0,
                    if missing { nan } else { 2.0 * r as f32 },
                    if missing { nan } else { 3.0 },
                ]
            })
            .collect();
        FaceTable {
            coordinate_names: vec!["a_x".into(), "a_y".into(), "b_x".into(), "b_y".into()],
            side: 2,
            source_rows: (0..10).collect(),
            image_ids: None,
            coords,
            pixels: (0..40).map(|i| i as u8).collect(),
        }
    }

    fn rules_of(faces: &FaceTable) -> ReadingRules {
        ReadingRules {
            side: faces.side,
            coordinate_names: faces.coordinate_names.clone(),
            coordinate_tolerance: 1.0,
        }
    }

    fn stage(missing: Missing) -> PrepareStage {
        PrepareStage {
            config: PrepareConfig {
                missing,
                val: 0.3,
                seed: 7,
                val_file: None,
                missing_at: None,
                split_at: None,
            },
        }
    }

    fn run(missing: Missing) -> (Vec<usize>, Split, Split, PrepareMeta) {
        let faces = faces();
        let stage = stage(missing);
        let (rows, val) = stage
            .split(&faces, &rules_of(&faces), &Console::silent())
            .unwrap();
        let (train, meta) = stage.training_split(&faces, &rows, &val).unwrap();
        (rows, train, val, meta)
    }

    #[test]
    fn every_strategy_validates_on_the_same_rows_with_real_labels_only() {
        let (_, _, val_mask, _) = run(Missing::Mask);
        for missing in [Missing::Drop, Missing::Mean, Missing::Median] {
            let (_, _, val, _) = run(missing);
            assert_eq!(val, val_mask);
        }
        assert_eq!(val_mask.len(), 3);
        for (i, &row) in val_mask.source_rows.iter().enumerate() {
            let labelled = &val_mask.labelled[i * 4..i * 4 + 4];
            assert_eq!(labelled, if row % 3 == 0 { [1, 1, 0, 0] } else { [1, 1, 1, 1] });
            assert_eq!(&val_mask.loss_mask[i * 4..i * 4 + 4], labelled);
        }
    }

    #[test]
    fn median_fills_from_the_training_split_only_and_records_it() {
        let (rows, train, val, meta) = run(Missing::Median);
        let present: Vec<f64> = rows
            .iter()
            .filter(|r| *r % 3 != 0)
            .map(|r| 2.0 * *r as f64)
            .collect();
        let median = describe(present.iter().map(|v| Some(*v))).median.unwrap();
        let fills = meta.fill_values.clone().unwrap();
        assert_eq!(fills[2], median);
        assert_eq!(fills[3], 3.0);
        // A validation row's b_x never leaks into the fill value.
        assert!(val.source_rows.iter().all(|r| !rows.contains(&(*r as usize))));
        for (i, &row) in train.source_rows.iter().enumerate() {
            if row % 3 == 0 {
                assert_eq!(train.targets[i * 4 + 2], median as f32);
                assert_eq!(
                    train.labelled[i * 4 + 2],
                    0,
                    "filled values are recorded as filled"
                );
                assert_eq!(train.loss_mask[i * 4 + 2], 1);
            }
        }
        assert_eq!(
            meta.filled_labels,
            2 * rows.iter().filter(|r| *r % 3 == 0).count()
        );
    }

    #[test]
    fn mask_keeps_missing_labels_out_of_the_loss() {
        let (rows, train, _, meta) = run(Missing::Mask);
        assert_eq!(train.len(), rows.len());
        assert_eq!(meta.filled_labels, 0);
        assert_eq!(
            meta.masked_labels,
            2 * rows.iter().filter(|r| *r % 3 == 0).count()
        );
        for (i, &row) in train.source_rows.iter().enumerate() {
            let expected = if row % 3 == 0 { [1, 1, 0, 0] } else { [1, 1, 1, 1] };
            assert_eq!(&train.loss_mask[i * 4..i * 4 + 4], expected);
            assert!(train.targets[i * 4..i * 4 + 4].iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn drop_keeps_complete_training_rows() {
        let (rows, train, _, meta) = run(Missing::Drop);
        assert_eq!(train.len() + meta.dropped_rows, rows.len());
        assert!(train.source_rows.iter().all(|r| r % 3 != 0));
        assert!(train.loss_mask.iter().all(|&m| m == 1));
    }

    #[test]
    fn the_split_follows_the_seed() {
        let faces = faces();
        let split = |seed| {
            let mut s = stage(Missing::Mask);
            s.config.seed = seed;
            s.split(&faces, &rules_of(&faces), &Console::silent()).unwrap().0
        };
        assert_eq!(split(1), split(1));
        assert_ne!(split(1), split(2));
    }

    #[test]
    fn unworkable_configurations_are_errors() {
        let faces = faces();
        let mut s = stage(Missing::Mask);
        s.config.val = 0.01;
        let error = s
            .split(&faces, &rules_of(&faces), &Console::silent())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`prepare.val`") && error.contains("both need rows"),
            "{error}"
        );

        let mut all_missing = faces.clone();
        for row in 0..10 {
            all_missing.coords[row * 4 + 2] = f32::NAN;
        }
        let s = stage(Missing::Drop);
        let (rows, val) = s
            .split(&all_missing, &rules_of(&all_missing), &Console::silent())
            .unwrap();
        let error = s
            .training_split(&all_missing, &rows, &val)
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"drop\" leaves no training rows"), "{error}");
        let s = stage(Missing::Median);
        let error = s
            .training_split(&all_missing, &rows, &val)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`b_x` has no label in the training split"),
            "{error}"
        );
    }
}
