//! fkp's patched dfdx kernels (patches/dfdx/0006: batched conv2d and pool2d;
//! 0016: Winograd 3x3 convolutions;
//! 0004: elementwise ops and reductions; 0008: leaky ReLU; 0005: zeroing large
//! buffers)
//! checked against plain per-image reference implementations kept here, forward
//! and backward, on random inputs. Shapes cover one image at a time, several
//! images per GEMM chunk, and batches split into many chunks and lanes. Each is
//! run on 1 and 2 rayon threads, which must give bit-identical results.

use dfdx::prelude::*;
use rand::{RngExt, SeedableRng};

/// A convolution case: batch, channels in, side, channels out, kernel, stride,
/// padding, dilation.
#[derive(Debug, Clone, Copy)]
struct Conv {
    batch: usize,
    chan_in: usize,
    side: usize,
    chan_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
}

impl Conv {
    fn side_out(&self) -> usize {
        (self.side + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) / self.stride + 1
    }

    /// The input row or column read by output position `o` at kernel tap `k`.
    fn source(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.stride + k * self.dilation)
            .checked_sub(self.padding)
            .filter(|&i| i < self.side)
    }
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// (output, input gradient, filter gradient) through dfdx, for the loss
/// `sum(output * grad_out)`.
fn dfdx_conv(c: Conv, x: &[f32], w: &[f32], grad_out: &[f32]) -> [Vec<f32>; 3] {
    let dev = Cpu::default();
    let so = c.side_out();
    let x = dev.tensor_from_vec(x.to_vec(), (c.batch, c.chan_in, c.side, c.side));
    let w = dev.tensor_from_vec(w.to_vec(), (c.chan_out, c.chan_in, c.kernel, c.kernel));
    let g = dev.tensor_from_vec(grad_out.to_vec(), (c.batch, c.chan_out, so, so));
    let out = (x.leaky_trace(), w.clone()).conv2d(c.stride, c.padding, c.dilation, 1usize);
    let values = out.as_vec();
    let grads = (out * g).sum().backward();
    [values, grads.get(&x).as_vec(), grads.get(&w).as_vec()]
}

/// The same three, image by image in f64, with for each value the sum of the
/// absolute values of its terms (what its rounding error scales with).
fn reference_conv(c: Conv, x: &[f32], w: &[f32], grad_out: &[f32]) -> [Vec<(f64, f64)>; 3] {
    let so = c.side_out();
    let xi = |b: usize, ch: usize, y: usize, x_: usize| ((b * c.chan_in + ch) * c.side + y) * c.side + x_;
    let wi =
        |o: usize, ch: usize, k1: usize, k2: usize| ((o * c.chan_in + ch) * c.kernel + k1) * c.kernel + k2;
    let oi = |b: usize, o: usize, y: usize, x_: usize| ((b * c.chan_out + o) * so + y) * so + x_;
    let mut out = vec![(0.0, 0.0); c.batch * c.chan_out * so * so];
    let mut grad_x = vec![(0.0, 0.0); x.len()];
    let mut grad_w = vec![(0.0, 0.0); w.len()];
    let add = |acc: &mut (f64, f64), term: f64| {
        acc.0 += term;
        acc.1 += term.abs();
    };
    for b in 0..c.batch {
        for o in 0..c.chan_out {
            for oh in 0..so {
                for ow in 0..so {
                    let g = f64::from(grad_out[oi(b, o, oh, ow)]);
                    for ch in 0..c.chan_in {
                        for k1 in 0..c.kernel {
                            for k2 in 0..c.kernel {
                                let (Some(y), Some(x_)) = (c.source(oh, k1), c.source(ow, k2)) else {
                                    continue;
                                };
                                let xv = f64::from(x[xi(b, ch, y, x_)]);
                                let wv = f64::from(w[wi(o, ch, k1, k2)]);
                                add(&mut out[oi(b, o, oh, ow)], xv * wv);
                                add(&mut grad_x[xi(b, ch, y, x_)], g * wv);
                                add(&mut grad_w[wi(o, ch, k1, k2)], g * xv);
                            }
                        }
                    }
                }
            }
        }
    }
    [out, grad_x, grad_w]
}

/// Every value within 1e-5 of the reference, relative to the size of its terms.
fn assert_close(what: &str, got: &[f32], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, (value, scale))) in got.iter().zip(want).enumerate() {
        let error = (f64::from(*g) - value).abs();
        assert!(
            error <= 1e-5 * scale.max(1e-12),
            "{what}[{i}]: {g} vs {value} (error {error:e}, terms {scale:e})"
        );
    }
}

fn on_threads<T: Send>(threads: usize, job: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(job)
}

/// Compares each output of `run` at 1 thread with the reference, and the
/// 1-thread results with the 2-thread ones bit for bit.
fn check_both<const K: usize>(
    what: &str,
    run: impl Fn() -> [Vec<f32>; K] + Send + Sync,
    want: [Vec<(f64, f64)>; K],
    names: [&str; K],
) {
    let one = on_threads(1, &run);
    let two = on_threads(2, &run);
    for k in 0..K {
        assert_close(&format!("{what} {}", names[k]), &one[k], &want[k]);
        let same = one[k]
            .iter()
            .zip(&two[k])
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{what} {}: 1 and 2 threads differ", names[k]);
    }
}

fn check_conv(c: Conv, seed: u64) {
    let so = c.side_out();
    let x = random(c.batch * c.chan_in * c.side * c.side, seed);
    let w = random(c.chan_out * c.chan_in * c.kernel * c.kernel, seed + 1);
    let g = random(c.batch * c.chan_out * so * so, seed + 2);
    check_both(
        &format!("{c:?}"),
        || dfdx_conv(c, &x, &w, &g),
        reference_conv(c, &x, &w, &g),
        ["output", "input gradient", "filter gradient"],
    );
}

#[test]
fn conv2d_one_image_at_a_time() {
    let c = Conv {
        batch: 1,
        chan_in: 2,
        side: 7,
        chan_out: 3,
        kernel: 3,
        stride: 2,
        padding: 0,
        dilation: 1,
    };
    check_conv(c, 1);
}

#[test]
fn conv2d_several_images_per_chunk() {
    // 81 output pixels: 13 images fill a chunk, so the batch of 10 is one chunk.
    let c = Conv {
        batch: 10,
        chan_in: 3,
        side: 9,
        chan_out: 4,
        kernel: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
    };
    check_conv(c, 2);
    // Stride 2 on 6x6: 9 output pixels per image, all 19 images in one chunk.
    let c = Conv {
        batch: 19,
        chan_in: 2,
        side: 6,
        chan_out: 5,
        kernel: 3,
        stride: 2,
        padding: 1,
        dilation: 1,
    };
    check_conv(c, 3);
}

#[test]
fn conv2d_batches_split_into_chunks_and_lanes() {
    // 144 output pixels: chunks of 8 images, 3 chunks: fewer than the 8
    // lanes, so they run in order with the work inside each spread; 1x1 kernels.
    let c = Conv {
        batch: 24,
        chan_in: 4,
        side: 12,
        chan_out: 6,
        kernel: 1,
        stride: 1,
        padding: 0,
        dilation: 1,
    };
    check_conv(c, 4);
    // 576 output pixels: chunks of 2 images, 19 chunks over the 8 lanes.
    let c = Conv {
        batch: 37,
        chan_in: 1,
        side: 24,
        chan_out: 3,
        kernel: 5,
        stride: 1,
        padding: 2,
        dilation: 1,
    };
    check_conv(c, 5);
    // Dilation, where each tap reads every other pixel.
    let c = Conv {
        batch: 9,
        chan_in: 2,
        side: 10,
        chan_out: 2,
        kernel: 3,
        stride: 1,
        padding: 2,
        dilation: 2,
    };
    check_conv(c, 6);
}

#[test]
fn conv2d_deep_layer_gemms_split_over_threads() {
    // 36 output pixels: chunks of 29 images, 3 chunks (the last of 6 images),
    // whose GEMMs (64 x 1600 x 1044 forward) are large enough for gemm to split
    // them over the 2 threads: the result must not change. (5x5: a 3x3 of
    // stride 1 would take the Winograd path, tested below.)
    let c = Conv {
        batch: 64,
        chan_in: 64,
        side: 6,
        chan_out: 64,
        kernel: 5,
        stride: 1,
        padding: 2,
        dilation: 1,
    };
    check_conv(c, 7);
}

/// A 3x3 convolution of stride 1 (0016: Winograd F(2x2, 3x3) from 16 input
/// channels and 6x6 outputs on).
fn winograd(batch: usize, chan_in: usize, side: usize, chan_out: usize, padding: usize) -> Conv {
    Conv {
        batch,
        chan_in,
        side,
        chan_out,
        kernel: 3,
        stride: 1,
        padding,
        dilation: 1,
    }
}

#[test]
fn conv2d_winograd_tiles_at_the_edges() {
    // Each padding: 0 (no tile reads padding), 1 (ResNet's), 2, 3 and 4 (the
    // output larger than the input; at 4 whole tile rows read only padding);
    // odd output sides 7, 9 and 11, where the last tile row and column are
    // half past the edge; batches of 1 to 5 images, each one chunk.
    check_conv(winograd(1, 16, 7, 5, 1), 8);
    check_conv(winograd(3, 17, 8, 3, 0), 9);
    check_conv(winograd(2, 16, 5, 4, 2), 10);
    check_conv(winograd(5, 16, 9, 2, 0), 11);
    check_conv(winograd(2, 16, 5, 3, 3), 12);
    check_conv(winograd(2, 16, 5, 3, 4), 19);
}

#[test]
fn conv2d_winograd_chunks_lanes_and_deep_layers() {
    // 24x24: 144 tiles per image; with 136 channels in and out, chunks of 2
    // images (about 256 tiles), 19 chunks over the 8 lanes
    check_conv(winograd(37, 64, 24, 72, 1), 13);
    // the same with 24 channels, a narrow layer (at most 128 channels in and
    // out: about 128 tiles per chunk): chunks of 1 image, 37 over the lanes
    check_conv(winograd(37, 16, 24, 8, 1), 20);
    // 6x6: 9 tiles per image, chunks of 29 images, 3 chunks run in order; the
    // first two chunks' GEMMs (72 x 64 x 261) are large enough for gemm to
    // split them over the 2 threads
    check_conv(winograd(64, 64, 6, 72, 1), 14);
    // 6x6 without padding, narrow: two chunks (15 and 5 images) in order
    check_conv(winograd(20, 32, 8, 48, 0), 15);
    // the shapes just outside Winograd's reach, on im2col: 5x5 and 3x3
    // outputs, 15 input channels
    check_conv(winograd(6, 32, 5, 8, 1), 16);
    check_conv(winograd(6, 32, 3, 8, 1), 17);
    check_conv(winograd(4, 15, 8, 8, 1), 18);
}

/// A pooling case: kind, batch, channels, side, kernel, stride, padding.
#[derive(Debug, Clone, Copy)]
struct Pool {
    max: bool,
    batch: usize,
    chan: usize,
    side: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Pool {
    fn side_out(&self) -> usize {
        (self.side + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

fn dfdx_pool(p: Pool, x: &[f32], grad_out: &[f32]) -> [Vec<f32>; 2] {
    let dev = Cpu::default();
    let so = p.side_out();
    let x = dev.tensor_from_vec(x.to_vec(), (p.batch, p.chan, p.side, p.side));
    let g = dev.tensor_from_vec(grad_out.to_vec(), (p.batch, p.chan, so, so));
    let kind = if p.max { Pool2DKind::Max } else { Pool2DKind::Avg };
    let out = x
        .leaky_trace()
        .pool2d(kind, p.kernel, p.stride, p.padding, 1usize);
    let values = out.as_vec();
    let grads = (out * g).sum().backward();
    [values, grads.get(&x).as_vec()]
}

/// dfdx's semantics, per window: max takes the largest value and sends the
/// gradient to it; average divides by kernel², padding counting as zeros.
fn reference_pool(p: Pool, x: &[f32], grad_out: &[f32]) -> [Vec<(f64, f64)>; 2] {
    let so = p.side_out();
    let mut out = vec![(0.0, 0.0); p.batch * p.chan * so * so];
    let mut grad_x = vec![(0.0, 0.0); x.len()];
    let area = (p.kernel * p.kernel) as f64;
    for plane in 0..p.batch * p.chan {
        for oh in 0..so {
            for ow in 0..so {
                let window: Vec<usize> = (0..p.kernel)
                    .flat_map(|k1| (0..p.kernel).map(move |k2| (k1, k2)))
                    .filter_map(|(k1, k2)| {
                        let y = (oh * p.stride + k1)
                            .checked_sub(p.padding)
                            .filter(|&y| y < p.side)?;
                        let x_ = (ow * p.stride + k2)
                            .checked_sub(p.padding)
                            .filter(|&x_| x_ < p.side)?;
                        Some((plane * p.side + y) * p.side + x_)
                    })
                    .collect();
                let o = (plane * so + oh) * so + ow;
                let g = f64::from(grad_out[o]);
                if p.max {
                    let best = *window
                        .iter()
                        .max_by(|a, b| x[**a].total_cmp(&x[**b]))
                        .expect("windows overlap the image");
                    out[o] = (f64::from(x[best]), f64::from(x[best]).abs());
                    grad_x[best].0 += g;
                    grad_x[best].1 += g.abs();
                } else {
                    for &i in &window {
                        out[o].0 += f64::from(x[i]) / area;
                        out[o].1 += f64::from(x[i]).abs() / area;
                        grad_x[i].0 += g / area;
                        grad_x[i].1 += g.abs() / area;
                    }
                }
            }
        }
    }
    [out, grad_x]
}

fn check_pool(p: Pool, seed: u64) {
    let so = p.side_out();
    // Distinct values: a max-pooling window never has a tie.
    let x = random(p.batch * p.chan * p.side * p.side, seed);
    let g = random(p.batch * p.chan * so * so, seed + 1);
    check_both(
        &format!("{p:?}"),
        || dfdx_pool(p, &x, &g),
        reference_pool(p, &x, &g),
        ["output", "input gradient"],
    );
}

#[test]
fn max_and_average_pooling() {
    for (seed, max) in [(10, true), (20, false)] {
        // LeNet's 2x2 pooling, and ResNet's 3x3 stride-2 pooling with padding.
        let lenet = Pool {
            max,
            batch: 11,
            chan: 3,
            side: 10,
            kernel: 2,
            stride: 2,
            padding: 0,
        };
        check_pool(lenet, seed);
        let resnet = Pool {
            max,
            batch: 6,
            chan: 4,
            side: 13,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        check_pool(resnet, seed + 1);
        // No padding, as AlexNet's, and a side whose last row and column
        // no window reaches.
        let uncovered_edge = Pool {
            side: 12,
            padding: 0,
            ..resnet
        };
        check_pool(uncovered_edge, seed + 2);
        // Windows with rows and columns on both sides outside the plane.
        let wide_padding = Pool {
            max,
            batch: 2,
            chan: 5,
            side: 7,
            kernel: 3,
            stride: 1,
            padding: 2,
        };
        check_pool(wide_padding, seed + 3);
    }
}

/// Pooling and the binary ops that keep their inputs for backward write their
/// outputs on buffers from the allocation cache without zeroing them
/// (patches/dfdx/0005-0006): handed buffers full of NaN, they must leave none,
/// and give what a fresh device gives.
#[test]
fn pooling_and_binary_outputs_overwrite_reused_buffers() {
    let (batch, chan, side, side_out) = (3, 4, 13, 7);
    let x = random(batch * chan * side * side, 90);
    let y = random(batch * chan * side * side, 91);
    let run = |cache: bool| {
        let dev = Cpu::default();
        if cache {
            dev.enable_cache();
            for n in [batch * chan * side_out * side_out, x.len()] {
                drop(dev.tensor_from_vec(vec![f32::NAN; n], (n,)));
            }
        }
        let shape = (batch, chan, side, side);
        let xt = dev.tensor_from_vec(x.clone(), shape);
        let yt = dev.tensor_from_vec(y.clone(), shape);
        let pooled = xt.leaky_trace().pool2d(Pool2DKind::Max, 3, 2, 1, 1usize);
        let product = xt.leaky_trace() * yt;
        [pooled.as_vec(), product.as_vec()]
    };
    let fresh = run(false);
    for threads in [1, 2] {
        let reused = on_threads(threads, || run(true));
        for (name, got, want) in [
            ("pooled", &reused[0], &fresh[0]),
            ("product", &reused[1], &fresh[1]),
        ] {
            assert!(
                got.iter().all(|v| !v.is_nan()),
                "{name}: an element left unwritten"
            );
            assert_eq!(got, want, "{name}, {threads} thread(s)");
        }
    }
}

// ---- elementwise ops and reductions (patches/dfdx/0004) ---------------------

/// Batch, channels and side of the elementwise cases: 80,000 values, above the
/// size where the patched kernels split work over threads, and not a whole
/// number of their chunks; 625 values per channel and map, not a multiple of
/// batch norm's 8 lanes.
const B: usize = 8;
const C: usize = 16;
const S: usize = 25;
type Map = Rank4<B, C, S, S>;
const N: usize = B * C * S * S;

fn map(dev: &Cpu, v: &[f32]) -> Tensor<Map, f32, Cpu> {
    dev.tensor_from_vec(v.to_vec(), Map::default())
}

fn chan(dev: &Cpu, v: &[f32]) -> Tensor<Rank1<C>, f32, Cpu> {
    dev.tensor_from_vec(v.to_vec(), Rank1::<C>::default())
}

fn channel_of(i: usize) -> usize {
    (i / (S * S)) % C
}

fn exact(v: impl IntoIterator<Item = f64>) -> Vec<(f64, f64)> {
    v.into_iter().map(|x| (x, x.abs())).collect()
}

#[test]
fn unary_ops_forward_and_backward() {
    let x = random(N, 30);
    let g = random(N, 31);
    type Case = (&'static str, fn(f64) -> f64, fn(f64) -> f64);
    let cases: [Case; 5] = [
        ("relu", |v| v.max(0.0), |v| if v > 0.0 { 1.0 } else { 0.0 }),
        (
            "leaky relu 0.1",
            |v| if v < 0.0 { v * f64::from(0.1f32) } else { v },
            |v| if v < 0.0 { f64::from(0.1f32) } else { 1.0 },
        ),
        ("square", |v| v * v, |v| 2.0 * v),
        (
            "sigmoid",
            |v| 1.0 / (1.0 + (-v).exp()),
            |v| {
                let s = 1.0 / (1.0 + (-v).exp());
                s * (1.0 - s)
            },
        ),
        ("scale by 0.5", |v| 0.5 * v, |_| 0.5),
    ];
    for (name, f, df) in cases {
        let run = || {
            let dev = Cpu::default();
            let xt = map(&dev, &x);
            let traced = xt.leaky_trace();
            let out = match name {
                "relu" => traced.relu(),
                "leaky relu 0.1" => traced.prelu(0.1),
                "square" => traced.square(),
                "sigmoid" => traced.sigmoid(),
                _ => traced * 0.5,
            };
            let values = out.as_vec();
            let grads = (out * map(&dev, &g)).sum().backward();
            [values, grads.get(&xt).as_vec()]
        };
        let want_out = x.iter().map(|&v| f(f64::from(v)));
        let want_grad = x.iter().zip(&g).map(|(&v, &gi)| df(f64::from(v)) * f64::from(gi));
        // sigmoid's exp is not exact in f32: compare it at its own rounding.
        let (want_out, want_grad): (Vec<_>, Vec<_>) = if name == "sigmoid" {
            (
                want_out.map(|v| (v, 1.0)).collect(),
                want_grad.map(|v| (v, 1.0)).collect(),
            )
        } else {
            (exact(want_out), exact(want_grad))
        };
        check_both(name, run, [want_out, want_grad], ["output", "input gradient"]);
    }
}

/// `(x - mean) * scale + bias` with per-channel vectors broadcast over the map,
/// as batch norm composes it: broadcast operands on either side of a binary op,
/// and their gradients summed over everything but the channel.
#[test]
fn broadcast_binary_ops_and_their_gradients() {
    let x = random(N, 40);
    let g = random(N, 41);
    let mean = random(C, 42);
    let scale = random(C, 43);
    let bias = random(C, 44);
    let run = || {
        let dev = Cpu::default();
        let xt = map(&dev, &x);
        let (mt, st, bt) = (chan(&dev, &mean), chan(&dev, &scale), chan(&dev, &bias));
        let centered = xt.leaky_trace() - mt.leaky_trace().broadcast_like::<Map, _>(&Map::default());
        let scaled = centered * st.leaky_trace().broadcast_like::<Map, _>(&Map::default());
        let out = scaled + bt.leaky_trace().broadcast_like::<Map, _>(&Map::default());
        let values = out.as_vec();
        let grads = (out * map(&dev, &g)).sum().backward();
        [
            values,
            grads.get(&xt).as_vec(),
            grads.get(&mt).as_vec(),
            grads.get(&st).as_vec(),
            grads.get(&bt).as_vec(),
        ]
    };
    let f = |v: f32| f64::from(v);
    let mut want_out = Vec::with_capacity(N);
    let mut want_x = Vec::with_capacity(N);
    let mut per_chan = vec![[(0.0, 0.0); 3]; C];
    for i in 0..N {
        let c = channel_of(i);
        let centered = f(x[i]) - f(mean[c]);
        let out = centered * f(scale[c]) + f(bias[c]);
        want_out.push((out, centered.abs() * f(scale[c]).abs() + f(bias[c]).abs()));
        want_x.push((f(scale[c]) * f(g[i]), (f(scale[c]) * f(g[i])).abs()));
        for (k, term) in [-f(scale[c]) * f(g[i]), centered * f(g[i]), f(g[i])]
            .into_iter()
            .enumerate()
        {
            per_chan[c][k].0 += term;
            per_chan[c][k].1 += term.abs();
        }
    }
    let column = |k: usize| per_chan.iter().map(|p| p[k]).collect::<Vec<_>>();
    check_both(
        "batch-norm-like broadcast",
        run,
        [want_out, want_x, column(0), column(1), column(2)],
        [
            "output",
            "x gradient",
            "mean gradient",
            "scale gradient",
            "bias gradient",
        ],
    );
}

/// Two permuted (non-contiguous) operands: the kernel walks both through their
/// strides into a fresh contiguous output.
#[test]
fn strided_operands() {
    let x = random(N, 50);
    let y = random(N, 51);
    let g = random(N, 52);
    type Swapped = Rank4<B, S, C, S>;
    let run = || {
        let dev = Cpu::default();
        let (xt, yt) = (map(&dev, &x), map(&dev, &y));
        let xs = xt.leaky_trace().permute::<Swapped, Axes4<0, 2, 1, 3>>();
        let ys = yt.leaky_trace().permute::<Swapped, Axes4<0, 2, 1, 3>>();
        let out = xs * ys;
        let values = out.as_vec();
        let gt = dev.tensor_from_vec(g.clone(), Swapped::default());
        let grads = (out * gt).sum().backward();
        [values, grads.get(&xt).as_vec(), grads.get(&yt).as_vec()]
    };
    // Element (b, h, c, w) of the swapped view is element (b, c, h, w) of x.
    let swapped = |b: usize, h: usize, c: usize, w: usize| ((b * S + h) * C + c) * S + w;
    let plain = |b: usize, c: usize, h: usize, w: usize| ((b * C + c) * S + h) * S + w;
    let mut want = [vec![(0.0, 0.0); N], vec![(0.0, 0.0); N], vec![(0.0, 0.0); N]];
    for b in 0..B {
        for c in 0..C {
            for h in 0..S {
                for w in 0..S {
                    let (o, p) = (swapped(b, h, c, w), plain(b, c, h, w));
                    let (xv, yv, gv) = (f64::from(x[p]), f64::from(y[p]), f64::from(g[o]));
                    want[0][o] = (xv * yv, (xv * yv).abs());
                    want[1][p] = (yv * gv, (yv * gv).abs());
                    want[2][p] = (xv * gv, (xv * gv).abs());
                }
            }
        }
    }
    check_both(
        "permuted product",
        run,
        want,
        ["output", "x gradient", "y gradient"],
    );
}

/// Per-channel means (batch norm's statistics) and a full sum, forward and
/// backward.
#[test]
fn reductions_forward_and_backward() {
    let x = random(N, 60);
    let g = random(C, 61);
    let run = || {
        let dev = Cpu::default();
        let xt = map(&dev, &x);
        let means: Tensor<Rank1<C>, f32, _, _> = xt.leaky_trace().mean::<_, Axes3<0, 2, 3>>();
        let values = means.as_vec();
        let total = xt.leaky_trace().sum::<Rank0, _>();
        let total_value = total.as_vec();
        let grads = (means * chan(&dev, &g)).sum().backward();
        let total_grads = (total * 3.0).backward();
        [
            values,
            grads.get(&xt).as_vec(),
            total_value,
            total_grads.get(&xt).as_vec(),
        ]
    };
    let per_chan = (N / C) as f64;
    let mut sums = vec![(0.0, 0.0); C];
    let mut total = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let v = f64::from(v);
        sums[channel_of(i)].0 += v / per_chan;
        sums[channel_of(i)].1 += v.abs() / per_chan;
        total.0 += v;
        total.1 += v.abs();
    }
    let spread = exact((0..N).map(|i| f64::from(g[channel_of(i)]) / per_chan));
    check_both(
        "reductions",
        run,
        [sums, spread, vec![total], exact(std::iter::repeat_n(3.0, N))],
        ["channel means", "their gradient", "sum", "its gradient"],
    );
}

// ---- batch norm's training forward and backward (patches/dfdx/0007) --------

/// BatchNorm2D in training mode on a map, with random scale and bias: output,
/// gradients of the map, scale and bias, and the updated running statistics.
#[test]
fn batch_norm_training_forward_and_backward() {
    let x = random(N, 70);
    let g = random(N, 71);
    let scale = random(C, 72);
    let bias = random(C, 73);
    let run = || {
        let dev = Cpu::default();
        let mut bn = dev.build_module::<BatchNorm2D<C>, f32>();
        bn.scale = chan(&dev, &scale);
        bn.bias = chan(&dev, &bias);
        let xt = map(&dev, &x);
        let out = bn.forward_mut(xt.leaky_trace());
        let values = out.as_vec();
        let grads = (out * map(&dev, &g)).sum().backward();
        [
            values,
            grads.get(&xt).as_vec(),
            grads.get(&bn.scale).as_vec(),
            grads.get(&bn.bias).as_vec(),
            bn.running_mean.as_vec(),
            bn.running_var.as_vec(),
        ]
    };
    let f = |v: f32| f64::from(v);
    let n = (N / C) as f64;
    let (mut mean, mut var) = (vec![0.0; C], vec![0.0; C]);
    for i in 0..N {
        mean[channel_of(i)] += f(x[i]) / n;
    }
    for i in 0..N {
        var[channel_of(i)] += (f(x[i]) - mean[channel_of(i)]).powi(2) / n;
    }
    let std: Vec<f64> = var.iter().map(|v| (v + 1e-5).sqrt()).collect();
    let xhat = |i: usize| (f(x[i]) - mean[channel_of(i)]) / std[channel_of(i)];
    let (mut sum_g, mut sum_gx) = (vec![(0.0, 0.0); C], vec![(0.0, 0.0); C]);
    for (i, &gi) in g.iter().enumerate() {
        let c = channel_of(i);
        sum_g[c].0 += f(gi);
        sum_g[c].1 += f(gi).abs();
        sum_gx[c].0 += f(gi) * xhat(i);
        sum_gx[c].1 += (f(gi) * xhat(i)).abs();
    }
    let mut want_out = Vec::with_capacity(N);
    let mut want_x = Vec::with_capacity(N);
    for (i, &gi) in g.iter().enumerate() {
        let c = channel_of(i);
        let (s, b) = (f(scale[c]), f(bias[c]));
        want_out.push((s * xhat(i) + b, (s * xhat(i)).abs() + b.abs()));
        let k = s / std[c];
        let terms = [f(gi), -sum_g[c].0 / n, -xhat(i) * sum_gx[c].0 / n];
        want_x.push((
            k * terms.iter().sum::<f64>(),
            k.abs() * terms.iter().map(|t| t.abs()).sum::<f64>(),
        ));
    }
    // Running statistics start at 0 and 1, momentum 0.1, unbiased variance.
    let running_mean = exact(mean.iter().map(|m| 0.1 * m));
    let running_var = exact(var.iter().map(|v| 0.9 + 0.1 * v * n / (n - 1.0)));
    check_both(
        "batch norm",
        run,
        [want_out, want_x, sum_gx, sum_g, running_mean, running_var],
        [
            "output",
            "x gradient",
            "scale gradient",
            "bias gradient",
            "running mean",
            "running var",
        ],
    );
}

/// Convolutions as fkp trains them with the allocation cache on, several steps
/// (so scratch buffers come back from the cache, taken by parallel batch lanes),
/// give bit for bit what they give with the cache off (fresh, zeroed buffers:
/// the `fkp` binary's CPU path, see `host_memory`).
#[test]
fn conv2d_with_and_without_the_allocation_cache_over_several_steps() {
    let c = Conv {
        batch: 24,
        chan_in: 3,
        side: 20,
        chan_out: 8,
        kernel: 3,
        stride: 1,
        padding: 1,
        dilation: 1,
    };
    let so = c.side_out();
    let x = random(c.batch * c.chan_in * c.side * c.side, 80);
    let w = random(c.chan_out * c.chan_in * c.kernel * c.kernel, 81);
    let g = random(c.batch * c.chan_out * so * so, 82);
    let want = reference_conv(c, &x, &w, &g);
    let steps = |cache: bool| {
        let dev = Cpu::default();
        if cache {
            dev.enable_cache();
        }
        let mut last = Vec::new();
        for _ in 0..4 {
            let xt = dev.tensor_from_vec(x.clone(), (c.batch, c.chan_in, c.side, c.side));
            let wt = dev.tensor_from_vec(w.clone(), (c.chan_out, c.chan_in, c.kernel, c.kernel));
            let gt = dev.tensor_from_vec(g.clone(), (c.batch, c.chan_out, so, so));
            let out = (xt.leaky_trace(), wt.clone()).conv2d(c.stride, c.padding, c.dilation, 1usize);
            let values = out.as_vec();
            let grads = (out * gt).sum().backward();
            let step = vec![values, grads.get(&xt).as_vec(), grads.get(&wt).as_vec()];
            assert!(
                last.is_empty() || last == step,
                "a step differs from the one before"
            );
            last = step;
        }
        last
    };
    for threads in [1, 2] {
        let got = on_threads(threads, || steps(true));
        for (k, name) in ["output", "input gradient", "filter gradient"].iter().enumerate() {
            assert_close(&format!("cached {name}, {threads} thread(s)"), &got[k], &want[k]);
        }
        assert!(
            got == on_threads(threads, || steps(false)),
            "the cache changed a result ({threads} thread(s))"
        );
    }
}

/// A 3-d map (one image, outer = 1) and a permuted 4-d map (not contiguous,
/// so the composed ops run): both match the contiguous batch of one.
#[test]
fn batch_norm_on_one_image_and_on_a_strided_batch() {
    type Image = Rank3<C, S, S>;
    type Batch = Rank4<1, C, S, S>;
    type Swapped = Rank4<1, S, C, S>;
    let x = random(C * S * S, 90);
    let dev = Cpu::default();
    let fresh = || dev.build_module::<BatchNorm2D<C>, f32>();

    let mut bn = fresh();
    let image = dev.tensor_from_vec(x.clone(), Image::default());
    let out = bn.forward_mut(image.leaky_trace());
    let image_out = out.as_vec();
    let image_grad = out.square().sum().backward().get(&image).as_vec();
    let image_var = bn.running_var.as_vec();

    let mut bn = fresh();
    let batch = dev.tensor_from_vec(x.clone(), Batch::default());
    let out = bn.forward_mut(batch.leaky_trace());
    let batch_out = out.as_vec();
    let batch_grad = out.square().sum().backward().get(&batch).as_vec();
    let batch_var = bn.running_var.as_vec();

    // The same values stored as (1, S, C, S) and viewed as (1, C, S, S).
    let mut bn = fresh();
    let stored = batch.clone().permute::<Swapped, Axes4<0, 2, 1, 3>>().as_vec();
    let stored = dev.tensor_from_vec(stored, Swapped::default());
    let view = stored.leaky_trace().permute::<Batch, Axes4<0, 2, 1, 3>>();
    let strided_out = bn.forward_mut(view).as_vec();
    let strided_var = bn.running_var.as_vec();

    assert_eq!(image_out, batch_out, "3-d and 4-d outputs");
    assert_eq!(image_grad, batch_grad, "3-d and 4-d gradients");
    assert_eq!(image_var, batch_var, "3-d and 4-d running variance");
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(p, q)| (p - q).abs() <= 1e-4 * (1.0 + q.abs()))
    };
    assert!(
        close(&strided_out, &batch_out),
        "composed (strided) and fused outputs"
    );
    assert!(
        close(&strided_var, &batch_var),
        "composed (strided) and fused running variance"
    );
}

/// An allocation the machine cannot give is an error, not an abort
/// (patches/dfdx/0005: dfdx's fast-alloc path used `vec!`).
#[test]
fn an_impossible_allocation_is_an_error() {
    let dev = Cpu::default();
    let huge: Result<Tensor<(usize,), f32, _>, _> = dev.try_zeros_like(&(1usize << 60,));
    assert!(huge.is_err(), "allocating 4 EiB succeeded");
}

/// Large buffers are zeroed, or refilled from the cache, over the threads
/// (patches/dfdx/0005): every element, in fresh memory, in memory just freed
/// (holding the last buffer's values) and in cached buffers; the size leaves a
/// ragged last task.
#[test]
fn large_zeroed_and_filled_buffers_are_whole() {
    let n = (1 << 20) + 12345;
    for cache in [false, true] {
        for threads in [1, 2] {
            on_threads(threads, || {
                let dev = Cpu::default();
                if cache {
                    dev.enable_cache();
                }
                for _ in 0..3 {
                    drop(dev.tensor_from_vec(vec![7.5f32; n], (n,)));
                    let zeros: Tensor<(usize,), f32, _> = dev.zeros_like(&(n,));
                    assert!(
                        zeros.as_vec().iter().all(|&v| v == 0.0),
                        "a zeroed buffer holds a non-zero (cache {cache}, {threads} thread(s))"
                    );
                    drop(zeros);
                    let ones: Tensor<(usize,), f32, _> = dev.ones_like(&(n,));
                    assert!(
                        ones.as_vec().iter().all(|&v| v == 1.0),
                        "a filled buffer holds another value (cache {cache}, {threads} thread(s))"
                    );
                }
            });
        }
    }
}

// ---- gradients of intermediate tensors freed during backward (0009) --------

/// A network's parameter gradients are the same, bit for bit, whether the tape
/// frees each intermediate gradient as soon as the op that made it has run (a
/// network's gradients, which know their leaves) or keeps every one (leaky).
/// The residual block reads its input twice, so a gradient freed too early
/// would lose a term or fail to be found.
#[test]
fn freeing_intermediate_gradients_changes_no_parameter_gradient() {
    type Net = (Linear<6, 8>, ReLU, Residual<(Linear<8, 8>, Tanh)>, Linear<8, 3>);
    let dev = Cpu::seed_from_u64(11);
    let net = dev.build_module::<Net, f32>();
    let x = dev.tensor_from_vec(random(4 * 6, 50), Rank2::<4, 6>::default());
    let run = |grads: Gradients<f32, Cpu>| {
        let out = net.forward(x.clone().trace(grads));
        out.square().sum().backward()
    };
    let freed = run(net.alloc_grads());
    let kept = run(Gradients::leaky());
    let params = [
        (
            freed.get(&net.0.weight).as_vec(),
            kept.get(&net.0.weight).as_vec(),
        ),
        (
            freed.get(&net.2.0.0.weight).as_vec(),
            kept.get(&net.2.0.0.weight).as_vec(),
        ),
        (
            freed.get(&net.2.0.0.bias).as_vec(),
            kept.get(&net.2.0.0.bias).as_vec(),
        ),
        (
            freed.get(&net.3.weight).as_vec(),
            kept.get(&net.3.weight).as_vec(),
        ),
    ];
    for (i, (a, b)) in params.iter().enumerate() {
        assert!(a.iter().any(|v| *v != 0.0), "parameter {i}: no gradient");
        assert!(
            a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "parameter {i} differs"
        );
    }
}
