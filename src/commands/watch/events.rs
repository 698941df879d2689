//! Everything `fkp watch` waits for arrives on one channel: debounced file
//! events (notify), signals (signal-hook) and the end of a round. The loop
//! blocks on it, so an idle watch uses no CPU.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache, new_debouncer_opt,
};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::WatchError;
use super::round::RoundEnd;

pub enum Event {
    /// Paths that changed, after the debounce.
    Files(Vec<PathBuf>),
    /// The watcher could not deliver events (a watch limit, a removed folder).
    WatcherFailed(String),
    Signal(i32),
    RoundDone(RoundEnd),
}

/// inotify (or the platform's native watcher), or polling for file systems it
/// does not reach (NFS, some container mounts).
pub enum FileWatcher {
    Native(Debouncer<RecommendedWatcher, RecommendedCache>),
    Poll(Debouncer<PollWatcher, RecommendedCache>),
}

impl FileWatcher {
    /// A watcher sending to `events`; `poll` switches to polling at that interval.
    pub fn new(
        debounce: Duration,
        poll: Option<Duration>,
        events: Sender<Event>,
    ) -> Result<FileWatcher, WatchError> {
        let handler = move |result: DebounceEventResult| {
            let event = match result {
                Ok(found) => {
                    let paths: Vec<PathBuf> = found
                        .into_iter()
                        .filter(changes)
                        .flat_map(|e| e.event.paths)
                        .collect();
                    if paths.is_empty() {
                        return;
                    }
                    Event::Files(paths)
                }
                Err(errors) => {
                    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    Event::WatcherFailed(messages.join("; "))
                }
            };
            let _ = events.send(event);
        };
        let cache = RecommendedCache::new();
        // The debouncer wakes every tick even when idle: a quarter of the
        // debounce, but not so often that a short debounce costs a core.
        let tick = Some((debounce / 4).max(debounce.min(Duration::from_millis(25))));
        let watcher = match poll {
            None => FileWatcher::Native(new_debouncer_opt(
                debounce,
                tick,
                handler,
                cache,
                notify::Config::default(),
            )?),
            Some(interval) => {
                let config = notify::Config::default().with_poll_interval(interval);
                FileWatcher::Poll(new_debouncer_opt(debounce, tick, handler, cache, config)?)
            }
        };
        Ok(watcher)
    }

    fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            FileWatcher::Native(debouncer) => debouncer.watch(dir, RecursiveMode::NonRecursive),
            FileWatcher::Poll(debouncer) => debouncer.watch(dir, RecursiveMode::NonRecursive),
        }
    }

    fn unwatch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            FileWatcher::Native(debouncer) => debouncer.unwatch(dir),
            FileWatcher::Poll(debouncer) => debouncer.unwatch(dir),
        }
    }

    /// Watches `dirs` (each without its subfolders), dropping folders no
    /// longer needed.
    pub fn follow(
        &mut self,
        watched: &mut BTreeSet<PathBuf>,
        dirs: BTreeSet<PathBuf>,
    ) -> Result<(), WatchError> {
        for gone in watched.difference(&dirs) {
            // A folder that was removed has no watch left to drop.
            let _ = self.unwatch(gone);
        }
        for dir in dirs.difference(watched) {
            self.watch(dir).map_err(|source| WatchError::Watch {
                path: dir.clone(),
                source,
            })?;
        }
        *watched = dirs;
        Ok(())
    }
}

/// Whether an event can change a file. Opening and reading one cannot, and
/// fkp reads every watched file each round: counting those would loop.
fn changes(event: &DebouncedEvent) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Delivers SIGINT, SIGTERM and SIGHUP (a closed terminal) as events instead of
/// ending the process, so a running stage can stop at a safe point.
pub fn forward_signals(events: Sender<Event>) -> Result<(), WatchError> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(WatchError::Signals)?;
    std::thread::Builder::new()
        .name("fkp-signals".to_string())
        .spawn(move || {
            for signal in signals.forever() {
                if events.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        })
        .map_err(WatchError::Signals)?;
    Ok(())
}
