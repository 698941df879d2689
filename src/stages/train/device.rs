//! Choosing where to train: `device = "cpu" | "cuda" | "auto"`.

use dfdx::prelude::*;

use super::TrainStageError;
use super::config::{DeviceChoice, TrainConfig};
use crate::console::Console;
use crate::models::ModelSpec;
use crate::training::{Session, open_session};

/// Opens a training session on the configured device; returns it and the
/// device's name.
pub fn open(
    config: &TrainConfig,
    spec: &ModelSpec,
    console: &Console,
) -> Result<(Box<dyn Session>, &'static str), TrainStageError> {
    match config.device {
        DeviceChoice::Cpu => cpu(config, spec),
        DeviceChoice::Cuda => cuda(config, spec).map_err(TrainStageError::Device),
        DeviceChoice::Auto => match cuda(config, spec) {
            Ok(session) => Ok(session),
            Err(why) => {
                console.warn(&format!("device = \"auto\": {why}; training on the CPU"));
                cpu(config, spec)
            }
        },
    }
}

fn cpu(config: &TrainConfig, spec: &ModelSpec) -> Result<(Box<dyn Session>, &'static str), TrainStageError> {
    let dev = Cpu::seed_from_u64(config.seed);
    // Reusing freed buffers instead of faulting in fresh memory for every
    // operation about doubles dfdx's CPU speed.
    dev.enable_cache();
    Ok((open_session(dev, "cpu", spec, &config.optimizer)?, "cpu"))
}

#[cfg(feature = "cuda")]
fn cuda(config: &TrainConfig, spec: &ModelSpec) -> Result<(Box<dyn Session>, &'static str), String> {
    let dev = Cuda::try_seed_from_u64(config.seed).map_err(|e| format!("no usable CUDA GPU ({e:?})"))?;
    dev.enable_cache();
    let session = open_session(dev, "cuda", spec, &config.optimizer).map_err(|e| e.to_string())?;
    Ok((session, "cuda"))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &TrainConfig, _: &ModelSpec) -> Result<(Box<dyn Session>, &'static str), String> {
    Err("this fkp was built without CUDA (rebuild with `cargo build --release --features cuda`)".to_string())
}
