//! `fkp run`: walks the graph in order, reusing cached entries and running the rest.
//! A real run holds the workspace lock; a dry run reads only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DagError;
use super::build::{BuildRequest, Builder, Built, LocalBuilder};
use super::cancel::Cancel;
use super::graph::Graph;
use super::key::{Change, KeyInputs};
use super::remote::{Fetched, Remote};
use super::resolve::{Resolution, Resolver, State, Upstream};
use super::slurm::{SlurmBuilder, SlurmRun};
use super::store::{DATA_DIR, Manifest, OutputFile, REPORT_DIR, Store};
use crate::console::Console;
use crate::fsutil;
use crate::stages::{ResumePoint, StageKind, UpstreamOutput};
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
    /// `-j`: how many stages may build at once (0 counts as 1). The walk stays
    /// in graph order; a stage starts as soon as what it reads is settled.
    pub jobs: usize,
    /// Build each stage as a Slurm job instead of on this machine.
    pub slurm: Option<SlurmRun>,
    /// Look for entries here before building them, and upload what was built.
    pub remote: Option<Arc<Remote>>,
}

/// How one stage of one pipeline went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Cached,
    /// Downloaded from the remote cache.
    Fetched,
    Ran,
    WouldRun,
}

#[derive(Debug, Default)]
pub struct RunReport {
    /// (pipeline name, stage, outcome), in the order they were visited.
    pub stages: Vec<(String, StageKind, Outcome)>,
    /// The `data/` folder of every stage that has an entry after the run.
    pub data_dirs: Vec<(String, StageKind, PathBuf)>,
    /// (pipeline, node label, its one-line result) of every stage that has an
    /// entry after the run and a headline in it, in the order they settled.
    pub headlines: Vec<(String, String, String)>,
}

impl RunReport {
    /// The closing summary of a run: per pipeline that ran, what was built and
    /// what was cached, the result of its last stage (an evaluation's RMSE and
    /// PCK, a report's winner) and where its reports are.
    pub fn closing_lines(&self, graph: &Graph, workspace: &Workspace) -> Vec<String> {
        let mut lines = Vec::new();
        for (index, pipeline) in graph.pipelines.iter().enumerate() {
            let name = pipeline.name.as_str();
            let outcomes: Vec<&Outcome> = self
                .stages
                .iter()
                .filter(|(p, _, _)| p == name)
                .map(|(_, _, outcome)| outcome)
                .collect();
            if outcomes.is_empty() {
                continue;
            }
            let count = |wanted: Outcome| outcomes.iter().filter(|o| ***o == wanted).count();
            let mut counts = Vec::new();
            for (outcome, words) in [
                (Outcome::Ran, "built"),
                (Outcome::Fetched, "fetched"),
                (Outcome::Cached, "cached"),
            ] {
                match count(outcome) {
                    0 => {}
                    n => counts.push(format!("{n} {words}")),
                }
            }
            let mut line = format!("{name}: {}", counts.join(", "));
            // The result of the last stage in the graph that has one says the
            // most (an evaluation's, a report's), whichever finished last.
            let last = graph.nodes_of(index).rev().find_map(|n| {
                let node = &graph.nodes[n];
                self.headlines
                    .iter()
                    .find(|(p, label, _)| p == name && *label == node.label)
                    .map(|(_, _, headline)| (node.kind, headline))
            });
            if let Some((_, headline)) = last {
                line.push_str(&format!("; {headline}"));
            }
            let dir = workspace.report_dir(name);
            let dir = dir.strip_prefix(&workspace.root).unwrap_or(&dir);
            match last {
                Some((StageKind::Report, _)) => {
                    line.push_str(&format!("; report: {}", dir.join("index.html").display()))
                }
                _ => line.push_str(&format!("; reports in {}/", dir.display())),
            }
            lines.push(line);
        }
        lines
    }

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

/// What a cancelled run leaves for the next one: the entries it built, and the
/// checkpoints of the stages it stopped midway.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kept {
    /// (pipeline, node label) of each entry this run built or fetched, in order.
    pub built: Vec<(String, String)>,
    /// (pipeline, node label, how far it got) of each stage stopped midway;
    /// `None` when it stopped before its first checkpoint.
    pub stopped: Vec<(String, String, Option<ResumePoint>)>,
}

impl Kept {
    /// What was kept, in a few lines: said when `fkp run` is interrupted.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut by_pipeline: Vec<(&str, Vec<&str>)> = Vec::new();
        for (pipeline, label) in &self.built {
            match by_pipeline.iter_mut().find(|(p, _)| p == pipeline) {
                Some((_, labels)) => labels.push(label),
                None => by_pipeline.push((pipeline, vec![label])),
            }
        }
        match self.built.len() {
            0 => lines.push("  no stage finished in this run".to_string()),
            n => {
                let listed: Vec<String> = by_pipeline
                    .iter()
                    .map(|(p, labels)| {
                        format!(
                            "`{p}` {}",
                            labels
                                .iter()
                                .map(|l| format!("[{l}]"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                    .collect();
                lines.push(format!(
                    "  kept the {} this run built: {}",
                    if n == 1 {
                        "entry".to_string()
                    } else {
                        format!("{n} entries")
                    },
                    listed.join("; ")
                ));
            }
        }
        for (pipeline, label, point) in &self.stopped {
            lines.push(match point {
                Some(point) => format!(
                    "  kept the checkpoint of `{pipeline}` [{label}] after epoch {} of {}: the next `fkp run` {point}",
                    point.done, point.of
                ),
                None => format!(
                    "  `{pipeline}` [{label}] stopped before its first checkpoint: the next `fkp run` starts it over"
                ),
            });
        }
        lines
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
    // Slurm jobs run elsewhere: whether their device works is for their node to say.
    let stages_here = options.slurm.is_none();
    let mut problems = preflight(graph, &selected, stages_here);
    // Only pipelines whose input files are fine: a FIFO must never be read.
    let unchecked: Vec<bool> = (0..graph.pipelines.len())
        .map(|p| problems.iter().any(|(q, _)| *q == p))
        .collect();
    problems.extend(check_networks(graph, &selected, &unchecked, workspace));
    let runnable = (0..graph.pipelines.len())
        .any(|p| !problems.iter().any(|(q, _)| *q == p) && graph.nodes_of(p).any(|n| selected[n]));
    // Nothing can start: said before the cache is even opened.
    if (options.fail_fast || !runnable) && !problems.is_empty() {
        if problems.len() == 1 || options.fail_fast {
            return Err(graph.in_report_context(problems.remove(0).1));
        }
        return Err(DagError::Several(
            problems
                .into_iter()
                .map(|(_, e)| graph.in_report_context(e))
                .collect(),
        ));
    }
    let cache_error = |source| DagError::Cache {
        path: workspace.cache_dir.clone(),
        source,
    };
    let store = Store::open(&workspace.cache_dir).map_err(cache_error)?;
    // Holding the lock, what killed runs left in tmp/ can go.
    for dir in store.abandoned_temp_dirs().map_err(cache_error)? {
        std::fs::remove_dir_all(&dir).map_err(cache_error)?;
    }
    let mut walk = Walk::new(graph, workspace, &store, options, selected, Mode::Run, console);
    // A pipeline that cannot start fails alone: the others run, and it is said now,
    // not after they have trained.
    for (index, error) in problems {
        console.warn(&format!(
            "pipeline `{}` cannot run, the others go on: {}",
            graph.pipelines[index].name,
            crate::text::error_chain(&error)
        ));
        walk.fail_pipeline(index, error);
    }
    walk.all()
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
/// a readable regular file and, when they build here, that each can run here at
/// all. Returns the first problem of each pipeline that has one.
fn preflight(graph: &Graph, selected: &[bool], stages_here: bool) -> Vec<(usize, DagError)> {
    let mut problems: Vec<(usize, DagError)> = Vec::new();
    for (n, node) in graph.nodes.iter().enumerate().filter(|(n, _)| selected[*n]) {
        if problems.iter().any(|(p, _)| *p == node.pipeline) {
            continue;
        }
        if let Err(error) = preflight_node(graph, n, stages_here) {
            problems.push((node.pipeline, error));
        }
    }
    problems
}

fn preflight_node(graph: &Graph, n: usize, stages_here: bool) -> Result<(), DagError> {
    let node = &graph.nodes[n];
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
    if !stages_here {
        return Ok(());
    }
    stage.preflight().map_err(|source| DagError::Stage {
        pipeline: pipeline.clone(),
        stage: node.kind,
        source: Box::new(source),
    })
}

/// Checks, before anything runs, the network of every selected training whose
/// image side is known already: from `[ingest] image_side`, or from its ingest
/// when that is cached. (`[model] side` is checked when the file is read.) A
/// shape error in the last pipeline is then found before the first one trains.
fn check_networks(
    graph: &Graph,
    selected: &[bool],
    skip_pipeline: &[bool],
    workspace: &Workspace,
) -> Vec<(usize, DagError)> {
    let trainings: Vec<usize> = (0..graph.nodes.len())
        .filter(|&n| {
            let node = &graph.nodes[n];
            selected[n] && node.kind == StageKind::Train && !skip_pipeline[node.pipeline]
        })
        .collect();
    // A lone pipeline's shapes are checked when its training starts, before any
    // other: only runs of several are worth the look ahead.
    let first = trainings.first().map(|&n| graph.nodes[n].pipeline);
    if trainings.iter().all(|&n| Some(graph.nodes[n].pipeline) == first) {
        return Vec::new();
    }
    let store = Store::open_read_only(&workspace.cache_dir);
    let mut resolver = Resolver::new(&store, workspace);
    let mut problems: Vec<(usize, DagError)> = Vec::new();
    for n in trainings {
        let Some(model) = graph.stage(n).model().filter(|m| m.side.is_none()) else {
            continue;
        };
        let Some(side) = known_side(graph, n, &store, &mut resolver) else {
            continue;
        };
        let node = &graph.nodes[n];
        if problems.iter().any(|(p, _)| *p == node.pipeline) {
            continue; // one problem a pipeline (a seed ensemble has one network)
        }
        if let Err(error) = crate::models::graph::shape::infer(&model.graph, side, None) {
            let shape = crate::models::ModelError::Shape(crate::models::shape_error(&error).to_string());
            let source = crate::stages::StageError::Train(crate::training::TrainError::Model(shape).into());
            problems.push((
                node.pipeline,
                DagError::Stage {
                    pipeline: graph.pipelines[node.pipeline].name.clone(),
                    stage: node.kind,
                    source: Box::new(source),
                },
            ));
        }
    }
    problems
}

/// The side of the images that training node `n` will see, where it is known
/// without running anything.
fn known_side(graph: &Graph, n: usize, store: &Store, resolver: &mut Resolver) -> Option<usize> {
    let ingest = graph
        .with_ancestors(n)
        .into_iter()
        .find(|&a| graph.nodes[a].kind == StageKind::Ingest)?;
    if let Some(side) = graph.stage(ingest).config()["image_side"].as_u64() {
        return usize::try_from(side).ok();
    }
    let resolution = resolver
        .resolve(graph, ingest, Upstream::Ready(Default::default()))
        .ok()?;
    let State::Cached(manifest) = resolution.state else {
        return None;
    };
    let rules = store
        .entry_dir(StageKind::Ingest, &manifest.key)
        .join(DATA_DIR)
        .join(crate::stages::ingest::RULES_FILE);
    crate::stages::ingest::ReadingRules::read(&rules)
        .ok()
        .map(|r| r.side)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    DryRun,
}

/// Where a node is in the walk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Not visited yet (or waiting for another node building its key).
    Waiting,
    /// Handed to a worker.
    Building,
    /// Cached, built, or (in a dry run) found to need a run.
    Settled,
}

/// One walk over the graph and what it has found so far. The walk itself runs
/// on one thread: it resolves keys, publishes reports and keeps the records;
/// only stage builds go to worker threads, at most `jobs` at once.
struct Walk<'a> {
    graph: &'a Graph,
    workspace: &'a Workspace,
    store: &'a Store,
    resolver: Resolver<'a>,
    how: HowToRun,
    remote: RemoteCache,
    /// Per node of the graph, in its order.
    nodes: Vec<NodeState>,
    /// Per pipeline of the graph, in its order.
    pipelines: Vec<PipelineState>,
    /// Plans being built now, by the node building them.
    building: HashMap<String, usize>,
    /// No further stage starts (a cancel, `--fail-fast`, a broken cache).
    stopping: bool,
    /// Failures, listed in pipeline order at the end.
    errors: Vec<(FailedIn, DagError)>,
    /// Keys built earlier in this invocation, with the pipeline that built them.
    built_now: HashMap<String, String>,
    /// Nodes cancelled midway, whose checkpoint a cancelled run lists.
    cancelled: Vec<usize>,
    /// (pipeline, label) of every entry built or fetched, for a cancelled run to list.
    kept: Vec<(String, String)>,
    report: RunReport,
}

/// How the walk runs, fixed for the whole run.
struct HowToRun {
    mode: Mode,
    jobs: usize,
    /// Whether each pipeline's lines carry its name (`-j` above 1): then no
    /// pipeline header is printed before its stages.
    prefixed: bool,
    /// Stage labels are padded to this, so an ensemble's keeps the columns.
    label_width: usize,
    cancel: Cancel,
    fail_fast: bool,
    /// Build as Slurm jobs: then a node is submitted as soon as what it reads
    /// is settled or submitted, behind its upstream jobs.
    slurm: Option<SlurmRun>,
}

/// The remote cache, while it answers.
struct RemoteCache {
    remote: Option<Arc<Remote>>,
    /// Set once the remote fails: the rest of the run builds here without asking it.
    down: bool,
}

/// What the walk knows of one node.
struct NodeState {
    /// Kept by `--until`.
    selected: bool,
    /// Rebuilt even if cached (`--force`, `--force-stage`, or downstream of one).
    forced: bool,
    progress: Progress,
    /// The plan of another node that is building it now: this node waits and
    /// then finds its entry cached, rather than building it twice.
    waiting_for: Option<String>,
    /// Its key once known.
    key: Option<String>,
    /// The `data/` folder and outputs of its entry, once it has one.
    data_dir: Option<PathBuf>,
    outputs: Option<Vec<OutputFile>>,
}

/// What the walk knows of one pipeline.
struct PipelineState {
    /// The console its stages speak through (prefixed by its name when several
    /// stages run at once).
    console: Console,
    /// Whether its first stage has been reached (and its header said).
    begun: bool,
    /// It failed, or was skipped because one it reads failed.
    failed: bool,
}

/// Where a failure happened: in a pipeline, or in the workspace as a whole
/// (saving the file hashes), which is listed after every pipeline's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FailedIn {
    Pipeline(usize),
    Workspace,
}

/// What visiting a node led to.
enum Visit {
    Settled,
    Build(Box<BuildRequest>),
    /// Another node is building the same plan (hence key).
    AwaitPlan(String),
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
        // A dry run only reads: it never has more than one thing to do at once.
        let jobs = match (mode, &options.slurm) {
            (Mode::DryRun, _) => 1,
            // Slurm queues and schedules every job: the walk submits all it can.
            (Mode::Run, Some(_)) => usize::MAX,
            (Mode::Run, None) => options.jobs.max(1),
        };
        let prefixed = jobs > 1;
        let consoles: Vec<Console> = match prefixed {
            true => {
                let shared = console.shared();
                let width = graph.pipelines.iter().map(|p| p.name.len()).max().unwrap_or(0);
                graph
                    .pipelines
                    .iter()
                    .map(|p| shared.prefixed(&format!("{:<width$} | ", p.name)))
                    .collect()
            }
            false => vec![console.clone(); graph.pipelines.len()],
        };
        let nodes = selected
            .into_iter()
            .zip(forced_nodes(graph, options))
            .map(|(selected, forced)| NodeState {
                selected,
                forced,
                progress: Progress::Waiting,
                waiting_for: None,
                key: None,
                data_dir: None,
                outputs: None,
            })
            .collect();
        let pipelines = consoles
            .into_iter()
            .map(|console| PipelineState {
                console,
                begun: false,
                failed: false,
            })
            .collect();
        Walk {
            graph,
            workspace,
            store,
            resolver: Resolver::new(store, workspace),
            how: HowToRun {
                mode,
                jobs,
                prefixed,
                label_width: graph.label_width(),
                cancel: options.cancel.clone(),
                fail_fast: options.fail_fast,
                slurm: options.slurm.clone(),
            },
            remote: RemoteCache {
                remote: options.remote.clone(),
                down: false,
            },
            nodes,
            pipelines,
            building: HashMap::new(),
            stopping: false,
            errors: Vec::new(),
            built_now: HashMap::new(),
            cancelled: Vec::new(),
            kept: Vec::new(),
            report: RunReport::default(),
        }
    }

    /// Runs every selected node once its upstream nodes are settled, the
    /// earliest first, up to `jobs` builds at once. A pipeline that fails does
    /// not stop the others (unless `fail_fast`), but a report reading it is
    /// skipped; the error then lists every failure, in pipeline order.
    fn all(mut self) -> Result<RunReport, DagError> {
        // Builders borrow these for the whole scope, while the walk changes itself.
        let cancel = self.how.cancel.clone();
        let consoles: Vec<Console> = self.pipelines.iter().map(|p| p.console.clone()).collect();
        let (graph, store, label_width) = (self.graph, self.store, self.how.label_width);
        let slurm = self.how.slurm.clone();
        std::thread::scope(|scope| {
            let mut builder: Box<dyn Builder> = match &slurm {
                Some(run) => Box::new(SlurmBuilder::new(run, graph, store, &consoles, label_width)),
                None => Box::new(LocalBuilder::new(
                    scope,
                    graph,
                    store,
                    &consoles,
                    &cancel,
                    label_width,
                )),
            };
            let mut in_flight = 0;
            loop {
                while in_flight < self.how.jobs && !self.stopping {
                    let Some(n) = self.next_ready() else { break };
                    match self.visit(n) {
                        Ok(Visit::Settled) => {}
                        Ok(Visit::AwaitPlan(plan)) => {
                            // Building, as far as what reads it is concerned: a Slurm
                            // job reading it waits for the job building its plan.
                            self.nodes[n].progress = Progress::Building;
                            self.nodes[n].waiting_for = Some(plan);
                        }
                        Ok(Visit::Build(request)) => {
                            let plan = request.plan.clone();
                            match builder.start(*request) {
                                Ok(()) => {
                                    self.nodes[n].progress = Progress::Building;
                                    self.building.insert(plan, n);
                                    in_flight += 1;
                                }
                                Err(error) => self.fail(n, error),
                            }
                        }
                        Err(error) => self.fail(n, error),
                    }
                }
                if in_flight == 0 {
                    break;
                }
                let built = builder.next();
                in_flight -= 1;
                self.finish_build(built);
            }
        });
        self.finish_untouched_pipelines();
        if self.how.mode == Mode::Run
            && let Err(error) = self.resolver.save_hashes()
        {
            self.errors.push((FailedIn::Workspace, error));
        }
        let kept = self.kept_now();
        let mut errors = std::mem::take(&mut self.errors);
        for (_, error) in &mut errors {
            if let DagError::Cancelled { kept: slot, .. } = error {
                **slot = kept.clone();
            }
        }
        errors.sort_by_key(|(place, _)| *place);
        let mut errors: Vec<DagError> = errors.into_iter().map(|(_, e)| e).collect();
        match errors.len() {
            0 => Ok(self.report),
            1 => Err(errors.remove(0)),
            _ => Err(DagError::Several(errors)),
        }
    }

    /// What this run leaves for the next: the entries it made, and how far each
    /// stage it stopped midway got (read from the checkpoint of its key).
    fn kept_now(&self) -> Kept {
        let graph = self.graph;
        Kept {
            built: self.kept.clone(),
            stopped: self
                .cancelled
                .iter()
                .map(|&n| {
                    let node = &graph.nodes[n];
                    let point = self.nodes[n].key.as_ref().and_then(|key| {
                        graph
                            .stage(n)
                            .resume_point(&self.store.checkpoint_dir(node.kind, key))
                    });
                    (
                        graph.pipelines[node.pipeline].name.clone(),
                        node.label.clone(),
                        point,
                    )
                })
                .collect(),
        }
    }

    /// The earliest selected node that can start: every node it reads is
    /// settled (or, for Slurm, submitted) and its pipeline has not failed. With
    /// one job this is the graph's own order, pipeline after pipeline.
    fn next_ready(&mut self) -> Option<usize> {
        let graph = self.graph;
        let n = (0..graph.nodes.len()).find(|&n| {
            let node = &graph.nodes[n];
            self.nodes[n].selected
                && self.nodes[n].progress == Progress::Waiting
                && !self.pipelines[node.pipeline].failed
                && node.deps.iter().all(|&d| match self.nodes[d].progress {
                    Progress::Settled => true,
                    Progress::Building => self.how.slurm.is_some(),
                    Progress::Waiting => false,
                })
        })?;
        self.begin_pipeline(graph.nodes[n].pipeline);
        Some(n)
    }

    fn begin_pipeline(&mut self, index: usize) {
        if std::mem::replace(&mut self.pipelines[index].begun, true) {
            return;
        }
        let pipeline = &self.graph.pipelines[index];
        let line = match self.how.prefixed {
            true => pipeline.file.display().to_string(),
            false => format!("{} ({})", pipeline.name, pipeline.file.display()),
        };
        self.pipelines[index].console.status(&line);
        if self.how.mode == Mode::Run {
            self.resolver.record(&pipeline.name).file = pipeline.file.clone();
        }
    }

    /// A pipeline none of whose stages was selected (`--until` a stage it lacks)
    /// still drops the stages it no longer has from its record.
    fn finish_untouched_pipelines(&mut self) {
        if self.stopping {
            return;
        }
        for index in 0..self.graph.pipelines.len() {
            let untouched = self.graph.nodes_of(index).all(|n| !self.nodes[n].selected);
            if untouched && !self.pipelines[index].failed {
                self.begin_pipeline(index);
                self.finish_pipeline(index);
            }
        }
    }

    /// Once every selected node of a pipeline is settled, its record forgets the
    /// stages it no longer has.
    fn finish_pipeline(&mut self, index: usize) {
        if self.how.mode != Mode::Run {
            return;
        }
        if let Err(error) = self.forget_removed_stages(index) {
            self.fail_pipeline(index, error);
        }
        self.say_older_reports(index);
    }

    /// Names the reports of stages this run left out (`--until`, or `predict`
    /// training first) whose upstream it rebuilt: they show what came before.
    fn say_older_reports(&mut self, index: usize) {
        let graph = self.graph;
        let name = &graph.pipelines[index].name;
        // Built in this invocation, by this pipeline or one sharing the stage: its
        // entry (`<stage>/<key>/data`) is named by a key built now.
        let rebuilt = |n: usize| {
            self.nodes[n]
                .data_dir
                .as_deref()
                .and_then(|data| data.parent()?.file_name()?.to_str())
                .is_some_and(|key| self.built_now.contains_key(key))
        };
        let mut older = Vec::new();
        for n in graph.nodes_of(index).filter(|&n| !self.nodes[n].selected) {
            let label = &graph.nodes[n].label;
            let published = self
                .resolver
                .record(name)
                .published
                .get(label)
                .is_some_and(|files| !files.is_empty());
            let changed_upstream = graph
                .with_ancestors(n)
                .into_iter()
                .find(|&a| self.nodes[a].selected && rebuilt(a));
            if let (true, Some(upstream)) = (published, changed_upstream) {
                older.push(format!(
                    "[{label}] (after [{}] was rebuilt)",
                    graph.nodes[upstream].label
                ));
            }
        }
        if !older.is_empty() {
            self.pipelines[index].console.warn(&format!(
                "reports/{name}/ keeps reports older than this run: {} did not run; \
                 `fkp run` (without --until) brings them up to date",
                older.join(", ")
            ));
        }
    }

    /// Resolves one node: a cached one is settled at once, one that must run is
    /// made ready for a worker.
    fn visit(&mut self, n: usize) -> Result<Visit, DagError> {
        let graph = self.graph;
        let node = &graph.nodes[n];
        let pipeline = &graph.pipelines[node.pipeline];
        if self.how.mode == Mode::Run && self.how.cancel.stop_requested() {
            return Err(DagError::Cancelled {
                pipeline: pipeline.name.clone(),
                stage: node.kind,
                kept: Box::default(),
            });
        }
        let upstream = Upstream::of(graph, n, |d| self.nodes[d].outputs.as_deref());
        let resolution = self.resolver.resolve(graph, n, upstream)?;
        if let Some(plan) = resolution
            .plan
            .as_ref()
            .filter(|p| self.building.contains_key(*p))
        {
            return Ok(Visit::AwaitPlan(plan.clone()));
        }
        let shared_with = resolution
            .key
            .as_ref()
            .and_then(|k| self.built_now.get(k))
            .cloned();
        let reason = match (&resolution.state, self.nodes[n].forced && shared_with.is_none()) {
            (_, true) => Some(vec![Change::Forced]),
            (State::Cached(_), false) => None,
            (State::Stale(changes), false) => Some(changes.clone()),
            (State::Missing, false) => Some(Vec::new()),
        };
        let key_text = resolution.key.as_deref().map_or("?".to_string(), short);
        let Resolution {
            inputs,
            key,
            plan,
            state,
        } = resolution;
        match (reason, state) {
            (None, State::Cached(manifest)) => {
                let note = shared_with.map_or(String::new(), |p| format!(" (shared with `{p}`)"));
                let said = format!("cached   {key_text}{note}{}", headline_text(&manifest));
                self.settle_unbuilt(n, Outcome::Cached, &said, *manifest, inputs)
            }
            (Some(changes), _) if self.how.mode == Mode::DryRun => {
                self.say_would_run(n, key.as_deref(), &key_text, &changes);
                Ok(Visit::Settled)
            }
            (Some(changes), _) => {
                if let Some(manifest) = self.fetch(n, key.as_deref(), &changes) {
                    let said = format!(
                        "fetched  {key_text} from the remote cache{}",
                        headline_text(&manifest)
                    );
                    return self.settle_unbuilt(n, Outcome::Fetched, &said, manifest, inputs);
                }
                let plan = plan.expect("a node resolves after its upstream nodes");
                self.nodes[n].key = key.clone();
                let request = BuildRequest {
                    n,
                    plan,
                    key,
                    inputs,
                    upstream: self.upstream_entries(n),
                    after: self.builds_to_wait_for(n),
                    forced: self.nodes[n].forced,
                    why: describe(&changes),
                };
                Ok(Visit::Build(Box::new(request)))
            }
            (None, _) => unreachable!("only a cached stage has no reason to run"),
        }
    }

    /// A dry run's line for a node that would run, and why.
    fn say_would_run(&mut self, n: usize, key: Option<&str>, key_text: &str, changes: &[Change]) {
        let graph = self.graph;
        let node = &graph.nodes[n];
        // A run stopped midway left a checkpoint of this key: the run resumes it.
        let resume = match (key, changes.contains(&Change::Forced)) {
            (Some(key), false) => graph
                .stage(n)
                .resume_point(&self.store.checkpoint_dir(node.kind, key))
                .map_or(String::new(), |point| format!(" ({point})")),
            _ => String::new(),
        };
        self.pipelines[node.pipeline].console.status(&format!(
            "  {:<w$} would run {key_text}: {}{resume}",
            node.label,
            describe(changes),
            w = self.how.label_width
        ));
        let pipeline = graph.pipelines[node.pipeline].name.clone();
        self.report.stages.push((pipeline, node.kind, Outcome::WouldRun));
        self.nodes[n].progress = Progress::Settled;
    }

    /// The entries of the nodes `n` reads.
    fn upstream_entries(&self, n: usize) -> Vec<UpstreamOutput> {
        let graph = self.graph;
        graph.nodes[n]
            .deps
            .iter()
            .filter_map(|&d| {
                self.nodes[d].data_dir.clone().map(|data_dir| UpstreamOutput {
                    kind: graph.nodes[d].kind,
                    pipeline: graph.pipelines[graph.nodes[d].pipeline].name.clone(),
                    data_dir,
                })
            })
            .collect()
    }

    /// The builds node `n` waits behind: those of the nodes it reads that are
    /// building, or, for a node waiting for another's plan, that one's build.
    fn builds_to_wait_for(&self, n: usize) -> Vec<usize> {
        self.graph.nodes[n]
            .deps
            .iter()
            .filter(|&&d| self.nodes[d].progress == Progress::Building)
            .map(|&d| {
                self.nodes[d]
                    .waiting_for
                    .as_ref()
                    .map_or(d, |plan| self.building[plan])
            })
            .collect()
    }

    /// Settles a node whose entry exists without building it (cached, or
    /// fetched), saying so.
    fn settle_unbuilt(
        &mut self,
        n: usize,
        outcome: Outcome,
        said: &str,
        manifest: Manifest,
        inputs: Option<KeyInputs>,
    ) -> Result<Visit, DagError> {
        let node = &self.graph.nodes[n];
        let w = self.how.label_width;
        self.pipelines[node.pipeline]
            .console
            .status(&format!("  {:<w$} {said}", node.label));
        let pipeline = self.graph.pipelines[node.pipeline].name.clone();
        if outcome == Outcome::Fetched {
            self.kept.push((pipeline.clone(), node.label.clone()));
        }
        self.report.stages.push((pipeline, node.kind, outcome));
        self.settle(n, manifest, inputs)?;
        Ok(Visit::Settled)
    }

    /// The entry of `key` from the remote cache, when it has a sound one and the
    /// node is not forced to rebuild. A remote that fails is worth a warning, not
    /// a failed run: the stage is built here instead.
    fn fetch(&mut self, n: usize, key: Option<&str>, changes: &[Change]) -> Option<Manifest> {
        let (remote, key) = (self.remote.remote.as_ref()?, key?);
        if self.remote.down || changes.contains(&Change::Forced) {
            return None;
        }
        let node = &self.graph.nodes[n];
        let console = &self.pipelines[node.pipeline].console;
        match remote.fetch(self.store, node.kind, key) {
            Ok(Fetched::Entry(manifest)) => Some(*manifest),
            Ok(Fetched::Absent) => None,
            Ok(Fetched::Corrupt(why)) => {
                console.warn(&format!(
                    "[{}]: the remote cache's entry {} is broken ({why}): building it here",
                    node.label,
                    short(key)
                ));
                None
            }
            Err(error) => {
                console.warn(&format!(
                    "[{}]: {error}; building it here, and what follows, without the remote cache",
                    node.label
                ));
                self.remote.down = true;
                None
            }
        }
    }

    /// Uploads an entry built here to the remote cache, if there is one.
    fn push(&mut self, n: usize, key: &str) {
        let Some(remote) = self.remote.remote.as_ref().filter(|_| !self.remote.down) else {
            return;
        };
        let node = &self.graph.nodes[n];
        if let Err(error) = remote.push(self.store, node.kind, key) {
            self.pipelines[node.pipeline].console.warn(&format!(
                "[{}]: not uploaded, nor will what follows be: {error}",
                node.label
            ));
            self.remote.down = true;
        }
    }

    /// Takes a builder's answer: a built node is settled, a failed one fails its
    /// pipeline, and nodes waiting for its plan may go on.
    fn finish_build(&mut self, built: Built) {
        let Built {
            n,
            plan,
            inputs,
            result,
        } = built;
        self.building.remove(&plan);
        for follower in &mut self.nodes {
            if follower.waiting_for.as_ref() == Some(&plan) {
                // Visited again: it finds the entry cached (or builds it itself).
                follower.waiting_for = None;
                follower.progress = Progress::Waiting;
            }
        }
        let node = &self.graph.nodes[n];
        let pipeline = &self.graph.pipelines[node.pipeline];
        let settled = result
            .and_then(|manifest| match manifest {
                Some(manifest) => Ok((manifest, inputs)),
                // A Slurm job's: its `done` line went to the job's log.
                None => self.read_built_entry(n).inspect(|(manifest, _)| {
                    if let Some(headline) = &manifest.headline {
                        let w = self.how.label_width + 2;
                        self.pipelines[node.pipeline]
                            .console
                            .status(&format!("{:w$} {headline}", ""));
                    }
                }),
            })
            .and_then(|(manifest, inputs)| {
                if let Some(summary) = &manifest.summary {
                    self.pipelines[node.pipeline].console.result_detail(summary);
                }
                self.built_now.insert(manifest.key.clone(), pipeline.name.clone());
                self.kept.push((pipeline.name.clone(), node.label.clone()));
                self.push(n, &manifest.key);
                self.report
                    .stages
                    .push((pipeline.name.clone(), node.kind, Outcome::Ran));
                self.settle(n, manifest, inputs)
            });
        match settled {
            Ok(()) => {}
            // What a failed upstream job took with it says nothing new.
            Err(_) if self.pipelines[node.pipeline].failed => self.nodes[n].progress = Progress::Waiting,
            Err(error) => self.fail(n, error),
        }
    }

    /// The entry a Slurm job built, found by resolving the node again now that
    /// its upstream nodes are settled.
    fn read_built_entry(&mut self, n: usize) -> Result<(Manifest, Option<KeyInputs>), DagError> {
        let graph = self.graph;
        let upstream = Upstream::of(graph, n, |d| self.nodes[d].outputs.as_deref());
        let resolution = self.resolver.resolve(graph, n, upstream)?;
        match resolution.state {
            State::Cached(manifest) => Ok((*manifest, resolution.inputs)),
            _ => {
                let node = &graph.nodes[n];
                Err(DagError::JobLeftNoEntry {
                    pipeline: graph.pipelines[node.pipeline].name.clone(),
                    stage: node.kind,
                    key: resolution.key.unwrap_or_default(),
                })
            }
        }
    }

    /// Publishes a node's reports and makes its outputs available downstream;
    /// the last node of a pipeline finishes it.
    fn settle(&mut self, n: usize, manifest: Manifest, inputs: Option<KeyInputs>) -> Result<(), DagError> {
        let node = &self.graph.nodes[n];
        let entry = self.store.entry_dir(node.kind, &manifest.key);
        if self.how.mode == Mode::Run {
            self.publish(n, &entry, inputs)?;
        }
        if let Some(headline) = &manifest.headline {
            self.report.headlines.push((
                self.graph.pipelines[node.pipeline].name.clone(),
                node.label.clone(),
                headline.clone(),
            ));
        }
        self.nodes[n].data_dir = Some(entry.join(DATA_DIR));
        self.report.data_dirs.push((
            self.graph.pipelines[node.pipeline].name.clone(),
            node.kind,
            entry.join(DATA_DIR),
        ));
        self.nodes[n].outputs = Some(manifest.outputs);
        self.nodes[n].progress = Progress::Settled;
        let index = node.pipeline;
        let complete = self
            .graph
            .nodes_of(index)
            .all(|m| !self.nodes[m].selected || self.nodes[m].progress == Progress::Settled);
        if complete && !self.pipelines[index].failed {
            self.finish_pipeline(index);
        }
        Ok(())
    }

    /// Node `n` failed: its reports, and those of what reads it, go; its
    /// pipeline starts nothing more.
    fn fail(&mut self, n: usize, error: DagError) {
        let index = self.graph.nodes[n].pipeline;
        // A cancelled run is an interrupted one, not a failed one: like a killed
        // run, it leaves the reports as they were, and is said once.
        if matches!(error, DagError::Cancelled { .. }) {
            self.stopping = true;
            // Stopped while building (not before it started): it may have a checkpoint.
            if self.nodes[n].progress == Progress::Building {
                self.cancelled.push(n);
            }
            if !self
                .errors
                .iter()
                .any(|(_, e)| matches!(e, DagError::Cancelled { .. }))
            {
                self.errors.push((FailedIn::Pipeline(index), error));
            }
            return;
        }
        let (node, w) = (&self.graph.nodes[n], self.how.label_width);
        self.pipelines[index].console.status(&format!(
            "  {:<w$} failed (the error follows at the end)",
            node.label
        ));
        if self.how.mode == Mode::Run
            && let Err(unpublish_error) = self.unpublish_from(n)
        {
            self.errors.push((FailedIn::Pipeline(index), unpublish_error));
            self.stopping = true;
        }
        self.fail_pipeline(index, error);
    }

    /// Marks a pipeline failed with `error`, withdraws the reports that read it
    /// and skips the pipelines reading it.
    fn fail_pipeline(&mut self, index: usize, error: DagError) {
        // A broken cache or reports folder stops everything; so does --fail-fast.
        if self.how.fail_fast || error.pipeline().is_none() {
            self.stopping = true;
        }
        self.pipelines[index].failed = true;
        self.errors
            .push((FailedIn::Pipeline(index), self.graph.in_report_context(error)));
        if self.how.mode == Mode::Run
            && let Err(error) = self.withdraw_reports_of(index)
        {
            self.errors.push((FailedIn::Pipeline(index), error));
            self.stopping = true;
        }
        let graph = self.graph;
        let mut failed = vec![index];
        while let Some(member) = failed.pop() {
            for reader in graph.reports_of(member) {
                if std::mem::replace(&mut self.pipelines[reader].failed, true) {
                    continue;
                }
                let line = format!(
                    "{} ({}): skipped: it reads pipeline `{}`, which failed",
                    graph.pipelines[reader].name,
                    graph.pipelines[reader].file.display(),
                    graph.pipelines[member].name
                );
                self.pipelines[reader].console.status(&line);
                failed.push(reader);
            }
        }
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

/// `: <the stage's headline>`, or nothing.
fn headline_text(manifest: &Manifest) -> String {
    manifest
        .headline
        .as_ref()
        .map_or(String::new(), |line| format!(": {line}"))
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
