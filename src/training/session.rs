//! A network and its optimiser behind one object-safe trait, so the training
//! loop is written once for every architecture and device.

use std::collections::HashMap;
use std::path::Path;

use ::safetensors::Dtype as StDtype;
use dfdx::nn::tensor_collection::{
    RecursiveWalker, TensorOptions, TensorVisitor, ViewTensorName, ViewTensorRef,
};
use dfdx::optim::{Adam, Optimizer, Sgd};
use dfdx::prelude::*;

use super::TrainError;
use super::batch::{Batch, Normalisation};
use crate::data::tensor_file::{self, TensorData, f32_bytes, floats};
use crate::models::loss::masked_mse;
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
}

/// What the training loop does with a network.
pub trait Session {
    /// One forward, backward and optimiser step; returns the batch's loss.
    fn step(&mut self, batch: &Batch) -> Result<f32, TrainError>;
    /// Normalised predictions for `rows` images (inference mode: no dropout,
    /// batch norm running statistics), computed `chunk` images at a time.
    fn predict(&self, images: &[f32], rows: usize, chunk: usize) -> Result<Vec<f32>, TrainError>;
    fn set_lr(&mut self, lr: f64);
    /// Restarts the device's random numbers (dropout's masks) from `seed`.
    fn reseed(&self, seed: u64);
    fn parameters(&self) -> usize;
    /// Where it runs: `cpu` or `cuda`.
    fn device(&self) -> &'static str;
    fn save_weights(&self, path: &Path) -> Result<(), TrainError>;
    fn load_weights(&mut self, path: &Path) -> Result<(), TrainError>;
    /// Saves the optimiser's state (Adam's step and moments). Returns false when
    /// there is none to save: SGD's momentum restarts from zero on a resume.
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
    clip: Option<f64>,
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
) -> Result<Box<dyn Session>, TrainError> {
    let net = spec.build(&dev)?;
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
    Ok(Box::new(NetSession {
        dev,
        device_name,
        net,
        grads: None,
        optim,
        clip: settings.clip_grad_norm,
        side: spec.side,
        outputs: spec.outputs,
    }))
}

impl<D: Backend> Session for NetSession<D> {
    fn step(&mut self, batch: &Batch) -> Result<f32, TrainError> {
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
        let prediction = self
            .net
            .try_forward_mut(x.traced(grads))
            .map_err(|e| self.fail(e))?;
        let loss = masked_mse(prediction, y, mask);
        let value = loss.array();
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
        self.net.try_zero_grads(&mut grads).map_err(|e| self.fail(e))?;
        self.grads = Some(grads);
        Ok(value)
    }

    fn predict(&self, images: &[f32], rows: usize, chunk: usize) -> Result<Vec<f32>, TrainError> {
        let pixels = self.side * self.side;
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
            let y = self.net.try_forward(x).map_err(|e| self.fail(e))?;
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

    fn save_weights(&self, path: &Path) -> Result<(), TrainError> {
        self.net.save_safetensors(path).map_err(|e| TrainError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn load_weights(&mut self, path: &Path) -> Result<(), TrainError> {
        let error = |message: String| TrainError::Read {
            path: path.to_path_buf(),
            message,
        };
        // Checked first, for a plain message: dfdx reports I/O errors in Debug form.
        std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        self.net
            .load_safetensors(path)
            .map_err(|e| error(format!("not the weights of this network ({e:?})")))
    }

    fn save_optimizer(&self, path: &Path) -> Result<bool, TrainError> {
        let Optim::Adam(opt) = &self.optim else {
            return Ok(false);
        };
        let mut visitor = ReadMoments {
            opt,
            moments: HashMap::new(),
        };
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: (&self.net, String::new()),
            f: &mut visitor,
        })
        .map_err(|e| self.fail(e))?;
        write_moments(path, opt.step(), &visitor.moments)?;
        Ok(true)
    }

    fn load_optimizer(&mut self, path: &Path) -> Result<(), TrainError> {
        let Optim::Adam(opt) = &mut self.optim else {
            return Ok(());
        };
        let (step, moments) = read_moments(path)?;
        opt.set_step(step);
        let mut visitor = WriteMoments {
            opt,
            moments: &moments,
        };
        GraphNet::iter_tensors(&mut RecursiveWalker {
            m: (&self.net, String::new()),
            f: &mut visitor,
        })
        .map(|_| ())
        .map_err(|e| TrainError::Device {
            device: self.device_name,
            message: format!("{e:?}"),
        })
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

type Moments = HashMap<String, (Vec<f32>, Vec<f32>)>;

/// Collects Adam's two moments of every trained tensor, by parameter path.
struct ReadMoments<'a, N, D: Storage<f32>> {
    opt: &'a Adam<N, f32, D>,
    moments: Moments,
}

impl<N, D: Device<f32>> TensorVisitor<f32, D> for ReadMoments<'_, N, D> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, D>,
        (tensor, path): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if opts.do_gradient_update
            && let Some([first, second]) = self.opt.moments(tensor)
        {
            self.moments.insert(path, (first.as_vec(), second.as_vec()));
        }
        Ok(None)
    }
}

/// Puts saved moments back, matching parameters by path.
struct WriteMoments<'a, N, D: Storage<f32>> {
    opt: &'a mut Adam<N, f32, D>,
    moments: &'a Moments,
}

impl<N, D: Device<f32>> TensorVisitor<f32, D> for WriteMoments<'_, N, D> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = f32;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, D>,
        (tensor, path): (&Tensor<S, f32, D>, String),
    ) -> Result<Option<Tensor<S, f32, D>>, Self::Err> {
        if let Some((first, second)) = self.moments.get(&path) {
            let dev = tensor.device();
            let first = dev.try_tensor_from_vec(first.clone(), *tensor.shape())?;
            let second = dev.try_tensor_from_vec(second.clone(), *tensor.shape())?;
            self.opt.set_moments(tensor, &first, &second)?;
        }
        Ok(None)
    }
}

/// The moments file's metadata.
#[derive(serde::Serialize, serde::Deserialize)]
struct MomentsMeta {
    step: i32,
}

fn write_moments(path: &Path, step: i32, moments: &Moments) -> Result<(), TrainError> {
    let tensors: Vec<TensorData> = moments
        .iter()
        .flat_map(|(name, (first, second))| {
            [(format!("m1.{name}"), first), (format!("m2.{name}"), second)].map(|(name, values)| TensorData {
                name,
                dtype: StDtype::F32,
                shape: vec![values.len()],
                bytes: f32_bytes(values).into(),
            })
        })
        .collect();
    tensor_file::write(path, &tensors, &MomentsMeta { step }).map_err(|message| TrainError::Write {
        path: path.to_path_buf(),
        message,
    })
}

fn read_moments(path: &Path) -> Result<(i32, Moments), TrainError> {
    let error = |message: String| TrainError::Read {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let (tensors, meta): (_, MomentsMeta) = tensor_file::read(&bytes).map_err(error)?;
    let values = |name: &str| tensors.tensor(name).ok().map(|view| floats(view.data()));
    let mut moments = Moments::new();
    for name in tensors.names() {
        if let Some(param) = name.strip_prefix("m1.")
            && let (Some(first), Some(second)) = (values(name), values(&format!("m2.{param}")))
        {
            moments.insert(param.to_string(), (first, second));
        }
    }
    Ok((meta.step, moments))
}
