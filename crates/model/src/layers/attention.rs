//! Causal self-attention block: q/k/v projections, optional q/k RMSNorm, RoPE, grouped-query
//! attention, output projection.

use crate::params::AttnLayout;
use moe_kernels::attention::{attention_backward, attention_forward, AttnShape};
use moe_kernels::linear::{linear_backward, linear_forward};
use moe_kernels::norm::{rmsnorm_backward, rmsnorm_forward};
use moe_kernels::rope::RopeTable;
use moe_kernels::{Par, Real};

/// Activations kept for the backward.
#[derive(Debug, Default)]
pub struct AttnSaved<T> {
    q: Vec<T>,      // [n, n_head·d_head], after RoPE
    k: Vec<T>,      // [n, n_head_kv·d_head], after RoPE
    v: Vec<T>,      // [n, n_head_kv·d_head]
    probs: Vec<T>,  // [n_seq, n_head, seq_len, seq_len]
    o: Vec<T>,      // [n, n_head·d_head]
    q_pre: Vec<T>,  // [n, n_head·d_head], before the q norm (empty without q/k norm)
    k_pre: Vec<T>,  // [n, n_head_kv·d_head], before the k norm
    q_rstd: Vec<T>, // [rows of the q norm]
    k_rstd: Vec<T>, // [rows of the k norm]
}

/// RMSNorm of `x [n, width]` in place over rows of `weight.len()` (a head or the whole width);
/// returns (pre-norm copy, rstd).
fn norm_rows<T: Real>(x: &mut [T], weight: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let w = weight.len();
    let rows = x.len() / w;
    let pre = x.to_vec();
    let mut rstd = vec![T::ZERO; rows];
    rmsnorm_forward(x, &mut rstd, &pre, weight, rows, w, eps);
    (pre, rstd)
}

/// Apply the q/k RMSNorm of `lay` (if any) in place to projected `q [n, n_head·d_head]` and
/// `k [n, n_head_kv·d_head]`, before RoPE. For callers that run their own attention (KV-cached decode).
pub fn qk_norm_forward<T: Real>(p: &[T], lay: &AttnLayout, q: &mut [T], k: &mut [T], eps: f64) {
    if let (Some(qn), Some(kn)) = (&lay.q_norm, &lay.k_norm) {
        norm_rows(q, &p[qn.clone()], eps);
        norm_rows(k, &p[kn.clone()], eps);
    }
}

/// Add the q/k/v biases of `lay` (if any) to the projected `q`, `k`, `v` (rows of their widths),
/// before the q/k norm. For callers that run their own attention (KV-cached decode).
pub fn qkv_bias_forward<T: Real>(p: &[T], lay: &AttnLayout, q: &mut [T], k: &mut [T], v: &mut [T]) {
    if let Some(b) = &lay.bias {
        for (x, r) in [(q, &b[0]), (k, &b[1]), (v, &b[2])] {
            let bias = &p[r.clone()];
            for row in x.chunks_mut(bias.len()) {
                row.iter_mut().zip(bias).for_each(|(a, &c)| *a += c);
            }
        }
    }
}

/// Column sums of `d [rows, width]` accumulated into `g [width]` (a bias gradient).
fn bias_backward<T: Real>(g: &mut [T], d: &[T]) {
    for row in d.chunks(g.len()) {
        g.iter_mut().zip(row).for_each(|(a, &c)| *a += c);
    }
}

/// Forward over `h [n_seq·seq_len, d_model]`; returns the projected output `[n, d_model]`.
pub fn attention_block_forward<T: Real>(
    p: &[T],
    lay: &AttnLayout,
    rope: &RopeTable<T>,
    h: &[T],
    s: AttnShape,
    d_model: usize,
    eps: f64,
) -> (Vec<T>, AttnSaved<T>) {
    let n = s.n_seq * s.seq_len;
    let (dq, dkv) = (s.n_head * s.d_head, s.n_head_kv * s.d_head);
    let mut q = vec![T::ZERO; n * dq];
    let mut k = vec![T::ZERO; n * dkv];
    let mut v = vec![T::ZERO; n * dkv];
    linear_forward(&mut q, h, &p[lay.wq.clone()], n, d_model, dq, Par::Pool); // [n, n_head·d_head]
    linear_forward(&mut k, h, &p[lay.wk.clone()], n, d_model, dkv, Par::Pool); // [n, n_head_kv·d_head]
    linear_forward(&mut v, h, &p[lay.wv.clone()], n, d_model, dkv, Par::Pool); // [n, n_head_kv·d_head]
    qkv_bias_forward(p, lay, &mut q, &mut k, &mut v); // + b_q, b_k, b_v (attn_bias)
    let (mut q_pre, mut k_pre, mut q_rstd, mut k_rstd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    if let (Some(qn), Some(kn)) = (&lay.q_norm, &lay.k_norm) {
        (q_pre, q_rstd) = norm_rows(&mut q, &p[qn.clone()], eps); // rows of d_head or n_head·d_head
        (k_pre, k_rstd) = norm_rows(&mut k, &p[kn.clone()], eps);
    }
    rope.apply(&mut q, s.n_seq, s.seq_len, s.n_head, 0, false);
    rope.apply(&mut k, s.n_seq, s.seq_len, s.n_head_kv, 0, false);
    let mut o = vec![T::ZERO; n * dq];
    let mut probs = vec![T::ZERO; s.n_seq * s.n_head * s.seq_len * s.seq_len];
    attention_forward(&mut o, &mut probs, &q, &k, &v, s); // [n, n_head·d_head]
    let mut out = vec![T::ZERO; n * d_model];
    linear_forward(&mut out, &o, &p[lay.wo.clone()], n, dq, d_model, Par::Pool); // [n, d_model]
    (out, AttnSaved { q, k, v, probs, o, q_pre, k_pre, q_rstd, k_rstd })
}

/// Backward: **accumulates** into `d_h` and the weight gradients in `g`.
#[allow(clippy::too_many_arguments)]
pub fn attention_block_backward<T: Real>(
    d_h: &mut [T],
    g: &mut [T],
    d_out: &[T],
    h: &[T],
    sv: &AttnSaved<T>,
    p: &[T],
    lay: &AttnLayout,
    rope: &RopeTable<T>,
    s: AttnShape,
    d_model: usize,
) {
    let n = s.n_seq * s.seq_len;
    let (dq_w, dkv_w) = (s.n_head * s.d_head, s.n_head_kv * s.d_head);
    let mut d_o = vec![T::ZERO; n * dq_w];
    linear_backward(Some(&mut d_o), false, &mut g[lay.wo.clone()], d_out, &sv.o, &p[lay.wo.clone()], n, dq_w, d_model, Par::Pool);
    let mut d_q = vec![T::ZERO; n * dq_w];
    let mut d_k = vec![T::ZERO; n * dkv_w];
    let mut d_v = vec![T::ZERO; n * dkv_w];
    attention_backward(&mut d_q, &mut d_k, &mut d_v, &d_o, &sv.q, &sv.k, &sv.v, &sv.probs, s);
    rope.apply(&mut d_q, s.n_seq, s.seq_len, s.n_head, 0, true);
    rope.apply(&mut d_k, s.n_seq, s.seq_len, s.n_head_kv, 0, true);
    if let (Some(qn), Some(kn)) = (&lay.q_norm, &lay.k_norm) {
        // d_q, d_k are gradients of the normed q, k: back through the norms to the projections
        for (d_x, pre, rstd, r) in [(&mut d_q, &sv.q_pre, &sv.q_rstd, qn), (&mut d_k, &sv.k_pre, &sv.k_rstd, kn)] {
            let w = r.len();
            let rows = pre.len() / w;
            let mut d_pre = vec![T::ZERO; pre.len()];
            rmsnorm_backward(&mut d_pre, &mut g[r.clone()], d_x, pre, &p[r.clone()], rstd, rows, w);
            *d_x = d_pre;
        }
    }
    if let Some(b) = &lay.bias {
        bias_backward(&mut g[b[0].clone()], &d_q);
        bias_backward(&mut g[b[1].clone()], &d_k);
        bias_backward(&mut g[b[2].clone()], &d_v);
    }
    linear_backward(Some(&mut *d_h), true, &mut g[lay.wq.clone()], &d_q, h, &p[lay.wq.clone()], n, d_model, dq_w, Par::Pool);
    linear_backward(Some(&mut *d_h), true, &mut g[lay.wk.clone()], &d_k, h, &p[lay.wk.clone()], n, d_model, dkv_w, Par::Pool);
    linear_backward(Some(d_h), true, &mut g[lay.wv.clone()], &d_v, h, &p[lay.wv.clone()], n, d_model, dkv_w, Par::Pool);
}
