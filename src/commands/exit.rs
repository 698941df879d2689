//! How a command ends, as the process's exit status (README lists them):
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done (also when the reader of standard output went away: `fkp status \| head -1`) |
//! | 1 | failed: a stage, an input file, the cache, the remote, a lock held with `--no-wait` |
//! | 2 | the configuration is wrong: a pipeline file, `fkp.toml`, `--set`, or the arguments (clap's own status) |
//! | 3 | `fkp compare --fail-on-regression` found a regression |
//! | 128 + N | stopped by signal N: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP |
//!
//! An error's status comes from its type, through [`Error::code`]: every
//! wrapper of a configuration error says so ([`IsConfig`]), so a new wrapper
//! cannot turn status 2 into 1 unnoticed (the matches are exhaustive).

use std::path::PathBuf;

use crate::commands::compare::CompareError;
use crate::commands::export::ExportError;
use crate::commands::model::ModelSummaryError;
use crate::commands::predict::PredictError;
use crate::commands::serve::ServeError;
use crate::commands::watch::WatchError;
use crate::config::ConfigErrors;
use crate::dag::DagError;
use crate::dag::remote::RemoteError;
use crate::workspace::LockError;

/// A failure.
pub const FAILURE: u8 = 1;
/// A wrong configuration or wrong arguments (clap exits with 2 too).
pub const CONFIG: u8 = 2;
/// `--fail-on-regression` and a regression, as `scripts/ci-report.sh` expects.
pub const REGRESSION: u8 = 3;

/// How a command that did its work ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// `fkp compare --fail-on-regression` found regressions (after printing them).
    Regressions,
    /// Stopped by this signal, after saying what was kept.
    Signal(i32),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Regressions => REGRESSION,
            // The shell's convention: 128 + the signal's number.
            Exit::Signal(signal) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Run(#[from] DagError),
    #[error(transparent)]
    Predict(#[from] PredictError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Model(#[from] ModelSummaryError),
    #[error(transparent)]
    Compare(#[from] CompareError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("no remote cache: name one with --remote URL, FKP_REMOTE or [cache] remote in fkp.toml")]
    NoRemote,
    #[error("nothing was compared against {against} (--fail-on-regression): no pipeline is fully cached")]
    NothingCompared { against: PathBuf },
    #[error(
        "no pipelines to keep the entries of: {pipelines_dir} holds no *.toml and none were named; \
         name them (`fkp clean PIPELINE.toml...`) or delete {cache_dir} yourself"
    )]
    NothingToKeep {
        pipelines_dir: PathBuf,
        cache_dir: PathBuf,
    },
    /// The reader of standard output went away (`fkp status --json | head -1`):
    /// not a failure, and nothing to say.
    #[error("standard output was closed by its reader")]
    OutputClosed,
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The exit status this error ends the process with.
    pub fn code(&self) -> u8 {
        let config = match self {
            Error::OutputClosed => return 0,
            Error::Config(_) => true,
            Error::Run(error) => error.is_config(),
            Error::Predict(error) => error.is_config(),
            Error::Export(error) => error.is_config(),
            Error::Model(error) => error.is_config(),
            Error::Compare(error) => error.is_config(),
            Error::Serve(error) => error.is_config(),
            Error::Watch(_)
            | Error::Lock(_)
            | Error::Remote(_)
            | Error::Io { .. }
            | Error::NoRemote
            | Error::NothingCompared { .. }
            | Error::NothingToKeep { .. } => false,
        };
        if config { CONFIG } else { FAILURE }
    }

    /// The text to print after `error: `, with every cause; none for
    /// [`Error::OutputClosed`].
    pub fn message(&self) -> Option<String> {
        match self {
            Error::OutputClosed => None,
            error => Some(crate::text::error_chain(error)),
        }
    }
}

/// Whether an error is a wrong configuration (status 2), through the errors it wraps.
pub trait IsConfig {
    fn is_config(&self) -> bool;
}

impl IsConfig for DagError {
    fn is_config(&self) -> bool {
        match self {
            DagError::Config(_) => true,
            DagError::InReport { source, .. } => source.is_config(),
            DagError::Stage { .. }
            | DagError::Cancelled { .. }
            | DagError::Input { .. }
            | DagError::Cache { .. }
            | DagError::Reports { .. }
            | DagError::UntilMissing { .. }
            | DagError::MemberNotLoaded { .. }
            | DagError::Remote(_)
            | DagError::Several(_)
            | DagError::Job(_)
            | DagError::Submit { .. }
            | DagError::JobLeftNoEntry { .. }
            | DagError::NoSuchStage { .. }
            | DagError::JobMismatch { .. }
            | DagError::UpstreamNotBuilt { .. }
            | DagError::MissingUpstream { .. } => false,
        }
    }
}

impl IsConfig for PredictError {
    fn is_config(&self) -> bool {
        match self {
            PredictError::Dag(error) => error.is_config(),
            PredictError::Data(_)
            | PredictError::Train(_)
            | PredictError::NoModel(_)
            | PredictError::SeveralPipelines(_)
            | PredictError::NoLookup(_)
            | PredictError::NoImageIds { .. }
            | PredictError::Write { .. }
            | PredictError::OutputIsInput { .. }
            | PredictError::Image(_)
            | PredictError::SomeImagesFailed { .. } => false,
        }
    }
}

impl IsConfig for ServeError {
    fn is_config(&self) -> bool {
        match self {
            ServeError::WeakToken => true,
            ServeError::Listen { .. } | ServeError::Start(_) => false,
        }
    }
}

impl IsConfig for ExportError {
    fn is_config(&self) -> bool {
        match self {
            ExportError::Predict(error) => error.is_config(),
            ExportError::Onnx(_)
            | ExportError::Read { .. }
            | ExportError::MixedEnsemble { .. }
            | ExportError::OutputIsInput { .. }
            | ExportError::Write { .. } => false,
        }
    }
}

impl IsConfig for ModelSummaryError {
    fn is_config(&self) -> bool {
        match self {
            ModelSummaryError::Dag(error) => error.is_config(),
            ModelSummaryError::NoModel(_) | ModelSummaryError::NoSide(..) | ModelSummaryError::Shape(_) => {
                false
            }
        }
    }
}

impl IsConfig for CompareError {
    fn is_config(&self) -> bool {
        match self {
            CompareError::Dag(error) => error.is_config(),
            CompareError::Report(_)
            | CompareError::NothingToCompare(_)
            | CompareError::OutputNotAFolder(_)
            | CompareError::Against { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigErrors;

    fn config() -> DagError {
        DagError::Config(ConfigErrors(Vec::new()))
    }

    #[test]
    fn a_configuration_error_is_status_2_however_deeply_it_is_wrapped() {
        let wrapped = [
            Error::Config(ConfigErrors(Vec::new())),
            Error::Run(config()),
            Error::Run(DagError::InReport {
                member: "m".into(),
                report: "r".into(),
                file: "r.toml".into(),
                source: Box::new(config()),
            }),
            Error::Predict(PredictError::Dag(config())),
            Error::Export(ExportError::Predict(PredictError::Dag(config()))),
            Error::Model(ModelSummaryError::Dag(config())),
            Error::Compare(CompareError::Dag(config())),
        ];
        for error in wrapped {
            assert_eq!(error.code(), CONFIG, "{error:?}");
        }
    }

    #[test]
    fn other_failures_are_status_1_and_a_closed_output_is_no_failure() {
        let failures = [
            Error::Run(DagError::UntilMissing {
                pipeline: "p".into(),
                stage: crate::stages::StageKind::Eda,
            }),
            Error::Predict(PredictError::NoModel("p".into())),
            Error::Model(ModelSummaryError::NoModel("p".into())),
            Error::Lock(LockError::Busy {
                path: "lock".into(),
                holder: "fkp run".into(),
            }),
            Error::NoRemote,
            Error::io("cannot read the current directory", std::io::Error::other("gone")),
        ];
        for error in failures {
            assert_eq!(error.code(), FAILURE, "{error:?}");
            assert!(error.message().is_some());
        }
        assert_eq!(Error::OutputClosed.code(), 0);
        assert_eq!(Error::OutputClosed.message(), None);
    }

    #[test]
    fn a_finished_command_ends_with_its_status() {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        assert_eq!(Exit::Success.code(), 0);
        assert_eq!(Exit::Regressions.code(), REGRESSION);
        assert_eq!(Exit::Signal(SIGINT).code(), 130);
        assert_eq!(Exit::Signal(SIGTERM).code(), 143);
        assert_eq!(Exit::Signal(SIGHUP).code(), 129);
    }
}
