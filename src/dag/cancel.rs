//! Stopping a run from another thread (`fkp watch` when an edit outdates the
//! work, or on Ctrl-C). A stop never leaves a half-written entry: the runner
//! checks before each stage, and a stage that honours [`Cancel::now`] returns
//! early; its pending entry is dropped and its checkpoint kept for a resume.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// How soon a run should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Let the running stage finish (and be cached), start no other.
    AfterStage = 1,
    /// Stop the running stage too, at its next safe point.
    Now = 2,
}

/// The stage a run is building, as the runner announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningStage {
    pub pipeline: String,
    /// The node's label (`train`, `train#2`).
    pub label: String,
    pub key: String,
}

/// Shared between a run and whoever may stop it; clones share one state.
/// The default is a token nobody holds, for runs that are never stopped.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stop: AtomicU8,
    /// Every stage being built now (several under `fkp run -j`), in start order.
    running: Mutex<Vec<RunningStage>>,
}

impl Cancel {
    /// Asks the run to stop; a later, softer request does not weaken an earlier one.
    pub fn request(&self, stop: Stop) {
        self.inner.stop.fetch_max(stop as u8, Ordering::SeqCst);
    }

    /// Asks the run to stop if it is still building exactly `seen` (nothing,
    /// between stages): a request decided from what was running must not apply
    /// to a stage that started meanwhile. Returns whether it applied.
    pub fn request_if_still(&self, seen: &[RunningStage], stop: Stop) -> bool {
        let running = self.lock_running();
        let still = running.as_slice() == seen;
        if still {
            self.request(stop);
        }
        still
    }

    /// Takes back a request to stop after the running stage (the edit that asked
    /// for it was undone). Returns false when there was none or it was to stop
    /// at once, which cannot be taken back.
    pub fn withdraw_after_stage(&self) -> bool {
        self.inner
            .stop
            .compare_exchange(Stop::AfterStage as u8, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Whether the run should start no further stage.
    pub fn stop_requested(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst) != 0
    }

    /// Whether a running stage should stop at its next safe point (between
    /// training batches).
    pub fn now(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst) >= Stop::Now as u8
    }

    /// The stages being built right now.
    pub fn running(&self) -> Vec<RunningStage> {
        self.lock_running().clone()
    }

    /// Announces the stage about to be built; false if a stop was requested
    /// before it (then it must not start).
    pub(super) fn begin_stage(&self, stage: RunningStage) -> bool {
        self.lock_running().push(stage);
        !self.stop_requested()
    }

    pub(super) fn end_stage(&self, stage: &RunningStage) {
        self.lock_running().retain(|running| running != stage);
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Vec<RunningStage>> {
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_softer_request_never_weakens_a_stronger_one() {
        let cancel = Cancel::default();
        assert!(!cancel.stop_requested() && !cancel.now());
        cancel.request(Stop::AfterStage);
        assert!(cancel.stop_requested() && !cancel.now());
        cancel.request(Stop::Now);
        cancel.request(Stop::AfterStage);
        assert!(cancel.now());
        let clone = cancel.clone();
        assert!(clone.now(), "clones share the request");
    }

    #[test]
    fn a_request_decided_between_stages_stops_the_stage_that_starts_meanwhile() {
        let cancel = Cancel::default();
        let seen = cancel.running();
        let train = RunningStage {
            pipeline: "p".to_string(),
            label: "train".to_string(),
            key: "k".to_string(),
        };
        assert!(cancel.begin_stage(train.clone()));
        assert!(
            !cancel.request_if_still(&seen, Stop::AfterStage),
            "train started meanwhile"
        );
        assert!(!cancel.stop_requested());
        assert!(cancel.request_if_still(std::slice::from_ref(&train), Stop::AfterStage));
        cancel.end_stage(&train);
        assert!(!cancel.begin_stage(train), "no stage starts after a stop request");
        assert!(cancel.withdraw_after_stage());
        assert!(!cancel.stop_requested());
        cancel.request(Stop::Now);
        assert!(!cancel.withdraw_after_stage(), "a stop at once stays");
        assert!(cancel.now());
    }
}
