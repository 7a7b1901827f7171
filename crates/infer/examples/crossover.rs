//! Measurement: GEMV kernels vs the `gemm` crate on the engine's product shapes for growing row
//! counts, passes interleaved (best of 7) so that both see the same machine load.
//! `RAYON_NUM_THREADS=2 cargo run --release -p moe-infer --example crossover`

use moe_kernels::gemv::{gemv_ref, Kernel};
use moe_kernels::quant::{WeightDtype, Weights};
use moe_kernels::rng::Rng;
use moe_kernels::{matmul, MatmulShape, Par};
use std::time::Instant;

fn main() {
    let mut g = Rng::new(1);
    for &(n, k) in &[(2048usize, 512usize), (512, 1024), (32000, 512)] {
        let w0: Vec<f32> = (0..n * k).map(|_| g.normal() as f32 * 0.05).collect();
        let w = Weights::from_f32(&w0, n, k, WeightDtype::F32);
        for &m in &[8usize, 16, 32, 64, 128, 256] {
            let x: Vec<f32> = (0..m * k).map(|_| g.normal() as f32).collect();
            let mut y = vec![0.0f32; m * n];
            let (mut tg, mut tm) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..7 {
                let t = Instant::now();
                gemv_ref(&mut y, &x, w.view(), m, Par::Pool, Kernel::Auto);
                tg = tg.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                matmul(&mut y, &x, &w0, MatmulShape::nt(m, k, n), 0.0, Par::Pool);
                tm = tm.min(t.elapsed().as_secs_f64());
            }
            let fl = 2.0 * (m * n * k) as f64;
            println!("n {n:>5} k {k:>4} m {m:>3}: gemv {:>6.1} GFLOP/s  gemm {:>6.1} GFLOP/s", fl / tg / 1e9, fl / tm / 1e9);
        }
    }
}
