//! Choosing where to train: `device = "cpu" | "cuda" | "auto"`. The choice is
//! resolved before the cache key is made, so "auto" files CPU and CUDA results
//! under different keys.

use dfdx::prelude::*;

use super::TrainStageError;
use super::config::{DeviceChoice, TrainConfig};
use crate::console::Console;
use crate::models::ModelSpec;
use crate::models::loss::LossFunction;
use crate::training::{
    OptimizerKind, OptimizerSettings, Session, TrainError, host_memory, numerics, open_session,
};

/// The device a `[train] device` choice resolves to on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Cpu {
        /// Why "auto" did not pick CUDA, when it did not.
        fallback: Option<String>,
    },
    Cuda,
    /// `device = "cuda"` where CUDA cannot be used: an error once the stage runs.
    CudaUnavailable(String),
}

impl Resolved {
    /// What goes into the cache key: the device, and on the CPU the kernels its
    /// numbers come from.
    pub fn key(&self) -> String {
        match self {
            Resolved::Cpu { .. } => format!("cpu {}", numerics::cpu_kernels()),
            Resolved::Cuda | Resolved::CudaUnavailable(_) => "cuda".to_string(),
        }
    }
}

pub fn resolve(choice: DeviceChoice) -> Resolved {
    match (choice, cuda_available()) {
        (DeviceChoice::Cpu, _) => Resolved::Cpu { fallback: None },
        (DeviceChoice::Cuda | DeviceChoice::Auto, Ok(())) => Resolved::Cuda,
        (DeviceChoice::Cuda, Err(why)) => Resolved::CudaUnavailable(why),
        (DeviceChoice::Auto, Err(why)) => Resolved::Cpu { fallback: Some(why) },
    }
}

/// Whether training can start on the resolved device at all.
pub fn usable(device: &Resolved) -> Result<(), TrainStageError> {
    match device {
        Resolved::CudaUnavailable(why) => Err(TrainStageError::Device(why.clone())),
        Resolved::Cpu { .. } | Resolved::Cuda => Ok(()),
    }
}

/// Opens a training session on the resolved device; returns it and the
/// device's name.
pub fn open(
    device: &Resolved,
    config: &TrainConfig,
    spec: &ModelSpec,
    console: &Console,
) -> Result<(Box<dyn Session>, &'static str), TrainStageError> {
    match device {
        Resolved::Cpu { fallback } => {
            if let Some(why) = fallback {
                console.warn(&format!("device = \"auto\": {why}; training on the CPU"));
            }
            let dev = Cpu::seed_from_u64(config.seed);
            reuse_freed_buffers(&dev);
            Ok((
                open_session(dev, "cpu", spec, &config.optimizer, config.objective())?,
                "cpu",
            ))
        }
        Resolved::Cuda => cuda(config, spec),
        Resolved::CudaUnavailable(why) => Err(TrainStageError::Device(why.clone())),
    }
}

/// A session for predicting with a trained network: on the device it was
/// trained on when this machine has it (a CUDA model on a machine without CUDA
/// predicts on the CPU), reusing freed buffers as training does.
pub fn open_inference(trained_on: &str, spec: &ModelSpec) -> Result<Box<dyn Session>, TrainError> {
    // The optimiser is never stepped; it only completes the session.
    let settings = OptimizerSettings {
        kind: OptimizerKind::Adam,
        lr: 0.0,
        weight_decay: 0.0,
        momentum: 0.0,
        nesterov: false,
        clip_grad_norm: None,
        ema: None,
    };
    if trained_on == "cuda"
        && let Some(session) = cuda_inference(spec, &settings)?
    {
        return Ok(session);
    }
    let dev = Cpu::default();
    reuse_freed_buffers(&dev);
    open_session(dev, "cpu", spec, &settings, LossFunction::Mse.into())
}

/// Reusing freed buffers instead of faulting in fresh memory for every operation
/// about doubles dfdx's CPU speed. The process's heap does it where it keeps
/// freed memory (see `host_memory`), for any size and with less memory held;
/// elsewhere dfdx's exact-size cache does.
fn reuse_freed_buffers(dev: &Cpu) {
    if !host_memory::keeps_freed_memory() {
        dev.enable_cache();
    }
}

#[cfg(feature = "cuda")]
fn cuda_inference(
    spec: &ModelSpec,
    settings: &OptimizerSettings,
) -> Result<Option<Box<dyn Session>>, TrainError> {
    if cuda_available().is_err() {
        return Ok(None);
    }
    let Ok(dev) = Cuda::try_seed_from_u64(0) else {
        return Ok(None);
    };
    dev.enable_cache();
    open_session(dev, "cuda", spec, settings, LossFunction::Mse.into()).map(Some)
}

#[cfg(not(feature = "cuda"))]
fn cuda_inference(_: &ModelSpec, _: &OptimizerSettings) -> Result<Option<Box<dyn Session>>, TrainError> {
    Ok(None)
}

#[cfg(feature = "cuda")]
fn cuda_available() -> Result<(), String> {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            Cuda::try_seed_from_u64(0)
                .map(drop)
                .map_err(|e| format!("no usable CUDA GPU ({e:?})"))
        })
        .clone()
}

#[cfg(not(feature = "cuda"))]
const NO_CUDA: &str =
    "this fkp was built without CUDA (rebuild with `cargo build --release --features cuda`)";

#[cfg(not(feature = "cuda"))]
fn cuda_available() -> Result<(), String> {
    Err(NO_CUDA.to_string())
}

#[cfg(feature = "cuda")]
fn cuda(config: &TrainConfig, spec: &ModelSpec) -> Result<(Box<dyn Session>, &'static str), TrainStageError> {
    let dev = Cuda::try_seed_from_u64(config.seed)
        .map_err(|e| TrainStageError::Device(format!("no usable CUDA GPU ({e:?})")))?;
    dev.enable_cache();
    Ok((
        open_session(dev, "cuda", spec, &config.optimizer, config.objective())?,
        "cuda",
    ))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &TrainConfig, _: &ModelSpec) -> Result<(Box<dyn Session>, &'static str), TrainStageError> {
    Err(TrainStageError::Device(NO_CUDA.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_cpu_share_a_key_when_auto_means_the_cpu() {
        let cpu = resolve(DeviceChoice::Cpu);
        let auto = resolve(DeviceChoice::Auto);
        assert!(cpu.key().starts_with("cpu "), "{}", cpu.key());
        if cfg!(not(feature = "cuda")) {
            assert_eq!(auto.key(), cpu.key());
            assert_eq!(resolve(DeviceChoice::Cuda).key(), "cuda");
        }
    }
}
