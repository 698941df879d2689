//! `metrics.json`: what the evaluate stage writes, and the report stage and
//! `fkp watch` read back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stages::train::TrainedModel;
use crate::training::Tta;

pub const METRICS_FILE: &str = "metrics.json";

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
/// `data` file. A set with no labelled point has no scores (`None`); the
/// validation split always has some (training needs them).
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

/// Why a `metrics.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsReadError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is damaged (not an evaluation's metrics): {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl MetricsReadError {
    /// The file is not there (yet): no evaluation, rather than a broken one.
    pub fn is_not_found(&self) -> bool {
        matches!(self, MetricsReadError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
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

    /// Reads a `metrics.json` (an evaluate entry's `data/metrics.json`).
    pub fn read(path: &Path) -> Result<Metrics, MetricsReadError> {
        let bytes = std::fs::read(path).map_err(|source| MetricsReadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| MetricsReadError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_not_found_and_a_damaged_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Metrics::read(&dir.path().join(METRICS_FILE)).unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
        assert!(missing.to_string().starts_with("cannot read "), "{missing}");

        let damaged = dir.path().join(METRICS_FILE);
        std::fs::write(&damaged, b"{\"model\": ").unwrap();
        let error = Metrics::read(&damaged).unwrap_err();
        assert!(matches!(error, MetricsReadError::Parse { .. }), "{error}");
        assert!(!error.is_not_found());
        let message = error.to_string();
        assert!(
            message.contains(&damaged.display().to_string()) && message.contains("damaged"),
            "{message}"
        );
    }

    #[test]
    fn a_folder_in_its_place_is_a_read_error_not_absence() {
        let dir = tempfile::tempdir().unwrap();
        let error = Metrics::read(dir.path()).unwrap_err();
        assert!(
            matches!(error, MetricsReadError::Read { .. }) && !error.is_not_found(),
            "{error}"
        );
    }
}
