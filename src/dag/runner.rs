//! `fkp run`: walks the graph in order, reusing cached entries and running the rest.
//! A real run holds the workspace lock; a dry run reads only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::DagError;
use super::graph::Graph;
use super::key::Change;
use super::resolve::{Resolver, State, Upstream};
use super::store::{DATA_DIR, Manifest, OutputFile, REPORT_DIR, Store};
use crate::console::Console;
use crate::fsutil;
use crate::stages::{StageContext, StageKind};
use crate::workspace::{Workspace, WorkspaceLock};

#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// `--force`: rerun every stage.
    pub force_all: bool,
    /// `--force-stage`: rerun these stages and everything downstream of them.
    pub force_stages: Vec<StageKind>,
    /// `--until`: run this stage and what it needs, nothing after.
    pub until: Option<StageKind>,
}

/// How one stage of one pipeline went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Cached,
    Ran,
    WouldRun,
}

#[derive(Debug, Default)]
pub struct RunReport {
    /// (pipeline name, stage, outcome), in the order they were visited.
    pub stages: Vec<(String, StageKind, Outcome)>,
    /// The `data/` folder of every stage that has an entry after the run.
    pub data_dirs: Vec<(String, StageKind, PathBuf)>,
}

impl RunReport {
    pub fn data_dir(&self, pipeline: &str, stage: StageKind) -> Option<&Path> {
        self.data_dirs
            .iter()
            .find(|(p, s, _)| p == pipeline && *s == stage)
            .map(|(_, _, dir)| dir.as_path())
    }
}

/// Runs what is not cached, under the workspace lock.
pub fn run(
    graph: &Graph,
    lock: &WorkspaceLock,
    options: &RunOptions,
    console: &Console,
) -> Result<RunReport, DagError> {
    let workspace = lock.workspace();
    let store = Store::open(&workspace.cache_dir).map_err(|source| DagError::Cache {
        path: workspace.cache_dir.clone(),
        source,
    })?;
    walk(graph, workspace, &store, options, Mode::Run, console)
}

/// Says what [`run`] would run and why; writes nothing, creates nothing.
pub fn dry_run(
    graph: &Graph,
    workspace: &Workspace,
    options: &RunOptions,
    console: &Console,
) -> Result<RunReport, DagError> {
    let store = Store::open_read_only(&workspace.cache_dir);
    walk(graph, workspace, &store, options, Mode::DryRun, console)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    DryRun,
}

fn walk(
    graph: &Graph,
    workspace: &Workspace,
    store: &Store,
    options: &RunOptions,
    mode: Mode,
    console: &Console,
) -> Result<RunReport, DagError> {
    let selected = select(graph, options.until)?;
    let forced = forced_nodes(graph, options);
    let mut resolver = Resolver::new(store);
    // Data folder and outputs of every node that has an entry by now.
    let mut data_dirs: Vec<Option<PathBuf>> = vec![None; graph.nodes.len()];
    let mut outputs: Vec<Option<Vec<OutputFile>>> = vec![None; graph.nodes.len()];
    // Keys built earlier in this invocation, with the pipeline that built them.
    let mut built_now: HashMap<String, String> = HashMap::new();
    let mut report = RunReport::default();
    let cache_error = |source| DagError::Cache {
        path: store.root().to_path_buf(),
        source,
    };

    let mut result = Ok(());
    for (index, pipeline) in graph.pipelines.iter().enumerate() {
        console.status(&format!("{} ({})", pipeline.name, pipeline.file.display()));
        // Whatever happens to a stage, what the pipeline's earlier stages did is recorded.
        result = (|| -> Result<(), DagError> {
            for n in graph.nodes_of(index).filter(|&n| selected[n]) {
                let node = &graph.nodes[n];
                let kind = node.kind;
                let upstream = Upstream::of(graph, n, &outputs);
                let resolution = resolver.resolve(graph, n, upstream)?;
                let shared_with = resolution.key.as_ref().and_then(|k| built_now.get(k)).cloned();
                let reason = match (&resolution.state, forced[n] && shared_with.is_none()) {
                    (_, true) => Some(vec![Change::Forced]),
                    (State::Cached(_), false) => None,
                    (State::Stale(changes), false) => Some(changes.clone()),
                    (State::Missing, false) => Some(Vec::new()),
                };
                let key_text = resolution.key.as_deref().map_or("?".to_string(), short);
                // What the record keeps: the inputs as they are now (paths included).
                let inputs_now = resolution.inputs.clone();
                let manifest: Manifest = match (reason, resolution.state) {
                    (None, State::Cached(manifest)) => {
                        let note = shared_with.map_or(String::new(), |p| format!(" (shared with `{p}`)"));
                        console.status(&format!("  {:<10} cached   {key_text}{note}", node.label));
                        report.stages.push((pipeline.name.clone(), kind, Outcome::Cached));
                        *manifest
                    }
                    (Some(changes), _) if mode == Mode::DryRun => {
                        console.status(&format!(
                            "  {:<10} would run {key_text}: {}",
                            node.label,
                            describe(&changes)
                        ));
                        report
                            .stages
                            .push((pipeline.name.clone(), kind, Outcome::WouldRun));
                        continue;
                    }
                    (Some(changes), _) => {
                        let (Some(inputs), Some(key)) = (resolution.inputs, resolution.key) else {
                            unreachable!("a stage runs only after its upstream outputs exist");
                        };
                        console.status(&format!(
                            "  {:<10} running  {}: {}",
                            node.label,
                            short(&key),
                            describe(&changes)
                        ));
                        let started = Instant::now();
                        let upstream_dirs: Vec<(StageKind, PathBuf)> = node
                            .deps
                            .iter()
                            .filter_map(|&d| {
                                data_dirs[d]
                                    .as_ref()
                                    .map(|dir| (graph.nodes[d].kind, dir.clone()))
                            })
                            .collect();
                        let pending = store.begin(kind, &key).map_err(cache_error)?;
                        let checkpoint_dir = store.checkpoint_dir(kind, &key);
                        if forced[n] && checkpoint_dir.exists() {
                            // A forced rerun starts over rather than resuming.
                            std::fs::remove_dir_all(&checkpoint_dir).map_err(cache_error)?;
                        }
                        let ctx = StageContext {
                            data_dir: &pending.data_dir(),
                            report_dir: &pending.report_dir(),
                            checkpoint_dir: &checkpoint_dir,
                            console,
                            kind,
                            upstream: &upstream_dirs,
                        };
                        let outcome = graph.stage(n).run(&ctx).map_err(|source| DagError::Stage {
                            pipeline: pipeline.name.clone(),
                            stage: kind,
                            source: Box::new(source),
                        })?;
                        let manifest = store
                            .commit(
                                pending,
                                inputs,
                                outcome.summary,
                                outcome.timing,
                                started.elapsed(),
                                &pipeline.name,
                            )
                            .map_err(cache_error)?;
                        if checkpoint_dir.exists() {
                            std::fs::remove_dir_all(&checkpoint_dir).map_err(cache_error)?;
                        }
                        console.status(&format!(
                            "  {:<10} done     in {:.2} s",
                            node.label,
                            started.elapsed().as_secs_f64()
                        ));
                        if let Some(summary) = &manifest.summary {
                            console.result(summary);
                        }
                        built_now.insert(key, pipeline.name.clone());
                        report.stages.push((pipeline.name.clone(), kind, Outcome::Ran));
                        manifest
                    }
                    (None, _) => unreachable!("only a cached stage has no reason to run"),
                };
                let entry = store.entry_dir(kind, &manifest.key);
                if mode == Mode::Run {
                    let reports = workspace.report_dir(&pipeline.name);
                    let record = resolver.record(&pipeline.name);
                    let previous = record.published.get(&node.label).cloned().unwrap_or_default();
                    let published = fsutil::publish_tree(&entry.join(REPORT_DIR), &reports, &previous)
                        .map_err(|source| DagError::Reports {
                            path: reports,
                            source,
                        })?;
                    record.published.insert(node.label.clone(), published);
                    if let Some(inputs) = inputs_now {
                        record.stages.insert(node.label.clone(), inputs);
                    }
                }
                data_dirs[n] = Some(entry.join(DATA_DIR));
                report
                    .data_dirs
                    .push((pipeline.name.clone(), kind, entry.join(DATA_DIR)));
                outputs[n] = Some(manifest.outputs);
            }
            Ok(())
        })();
        if mode == Mode::Run {
            if result.is_ok() {
                forget_removed_stages(graph, index, workspace, &mut resolver)?;
            }
            resolver.record(&pipeline.name).file = pipeline.file.clone();
            resolver.save_record(&pipeline.name)?;
        }
        if result.is_err() {
            break;
        }
    }
    if mode == Mode::Run {
        resolver.save_hashes()?;
    }
    result.map(|()| report)
}

/// Drops from a pipeline's record the stages it no longer has, with the report
/// files they had published.
fn forget_removed_stages(
    graph: &Graph,
    pipeline: usize,
    workspace: &Workspace,
    resolver: &mut Resolver,
) -> Result<(), DagError> {
    let name = &graph.pipelines[pipeline].name;
    let labels: Vec<&str> = graph
        .nodes_of(pipeline)
        .map(|n| graph.nodes[n].label.as_str())
        .collect();
    let record = resolver.record(name);
    record.stages.retain(|label, _| labels.contains(&label.as_str()));
    let gone: Vec<String> = record
        .published
        .keys()
        .filter(|label| !labels.contains(&label.as_str()))
        .cloned()
        .collect();
    let reports = workspace.report_dir(name);
    for label in gone {
        let files = record.published.remove(&label).unwrap_or_default();
        fsutil::publish_tree(Path::new(""), &reports, &files).map_err(|source| DagError::Reports {
            path: reports.clone(),
            source,
        })?;
    }
    Ok(())
}

fn short(key: &str) -> String {
    key[..12.min(key.len())].to_string()
}

fn describe(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "never built".to_string();
    }
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Which nodes `--until` keeps: the named stage and its ancestors, per pipeline.
fn select(graph: &Graph, until: Option<StageKind>) -> Result<Vec<bool>, DagError> {
    let Some(until) = until else {
        return Ok(vec![true; graph.nodes.len()]);
    };
    let mut selected = vec![false; graph.nodes.len()];
    for (index, pipeline) in graph.pipelines.iter().enumerate() {
        let targets: Vec<usize> = graph
            .nodes_of(index)
            .filter(|&n| graph.nodes[n].kind == until)
            .collect();
        if targets.is_empty() {
            return Err(DagError::UntilMissing {
                pipeline: pipeline.name.clone(),
                stage: until,
            });
        }
        for target in targets {
            for n in graph.with_ancestors(target) {
                selected[n] = true;
            }
        }
    }
    Ok(selected)
}

/// Nodes forced by `--force` or `--force-stage`, and everything downstream of them.
fn forced_nodes(graph: &Graph, options: &RunOptions) -> Vec<bool> {
    let mut forced = vec![false; graph.nodes.len()];
    // Nodes are in topological order, so one pass propagates downstream.
    for (n, node) in graph.nodes.iter().enumerate() {
        forced[n] = options.force_all
            || options.force_stages.contains(&node.kind)
            || node.deps.iter().any(|&d| forced[d]);
    }
    forced
}
