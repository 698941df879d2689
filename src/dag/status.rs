//! `fkp status`: each stage's state without running anything. The JSON form is a
//! stable schema (see docs/status-json.md); bump `SCHEMA` on any breaking change.

use std::path::PathBuf;

use serde::Serialize;

use super::DagError;
use super::graph::Graph;
use super::key::Change;
use super::resolve::{Resolver, State, StateName, Upstream};
use super::store::{OutputFile, Store, TIMING};
use crate::workspace::Workspace;

pub const SCHEMA: &str = "fkp.status/1";

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub schema: &'static str,
    #[serde(with = "crate::fsutil::lossy_path")]
    pub workspace: PathBuf,
    #[serde(with = "crate::fsutil::lossy_path")]
    pub cache_dir: PathBuf,
    pub pipelines: Vec<PipelineStatus>,
}

#[derive(Debug, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    #[serde(with = "crate::fsutil::lossy_path")]
    pub file: PathBuf,
    #[serde(with = "crate::fsutil::lossy_path")]
    pub reports_dir: PathBuf,
    pub stages: Vec<StageStatus>,
}

#[derive(Debug, Serialize)]
pub struct StageStatus {
    /// The node's label: the stage kind, plus `#<n>` for one of several instances.
    pub stage: String,
    pub state: StateName,
    /// Why it is not cached, in words; null when cached.
    pub reason: Option<String>,
    /// The same, one object per change; empty when cached or never built.
    pub changes: Vec<Change>,
    /// Null while an upstream stage is not built (the key depends on its output).
    pub key: Option<String>,
    /// The cache entry's folder; null when the key is unknown.
    #[serde(with = "crate::fsutil::lossy_path_option")]
    pub entry: Option<PathBuf>,
    /// The entry's `timing.json` (wall time; train's per-epoch speed); null
    /// unless cached.
    #[serde(with = "crate::fsutil::lossy_path_option")]
    pub timing: Option<PathBuf>,
    /// The files under the entry's `data/` (only when cached).
    #[serde(serialize_with = "lossy_paths")]
    pub outputs: Vec<PathBuf>,
    /// The epoch the next run starts with, resuming from the checkpoint a run
    /// stopped midway left (only when partial).
    pub resume_epoch: Option<usize>,
    /// That checkpoint's folder (shown by `-v`).
    #[serde(skip)]
    pub checkpoint: Option<PathBuf>,
}

fn lossy_paths<S: serde::Serializer>(paths: &[PathBuf], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(paths.iter().map(|p| p.to_string_lossy()))
}

/// Each stage's state. Reads only: creates nothing and writes nothing, so it
/// works on a read-only workspace and beside a running `fkp run`.
pub fn status(graph: &Graph, workspace: &Workspace) -> Result<StatusReport, DagError> {
    let store = Store::open_read_only(&workspace.cache_dir);
    let mut resolver = Resolver::new(&store, workspace);
    let mut built: Vec<Option<Vec<OutputFile>>> = vec![None; graph.nodes.len()];
    let mut pipelines = Vec::new();
    for (index, pipeline) in graph.pipelines.iter().enumerate() {
        let mut stages = Vec::new();
        for n in graph.nodes_of(index) {
            let node = &graph.nodes[n];
            let upstream = Upstream::of(graph, n, |d| built[d].as_deref());
            let resolution = match resolver.resolve(graph, n, upstream) {
                Ok(resolution) => resolution,
                // An unreadable input file is a state to show, not a reason to stop.
                Err(error @ DagError::Input { .. }) => {
                    stages.push(StageStatus {
                        stage: node.label.clone(),
                        state: StateName::Missing,
                        reason: Some(error.to_string()),
                        changes: Vec::new(),
                        key: None,
                        entry: None,
                        timing: None,
                        outputs: Vec::new(),
                        resume_epoch: None,
                        checkpoint: None,
                    });
                    continue;
                }
                Err(error) => return Err(error),
            };
            let entry = resolution.key.as_ref().map(|k| store.entry_dir(node.kind, k));
            let (changes, outputs, timing) = match &resolution.state {
                State::Cached(manifest) => {
                    built[n] = Some(manifest.outputs.clone());
                    let dir = entry.clone().unwrap_or_default();
                    (
                        Vec::new(),
                        manifest.outputs.iter().map(|o| dir.join(&o.path)).collect(),
                        Some(dir.join(TIMING)),
                    )
                }
                State::Stale(changes) => (changes.clone(), Vec::new(), None),
                State::Missing => (Vec::new(), Vec::new(), None),
            };
            let (mut state, mut reason) = (resolution.state.name(), resolution.state.reason());
            // A run stopped midway left a checkpoint of this very key: the next resumes it.
            let checkpoint = match (&resolution.state, &resolution.key) {
                (State::Cached(_), _) | (_, None) => None,
                (_, Some(key)) => Some(store.checkpoint_dir(node.kind, key)),
            };
            let resume = checkpoint
                .as_deref()
                .and_then(|dir| graph.stage(n).resume_point(dir));
            if let Some(point) = resume {
                state = StateName::Partial;
                reason = Some(match changes.is_empty() {
                    true => format!("a checkpoint after epoch {}: {point}", point.done),
                    false => format!(
                        "a checkpoint after epoch {}: {point}; {}",
                        point.done,
                        super::key::describe(&changes)
                    ),
                });
            }
            stages.push(StageStatus {
                stage: node.label.clone(),
                state,
                reason,
                changes,
                key: resolution.key,
                entry,
                timing,
                outputs,
                resume_epoch: resume.map(|point| point.next()),
                checkpoint: checkpoint.filter(|_| resume.is_some()),
            });
        }
        pipelines.push(PipelineStatus {
            name: pipeline.name.clone(),
            file: pipeline.file.clone(),
            reports_dir: workspace.report_dir(&pipeline.name),
            stages,
        });
    }
    Ok(StatusReport {
        schema: SCHEMA,
        workspace: workspace.root.clone(),
        cache_dir: workspace.cache_dir.clone(),
        pipelines,
    })
}

impl StatusReport {
    /// The text `fkp status` prints: per stage its state, short key and why it
    /// is not cached; with `verbose`, the entry's folder and output files (or
    /// the checkpoint a partial stage resumes from), relative to the workspace.
    pub fn to_text(&self, verbose: bool) -> String {
        let mut out = String::new();
        let width = self
            .pipelines
            .iter()
            .flat_map(|p| &p.stages)
            .map(|s| s.stage.len())
            .max()
            .unwrap_or(0)
            .max(10);
        let shown = |path: &PathBuf| {
            path.strip_prefix(&self.workspace)
                .unwrap_or(path)
                .display()
                .to_string()
        };
        for pipeline in &self.pipelines {
            out.push_str(&format!("{} ({})\n", pipeline.name, shown(&pipeline.file)));
            for stage in &pipeline.stages {
                let key = stage
                    .key
                    .as_deref()
                    .map_or("?".to_string(), |k| k[..12].to_string());
                out.push_str(&format!(
                    "  {:<width$} {:<8} {key:<12}",
                    stage.stage,
                    stage.state.as_str()
                ));
                if let Some(reason) = &stage.reason {
                    out.push_str(&format!("  {reason}"));
                }
                out.push('\n');
                if !verbose {
                    continue;
                }
                let indent = width + 4;
                let listed = match (&stage.checkpoint, stage.outputs.is_empty()) {
                    (Some(checkpoint), _) => vec![format!("checkpoint {}", shown(checkpoint))],
                    (None, false) => {
                        std::iter::once(stage.entry.as_ref().map(|e| format!("entry {}", shown(e))))
                            .flatten()
                            .chain(stage.outputs.iter().map(&shown))
                            .collect()
                    }
                    (None, true) => Vec::new(),
                };
                for line in listed {
                    out.push_str(&format!("{:indent$}{line}\n", ""));
                }
            }
        }
        out
    }
}
