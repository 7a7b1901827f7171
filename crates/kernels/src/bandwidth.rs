//! Measure this machine's streaming read bandwidth: the ceiling of a memory-bound decode step,
//! which reads every weight once (see [`crate::gemv`]).
//!
//! (The expected number of distinct experts a batch touches, `n·(1 − (1 − k/n)^B)`, lives in
//! `moe-infer`'s `bench::expected_distinct`.)

use std::hint::black_box;
use std::time::Instant;

/// Default buffer size of [`read_bandwidth_gbs`]: 1.25 GiB, far past any last-level cache.
pub const DEFAULT_BYTES: usize = (1 << 30) + (1 << 28);

/// Wrapping sum of `v` in 8 independent lanes (vectorises to full-width integer adds).
fn sum_u64(v: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let c = v.chunks_exact(8);
    let rem = c.remainder();
    for ch in c {
        for l in 0..8 {
            acc[l] = acc[l].wrapping_add(ch[l]);
        }
    }
    rem.iter().fold(acc.iter().fold(0u64, |a, &b| a.wrapping_add(b)), |a, &b| a.wrapping_add(b))
}

/// Wrapping sum of `v` on the current rayon pool (1 MiB chunks): a pure streaming read, the
/// ceiling a GEMV over `v.len()·8` bytes of weights can reach with the same threads.
pub fn parallel_sum_u64(v: &[u64]) -> u64 {
    use rayon::prelude::*;
    v.par_chunks(1 << 17).map(sum_u64).reduce(|| 0, u64::wrapping_add)
}

/// Best-of-3 GB/s (10⁹ bytes per second) of summing a `bytes`-byte buffer with `threads` threads,
/// each streaming its own contiguous share. The buffer is written once first (so its pages are
/// real, not the shared zero page) and freed on return.
///
/// `bytes` should be several times the last-level cache ([`DEFAULT_BYTES`]); it is rounded down
/// to whole 64-byte lines per thread. `threads = 0` means all available cores.
pub fn read_bandwidth_gbs(bytes: usize, threads: usize) -> f64 {
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    let words_per_thread = (bytes / 8 / threads) / 8 * 8;
    assert!(words_per_thread > 0, "read_bandwidth_gbs: {bytes} bytes is too small for {threads} threads");
    let buf: Vec<u64> = (0..words_per_thread * threads).map(|i| i as u64).collect();
    let parts: Vec<&[u64]> = buf.chunks(words_per_thread).collect();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = parts.iter().map(|&p| s.spawn(move || sum_u64(black_box(p)))).collect();
            handles.into_iter().fold(0u64, |a, h| a.wrapping_add(h.join().expect("bandwidth thread panicked")))
        });
        best = best.min(t.elapsed().as_secs_f64());
        black_box(total);
    }
    (8 * words_per_thread * threads) as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_is_exact_and_bandwidth_positive() {
        let v: Vec<u64> = (0..1003).collect();
        assert_eq!(sum_u64(&v), 1002 * 1003 / 2);
        let big: Vec<u64> = (0..300_001).collect();
        assert_eq!(parallel_sum_u64(&big), 300_000 * 300_001 / 2);
        let gbs = read_bandwidth_gbs(1 << 20, 2);
        assert!(gbs.is_finite() && gbs > 0.0);
    }
}
