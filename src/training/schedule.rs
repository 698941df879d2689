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
    /// The rate for the epoch after `epoch` (1-based, just finished), given its
    /// validation loss.
    pub fn advance(&self, state: &mut ScheduleState, base: f64, epoch: usize, epochs: usize, val_loss: f64) {
        state.lr = match *self {
            Schedule::None => base,
            Schedule::Exponential { gamma } => base * gamma.powi(epoch as i32),
            Schedule::Cosine { min_lr } => {
                let progress = (epoch as f64 / epochs.max(1) as f64).min(1.0);
                min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
            }
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

    #[test]
    fn exponential_and_cosine_follow_their_formulas() {
        let mut state = ScheduleState::new(0.1);
        Schedule::Exponential { gamma: 0.5 }.advance(&mut state, 0.1, 2, 10, 1.0);
        assert!((state.lr - 0.025).abs() < 1e-12);
        Schedule::Cosine { min_lr: 0.0 }.advance(&mut state, 0.1, 5, 10, 1.0);
        assert!((state.lr - 0.05).abs() < 1e-12);
        Schedule::Cosine { min_lr: 0.0 }.advance(&mut state, 0.1, 10, 10, 1.0);
        assert!(state.lr.abs() < 1e-12);
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
            schedule.advance(&mut state, 0.01, epoch, 10, loss);
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
