//! Multi-head latent attention (DeepSeek-V2/V3, `attn_ext.mla`) in the engine, decoded in the
//! absorbed form over the compressed cache — the numbers of
//! `moe_model::layers::attention_ext::attend_latent` (the slow twin, compared in
//! `tests/engine_attn_ext.rs`), fast:
//!
//! * the products of `h` are one pass over `wq_a` (or `wq`) stacked on `wkv_a` ([`super::weights`]),
//!   then `wq_b` when there is a q latent, all through [`super::linear::linear`] in the engine's
//!   storage format; the cache keeps one row `[kv_lora_rank + d_rope]` per token (normed latent,
//!   rotated shared RoPE key);
//! * the key half of `wkv_b` is folded into the query: at build time each head's key half is
//!   stored **transposed** (`[kv_lora_rank, d_nope]`), so `q_lat = W_kᵀ·q_nope` is a GEMV, one
//!   task per head over the rows of every sequence (each head's matrix streamed once per step, not
//!   once per sequence); `[q_lat, q_rope]` then scores a whole cached row with one dot product (the
//!   latent part against `q_lat`, the RoPE part against `q_rope`);
//! * scores and the attention-weighted latent rows: one task per (sequence, head); decode rows
//!   (fewer than [`GEMM_MIN_ROWS`]) use the SIMD dot loop of [`super::attention`], prefill chunks
//!   one GEMM for the scores `[nn, l]` and one for the weighted rows;
//! * the weighted latent `o_lat [n, kv_lora_rank]` goes through each head's value half
//!   `[d_v, kv_lora_rank]` (a GEMV, one task per head) straight into the head's slice of the output.
//!
//! Windows, chunks and sinks mask exactly as in [`super::attention::cached_attention`].

use super::attention::{attend_one, masked_softmax, AttnDims, GEMM_MIN_ROWS};
use super::linear::{linear, SharedOut};
use super::weights::{LayerWeights, MlaWeights};
use super::{Scratch, StepStats};
use crate::kv_cache::KvCache;
use moe_kernels::gemv::{gemv_ref, Kernel};
use moe_kernels::{matmul, MatmulShape, Par};
use moe_model::config::Mla;
use moe_model::layers::attention_ext::{mla_finish_rows, mla_rotate_q, rmsnorm_rows, Rope};
use moe_model::params::MlaLayout;
use moe_model::Transformer;
use rayon::prelude::*;
use std::cell::RefCell;

/// Multiply-adds of one call up to which it runs on the calling thread.
const SEQ_MAX_MACS: usize = 1 << 16;

/// Per-thread buffers of one task.
#[derive(Default)]
struct HeadScratch {
    x: Vec<f32>,  // one head's GEMV input: [n, d_nope] or [n, kv_lora_rank]
    y: Vec<f32>,  // one head's GEMV output: [n, kv_lora_rank] or [n, d_v]
    sc: Vec<f32>, // [nn, visible keys]
    of: Vec<f32>, // [nn, kv_lora_rank + d_rope]
}

thread_local! {
    static HEAD: RefCell<HeadScratch> = RefCell::new(HeadScratch::default());
}

/// Run `task` over `items`, on the rayon pool unless `work` (multiply-adds) is small.
fn run<T: Sync>(items: &[T], work: usize, task: impl Fn(&T) + Sync + Send) {
    if work <= SEQ_MAX_MACS {
        items.iter().for_each(task);
    } else {
        items.par_iter().for_each(task);
    }
}

/// Latent attention of layer `layer` over `s.h [n_tok, d_model]`: projects, writes this step's
/// compressed rows into the caches and leaves the attention output in `s.o [n_tok, n_head·d_v]`
/// (the caller applies `wo`). Counts the products' bytes and FLOPs in `st`.
#[allow(clippy::too_many_arguments)]
pub(super) fn mla_layer(
    s: &mut Scratch,
    st: &mut StepStats,
    caches: &mut [&mut KvCache<f32>],
    model: &Transformer<f32>,
    layer: usize,
    lw: &LayerWeights,
    (ml, mw, m): (&MlaLayout, &MlaWeights, &Mla),
    rope: &Rope,
    dims: AttnDims,
    sinks: &[f32],
    kernel: Kernel,
) {
    let (cfg, p) = (&model.cfg, &model.params);
    let n = s.positions.len();
    let d = cfg.d_model;
    let (nh, dh) = (cfg.n_head, cfg.d_head());
    let (kvr, dr, dv) = (m.kv_lora_rank, m.d_rope, m.d_v);
    let (qw, wr) = (mw.q_width, kvr + dr);
    let wa = qw + wr;
    s.qkv.resize(n * wa, 0.0);
    linear(&mut s.qkv, &s.h, &lw.wqkv, n, kernel); // [n_tok, q_width + kv_lora_rank + d_rope]
    st.add_matmul(n, wa, d, lw.wqkv.bytes());
    s.qa.resize(n * qw, 0.0);
    s.lat.resize(n * wr, 0.0);
    for r in 0..n {
        let row = &s.qkv[r * wa..(r + 1) * wa];
        s.qa[r * qw..(r + 1) * qw].copy_from_slice(&row[..qw]); // [q_width]
        s.lat[r * wr..(r + 1) * wr].copy_from_slice(&row[qw..]); // [kv_lora_rank + d_rope]
    }
    s.q.resize(n * nh * dh, 0.0);
    match (&mw.wq_b, &ml.q_a_norm) {
        (Some(wq_b), Some(na)) => {
            rmsnorm_rows(&mut s.qa, &p[na.clone()], m.norm_eps);
            linear(&mut s.q, &s.qa, wq_b, n, kernel); // [n_tok, n_head·d_head]
            st.add_matmul(n, nh * dh, qw, wq_b.bytes());
        }
        _ => s.q.copy_from_slice(&s.qa), // [n_tok, n_head·d_head]
    }
    mla_rotate_q(rope, &mut s.q, dh, &s.positions);
    mla_finish_rows(p, ml, m, rope, &mut s.lat, &s.positions);
    for (si, c) in caches.iter_mut().enumerate() {
        let (r0, r1) = (s.offs[si], s.offs[si + 1]);
        c.write(layer, &s.lat[r0 * wr..r1 * wr], &[]);
    }
    s.o.resize(n * nh * dv, 0.0);
    let views: Vec<&KvCache<f32>> = caches.iter().map(|c| &**c).collect();
    let bufs = (&mut s.qf, &mut s.ol, &mut s.tasks);
    latent_attention(&mut s.o, &views, layer, &s.q, &s.offs, &s.len0, dims, (m, mw), sinks, kernel, bufs); // [n_tok, n_head·d_v]
                                                                                                           // per head: W_kᵀ·q_nope and W_v·o_lat on every row, scores and weighted rows over the visible keys
    let keys: usize = (0..views.len()).map(|si| dims.visible_keys(s.len0[si], s.offs[si + 1] - s.offs[si])).sum();
    st.add_matmul(n, nh * kvr, m.d_nope, mw.wk_t.iter().map(|w| w.bytes()).sum());
    st.add_matmul(n, nh * dv, kvr, mw.wv.iter().map(|w| w.bytes()).sum());
    st.flops += (2 * nh * keys * (wr + kvr)) as u64;
}

/// `o [n, n_head·d_v]` (**overwritten**) from the rotated queries `q [n, n_head·d_head]` against
/// the compressed rows each cache holds (this step's included); sequence `s` owns rows
/// `offs[s]..offs[s + 1]` at positions `len0[s]..`. Three parallel regions: per head the absorbed
/// queries of every row (`W_kᵀ·q_nope`, one GEMV streaming that head's key half once for all
/// sequences) into `qf [n, n_head, kv_lora_rank + d_rope]`; per (sequence, head) the scores and the
/// weighted latent rows into `ol [n, n_head, kv_lora_rank]`; per head the value half into `o`.
/// `qf`, `ol` and `tasks` are reusable buffers.
#[allow(clippy::too_many_arguments)]
pub fn latent_attention(
    o: &mut [f32],
    caches: &[&KvCache<f32>],
    layer: usize,
    q: &[f32],
    offs: &[usize],
    len0: &[usize],
    dims: AttnDims,
    (m, w): (&Mla, &MlaWeights),
    sinks: &[f32],
    kernel: Kernel,
    (qf, ol, tasks): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<(usize, usize)>),
) {
    let (nh, dh) = (dims.n_head, dims.d_head);
    let (kvr, dr, dn, dv) = (m.kv_lora_rank, m.d_rope, m.d_nope, m.d_v);
    let wr = kvr + dr;
    let n = q.len() / (nh * dh);
    qf.resize(n * nh * wr, 0.0);
    ol.resize(n * nh * kvr, 0.0);
    let heads: Vec<usize> = (0..nh).collect();
    let keys: usize = (0..caches.len()).map(|s| dims.visible_keys(len0[s], offs[s + 1] - offs[s])).sum();

    // ---- absorbed queries: qf[r, h] = [W_kᵀ·q_nope, q_rope]
    let qf_out = SharedOut::new(qf);
    run(&heads, n * nh * kvr * dn, |&hq| {
        HEAD.with(|hb| {
            let mut hb = hb.borrow_mut();
            let b = &mut *hb;
            b.x.resize(n * dn, 0.0);
            b.y.resize(n * kvr, 0.0);
            for r in 0..n {
                let base = r * nh * dh + hq * dh;
                b.x[r * dn..(r + 1) * dn].copy_from_slice(&q[base..base + dn]); // [d_nope]
            }
            gemv_ref(&mut b.y, &b.x, w.wk_t[hq].view(), n, Par::Seq, kernel); // [n, kv_lora_rank]
            for r in 0..n {
                let base = r * nh * dh + hq * dh;
                // SAFETY: row r, head hq of qf belongs to this head's task alone.
                let dst = unsafe { qf_out.slice((r * nh + hq) * wr, wr) }; // [kv_lora_rank + d_rope]
                dst[..kvr].copy_from_slice(&b.y[r * kvr..(r + 1) * kvr]);
                dst[kvr..].copy_from_slice(&q[base + dn..base + dh]);
            }
        })
    });

    // ---- scores and weighted latent rows per (sequence, head)
    let qf: &[f32] = qf;
    tasks.clear();
    tasks.extend((0..caches.len()).flat_map(|s| (0..nh).map(move |h| (s, h))));
    let ol_out = SharedOut::new(ol);
    run(tasks, nh * keys * (wr + kvr), |&(s, hq)| {
        let (r0, nn) = (offs[s], offs[s + 1] - offs[s]);
        let l = len0[s] + nn;
        let rows = caches[s].keys_upto(layer, 0, l); // [l, kv_lora_rank + d_rope]
        let sink = sinks.get(hq).copied();
        HEAD.with(|hb| {
            let mut hb = hb.borrow_mut();
            let b = &mut *hb;
            if nn >= GEMM_MIN_ROWS {
                let k0 = dims.lo(len0[s]);
                let lk = l - k0;
                b.x.resize(nn * wr, 0.0);
                for t in 0..nn {
                    b.x[t * wr..(t + 1) * wr].copy_from_slice(&qf[((r0 + t) * nh + hq) * wr..((r0 + t) * nh + hq + 1) * wr]);
                }
                b.sc.resize(nn * lk, 0.0);
                b.of.resize(nn * wr, 0.0);
                matmul(&mut b.sc, &b.x, &rows[k0 * wr..], MatmulShape::nt(nn, wr, lk), 0.0, Par::Seq); // [nn, lk]
                for t in 0..nn {
                    let pos = len0[s] + t;
                    masked_softmax(&mut b.sc[t * lk..(t + 1) * lk], dims.lo(pos) - k0, pos + 1 - k0, dims.scale, sink);
                }
                matmul(&mut b.of, &b.sc, &rows[k0 * wr..], MatmulShape::nn(nn, lk, wr), 0.0, Par::Seq); // [nn, kv_lora_rank + d_rope]
                for t in 0..nn {
                    // SAFETY: row r0 + t, head hq of ol belongs to this (sequence, head) task alone.
                    unsafe { ol_out.slice(((r0 + t) * nh + hq) * kvr, kvr) }.copy_from_slice(&b.of[t * wr..t * wr + kvr]);
                }
            } else {
                if b.sc.len() < l {
                    b.sc.resize(l, 0.0);
                }
                for t in 0..nn {
                    let (pos, r) = (len0[s] + t, r0 + t);
                    let lo = dims.lo(pos);
                    let vis = &rows[lo * wr..(pos + 1) * wr]; // [vis, kv_lora_rank + d_rope]
                                                              // SAFETY: row r, head hq of ol belongs to this (sequence, head) task alone.
                    let dst = unsafe { ol_out.slice((r * nh + hq) * kvr, kvr) }; // [kv_lora_rank]
                                                                                 // keys are whole rows, values their latent part (attend_one's output width)
                    attend_one(dst, &qf[(r * nh + hq) * wr..(r * nh + hq + 1) * wr], vis, vis, &mut b.sc[..pos + 1 - lo], dims.scale, sink);
                }
            }
        })
    });

    // ---- values: o[r, h] = W_v·o_lat
    let ol: &[f32] = ol;
    let out = SharedOut::new(o);
    run(&heads, n * nh * kvr * dv, |&hq| {
        HEAD.with(|hb| {
            let mut hb = hb.borrow_mut();
            let b = &mut *hb;
            b.x.resize(n * kvr, 0.0);
            b.y.resize(n * dv, 0.0);
            for r in 0..n {
                b.x[r * kvr..(r + 1) * kvr].copy_from_slice(&ol[(r * nh + hq) * kvr..(r * nh + hq + 1) * kvr]);
            }
            gemv_ref(&mut b.y, &b.x, w.wv[hq].view(), n, Par::Seq, kernel); // [n, d_v]
            for r in 0..n {
                // SAFETY: row r, head hq of o belongs to this head's task alone.
                unsafe { out.slice((r * nh + hq) * dv, dv) }.copy_from_slice(&b.y[r * dv..(r + 1) * dv]);
            }
        })
    });
}
