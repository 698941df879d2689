//! Everything `fkp watch` waits for arrives on one channel: debounced file
//! events (notify), signals (signal-hook) and the end of a round. The loop
//! blocks on it, so an idle watch uses no CPU.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Duration;

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};
use notify_debouncer_mini::{Config, DebounceEventResult, Debouncer, new_debouncer_opt};
use signal_hook::consts::{SIGINT, SIGTERM};

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
    Native(Debouncer<RecommendedWatcher>),
    Poll(Debouncer<PollWatcher>),
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
                Ok(found) => Event::Files(found.into_iter().map(|e| e.path).collect()),
                Err(error) => Event::WatcherFailed(error.to_string()),
            };
            let _ = events.send(event);
        };
        let config = Config::default().with_timeout(debounce).with_batch_mode(false);
        let watcher = match poll {
            None => FileWatcher::Native(new_debouncer_opt(config, handler)?),
            Some(interval) => {
                let notify = notify::Config::default().with_poll_interval(interval);
                FileWatcher::Poll(new_debouncer_opt(config.with_notify_config(notify), handler)?)
            }
        };
        Ok(watcher)
    }

    fn watcher(&mut self) -> &mut dyn Watcher {
        match self {
            FileWatcher::Native(debouncer) => debouncer.watcher(),
            FileWatcher::Poll(debouncer) => debouncer.watcher(),
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
            let _ = self.watcher().unwatch(gone);
        }
        for dir in dirs.difference(watched) {
            self.watcher()
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: dir.clone(),
                    source,
                })?;
        }
        *watched = dirs;
        Ok(())
    }
}

/// Delivers SIGINT and SIGTERM as events instead of ending the process, so a
/// running stage can stop at a safe point.
pub fn forward_signals(events: Sender<Event>) -> Result<(), WatchError> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(WatchError::Signals)?;
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
