//! Keys of `[ingest]`.

use std::path::PathBuf;

use crate::config::TableReader;
use crate::data::source::{Member, archive_members};

crate::config_choice! {
    /// What to do with a row that fails validation.
    pub enum OnBadRow {
        Error = "error",
        Skip = "skip",
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestConfig {
    /// `train`: the labelled Kaggle-layout file (required).
    #[serde(skip)]
    pub train: PathBuf,
    /// `test`: an unlabelled `ImageId,Image` file (optional; when `train` is Kaggle's
    /// competition archive, its `test.zip`).
    #[serde(skip)]
    pub test: Option<PathBuf>,
    /// `lookup`: Kaggle's IdLookupTable.csv (optional; when `train` is Kaggle's
    /// competition archive, its `IdLookupTable.csv`).
    #[serde(skip)]
    pub lookup: Option<PathBuf>,
    /// `on_bad_row`: "error" (default) or "skip".
    pub on_bad_row: OnBadRow,
    /// `coordinate_tolerance`: pixels a label may lie outside `[0, side)` (default 1.0).
    pub coordinate_tolerance: f64,
    /// `image_side`: the images' side in pixels (default: that of most rows' images).
    pub image_side: Option<usize>,
}

impl IngestConfig {
    pub fn read(r: &mut TableReader) -> IngestConfig {
        let train = r.required_path("train").unwrap_or_default();
        // Kaggle's competition archive, named as `train`, holds the other two files too.
        let archived = archive_members(&train);
        let in_archive = |member| archived.contains(&member).then(|| train.clone());
        IngestConfig {
            test: r.path("test").or_else(|| in_archive(Member::Test)),
            lookup: r.path("lookup").or_else(|| in_archive(Member::Lookup)),
            train,
            on_bad_row: r.choice("on_bad_row", OnBadRow::Error),
            coordinate_tolerance: r.f64_in("coordinate_tolerance", 1.0, 0.0..=f64::from(u16::MAX)),
            image_side: r
                .states("image_side")
                .then(|| r.usize_in("image_side", 96, 1..=4096)),
        }
    }
}
