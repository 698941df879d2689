//! The training losses, over the targets a mask selects. With `prepare.missing
//! = "mask"` the mask is 0 for missing labels, so they contribute neither loss
//! nor gradient (ML-ResNet's masked loss); otherwise it is all ones.
//!
//! Targets are normalised coordinates (pixels / half the side, centred). MSE
//! works on them as they are; the other losses work on errors in pixels, so
//! their settings (`smooth_l1_beta`, `wing_w`, `wing_epsilon`, `awing_*`) are
//! in pixels whatever the image side.

use dfdx::prelude::*;

/// `[train] loss` with its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossFunction {
    /// Mean squared error of the normalised coordinates.
    Mse,
    /// Mean absolute error in pixels.
    L1,
    /// PyTorch's smooth L1 in pixels: `0.5 x² / beta` below `beta`, `|x| - 0.5 beta` above.
    SmoothL1 { beta: f32 },
    /// Wing loss (Feng et al., CVPR 2018) in pixels: `w ln(1 + |x| / epsilon)`
    /// below `w`, `|x| - C` above, where `C` joins the two.
    Wing { w: f32, epsilon: f32 },
    /// Adaptive wing loss (Wang et al., ICCV 2019) on errors in pixels:
    /// `omega ln(1 + (|x| / epsilon)^alpha)` below `theta`, linear above with
    /// the slope and value that join it there. The paper's exponent is
    /// `alpha - y` with `y` a heatmap's target intensity; a coordinate has
    /// none, so the exponent is `alpha`: smooth at zero (no kink as in L1 or
    /// wing), logarithmic up to `theta`.
    AdaptiveWing {
        omega: f32,
        theta: f32,
        epsilon: f32,
        alpha: f32,
    },
}

impl LossFunction {
    /// The loss of `pred` against `target` over the values `mask` selects, as a
    /// mean over them; `pixels_per_unit` turns normalised coordinates into pixels.
    pub fn masked<D, T>(
        self,
        pred: Tensor<(usize, usize), f32, D, T>,
        target: Tensor<(usize, usize), f32, D>,
        mask: Tensor<(usize, usize), f32, D>,
        pixels_per_unit: f32,
    ) -> Tensor<Rank0, f32, D, T>
    where
        D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>,
        T: Tape<f32, D>,
    {
        let each = match self {
            LossFunction::Mse => return masked_mse(pred, target, mask),
            LossFunction::L1 => (pred - target).abs() * pixels_per_unit,
            LossFunction::SmoothL1 { beta } => {
                let pred_px = pred * pixels_per_unit;
                // dfdx's Huber error with delta = beta is beta times smooth L1.
                pred_px.huber_error(target * pixels_per_unit, beta) / beta
            }
            LossFunction::Wing { w, epsilon } => {
                let error = ((pred - target) * pixels_per_unit).abs();
                let near = error.lt(w);
                let joint = w - w * (1.0 + w / epsilon).ln();
                let linear = error.with_empty_tape() - joint;
                let log = (error / epsilon + 1.0).ln() * w;
                near.choose(log, linear)
            }
            LossFunction::AdaptiveWing {
                omega,
                theta,
                epsilon,
                alpha,
            } => {
                let error = ((pred - target) * pixels_per_unit).abs();
                let near = error.lt(theta);
                let (slope, offset) = adaptive_wing_joint(omega, theta, epsilon, alpha);
                let linear = error.with_empty_tape() * slope - offset;
                let log = ((error / epsilon).powf(alpha) + 1.0).ln() * omega;
                near.choose(log, linear)
            }
        };
        masked_mean(each, mask)
    }
}

/// DSNT's regulariser (Nibali et al., 2018), `[train] dsnt_regulariser`: for
/// a network ending in `soft_argmax`, the Jensen-Shannon divergence between
/// each map's distribution over its cells and a Gaussian at the labelled
/// point, so the maps stay peaked where the keypoint is instead of taking any
/// shape whose mean lands there. Masked like the coordinates' loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapRegulariser {
    /// How much the mean divergence (at most ln 2) counts beside the
    /// coordinates' loss.
    pub weight: f32,
    /// The Gaussian's standard deviation in pixels; None for one cell of the map.
    pub sigma_px: Option<f32>,
}

/// What a training minimises: the coordinates' loss, and optionally DSNT's
/// regulariser on the maps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    pub loss: LossFunction,
    pub regulariser: Option<MapRegulariser>,
}

impl From<LossFunction> for Objective {
    fn from(loss: LossFunction) -> Objective {
        Objective {
            loss,
            regulariser: None,
        }
    }
}

/// Keeps `x ln x` finite (and 0) where a softmax underflowed to 0.
const LOG_FLOOR: f32 = 1e-12;

impl MapRegulariser {
    /// `weight` times the mean divergence over the keypoints `mask` labels
    /// (weighted by it, as the coordinates' loss is).
    ///
    /// `maps`: `(b * k, cells)` distributions; `cells`: each cell's `(x, y)`
    /// and `cell_width`, in the targets' normalised coordinates;
    /// `targets` and `mask`: `(b, 2k)`, x then y per keypoint, row by row.
    pub fn masked<D, T>(
        self,
        maps: Tensor<(usize, usize), f32, D, T>,
        (cells, cell_width): (&[f32], f32),
        targets: &[f32],
        mask: &[f32],
        pixels_per_unit: f32,
    ) -> Tensor<Rank0, f32, D, T>
    where
        D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>,
        T: Tape<f32, D>,
    {
        let (rows, count) = *maps.shape();
        let sigma = self.sigma_px.map_or(cell_width, |px| px / pixels_per_unit);
        let gaussians = gaussians_at(targets, mask, cells, sigma);
        let dev = maps.device().clone();
        let q_log_q = dev.tensor_from_vec(gaussians.q_log_q, (rows,));
        let weights = dev.tensor_from_vec(gaussians.weights, (rows,));
        let q = dev.tensor_from_vec(gaussians.q, (rows, count));
        // JS(p, q) = (sum p ln p + sum q ln q) / 2 - sum m ln m, m = (p + q) / 2.
        let (p, tape) = maps.split_tape();
        let m = (p.retaped::<T>() + q) * 0.5;
        let halves = x_ln_x(p.put_tape(tape)) * 0.5 - x_ln_x(m);
        let divergence = halves.sum::<(usize,), Axis<1>>() + q_log_q * 0.5;
        masked_mean(
            divergence.reshape_like(&(rows, 1)),
            weights.reshape_like(&(rows, 1)),
        ) * self.weight
    }
}

/// `x ln x` elementwise, with `x` used twice on one tape.
fn x_ln_x<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<(usize, usize), f32, D, T>,
) -> Tensor<(usize, usize), f32, D, T> {
    let (x, tape) = x.split_tape();
    (x.clone().put_tape(tape) + LOG_FLOOR).ln() * x.retaped::<T>()
}

/// The regulariser's targets, one row per keypoint of each face.
struct Gaussians {
    /// `(rows, cells)`: a Gaussian of standard deviation `sigma` at the
    /// target, normalised over the cells (uniform for an unlabelled keypoint,
    /// which weighs nothing).
    q: Vec<f32>,
    /// `sum q ln q` of each row.
    q_log_q: Vec<f32>,
    /// Each row's weight: the mask of its x coordinate.
    weights: Vec<f32>,
}

fn gaussians_at(targets: &[f32], mask: &[f32], cells: &[f32], sigma: f32) -> Gaussians {
    let count = cells.len() / 2;
    let rows = targets.len() / 2;
    let mut q = Vec::with_capacity(rows * count);
    let mut q_log_q = Vec::with_capacity(rows);
    let mut weights = Vec::with_capacity(rows);
    let scale = 1.0 / (2.0 * f64::from(sigma) * f64::from(sigma));
    let mut row = vec![0f64; count];
    for (target, weight) in targets.chunks_exact(2).zip(mask.chunks_exact(2)) {
        let labelled = weight[0] > 0.0 && target.iter().all(|v| v.is_finite());
        let (tx, ty) = (f64::from(target[0]), f64::from(target[1]));
        for (value, cell) in row.iter_mut().zip(cells.chunks_exact(2)) {
            let (dx, dy) = (f64::from(cell[0]) - tx, f64::from(cell[1]) - ty);
            *value = if labelled {
                -(dx * dx + dy * dy) * scale
            } else {
                0.0
            };
        }
        // A softmax of the exponents: a target far off the map still gives a
        // distribution, not zeros.
        let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = row.iter().map(|e| (e - top).exp()).sum();
        let mut sum_q_log_q = 0.0;
        for e in &row {
            let log = e - top - total.ln();
            sum_q_log_q += log.exp() * log;
            q.push(log.exp() as f32);
        }
        q_log_q.push(sum_q_log_q as f32);
        weights.push(if labelled { weight[0] } else { 0.0 });
    }
    Gaussians { q, q_log_q, weights }
}

/// Adaptive wing's linear part above `theta`, `slope |x| - offset`: the
/// slope and value of the logarithmic part at `theta`.
fn adaptive_wing_joint(omega: f32, theta: f32, epsilon: f32, alpha: f32) -> (f32, f32) {
    let ratio = theta / epsilon;
    let slope = omega * alpha * ratio.powf(alpha - 1.0) / (epsilon * (1.0 + ratio.powf(alpha)));
    let offset = theta * slope - omega * (1.0 + ratio.powf(alpha)).ln();
    (slope, offset)
}

/// `sum(mask * (pred - target)^2) / max(1, sum(mask))`.
pub fn masked_mse<D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>, T: Tape<f32, D>>(
    pred: Tensor<(usize, usize), f32, D, T>,
    target: Tensor<(usize, usize), f32, D>,
    mask: Tensor<(usize, usize), f32, D>,
) -> Tensor<Rank0, f32, D, T> {
    masked_mean((pred - target).square(), mask)
}

/// `sum(mask * each) / max(1, sum(mask))`.
fn masked_mean<D: Device<f32> + TensorToArray<Rank0, f32, Array = f32>, T: Tape<f32, D>>(
    each: Tensor<(usize, usize), f32, D, T>,
    mask: Tensor<(usize, usize), f32, D>,
) -> Tensor<Rank0, f32, D, T> {
    let count = mask.clone().sum::<Rank0, _>().array().max(1.0);
    (each * mask).sum::<Rank0, _>() / count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_labels_get_exactly_zero_gradient() {
        let dev = Cpu::default();
        let pred: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(vec![1.0, 2.0, 3.0, 4.0], (2, 2));
        let target = dev.tensor_from_vec(vec![0.0, 0.0, 99.0, 0.0], (2, 2));
        let mask = dev.tensor_from_vec(vec![1.0, 1.0, 0.0, 1.0], (2, 2));
        let loss = masked_mse(pred.leaky_trace(), target, mask);
        // (1 + 4 + 16) / 3 labelled values; the 99 is ignored.
        assert!((loss.array() - 7.0).abs() < 1e-6);
        let grads = loss.backward();
        let g = grads.get(&pred).as_vec();
        assert_eq!(g[2], 0.0, "no gradient from the missing label");
        assert!((g[0] - 2.0 * 1.0 / 3.0).abs() < 1e-6);
        assert!((g[3] - 2.0 * 4.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn a_full_mask_is_plain_mse() {
        let dev = Cpu::default();
        let pred: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(vec![1.0, -1.0], (1, 2));
        let target = dev.tensor_from_vec(vec![0.0, 0.0], (1, 2));
        let mask = dev.ones_like(&(1, 2));
        assert!((masked_mse(pred, target, mask).array() - 1.0).abs() < 1e-6);
    }

    /// The loss of each error (in pixels), by its formula.
    fn reference(loss: LossFunction, x: f64) -> f64 {
        let a = x.abs();
        match loss {
            LossFunction::Mse => unreachable!("MSE is checked on its own"),
            LossFunction::L1 => a,
            LossFunction::SmoothL1 { beta } => {
                let beta = f64::from(beta);
                if a < beta {
                    0.5 * a * a / beta
                } else {
                    a - 0.5 * beta
                }
            }
            LossFunction::Wing { w, epsilon } => {
                let (w, epsilon) = (f64::from(w), f64::from(epsilon));
                if a < w {
                    w * (1.0 + a / epsilon).ln()
                } else {
                    a - (w - w * (1.0 + w / epsilon).ln())
                }
            }
            LossFunction::AdaptiveWing {
                omega,
                theta,
                epsilon,
                alpha,
            } => {
                let [omega, theta, epsilon, alpha] = [omega, theta, epsilon, alpha].map(f64::from);
                let log = |a: f64| omega * (1.0 + (a / epsilon).powf(alpha)).ln();
                if a < theta {
                    log(a)
                } else {
                    // The line through (theta, log(theta)) with log's slope there.
                    let h = 1e-6;
                    let slope = (log(theta + h) - log(theta - h)) / (2.0 * h);
                    log(theta) + slope * (a - theta)
                }
            }
        }
    }

    const PIXEL_LOSSES: [LossFunction; 5] = [
        LossFunction::L1,
        LossFunction::SmoothL1 { beta: 1.0 },
        LossFunction::Wing {
            w: 10.0,
            epsilon: 2.0,
        },
        LossFunction::AdaptiveWing {
            omega: 14.0,
            theta: 0.5,
            epsilon: 1.0,
            alpha: 2.1,
        },
        // theta well inside the errors, so both parts are checked.
        LossFunction::AdaptiveWing {
            omega: 10.0,
            theta: 5.0,
            epsilon: 2.0,
            alpha: 2.1,
        },
    ];

    #[test]
    fn pixel_losses_follow_their_formulas_and_skip_missing_labels() {
        let dev = Cpu::default();
        // Errors of -30, -4, -0.5, 0.25, 3 and 12 pixels at 48 pixels per unit;
        // the fifth value is a missing label.
        let errors_px = [-30.0f32, -4.0, -0.5, 0.25, 3.0, 12.0];
        let target = vec![0.1f32; 6];
        let pred: Vec<f32> = errors_px.iter().map(|e| 0.1 + e / 48.0).collect();
        let mask = vec![1.0f32, 1.0, 1.0, 1.0, 0.0, 1.0];
        for loss in PIXEL_LOSSES {
            let value = loss
                .masked(
                    dev.tensor_from_vec(pred.clone(), (2, 3)),
                    dev.tensor_from_vec(target.clone(), (2, 3)),
                    dev.tensor_from_vec(mask.clone(), (2, 3)),
                    48.0,
                )
                .array();
            let want: f64 = errors_px
                .iter()
                .zip(&mask)
                .map(|(&e, &m)| f64::from(m) * reference(loss, f64::from(e)))
                .sum::<f64>()
                / 5.0;
            assert!(
                (f64::from(value) - want).abs() < 1e-3 * want.max(1.0),
                "{loss:?}: {value} vs {want}"
            );
        }
    }

    #[test]
    fn pixel_losses_have_the_gradients_of_their_formulas() {
        let dev = Cpu::default();
        let errors_px = [-30.0f32, -4.0, -0.5, 0.25, 3.0, 12.0];
        let pred_values: Vec<f32> = errors_px.iter().map(|e| e / 48.0).collect();
        let mask = vec![1.0f32, 1.0, 1.0, 1.0, 0.0, 1.0];
        for loss in PIXEL_LOSSES {
            let pred: Tensor<(usize, usize), f32, Cpu> = dev.tensor_from_vec(pred_values.clone(), (2, 3));
            let value = loss.masked(
                pred.leaky_trace(),
                dev.zeros_like(&(2, 3)),
                dev.tensor_from_vec(mask.clone(), (2, 3)),
                48.0,
            );
            let grads = value.backward().get(&pred).as_vec();
            for (i, (&e, &m)) in errors_px.iter().zip(&mask).enumerate() {
                // d/dpred of reference(48 pred) / 5, by central differences.
                let h = 1e-4;
                let x = f64::from(e);
                let slope = (reference(loss, x + h) - reference(loss, x - h)) / (2.0 * h);
                let want = f64::from(m) * slope * 48.0 / 5.0;
                let got = f64::from(grads[i]);
                assert!(
                    (got - want).abs() < 1e-3 * want.abs().max(1.0),
                    "{loss:?} at {e} px: {got} vs {want}"
                );
            }
        }
    }

    /// Two faces of two keypoints on a 3x4 map of a 16-pixel image: the
    /// cells' positions, targets (the second face's first keypoint missing),
    /// and a mask.
    fn dsnt_case() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let cells = crate::models::kinds::soft_argmax_positions(3, 4, 16);
        let targets = vec![0.1f32, -0.3, -0.6, 0.5, f32::NAN, f32::NAN, 0.9, 0.2];
        let mask = vec![1.0f32, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0];
        (cells, targets, mask)
    }

    /// Jensen-Shannon divergence of `p` from a Gaussian at `(tx, ty)` over
    /// `cells`, in f64 from the definition.
    fn reference_divergence(p: &[f64], cells: &[f32], (tx, ty): (f64, f64), sigma: f64) -> f64 {
        let density: Vec<f64> = cells
            .chunks_exact(2)
            .map(|c| {
                (-((f64::from(c[0]) - tx).powi(2) + (f64::from(c[1]) - ty).powi(2)) / (2.0 * sigma * sigma))
                    .exp()
            })
            .collect();
        let total: f64 = density.iter().sum();
        let kl = |a: &[f64], b: &[f64]| -> f64 {
            a.iter()
                .zip(b)
                .filter(|(a, _)| **a > 0.0)
                .map(|(a, b)| a * (a / b).ln())
                .sum()
        };
        let q: Vec<f64> = density.iter().map(|d| d / total).collect();
        let m: Vec<f64> = p.iter().zip(&q).map(|(p, q)| (p + q) / 2.0).collect();
        (kl(p, &m) + kl(&q, &m)) / 2.0
    }

    /// The regulariser's value by the reference, over the labelled rows.
    fn reference_regulariser(maps: &[f64], weight: f64, sigma_px: f64) -> f64 {
        let (cells, targets, mask) = dsnt_case();
        let count = cells.len() / 2;
        let mut total = 0.0;
        let mut labelled = 0.0;
        for (row, (target, m)) in targets.chunks_exact(2).zip(mask.chunks_exact(2)).enumerate() {
            if m[0] > 0.0 {
                let at = (f64::from(target[0]), f64::from(target[1]));
                total +=
                    reference_divergence(&maps[row * count..(row + 1) * count], &cells, at, sigma_px / 8.0);
                labelled += 1.0;
            }
        }
        weight * total / labelled
    }

    #[test]
    fn the_dsnt_regulariser_is_the_jensen_shannon_divergence_over_labelled_keypoints() {
        let dev = Cpu::seed_from_u64(5);
        let (cells, targets, mask) = dsnt_case();
        let regulariser = MapRegulariser {
            weight: 0.5,
            sigma_px: Some(3.0),
        };
        let logits: Tensor<(usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 12));
        let maps = logits.softmax::<Axis<1>>();
        let values: Vec<f64> = maps.as_vec().into_iter().map(f64::from).collect();
        // 16 pixels: 8 per unit of the targets' coordinates.
        let got = regulariser
            .masked(maps.leaky_trace(), (&cells, 0.5), &targets, &mask, 8.0)
            .array();
        let want = reference_regulariser(&values, 0.5, 3.0);
        assert!(want > 0.01, "a random map is far from the Gaussian: {want}");
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");

        // Its gradient, by central differences of the reference.
        let grads = regulariser
            .masked(maps.leaky_trace(), (&cells, 0.5), &targets, &mask, 8.0)
            .backward()
            .get(&maps)
            .as_vec();
        for (i, &g) in grads.iter().enumerate() {
            let h = 1e-5;
            let (mut up, mut down) = (values.clone(), values.clone());
            up[i] += h;
            down[i] -= h;
            let slope =
                (reference_regulariser(&up, 0.5, 3.0) - reference_regulariser(&down, 0.5, 3.0)) / (2.0 * h);
            assert!((f64::from(g) - slope).abs() < 1e-3, "cell {i}: {g} vs {slope}");
            if (24..36).contains(&i) {
                assert_eq!(g, 0.0, "the missing keypoint's map gets no gradient");
            }
        }
    }

    #[test]
    fn the_dsnt_regulariser_vanishes_on_the_gaussian_and_defaults_to_one_cell() {
        let dev = Cpu::default();
        let (cells, targets, mask) = dsnt_case();
        // One cell of the 4-wide map is 0.5 in the targets' coordinates (4 px).
        let one_cell = gaussians_at(&targets, &mask, &cells, 0.5);
        let regulariser = |sigma_px| MapRegulariser {
            weight: 1.0,
            sigma_px,
        };
        let maps = || dev.tensor_from_vec(one_cell.q.clone(), (4, 12));
        for sigma_px in [None, Some(4.0)] {
            let value = regulariser(sigma_px)
                .masked(maps(), (&cells, 0.5), &targets, &mask, 8.0)
                .array();
            assert!(value.abs() < 1e-6, "{sigma_px:?}: {value}");
        }
        let wider = regulariser(Some(8.0))
            .masked(maps(), (&cells, 0.5), &targets, &mask, 8.0)
            .array();
        assert!(wider > 1e-3, "another sigma is another Gaussian: {wider}");
        // Each row is a distribution; the missing keypoint's is uniform and weighs nothing.
        for row in one_cell.q.chunks_exact(12) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(one_cell.weights, [1.0, 1.0, 0.0, 1.0]);
        assert!(one_cell.q[24..36].iter().all(|&v| (v - 1.0 / 12.0).abs() < 1e-7));
    }
}
