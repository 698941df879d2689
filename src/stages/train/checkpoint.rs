//! Training checkpoints in `.fkp/checkpoints/train-<key>/`, written after every
//! epoch so that a killed run resumes where it stopped.
//!
//! `state.json` is the commit point. The weights, the optimiser state, the
//! moving average of the weights (`ema`) and the best weights (those
//! predictions use) are files named by the epoch they hold (`weights-00003.safetensors`);
//! a new epoch's files are written first, then `state.json` is replaced atomically
//! to point at them, and only then are the files it no longer names removed. A
//! kill at any moment leaves a `state.json` whose files are all complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Progress, TrainStageError};
use crate::console::Console;
use crate::fsutil;
use crate::render::RenderError;
use crate::training::{Session, Weights};

const STATE: &str = "state.json";

/// What `state.json` holds.
#[derive(Serialize, Deserialize)]
struct State {
    progress: Progress,
    /// Whether `optimizer-<epoch>` was written (SGD without momentum has no
    /// state to save).
    has_optimizer: bool,
}

/// What [`Checkpoint::restore`] did.
pub enum Restored {
    /// The session continues from the checkpoint, after the epochs of this.
    Resumed(Progress),
    /// No checkpoint, or one refused before the session was touched.
    Nothing,
    /// A checkpoint refused after the session had taken some of its state
    /// (weights restored, the optimiser's not): the session must not train.
    Discarded,
}

pub struct Checkpoint<'a> {
    dir: &'a Path,
}

fn file(kind: &str, epoch: usize) -> String {
    format!("{kind}-{epoch:05}.safetensors")
}

impl<'a> Checkpoint<'a> {
    pub fn new(dir: &'a Path) -> Self {
        Checkpoint { dir }
    }

    /// How many epochs the checkpoint holds, read without loading it: what
    /// `fkp status` shows. `None` when there is none (or it cannot be read).
    pub fn epochs_done(&self) -> Option<usize> {
        let bytes = std::fs::read(self.dir.join(STATE)).ok()?;
        let state: State = serde_json::from_slice(&bytes).ok()?;
        Some(state.progress.epochs_done)
    }

    /// Restores the session from the checkpoint, if there is a usable one. One
    /// that cannot be read, or that lacks the optimiser's state (without which
    /// the resumed run would not end as an uninterrupted one), is reported and
    /// removed: training starts over, from a fresh session if this one took
    /// some of its state ([`Restored::Discarded`]).
    pub fn restore(&self, session: &mut dyn Session, console: &Console) -> Restored {
        let state_path = self.dir.join(STATE);
        let Ok(bytes) = std::fs::read(&state_path) else {
            return Restored::Nothing;
        };
        let mut touched = false;
        let restored = (|| -> Result<Progress, String> {
            let state: State = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if !state.has_optimizer && session.has_optimizer_state() {
                return Err("it has no optimiser state".to_string());
            }
            let epoch = state.progress.epochs_done;
            touched = true;
            session
                .load_weights(&self.dir.join(file("weights", epoch)), Weights::Training)
                .map_err(|e| e.to_string())?;
            if session.averages() {
                session
                    .load_weights(&self.dir.join(file("average", epoch)), Weights::Predicting)
                    .map_err(|e| e.to_string())?;
            }
            if state.has_optimizer {
                session
                    .load_optimizer(&self.dir.join(file("optimizer", epoch)))
                    .map_err(|e| e.to_string())?;
            }
            session.set_lr(state.progress.schedule.lr);
            Ok(state.progress)
        })();
        match restored {
            Ok(progress) => Restored::Resumed(progress),
            Err(why) => {
                console.warn(&format!(
                    "cannot resume from {} ({why}); training starts over",
                    self.dir.display()
                ));
                let _ = std::fs::remove_dir_all(self.dir);
                if touched {
                    Restored::Discarded
                } else {
                    Restored::Nothing
                }
            }
        }
    }

    /// Keeps the weights of `epoch`, the best so far.
    pub fn save_best(&self, session: &dyn Session, epoch: usize) -> Result<(), TrainStageError> {
        self.write_weights(session, &file("best", epoch), Weights::Predicting)
    }

    /// The best weights recorded in `progress`, if they were saved.
    pub fn best(&self, progress: &Progress) -> Option<PathBuf> {
        let path = self.dir.join(file("best", progress.early.best_epoch));
        path.is_file().then_some(path)
    }

    /// Saves the state after `progress.epochs_done` epochs.
    pub fn save(&self, session: &dyn Session, progress: &Progress) -> Result<(), TrainStageError> {
        let epoch = progress.epochs_done;
        self.write_weights(session, &file("weights", epoch), Weights::Training)?;
        if session.averages() {
            self.write_weights(session, &file("average", epoch), Weights::Predicting)?;
        }
        let optimizer = self.dir.join(file("optimizer", epoch));
        // (streamed, synced and renamed into place, as the weights)
        let has_optimizer = session.save_optimizer(&optimizer)?;
        let state = State {
            progress: progress.clone(),
            has_optimizer,
        };
        let state_path = self.dir.join(STATE);
        fsutil::write_json(&state_path, &state).map_err(|e| RenderError::write(&state_path, e))?;
        // Only now may the files of earlier epochs go.
        let keep = [
            file("weights", epoch),
            file("optimizer", epoch),
            file("average", epoch),
            file("best", progress.early.best_epoch),
            STATE.to_string(),
        ];
        for entry in std::fs::read_dir(self.dir)
            .map_err(|e| RenderError::write(self.dir, e))?
            .flatten()
        {
            if !keep.iter().any(|name| entry.file_name() == name.as_str()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn write_weights(
        &self,
        session: &dyn Session,
        name: &str,
        which: Weights,
    ) -> Result<(), TrainStageError> {
        // (synced before it is renamed into place)
        session.save_weights(&self.dir.join(name), which)?;
        Ok(())
    }
}
