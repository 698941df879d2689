//! Building one stage's entry, wherever that happens: a worker thread of
//! `fkp run` (the local executor) or a Slurm job's `fkp run-stage`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::Scope;
use std::time::Instant;

use super::DagError;
use super::cancel::{Cancel, RunningStage};
use super::graph::Graph;
use super::key::KeyInputs;
use super::live::{EndOutcome, LiveLog, LiveRecord, host_name, live_path, now_ms};
use super::store::{Manifest, Store};
use crate::console::Console;
use crate::stages::{StageContext, StageError, UpstreamOutput};

/// A node the walk wants built.
pub(super) struct BuildRequest {
    pub n: usize,
    /// Names the build before its key is known (see `Resolution::plan`).
    pub plan: String,
    /// Known when every upstream output exists; a Slurm job submitted behind
    /// its upstream jobs works it out itself.
    pub key: Option<String>,
    pub inputs: Option<KeyInputs>,
    /// The `data/` folder of each upstream node settled so far.
    pub upstream: Vec<UpstreamOutput>,
    /// Upstream nodes still building (Slurm: jobs this one must wait for).
    pub after: Vec<usize>,
    /// `--force` or `--force-stage`: build even if the entry exists, from scratch.
    pub forced: bool,
    /// Why it builds, as the run says it (`never built`, `train.lr changed`).
    pub why: String,
}

/// How a build ended.
pub(super) struct Built {
    pub n: usize,
    pub plan: String,
    pub inputs: Option<KeyInputs>,
    /// The entry's manifest; `None` when a Slurm job built it, so the walk
    /// reads the entry (and the inputs that made it) from the cache.
    pub result: Result<Option<Manifest>, DagError>,
}

/// Where builds run. The walk starts builds and takes back whichever ends next.
pub(super) trait Builder {
    fn start(&mut self, request: BuildRequest) -> Result<(), DagError>;
    /// Blocks until a started build ends.
    fn next(&mut self) -> Built;
}

/// Builds on threads of this process (`fkp run -j N`).
pub(super) struct LocalBuilder<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    graph: &'env Graph,
    store: &'env Store,
    consoles: &'env [Console],
    cancel: &'env Cancel,
    label_width: usize,
    sender: mpsc::Sender<Built>,
    receiver: mpsc::Receiver<Built>,
}

impl<'scope, 'env> LocalBuilder<'scope, 'env> {
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        graph: &'env Graph,
        store: &'env Store,
        consoles: &'env [Console],
        cancel: &'env Cancel,
        label_width: usize,
    ) -> Self {
        let (sender, receiver) = mpsc::channel();
        LocalBuilder {
            scope,
            graph,
            store,
            consoles,
            cancel,
            label_width,
            sender,
            receiver,
        }
    }
}

impl Builder for LocalBuilder<'_, '_> {
    fn start(&mut self, request: BuildRequest) -> Result<(), DagError> {
        let (graph, store, cancel, label_width) = (self.graph, self.store, self.cancel, self.label_width);
        let node = &graph.nodes[request.n];
        let console = &self.consoles[node.pipeline];
        let (Some(key), Some(inputs)) = (request.key, request.inputs) else {
            unreachable!("a local build starts once its upstream outputs exist");
        };
        console.status(&format!(
            "  {:<label_width$} running  {}: {}",
            node.label,
            &key[..12],
            request.why
        ));
        let sender = self.sender.clone();
        let (n, plan, upstream, forced) = (request.n, request.plan, request.upstream, request.forced);
        self.scope.spawn(move || {
            let build = StageBuild {
                graph,
                n,
                key: &key,
                inputs: &inputs,
                upstream: &upstream,
                forced,
            };
            let result = build.build(store, console, cancel, label_width).map(Some);
            // The walk waits for every build it started.
            let _ = sender.send(Built {
                n,
                plan,
                inputs: Some(inputs),
                result,
            });
        });
        Ok(())
    }

    fn next(&mut self) -> Built {
        self.receiver.recv().expect("the builder keeps a sender")
    }
}

/// One stage to build into the store.
pub(super) struct StageBuild<'a> {
    pub graph: &'a Graph,
    pub n: usize,
    pub key: &'a str,
    pub inputs: &'a KeyInputs,
    pub upstream: &'a [UpstreamOutput],
    pub forced: bool,
}

impl StageBuild<'_> {
    /// Runs the stage into a pending entry and commits it, holding the key's
    /// build lock: when another process built the key meanwhile (a Slurm job of
    /// another run), its entry is taken as it is.
    pub fn build(
        &self,
        store: &Store,
        console: &Console,
        cancel: &Cancel,
        label_width: usize,
    ) -> Result<Manifest, DagError> {
        let (graph, n, key) = (self.graph, self.n, self.key);
        let node = &graph.nodes[n];
        let pipeline = &graph.pipelines[node.pipeline];
        let cache_error = |source| DagError::Cache {
            path: store.root().to_path_buf(),
            source,
        };
        let started = Instant::now();
        let _lock = store.build_lock(node.kind, key).map_err(cache_error)?;
        if !self.forced
            && let Some(manifest) = store.manifest(node.kind, key)
        {
            console.status(&format!(
                "  {:<label_width$} done     by another process meanwhile",
                node.label
            ));
            return Ok(manifest);
        }
        let pending = store.begin(node.kind, key).map_err(cache_error)?;
        let checkpoint_dir: PathBuf = store.checkpoint_dir(node.kind, key);
        if self.forced && checkpoint_dir.exists() {
            // A forced rerun starts over rather than resuming.
            store.remove_entry(&checkpoint_dir).map_err(cache_error)?;
        }
        let live_path = live_path(store.root(), node.kind, key);
        let live = LiveLog::open(&live_path, self.forced);
        live.record(&LiveRecord::Start {
            pid: std::process::id(),
            host: host_name(),
            pipeline: pipeline.name.clone(),
            at_ms: now_ms(),
        });
        let ctx = StageContext {
            data_dir: &pending.data_dir(),
            report_dir: &pending.report_dir(),
            checkpoint_dir: &checkpoint_dir,
            console,
            kind: node.kind,
            upstream: self.upstream,
            cancel,
            live: &live,
        };
        let running = RunningStage {
            pipeline: pipeline.name.clone(),
            label: node.label.clone(),
            key: key.to_string(),
        };
        let outcome = match cancel.begin_stage(running.clone()) {
            true => graph.stage(n).run(&ctx),
            false => Err(StageError::Cancelled),
        };
        cancel.end_stage(&running);
        if let Err(error) = &outcome {
            // A stage stopped before its first checkpoint leaves no empty folder.
            let _ = std::fs::remove_dir(&checkpoint_dir);
            let cancelled = cancel.now() || matches!(error, StageError::Cancelled);
            live.record(&LiveRecord::End {
                outcome: if cancelled {
                    EndOutcome::Cancelled
                } else {
                    EndOutcome::Failed
                },
                message: (!cancelled).then(|| error.to_string()),
                at_ms: now_ms(),
            });
        }
        let outcome = outcome.map_err(|source| {
            if cancel.now() || matches!(source, StageError::Cancelled) {
                // The pending entry goes with `pending`; a checkpoint stays for a resume.
                console.status(&format!("  {:<label_width$} cancelled", node.label));
                DagError::Cancelled {
                    pipeline: pipeline.name.clone(),
                    stage: node.kind,
                    kept: Box::default(),
                }
            } else {
                DagError::Stage {
                    pipeline: pipeline.name.clone(),
                    stage: node.kind,
                    source: Box::new(source),
                }
            }
        })?;
        // A resumed training's time includes what it spent before its checkpoint.
        let elapsed = started.elapsed() + earlier(outcome.earlier_seconds);
        let manifest = store
            .commit(pending, self.inputs.clone(), outcome, elapsed, &pipeline.name)
            .map_err(cache_error)?;
        if checkpoint_dir.exists() {
            store.remove_entry(&checkpoint_dir).map_err(cache_error)?;
        }
        // The entry tells the whole story now.
        drop(live);
        let _ = std::fs::remove_file(&live_path);
        let headline = manifest
            .headline
            .as_ref()
            .map_or(String::new(), |line| format!(": {line}"));
        console.status(&format!(
            "  {:<label_width$} done     in {:.2} s{headline}",
            node.label,
            started.elapsed().as_secs_f64(),
        ));
        Ok(manifest)
    }
}

/// A stage's `earlier_seconds` as a duration (none where it makes no sense).
fn earlier(seconds: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default()
}
