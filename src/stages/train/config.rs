//! Keys of `[model]` and `[train]` (with `[train.schedule]`,
//! `[train.early_stopping]` and `[train.augment]`).

use crate::config::TableReader;
use crate::config::{ConfigError, ConfigErrorKind, Node, Value};
use crate::data::augment::Augment;
use crate::models::graph::Op;
use crate::models::graph::read::GraphReader;
use crate::models::loss::{LossFunction, MapRegulariser, Objective};
use crate::models::{Arch, Network};
use crate::training::{EarlyStopping, OptimizerKind, OptimizerSettings, Schedule};

crate::config_choice! {
    /// Where to train.
    pub enum DeviceChoice {
        Cpu = "cpu",
        Cuda = "cuda",
        /// CUDA when this fkp has it and a GPU answers, else the CPU with a warning.
        Auto = "auto",
    }
}

crate::config_choice! {
    pub enum ScheduleKind {
        None = "none",
        Exponential = "exponential",
        Plateau = "plateau",
        Cosine = "cosine",
        OneCycle = "onecycle",
    }
}

crate::config_choice! {
    /// The training loss. Masked automatically when `prepare.missing = "mask"`.
    pub enum Loss {
        Mse = "mse",
        L1 = "l1",
        SmoothL1 = "smooth_l1",
        Wing = "wing",
        AdaptiveWing = "adaptive_wing",
    }
}

/// The keys of `[train.schedule]` besides `kind` and `warmup_epochs`, with the
/// kinds that take them.
const SCHEDULE_KEYS: [(&str, &[ScheduleKind]); 7] = [
    ("gamma", &[ScheduleKind::Exponential]),
    ("factor", &[ScheduleKind::Plateau]),
    ("patience", &[ScheduleKind::Plateau]),
    ("min_lr", &[ScheduleKind::Plateau, ScheduleKind::Cosine]),
    ("pct_start", &[ScheduleKind::OneCycle]),
    ("div_factor", &[ScheduleKind::OneCycle]),
    ("final_div_factor", &[ScheduleKind::OneCycle]),
];

/// `[model]`: a preset (`arch`), layers of the pipeline's own, or a preset
/// with some of its keys replaced. The graph is read by
/// [`crate::models::graph::read`]; the keys are documented in
/// docs/pipeline-reference.md.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// `arch`, `channels`, `layers`, `head`, `[model.blocks.*]` and `dropout`,
    /// as the network they describe (this, not the text, is the cache key).
    pub graph: Network,
    /// `side`: the image side to check the network against before the data
    /// is there (and for `fkp model`). Not part of the key: the data decides.
    pub side: Option<usize>,
}

impl ModelConfig {
    pub fn read(r: &mut TableReader) -> ModelConfig {
        let arch = r.states("arch").then(|| r.choice("arch", Arch::LeNet));
        let channels = r.u64("channels", 1);
        if !matches!(channels, 1 | 3) {
            r.invalid(
                "channels",
                format!("{channels} channels: use 1 (grey) or 3 (grey repeated)"),
            );
        }
        let dropout = r.states("dropout").then(|| r.f64_in("dropout", 0.0, 0.0..=0.95));
        let side = r.states("side").then(|| r.usize_in("side", 96, 8..=4096));
        let own = r.raw().clone();
        let graph_keys = ["layers", "head", "blocks"];
        let stated: Vec<bool> = graph_keys.iter().map(|k| r.states(k)).collect();
        let modified = stated.contains(&true);
        // The pipeline's keys replace the preset's; blocks merge by name.
        let mut table = arch.map(Arch::table).unwrap_or_default();
        table.merge(own);
        let name = match (arch, modified) {
            (Some(arch), false) => arch.name().to_string(),
            (Some(arch), true) => format!("{} (modified)", arch.name()),
            (None, _) => "custom".to_string(),
        };
        let Some(layers) = table.get("layers") else {
            if arch.is_none() {
                let kind = ConfigErrorKind::MissingKey {
                    key: "arch".into(),
                    table: "model".into(),
                };
                let help = "name a preset (`arch = \"lenet\"`) or write the network (`layers = [...]`)";
                r.report(vec![ConfigError::new(kind, &r.location("arch")).with_help(help)]);
            }
            return ModelConfig {
                graph: Network::empty(channels as usize),
                side,
            };
        };
        let blocks = match table.get("blocks").map(|e| &e.node) {
            Some(Node {
                value: Value::Table(blocks),
                ..
            }) => Some(blocks),
            Some(_) => {
                r.invalid("blocks", "`blocks` is a table of blocks: [model.blocks.NAME]");
                None
            }
            None => None,
        };
        let mut reader = GraphReader::new(blocks);
        let mut graph = reader.graph(
            name,
            channels as usize,
            &layers.node,
            table.get("head").map(|e| &e.node),
        );
        r.report(reader.finish());
        if let Some(p) = dropout {
            set_head_dropout(r, &mut graph, p);
        }
        // With a side, shapes are checked now, before any stage runs; the output
        // layer's width does not change what the layers accept.
        if let (Some(side), 0) = (side, r.error_count())
            && let Err(error) = crate::models::graph::shape::infer(&graph, side, None)
        {
            r.report(vec![crate::models::shape_error(&error)]);
        }
        ModelConfig { graph, side }
    }
}

/// `dropout`: the rate of every dropout layer of the head, which must have one.
fn set_head_dropout(r: &mut TableReader, graph: &mut Network, p: f64) {
    let mut found = false;
    for layer in &mut graph.head {
        if let Op::Dropout { p: rate } = &mut layer.op {
            *rate = p;
            found = true;
        }
    }
    if !found {
        r.invalid(
            "dropout",
            "`dropout` sets the dropout layers of the head, and this network's head has none: \
             add { dropout = 0.5 } to `head`",
        );
    }
}

/// `min_lr` of a schedule: below the base rate, which it anneals or cuts towards.
fn min_lr_below(t: &mut TableReader, lr: f64) -> f64 {
    let min_lr = t.f64_in("min_lr", 0.0, 0.0..=10.0);
    if min_lr >= lr && t.states("min_lr") {
        t.invalid(
            "min_lr",
            format!("{min_lr} is not below lr = {lr}: the rate would rise"),
        );
        return 0.0;
    }
    min_lr
}

/// Most models one `seeds` array may train.
const MAX_SEEDS: usize = 64;

/// `seeds = [1, 2, 3]`: one training per seed (an ensemble whose predictions
/// evaluate and predict average), written instead of `seed`. Without it, the
/// one `seed`.
pub fn ensemble_seeds(r: &mut TableReader, seed: u64) -> Vec<u64> {
    if !r.states("seeds") {
        return vec![seed];
    }
    if r.states("seed") {
        r.invalid(
            "seeds",
            "write `seed` for one model or `seeds` for an ensemble, not both",
        );
    }
    let before = r.error_count();
    let seeds = r.u64_list("seeds");
    if seeds.is_empty() {
        // An array of the wrong items was reported as such already.
        if r.error_count() == before {
            r.invalid(
                "seeds",
                "lists no seed: write at least one, e.g. seeds = [1, 2, 3]",
            );
        }
        return vec![seed];
    }
    if seeds.len() > MAX_SEEDS {
        r.invalid(
            "seeds",
            format!(
                "{} seeds: an ensemble has at most {MAX_SEEDS} models",
                seeds.len()
            ),
        );
        return vec![seed];
    }
    seeds
}

/// `[train]`. (`[model]` is part of the train stage's configuration and key too.)
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainConfig {
    /// `device`: "cpu", "cuda" or "auto" (default "auto"). The key holds the
    /// device it resolves to instead.
    #[serde(skip)]
    pub device: DeviceChoice,
    /// `epochs` (default 30).
    pub epochs: usize,
    /// `batch_size` (default 64).
    pub batch_size: usize,
    /// `seed`: weights, shuffling, dropout and augmentation (default 42); one
    /// of `seeds` for a member of an ensemble ([`ensemble_seeds`]).
    pub seed: u64,
    /// `optimizer` ("adam", "adamw" or "sgd"), `lr` (adam and adamw 1e-3, sgd
    /// 1e-2), `weight_decay` (adamw 1e-2, decoupled; others 0, L2), `momentum`
    /// (sgd, 0.9), `nesterov` (sgd, false), `clip_grad_norm` (none), `ema`
    /// (none: predict with the weights as trained).
    pub optimizer: OptimizerSettings,
    /// `[train.schedule]`: `kind` = "none" (default), "exponential" (`gamma`, 0.95),
    /// "plateau" (`factor` 0.1, `patience` 10, `min_lr` 0), "cosine" (`min_lr` 0)
    /// or "onecycle" (`pct_start` 0.3, `div_factor` 25, `final_div_factor` 1e4).
    pub schedule: Schedule,
    /// `[train.schedule] warmup_epochs` (0): a linear warm-up in front of the
    /// schedule (not with "onecycle", which has its own).
    pub warmup_epochs: f64,
    /// `[train.early_stopping]`: `patience` (10), `min_delta` (0), `restore_best` (true).
    pub early_stopping: Option<EarlyStopping>,
    /// `loss`: "mse" (default), "l1", "smooth_l1", "wing" or "adaptive_wing".
    pub loss: Loss,
    /// The settings of the chosen loss (none for "mse" and "l1", so their keys
    /// hold only `loss`).
    #[serde(flatten)]
    pub loss_settings: LossSettings,
    /// `[train.augment]`: `hflip`, `shift_px`, `rotate_deg`, `scale`, `brightness`, `contrast`.
    pub augment: Augment,
    /// `complete_weight`: how much more a face with every keypoint labelled
    /// counts in the loss than one with some missing (none: the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_weight: Option<f64>,
    /// `dsnt_regulariser` (its weight; none: off) and `dsnt_sigma` (pixels;
    /// none: one cell of the map): DSNT's regulariser on a final
    /// `soft_argmax`'s maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsnt_regulariser: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsnt_sigma: Option<f64>,
}

impl TrainConfig {
    pub fn read(r: &mut TableReader) -> TrainConfig {
        let epochs = r.usize_in("epochs", 30, 1..=100_000);
        let batch_size = r.usize_in("batch_size", 64, 1..=65_536);
        let optimizer = read_optimizer(r);
        // Keys of [train.schedule] written in [train] itself.
        for key in [
            "kind",
            "warmup_epochs",
            "gamma",
            "factor",
            "patience",
            "min_lr",
            "pct_start",
        ] {
            r.not_here(key, format!("`{key}` belongs in [train.schedule]"));
        }
        let (schedule, warmup_epochs) = match r.table("schedule") {
            Some(mut t) => {
                let schedule = read_schedule(&mut t, epochs, optimizer.lr);
                r.absorb(t);
                schedule
            }
            None => (Schedule::None, 0.0),
        };
        let early_stopping = r.table("early_stopping").map(|mut t| {
            let rule = EarlyStopping {
                patience: t.u64("patience", 10) as usize,
                min_delta: t.f64_in("min_delta", 0.0, 0.0..=1e6),
                restore_best: t.bool("restore_best", true),
            };
            r.absorb(t);
            rule
        });
        let augment = match r.table("augment") {
            Some(mut t) => {
                let augment = read_augment(&mut t);
                r.absorb(t);
                augment
            }
            None => Augment::default(),
        };
        let loss = r.choice("loss", Loss::Mse);
        let dsnt_regulariser = r.states("dsnt_regulariser").then(|| {
            let weight = r.f64_in("dsnt_regulariser", 1.0, 0.0..=1e3);
            if weight == 0.0 {
                r.invalid(
                    "dsnt_regulariser",
                    "a weight of 0 adds nothing: remove the key to train without the regulariser",
                );
            }
            weight
        });
        if dsnt_regulariser.is_none() {
            r.not_here(
                "dsnt_sigma",
                "`dsnt_sigma` is a setting of the regulariser: set `dsnt_regulariser` too",
            );
        }
        let dsnt_sigma = (dsnt_regulariser.is_some() && r.states("dsnt_sigma"))
            .then(|| r.f64_in("dsnt_sigma", 1.0, 0.1..=4096.0));
        TrainConfig {
            device: r.choice("device", DeviceChoice::Auto),
            epochs,
            batch_size,
            seed: r.u64("seed", 42),
            optimizer,
            schedule,
            warmup_epochs,
            early_stopping,
            loss,
            loss_settings: read_loss_settings(r, loss),
            augment,
            complete_weight: r
                .states("complete_weight")
                .then(|| r.f64_in("complete_weight", 1.0, 0.01..=100.0)),
            dsnt_regulariser,
            dsnt_sigma,
        }
    }

    /// What the training minimises: the loss, and DSNT's regulariser if set.
    pub fn objective(&self) -> Objective {
        Objective {
            loss: self.loss_function(),
            regulariser: self.dsnt_regulariser.map(|weight| MapRegulariser {
                weight: weight as f32,
                sigma_px: self.dsnt_sigma.map(|px| px as f32),
            }),
        }
    }

    /// The loss of the coordinates, with its settings.
    fn loss_function(&self) -> LossFunction {
        let setting = |value: Option<f64>| value.unwrap_or_default() as f32;
        let s = &self.loss_settings;
        match self.loss {
            Loss::Mse => LossFunction::Mse,
            Loss::L1 => LossFunction::L1,
            Loss::SmoothL1 => LossFunction::SmoothL1 {
                beta: setting(s.smooth_l1_beta),
            },
            Loss::Wing => LossFunction::Wing {
                w: setting(s.wing_w),
                epsilon: setting(s.wing_epsilon),
            },
            Loss::AdaptiveWing => LossFunction::AdaptiveWing {
                omega: setting(s.awing_omega),
                theta: setting(s.awing_theta),
                epsilon: setting(s.awing_epsilon),
                alpha: setting(s.awing_alpha),
            },
        }
    }
}

/// `smooth_l1_beta` (smooth_l1), `wing_w` and `wing_epsilon` (wing),
/// `awing_omega`, `awing_theta`, `awing_epsilon` (adaptive_wing) in pixels,
/// and `awing_alpha`, its exponent.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LossSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smooth_l1_beta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wing_w: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wing_epsilon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awing_omega: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awing_theta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awing_epsilon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awing_alpha: Option<f64>,
}

/// The keys of the losses' settings, with the loss that takes each.
const LOSS_KEYS: [(&str, Loss); 7] = [
    ("smooth_l1_beta", Loss::SmoothL1),
    ("wing_w", Loss::Wing),
    ("wing_epsilon", Loss::Wing),
    ("awing_omega", Loss::AdaptiveWing),
    ("awing_theta", Loss::AdaptiveWing),
    ("awing_epsilon", Loss::AdaptiveWing),
    ("awing_alpha", Loss::AdaptiveWing),
];

/// The settings of `loss`; another loss's setting is a mistake, said as such.
fn read_loss_settings(r: &mut TableReader, loss: Loss) -> LossSettings {
    for (key, owner) in LOSS_KEYS {
        if owner != loss {
            r.not_here(
                key,
                format!("`{key}` is a setting of loss = \"{}\"", owner.name()),
            );
        }
    }
    // Errors in pixels: up to a whole 4096-pixel side.
    let pixels = 1e-3..=4096.0;
    match loss {
        Loss::Mse | Loss::L1 => LossSettings::default(),
        Loss::SmoothL1 => LossSettings {
            smooth_l1_beta: Some(r.f64_in("smooth_l1_beta", 1.0, pixels)),
            ..LossSettings::default()
        },
        Loss::Wing => LossSettings {
            wing_w: Some(r.f64_in("wing_w", 10.0, pixels.clone())),
            wing_epsilon: Some(r.f64_in("wing_epsilon", 2.0, pixels)),
            ..LossSettings::default()
        },
        Loss::AdaptiveWing => LossSettings {
            awing_omega: Some(r.f64_in("awing_omega", 14.0, 1e-3..=1e3)),
            awing_theta: Some(r.f64_in("awing_theta", 0.5, pixels.clone())),
            awing_epsilon: Some(r.f64_in("awing_epsilon", 1.0, pixels)),
            // Above 1 the loss is smooth at zero and convex near it.
            awing_alpha: Some(r.f64_in("awing_alpha", 2.1, 1.0..=4.0)),
            ..LossSettings::default()
        },
    }
}

/// `optimizer` and its settings, each defaulting to what suits the optimiser.
fn read_optimizer(r: &mut TableReader) -> OptimizerSettings {
    let kind = r.choice("optimizer", OptimizerKind::Adam);
    let default_lr = match kind {
        OptimizerKind::Adam | OptimizerKind::AdamW => 1e-3,
        OptimizerKind::Sgd => 1e-2,
    };
    let default_decay = match kind {
        OptimizerKind::AdamW => 1e-2,
        _ => 0.0,
    };
    let optimizer = OptimizerSettings {
        kind,
        lr: r.f64_in("lr", default_lr, 1e-9..=10.0),
        weight_decay: r.f64_in("weight_decay", default_decay, 0.0..=1.0),
        momentum: r.f64_in(
            "momentum",
            if kind == OptimizerKind::Sgd { 0.9 } else { 0.0 },
            0.0..=0.999,
        ),
        nesterov: r.bool("nesterov", false),
        clip_grad_norm: r
            .states("clip_grad_norm")
            .then(|| r.f64_in("clip_grad_norm", 1.0, 1e-6..=1e6)),
        ema: r.states("ema").then(|| r.f64_in("ema", 0.999, 0.5..=0.999_999)),
    };
    if kind != OptimizerKind::Sgd {
        for key in ["momentum", "nesterov"] {
            r.not_here(
                key,
                format!("`{key}` is an SGD setting; Adam has its own moments"),
            );
        }
    }
    optimizer
}

/// `[train.schedule]`: the schedule and its warm-up epochs, for a training of
/// `epochs` at base rate `lr`.
fn read_schedule(t: &mut TableReader, epochs: usize, lr: f64) -> (Schedule, f64) {
    let kind = t.choice("kind", ScheduleKind::None);
    let warmup_epochs = t.f64_in("warmup_epochs", 0.0, 0.0..=100_000.0);
    if kind == ScheduleKind::OneCycle && warmup_epochs > 0.0 {
        t.invalid(
            "warmup_epochs",
            "\"onecycle\" warms up by itself, over the first `pct_start` of training",
        );
    }
    if warmup_epochs >= epochs as f64 {
        t.invalid(
            "warmup_epochs",
            format!("{warmup_epochs} warm-up epochs leave none of the {epochs} to train at the full rate"),
        );
    }
    // Keys of the other kinds are named as such, not as unknown.
    for (key, kinds) in SCHEDULE_KEYS {
        if !kinds.contains(&kind) {
            let owners: Vec<String> = kinds.iter().map(|k| format!("\"{}\"", k.name())).collect();
            t.not_here(
                key,
                format!(
                    "`{key}` is a key of kind = {}, not \"{}\"",
                    owners.join(" or "),
                    kind.name()
                ),
            );
        }
    }
    let schedule = match kind {
        ScheduleKind::None => Schedule::None,
        ScheduleKind::Exponential => Schedule::Exponential {
            gamma: t.f64_in("gamma", 0.95, 1e-6..=1.0),
        },
        ScheduleKind::Plateau => Schedule::Plateau {
            factor: t.f64_in("factor", 0.1, 1e-6..=0.999),
            patience: t.u64("patience", 10) as usize,
            min_lr: min_lr_below(t, lr),
        },
        ScheduleKind::Cosine => Schedule::Cosine {
            min_lr: min_lr_below(t, lr),
        },
        ScheduleKind::OneCycle => Schedule::OneCycle {
            pct_start: t.f64_in("pct_start", 0.3, 0.01..=0.99),
            div_factor: t.f64_in("div_factor", 25.0, 1.0..=1e6),
            final_div_factor: t.f64_in("final_div_factor", 1e4, 1.0..=1e9),
        },
    };
    (schedule, warmup_epochs)
}

/// `[train.augment]`: every augmentation off unless set.
fn read_augment(t: &mut TableReader) -> Augment {
    Augment {
        hflip: t.bool("hflip", false),
        shift_px: t.f64_in("shift_px", 0.0, 0.0..=64.0) as f32,
        rotate_deg: t.f64_in("rotate_deg", 0.0, 0.0..=180.0) as f32,
        scale: t.f64_in("scale", 0.0, 0.0..=0.9) as f32,
        brightness: t.f64_in("brightness", 0.0, 0.0..=1.0) as f32,
        contrast: t.f64_in("contrast", 0.0, 0.0..=0.99) as f32,
    }
}
