//! Learning-rate schedules and early stopping, with state that a checkpoint
//! saves so a resumed run continues exactly where it stopped.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The learning rate never changes.
    None,
    /// `lr = base * gamma^epoch`.
    Exponential { gamma: f64 },
    /// Multiply by `factor` when the validation loss has not improved (by more
    /// than 0.01%, as PyTorch's ReduceLROnPlateau) for `patience` epochs.
    Plateau {
        factor: f64,
        patience: usize,
        min_lr: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over all epochs.
    Cosine { min_lr: f64 },
    /// Smith's one-cycle policy, as PyTorch's OneCycleLR: up from
    /// `base / div_factor` to `base` over the first `pct_start` of training,
    /// then down to `base / (div_factor * final_div_factor)`, both halves cosine.
    OneCycle {
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
    },
}

/// Where training stands, for a per-batch rate: `epoch` (1-based) and the
/// batch within it.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub epoch: usize,
    pub batch: usize,
    pub batches: usize,
    pub epochs: usize,
}

impl Step {
    /// Epochs done before this batch, with a fraction: 0 at the first batch.
    fn progress(&self) -> f64 {
        (self.epoch - 1) as f64 + self.batch as f64 / self.batches.max(1) as f64
    }
}

/// Cosine interpolation from `from` (at 0) to `to` (at 1).
fn cosine(from: f64, to: f64, fraction: f64) -> f64 {
    let fraction = fraction.clamp(0.0, 1.0);
    to + (from - to) * (1.0 + (std::f64::consts::PI * fraction).cos()) / 2.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub lr: f64,
    pub best: Option<f64>,
    pub bad_epochs: usize,
}

impl ScheduleState {
    pub fn new(lr: f64) -> Self {
        ScheduleState {
            lr,
            best: None,
            bad_epochs: 0,
        }
    }
}

impl Schedule {
    /// The rate for one batch: the schedule followed per batch, after a linear
    /// warm-up over the first `warmup_epochs` (its batches rise to the
    /// scheduled rate in equal steps; the schedule starts after it). Plateau's
    /// rate changes between epochs only, from `state`.
    pub fn rate(&self, state: &ScheduleState, base: f64, warmup_epochs: f64, at: Step) -> f64 {
        let t = at.progress();
        let after = (t - warmup_epochs).max(0.0);
        let span = (at.epochs as f64 - warmup_epochs).max(f64::MIN_POSITIVE);
        let scheduled = match *self {
            Schedule::None => base,
            Schedule::Exponential { gamma } => base * gamma.powf(after),
            Schedule::Cosine { min_lr } => cosine(base, min_lr, after / span),
            Schedule::Plateau { .. } => state.lr,
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let batches = at.batches.max(1);
                let steps = (at.epochs * batches) as f64;
                let step = ((at.epoch - 1) * batches + at.batch) as f64;
                let (peak, last) = (pct_start * steps - 1.0, steps - 1.0);
                let start = base / div_factor;
                if step <= peak {
                    cosine(start, base, step / peak.max(f64::MIN_POSITIVE))
                } else {
                    cosine(
                        base,
                        start / final_div_factor,
                        (step - peak) / (last - peak).max(f64::MIN_POSITIVE),
                    )
                }
            }
        };
        if t < warmup_epochs {
            let step = t * at.batches.max(1) as f64 + 1.0;
            scheduled * (step / (warmup_epochs * at.batches.max(1) as f64)).min(1.0)
        } else {
            scheduled
        }
    }

    /// After an epoch (1-based, just finished) with this validation loss:
    /// plateau's rate for the epochs that follow. Other schedules depend on the
    /// batch alone ([`Schedule::rate`]).
    pub fn advance(&self, state: &mut ScheduleState, epoch: usize, warmup_epochs: f64, val_loss: f64) {
        // Epochs still warming up do not count against the plateau's patience.
        if (epoch as f64) <= warmup_epochs {
            return;
        }
        state.lr = match *self {
            Schedule::Plateau {
                factor,
                patience,
                min_lr,
            } => {
                if state.best.is_none_or(|best| val_loss < best * (1.0 - 1e-4)) {
                    state.best = Some(val_loss);
                    state.bad_epochs = 0;
                    state.lr
                } else {
                    state.bad_epochs += 1;
                    if state.bad_epochs > patience {
                        state.bad_epochs = 0;
                        (state.lr * factor).max(min_lr)
                    } else {
                        state.lr
                    }
                }
            }
            _ => state.lr,
        };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// How much the validation loss must fall to count as an improvement.
    pub min_delta: f64,
    /// Keep the weights of the best epoch rather than the last.
    pub restore_best: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EarlyStoppingState {
    pub best_loss: Option<f64>,
    pub best_epoch: usize,
    pub bad_epochs: usize,
}

impl EarlyStoppingState {
    /// Records an epoch's validation loss; returns (improved, stop now).
    pub fn record(&mut self, rule: Option<&EarlyStopping>, epoch: usize, val_loss: f64) -> (bool, bool) {
        let min_delta = rule.map_or(0.0, |r| r.min_delta);
        let improved = self.best_loss.is_none_or(|best| val_loss < best - min_delta);
        if improved {
            self.best_loss = Some(val_loss);
            self.best_epoch = epoch;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        let stop = rule.is_some_and(|r| self.bad_epochs > r.patience);
        (improved, stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: usize, batch: usize) -> Step {
        Step {
            epoch,
            batch,
            batches: 4,
            epochs: 10,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn schedules_follow_their_formulas_batch_by_batch() {
        let state = ScheduleState::new(0.1);
        let exponential = Schedule::Exponential { gamma: 0.5 };
        assert!(close(exponential.rate(&state, 0.1, 0.0, at(3, 0)), 0.025));
        assert!(close(
            exponential.rate(&state, 0.1, 0.0, at(3, 2)),
            0.1 * 0.5f64.powf(2.5)
        ));
        let cosine = Schedule::Cosine { min_lr: 0.0 };
        assert!(close(cosine.rate(&state, 0.1, 0.0, at(1, 0)), 0.1));
        assert!(close(cosine.rate(&state, 0.1, 0.0, at(6, 0)), 0.05));
        assert!(cosine.rate(&state, 0.1, 0.0, at(10, 3)) < 0.1 * 1e-2);
        // One cycle: from base/25 up to base at 30%, then down to base/25/1e4.
        let one = Schedule::OneCycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        };
        // 40 steps: the peak at step 0.3 x 40 - 1 = 11, the floor at step 39.
        assert!(close(one.rate(&state, 0.1, 0.0, at(1, 0)), 0.004));
        assert!(close(one.rate(&state, 0.1, 0.0, at(3, 3)), 0.1));
        assert!(one.rate(&state, 0.1, 0.0, at(4, 0)) < 0.1);
        assert!(close(one.rate(&state, 0.1, 0.0, at(10, 3)), 0.004 / 1e4));
    }

    #[test]
    fn warm_up_rises_linearly_then_the_schedule_starts() {
        let state = ScheduleState::new(0.1);
        let cosine = Schedule::Cosine { min_lr: 0.0 };
        // Two warm-up epochs of 4 batches: 1/8, 2/8, ... 8/8 of the rate.
        let rates: Vec<f64> = (0..8)
            .map(|b| cosine.rate(&state, 0.1, 2.0, at(1 + b / 4, b % 4)))
            .collect();
        for (b, rate) in rates.iter().enumerate() {
            assert!(close(*rate, 0.1 * (b + 1) as f64 / 8.0), "batch {b}: {rate}");
        }
        // The cosine then runs over the 8 epochs left.
        assert!(close(cosine.rate(&state, 0.1, 2.0, at(3, 0)), 0.1));
        assert!(close(cosine.rate(&state, 0.1, 2.0, at(7, 0)), 0.05));
    }

    #[test]
    fn plateau_cuts_the_rate_after_patience_epochs_without_improvement() {
        let schedule = Schedule::Plateau {
            factor: 0.1,
            patience: 1,
            min_lr: 1e-4,
        };
        let mut state = ScheduleState::new(0.01);
        for (epoch, loss, expected) in [
            (1, 1.0, 0.01),
            (2, 1.0, 0.01),
            (3, 1.0, 0.001),
            (4, 0.5, 0.001),
            (5, 0.6, 0.001),
            (6, 0.6, 0.0001),
            (7, 0.6, 0.0001),
            (8, 0.6, 0.0001),
        ] {
            schedule.advance(&mut state, epoch, 0.0, loss);
            assert!((state.lr - expected).abs() < 1e-12, "epoch {epoch}: {}", state.lr);
        }
    }

    #[test]
    fn early_stopping_waits_patience_epochs() {
        let rule = EarlyStopping {
            patience: 2,
            min_delta: 0.01,
            restore_best: true,
        };
        let mut state = EarlyStoppingState::default();
        assert_eq!(state.record(Some(&rule), 1, 1.0), (true, false));
        assert_eq!(
            state.record(Some(&rule), 2, 0.995),
            (false, false),
            "below min_delta"
        );
        assert_eq!(state.record(Some(&rule), 3, 0.9), (true, false));
        assert_eq!(state.record(Some(&rule), 4, 0.95), (false, false));
        assert_eq!(state.record(Some(&rule), 5, 0.95), (false, false));
        assert_eq!(state.record(Some(&rule), 6, 0.95), (false, true));
        assert_eq!(state.best_epoch, 3);
        assert_eq!(EarlyStoppingState::default().record(None, 1, 1.0), (true, false));
    }
}
