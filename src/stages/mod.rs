//! The stages of a pipeline. Each stage kind is one module with one job; all of them
//! implement [`Stage`], which is everything the DAG runner needs to know about them.

pub mod eda;
pub mod evaluate;
pub mod ingest;
pub mod prepare;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::console::Console;

/// The stage kinds fkp can run, in data-flow order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Ingest,
    Eda,
    Prepare,
    Train,
    Evaluate,
}

impl StageKind {
    pub const ALL: [StageKind; 4] = [
        StageKind::Ingest,
        StageKind::Eda,
        StageKind::Prepare,
        StageKind::Train,
    ];

    /// Tables that name stages designed but not yet part of this version.
    pub const PLANNED: [&'static str; 2] = ["evaluate", "report"];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::Ingest => "ingest",
            StageKind::Eda => "eda",
            StageKind::Prepare => "prepare",
            StageKind::Train => "train",
            StageKind::Evaluate => "evaluate",
        }
    }

    pub fn from_name(name: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The stages whose outputs this one reads.
    pub fn upstream(self) -> &'static [StageKind] {
        match self {
            StageKind::Ingest => &[],
            StageKind::Eda | StageKind::Prepare => &[StageKind::Ingest],
            StageKind::Train => &[StageKind::Prepare],
            StageKind::Evaluate => &[StageKind::Prepare, StageKind::Train],
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A file a stage reads, hashed by content for the cache key.
#[derive(Debug, Clone)]
pub struct FileInput {
    /// The config key that names it (`train`, `test`, ...).
    pub role: &'static str,
    pub path: PathBuf,
}

/// What a running stage is given.
pub struct StageContext<'a> {
    /// Machine-readable outputs go here; they become the cache entry's `data/`.
    pub data_dir: &'a Path,
    /// Human-facing outputs go here; they are copied to `reports/<pipeline>/`.
    pub report_dir: &'a Path,
    /// The `data/` folder of each upstream stage's cache entry.
    pub upstream: &'a BTreeMap<StageKind, PathBuf>,
    /// Survives a failed or killed run of this stage (same key), for resuming;
    /// removed once the stage succeeds. Created by the stage if it needs one.
    pub checkpoint_dir: &'a Path,
    pub console: &'a Console,
}

/// What a finished stage reports back.
#[derive(Debug, Default)]
pub struct StageOutcome {
    /// A human summary (tables), printed when the stage runs and kept in the manifest.
    pub summary: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Ingest(#[from] ingest::IngestError),
    #[error(transparent)]
    Eda(#[from] eda::EdaError),
    #[error(transparent)]
    Prepare(#[from] prepare::PrepareError),
    #[error(transparent)]
    Train(#[from] train::TrainStageError),
    #[error(transparent)]
    Evaluate(#[from] evaluate::EvaluateError),
}

pub trait Stage {
    fn kind(&self) -> StageKind;
    /// Bumped whenever the stage's code changes what it writes, so old entries go stale.
    fn version(&self) -> u32;
    /// The normalised configuration that goes into the cache key. Paths are left
    /// out: the content of the files they name goes in instead.
    fn config(&self) -> serde_json::Value;
    fn file_inputs(&self) -> Vec<FileInput>;
    /// The upstream output files (names under `data/`) this stage reads; their
    /// hashes, not all of the upstream's outputs, go into its key.
    fn reads(&self) -> &'static [&'static str];
    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError>;
}

/// The runnable stages of a pipeline, in data-flow order.
pub fn stages_of(pipeline: &Pipeline) -> Vec<Box<dyn Stage>> {
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    if let Some(config) = &pipeline.ingest {
        stages.push(Box::new(ingest::IngestStage::new(config.clone())));
    }
    if let Some(config) = &pipeline.eda {
        stages.push(Box::new(eda::EdaStage::new(config.clone())));
    }
    if let Some(config) = &pipeline.prepare {
        stages.push(Box::new(prepare::PrepareStage::new(config.clone())));
    }
    if let Some(config) = &pipeline.train {
        stages.push(Box::new(train::TrainStage::new(config.clone())));
    }
    if let Some(config) = &pipeline.evaluate {
        stages.push(Box::new(evaluate::EvaluateStage::new(config.clone())));
    }
    stages
}
