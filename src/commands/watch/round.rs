//! One round of `fkp watch`: `fkp run` of the current plan on a worker thread,
//! holding the workspace lock only while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::events::Event;
use crate::console::Console;
use crate::dag::{self, Cancel, DagError, Graph, RunOptions, RunReport};
use crate::stages::StageKind;
use crate::stages::evaluate::{METRICS_FILE, Metrics};
use crate::text::error_chain;
use crate::training::host_memory;
use crate::workspace::{Wait, Workspace};

/// How a round ended, as the watch loop reports it.
pub enum RoundEnd {
    /// Every stage is built: each pipeline's headline numbers.
    Finished {
        headlines: Vec<String>,
    },
    Cancelled,
    /// What failed, in one line.
    Failed(String),
}

/// A round in progress.
pub struct Round {
    pub number: usize,
    pub cancel: Cancel,
    pub started: Instant,
    locked: Arc<AtomicBool>,
}

impl Round {
    /// Starts round `number` of `graph`; its end arrives as [`Event::RoundDone`].
    pub fn start(
        number: usize,
        graph: Arc<Graph>,
        run: &RunOptions,
        workspace: &Workspace,
        console: &Console,
        events: Sender<Event>,
    ) -> Round {
        let round = Round {
            number,
            cancel: Cancel::default(),
            started: Instant::now(),
            locked: Arc::new(AtomicBool::new(false)),
        };
        let options = RunOptions {
            cancel: round.cancel.clone(),
            ..run.clone()
        };
        let (workspace, console, locked) = (workspace.clone(), console.clone(), round.locked.clone());
        std::thread::spawn(move || {
            let end = match workspace.lock(Wait::Yes, "fkp watch", &console) {
                Err(error) => RoundEnd::Failed(format!("  failed: {error}")),
                Ok(lock) => {
                    locked.store(true, Ordering::SeqCst);
                    match dag::run(&graph, &lock, &options, &console) {
                        Ok(report) => RoundEnd::Finished {
                            headlines: headlines(&graph, &report),
                        },
                        Err(DagError::Cancelled { .. }) => RoundEnd::Cancelled,
                        Err(error) => RoundEnd::Failed(failure_line(&error)),
                    }
                }
            };
            // The watcher idles until the next edit: hand back what training held.
            host_memory::release_free_memory();
            let _ = events.send(Event::RoundDone(end));
        });
        round
    }

    /// Whether the round holds the workspace lock (it may be writing).
    pub fn holds_lock(&self) -> bool {
        self.locked.load(Ordering::SeqCst)
    }
}

/// `  train      failed: <why>` for a stage's failure, `  failed: <why>` otherwise.
fn failure_line(error: &DagError) -> String {
    match error {
        DagError::Stage { stage, source, .. } => {
            format!("  {:<10} failed: {}", stage.name(), error_chain(source.as_ref()))
        }
        other => format!("  failed: {}", error_chain(other)),
    }
}

/// `<pipeline>: <headline>` for each pipeline with an evaluation; a damaged
/// `metrics.json` is named, not skipped.
fn headlines(graph: &Graph, report: &RunReport) -> Vec<String> {
    graph
        .pipelines
        .iter()
        .filter_map(|pipeline| {
            let data_dir = report.data_dir(&pipeline.name, StageKind::Evaluate)?;
            let line = match Metrics::read(&data_dir.join(METRICS_FILE)) {
                Ok(metrics) => metrics.headline(),
                Err(error) if error.is_not_found() => return None,
                Err(error) => error.to_string(),
            };
            Some(format!("{}: {line}", pipeline.name))
        })
        .collect()
}
