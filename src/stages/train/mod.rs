//! The train stage: trains `[model]` on the prepared training split with dfdx,
//! validating every epoch, and checkpointing every epoch so a killed run resumes.
//!
//! Writes to `data/`: `model.safetensors` (the final weights: the best epoch's
//! with `restore_best`), `model.json` (how to rebuild the network) and
//! `history.csv` (one row per epoch). Reports: `reports/<pipeline>/train/`
//! (history table; with `[train.augment]`, `augmented.png`, faces as the
//! network sees them) and `learning_curves.png`/`.svg`. Per-epoch wall times and
//! images/s go to the entry's `timing.json` only: they differ from run to run.
//! A resumed training's `timing.json` counts the time of the runs before it
//! too (up to the checkpoint it resumed from): its `seconds` are the total, and
//! `stage.earlier_seconds` the part before this run.
//!
//! The checkpoint ([`checkpoint`]) lives in the cache's `checkpoints/train-<key>/`
//! until the stage succeeds. Everything the
//! remaining epochs depend on is in it or follows from (seed, epoch): batch
//! order, augmentation and dropout's random numbers are drawn afresh from them
//! at the start of each epoch, so a resumed run ends bit-identical to an
//! uninterrupted one.

mod augmented;
mod checkpoint;
mod config;
mod curves;
mod device;

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use checkpoint::{Checkpoint, Restored};
pub use config::{DeviceChoice, ModelConfig, TrainConfig};

use super::{
    FileInput, ResumePoint, Stage, StageContext, StageDef, StageError, StageKind, StageOutcome, StageTables,
};
use crate::console::Unit;
use crate::dag::live::{LiveRecord, now_ms};
use crate::data::DataError;
use crate::data::augment::FlipMap;
use crate::data::prepared::{Prepared, Split};
use crate::fsutil;
use crate::metrics::pixel_errors;
use crate::models::ModelSpec;
use crate::models::graph::shape::Shape;
use crate::render::{Cell, RenderError, ReportTable, plot};
use crate::stages::prepare::PREPARED_FILE;
use crate::training::{
    EarlyStoppingState, Normalisation, ScheduleState, Session, Step, TrainError, Weights, assemble,
    predict_pixels,
};

pub const MODEL_FILE: &str = "model.safetensors";
pub const MODEL_META: &str = "model.json";
pub const HISTORY_FILE: &str = "history.csv";

#[derive(Debug, thiserror::Error)]
pub enum TrainStageError {
    #[error(transparent)]
    Upstream(#[from] super::UpstreamError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Report(#[from] RenderError),
    #[error("{0}")]
    Device(String),
    #[error(
        "training diverged in epoch {epoch} ({losses}): \
         try a lower `lr`, `clip_grad_norm`, or a warm-up ([train.schedule] warmup_epochs)"
    )]
    Diverged {
        epoch: usize,
        /// Each loss of the epoch, named: `train loss NaN, validation loss 0.1`.
        losses: String,
    },
    #[error(
        "the validation split has no labelled point, so no epoch can be validated: \
         hold out rows with labels ([prepare] val or val_file)"
    )]
    NothingToValidate,
    /// Stopped between batches on request; the last epoch's checkpoint stays.
    #[error("training cancelled after epoch {epochs_done}")]
    Cancelled { epochs_done: usize },
    #[error(
        "{layer} (batchnorm) gets {per_image} value(s) per channel from each image, and a batch of \
         {smallest} image(s) comes every epoch ({rows} training faces in batches of {batch_size}): \
         batch norm's training statistics need at least 2 values per channel (the variance of one \
         is NaN). Change [train] batch_size so that no batch is that small, or move the batchnorm \
         before the layer that flattens"
    )]
    BatchNormTooSmall {
        layer: String,
        per_image: usize,
        smallest: usize,
        rows: usize,
        batch_size: usize,
    },
}

/// Refuses a training whose batch norm would normalise a single value per
/// channel (one image after a flat layer or onto a 1x1 map): its variance is
/// NaN, and the network silently learns nothing before it.
fn check_batch_norm(spec: &ModelSpec, rows: usize, batch_size: usize) -> Result<(), TrainStageError> {
    let last = rows % batch_size;
    let smallest = if last == 0 { batch_size.min(rows) } else { last };
    // (the network was built from this spec already: its shapes check)
    let summary = spec.check().map_err(TrainError::from)?;
    for row in summary.rows.iter().filter(|row| row.what == "batchnorm") {
        let per_image = match row.output {
            Shape::Map(_, h, w) => h * w,
            Shape::Flat(_) => 1,
        };
        if smallest * per_image < 2 {
            return Err(TrainStageError::BatchNormTooSmall {
                layer: row.path.clone(),
                per_image,
                smallest,
                rows,
                batch_size,
            });
        }
    }
    Ok(())
}

/// What evaluate and predict need to rebuild the trained network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedModel {
    pub spec: ModelSpec,
    /// How pixels become the network's numbers and back.
    pub scaling: Scaling,
    pub coordinate_names: Vec<String>,
    pub keypoint_names: Vec<String>,
    pub device: String,
    /// `[train] seed`, or this member's of `seeds`.
    pub seed: u64,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub parameters: usize,
}

/// The network's input and output units, for readers of the checkpoint (a
/// PyTorch port, say): input = pixel / `input_divisor`, one grey channel
/// row-major; pixels = output * `output_scale` + `output_offset`, x then y of
/// each keypoint in `coordinate_names` order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scaling {
    pub input_divisor: f32,
    pub output_scale: f32,
    pub output_offset: f32,
}

impl Scaling {
    pub fn for_side(side: usize) -> Scaling {
        let half = Normalisation::for_side(side).half;
        Scaling {
            input_divisor: 255.0,
            output_scale: half,
            output_offset: half,
        }
    }
}

/// One epoch of the log: what the epoch computed, the same on every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    /// The mean loss of the coordinates over the epoch's batches.
    pub train_loss: f64,
    /// The mean of DSNT's regulariser (`[train] dsnt_regulariser`; none
    /// without it), which the training minimised beside `train_loss`, not in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_dsnt: Option<f64>,
    pub val_loss: f64,
    pub val_rmse_px: f64,
    pub val_mae_px: f64,
    pub lr: f64,
}

/// Train's `history.csv`, back into epochs.
pub fn read_history(path: &Path) -> Result<Vec<EpochLog>, String> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| e.to_string())?;
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no `{name}` column"))
    };
    // Only a training with DSNT's regulariser has its column.
    let dsnt = headers.iter().position(|h| h == DSNT_COLUMN);
    let columns = [
        column("epoch")?,
        column("train loss")?,
        column("val loss")?,
        column("val RMSE px")?,
        column("val MAE px")?,
        column("lr")?,
    ];
    let mut history = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let number = |at: usize| -> Result<f64, String> {
            let text = record.get(at).unwrap_or("");
            text.parse::<f64>()
                .map_err(|_| format!("`{text}` is not a number"))
        };
        let value = |i: usize| number(columns[i]);
        // Empty in the epochs a resumed training ran before it had the column.
        let train_dsnt = match dsnt {
            Some(at) if !record.get(at).unwrap_or("").is_empty() => Some(number(at)?),
            _ => None,
        };
        history.push(EpochLog {
            epoch: value(0)? as usize,
            train_loss: value(1)?,
            train_dsnt,
            val_loss: value(2)?,
            val_rmse_px: value(3)?,
            val_mae_px: value(4)?,
            lr: value(5)?,
        });
    }
    Ok(history)
}

/// How long an epoch took: volatile, kept in `timing.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EpochTiming {
    epoch: usize,
    images_per_s: f64,
    seconds: f64,
}

/// Everything a checkpoint restores besides weights and optimiser state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epochs_done: usize,
    schedule: ScheduleState,
    early: EarlyStoppingState,
    history: Vec<EpochLog>,
    timing: Vec<EpochTiming>,
    stopped_early: bool,
    /// Wall seconds the stage had run when this checkpoint was written, over
    /// every run that trained toward it (volatile, like `timing`: it goes to
    /// `timing.json` only).
    #[serde(default)]
    seconds: f64,
}

/// `[train]`'s normalised keys, named where a pipeline file writes them: the
/// optimiser's settings are keys of `[train]`, `warmup_epochs` is one of
/// `[train.schedule]`, and the network is `[model]`'s (the layers as the graph
/// holds them, presets and blocks expanded).
fn key_name(rest: &str) -> String {
    let toml_key = super::toml_key;
    match rest {
        "optimizer.kind" => toml_key("train", "optimizer"),
        "warmup_epochs" => toml_key("train.schedule", "warmup_epochs"),
        // Set or removed as a whole.
        "early_stopping" => toml_key("train.early_stopping", ""),
        "numerics" => "fkp's numerics patches for [train]".to_string(),
        _ => {
            if let Some(key) = rest.strip_prefix("optimizer.") {
                toml_key("train", key)
            } else if let Some(key) = rest.strip_prefix("model.graph.") {
                format!("`[model] {key}`")
            } else if let Some(key) = rest.strip_prefix("model.") {
                format!("`[model] {key}`")
            } else {
                toml_key("train", rest)
            }
        }
    }
}

pub static DEF: StageDef = StageDef {
    name: "train",
    also_configured_by: &["model"],
    reads: &[(StageKind::Prepare, PREPARED_FILE)],
    reads_members: false,
    optional_reads: &[],
    read,
    key_name,
};

fn read(tables: &mut StageTables) -> Vec<Box<dyn Stage>> {
    // [train] is read even without [model], so its own mistakes are reported too.
    let config = TrainConfig::read(&mut tables.main);
    let Some(model) = tables.also[0].as_mut().map(ModelConfig::read) else {
        tables
            .main
            .needs_table("model", "add [model] with `arch = \"lenet\"` (or another)");
        return Vec::new();
    };
    // (A network without layers stands in for a [model] whose errors are reported already.)
    if config.dsnt_regulariser.is_some() && !model.graph.reads_coordinates() && !model.graph.layers.is_empty()
    {
        tables.main.invalid(
            "dsnt_regulariser",
            "regularises the maps of a network ending in \"soft_argmax\", and this one ends in a dense output layer: \
             end `head` (or `layers`) with \"soft_argmax\", one map per keypoint",
        );
    }
    let seeds = config::ensemble_seeds(&mut tables.main, config.seed);
    let ensemble = seeds.len() > 1;
    let device = device::resolve(config.device);
    seeds
        .into_iter()
        .map(|seed| {
            Box::new(TrainStage {
                device: device.clone(),
                model: model.clone(),
                config: TrainConfig {
                    seed,
                    ..config.clone()
                },
                ensemble,
            }) as Box<dyn Stage>
        })
        .collect()
}

pub struct TrainStage {
    model: ModelConfig,
    /// With the seed of this training (one of `seeds` in an ensemble).
    config: TrainConfig,
    device: device::Resolved,
    /// One of several trainings of `seeds`: named by its seed, and its reports
    /// go to their own folder. Not in the key: a training is the same whether
    /// alone or in an ensemble, and shares its entry.
    ensemble: bool,
}

impl Stage for TrainStage {
    fn kind(&self) -> StageKind {
        StageKind::Train
    }

    fn version(&self) -> u32 {
        // 3: networks built from graphs; weights named after the graph.
        // 4: the learning rate follows its schedule batch by batch.
        // 5: model.json records the seed (which member of an ensemble it is).
        // 6: validation predicts with batch norm folded into the convolutions.
        6
    }

    /// The configuration, with the device `device` resolves to (so "auto" files
    /// CPU and CUDA results under different keys) and the numerics it computes
    /// with.
    fn config(&self) -> serde_json::Value {
        let mut config = super::key_config(&self.config);
        config["model"] = serde_json::json!({ "graph": self.model.graph.key() });
        config["device"] = self.device.key().into();
        config["numerics"] = crate::training::numerics::dfdx_source_hash().into();
        config
    }

    fn file_inputs(&self) -> Vec<FileInput> {
        Vec::new()
    }

    fn preflight(&self) -> Result<(), StageError> {
        Ok(device::usable(&self.device)?)
    }

    fn needs_gpu(&self) -> bool {
        matches!(
            self.device,
            device::Resolved::Cuda | device::Resolved::CudaUnavailable(_)
        )
    }

    fn model(&self) -> Option<&ModelConfig> {
        Some(&self.model)
    }

    fn instance(&self) -> Option<String> {
        self.ensemble.then(|| format!("seed-{}", self.config.seed))
    }

    fn resume_point(&self, checkpoint_dir: &Path) -> Option<ResumePoint> {
        Some(ResumePoint {
            done: Checkpoint::new(checkpoint_dir).epochs_done()?,
            of: self.config.epochs,
        })
    }

    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        Ok(self.train(ctx)?)
    }
}

/// `40 epochs, val RMSE 3.210 px (best 3.105 px, epoch 37)`, and whether it
/// stopped early.
fn headline(progress: &Progress, epochs: usize) -> Option<String> {
    let last = progress.history.last()?;
    let best = progress
        .history
        .iter()
        .min_by(|a, b| a.val_rmse_px.total_cmp(&b.val_rmse_px))?;
    let mut line = format!(
        "{} epoch{}, val RMSE {:.3} px",
        last.epoch,
        if last.epoch == 1 { "" } else { "s" },
        last.val_rmse_px
    );
    if best.epoch != last.epoch {
        line.push_str(&format!(
            " (best {:.3} px, epoch {})",
            best.val_rmse_px, best.epoch
        ));
    }
    if progress.stopped_early {
        line.push_str(&format!("; stopped early, of {epochs}"));
    }
    Some(line)
}

impl TrainStage {
    /// Trains (resuming from a checkpoint if there is one), then writes the
    /// model and its reports.
    fn train(&self, ctx: &StageContext) -> Result<StageOutcome, TrainStageError> {
        let run_started = std::time::Instant::now();
        let prepared = Prepared::read(&ctx.upstream_file(StageKind::Prepare, PREPARED_FILE)?)?;
        let spec = self.spec_for(&prepared)?;
        let (session, device) = self.open_session(&spec, &prepared, ctx)?;
        let checkpoint = Checkpoint::new(ctx.checkpoint_dir);
        let (mut session, mut progress) = self.restore(&checkpoint, &spec, session, ctx)?;
        // What earlier runs spent, up to the checkpoint this one resumes from.
        let earlier_seconds = progress.seconds;
        let checkpoints = ctx.checkpoint_dir;
        std::fs::create_dir_all(checkpoints).map_err(|e| RenderError::write(checkpoints, e))?;
        ctx.live.record(&LiveRecord::Resume {
            after_epoch: progress.epochs_done,
            epochs: self.config.epochs,
            batches: prepared.train.len().div_ceil(self.config.batch_size),
            at_ms: now_ms(),
        });
        while progress.epochs_done < self.config.epochs && !progress.stopped_early {
            self.epoch(session.as_mut(), &prepared, &checkpoint, &mut progress, ctx)?;
            progress.seconds = earlier_seconds + run_started.elapsed().as_secs_f64();
            checkpoint.save(session.as_ref(), &progress)?;
        }
        // The final weights: the best epoch's with `restore_best`.

        if self.restores_best()
            && let Some(best) = checkpoint.best(&progress)
        {
            session.load_weights(&best, Weights::Predicting)?;
        }
        let trained = self.save_model(session.as_ref(), spec, device, &prepared, &progress, ctx)?;
        let table = self.write_reports(&prepared, &trained, &progress, ctx)?;
        let mut timing = serde_json::json!({ "epochs": progress.timing });
        if earlier_seconds > 0.0 {
            timing["earlier_seconds"] = earlier_seconds.into();
        }
        Ok(StageOutcome {
            headline: headline(&progress, self.config.epochs),
            summary: Some(table.to_terminal()),
            timing: Some(timing),
            earlier_seconds,
        })
    }

    /// The network `[model]` describes, for the prepared images' side.
    fn spec_for(&self, prepared: &Prepared) -> Result<ModelSpec, TrainStageError> {
        if let Some(side) = self.model.side
            && side != prepared.side
        {
            return Err(TrainStageError::Device(format!(
                "[model] side = {side}, but the prepared images are {0}x{0}: set side = {0} or remove it",
                prepared.side
            )));
        }
        Ok(ModelSpec {
            graph: self.model.graph.clone(),
            side: prepared.side,
            outputs: prepared.coordinate_names.len(),
        })
    }

    /// The network on its device, once its batch norm is known to work with
    /// the batches it will get.
    fn open_session(
        &self,
        spec: &ModelSpec,
        prepared: &Prepared,
        ctx: &StageContext,
    ) -> Result<(Box<dyn Session>, &'static str), TrainStageError> {
        let (session, device) = device::open(&self.device, &self.config, spec, ctx.console)?;
        check_batch_norm(spec, prepared.train.len(), self.config.batch_size)?;
        ctx.console.status(&format!(
            "             {} on {device}: {} parameters, {} training and {} validation faces",
            spec.graph.name,
            session.parameters(),
            prepared.train.len(),
            prepared.val.len()
        ));
        Ok((session, device))
    }

    /// Where training starts: a checkpoint's progress, or epoch 0 (with fresh
    /// weights when a discarded checkpoint had touched the session's).
    fn restore(
        &self,
        checkpoint: &Checkpoint,
        spec: &ModelSpec,
        mut session: Box<dyn Session>,
        ctx: &StageContext,
    ) -> Result<(Box<dyn Session>, Progress), TrainStageError> {
        let config = &self.config;
        match checkpoint.restore(session.as_mut(), ctx.console) {
            Restored::Resumed(progress) => {
                ctx.console.status(&format!(
                    "             resuming after epoch {} of {} from {}",
                    progress.epochs_done,
                    config.epochs,
                    ctx.checkpoint_dir.display()
                ));
                return Ok((session, progress));
            }
            Restored::Discarded => {
                // Training starts over from the seed's weights, not the checkpoint's.
                drop(session);
                session = device::open(&self.device, config, spec, ctx.console)?.0;
            }
            Restored::Nothing => {}
        }
        let fresh = Progress {
            epochs_done: 0,
            schedule: ScheduleState::new(config.optimizer.lr),
            early: EarlyStoppingState::default(),
            history: Vec::new(),
            timing: Vec::new(),
            stopped_early: false,
            seconds: 0.0,
        };
        Ok((session, fresh))
    }

    /// The next epoch: trains, validates, logs it, and decides on early
    /// stopping and the next epoch's rate.
    fn epoch(
        &self,
        session: &mut dyn Session,
        prepared: &Prepared,
        checkpoint: &Checkpoint,
        progress: &mut Progress,
        ctx: &StageContext,
    ) -> Result<(), TrainStageError> {
        let config = &self.config;
        let epoch = progress.epochs_done + 1;
        let started = std::time::Instant::now();
        let (train_loss, train_dsnt) = self.train_epoch(session, prepared, &progress.schedule, epoch, ctx)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let (val_loss, errors) = validate(session, prepared)?;
        // Nothing good comes of the epochs after a NaN: stop, and cache nothing.
        if !(train_loss.is_finite() && val_loss.is_finite() && train_dsnt.is_none_or(f64::is_finite)) {
            let dsnt = train_dsnt.map(|v| format!(", DSNT {v}")).unwrap_or_default();
            return Err(TrainStageError::Diverged {
                epoch,
                losses: format!("train loss {train_loss}{dsnt}, validation loss {val_loss}"),
            });
        }
        let log = EpochLog {
            epoch,
            train_loss,
            train_dsnt,
            val_loss,
            val_rmse_px: errors.rmse,
            val_mae_px: errors.mae,
            lr: self.rate(&progress.schedule, epoch, 0, prepared.train.len()),
        };
        let timing = EpochTiming {
            epoch,
            images_per_s: prepared.train.len() as f64 / train_seconds.max(1e-9),
            seconds: started.elapsed().as_secs_f64(),
        };
        let dsnt = log
            .train_dsnt
            .map(|v| format!(" (+ DSNT {v:.5})"))
            .unwrap_or_default();
        ctx.console.status(&format!(
            "             epoch {epoch:>3}/{}: train loss {:.5}{dsnt}  val loss {:.5}  val RMSE {:.3} px  lr {:.2e}  {:.1} img/s",
            config.epochs, log.train_loss, log.val_loss, log.val_rmse_px, log.lr, timing.images_per_s
        ));
        ctx.live.record(&LiveRecord::Epoch {
            log: log.clone(),
            images_per_s: timing.images_per_s,
            seconds: timing.seconds,
            at_ms: now_ms(),
        });
        progress.history.push(log);
        progress.timing.push(timing);

        let (improved, stop) = progress
            .early
            .record(config.early_stopping.as_ref(), epoch, val_loss);
        if improved && self.restores_best() {
            checkpoint.save_best(session, epoch)?;
        }
        config
            .schedule
            .advance(&mut progress.schedule, epoch, config.warmup_epochs, val_loss);
        progress.epochs_done = epoch;
        progress.stopped_early = stop;
        if stop {
            ctx.console.status(&format!(
                "             early stop: no improvement since epoch {}",
                progress.early.best_epoch
            ));
        }
        Ok(())
    }

    /// Whether the final weights are the best epoch's (`restore_best`).
    fn restores_best(&self) -> bool {
        self.config.early_stopping.is_some_and(|r| r.restore_best)
    }

    /// Writes the session's weights and `model.json`.
    fn save_model(
        &self,
        session: &dyn Session,
        spec: ModelSpec,
        device: &str,
        prepared: &Prepared,
        progress: &Progress,
        ctx: &StageContext,
    ) -> Result<TrainedModel, TrainStageError> {
        session.save_weights(&ctx.data_dir.join(MODEL_FILE), Weights::Predicting)?;
        let trained = TrainedModel {
            scaling: Scaling::for_side(spec.side),
            spec,
            coordinate_names: prepared.coordinate_names.clone(),
            keypoint_names: crate::data::faces::keypoint_names(&prepared.coordinate_names),
            device: device.to_string(),
            seed: self.config.seed,
            epochs_run: progress.epochs_done,
            best_epoch: progress.early.best_epoch,
            parameters: session.parameters(),
        };
        let meta = ctx.data_dir.join(MODEL_META);
        fsutil::write_json(&meta, &trained).map_err(|e| RenderError::write(&meta, e))?;
        Ok(trained)
    }

    /// `history.csv`, the history table, the augmented faces (with
    /// `[train.augment]`) and the learning curves; returns the history table.
    fn write_reports(
        &self,
        prepared: &Prepared,
        trained: &TrainedModel,
        progress: &Progress,
        ctx: &StageContext,
    ) -> Result<ReportTable, TrainStageError> {
        let config = &self.config;
        let table = history_table(&progress.history);
        table.write_csv(&ctx.data_dir.join(HISTORY_FILE))?;
        let report = ctx.report_dir.join("train");
        std::fs::create_dir_all(&report).map_err(|e| RenderError::write(&report, e))?;
        table.write_both(&report, "history", "Training history")?;
        if !config.augment.is_identity() {
            augmented::draw(
                &prepared.train,
                prepared.side,
                &prepared.coordinate_names,
                &trained.keypoint_names,
                &config.augment,
                config.seed,
                &report,
            )?;
        }
        plot::save(
            &curves::LearningCurves {
                history: &progress.history,
            },
            ctx.report_dir,
            "learning_curves",
        )?;
        Ok(table)
    }

    /// The learning rate for batch `batch` of `epoch`, with `rows` training rows.
    fn rate(&self, schedule: &ScheduleState, epoch: usize, batch: usize, rows: usize) -> f64 {
        let config = &self.config;
        let at = Step {
            epoch,
            batch,
            batches: rows.div_ceil(config.batch_size),
            epochs: config.epochs,
        };
        config
            .schedule
            .rate(schedule, config.optimizer.lr, config.warmup_epochs, at)
    }

    /// One pass over the shuffled training split; returns the mean batch loss
    /// of the coordinates, and of DSNT's regulariser when the training has it.
    fn train_epoch(
        &self,
        session: &mut dyn Session,
        prepared: &Prepared,
        schedule: &ScheduleState,
        epoch: usize,
        ctx: &StageContext,
    ) -> Result<(f64, Option<f64>), TrainStageError> {
        let config = &self.config;
        let train = &prepared.train;
        let coords = prepared.coordinate_names.len();
        // Every epoch's order and augmentation follow from the seed and the epoch
        // alone, so a resumed run sees the same batches as an uninterrupted one.
        let epoch_seed = config.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rand_pcg::Pcg64Mcg::seed_from_u64(epoch_seed));
        let mut augment_rng = rand_pcg::Pcg64Mcg::seed_from_u64(epoch_seed ^ 0x5eed);
        session.reseed(epoch_seed ^ 0xd809);
        let augment = (!config.augment.is_identity()).then_some(&config.augment);
        let flips =
            FlipMap::from_keypoint_names(&crate::data::faces::keypoint_names(&prepared.coordinate_names));

        let batches = order.len().div_ceil(config.batch_size);
        let bar = ctx.console.progress(
            batches as u64,
            true,
            &format!("epoch {epoch}/{}", config.epochs),
            Unit::Items,
        );
        let (mut total, mut total_dsnt, mut rows) = (0.0f64, None::<f64>, 0usize);
        for (index, chunk) in order.chunks(config.batch_size).enumerate() {
            if ctx.cancel.now() {
                bar.finish_and_clear();
                return Err(TrainStageError::Cancelled {
                    epochs_done: epoch - 1,
                });
            }
            let mut batch = assemble(
                train,
                chunk,
                prepared.side,
                coords,
                augment.map(|a| (a, &flips, &mut augment_rng)),
            );
            if let Some(weight) = config.complete_weight {
                batch.weigh_complete_rows(train, chunk, coords, weight as f32);
            }
            session.set_lr(self.rate(schedule, epoch, index, train.len()));
            let loss = session.step(&batch)?;
            total += f64::from(loss.coordinates) * chunk.len() as f64;
            if let Some(regulariser) = loss.regulariser {
                *total_dsnt.get_or_insert(0.0) += f64::from(regulariser) * chunk.len() as f64;
            }
            rows += chunk.len();
            bar.inc(1);
            ctx.live.batch(epoch, index + 1, batches);
        }
        bar.finish_and_clear();
        let mean = |sum: f64| sum / rows.max(1) as f64;
        Ok((mean(total), total_dsnt.map(mean)))
    }
}

/// Rebuilds a trained network (on the device it was trained on, where this
/// machine has it, else the CPU) from a train entry's `model.json`
/// and `model.safetensors`.
pub fn load_trained(
    meta_path: &Path,
    weights: &Path,
) -> Result<(Box<dyn Session>, TrainedModel), TrainError> {
    let read_error = |message: String| TrainError::Read {
        path: meta_path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(meta_path).map_err(|e| read_error(e.to_string()))?;
    let trained: TrainedModel = serde_json::from_slice(&bytes).map_err(|e| read_error(e.to_string()))?;
    let mut session = device::open_inference(&trained.device, &trained.spec)?;
    session.load_weights(weights, Weights::Predicting)?;
    Ok((session, trained))
}

/// Validation loss (masked MSE on normalised targets, labelled values only) and
/// errors in pixels.
fn validate(
    session: &dyn Session,
    prepared: &Prepared,
) -> Result<(f64, crate::metrics::PixelErrors), TrainStageError> {
    let val: &Split = &prepared.val;
    let pixels = predict_pixels(session, &val.images, val.len(), prepared.side)?;
    let errors =
        pixel_errors(&pixels, &val.targets, &val.labelled).ok_or(TrainStageError::NothingToValidate)?;
    // The loss is on normalised targets: pixel errors divided by half the side.
    let half = f64::from(Normalisation::for_side(prepared.side).half);
    let mean_square_px = errors.rmse * errors.rmse;
    Ok((mean_square_px / (half * half), errors))
}

/// The history's column of DSNT's regulariser, beside `train loss`.
const DSNT_COLUMN: &str = "train DSNT";

fn history_table(history: &[EpochLog]) -> ReportTable {
    let dsnt = history.iter().any(|log| log.train_dsnt.is_some());
    let mut columns = vec!["epoch", "train loss"];
    if dsnt {
        columns.push(DSNT_COLUMN);
    }
    columns.extend(["val loss", "val RMSE px", "val MAE px", "lr"]);
    let mut table = ReportTable::new(columns, 4);
    for log in history {
        let mut row = vec![log.epoch.into(), log.train_loss.into()];
        if dsnt {
            row.push(log.train_dsnt.map_or(Cell::Empty, Cell::from));
        }
        row.extend([
            log.val_loss.into(),
            log.val_rmse_px.into(),
            log.val_mae_px.into(),
            Cell::Text(format!("{:.3e}", log.lr)),
        ]);
        table.push(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_reads_back_as_written_with_and_without_the_dsnt_column() {
        let dir = tempfile::tempdir().unwrap();
        let log = |epoch: usize, train_dsnt| EpochLog {
            epoch,
            train_loss: 0.25 / epoch as f64,
            train_dsnt,
            val_loss: 0.5,
            val_rmse_px: 3.0,
            val_mae_px: 2.0,
            lr: 1e-3,
        };
        // The third: resumed by a build with the column from a checkpoint without it.
        for history in [
            vec![log(1, None), log(2, None)],
            vec![log(1, Some(0.125)), log(2, Some(0.0625))],
            vec![log(1, None), log(2, Some(0.0625))],
        ] {
            let path = dir.path().join(HISTORY_FILE);
            history_table(&history).write_csv(&path).unwrap();
            let header = std::fs::read_to_string(&path).unwrap();
            assert_eq!(header.contains(DSNT_COLUMN), history[1].train_dsnt.is_some());
            assert_eq!(read_history(&path).unwrap(), history);
        }
    }
}
