//! The workspace as `fkp serve` sees it: the pipelines (reloaded when a file
//! they read changes), their status (recomputed when the cache changes), and
//! the live logs of the stages running now. A follower thread keeps it fresh
//! and announces each change as an [`Event`] for the `/api/events` stream.
//! Nothing here writes to the workspace.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::broadcast;

use super::live_view::{Change, EpochPoint, LiveTrack, RunState};
use crate::config::{Override, discover_pipelines};
use crate::dag::live::{LIVE_DIR, LiveRead, LiveReader, live_path};
use crate::dag::{self, Graph, StateName, StatusReport};
use crate::stages::StageKind;
use crate::workspace::{PIPELINES_DIR, Workspace};

use crate::commands::watch::files::{Contents, Fingerprint, WatchSet};

/// How often the follower looks: well within the second a live view promises.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// The status is recomputed at least this often, for changes no stamp shows
/// (a remote cache's entries, a clock that did not move).
const STATUS_AT_LEAST_EVERY: Duration = Duration::from_secs(5);
/// Events a slow client may fall behind by before it is told to reload.
const EVENT_BACKLOG: usize = 1024;

/// One server-sent event: its name and JSON body.
#[derive(Debug)]
pub struct Event {
    pub name: &'static str,
    pub data: String,
}

/// A pipeline file that does not load, and why (with file, line and key).
#[derive(Debug, Clone, Serialize)]
pub struct LoadProblem {
    pub file: String,
    pub message: String,
}

/// The pipelines and their status at one moment.
pub struct View {
    /// Counts the changes of the status, so a client can tell it is behind.
    pub generation: u64,
    pub graph: Option<Arc<Graph>>,
    pub status: Option<StatusReport>,
    pub problems: Vec<LoadProblem>,
}

pub struct Hub {
    pub workspace: Workspace,
    /// The pipeline files named on the command line; none: every one in `pipelines/`.
    named: Vec<PathBuf>,
    /// `--set` changes, applied to every pipeline as `fkp run` applies them.
    overrides: Vec<Override>,
    view: RwLock<Arc<View>>,
    /// Live logs, by file name (`train-<key>`).
    live: Mutex<BTreeMap<String, LiveTrack>>,
    pub events: broadcast::Sender<Arc<Event>>,
}

impl Hub {
    /// Looks at the workspace once, then starts the thread that follows it
    /// until `stop` is set.
    pub fn start(
        workspace: Workspace,
        named: Vec<PathBuf>,
        overrides: Vec<Override>,
        stop: Arc<AtomicBool>,
    ) -> (Arc<Hub>, std::thread::JoinHandle<()>) {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let hub = Arc::new(Hub {
            workspace,
            named,
            overrides,
            view: RwLock::new(Arc::new(View {
                generation: 0,
                graph: None,
                status: None,
                problems: Vec::new(),
            })),
            live: Mutex::new(BTreeMap::new()),
            events,
        });
        // The first look happens before the server answers anything.
        let mut follower = Follower::new(hub.clone());
        follower.look();
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(LOOK_EVERY);
                follower.look();
            }
        });
        (hub, thread)
    }

    pub fn view(&self) -> Arc<View> {
        self.view
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The live log of a stage key, if one is followed.
    pub fn live(&self, kind: StageKind, key: &str) -> Option<LiveTrack> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(&live_name(kind, key)).cloned()
    }

    /// The pipeline files: those named, or every `*.toml` in `pipelines/`.
    fn pipeline_files(&self) -> Vec<PathBuf> {
        if !self.named.is_empty() {
            return self.named.clone();
        }
        discover_pipelines(&self.workspace.root.join(PIPELINES_DIR)).unwrap_or_default()
    }

    fn send(&self, name: &'static str, data: impl Serialize) {
        if let Ok(data) = serde_json::to_string(&data) {
            // (no receiver is no error: nobody is watching)
            let _ = self.events.send(Arc::new(Event { name, data }));
        }
    }
}

/// `train-<key>`: a live log's file stem.
fn live_name(kind: StageKind, key: &str) -> String {
    format!("{}-{key}", kind.name())
}

/// Loads every file together; when that fails, each alone, so one broken file
/// hides only itself (and the reports that list it).
fn load(files: &[PathBuf], overrides: &[Override], root: &Path) -> (Option<Arc<Graph>>, Vec<LoadProblem>) {
    if let Ok(graph) = Graph::load_with(files, overrides) {
        return (Some(Arc::new(graph)), Vec::new());
    }
    let mut good = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match Graph::load_with(std::slice::from_ref(file), overrides) {
            Ok(_) => good.push(file.clone()),
            Err(error) => problems.push(LoadProblem {
                file: file.strip_prefix(root).unwrap_or(file).display().to_string(),
                message: error.to_string(),
            }),
        }
    }
    match Graph::load_with(&good, overrides) {
        Ok(graph) => (Some(Arc::new(graph)), problems),
        Err(error) => {
            problems.push(LoadProblem {
                file: String::new(),
                message: error.to_string(),
            });
            (None, problems)
        }
    }
}

/// The modification times of the cache folders that change when an entry is
/// committed or removed, or a checkpoint or live log comes or goes.
fn cache_stamp(cache_dir: &Path) -> Vec<Option<SystemTime>> {
    let mut dirs: Vec<PathBuf> = vec![cache_dir.join("checkpoints"), cache_dir.join(LIVE_DIR)];
    dirs.extend(StageKind::all().map(|kind| cache_dir.join("entries").join(kind.name())));
    dirs.iter()
        .map(|dir| std::fs::metadata(dir).and_then(|m| m.modified()).ok())
        .collect()
}

/// The follower's memory of what it saw last.
struct Follower {
    hub: Arc<Hub>,
    /// Nothing has been loaded yet.
    first: bool,
    contents: Contents,
    files: Vec<PathBuf>,
    fingerprint: Fingerprint,
    stamp: Vec<Option<SystemTime>>,
    status_json: String,
    status_at: Instant,
    readers: BTreeMap<String, LiveReader>,
    /// Live logs whose process was seen dead.
    killed: BTreeSet<String>,
}

impl Follower {
    fn new(hub: Arc<Hub>) -> Follower {
        Follower {
            hub,
            first: true,
            contents: Contents::default(),
            files: Vec::new(),
            fingerprint: Fingerprint::new(),
            stamp: Vec::new(),
            status_json: String::new(),
            status_at: Instant::now(),
            readers: BTreeMap::new(),
            killed: BTreeSet::new(),
        }
    }

    fn look(&mut self) {
        let hub = self.hub.clone();
        let workspace = &hub.workspace;
        let files = self.hub.pipeline_files();
        let view = self.hub.view();
        let watched = WatchSet::new(&files, view.graph.as_deref(), workspace);
        let fingerprint = self.contents.fingerprint(&watched);
        let stamp = cache_stamp(&workspace.cache_dir);
        let reload = self.first || files != self.files || fingerprint != self.fingerprint;
        self.first = false;
        let runs_changed = self.follow_live(&view);
        let restatus = reload
            || runs_changed
            || stamp != self.stamp
            || self.status_at.elapsed() >= STATUS_AT_LEAST_EVERY;
        self.files = files;
        self.fingerprint = fingerprint;
        self.stamp = stamp;
        if !restatus {
            return;
        }
        let (graph, mut problems) = match reload {
            true => load(&self.files, &hub.overrides, &workspace.root),
            false => (view.graph.clone(), view.problems.clone()),
        };
        let status = graph
            .as_deref()
            .and_then(|graph| match dag::status(graph, workspace) {
                Ok(status) => Some(status),
                Err(error) => {
                    problems.push(LoadProblem {
                        file: String::new(),
                        message: format!("cannot read the status: {error}"),
                    });
                    None
                }
            });
        let status_json = serde_json::to_string(&status).unwrap_or_default();
        self.status_at = Instant::now();
        if !reload && status_json == self.status_json {
            return;
        }
        self.status_json = status_json;
        let generation = view.generation + 1;
        let next = View {
            generation,
            graph,
            status,
            problems,
        };
        *self.hub.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.hub
            .send("status", serde_json::json!({ "generation": generation }));
    }

    /// Reads what the live logs of unfinished stages gained, and announces it.
    /// True when a run started, ended or finished an epoch (the status may have
    /// changed: an entry, a checkpoint's resume point).
    fn follow_live(&mut self, view: &View) -> bool {
        let Some(status) = &view.status else { return false };
        // Which pipelines (and node labels) each unfinished key belongs to.
        let mut owners: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for pipeline in &status.pipelines {
            for stage in &pipeline.stages {
                let (Some(key), Some(kind)) = (&stage.key, StageKind::of_label(&stage.stage)) else {
                    continue;
                };
                let name = live_name(kind, key);
                if stage.state != StateName::Cached || self.readers.contains_key(&name) {
                    owners
                        .entry(name)
                        .or_default()
                        .push((pipeline.name.clone(), stage.stage.clone()));
                }
            }
        }
        let cache_dir = &self.hub.workspace.cache_dir;
        self.readers.retain(|name, _| owners.contains_key(name));
        let mut live = self.hub.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|name, _| owners.contains_key(name));
        let mut run_changed = false;
        for (name, stages) in &owners {
            let Some((kind, key)) = split_live_name(name) else {
                continue;
            };
            let reader = self
                .readers
                .entry(name.clone())
                .or_insert_with(|| LiveReader::new(live_path(cache_dir, kind, key)));
            let records = match reader.read() {
                LiveRead::Absent => {
                    run_changed |= live.remove(name).is_some();
                    continue;
                }
                LiveRead::Restarted(records) => {
                    live.insert(name.clone(), LiveTrack::default());
                    records
                }
                LiveRead::More(records) => records,
            };
            let track = live.entry(name.clone()).or_default();
            let mut changes: Vec<Change> = records.into_iter().map(|record| track.apply(record)).collect();
            // A killed process writes nothing: its death is seen here, once. (A
            // stage that succeeded removed its log before its process ended: gone
            // with its log, it was no kill.)
            let killed = track.state() == RunState::Killed && live_path(cache_dir, kind, key).exists();
            if killed && self.killed.insert(name.clone()) {
                changes.push(Change::Ended);
            } else if !killed {
                self.killed.remove(name);
            }
            for change in &changes {
                // An epoch's checkpoint changes the status too (its resume point).
                run_changed |= matches!(change, Change::Started | Change::Ended | Change::Epoch(_));
                for (pipeline, stage) in stages {
                    announce(&self.hub, pipeline, stage, key, track, change);
                }
            }
        }
        self.killed.retain(|name| owners.contains_key(name));
        run_changed
    }
}

fn split_live_name(name: &str) -> Option<(StageKind, &str)> {
    let (kind, key) = name.split_once('-')?;
    Some((StageKind::from_name(kind)?, key))
}

/// The `epoch` event's body: `val_rmse` is the validation RMSE in pixels
/// (`val_rmse_px`, under the name the API promises).
#[derive(Serialize)]
struct EpochEvent<'a> {
    pipeline: &'a str,
    stage: &'a str,
    key: &'a str,
    val_rmse: f64,
    #[serde(flatten)]
    point: &'a EpochPoint,
}

fn announce(hub: &Hub, pipeline: &str, stage: &str, key: &str, track: &LiveTrack, change: &Change) {
    match change {
        Change::Epoch(point) => hub.send(
            "epoch",
            EpochEvent {
                pipeline,
                stage,
                key,
                val_rmse: point.log.val_rmse_px,
                point,
            },
        ),
        Change::Batch(progress) => hub.send(
            "progress",
            serde_json::json!({
                "pipeline": pipeline, "stage": stage, "key": key,
                "epoch": progress.epoch, "epochs": track.epochs,
                "batch": progress.batch, "batches": progress.of,
                "eta_s": track.eta_s(), "at_ms": progress.at_ms,
            }),
        ),
        Change::Planned => {}
        Change::Started | Change::Ended => hub.send(
            "run",
            serde_json::json!({
                "pipeline": pipeline, "stage": stage, "key": key, "state": track.state(),
                "message": track.message,
            }),
        ),
    }
}

/// The indices of the pipelines whose names are given.
pub fn pipeline_indices(graph: &Graph, names: &BTreeSet<&str>) -> Vec<usize> {
    (0..graph.pipelines.len())
        .filter(|&p| names.contains(graph.pipelines[p].name.as_str()))
        .collect()
}
