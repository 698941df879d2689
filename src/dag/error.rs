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
    /// `kept` says what the run leaves for the next one (filled in by the run).
    #[error("pipeline `{pipeline}`, stage [{stage}]: cancelled")]
    Cancelled {
        pipeline: String,
        stage: StageKind,
        kept: Box<super::runner::Kept>,
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
    #[error("fkp bug: report `{report}` lists {file}, which was not loaded before it")]
    MemberNotLoaded { report: String, file: PathBuf },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Remote(#[from] super::remote::RemoteError),
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
    #[error(
        "pipeline `{}`, stage [{}]: Slurm job {} ended {}; the end of its log {}:\n{}",
        .0.pipeline, .0.stage, .0.job, .0.state, .0.log.display(), .0.tail
    )]
    Job(Box<JobFailure>),
    #[error("pipeline `{pipeline}`, stage [{stage}]: cannot submit it to Slurm: {message}")]
    Submit {
        pipeline: String,
        stage: StageKind,
        message: String,
    },
    #[error(
        "pipeline `{pipeline}`, stage [{stage}]: its job ended but left no entry for key {key}: \
         did the job build another key? (its node's CPU kernels differ from this machine's, or a \
         pipeline file changed meanwhile; see docs/execution.md)"
    )]
    JobLeftNoEntry {
        pipeline: String,
        stage: StageKind,
        key: String,
    },
    #[error("pipeline `{pipeline}` has no stage [{label}] (fkp run-stage)")]
    NoSuchStage { pipeline: String, label: String },
    #[error(
        "pipeline `{pipeline}`, stage [{stage}]: sent to build {what} {sent}, but here it is {found}: \
         a pipeline or input file changed since it was submitted, or this machine's CPU kernels \
         differ from the submitting one's (see docs/execution.md)"
    )]
    JobMismatch {
        pipeline: String,
        stage: StageKind,
        what: &'static str,
        sent: String,
        found: String,
    },
    #[error("pipeline `{pipeline}`, stage [{stage}]: [{upstream}] has no entry yet (did its job fail?)")]
    UpstreamNotBuilt {
        pipeline: String,
        stage: StageKind,
        upstream: String,
    },
    #[error("pipeline `{pipeline}`: stage [{stage}] reads [{needs}], which the pipeline does not have")]
    MissingUpstream {
        pipeline: String,
        stage: StageKind,
        needs: StageKind,
    },
}

impl DagError {
    /// What a cancelled run kept, when this is (or lists) a cancellation.
    pub fn kept(&self) -> Option<&super::runner::Kept> {
        match self {
            DagError::Cancelled { kept, .. } => Some(kept),
            DagError::Several(errors) => errors.iter().find_map(DagError::kept),
            _ => None,
        }
    }

    /// The pipeline the error is about, when it is about one.
    pub fn pipeline(&self) -> Option<&str> {
        match self {
            DagError::Stage { pipeline, .. }
            | DagError::Cancelled { pipeline, .. }
            | DagError::Input { pipeline, .. }
            | DagError::UntilMissing { pipeline, .. }
            | DagError::Submit { pipeline, .. }
            | DagError::JobLeftNoEntry { pipeline, .. }
            | DagError::NoSuchStage { pipeline, .. }
            | DagError::JobMismatch { pipeline, .. }
            | DagError::UpstreamNotBuilt { pipeline, .. }
            | DagError::MissingUpstream { pipeline, .. } => Some(pipeline),
            DagError::Job(failure) => Some(&failure.pipeline),
            _ => None,
        }
    }
}

/// A Slurm job that ended without building its stage.
#[derive(Debug)]
pub struct JobFailure {
    pub pipeline: String,
    pub stage: StageKind,
    pub job: String,
    /// `FAILED`, `CANCELLED`, `TIMEOUT (...)`.
    pub state: String,
    pub log: PathBuf,
    /// The log's last lines.
    pub tail: String,
}
