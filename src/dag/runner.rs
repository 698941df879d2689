//! `fkp run`: walks the graph in order, reusing cached entries and running the rest.
//! A real run holds the workspace lock; a dry run reads only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::DagError;
use super::cancel::{Cancel, RunningStage};
use super::graph::Graph;
use super::key::{Change, KeyInputs};
use super::resolve::{Resolver, State, Upstream};
use super::store::{DATA_DIR, Manifest, OutputFile, REPORT_DIR, Store};
use crate::console::Console;
use crate::fsutil;
use crate::stages::{StageContext, StageError, StageKind, UpstreamOutput};
use crate::workspace::{Workspace, WorkspaceLock};

#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// `--force`: rerun every stage.
    pub force_all: bool,
    /// `--force-stage`: rerun these stages and everything downstream of them.
    pub force_stages: Vec<StageKind>,
    /// `--until`: run this stage and what it needs, nothing after.
    pub until: Option<StageKind>,
    /// Lets another thread stop the run between stages or inside a stage.
    pub cancel: Cancel,
    /// `--fail-fast`: stop at the first pipeline that fails. Otherwise the
    /// others go on (but a report of the failed one), and the error lists
    /// every failure.
    pub fail_fast: bool,
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
        self.data_dirs_of(pipeline, stage).into_iter().next()
    }

    /// The `data/` folder of every instance of a stage (each training of a seed
    /// ensemble), in graph order.
    pub fn data_dirs_of(&self, pipeline: &str, stage: StageKind) -> Vec<&Path> {
        self.data_dirs
            .iter()
            .filter(|(p, s, _)| p == pipeline && *s == stage)
            .map(|(_, _, dir)| dir.as_path())
            .collect()
    }
}

/// Runs what is not cached, under the workspace lock. Every input file and
/// every stage's own preconditions are checked first, so a typo in the last
/// stage's input is found before the first stage runs.
pub fn run(
    graph: &Graph,
    lock: &WorkspaceLock,
    options: &RunOptions,
    console: &Console,
) -> Result<RunReport, DagError> {
    let workspace = lock.workspace();
    let selected = select(graph, options.until)?;
    preflight(graph, &selected).map_err(|e| graph.in_report_context(e))?;
    let cache_error = |source| DagError::Cache {
        path: workspace.cache_dir.clone(),
        source,
    };
    let store = Store::open(&workspace.cache_dir).map_err(cache_error)?;
    // Holding the lock, what killed runs left in tmp/ can go.
    for dir in store.abandoned_temp_dirs().map_err(cache_error)? {
        std::fs::remove_dir_all(&dir).map_err(cache_error)?;
    }
    Walk::new(graph, workspace, &store, options, selected, Mode::Run, console).all()
}

/// Says what [`run`] would run and why; writes nothing, creates nothing.
pub fn dry_run(
    graph: &Graph,
    workspace: &Workspace,
    options: &RunOptions,
    console: &Console,
) -> Result<RunReport, DagError> {
    let store = Store::open_read_only(&workspace.cache_dir);
    let selected = select(graph, options.until)?;
    Walk::new(graph, workspace, &store, options, selected, Mode::DryRun, console).all()
}

/// Checks, before anything runs, that every input file of the selected stages is
/// a readable regular file and that each stage can run here at all.
fn preflight(graph: &Graph, selected: &[bool]) -> Result<(), DagError> {
    for (n, node) in graph.nodes.iter().enumerate().filter(|(n, _)| selected[*n]) {
        let pipeline = &graph.pipelines[node.pipeline].name;
        let stage = graph.stage(n);
        for input in stage.file_inputs() {
            let problem = match std::fs::metadata(&input.path) {
                Ok(meta) if meta.is_file() => std::fs::File::open(&input.path).err(),
                Ok(_) => Some(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is not a regular file",
                )),
                Err(error) => Some(error),
            };
            if let Some(source) = problem {
                return Err(DagError::Input {
                    pipeline: pipeline.clone(),
                    stage: node.kind,
                    role: input.role.to_string(),
                    path: input.path,
                    source,
                });
            }
        }
        stage.preflight().map_err(|source| DagError::Stage {
            pipeline: pipeline.clone(),
            stage: node.kind,
            source: Box::new(source),
        })?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    DryRun,
}

/// One walk over the graph and what it has found so far.
struct Walk<'a> {
    graph: &'a Graph,
    workspace: &'a Workspace,
    store: &'a Store,
    mode: Mode,
    console: &'a Console,
    selected: Vec<bool>,
    forced: Vec<bool>,
    cancel: Cancel,
    fail_fast: bool,
    /// Stage labels are padded to this, so an ensemble's keeps the columns.
    label_width: usize,
    resolver: Resolver<'a>,
    /// The `data/` folder and outputs of every node that has an entry by now.
    data_dirs: Vec<Option<PathBuf>>,
    outputs: Vec<Option<Vec<OutputFile>>>,
    /// Keys built earlier in this invocation, with the pipeline that built them.
    built_now: HashMap<String, String>,
    report: RunReport,
}

impl<'a> Walk<'a> {
    fn new(
        graph: &'a Graph,
        workspace: &'a Workspace,
        store: &'a Store,
        options: &RunOptions,
        selected: Vec<bool>,
        mode: Mode,
        console: &'a Console,
    ) -> Self {
        Walk {
            graph,
            workspace,
            store,
            mode,
            console,
            selected,
            forced: forced_nodes(graph, options),
            cancel: options.cancel.clone(),
            fail_fast: options.fail_fast,
            label_width: graph.label_width(),
            resolver: Resolver::new(store, workspace),
            data_dirs: vec![None; graph.nodes.len()],
            outputs: vec![None; graph.nodes.len()],
            built_now: HashMap::new(),
            report: RunReport::default(),
        }
    }

    /// Runs every pipeline in order. One that fails does not stop the others
    /// (unless `fail_fast`), but a report reading it is skipped; the error then
    /// lists every failure.
    fn all(mut self) -> Result<RunReport, DagError> {
        let graph = self.graph;
        let mut failed: Vec<usize> = Vec::new();
        let mut errors: Vec<DagError> = Vec::new();
        for index in 0..graph.pipelines.len() {
            if let Some(&member) = failed.iter().find(|&&f| graph.reports_of(f).contains(&index)) {
                self.console.status(&format!(
                    "{} ({}): skipped: it reads pipeline `{}`, which failed",
                    graph.pipelines[index].name,
                    graph.pipelines[index].file.display(),
                    graph.pipelines[member].name
                ));
                failed.push(index);
                continue;
            }
            let Err(error) = self.pipeline(index) else {
                continue;
            };
            // A cancelled run is an interrupted one, not a failed one: like a
            // killed run, it leaves the reports as they were.
            if matches!(error, DagError::Cancelled { .. }) {
                errors.push(error);
                break;
            }
            if self.mode == Mode::Run {
                self.withdraw_reports_of(index)?;
            }
            // A broken cache or reports folder stops everything; so does --fail-fast.
            let stop = self.fail_fast || error.pipeline().is_none();
            errors.push(graph.in_report_context(error));
            failed.push(index);
            if stop {
                break;
            }
        }
        if self.mode == Mode::Run {
            self.resolver.save_hashes()?;
        }
        match errors.len() {
            0 => Ok(self.report),
            1 => Err(errors.remove(0)),
            _ => Err(DagError::Several(errors)),
        }
    }

    fn pipeline(&mut self, index: usize) -> Result<(), DagError> {
        let pipeline = &self.graph.pipelines[index];
        self.console
            .status(&format!("{} ({})", pipeline.name, pipeline.file.display()));
        if self.mode == Mode::Run {
            self.resolver.record(&pipeline.name).file = pipeline.file.clone();
        }
        let nodes: Vec<usize> = self.graph.nodes_of(index).filter(|&n| self.selected[n]).collect();
        for n in nodes {
            if let Err(error) = self.node(n) {
                if self.mode == Mode::Run && !matches!(error, DagError::Cancelled { .. }) {
                    // Reports of a stage that failed, and of those after it, would
                    // show results of another configuration: they go.
                    self.unpublish_from(n)?;
                }
                return Err(error);
            }
        }
        if self.mode == Mode::Run {
            self.forget_removed_stages(index)?;
        }
        Ok(())
    }

    /// Resolves one node, runs it unless it is cached, and publishes its reports.
    fn node(&mut self, n: usize) -> Result<(), DagError> {
        let (graph, console) = (self.graph, self.console);
        let node = &graph.nodes[n];
        let pipeline = &graph.pipelines[node.pipeline];
        if self.mode == Mode::Run && self.cancel.stop_requested() {
            return Err(DagError::Cancelled {
                pipeline: pipeline.name.clone(),
                stage: node.kind,
            });
        }
        let upstream = Upstream::of(graph, n, &self.outputs);
        let resolution = self.resolver.resolve(graph, n, upstream)?;
        let shared_with = resolution
            .key
            .as_ref()
            .and_then(|k| self.built_now.get(k))
            .cloned();
        let reason = match (&resolution.state, self.forced[n] && shared_with.is_none()) {
            (_, true) => Some(vec![Change::Forced]),
            (State::Cached(_), false) => None,
            (State::Stale(changes), false) => Some(changes.clone()),
            (State::Missing, false) => Some(Vec::new()),
        };
        let key_text = resolution.key.as_deref().map_or("?".to_string(), short);
        let manifest = match (reason, resolution.state) {
            (None, State::Cached(manifest)) => {
                let note = shared_with.map_or(String::new(), |p| format!(" (shared with `{p}`)"));
                console.status(&format!(
                    "  {:<w$} cached   {key_text}{note}",
                    node.label,
                    w = self.label_width
                ));
                self.report
                    .stages
                    .push((pipeline.name.clone(), node.kind, Outcome::Cached));
                *manifest
            }
            (Some(changes), _) if self.mode == Mode::DryRun => {
                console.status(&format!(
                    "  {:<w$} would run {key_text}: {}",
                    node.label,
                    describe(&changes),
                    w = self.label_width
                ));
                self.report
                    .stages
                    .push((pipeline.name.clone(), node.kind, Outcome::WouldRun));
                return Ok(());
            }
            (Some(changes), _) => {
                let (Some(inputs), Some(key)) = (resolution.inputs.clone(), resolution.key) else {
                    unreachable!("a stage runs only after its upstream outputs exist");
                };
                self.build(n, inputs, key, &changes)?
            }
            (None, _) => unreachable!("only a cached stage has no reason to run"),
        };
        let entry = self.store.entry_dir(node.kind, &manifest.key);
        if self.mode == Mode::Run {
            self.publish(n, &entry, resolution.inputs)?;
        }
        self.data_dirs[n] = Some(entry.join(DATA_DIR));
        self.report
            .data_dirs
            .push((pipeline.name.clone(), node.kind, entry.join(DATA_DIR)));
        self.outputs[n] = Some(manifest.outputs);
        Ok(())
    }

    /// Runs a stage into a pending entry and commits it.
    fn build(
        &mut self,
        n: usize,
        inputs: KeyInputs,
        key: String,
        changes: &[Change],
    ) -> Result<Manifest, DagError> {
        let (graph, store, console) = (self.graph, self.store, self.console);
        let node = &graph.nodes[n];
        let pipeline = &graph.pipelines[node.pipeline];
        let cache_error = |source| DagError::Cache {
            path: store.root().to_path_buf(),
            source,
        };
        console.status(&format!(
            "  {:<w$} running  {}: {}",
            node.label,
            short(&key),
            describe(changes),
            w = self.label_width
        ));
        let started = Instant::now();
        let upstream: Vec<UpstreamOutput> = node
            .deps
            .iter()
            .filter_map(|&d| {
                self.data_dirs[d].clone().map(|data_dir| UpstreamOutput {
                    kind: graph.nodes[d].kind,
                    pipeline: graph.pipelines[graph.nodes[d].pipeline].name.clone(),
                    data_dir,
                })
            })
            .collect();
        let pending = store.begin(node.kind, &key).map_err(cache_error)?;
        let checkpoint_dir = store.checkpoint_dir(node.kind, &key);
        if self.forced[n] && checkpoint_dir.exists() {
            // A forced rerun starts over rather than resuming.
            store.remove_entry(&checkpoint_dir).map_err(cache_error)?;
        }
        let ctx = StageContext {
            data_dir: &pending.data_dir(),
            report_dir: &pending.report_dir(),
            checkpoint_dir: &checkpoint_dir,
            console,
            kind: node.kind,
            upstream: &upstream,
            cancel: &self.cancel,
        };
        let may_run = self.cancel.begin_stage(RunningStage {
            pipeline: pipeline.name.clone(),
            label: node.label.clone(),
            key: key.clone(),
        });
        let outcome = match may_run {
            true => graph.stage(n).run(&ctx),
            false => Err(StageError::Cancelled),
        };
        self.cancel.end_stage();
        if outcome.is_err() {
            // A stage stopped before its first checkpoint leaves no empty folder.
            let _ = std::fs::remove_dir(&checkpoint_dir);
        }
        let outcome = outcome.map_err(|source| {
            if self.cancel.now() || matches!(source, StageError::Cancelled) {
                // The pending entry goes with `pending`; a checkpoint stays for a resume.
                console.status(&format!("  {:<w$} cancelled", node.label, w = self.label_width));
                DagError::Cancelled {
                    pipeline: pipeline.name.clone(),
                    stage: node.kind,
                }
            } else {
                DagError::Stage {
                    pipeline: pipeline.name.clone(),
                    stage: node.kind,
                    source: Box::new(source),
                }
            }
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
            store.remove_entry(&checkpoint_dir).map_err(cache_error)?;
        }
        console.status(&format!(
            "  {:<w$} done     in {:.2} s",
            node.label,
            started.elapsed().as_secs_f64(),
            w = self.label_width
        ));
        if let Some(summary) = &manifest.summary {
            console.result(summary);
        }
        self.built_now.insert(key, pipeline.name.clone());
        self.report
            .stages
            .push((pipeline.name.clone(), node.kind, Outcome::Ran));
        Ok(manifest)
    }

    /// Copies an entry's reports to `reports/<pipeline>/` and records, at once,
    /// what the stage used and published: a run killed later still knows what
    /// to remove next time.
    fn publish(&mut self, n: usize, entry: &Path, inputs: Option<KeyInputs>) -> Result<(), DagError> {
        let node = &self.graph.nodes[n];
        let name = &self.graph.pipelines[node.pipeline].name;
        let reports = self.workspace.report_dir(name);
        let record = self.resolver.record(name);
        let previous = record.published.get(&node.label).cloned().unwrap_or_default();
        let reports_error = |source| DagError::Reports {
            path: reports.clone(),
            source,
        };
        // One of several instances (a member of a seed ensemble) publishes into
        // its own folder; the record keeps paths relative to `reports`.
        let folder = PathBuf::from(self.graph.stage(n).instance().unwrap_or_default());
        let previous: Vec<PathBuf> = previous
            .iter()
            .filter_map(|p| p.strip_prefix(&folder).ok().map(Path::to_path_buf))
            .collect();
        let target = reports.join(&folder);
        let mut published =
            fsutil::publish_tree(&entry.join(REPORT_DIR), &target, &previous).map_err(reports_error)?;
        let views = self
            .graph
            .stage(n)
            .render_views(entry, &target)
            .map_err(|source| DagError::Stage {
                pipeline: name.clone(),
                stage: node.kind,
                source: Box::new(source),
            })?;
        published.extend(views);
        let mut published: Vec<PathBuf> = published.iter().map(|p| folder.join(p)).collect();
        published.sort();
        published.dedup();
        record.published.insert(node.label.clone(), published);
        if let Some(inputs) = inputs {
            record.stages.insert(node.label.clone(), inputs);
        }
        self.resolver.save_record(name)
    }

    /// Removes the published reports of node `n` and of every node after it in
    /// its pipeline.
    fn unpublish_from(&mut self, n: usize) -> Result<(), DagError> {
        let graph = self.graph;
        let pipeline = graph.nodes[n].pipeline;
        let labels: Vec<String> = graph
            .nodes_of(pipeline)
            .filter(|&m| graph.with_ancestors(m).contains(&n))
            .map(|m| graph.nodes[m].label.clone())
            .collect();
        self.unpublish(pipeline, &labels)
    }

    /// Removes the published reports of every stage reading pipeline `failed`:
    /// they would show numbers this run could not bring up to date.
    fn withdraw_reports_of(&mut self, failed: usize) -> Result<(), DagError> {
        let graph = self.graph;
        let readers: Vec<usize> = (0..graph.nodes.len())
            .filter(|&n| {
                let node = &graph.nodes[n];
                node.pipeline != failed && node.deps.iter().any(|&d| graph.nodes[d].pipeline == failed)
            })
            .collect();
        for n in readers {
            self.unpublish_from(n)?;
        }
        Ok(())
    }

    /// Drops from a pipeline's record the stages it no longer has, with the
    /// report files they had published.
    fn forget_removed_stages(&mut self, pipeline: usize) -> Result<(), DagError> {
        let graph = self.graph;
        let labels: Vec<&str> = graph
            .nodes_of(pipeline)
            .map(|n| graph.nodes[n].label.as_str())
            .collect();
        let record = self.resolver.record(&graph.pipelines[pipeline].name);
        record.stages.retain(|label, _| labels.contains(&label.as_str()));
        let gone: Vec<String> = record
            .published
            .keys()
            .filter(|label| !labels.contains(&label.as_str()))
            .cloned()
            .collect();
        self.unpublish(pipeline, &gone)
    }

    fn unpublish(&mut self, pipeline: usize, labels: &[String]) -> Result<(), DagError> {
        let name = &self.graph.pipelines[pipeline].name;
        let reports = self.workspace.report_dir(name);
        let record = self.resolver.record(name);
        for label in labels {
            let files = record.published.remove(label).unwrap_or_default();
            fsutil::publish_tree(Path::new(""), &reports, &files).map_err(|source| DagError::Reports {
                path: reports.clone(),
                source,
            })?;
        }
        self.resolver.save_record(name)
    }
}

fn short(key: &str) -> String {
    key[..12.min(key.len())].to_string()
}

fn describe(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "never built".to_string();
    }
    super::key::describe(changes)
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
        // A report without the stage runs its members' up to it; a member
        // pulled in by a report needs it only if the report does.
        let linked = graph.nodes.iter().enumerate().any(|(n, node)| {
            node.deps.iter().any(|&d| {
                let dep = graph.nodes[d].pipeline;
                dep != node.pipeline && (dep == index || graph.nodes[n].pipeline == index)
            })
        });
        if targets.is_empty() && !linked {
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
