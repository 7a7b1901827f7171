//! Measurement: the GEMV kernels against the wide path of the engine's `linear` (the `gemm` crate
//! on f32 weights, per-thread f32 tiles for bf16/int8/q4) on the engine's product shapes for growing
//! row counts, per weight format; passes interleaved (best of 7) so that both see the same load.
//! It sets [`moe_infer::engine::linear::gemm_min_rows`].
//! `RAYON_NUM_THREADS=2 cargo run --release -p moe-infer --example crossover [f32,bf16,int8,q4]`

use moe_infer::engine::linear::linear_wide;
use moe_kernels::gemv::{gemv_ref, Kernel};
use moe_kernels::quant::{WeightDtype, Weights};
use moe_kernels::rng::Rng;
use moe_kernels::Par;
use std::time::Instant;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "f32,bf16,int8,q4".into());
    let mut g = Rng::new(1);
    for dt in WeightDtype::ALL {
        if !which.split(',').any(|w| w == dt.name() || (w == "int8" && dt == WeightDtype::I8)) {
            continue;
        }
        println!("{}: gemv kernel {:?}", dt.name(), Kernel::Auto.resolved(dt));
        for &(n, k) in &[(2048usize, 512usize), (512, 1024), (32000, 512)] {
            let w0: Vec<f32> = (0..n * k).map(|_| g.normal() as f32 * 0.05).collect();
            let w = Weights::from_f32(&w0, n, k, dt);
            for &m in &[4usize, 8, 16, 32, 64, 128, 256] {
                let x: Vec<f32> = (0..m * k).map(|_| g.normal() as f32).collect();
                let mut y = vec![0.0f32; m * n];
                let (mut tg, mut tm) = (f64::INFINITY, f64::INFINITY);
                for _ in 0..7 {
                    let t = Instant::now();
                    gemv_ref(&mut y, &x, w.view(), m, Par::Pool, Kernel::Auto);
                    tg = tg.min(t.elapsed().as_secs_f64());
                    let t = Instant::now();
                    linear_wide(&mut y, &x, &w, m);
                    tm = tm.min(t.elapsed().as_secs_f64());
                }
                let fl = 2.0 * (m * n * k) as f64;
                println!(
                    "{:>4} n {n:>5} k {k:>4} m {m:>3}: gemv {:>6.1} GFLOP/s  wide {:>6.1} GFLOP/s  wide/gemv {:.2}",
                    dt.name(),
                    fl / tg / 1e9,
                    fl / tm / 1e9,
                    tg / tm
                );
            }
        }
    }
}
