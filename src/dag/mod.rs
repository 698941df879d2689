//! The cached DAG: the graph of stages, cache keys, the content-addressed store,
//! and the commands that walk it (`run`, `status`, `clean`).

mod build;
mod cancel;
pub mod clean;
mod error;
mod graph;
mod hashing;
mod key;
pub mod live;
mod load;
pub mod remote;
mod resolve;
pub mod run_stage;
pub mod runner;
mod slurm;
pub mod status;
mod store;
mod transfer;

pub use cancel::{Cancel, RunningStage, Stop};
pub use error::DagError;
pub use graph::Graph;
pub use key::Change;
pub use resolve::StateName;
pub use run_stage::{StageJob, run_stage};
pub use runner::{Kept, Outcome, RunOptions, RunReport, dry_run, run};
pub use slurm::SlurmRun;
pub use status::{StatusReport, status};
pub use store::{DATA_DIR, REPORT_DIR, TIMING as TIMING_FILE, Timing};
pub use transfer::{Transfer, pull, push};
