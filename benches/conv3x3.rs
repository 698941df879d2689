//! The stride-1 3x3 convolutions of ResNet-18 on 96x96 faces (the layers fkp's
//! patched dfdx runs as Winograd F(2x2, 3x3)), timed alone at batch 64:
//! forward, and forward plus backward (input and filter gradients), as a
//! training step runs them. Reports the median of the repeats in ms, and the
//! rate in GFLOP/s of the direct convolution's multiply-adds (so that a kernel
//! doing fewer multiplies shows above the machine's FMA peak).
//!
//!   cargo bench --bench conv3x3            # threads: RAYON_NUM_THREADS
//!   REPEATS=21 cargo bench --bench conv3x3
//!   CHANNELS=64 cargo bench --bench conv3x3   # one layer (to profile it)

use dfdx::prelude::*;
use std::time::{Duration, Instant};

/// ResNet-18's 3x3 stride-1 layers on 96x96 input: (channels, side).
const LAYERS: [(usize, usize); 3] = [(64, 24), (128, 12), (256, 6)];
const BATCH: usize = 64;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let repeats: usize = std::env::var("REPEATS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(11);
    let only: Option<usize> = std::env::var("CHANNELS").ok().and_then(|c| c.parse().ok());
    let dev = Cpu::default();
    println!(
        "batch {BATCH}, {} threads, median of {repeats}",
        rayon::current_num_threads()
    );
    println!("layer               forward ms  GFLOP/s   fwd+bwd ms  GFLOP/s");
    for (chan, side) in LAYERS {
        if only.is_some_and(|c| c != chan) {
            continue;
        }
        let x: Tensor<_, f32, _> = dev.sample_normal_like(&(BATCH, chan, side, side));
        let w: Tensor<_, f32, _> = dev.sample_normal_like(&(chan, chan, 3usize, 3usize));
        let time = |f: &dyn Fn()| {
            f(); // warm the allocation cache
            median(
                (0..repeats)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed()
                    })
                    .collect(),
            )
        };
        let forward = time(&|| {
            let y = (x.clone(), w.clone()).conv2d(1usize, 1usize, 1usize, 1usize);
            std::hint::black_box(y);
        });
        let step = time(&|| {
            let y = (x.leaky_trace(), w.clone()).conv2d(1usize, 1usize, 1usize, 1usize);
            std::hint::black_box(y.sum().backward());
        });
        // multiply-adds of the direct convolution, 2 FLOPs each; backward
        // does twice forward's (input and filter gradients)
        let flops = (2 * BATCH * chan * chan * 9 * side * side) as f64;
        let rate = |d: Duration, passes: f64| passes * flops / d.as_secs_f64() / 1e9;
        println!(
            "{chan:>3} ch {side:>2}x{side:<2}        {:>9.2} {:>8.0}   {:>10.2} {:>8.0}",
            forward.as_secs_f64() * 1e3,
            rate(forward, 1.0),
            step.as_secs_f64() * 1e3,
            rate(step, 3.0),
        );
    }
}
