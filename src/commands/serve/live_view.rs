//! What a live log says about a stage run: its curve so far, the current
//! epoch's batches, and whether it runs, was cancelled, failed or was killed.

use serde::Serialize;

use crate::dag::live::{EndOutcome, LiveRecord, process_is_gone};
use crate::stages::train::EpochLog;

/// One epoch of a curve: the values of `history.csv` and `timing.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochPoint {
    #[serde(flatten)]
    pub log: EpochLog,
    /// Absent for epochs whose timing is unknown.
    pub images_per_s: Option<f64>,
    pub seconds: Option<f64>,
    /// When the training wrote it (live records only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// A stage run as its live log tells it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveTrack {
    pub pipeline: String,
    pub pid: u32,
    pub host: String,
    pub started_ms: u64,
    /// Epochs the training runs to, and batches per epoch (0 until it says).
    pub epochs: usize,
    pub batches: usize,
    pub curve: Vec<EpochPoint>,
    /// The epoch under way and the batches of it done.
    pub batch: Option<BatchProgress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<EndOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BatchProgress {
    pub epoch: usize,
    pub batch: usize,
    pub of: usize,
    pub at_ms: u64,
}

/// A run's state, as the overview shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Cancelled,
    Failed,
    /// No end record, and its process is gone (kill -9, a crash, a power cut).
    Killed,
}

/// What a record changed, for the events the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Started,
    /// The training said where it starts and how long it runs: no news for the page.
    Planned,
    Epoch(EpochPoint),
    Batch(BatchProgress),
    Ended,
}

impl LiveTrack {
    /// Folds one record in.
    pub fn apply(&mut self, record: LiveRecord) -> Change {
        match record {
            LiveRecord::Start {
                pid,
                host,
                pipeline,
                at_ms,
            } => {
                self.pid = pid;
                self.host = host;
                self.pipeline = pipeline;
                self.started_ms = at_ms;
                self.batch = None;
                self.ended = None;
                self.message = None;
                Change::Started
            }
            LiveRecord::Resume {
                after_epoch,
                epochs,
                batches,
                ..
            } => {
                // A resumed run redoes what its checkpoint did not keep.
                self.curve.retain(|point| point.log.epoch <= after_epoch);
                self.epochs = epochs;
                self.batches = batches;
                Change::Planned
            }
            LiveRecord::Batch {
                epoch,
                batch,
                of,
                at_ms,
            } => {
                let progress = BatchProgress {
                    epoch,
                    batch,
                    of,
                    at_ms,
                };
                self.batch = Some(progress);
                Change::Batch(progress)
            }
            LiveRecord::Epoch {
                log,
                images_per_s,
                seconds,
                at_ms,
            } => {
                let epoch = log.epoch;
                let point = EpochPoint {
                    log,
                    images_per_s: Some(images_per_s),
                    seconds: Some(seconds),
                    at_ms: Some(at_ms),
                };
                self.curve.retain(|p| p.log.epoch < epoch);
                self.curve.push(point.clone());
                Change::Epoch(point)
            }
            LiveRecord::End { outcome, message, .. } => {
                self.ended = Some(outcome);
                self.message = message;
                self.batch = None;
                Change::Ended
            }
        }
    }

    pub fn state(&self) -> RunState {
        match self.ended {
            Some(EndOutcome::Cancelled) => RunState::Cancelled,
            Some(EndOutcome::Failed) => RunState::Failed,
            None if process_is_gone(self.pid, &self.host) => RunState::Killed,
            None => RunState::Running,
        }
    }

    /// Seconds left, from this run's mean epoch time and the current epoch's
    /// batches; `None` before an epoch ends and once the run stopped.
    pub fn eta_s(&self) -> Option<f64> {
        let timed: Vec<f64> = self.curve.iter().filter_map(|p| p.seconds).collect();
        if timed.is_empty() || self.epochs == 0 || self.state() != RunState::Running {
            return None;
        }
        let per_epoch = timed.iter().sum::<f64>() / timed.len() as f64;
        let done = self.curve.last().map_or(0, |p| p.log.epoch);
        let current = match self.batch {
            Some(b) if b.epoch > done && b.of > 0 => b.batch as f64 / b.of as f64,
            _ => 0.0,
        };
        let left = self.epochs.saturating_sub(done) as f64 - current;
        Some((left * per_epoch).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::live::host_name;

    fn epoch(n: usize, seconds: f64) -> LiveRecord {
        LiveRecord::Epoch {
            log: EpochLog {
                epoch: n,
                train_loss: 1.0 / n as f64,
                train_dsnt: None,
                val_loss: 1.0,
                val_rmse_px: 10.0 / n as f64,
                val_mae_px: 1.0,
                lr: 1e-3,
            },
            images_per_s: 50.0,
            seconds,
            at_ms: 0,
        }
    }

    fn start(pid: u32) -> LiveRecord {
        LiveRecord::Start {
            pid,
            host: host_name(),
            pipeline: "p".into(),
            at_ms: 0,
        }
    }

    fn resume(after_epoch: usize) -> LiveRecord {
        LiveRecord::Resume {
            after_epoch,
            epochs: 10,
            batches: 4,
            at_ms: 0,
        }
    }

    #[test]
    fn a_resumed_run_continues_its_curve_from_the_checkpoint() {
        let mut track = LiveTrack::default();
        track.apply(start(std::process::id()));
        track.apply(resume(0));
        for n in 1..=3 {
            track.apply(epoch(n, 2.0));
        }
        // Killed after epoch 3 was logged but before its checkpoint: resumes after 2.
        track.apply(start(std::process::id()));
        track.apply(resume(2));
        let epochs: Vec<usize> = track.curve.iter().map(|p| p.log.epoch).collect();
        assert_eq!(epochs, [1, 2]);
        track.apply(epoch(3, 2.0));
        assert_eq!(track.curve.len(), 3);
        assert_eq!(track.state(), RunState::Running);
    }

    #[test]
    fn the_eta_counts_the_epochs_and_batches_left() {
        let mut track = LiveTrack::default();
        track.apply(start(std::process::id()));
        track.apply(resume(0));
        assert_eq!(track.eta_s(), None);
        track.apply(epoch(1, 3.0));
        track.apply(epoch(2, 5.0));
        assert_eq!(track.eta_s(), Some(8.0 * 4.0));
        track.apply(LiveRecord::Batch {
            epoch: 3,
            batch: 1,
            of: 4,
            at_ms: 0,
        });
        assert_eq!(track.eta_s(), Some(7.75 * 4.0));
    }

    #[test]
    fn ended_and_killed_runs_say_so() {
        let mut track = LiveTrack::default();
        track.apply(start(std::process::id()));
        track.apply(LiveRecord::End {
            outcome: EndOutcome::Cancelled,
            message: None,
            at_ms: 0,
        });
        assert_eq!(track.state(), RunState::Cancelled);
        // A pid no process has (above the kernel's pid_max).
        track.apply(start(u32::MAX));
        assert_eq!(track.state(), RunState::Killed);
        track.apply(resume(0));
        track.apply(epoch(1, 2.0));
        assert_eq!(track.eta_s(), None, "a stopped run has no time left");
    }
}
