//! The stages of a pipeline. Each stage kind is one module with one job; all of them
//! implement [`Stage`], which is everything the DAG runner needs to know about them.
//!
//! The registry is [`StageKind`]: one variant per stage kind, and [`StageKind::def`]
//! maps each to the [`StageDef`] its module declares (its table, the tables that
//! also configure it, the upstream files it reads and its reader). Config, graph,
//! store and CLI take every stage list from here, so adding a stage is one variant,
//! one match arm (the compiler asks for it) and one module.
//!
//! A reader returns zero or more instances of its stage: the trainings of a seed
//! ensemble get their own nodes and cache entries ([`Stage::instance`] names
//! them), and a stage reading their outputs gets all of them. The graph resolves a
//! stage's upstream in one place (`dag::graph`), where a stage reading other
//! pipelines' outputs plugs in.

pub mod eda;
pub mod evaluate;
pub mod ingest;
pub mod prepare;
pub mod report;
pub mod train;

use std::path::{Path, PathBuf};

use strum::IntoEnumIterator;

use crate::config::{ConfigError, Location, TableReader};
use crate::console::Console;
use crate::dag::Cancel;
use crate::dag::live::LiveLog;

/// The stage kinds fkp can run, in data-flow order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::EnumIter)]
pub enum StageKind {
    Ingest,
    Eda,
    Prepare,
    Train,
    Evaluate,
    Report,
}

/// What a stage module declares about its kind.
pub struct StageDef {
    /// Names the stage everywhere: its TOML table, `--until`, the cache folder.
    pub name: &'static str,
    /// Other tables that configure it (`[model]` is part of `[train]`'s configuration).
    pub also_configured_by: &'static [&'static str],
    /// The upstream outputs it reads: (stage, file under that entry's `data/`).
    /// Only these files' hashes go into its cache key, and only these can it open
    /// (through [`StageContext::upstream_file`]).
    pub reads: &'static [(StageKind, &'static str)],
    /// Whether `reads` come from the pipelines the stage lists (a report's
    /// members) rather than from its own pipeline.
    pub reads_members: bool,
    /// Kinds among `reads` that are read where the pipeline has them: one without
    /// them is no error (a report shows a data summary only for members with [eda]).
    pub optional_reads: &'static [StageKind],
    /// Reads its tables into stage instances. Errors are collected by the readers;
    /// an empty result means the configuration was too broken to build one.
    pub read: fn(&mut StageTables) -> Vec<Box<dyn Stage>>,
    /// Names a key of its normalised configuration ([`Stage::config`], given
    /// without the `<stage>.` in front) as a pipeline file writes it, for
    /// `fkp status` and the reasons a stage reruns: see [`key_name`].
    pub key_name: fn(&str) -> String,
}

impl StageKind {
    /// The registry: each kind's definition, kept beside its code.
    pub fn def(self) -> &'static StageDef {
        match self {
            StageKind::Ingest => &ingest::DEF,
            StageKind::Eda => &eda::DEF,
            StageKind::Prepare => &prepare::DEF,
            StageKind::Train => &train::DEF,
            StageKind::Evaluate => &evaluate::DEF,
            StageKind::Report => &report::DEF,
        }
    }

    /// Every kind, in data-flow order.
    pub fn all() -> impl Iterator<Item = StageKind> {
        StageKind::iter()
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn from_name(name: &str) -> Option<StageKind> {
        StageKind::all().find(|k| k.name() == name)
    }

    /// The stages whose outputs this one reads, in data-flow order.
    pub fn upstream(self) -> Vec<StageKind> {
        let mut kinds: Vec<StageKind> = self.def().reads.iter().map(|(kind, _)| *kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The upstream stages a pipeline must have for this one to run: all it reads
    /// but its [`StageDef::optional_reads`].
    pub fn required_upstream(self) -> Vec<StageKind> {
        let optional = self.def().optional_reads;
        self.upstream()
            .into_iter()
            .filter(|kind| !optional.contains(kind))
            .collect()
    }

    /// Whether a node label names an instance of this kind: `train`, or
    /// `train#seed-1` of an ensemble.
    pub fn matches_label(self, label: &str) -> bool {
        label
            .strip_prefix(self.name())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('#'))
    }

    /// The kind a node label names (`train#seed-1`: train).
    pub fn of_label(label: &str) -> Option<StageKind> {
        StageKind::all().find(|kind| kind.matches_label(label))
    }

    /// `ingest, eda, ...`: for messages that list the valid names.
    pub fn names() -> String {
        StageKind::all()
            .map(StageKind::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for StageKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for StageKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        StageKind::from_name(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown stage `{name}`")))
    }
}

/// Names a changed key of a stage's normalised configuration (`train.warmup_epochs`,
/// as run records and `fkp status --json` hold it) as the pipeline file writes
/// it: `` `[train.schedule] warmup_epochs` ``. Keys fkp adds itself are named in
/// words. A key of no known stage is shown as it is.
pub fn key_name(key: &str) -> String {
    let end = key.find(['.', '[']).unwrap_or(key.len());
    match StageKind::from_name(&key[..end]) {
        Some(kind) => (kind.def().key_name)(key[end..].trim_start_matches('.')),
        None => format!("`{key}`"),
    }
}

/// `` `[table.sub] key` `` for `rest` = `sub.key` of `table`: the objects in
/// front of the last key (or of the first array item) are sub-tables. The
/// default [`StageDef::key_name`], for stages that normalise their tables as written.
pub fn toml_key(table: &str, rest: &str) -> String {
    if rest.is_empty() {
        return format!("`[{table}]`");
    }
    let segments: Vec<&str> = rest.split('.').collect();
    let tables = segments
        .iter()
        .position(|segment| segment.contains('['))
        .unwrap_or(segments.len() - 1);
    let mut path = table.to_string();
    for segment in &segments[..tables] {
        path.push('.');
        path.push_str(segment);
    }
    format!("`[{path}] {}`", segments[tables..].join("."))
}

/// The tables a stage's reader gets: its own, and those of
/// [`StageDef::also_configured_by`] (absent ones as `None`), in that order.
pub struct StageTables<'a> {
    pub main: TableReader<'a>,
    pub also: Vec<Option<TableReader<'a>>>,
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
    /// Survives a failed or killed run of this stage (same key), for resuming;
    /// removed once the stage succeeds. Created by the stage if it needs one.
    pub checkpoint_dir: &'a Path,
    pub console: &'a Console,
    pub kind: StageKind,
    /// The `data/` folder of each upstream node's cache entry.
    pub upstream: &'a [UpstreamOutput],
    /// A long stage checks [`Cancel::now`] at safe points and returns early.
    pub cancel: &'a Cancel,
    /// Where a long stage says how far it is, for `fkp serve`.
    pub live: &'a LiveLog,
}

/// An upstream node's outputs, as a running stage sees them.
#[derive(Debug, Clone)]
pub struct UpstreamOutput {
    pub kind: StageKind,
    /// The pipeline the node belongs to (another one for a report).
    pub pipeline: String,
    /// The `data/` folder of its cache entry.
    pub data_dir: PathBuf,
}

impl StageContext<'_> {
    /// An upstream output file. Only files the stage declares in its `reads` can be
    /// opened, so its cache key cannot miss an input it uses.
    pub fn upstream_file(&self, kind: StageKind, name: &'static str) -> Result<PathBuf, UpstreamError> {
        match self.upstream_files(kind, name)?.as_slice() {
            [(_, path)] => Ok(path.clone()),
            found => Err(UpstreamError::Instances {
                stage: self.kind,
                upstream: kind,
                count: found.len(),
            }),
        }
    }

    /// The file of every upstream node of `kind` (one per member pipeline for a
    /// report), with the pipeline each belongs to, in graph order. Checked like
    /// [`StageContext::upstream_file`].
    pub fn upstream_files(
        &self,
        kind: StageKind,
        name: &'static str,
    ) -> Result<Vec<(&str, PathBuf)>, UpstreamError> {
        if !self.kind.def().reads.contains(&(kind, name)) {
            return Err(UpstreamError::Undeclared {
                stage: self.kind,
                upstream: kind,
                file: name,
            });
        }
        Ok(self
            .upstream
            .iter()
            .filter(|u| u.kind == kind)
            .map(|u| (u.pipeline.as_str(), u.data_dir.join(name)))
            .collect())
    }

    /// The volatile `timing.json` of every upstream node of `kind`: for showing
    /// only (it is in no key), so absent or unreadable ones are `None`.
    pub fn upstream_timing(&self, kind: StageKind) -> Vec<(&str, Option<serde_json::Value>)> {
        self.upstream
            .iter()
            .filter(|u| u.kind == kind)
            .map(|u| {
                let path = u
                    .data_dir
                    .parent()
                    .map(|entry| entry.join(crate::dag::TIMING_FILE));
                let timing = path
                    .and_then(|p| std::fs::read(p).ok())
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                (u.pipeline.as_str(), timing)
            })
            .collect()
    }
}

/// How far a stage stopped midway got: a training's epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Epochs done and checkpointed.
    pub done: usize,
    /// Epochs the stage runs in all.
    pub of: usize,
}

impl ResumePoint {
    /// The epoch the next run starts with.
    pub fn next(&self) -> usize {
        self.done + 1
    }
}

impl std::fmt::Display for ResumePoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.done < self.of {
            true => write!(f, "resumes at epoch {} of {}", self.next(), self.of),
            false => write!(f, "all {} epochs trained; the next run saves them", self.of),
        }
    }
}

/// What a finished stage reports back.
#[derive(Debug, Default)]
pub struct StageOutcome {
    /// What the stage found, in one line (rows ingested, RMSE and PCK): printed
    /// on its `done` line and kept in the manifest. Made only of outputs, never
    /// of timings, so that it is the same for the same inputs.
    pub headline: Option<String>,
    /// A human summary (tables), printed with `-v` when the stage runs and kept
    /// in the manifest. Exact too.
    pub summary: Option<String>,
    /// Volatile measurements (wall times, images/s), written to the entry's
    /// `timing.json`: exempt from exactness and never part of a key.
    pub timing: Option<serde_json::Value>,
    /// Wall seconds that earlier, interrupted runs spent on this entry (a
    /// resumed training's, up to its checkpoint): `timing.json`'s `seconds` is
    /// this run's plus these.
    pub earlier_seconds: f64,
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
    #[error(transparent)]
    Report(#[from] report::ReportStageError),
    /// Stopped before it started: a stop was requested ([`Cancel`]).
    #[error("cancelled before it started")]
    Cancelled,
}

/// Why [`StageContext::upstream_file`] refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("fkp bug: [{stage}] opened `{file}` of [{upstream}] without declaring it in its reads")]
    Undeclared {
        stage: StageKind,
        upstream: StageKind,
        file: &'static str,
    },
    #[error("[{stage}] reads one [{upstream}] but the pipeline has {count}")]
    Instances {
        stage: StageKind,
        upstream: StageKind,
        count: usize,
    },
}

/// A stage configuration as it goes into the cache key. Stage configurations
/// hold no paths (those are `#[serde(skip)]`: their files' content is hashed
/// instead) and only validated, finite numbers, so they always serialise.
pub fn key_config(config: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(config).expect("stage configurations hold only plain values")
}

pub trait Stage: Send + Sync {
    fn kind(&self) -> StageKind;
    /// Bumped whenever the stage's code changes what it writes, so old entries go stale.
    fn version(&self) -> u32;
    /// The normalised configuration that goes into the cache key. Paths are left
    /// out: the content of the files they name goes in instead.
    fn config(&self) -> serde_json::Value;
    fn file_inputs(&self) -> Vec<FileInput>;
    /// The network of a stage that trains one (`fkp model` reads it).
    fn model(&self) -> Option<&train::ModelConfig> {
        None
    }

    /// Names this instance among several of its kind in one pipeline (`seed-1`
    /// of an ensemble): its node is `<kind>#<instance>`, and its reports go to
    /// `reports/<pipeline>/<instance>/`.
    fn instance(&self) -> Option<String> {
        None
    }

    /// Whether a Slurm job building it asks for a GPU (`[executor] gpu_gres`).
    fn needs_gpu(&self) -> bool {
        false
    }

    /// What can be known to fail before anything runs (a device this machine
    /// lacks), checked by `fkp run` before the first stage starts.
    fn preflight(&self) -> Result<(), StageError> {
        Ok(())
    }
    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError>;
    /// Where a run of this stage would resume from what a run stopped midway
    /// left in `checkpoint_dir` (its key's): `None` when it would start over.
    /// Reads only.
    fn resume_point(&self, _checkpoint_dir: &Path) -> Option<ResumePoint> {
        None
    }
    /// Pipeline files whose outputs this stage reads besides its own pipeline's
    /// (a report's `pipelines`). The graph loads them first and links them back.
    fn member_files(&self) -> Vec<(PathBuf, Location)> {
        Vec::new()
    }
    /// Hands the stage its own pipeline and those of [`Stage::member_files`], in
    /// that order, before its key is computed.
    fn link_members(&mut self, _this: MemberInfo, _members: Vec<MemberInfo>) -> Result<(), ConfigError> {
        Ok(())
    }
    /// Documents rendered at publish time into the pipeline's report folder from
    /// the entry's `data/` and its volatile `timing.json` (which the entry's own
    /// files must not hold). Returns the files written, relative to `dir`.
    fn render_views(&self, _entry: &Path, _dir: &Path) -> Result<Vec<PathBuf>, StageError> {
        Ok(Vec::new())
    }
}

/// What a stage reading other pipelines knows of each: enough to describe it,
/// and all of it part of that stage's key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberInfo {
    pub name: String,
    pub description: Option<String>,
    /// Its tables with `extends` merged, as TOML (in the key by its hash, so a
    /// change is named in one short line).
    #[serde(skip)]
    pub toml: String,
    pub toml_blake3: String,
    /// Each stage's key configuration, by node label.
    pub stages: std::collections::BTreeMap<String, serde_json::Value>,
    /// Whether the pipeline itself reads other pipelines (is a report).
    #[serde(skip)]
    pub has_members: bool,
}

impl MemberInfo {
    /// The key configuration of the pipeline's stage of `kind` (its first
    /// instance: the trainings of an ensemble differ only in their seed).
    pub fn stage(&self, kind: StageKind) -> Option<&serde_json::Value> {
        self.stages
            .iter()
            .find(|(label, _)| kind.matches_label(label))
            .map(|(_, config)| config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_with_a_unique_name_and_earlier_upstream() {
        let names: Vec<&str> = StageKind::all().map(StageKind::name).collect();
        assert_eq!(names, ["ingest", "eda", "prepare", "train", "evaluate", "report"]);
        for kind in StageKind::all() {
            assert_eq!(StageKind::from_name(kind.name()), Some(kind));
            assert!(kind.matches_label(kind.name()) && kind.matches_label(&format!("{kind}#seed-1")));
            assert!(!kind.matches_label(&format!("{kind}s")));
            for upstream in kind.upstream() {
                assert!(upstream < kind, "{kind} reads {upstream}, which comes later");
            }
        }
    }

    #[test]
    fn keys_are_named_as_the_pipeline_file_writes_them() {
        for (key, name) in [
            ("ingest.on_bad_row", "`[ingest] on_bad_row`"),
            ("eda.plots[1]", "`[eda] plots[1]`"),
            ("train.epochs", "`[train] epochs`"),
            ("train.optimizer.lr", "`[train] lr`"),
            ("train.optimizer.kind", "`[train] optimizer`"),
            ("train.warmup_epochs", "`[train.schedule] warmup_epochs`"),
            ("train.schedule.kind", "`[train.schedule] kind`"),
            ("train.augment.hflip", "`[train.augment] hflip`"),
            ("train.early_stopping", "`[train.early_stopping]`"),
            (
                "train.early_stopping.patience",
                "`[train.early_stopping] patience`",
            ),
            (
                "train.model.graph.layers[3].filters",
                "`[model] layers[3].filters`",
            ),
            ("train.model.graph.channels", "`[model] channels`"),
            ("train.numerics", "fkp's numerics patches for [train]"),
            ("evaluate.tta[0]", "`[evaluate] tta[0]`"),
            ("report.sort_by", "`[report] sort_by`"),
            ("report.order[1]", "`[report] pipelines[1]`"),
            ("report.description", "`[pipeline] description`"),
            (
                "report.members.a.b.description",
                "`a.b`: `[pipeline] description`",
            ),
            (
                "report.members.lenet.stages.train#seed-1.optimizer.lr",
                "`lenet`: `[train] lr`",
            ),
            ("report.members.x.toml_blake3", "`x`: its pipeline file"),
            ("unknown.key", "`unknown.key`"),
        ] {
            assert_eq!(key_name(key), name, "{key}");
        }
    }

    #[test]
    fn only_declared_upstream_files_open() {
        let dir = PathBuf::from("/cache/entries/prepare/k/data");
        let upstream = [UpstreamOutput {
            kind: StageKind::Prepare,
            pipeline: "p".to_string(),
            data_dir: dir.clone(),
        }];
        let console = Console::silent();
        let ctx = StageContext {
            data_dir: Path::new("/d"),
            report_dir: Path::new("/r"),
            checkpoint_dir: Path::new("/c"),
            console: &console,
            kind: StageKind::Train,
            upstream: &upstream,
            cancel: &Cancel::default(),
            live: &LiveLog::off(),
        };
        assert_eq!(
            ctx.upstream_file(StageKind::Prepare, prepare::PREPARED_FILE)
                .unwrap(),
            dir.join(prepare::PREPARED_FILE)
        );
        let error = ctx
            .upstream_file(StageKind::Prepare, prepare::META_FILE)
            .unwrap_err();
        assert!(error.to_string().contains("without declaring it"), "{error}");
    }
}
