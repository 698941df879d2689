use std::path::PathBuf;

use crate::stages::{StageError, StageKind};

#[derive(Debug, thiserror::Error)]
pub enum DagError {
    #[error("pipeline `{pipeline}`, stage [{stage}]: {source}")]
    Stage {
        pipeline: String,
        stage: StageKind,
        source: Box<StageError>,
    },
    #[error("pipeline `{pipeline}`: cannot read `{stage}.{role}` ({path}): {source}")]
    Input {
        pipeline: String,
        stage: StageKind,
        role: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache at {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("cannot refresh reports in {path}: {source}")]
    Reports { path: PathBuf, source: std::io::Error },
    #[error("pipeline `{pipeline}` has no [{stage}] stage (named by --until)")]
    UntilMissing { pipeline: String, stage: StageKind },
    #[error("pipeline `{pipeline}`: stage [{stage}] reads [{needs}], which the pipeline does not have")]
    MissingUpstream {
        pipeline: String,
        stage: StageKind,
        needs: StageKind,
    },
}
