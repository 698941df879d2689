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
    /// Stopped on request ([`super::Cancel`]): nothing half-written is left.
    #[error("pipeline `{pipeline}`, stage [{stage}]: cancelled")]
    Cancelled { pipeline: String, stage: StageKind },
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
    #[error("fkp bug: report `{report}` lists {file}, which was not loaded before it")]
    MemberNotLoaded { report: String, file: PathBuf },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    #[error("{source} (pipeline `{member}` is listed by report `{report}`, {file})")]
    InReport {
        member: String,
        report: String,
        file: PathBuf,
        source: Box<DagError>,
    },
    /// Several pipelines failed (without `--fail-fast`), each with its error.
    #[error("{} pipelines failed:{}", .0.len(), .0.iter().map(|e| format!("\n  - {}", crate::text::error_chain(e))).collect::<String>())]
    Several(Vec<DagError>),
    #[error("pipeline `{pipeline}`: stage [{stage}] reads [{needs}], which the pipeline does not have")]
    MissingUpstream {
        pipeline: String,
        stage: StageKind,
        needs: StageKind,
    },
}

impl DagError {
    /// The pipeline the error is about, when it is about one.
    pub fn pipeline(&self) -> Option<&str> {
        match self {
            DagError::Stage { pipeline, .. }
            | DagError::Cancelled { pipeline, .. }
            | DagError::Input { pipeline, .. }
            | DagError::UntilMissing { pipeline, .. }
            | DagError::MissingUpstream { pipeline, .. } => Some(pipeline),
            _ => None,
        }
    }
}
