//! Keys of `[evaluate]`.

use std::path::PathBuf;

use crate::config::TableReader;
use crate::training::Tta;

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvaluateConfig {
    /// `data`: a labelled Kaggle-layout file, scored on all its rows (optional).
    #[serde(skip)]
    pub data: Option<PathBuf>,
    /// `truth`: the fully labelled version of the ingested training file (its row
    /// i is ingested row i, e.g. faces15-train.csv.gz for the sparse file): the
    /// validation split is also scored against its labels (optional).
    #[serde(skip)]
    pub truth: Option<PathBuf>,
    /// `samples`: validation faces in the prediction grid (default 16, 1 to 64).
    pub samples: usize,
    /// `tta`: test-time augmentation, `["hflip"]` or none (default); the scores
    /// without it are kept too. `fkp predict` uses it unless `--no-tta`.
    pub tta: Vec<Tta>,
}

impl EvaluateConfig {
    pub fn read(r: &mut TableReader) -> EvaluateConfig {
        EvaluateConfig {
            data: r.path("data"),
            truth: r.path("truth"),
            samples: r.usize_in("samples", 16, 1..=64),
            tta: r.choice_list("tta", &[]),
        }
    }
}
