//! The training engine: an object-safe [`Session`] over any network and device,
//! learning-rate schedules, early stopping, and batch assembly with augmentation.
//! The train stage (`src/stages/train/`) drives it epoch by epoch.

mod batch;
pub mod ensemble;
pub mod host_memory;
pub mod numerics;
mod schedule;
mod session;
pub mod tta;

pub use batch::{Batch, Normalisation, assemble};
pub use ensemble::predict_ensemble;
pub use schedule::{EarlyStopping, EarlyStoppingState, Schedule, ScheduleState, Step};
pub use session::{
    OptimizerKind, OptimizerSettings, Session, StepLoss, Weights, open_session, predict_pixels,
};
pub use tta::{Tta, predict_pixels_tta};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the {device} device failed: {message}")]
    Device { device: &'static str, message: String },
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("cannot write {path}: {message}")]
    Write {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot read {path}: {message}")]
    Read {
        path: std::path::PathBuf,
        message: String,
    },
    #[error(transparent)]
    OutOfMemory(#[from] crate::buffers::OutOfMemory),
    #[error("DSNT's regulariser works on the maps of a final soft_argmax, and this network has none")]
    NoMapsToRegularise,
}
