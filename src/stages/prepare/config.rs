//! Keys of `[prepare]`.

use std::path::PathBuf;

use crate::config::{Location, TableReader};

crate::config_choice! {
    /// What to do with missing labels in the training split.
    pub enum Missing {
        /// Keep only training rows with every label.
        Drop = "drop",
        /// Fill with the training split's mean of that coordinate.
        Mean = "mean",
        /// Fill with the training split's median of that coordinate.
        Median = "median",
        /// Keep them missing; the training loss ignores them.
        Mask = "mask",
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PrepareConfig {
    /// `missing`: "drop", "mean", "median" or "mask" (default "mask").
    pub missing: Missing,
    /// `val`: share of rows held out for validation, in (0, 1) (default 0.2).
    pub val: f64,
    /// `seed`: the split's seed (default 42).
    pub seed: u64,
    /// `val_file`: a labelled Kaggle-layout file to validate on instead of `val`.
    #[serde(skip)]
    pub val_file: Option<PathBuf>,
    /// Where `missing` and `val` are written, for errors found while running.
    #[serde(skip)]
    pub missing_at: Option<Location>,
    #[serde(skip)]
    pub split_at: Option<Location>,
}

impl PrepareConfig {
    pub fn read(r: &mut TableReader) -> PrepareConfig {
        let val = r.f64("val", 0.2);
        let val = if val > 0.0 && val < 1.0 {
            val
        } else {
            r.invalid(
                "val",
                format!("{val} is outside (0, 1): it is the share of rows held out"),
            );
            0.2
        };
        let val_file = r.path("val_file");
        if val_file.is_some() && r.states("val") {
            r.invalid(
                "val",
                "set either `val` (a share of the training file) or `val_file`, not both",
            );
        }
        PrepareConfig {
            missing: r.choice("missing", Missing::Mask),
            split_at: Some(r.location(if val_file.is_some() { "val_file" } else { "val" })),
            missing_at: Some(r.location("missing")),
            val,
            seed: r.u64("seed", 42),
            val_file,
        }
    }
}
