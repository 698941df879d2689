//! A network and its optimiser behind one object-safe trait, so the training
//! loop is written once for every architecture and device.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use ::safetensors::Dtype as StDtype;
use dfdx::nn::tensor_collection::{
    RecursiveWalker, ScalarOptions, TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName,
    ViewTensorRef,
};
use dfdx::optim::{Adam, Optimizer, Sgd};
use dfdx::prelude::*;

use super::TrainError;
use super::batch::{Batch, Normalisation};
use crate::buffers;
use crate::data::tensor_file::{self, CHUNK, Entry, write_f32s};
use crate::models::loss::Objective;
use crate::models::{Backend, GraphNet, Images, ModelSpec, Outputs};

crate::config_choice! {
    pub enum OptimizerKind {
        Adam = "adam",
        /// Adam with decoupled weight decay (Loshchilov and Hutter).
        AdamW = "adamw",
        Sgd = "sgd",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct OptimizerSettings {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    /// SGD only.
    pub momentum: f64,
    /// SGD only.
    pub nesterov: bool,
    /// Scale the gradients down to this global L2 norm when it is above it.
    pub clip_grad_norm: Option<f64>,
    /// `ema`: predict with an exponential moving average of the weights, of
    /// this decay per step (none: with the weights as trained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
}

/// Which of a session's weights: those the optimiser steps, or those its
/// predictions use (with `ema`, their moving average; without, the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Training,
    Predicting,
}

/// A step's losses: the coordinates' loss (the one validation also computes,
/// for MSE) and, apart, DSNT's regulariser when the objective has it. The step
/// minimised their sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLoss {
    pub coordinates: f32,
    pub regulariser: Option<f32>,
}

/// What the training loop does with a network.
pub trait Session {
    /// One forward, backward and optimiser step; returns the batch's losses.
    fn step(&mut self, batch: &Batch) -> Result<StepLoss, TrainError>;
    /// Normalised predictions for `rows` images (inference mode: no dropout,
    /// batch norm running statistics), computed `chunk` images at a time.
    fn predict(&self, images: &[f32], rows: usize, chunk: usize) -> Result<Vec<f32>, TrainError>;
    fn set_lr(&mut self, lr: f64);
    /// Restarts the device's random numbers (dropout's masks) from `seed`.
    fn reseed(&self, seed: u64);
    fn parameters(&self) -> usize;
    /// Where it runs: `cpu` or `cuda`.
    fn device(&self) -> &'static str;
    /// Writes the weights as safetensors, streamed from the device (byte for
    /// byte what dfdx's `save_safetensors` writes), atomically.
    fn save_weights(&self, path: &Path, which: Weights) -> Result<(), TrainError>;
    fn load_weights(&mut self, path: &Path, which: Weights) -> Result<(), TrainError>;
    /// Whether predictions use a moving average of the weights (`ema`), which
    /// a checkpoint must then keep beside them.
    fn averages(&self) -> bool;
    /// Whether the optimiser carries state from step to step that a resumed
    /// run needs: Adam's and AdamW's step and moments, SGD's momentum (none for
    /// SGD without momentum), the moving average's step count.
    fn has_optimizer_state(&self) -> bool;
    /// Saves the optimiser's state, streamed from the device. Returns false when
    /// it has none ([`Session::has_optimizer_state`]).
    fn save_optimizer(&self, path: &Path) -> Result<bool, TrainError>;
    fn load_optimizer(&mut self, path: &Path) -> Result<(), TrainError>;
}

/// Predictions in pixels for `rows` grey images of `side` x `side` u8 pixels.
pub fn predict_pixels(
    session: &dyn Session,
    images: &[u8],
    rows: usize,
    side: usize,
) -> Result<Vec<f32>, TrainError> {
    const CHUNK_ROWS: usize = 64;
    let pixels = side * side;
    let norm = Normalisation::for_side(side);
    // Scaled a chunk at a time: a copy of every image as f32 would be 4 times
    // the data (the network sees the same chunks either way).
    let mut out = Vec::new();
    for start in (0..rows).step_by(CHUNK_ROWS) {
        let n = CHUNK_ROWS.min(rows - start);
        let scaled: Vec<f32> = images[start * pixels..(start + n) * pixels]
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        out.extend(
            session
                .predict(&scaled, n, n)?
                .into_iter()
                .map(|v| norm.to_pixels(v)),
        );
    }
    Ok(out)
}

enum Optim<N, D: Storage<f32>> {
    Adam(Adam<N, f32, D>),
    Sgd(Sgd<N, f32, D>),
}

struct NetSession<D: Backend> {
    dev: D,
    device_name: &'static str,
    net: GraphNet<f32, D>,
    grads: Option<Gradients<f32, D>>,
    optim: Optim<GraphNet<f32, D>, D>,
    average: Option<Average<D>>,
    /// The predicting weights with batch norm folded into the convolutions
    /// ([`GraphNet::folded`]), made on the first prediction after the weights
    /// change, since predictions come a batch at a time.
    folded: RefCell<Option<GraphNet<f32, D>>>,
    clip: Option<f64>,
    objective: Objective,
    side: usize,
    outputs: usize,
}

/// dfdx's tensor cache does not free the buffers it holds when its device goes
/// away: without this, every training leaked them (about 0.7 GB per LeNet on
/// 240 faces), which adds up over the pipelines one `fkp run` of a report trains.
/// Disabling the cache frees them, and the tensors dropped after it free theirs.
impl<D: Backend> Drop for NetSession<D> {
    fn drop(&mut self) {
        self.dev.disable_cache();
    }
}

impl<D: Backend> NetSession<D> {
    fn fail(&self, error: impl std::fmt::Debug) -> TrainError {
        TrainError::Device {
            device: self.device_name,
            message: format!("{error:?}"),
        }
    }

    fn weights(&self, which: Weights) -> &GraphNet<f32, D> {
        match (which, &self.average) {
            (Weights::Predicting, Some(average)) => &average.net,
            _ => &self.net,
        }
    }
}

/// `ema`: an exponential moving average of the network's weights and of batch
/// norm's running statistics (as timm's ModelEmaV2), updated after every step.
struct Average<D: Backend> {
    decay: f64,
    /// Steps averaged so far: checkpointed, since the decay depends on it.
    updates: u64,
    net: GraphNet<f32, D>,
}

impl<D: Backend> Average<D> {
    /// The decay of the next step: `ema`, or less while few steps are in, as
    /// TensorFlow's ExponentialMovingAverage with `num_updates` does, so the
    /// average does not hold on to the random start for thousands of steps.
    fn decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    fn update(&mut self, net: &GraphNet<f32, D>) -> Result<(), D::Err> {
        struct Blend(f64);
        impl<D: Backend> TensorVisitor<f32, D> for Blend {
            type Viewer = (ViewTensorMut, ViewTensorRef);
            type Err = D::Err;
            type E2 = f32;
            type D2 = D;

            fn visit<S: Shape>(
                &mut self,
                _: TensorOptions<S, f32, D>,
                (average, weights): (&mut Tensor<S, f32, D>, &Tensor<S, f32, D>),
            ) -> Result<Option<Tensor<S, f32, D>>, D::Err> {
                average.try_axpy(self.0, weights, 1.0 - self.0)?;
                Ok(None)
            }
        }
        let mut blend = Blend(self.decay());
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: (&mut self.net, net),
            f: &mut blend,
        })?;
        self.updates += 1;
        Ok(())
    }
}

/// L2 decay (added to the gradient) for Adam and SGD, decoupled for AdamW.
fn weight_decay(settings: &OptimizerSettings) -> Option<WeightDecay> {
    (settings.weight_decay > 0.0).then_some(match settings.kind {
        OptimizerKind::AdamW => WeightDecay::Decoupled(settings.weight_decay),
        _ => WeightDecay::L2(settings.weight_decay),
    })
}

/// Builds the network `spec` describes with its optimiser, on `dev`.
pub fn open_session<D: Backend + 'static>(
    dev: D,
    device_name: &'static str,
    spec: &ModelSpec,
    settings: &OptimizerSettings,
    objective: Objective,
) -> Result<Box<dyn Session>, TrainError> {
    Ok(Box::new(new_session(
        dev,
        device_name,
        spec,
        settings,
        objective,
    )?))
}

fn new_session<D: Backend>(
    dev: D,
    device_name: &'static str,
    spec: &ModelSpec,
    settings: &OptimizerSettings,
    objective: Objective,
) -> Result<NetSession<D>, TrainError> {
    let net = spec.build(&dev)?;
    if objective.regulariser.is_some() && net.soft_argmax_cells().is_none() {
        return Err(TrainError::NoMapsToRegularise);
    }
    let optim = match settings.kind {
        OptimizerKind::Adam | OptimizerKind::AdamW => Optim::Adam(Adam::new(
            &net,
            AdamConfig {
                lr: settings.lr,
                weight_decay: weight_decay(settings),
                ..Default::default()
            },
        )),
        OptimizerKind::Sgd => Optim::Sgd(Sgd::new(
            &net,
            SgdConfig {
                lr: settings.lr,
                momentum: (settings.momentum > 0.0).then_some(if settings.nesterov {
                    Momentum::Nesterov(settings.momentum)
                } else {
                    Momentum::Classic(settings.momentum)
                }),
                weight_decay: weight_decay(settings),
            },
        )),
    };
    let average = settings.ema.map(|decay| Average {
        decay,
        updates: 0,
        net: net.clone(),
    });
    Ok(NetSession {
        dev,
        device_name,
        net,
        grads: None,
        optim,
        average,
        folded: RefCell::new(None),
        clip: settings.clip_grad_norm,
        objective,
        side: spec.side,
        outputs: spec.outputs,
    })
}

impl<D: Backend> Session for NetSession<D> {
    fn step(&mut self, batch: &Batch) -> Result<StepLoss, TrainError> {
        self.folded.get_mut().take();
        let x: Images<D> = self
            .dev
            .try_tensor_from_vec(batch.images.clone(), (batch.rows, Const, self.side, self.side))
            .map_err(|e| self.fail(e))?;
        let shape = (batch.rows, self.outputs);
        let y: Outputs<D> = self
            .dev
            .try_tensor_from_vec(batch.targets.clone(), shape)
            .map_err(|e| self.fail(e))?;
        let mask: Outputs<D> = self
            .dev
            .try_tensor_from_vec(batch.mask.clone(), shape)
            .map_err(|e| self.fail(e))?;
        let grads = match self.grads.take() {
            Some(grads) => grads,
            None => self.net.try_alloc_grads().map_err(|e| self.fail(e))?,
        };
        let regulariser = self.objective.regulariser;
        let pass = self
            .net
            .train_forward(x.traced(grads), regulariser.is_some())
            .map_err(|e| self.fail(e))?;
        // Targets are normalised by half the side (`Normalisation`).
        let pixels_per_unit = self.side as f32 / 2.0;
        let mut loss = self
            .objective
            .loss
            .masked(pass.coordinates, y, mask, pixels_per_unit);
        let mut value = StepLoss {
            coordinates: loss.array(),
            regulariser: None,
        };
        if let (Some(regulariser), Some(maps), Some(cells)) =
            (regulariser, pass.maps, self.net.soft_argmax_cells())
        {
            let term = regulariser.masked(maps, cells, &batch.targets, &batch.mask, pixels_per_unit);
            value.regulariser = Some(term.array());
            loss = loss + term;
        }
        let mut grads = loss.backward();
        if let Some(max_norm) = self.clip {
            clip_grad_norm(&self.net, &mut grads, max_norm).map_err(|e| self.fail(e))?;
        }
        let update = match &mut self.optim {
            Optim::Adam(opt) => opt.update(&mut self.net, &grads),
            Optim::Sgd(opt) => opt.update(&mut self.net, &grads),
        };
        // Parameters that got no gradient (none in these networks) are not an error.
        if let Err(OptimizerUpdateError::DeviceError(e)) = update {
            return Err(self.fail(e));
        }
        if let Some(average) = &mut self.average {
            let averaged = average.update(&self.net);
            averaged.map_err(|e| self.fail(e))?;
        }
        self.net.try_zero_grads(&mut grads).map_err(|e| self.fail(e))?;
        self.grads = Some(grads);
        Ok(value)
    }

    fn predict(&self, images: &[f32], rows: usize, chunk: usize) -> Result<Vec<f32>, TrainError> {
        let pixels = self.side * self.side;
        let mut folded = self.folded.borrow_mut();
        let net = match &mut *folded {
            Some(net) => net,
            empty => empty.insert(
                self.weights(Weights::Predicting)
                    .folded()
                    .map_err(|e| self.fail(e))?,
            ),
        };
        let mut out = Vec::with_capacity(rows * self.outputs);
        for start in (0..rows).step_by(chunk.max(1)) {
            let n = chunk.min(rows - start);
            let x: Images<D> = self
                .dev
                .try_tensor_from_vec(
                    images[start * pixels..(start + n) * pixels].to_vec(),
                    (n, Const, self.side, self.side),
                )
                .map_err(|e| self.fail(e))?;
            let y = net.try_forward(x).map_err(|e| self.fail(e))?;
            out.extend(y.as_vec());
        }
        Ok(out)
    }

    fn set_lr(&mut self, lr: f64) {
        match &mut self.optim {
            Optim::Adam(opt) => opt.cfg.lr = lr,
            Optim::Sgd(opt) => opt.cfg.lr = lr,
        }
    }

    fn reseed(&self, seed: u64) {
        self.dev.reseed(seed);
    }

    fn parameters(&self) -> usize {
        self.net.num_trainable_params()
    }

    fn device(&self) -> &'static str {
        self.device_name
    }

    fn save_weights(&self, path: &Path, which: Weights) -> Result<(), TrainError> {
        let write = |e: std::io::Error| TrainError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        // Names and shapes first: the header comes before the tensors' bytes.
        let mut list = ListWeights(Vec::new());
        let net = self.weights(which);
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: (net, String::new()),
            f: &mut list,
        })
        .map_err(|e| self.fail(e))?;
        let mut writer = tensor_file::Writer::create(path, list.0, &[]).map_err(write)?;
        let mut stream = StreamWeights {
            dev: &self.dev,
            writer: &mut writer,
            chunk: transfer_buffer()?,
        };
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: (net, String::new()),
            f: &mut stream,
        })
        .map_err(|e| e.into_train(self.device_name, path))?;
        writer.finish().map_err(write)
    }

    fn load_weights(&mut self, path: &Path, which: Weights) -> Result<(), TrainError> {
        let error = |message: String| TrainError::Read {
            path: path.to_path_buf(),
            message,
        };
        // Checked first, for a plain message: dfdx reports I/O errors in Debug form.
        std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        self.folded.get_mut().take();
        let net = match (which, &mut self.average) {
            (Weights::Predicting, Some(average)) => &mut average.net,
            _ => &mut self.net,
        };
        net.load_safetensors(path)
            .map_err(|e| error(format!("not the weights of this network ({e:?})")))
    }

    fn averages(&self) -> bool {
        self.average.is_some()
    }

    fn has_optimizer_state(&self) -> bool {
        self.average.is_some()
            || match &self.optim {
                Optim::Adam(_) => true,
                Optim::Sgd(opt) => opt.cfg.momentum.is_some(),
            }
    }

    fn save_optimizer(&self, path: &Path) -> Result<bool, TrainError> {
        if !self.has_optimizer_state() {
            return Ok(false);
        }
        let write = |e: std::io::Error| TrainError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut found = OptimizerBuffers {
            optim: &self.optim,
            buffers: Vec::new(),
        };
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: (&self.net, String::new()),
            f: &mut found,
        })
        .map_err(|e| self.fail(e))?;
        let average_updates = self.average.as_ref().map(|a| a.updates);
        let meta = match &self.optim {
            Optim::Adam(opt) => OptimizerMeta {
                step: Some(opt.step()),
                optimizer: None,
                average_updates,
            },
            Optim::Sgd(_) => OptimizerMeta {
                step: None,
                optimizer: Some(SGD.to_string()),
                average_updates,
            },
        };
        let meta = serde_json::to_string(&meta).map_err(|e| write(e.into()))?;
        let entries = found
            .buffers
            .iter()
            .map(|(name, buffer)| Entry::new(name, StDtype::F32, &[Storage::<f32>::len(&self.dev, *buffer)]))
            .collect();
        let metadata = [(tensor_file::META_KEY, meta.as_str())];
        let mut writer = tensor_file::Writer::create(path, entries, &metadata).map_err(write)?;
        let mut chunk = transfer_buffer()?;
        for (name, buffer) in &found.buffers {
            let mut sink = writer.tensor(name).map_err(write)?;
            stream_out(&self.dev, buffer, &mut sink, &mut chunk)
                .map_err(|e| e.into_train(self.device_name, path))?;
        }
        writer.finish().map_err(write)?;
        Ok(true)
    }

    fn load_optimizer(&mut self, path: &Path) -> Result<(), TrainError> {
        if !self.has_optimizer_state() {
            return Ok(());
        }
        let error = |message: String| TrainError::Read {
            path: path.to_path_buf(),
            message,
        };
        let mut reader = tensor_file::Reader::open(path).map_err(error)?;
        let meta: OptimizerMeta = reader.meta().map_err(error)?;
        match (&mut self.optim, meta.step, meta.optimizer.as_deref()) {
            (Optim::Adam(opt), Some(step), None) => opt.set_step(step),
            (Optim::Sgd(_), None, Some(SGD)) => {}
            _ => return Err(error("the state of another optimiser".to_string())),
        }
        match (&mut self.average, meta.average_updates) {
            (Some(average), Some(updates)) => average.updates = updates,
            (None, None) => {}
            _ => return Err(error("a training with another `ema`".to_string())),
        }
        let remaining: HashSet<String> = reader.tensors().into_keys().collect();
        let mut load = LoadOptimizer {
            optim: &mut self.optim,
            dev: &self.dev,
            reader: &mut reader,
            remaining,
            chunk: transfer_buffer()?,
        };
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: (&self.net, String::new()),
            f: &mut load,
        })
        .map_err(error)?;
        if let Some(name) = load.remaining.iter().min() {
            return Err(error(format!(
                "{name} is the state of no parameter of this network"
            )));
        }
        Ok(())
    }
}

/// Scales every gradient by `max_norm / norm` when the L2 norm of all of them
/// together is above `max_norm` (PyTorch's clip_grad_norm_). The norm is summed
/// in a fixed order, so clipping does not depend on the thread count.
fn clip_grad_norm<D: Backend>(
    net: &GraphNet<f32, D>,
    grads: &mut Gradients<f32, D>,
    max_norm: f64,
) -> Result<(), D::Err> {
    struct Norm<'a, D: Storage<f32>> {
        grads: &'a mut Gradients<f32, D>,
        sum_squares: f64,
        /// `Some(factor)`: the second walk, scaling.
        scale: Option<f32>,
    }
    impl<D: Backend> TensorVisitor<f32, D> for Norm<'_, D> {
        type Viewer = ViewTensorRef;
        type Err = D::Err;
        type E2 = f32;
        type D2 = D;

        fn visit<S: Shape>(
            &mut self,
            opts: TensorOptions<S, f32, D>,
            t: &Tensor<S, f32, D>,
        ) -> Result<Option<Tensor<S, f32, D>>, D::Err> {
            if !opts.do_gradient_update {
                return Ok(None);
            }
            match self.scale {
                None => {
                    self.grads.try_alloc_for(t)?;
                    let square = self.grads.get(t).try_square()?;
                    self.sum_squares += f64::from(square.try_sum::<Rank0, _>()?.array());
                }
                Some(factor) => self.grads.try_scale(t, factor)?,
            }
            Ok(None)
        }
    }
    let mut walk = Norm {
        grads,
        sum_squares: 0.0,
        scale: None,
    };
    GraphNet::iter_tensors(&mut RecursiveWalker { m: net, f: &mut walk })?;
    let norm = walk.sum_squares.sqrt();
    if norm > max_norm {
        walk.scale = Some((max_norm / norm) as f32);
        GraphNet::iter_tensors(&mut RecursiveWalker { m: net, f: &mut walk })?;
    }
    Ok(())
}

/// The `fkp` metadata of an optimiser's state file.
#[derive(serde::Serialize, serde::Deserialize)]
struct OptimizerMeta {
    /// Adam's (and AdamW's) step count: its files have only this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<i32>,
    /// [`SGD`] for SGD's velocity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    optimizer: Option<String>,
    /// With `ema`, the steps the moving average has taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    average_updates: Option<u64>,
}

const SGD: &str = "sgd";

/// The buffer through which tensors pass between the device and a file, a
/// chunk at a time.
fn transfer_buffer() -> Result<Vec<f32>, TrainError> {
    Ok(buffers::zeroed(CHUNK, "moving a checkpoint's tensors")?)
}

/// A device's buffer of `f32`s.
type Buffer<D> = <D as Storage<f32>>::Vec;

/// What streaming a tensor to a file can fail on.
enum StreamError<E> {
    Device(E),
    Io(std::io::Error),
}

impl<E: std::fmt::Debug> StreamError<E> {
    fn into_train(self, device: &'static str, path: &Path) -> TrainError {
        match self {
            StreamError::Device(e) => TrainError::Device {
                device,
                message: format!("{e:?}"),
            },
            StreamError::Io(e) => TrainError::Write {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        }
    }
}

/// Writes the values of a device buffer to `out` as little-endian `f32`s,
/// `chunk.len()` of them at a time.
fn stream_out<D: Backend>(
    dev: &D,
    buffer: &Buffer<D>,
    out: &mut impl Write,
    chunk: &mut [f32],
) -> Result<(), StreamError<D::Err>> {
    let len = Storage::<f32>::len(dev, buffer);
    let mut start = 0;
    while start < len {
        let n = chunk.len().min(len - start);
        dev.try_copy_range_to_host(buffer, start, &mut chunk[..n])
            .map_err(StreamError::Device)?;
        write_f32s(out, &chunk[..n]).map_err(StreamError::Io)?;
        start += n;
    }
    Ok(())
}

/// The tensors (and scalars) of a network as dfdx's `save_safetensors` lists
/// them: every tensor by its path, F32, and every scalar, F64.
struct ListWeights(Vec<Entry>);

impl<D: Backend> TensorVisitor<f32, D> for ListWeights {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (tensor, path): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        let shape: Vec<usize> = tensor.shape().concrete().into();
        self.0.push(Entry::new(&path, StDtype::F32, &shape));
        Ok(None)
    }

    fn visit_scalar<N: num_traits::NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (_, path): (&N, String),
    ) -> Result<Option<N>, Self::Err> {
        self.0.push(Entry::new(&path, StDtype::F64, &[]));
        Ok(None)
    }
}

/// Writes each tensor (and scalar) [`ListWeights`] listed, from the device.
struct StreamWeights<'a, D: Backend> {
    dev: &'a D,
    writer: &'a mut tensor_file::Writer,
    chunk: Vec<f32>,
}

impl<D: Backend> TensorVisitor<f32, D> for StreamWeights<'_, D> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = StreamError<D::Err>;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (tensor, path): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        let storage = tensor.storage();
        // A network's own tensors hold exactly their values, in order.
        if Storage::<f32>::len(self.dev, storage) != tensor.shape().num_elements() {
            return Err(StreamError::Io(std::io::Error::other(format!(
                "tensor {path} is a view, not stored on its own"
            ))));
        }
        let mut sink = self.writer.tensor(&path).map_err(StreamError::Io)?;
        stream_out(self.dev, storage, &mut sink, &mut self.chunk)?;
        Ok(None)
    }

    fn visit_scalar<N: num_traits::NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (value, path): (&N, String),
    ) -> Result<Option<N>, Self::Err> {
        let value = value.to_f64().ok_or_else(|| {
            StreamError::Io(std::io::Error::other(format!("scalar {path} is not a number")))
        })?;
        self.writer
            .tensor(&path)
            .and_then(|mut sink| sink.write_all(&value.to_le_bytes()))
            .map_err(StreamError::Io)?;
        Ok(None)
    }
}

/// The optimiser's state of every trained tensor that has some, named for its
/// file: `m1.<path>` and `m2.<path>` (Adam's moments), `velocity.<path>` (SGD's).
/// The device's own buffers: nothing is copied.
struct OptimizerBuffers<'a, D: Backend> {
    optim: &'a Optim<GraphNet<f32, D>, D>,
    buffers: Vec<(String, &'a Buffer<D>)>,
}

impl<D: Backend> TensorVisitor<f32, D> for OptimizerBuffers<'_, D> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (tensor, path): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let buffers: Vec<&Buffer<D>> = match self.optim {
            Optim::Adam(opt) => opt.moment_buffers(tensor).map(Vec::from).unwrap_or_default(),
            Optim::Sgd(opt) => opt.velocity_buffer(tensor).into_iter().collect(),
        };
        // None yet for a parameter the optimiser has not updated.
        if !buffers.is_empty() {
            self.buffers
                .extend(state_names(self.optim, &path).into_iter().zip(buffers));
        }
        Ok(None)
    }
}

/// The checkpoint names of one parameter's optimiser state: Adam's two moments,
/// or SGD's velocity, each after the parameter's path.
fn state_names<N, D: Storage<f32>>(optim: &Optim<N, D>, path: &str) -> Vec<String> {
    match optim {
        Optim::Adam(_) => vec![format!("m1.{path}"), format!("m2.{path}")],
        Optim::Sgd(_) => vec![format!("velocity.{path}")],
    }
}

/// Fills the optimiser's state from a file, parameter by parameter (matched
/// by path), straight into the device's buffers.
struct LoadOptimizer<'a, D: Backend> {
    optim: &'a mut Optim<GraphNet<f32, D>, D>,
    dev: &'a D,
    reader: &'a mut tensor_file::Reader,
    /// The file's tensors not read yet.
    remaining: HashSet<String>,
    chunk: Vec<f32>,
}

impl<D: Backend> TensorVisitor<f32, D> for LoadOptimizer<'_, D> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = String;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (tensor, path): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let names = state_names(self.optim, &path);
        let present: Vec<bool> = names.iter().map(|name| self.remaining.remove(name)).collect();
        if present.iter().all(|p| !p) {
            // Not updated yet when it was saved.
            return Ok(None);
        }
        if let Some(missing) = names.iter().zip(&present).find(|(_, p)| !**p) {
            return Err(format!("no {} beside the rest of {path}'s state", missing.0));
        }
        let len = Storage::<f32>::len(self.dev, tensor.storage());
        let tensors = self.reader.tensors();
        for name in &names {
            let saved: usize = tensors[name].shape.iter().product();
            if saved != len {
                return Err(format!("{name} has {saved} values, its parameter {len}"));
            }
        }
        let device = |e: D::Err| format!("the device failed: {e:?}");
        let buffers: Vec<&mut Buffer<D>> = match self.optim {
            Optim::Adam(opt) => opt.moment_buffers_mut(tensor).map_err(device)?.into(),
            Optim::Sgd(opt) => vec![opt.velocity_buffer_mut(tensor).map_err(device)?],
        };
        for (name, buffer) in names.iter().zip(buffers) {
            let dev = self.dev;
            self.reader.read_f32s(name, &mut self.chunk, |start, values| {
                dev.try_copy_range_from_host(values, buffer, start)
                    .map_err(device)
            })?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Arch;
    use crate::models::loss::LossFunction;

    fn spec(arch: Arch) -> ModelSpec {
        ModelSpec {
            graph: arch.graph(1),
            side: if arch == Arch::AlexNet { 72 } else { 40 },
            outputs: 6,
        }
    }

    fn settings(kind: OptimizerKind, momentum: f64, nesterov: bool) -> OptimizerSettings {
        OptimizerSettings {
            kind,
            lr: 1e-2,
            weight_decay: if kind == OptimizerKind::AdamW { 1e-2 } else { 1e-4 },
            momentum,
            nesterov,
            clip_grad_norm: None,
            ema: None,
        }
    }

    /// A batch of `rows` faces drawn from `seed`.
    fn batch(rows: usize, side: usize, outputs: usize, seed: u64) -> Batch {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        Batch {
            rows,
            images: (0..rows * side * side).map(|_| next()).collect(),
            targets: (0..rows * outputs).map(|_| next() * 2.0 - 1.0).collect(),
            mask: (0..rows * outputs)
                .map(|i| if i % 5 == 0 { 0.0 } else { 1.0 })
                .collect(),
        }
    }

    fn open(arch: Arch, settings: &OptimizerSettings) -> NetSession<Cpu> {
        new_session(
            Cpu::seed_from_u64(7),
            "cpu",
            &spec(arch),
            settings,
            LossFunction::Mse.into(),
        )
        .unwrap()
    }

    /// fkp streams the weights itself; the files must stay those dfdx wrote
    /// (model.safetensors is an output: its bytes are part of every result).
    #[test]
    fn the_dsnt_regulariser_needs_a_network_with_maps() {
        let objective = Objective {
            loss: LossFunction::Mse,
            regulariser: Some(crate::models::loss::MapRegulariser {
                weight: 1.0,
                sigma_px: None,
            }),
        };
        let settings = settings(OptimizerKind::Adam, 0.0, false);
        let refused = new_session(Cpu::default(), "cpu", &spec(Arch::LeNet), &settings, objective);
        assert!(matches!(refused, Err(TrainError::NoMapsToRegularise)));
    }

    #[test]
    fn streamed_weights_are_the_bytes_dfdx_writes() {
        let dir = tempfile::tempdir().unwrap();
        let adam = settings(OptimizerKind::Adam, 0.0, false);
        for arch in [
            Arch::LeNet,
            Arch::AlexNet,
            Arch::ResNet18,
            Arch::ResNet34,
            Arch::ResNet50,
            Arch::Darknet53,
        ] {
            let mut session = open(arch, &adam);
            if matches!(arch, Arch::LeNet | Arch::ResNet18) {
                // Trained weights and batch-norm statistics, not the initial ones.
                let spec = spec(arch);
                for seed in 0..2 {
                    session.step(&batch(4, spec.side, spec.outputs, seed)).unwrap();
                }
            }
            let ours = dir.path().join("ours.safetensors");
            let theirs = dir.path().join("theirs.safetensors");
            session.save_weights(&ours, Weights::Training).unwrap();
            session.net.save_safetensors(&theirs).unwrap();
            assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                "{arch:?}: the streamed file differs from dfdx's"
            );
            // And it loads back.
            let mut again = open(arch, &adam);
            again.load_weights(&ours, Weights::Training).unwrap();
            let back = dir.path().join("back.safetensors");
            again.save_weights(&back, Weights::Training).unwrap();
            assert!(
                std::fs::read(&back).unwrap() == std::fs::read(&ours).unwrap(),
                "{arch:?}"
            );
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporary files left: {names:?}");
    }

    /// A session that saves after some steps and one restored from its files
    /// take the next steps to the same bits, for every optimiser with state
    /// and with a moving average of the weights.
    #[test]
    fn every_optimiser_resumes_bit_identically() {
        let dir = tempfile::tempdir().unwrap();
        let arch = Arch::ResNet18;
        let spec = spec(arch);
        let batches: Vec<Batch> = (0..5)
            .map(|seed| batch(4, spec.side, spec.outputs, seed))
            .collect();
        for (name, settings) in [
            ("adam", settings(OptimizerKind::Adam, 0.0, false)),
            ("adamw", settings(OptimizerKind::AdamW, 0.0, false)),
            ("sgd momentum", settings(OptimizerKind::Sgd, 0.9, false)),
            ("sgd nesterov", settings(OptimizerKind::Sgd, 0.9, true)),
            (
                "adamw ema",
                OptimizerSettings {
                    ema: Some(0.9),
                    ..settings(OptimizerKind::AdamW, 0.0, false)
                },
            ),
            // Its only state is the average and its step count.
            (
                "sgd ema",
                OptimizerSettings {
                    ema: Some(0.9),
                    ..settings(OptimizerKind::Sgd, 0.0, false)
                },
            ),
        ] {
            let mut straight = open(arch, &settings);
            assert!(straight.has_optimizer_state(), "{name}");
            for batch in &batches[..3] {
                straight.step(batch).unwrap();
            }
            let weights = dir.path().join("w.safetensors");
            let average = dir.path().join("a.safetensors");
            let optimizer = dir.path().join("o.safetensors");
            straight.save_weights(&weights, Weights::Training).unwrap();
            straight.save_weights(&average, Weights::Predicting).unwrap();
            assert!(straight.save_optimizer(&optimizer).unwrap(), "{name}");

            // Another network (other initial weights), restored from the files.
            let other_network = || {
                new_session(
                    Cpu::seed_from_u64(99),
                    "cpu",
                    &spec,
                    &settings,
                    LossFunction::Mse.into(),
                )
                .unwrap()
            };
            let mut resumed = other_network();
            resumed.load_weights(&weights, Weights::Training).unwrap();
            if resumed.averages() {
                resumed.load_weights(&average, Weights::Predicting).unwrap();
            }
            resumed.load_optimizer(&optimizer).unwrap();
            // Without the optimiser's state, the steps go elsewhere.
            let mut forgetful = other_network();
            forgetful.load_weights(&weights, Weights::Training).unwrap();
            for batch in &batches[3..] {
                straight.step(batch).unwrap();
                resumed.step(batch).unwrap();
                forgetful.step(batch).unwrap();
            }
            let files = |which| -> Vec<Vec<u8>> {
                [&straight, &resumed, &forgetful]
                    .iter()
                    .enumerate()
                    .map(|(i, session)| {
                        let path = dir.path().join(format!("{i}.safetensors"));
                        session.save_weights(&path, which).unwrap();
                        std::fs::read(path).unwrap()
                    })
                    .collect()
            };
            let trained = files(Weights::Training);
            assert!(trained[0] == trained[1], "{name}: the resumed weights differ");
            let used = files(Weights::Predicting);
            assert!(used[0] == used[1], "{name}: the resumed average differs");
            assert!(
                used[0] != used[2],
                "{name}: the optimiser's state made no difference"
            );
            let saved: Vec<Vec<u8>> = [&straight, &resumed]
                .iter()
                .map(|session| {
                    session.save_optimizer(&optimizer).unwrap();
                    std::fs::read(&optimizer).unwrap()
                })
                .collect();
            assert!(
                saved[0] == saved[1],
                "{name}: the resumed optimiser state differs"
            );
        }
    }

    #[test]
    fn sgd_without_momentum_has_no_state_and_a_wrong_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.safetensors");
        let mut plain = open(Arch::LeNet, &settings(OptimizerKind::Sgd, 0.0, false));
        let spec = spec(Arch::LeNet);
        plain.step(&batch(2, spec.side, spec.outputs, 1)).unwrap();
        assert!(!plain.has_optimizer_state());
        assert!(!plain.save_optimizer(&path).unwrap());
        assert!(!path.exists());

        // Adam's state does not load into SGD, nor one network's into another.
        let mut adam = open(Arch::LeNet, &settings(OptimizerKind::Adam, 0.0, false));
        adam.step(&batch(2, spec.side, spec.outputs, 1)).unwrap();
        assert!(adam.save_optimizer(&path).unwrap());
        let mut sgd = open(Arch::LeNet, &settings(OptimizerKind::Sgd, 0.9, false));
        let error = sgd.load_optimizer(&path).unwrap_err().to_string();
        assert!(error.contains("another optimiser"), "{error}");
        let mut other = open(Arch::ResNet18, &settings(OptimizerKind::Adam, 0.0, false));
        let error = other.load_optimizer(&path).unwrap_err().to_string();
        assert!(
            error.contains("no parameter of this network") || error.contains("values"),
            "{error}"
        );
        std::fs::write(&path, b"not a file of tensors").unwrap();
        assert!(adam.load_optimizer(&path).is_err());

        // Nor the state of a training with a moving average into one without.
        let ema = OptimizerSettings {
            ema: Some(0.99),
            ..settings(OptimizerKind::Adam, 0.0, false)
        };
        let mut averaged = open(Arch::LeNet, &ema);
        averaged.step(&batch(2, spec.side, spec.outputs, 1)).unwrap();
        assert!(averaged.save_optimizer(&path).unwrap());
        let error = adam.load_optimizer(&path).unwrap_err().to_string();
        assert!(error.contains("another `ema`"), "{error}");
    }

    /// Every tensor of a network, in the walk's order.
    fn values(net: &GraphNet<f32, Cpu>) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl TensorVisitor<f32, Cpu> for Collect {
            type Viewer = ViewTensorRef;
            type Err = <Cpu as HasErr>::Err;
            type E2 = f32;
            type D2 = Cpu;

            fn visit<S: Shape>(
                &mut self,
                _: TensorOptions<S, f32, Cpu>,
                t: &Tensor<S, f32, Cpu>,
            ) -> Result<Option<Tensor<S, f32, Cpu>>, Self::Err> {
                self.0.extend(t.as_vec());
                Ok(None)
            }
        }
        let mut collect = Collect(Vec::new());
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: net,
            f: &mut collect,
        })
        .unwrap();
        collect.0
    }

    /// The average follows `d a + (1 - d) w` with the decay warming up as
    /// (1 + n) / (10 + n), and predictions come from it.
    #[test]
    fn the_moving_average_blends_each_step_with_a_warming_decay() {
        let ema = OptimizerSettings {
            ema: Some(0.5),
            ..settings(OptimizerKind::Adam, 0.0, false)
        };
        let mut session = open(Arch::LeNet, &ema);
        let spec = spec(Arch::LeNet);
        let mut expected: Vec<f64> = values(&session.net).into_iter().map(f64::from).collect();
        // Decays 0.1, 2/11, 0.25, then 0.5 (the cap) from the eighth step on.
        for step in 0..9u64 {
            session.step(&batch(2, spec.side, spec.outputs, step)).unwrap();
            let d = 0.5f64.min((1.0 + step as f64) / (10.0 + step as f64));
            for (a, w) in expected.iter_mut().zip(values(&session.net)) {
                *a = d * *a + (1.0 - d) * f64::from(w);
            }
        }
        let average = values(&session.average.as_ref().unwrap().net);
        let worst = average
            .iter()
            .zip(&expected)
            .map(|(a, e)| (f64::from(*a) - e).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "off by {worst}");
        assert_ne!(average, values(&session.net));

        let images = batch(3, spec.side, spec.outputs, 50).images;
        let predicted = session.predict(&images, 3, 3).unwrap();
        let mut plain = open(Arch::LeNet, &settings(OptimizerKind::Adam, 0.0, false));
        let file = tempfile::NamedTempFile::new().unwrap();
        session.save_weights(file.path(), Weights::Predicting).unwrap();
        plain.load_weights(file.path(), Weights::Predicting).unwrap();
        assert_eq!(predicted, plain.predict(&images, 3, 3).unwrap());
    }
}
