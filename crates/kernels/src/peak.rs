//! Measure this machine's f32 GEMM throughput, the baseline that benchmarks report ratios against.

use crate::matmul::{matmul, MatmulShape, Par};
use std::time::Instant;

/// Best-of-`reps` GFLOP/s of an `n × n × n` f32 matmul on the current rayon pool.
pub fn gemm_peak_gflops(n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 5) as f32 - 2.0) * 0.01).collect();
    let mut c = vec![0.0f32; n * n];
    matmul(&mut c, &a, &b, MatmulShape::nn(n, n, n), 0.0, Par::Pool); // warm up
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        matmul(&mut c, &a, &b, MatmulShape::nn(n, n, n), 0.0, Par::Pool);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}
