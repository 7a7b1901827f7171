//! GEMV roofline (a measurement, `#[ignore]`d in normal test runs): for m ∈ {1, 2, 4, 8}, each
//! weight format and kernel, on 4096×1024 and 32000×512 weight matrices, the GB/s of weight bytes
//! read, GFLOP/s, the fraction of the streaming read bandwidth (a plain parallel sum over the same
//! number of bytes, timed in the same interleaved passes), and the
//! speed-up over `matmul` (the gemm crate, f32 weights) measured in the same run.
//!
//! The passes of all candidates of one shape and m are interleaved (best of 5 each, after one
//! warm-up pass), so every ratio compares runs from the same time window on a shared machine.
//! Each shape is replicated into enough copies (≥ 256 MiB) that the calls rotate through memory
//! and the weights come from DRAM, as in a real decode step, not from the last-level cache.
//!
//! `CARGO_BUILD_JOBS=1 cargo test --release -p moe-kernels --test gemv_roofline -- --ignored --nocapture`

use moe_kernels::bandwidth::{parallel_sum_u64, read_bandwidth_gbs, DEFAULT_BYTES};
use moe_kernels::gemv::{gemv_with, naive, Kernel};
use moe_kernels::quant::{WeightDtype, Weights};
use moe_kernels::rng::Rng;
use moe_kernels::{matmul, MatmulShape, Par};
use std::hint::black_box;
use std::time::Instant;

const MS: [usize; 4] = [1, 2, 4, 8];
const PASSES: usize = 5;

/// Seconds per call of one pass: one call per copy.
fn time_pass(copies: usize, mut call: impl FnMut(usize)) -> f64 {
    let t = Instant::now();
    for c in 0..copies {
        call(c);
    }
    t.elapsed().as_secs_f64() / copies as f64
}

type Row = (usize, usize, usize, &'static str, &'static str, f64, f64, f64, f64);

#[test]
#[ignore = "measurement: run with --release -- --ignored --nocapture"]
fn gemv_roofline() {
    let threads = rayon::current_num_threads();
    let mut bws = vec![read_bandwidth_gbs(DEFAULT_BYTES, threads)];
    println!("kernels available: {:?}", Kernel::available_kernels());
    let mut g = Rng::new(1);
    let mut rows: Vec<Row> = Vec::new();
    let mut accuracy = Vec::new();
    for &(n, k) in &[(4096usize, 1024usize), (32000, 512)] {
        let w0: Vec<f32> = (0..n * k).map(|_| g.normal() as f32 * 0.05).collect();
        let copies = ((256usize << 20) / (4 * n * k)).max(2);
        let xs: Vec<f32> = (0..8 * k).map(|_| g.normal() as f32).collect();
        let mut y = vec![0.0f32; 8 * n];
        let wf: Vec<Vec<f32>> = (0..copies).map(|_| w0.clone()).collect();
        // same bytes as one f32 copy, summed with the same rayon pool: the read ceiling measured
        // in the same time window as the kernels
        let words: Vec<Vec<u64>> = (0..copies).map(|c| (0..n * k / 2).map(|i| (i + c) as u64).collect()).collect();
        // (dtype, kernel, copies): every candidate of this shape, all resident at once so that the
        // passes below can interleave.
        let mut cands: Vec<(WeightDtype, Kernel, Vec<Weights>)> = Vec::new();
        for dtype in WeightDtype::ALL {
            let wq = Weights::from_f32(&w0, n, k, dtype);
            let mut kernels = vec![Kernel::Portable];
            if Kernel::Avx2.available() {
                kernels.push(Kernel::Avx2);
            }
            if matches!(dtype, WeightDtype::I8 | WeightDtype::Q4) && Kernel::Avx2Q8.available() {
                kernels.push(Kernel::Avx2Q8);
            }
            if Kernel::Avx512.available() && dtype != WeightDtype::Q4 {
                kernels.push(Kernel::Avx512);
            }
            if dtype == WeightDtype::Bf16 && Kernel::Avx512Bf16Dot.available() {
                kernels.push(Kernel::Avx512Bf16Dot);
            }
            if dtype == WeightDtype::I8 && Kernel::Avx512Vnni.available() {
                kernels.push(Kernel::Avx512Vnni);
            }
            for &kernel in &kernels {
                // accuracy against the f64 product with the original f32 weights (m = 4)
                let m = 4;
                let mut want = vec![0.0f32; m * n];
                naive::gemv(&mut want, &xs[..m * k], &Weights::from_f32(&w0, n, k, WeightDtype::F32), m);
                gemv_with(&mut y[..m * n], &xs[..m * k], &wq, m, Par::Pool, kernel);
                let rms = |v: &mut dyn Iterator<Item = f64>| (v.map(|e| e * e).sum::<f64>() / (m * n) as f64).sqrt();
                let err = rms(&mut y[..m * n].iter().zip(&want).map(|(&a, &b)| a as f64 - b as f64));
                let scale = rms(&mut want.iter().map(|&b| b as f64));
                accuracy.push(format!("| {n}×{k} | {} | {} | {:.2e} |", dtype.name(), kernel.name(), err / scale));
            }
            let ws: Vec<Weights> = (0..copies).map(|_| wq.clone()).collect();
            for kernel in kernels {
                cands.push((dtype, kernel, ws.clone()));
            }
        }
        for &m in &MS {
            // best seconds per call: [matmul, cands...]; pass 0 is the warm-up
            let mut best = vec![f64::INFINITY; 1 + cands.len()];
            let mut ceil = f64::INFINITY; // seconds per copy of the pure read
            for pass in 0..=PASSES {
                let t = time_pass(copies, |c| {
                    black_box(parallel_sum_u64(black_box(&words[c])));
                });
                if pass > 0 {
                    ceil = ceil.min(t);
                }
                let t = time_pass(copies, |c| matmul(&mut y[..m * n], &xs[..m * k], &wf[c], MatmulShape::nt(m, k, n), 0.0, Par::Pool));
                if pass > 0 {
                    best[0] = best[0].min(t);
                }
                for (ci, (_, kernel, ws)) in cands.iter().enumerate() {
                    let t = time_pass(copies, |c| gemv_with(&mut y[..m * n], &xs[..m * k], &ws[c], m, Par::Pool, *kernel));
                    if pass > 0 {
                        best[1 + ci] = best[1 + ci].min(t);
                    }
                }
            }
            let flops = 2.0 * (m * n * k) as f64;
            let ceil_gbs = 4.0 * (n * k) as f64 / ceil / 1e9;
            rows.push((n, k, m, "-", "read-only sum (ceiling)", 4.0 * (n * k) as f64, ceil, 0.0, ceil_gbs));
            rows.push((n, k, m, "f32", "matmul (gemm)", 4.0 * (n * k) as f64, best[0], flops, 1.0));
            for (ci, (dtype, kernel, ws)) in cands.iter().enumerate() {
                rows.push((n, k, m, dtype.name(), kernel.name(), ws[0].bytes() as f64, best[1 + ci], flops, best[0] / best[1 + ci]));
            }
        }
        drop((wf, cands));
        bws.push(read_bandwidth_gbs(DEFAULT_BYTES, threads));
    }
    let bw = bws.iter().cloned().fold(0.0, f64::max);
    println!(
        "read bandwidth ({threads} threads, {:.2} GiB buffer, best of 3), at start / after each shape: {:?} GB/s; best {bw:.1} GB/s. Below, \"of read BW\" is relative to the read-only sum of the same bytes timed in the same passes\n",
        DEFAULT_BYTES as f64 / (1u64 << 30) as f64,
        bws.iter().map(|b| (b * 10.0).round() / 10.0).collect::<Vec<_>>()
    );
    println!("| shape n×k | m | dtype | kernel | µs/call | GB/s (weights) | GFLOP/s | of read BW | × vs matmul f32 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut ceil_gbs = bw;
    for (n, k, m, dt, kn, bytes, t, flops, ratio) in rows {
        if dt == "-" {
            ceil_gbs = ratio;
            println!("| {n}×{k} | {m} | – | {kn} | {:.0} | {ceil_gbs:.1} | – | 100% | – |", t * 1e6);
            continue;
        }
        println!(
            "| {n}×{k} | {m} | {dt} | {kn} | {:.0} | {:.1} | {:.1} | {:.0}% | {ratio:.2} |",
            t * 1e6,
            bytes / t / 1e9,
            flops / t / 1e9,
            100.0 * bytes / t / 1e9 / ceil_gbs
        );
    }
    println!("\nrms error of y vs the f64 product with the unquantised f32 weights (x, w ~ normal, m = 4):\n");
    println!("| shape n×k | dtype | kernel | rms err / rms y |\n|---|---|---|---|");
    for line in &accuracy {
        println!("{line}");
    }
}
