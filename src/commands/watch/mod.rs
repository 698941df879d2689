//! `fkp watch`: runs the pipelines, then reruns what each saved edit made stale.
//!
//! The loop waits on one channel ([`events`]). A change to a watched file
//! ([`files`]) reloads the configuration; a configuration with errors is
//! reported and the last good plan kept. A good one runs as a new [`round`],
//! after the current round stops: at once when the stage it is building has a
//! new key (cancelled between batches, its checkpoint kept), or after that
//! stage when the edit leaves it alone. Ctrl-C and SIGTERM stop the same way
//! and end the watch with 130 / 143.

mod events;
pub(super) mod files;
mod round;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use clap::Args;

use super::serve::{ServeFlags, Serving};
use super::{Context, Error, Exit};
use crate::console::Console;
use crate::dag::{self, Graph, RunningStage, Stop};
use crate::workspace::Workspace;
use events::{Event, FileWatcher};
use files::{Contents, Fingerprint, WatchSet};
use round::{Round, RoundEnd};

#[derive(Args)]
pub(super) struct WatchArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
    /// How long after a file event it counts, in milliseconds (10-60000):
    /// editors save in several steps.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    debounce: u64,
    /// Poll for changes instead of using file system events (network file
    /// systems, containers where inotify does not reach).
    #[arg(long)]
    poll: bool,
    /// How often --poll looks, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, requires = "poll", value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    poll_interval: u64,
    /// Clear the screen at the start of each round.
    #[arg(long)]
    clear: bool,
    /// Also serve the live page, as `fkp serve` does for these pipelines
    /// (with --host, --port, --token and --open).
    #[arg(long)]
    serve: bool,
    #[command(flatten)]
    server: ServeFlags,
}

pub(super) fn execute(args: WatchArgs, context: &Context) -> Result<Exit, Error> {
    // No edit can fix a bad --set: say so now rather than wait for one.
    if !context.overrides.is_empty()
        && let Err(error) = context.load(&args.pipelines)
        && Graph::load(&args.pipelines).is_ok()
    {
        return Err(error.into());
    }
    let options = WatchOptions {
        run: super::run::local_options(context)?,
        files: args.pipelines,
        debounce: Duration::from_millis(args.debounce),
        poll: args.poll.then(|| Duration::from_millis(args.poll_interval)),
        clear: args.clear,
        overrides: context.overrides.clone(),
    };
    let serving = match args.serve {
        true => Some(Serving::start(
            context.workspace.clone(),
            options.files.clone(),
            options.overrides.clone(),
            &args.server,
            context.console,
        )?),
        false => None,
    };
    let signal = watch(&context.workspace, &options, context.console)?;
    if let Some(serving) = serving {
        serving.stop();
    }
    Ok(Exit::Signal(signal))
}

/// `fkp watch`'s settings.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The pipeline files named on the command line.
    pub files: Vec<PathBuf>,
    /// Quiet time after a file event before it counts (editors write in steps).
    pub debounce: Duration,
    /// Poll at this interval instead of using the platform's file events.
    pub poll: Option<Duration>,
    /// Clear the screen at the start of each round.
    pub clear: bool,
    /// `--set` overrides, applied in every round.
    pub overrides: Vec<crate::config::Override>,
    /// How each round builds (fkp.toml's jobs, the remote cache); each round
    /// has its own cancel.
    pub run: dag::RunOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: {why}")]
    NotAFile { path: PathBuf, why: &'static str },
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[from] notify::Error),
    #[error("cannot watch {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
    #[error("cannot catch Ctrl-C and SIGTERM: {0}")]
    Signals(std::io::Error),
}

/// Watches until a signal; returns the signal's number.
pub fn watch(workspace: &Workspace, options: &WatchOptions, console: &Console) -> Result<i32, WatchError> {
    if let Some(path) = options.files.iter().find(|f| !f.is_file()) {
        let why = match path.is_dir() {
            true => "it is a folder; name the pipeline files in it",
            false => "no such file",
        };
        return Err(WatchError::NotAFile {
            path: path.clone(),
            why,
        });
    }
    let (sender, events) = channel();
    let watcher = FileWatcher::new(options.debounce, options.poll, sender.clone())?;
    events::forward_signals(sender.clone())?;
    let mut watch = Watch {
        options,
        workspace,
        console,
        sender,
        watcher,
        watched_dirs: BTreeSet::new(),
        contents: Contents::default(),
        set: WatchSet::new(&options.files, None, workspace),
        seen: Fingerprint::new(),
        round: None,
        current: None,
        pending: None,
        rounds: 0,
        stopping: None,
    };
    watch.reload("first run".to_string())?;
    loop {
        let event = events
            .recv()
            .expect("the watch holds a sender, so the channel stays open");
        let exit = match event {
            Event::Files(paths) => {
                watch.files_changed(&paths)?;
                None
            }
            Event::WatcherFailed(message) => {
                console.warn(&format!("file watcher: {message}"));
                None
            }
            Event::RoundDone(end) => watch.round_done(end),
            Event::Signal(signal) => watch.signal(signal),
        };
        if let Some(signal) = exit {
            return Ok(signal);
        }
    }
}

/// A configuration that loaded, the content it was read from, and why it runs.
#[derive(Clone)]
struct Plan {
    graph: Arc<Graph>,
    content: Fingerprint,
    why: String,
}

struct Watch<'a> {
    options: &'a WatchOptions,
    workspace: &'a Workspace,
    console: &'a Console,
    sender: Sender<Event>,
    watcher: FileWatcher,
    watched_dirs: BTreeSet<PathBuf>,
    contents: Contents,
    /// The files of the last good plan and the named ones.
    set: WatchSet,
    /// Their content when the configuration was last read.
    seen: Fingerprint,
    round: Option<Round>,
    /// The plan the running round runs.
    current: Option<Plan>,
    /// A plan loaded while a round ran: it runs next.
    pending: Option<Plan>,
    rounds: usize,
    /// The signal being honoured by stopping the round.
    stopping: Option<i32>,
}

impl Watch<'_> {
    fn files_changed(&mut self, paths: &[PathBuf]) -> Result<(), WatchError> {
        if self.stopping.is_some() || !paths.iter().any(|p| self.set.concerns(p)) {
            return Ok(());
        }
        // A folder on the way to a watched file may have appeared: watch it
        // before reading, so a file created meanwhile is seen one way or the other.
        self.watcher.follow(&mut self.watched_dirs, self.set.dirs())?;
        let now = self.contents.fingerprint(&self.set);
        let changed = files::changed(&self.seen, &now);
        if changed.is_empty() {
            self.console.detail("a watched file was saved without a change");
            return Ok(());
        }
        let shown: Vec<String> = changed.iter().map(|p| self.shown(p)).collect();
        let why = match shown.as_slice() {
            [one] => format!("{one} changed"),
            [first, second] => format!("{first} and {second} changed"),
            [first, rest @ ..] => format!("{first} and {} more changed", rest.len()),
            [] => unreachable!("checked above"),
        };
        self.reload(why)
    }

    /// Reads the configuration again and runs it, or says what is wrong with it.
    fn reload(&mut self, why: String) -> Result<(), WatchError> {
        let loaded = Graph::load_with(&self.options.files, &self.options.overrides);
        let graph = match loaded {
            Ok(graph) => graph,
            Err(error) => {
                // The named files at least (all there is when the first load fails).
                self.watcher.follow(&mut self.watched_dirs, self.set.dirs())?;
                self.seen = self.contents.fingerprint(&self.set);
                self.console
                    .status(&format!("{why}: the configuration has errors"));
                // As `fkp run` prints it: file, line, column and hint.
                self.console.error(&error.to_string());
                self.console.status(match self.round {
                    Some(_) => "the running round goes on; waiting for a fix (Ctrl-C to stop)",
                    None => "waiting for a fix (Ctrl-C to stop)",
                });
                return Ok(());
            }
        };
        let set = WatchSet::new(&self.options.files, Some(&graph), self.workspace);
        for output in set.outputs.difference(&self.set.outputs) {
            self.console.warn(&format!(
                "not watching {}: it lies where fkp writes, so a change there would start the next round",
                self.shown(output)
            ));
        }
        self.set = set;
        self.seen = self.contents.fingerprint(&self.set);
        self.watcher.follow(&mut self.watched_dirs, self.set.dirs())?;
        let plan = Plan {
            graph: Arc::new(graph),
            content: self.seen.clone(),
            why,
        };
        let (Some(round), Some(current)) = (&self.round, &self.current) else {
            self.start_round(plan);
            return Ok(());
        };
        if plan.content == current.content {
            // An edit undone, or a broken save fixed: the running plan is the wanted one.
            if round.cancel.withdraw_after_stage() || !round.cancel.stop_requested() {
                self.pending = None;
                self.console
                    .status(&format!("{}: back to the plan that is running", plan.why));
            } else {
                self.console.status(&format!(
                    "{}: back to the plan that was running; it runs again once the round stops",
                    plan.why
                ));
                self.pending = Some(plan);
            }
            return Ok(());
        }
        let was_now = round.cancel.now();
        // Decided from the stage running now, applied only if it still runs.
        let note = loop {
            let running = round.cancel.running();
            let (stop, note) = stop_for(&plan.graph, self.workspace, &running);
            if round.cancel.request_if_still(&running, stop) {
                break note;
            }
        };
        let first = self.pending.is_none();
        if first || (round.cancel.now() && !was_now) {
            self.console.status(&format!("{}: {note}", plan.why));
        } else {
            self.console
                .status(&format!("{}: replaces the change waiting to run", plan.why));
        }
        self.pending = Some(plan);
        Ok(())
    }

    fn start_round(&mut self, plan: Plan) {
        self.rounds += 1;
        if self.options.clear {
            self.console.clear_screen();
        }
        self.console
            .status(&format!("── round {}: {} ──", self.rounds, plan.why));
        self.console.detail(&format!(
            "watching {} files in {} folders",
            self.set.files().len(),
            self.watched_dirs.len()
        ));
        self.round = Some(Round::start(
            self.rounds,
            plan.graph.clone(),
            &self.options.run,
            self.workspace,
            self.console,
            self.sender.clone(),
        ));
        self.current = Some(plan);
    }

    /// Reports a finished round, then runs the plan that waited for it, if any;
    /// `Some(exit code)` when the watch ends.
    fn round_done(&mut self, end: RoundEnd) -> Option<i32> {
        let round = self.round.take().expect("a round ends only after it started");
        let seconds = round.started.elapsed().as_secs_f64();
        let n = round.number;
        let end_cancelled = matches!(end, RoundEnd::Cancelled);
        match end {
            RoundEnd::Finished { headlines } => {
                for line in headlines {
                    self.console.result(&line);
                }
                self.console
                    .status(&format!("── round {n} done in {seconds:.2} s ──"));
            }
            RoundEnd::Cancelled => self
                .console
                .status(&format!("── round {n} stopped after {seconds:.2} s ──")),
            RoundEnd::Failed(line) => {
                self.console.failure(&line);
                self.console
                    .status(&format!("── round {n} failed after {seconds:.2} s ──"));
            }
        }
        let current = self.current.take();
        if let Some(signal) = self.stopping {
            return Some(signal);
        }
        match (self.pending.take(), end_cancelled, current) {
            (Some(plan), _, _) => self.start_round(plan),
            // Stopped for a change that was then undone: finish what it was doing.
            (None, true, Some(mut plan)) => {
                plan.why = "finishing the plan the undone change interrupted".to_string();
                self.start_round(plan);
            }
            _ => self.console.status("waiting for changes (Ctrl-C to stop)"),
        }
        None
    }

    /// The first Ctrl-C or SIGTERM stops a round that may be writing at its
    /// next safe point; a second one, or one while nothing writes, ends at once.
    fn signal(&mut self, signal: i32) -> Option<i32> {
        match &self.round {
            Some(round) if self.stopping.is_none() && round.holds_lock() => {
                round.cancel.request(Stop::Now);
                self.stopping = Some(signal);
                self.pending = None;
                self.console.status(
                    "stopping: the running stage stops at its next safe point (press Ctrl-C again to stop at once)",
                );
                None
            }
            _ => {
                if self.stopping.is_some() {
                    self.console
                        .status("stopped at once: the next `fkp run` resumes from the last checkpoint");
                }
                Some(signal)
            }
        }
    }

    fn shown(&self, path: &Path) -> String {
        let root = self
            .workspace
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.workspace.root.clone());
        path.strip_prefix(&root).unwrap_or(path).display().to_string()
    }
}

/// How the round building `running` must stop for the new plan: at once when
/// a running stage's key changed (or cannot be known any more), else after them.
fn stop_for(graph: &Graph, workspace: &Workspace, running: &[RunningStage]) -> (Stop, String) {
    // Between stages: stopping before the next one loses nothing.
    if running.is_empty() {
        return (Stop::AfterStage, "rerunning before the next stage".to_string());
    }
    let labels = running
        .iter()
        .map(|stage| format!("[{}]", stage.label))
        .collect::<Vec<_>>()
        .join(", ");
    // Unsure (the new plan's state cannot be read): let the stages finish, they are cached.
    let Ok(status) = dag::status(graph, workspace) else {
        return (Stop::AfterStage, format!("rerunning once {labels} finishes"));
    };
    let key_now = |stage: &RunningStage| {
        status
            .pipelines
            .iter()
            .find(|p| p.name == stage.pipeline)
            .and_then(|p| p.stages.iter().find(|s| s.stage == stage.label))
            .and_then(|s| s.key.clone())
    };
    match running
        .iter()
        .find(|stage| key_now(stage).as_deref() != Some(stage.key.as_str()))
    {
        None => (
            Stop::AfterStage,
            format!("{labels} is unaffected; rerunning once it finishes"),
        ),
        Some(outdated) => (
            Stop::Now,
            format!(
                "cancelling [{}] of `{}`, which the change outdates (its checkpoint is kept)",
                outdated.label, outdated.pipeline
            ),
        ),
    }
}
