//! Attention of the new rows against each sequence's KV cache: one task per (sequence, KV head).
//! Decode rows (fewer than [`GEMM_MIN_ROWS`] new tokens) use plain dot products over the cached
//! keys (no GEMM set-up for a single query row); prefill chunks use two small GEMMs per query
//! head. Scores live in per-thread buffers and outputs are written in place. Same maths as
//! `decode::cached_attention` (the slow twin, compared in `tests/engine.rs`).
//!
//! The inference-only masks of imported models (`attn_ext`, slow twin
//! `moe_model::layers::attention_ext::attend_seq`) ride along in [`AttnDims`]: a sliding window or
//! an attention chunk only moves the first visible key `lo(pos)` (the dot path starts there, the
//! GEMM path multiplies from the first row's `lo` and masks per row), a learned sink logit joins
//! each softmax's normalisation, and the logit scale is a field. The plain model pays one compare
//! per row.

use super::linear::SharedOut;
use crate::kv_cache::KvCache;
use moe_kernels::gemv::portable::dot;
use moe_kernels::{matmul, MatmulShape, Par};
use rayon::prelude::*;
use std::cell::RefCell;

/// (query head × visible key) pairs up to which one call runs on the calling thread.
const SEQ_MAX_PAIRS: usize = 2048;

/// New tokens of one sequence from which its attention uses GEMMs.
pub const GEMM_MIN_ROWS: usize = 16;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// (gathered queries of one head, their outputs) for the GEMM path
    static HEAD: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Softmax of `row[a..b]` scaled by `scale` (a `sink` logit joins the normalisation), zeros
/// outside (window / causal mask).
pub(crate) fn masked_softmax(row: &mut [f32], a: usize, b: usize, scale: f32, sink: Option<f32>) {
    row[a..b].iter_mut().for_each(|x| *x *= scale);
    moe_kernels::act::softmax_with_sink(&mut row[a..b], sink);
    row[..a].fill(0.0);
    row[b..].fill(0.0);
}

/// One query row against `vis = scores.len()` cached keys/values `[vis, d_head]`:
/// `o = softmax(scale · K·q) · V` (**overwrites** `o`), a `sink` logit in the softmax's
/// denominator only. Compiled twice, for AVX-512 (chosen at
/// run time) and for the baseline target, from the same plain loops.
pub(crate) fn attend_one(o: &mut [f32], q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], scale: f32, sink: Option<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for (checked just above).
            return unsafe { attend_one_avx512(o, q, k, v, scores, scale, sink) };
        }
    }
    attend_one_body(o, q, k, v, scores, scale, sink)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn attend_one_avx512(o: &mut [f32], q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], scale: f32, sink: Option<f32>) {
    attend_one_body(o, q, k, v, scores, scale, sink)
}

#[inline(always)]
fn attend_one_body(o: &mut [f32], q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], scale: f32, sink: Option<f32>) {
    let dh = q.len();
    for (p, sp) in scores.iter_mut().enumerate() {
        *sp = dot(q, &k[p * dh..(p + 1) * dh]) * scale;
    }
    moe_kernels::act::softmax_with_sink(scores, sink);
    o.fill(0.0);
    for (p, &w) in scores.iter().enumerate() {
        for (a, &x) in o.iter_mut().zip(&v[p * dh..(p + 1) * dh]) {
            *a += w * x;
        }
    }
}

/// Shapes and masks of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    /// query heads
    pub n_head: usize,
    /// key/value heads
    pub n_head_kv: usize,
    /// width of one head
    pub d_head: usize,
    /// logit scale (`1/√d_head` unless the model says otherwise)
    pub scale: f32,
    /// keys with `pos_q − pos_k < window` are visible (`None` = every earlier key)
    pub window: Option<usize>,
    /// only keys in the query's chunk of this many positions are visible
    pub chunk: Option<usize>,
}

impl AttnDims {
    /// Plain causal attention, scale `1/√d_head`.
    pub fn plain(n_head: usize, n_head_kv: usize, d_head: usize) -> Self {
        AttnDims { n_head, n_head_kv, d_head, scale: 1.0 / (d_head as f32).sqrt(), window: None, chunk: None }
    }

    /// First key visible to the query at `pos` (its window or chunk start; 0 for plain attention).
    #[inline]
    pub fn lo(&self, pos: usize) -> usize {
        match (self.window, self.chunk) {
            (None, None) => 0,
            (w, c) => w.map_or(0, |w| (pos + 1).saturating_sub(w)).max(c.map_or(0, |c| pos / c * c)),
        }
    }

    /// Keys visible to `nn` new queries at positions `len0..len0 + nn`, summed (exact; for FLOPs).
    pub fn visible_keys(&self, len0: usize, nn: usize) -> usize {
        if self.window.is_none() && self.chunk.is_none() {
            return nn * len0 + nn * (nn + 1) / 2;
        }
        (len0..len0 + nn).map(|p| p + 1 - self.lo(p)).sum()
    }
}

/// `o [n, n_head·d_head]` (**overwritten**) from the rotated queries `q [n, n_head·d_head]`;
/// sequence `s` owns rows `offs[s]..offs[s + 1]` at positions `len0[s]..`, and its cache already
/// holds this step's keys/values. Causal inside the new chunk, masked by `dims`' window or chunk;
/// `sinks [n_head]` (empty = none) join the softmax. `tasks` is a reusable buffer.
#[allow(clippy::too_many_arguments)]
pub fn cached_attention(
    o: &mut [f32],
    caches: &[&KvCache<f32>],
    layer: usize,
    q: &[f32],
    offs: &[usize],
    len0: &[usize],
    dims: AttnDims,
    sinks: &[f32],
    tasks: &mut Vec<(usize, usize)>,
) {
    let AttnDims { n_head, n_head_kv, d_head: dh, scale, .. } = dims;
    let dq = n_head * dh;
    let group = n_head / n_head_kv;
    tasks.clear();
    tasks.extend((0..caches.len()).flat_map(|s| (0..n_head_kv).map(move |g| (s, g))));
    let out = SharedOut::new(o);
    // (query head, visible key) pairs: below SEQ_MAX_PAIRS (a batch-1 decode step) the work is
    // smaller than a rayon round trip, so it stays on this thread
    let pairs: usize = (0..caches.len()).map(|s| dims.visible_keys(len0[s], offs[s + 1] - offs[s])).sum::<usize>() * n_head;
    let task = |&(s, g): &(usize, usize)| {
        let (r0, nn) = (offs[s], offs[s + 1] - offs[s]);
        let l = len0[s] + nn;
        let kg = caches[s].keys_upto(layer, g, l); // [l, d_head]
        let vg = caches[s].values_upto(layer, g, l); // [l, d_head]
        if nn >= GEMM_MIN_ROWS {
            // keys k0..l are visible to some row (k0 = the first row's window or chunk start)
            let k0 = dims.lo(len0[s]);
            let lk = l - k0;
            SCORES.with(|sc| {
                HEAD.with(|hb| {
                    let mut sc = sc.borrow_mut();
                    let mut hb = hb.borrow_mut();
                    let (qh, oh) = &mut *hb;
                    sc.resize(nn * lk, 0.0);
                    qh.resize(nn * dh, 0.0);
                    oh.resize(nn * dh, 0.0);
                    for j in 0..group {
                        let hq = g * group + j;
                        for t in 0..nn {
                            let base = (r0 + t) * dq + hq * dh;
                            qh[t * dh..(t + 1) * dh].copy_from_slice(&q[base..base + dh]);
                        }
                        matmul(&mut sc[..], qh, &kg[k0 * dh..], MatmulShape::nt(nn, dh, lk), 0.0, Par::Seq); // [nn, lk]
                        for t in 0..nn {
                            let pos = len0[s] + t;
                            masked_softmax(&mut sc[t * lk..(t + 1) * lk], dims.lo(pos) - k0, pos + 1 - k0, scale, sinks.get(hq).copied());
                        }
                        matmul(oh, &sc[..], &vg[k0 * dh..], MatmulShape::nn(nn, lk, dh), 0.0, Par::Seq); // [nn, d_head]
                        for t in 0..nn {
                            // SAFETY: row r0 + t, head hq belongs to this (sequence, KV head) task alone.
                            unsafe { out.slice((r0 + t) * dq + hq * dh, dh) }.copy_from_slice(&oh[t * dh..(t + 1) * dh]);
                        }
                    }
                })
            });
            return;
        }
        SCORES.with(|sc| {
            let mut sc = sc.borrow_mut();
            if sc.len() < l {
                sc.resize(l, 0.0);
            }
            for t in 0..nn {
                let pos = len0[s] + t;
                let lo = dims.lo(pos); // visible: keys lo..=pos
                let scores = &mut sc[..pos + 1 - lo]; // [vis]
                let (kv, vv) = (&kg[lo * dh..(pos + 1) * dh], &vg[lo * dh..(pos + 1) * dh]);
                for j in 0..group {
                    let hq = g * group + j;
                    let base = (r0 + t) * dq + hq * dh;
                    let qh = &q[base..base + dh]; // [d_head]
                                                  // SAFETY: row r0 + t, head hq belongs to this (sequence, KV head) task alone.
                    let oh = unsafe { out.slice(base, dh) }; // [d_head]
                    attend_one(oh, qh, kv, vv, scores, scale, sinks.get(hq).copied());
                }
            }
        });
    };
    if pairs <= SEQ_MAX_PAIRS {
        tasks.iter().for_each(task);
    } else {
        tasks.par_iter().for_each(task);
    }
}
