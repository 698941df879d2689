//! Keys of `[eda]`.

use crate::config::TableReader;

crate::config_choice! {
    /// The plots `[eda]` can draw.
    pub enum PlotKind {
        Correlation = "correlation",
        Boxplot = "boxplot",
        Samples = "samples",
        MeanFace = "mean_face",
        Brightness = "brightness",
    }
}

pub const ALL_PLOTS: [PlotKind; 5] = [
    PlotKind::Correlation,
    PlotKind::Boxplot,
    PlotKind::Samples,
    PlotKind::MeanFace,
    PlotKind::Brightness,
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct EdaConfig {
    /// `plots`: which plots to draw (default: all).
    pub plots: Vec<PlotKind>,
    /// `samples`: faces in the sample grid (default 16, 1 to 64).
    pub samples: usize,
    /// `seed`: picks the sample faces (default 42).
    pub seed: u64,
}

impl EdaConfig {
    pub fn read(r: &mut TableReader) -> EdaConfig {
        EdaConfig {
            plots: r.choice_list("plots", &ALL_PLOTS),
            samples: r.usize_in("samples", 16, 1..=64),
            seed: r.u64("seed", 42),
        }
    }
}
