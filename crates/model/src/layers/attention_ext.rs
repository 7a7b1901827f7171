//! Inference-only attention of imported architectures (`ModelConfig::attn_ext`): plain grouped-query
//! or multi-head latent attention (MLA) projections, partial / interleaved / scaled RoPE, learned
//! sink logits, sliding windows, chunked attention, NoPE layers with temperature tuning and L2 q/k
//! norms (Llama 4).
//!
//! One code path serves both the full-sequence forward ([`attention_ext_forward`]) and the KV-cached
//! decode of `moe_infer`: new rows are projected and rotated by [`project`], attended per sequence by
//! [`attend_seq`] against keys/values laid out per KV head, and finished by [`output`]. There is no
//! backward: `Transformer::forward_backward` refuses such configs.
//!
//! Scores and outputs are two GEMMs per query head ([`attend_seq`]); [`attend_seq_reference`] is
//! its slow twin (one dot product per score). Latent-attention decode ([`attend_latent`]) is plain
//! loops, checked against the expanded full forward.

use crate::config::{Mla, ModelConfig, RopeScaling};
use crate::params::{AttnLayout, MlaLayout};
use moe_kernels::linear::linear_forward;
use moe_kernels::matmul::{matmul, MatmulShape};
use moe_kernels::norm::rmsnorm_forward;
use moe_kernels::{Par, Real};
use rayon::prelude::*;
use std::f64::consts::PI;

/// RoPE frequencies of one model: which part of a head rotates, how, and how fast.
#[derive(Clone, Debug)]
pub struct Rope {
    /// inverse frequency of each rotated pair `[dim / 2]`
    pub inv_freq: Vec<f32>,
    /// multiplier of cos and sin (YaRN's attention factor; 1 otherwise)
    pub factor: f32,
    /// rotate `(2i, 2i+1)` (output de-interleaved, as transformers' DeepSeek-V3) instead of `(i, i + dim/2)`
    pub interleave: bool,
    /// first rotated value inside a head
    pub offset: usize,
    /// rotated values per head
    pub dim: usize,
}

/// Inverse frequencies `[dim / 2]` and the cos/sin factor of RoPE with base `theta` and optional
/// scaling, computed as transformers' `ROPE_INIT_FUNCTIONS` do.
pub fn rope_frequencies(theta: f64, dim: usize, scaling: Option<&RopeScaling>) -> (Vec<f32>, f32) {
    // transformers: base ** (arange(0, dim, 2).float() / dim) in f32
    let pos_freq: Vec<f32> = (0..dim / 2).map(|i| (theta as f32).powf((2 * i) as f32 / dim as f32)).collect();
    let base: Vec<f32> = pos_freq.iter().map(|&p| 1.0 / p).collect();
    match scaling {
        None => (base, 1.0),
        Some(RopeScaling::Linear { factor }) => (base.iter().map(|&f| f / *factor as f32).collect(), 1.0),
        // (as ggml: the unscaled frequency divided by the pair's factor, in f32)
        Some(RopeScaling::Factors { factors }) => (base.iter().zip(factors).map(|(&f, &k)| f / k as f32).collect(), 1.0),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
            let old = *original_max_position_embeddings as f64;
            let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
            let out = base
                .iter()
                .map(|&f| {
                    let wl = 2.0 * PI / f as f64;
                    let scaled = if wl > low_wl { f as f64 / factor } else { f as f64 };
                    if wl < high_wl || wl > low_wl {
                        scaled as f32
                    } else {
                        let smooth = (old / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                    }
                })
                .collect();
            (out, 1.0)
        }
        Some(RopeScaling::Yarn { factor, beta_fast, beta_slow, original_max_position_embeddings, truncate, attention_factor }) => {
            let d = dim as f64;
            let corr = |rot: f64| d * ((*original_max_position_embeddings as f64) / (rot * 2.0 * PI)).ln() / (2.0 * theta.ln());
            let (mut low, mut high) = (corr(*beta_fast), corr(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
            if low == high {
                high += 0.001;
            }
            let out = pos_freq
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                    let extra = 1.0 - ramp; // share of the extrapolated (unscaled) frequency
                    let (fe, fi) = (1.0 / p, 1.0 / (*factor as f32 * p));
                    fi * (1.0 - extra) + fe * extra
                })
                .collect();
            (out, *attention_factor as f32)
        }
    }
}

impl Rope {
    /// The RoPE of `cfg`: the whole head, or the `d_rope` tail of each head with latent attention.
    pub fn new(cfg: &ModelConfig) -> Self {
        let ext = cfg.attn_ext.as_ref();
        let (offset, dim) = match ext.and_then(|a| a.mla.as_ref()) {
            Some(m) => (m.d_nope, m.d_rope),
            None => (0, cfg.d_head()),
        };
        let (inv_freq, factor) = rope_frequencies(cfg.rope_theta, dim, cfg.rope_scaling.as_ref());
        Rope { inv_freq, factor, interleave: ext.is_some_and(|a| a.rope_interleave), offset, dim }
    }

    /// Rotate the RoPE part of every head of one row `x [n_head, d_head]` to position `pos`.
    /// cos/sin are computed once per row (on the stack up to 64 pairs); no allocation for a plain
    /// rotation of up to 64 pairs.
    pub fn rotate_row<T: Real>(&self, x: &mut [T], d_head: usize, pos: usize) {
        let half = self.dim / 2;
        let cs_of = |f: f32| {
            let a = pos as f32 * f;
            (T::from_f32(a.cos() * self.factor), T::from_f32(a.sin() * self.factor))
        };
        let mut stack = [(T::ZERO, T::ZERO); 64];
        let heap: Vec<(T, T)>;
        let cs: &[(T, T)] = if half <= stack.len() {
            stack.iter_mut().zip(&self.inv_freq).for_each(|(c, &f)| *c = cs_of(f));
            &stack[..half]
        } else {
            heap = self.inv_freq.iter().map(|&f| cs_of(f)).collect();
            &heap
        };
        let mut tmp = if self.interleave { vec![T::ZERO; self.dim] } else { Vec::new() };
        for head in x.chunks_mut(d_head) {
            let r = &mut head[self.offset..self.offset + self.dim];
            for (i, &(c, s)) in cs.iter().enumerate() {
                if self.interleave {
                    let (x1, x2) = (r[2 * i], r[2 * i + 1]);
                    tmp[i] = x1 * c - x2 * s;
                    tmp[i + half] = x2 * c + x1 * s;
                } else {
                    let (x1, x2) = (r[i], r[i + half]);
                    r[i] = x1 * c - x2 * s;
                    r[i + half] = x2 * c + x1 * s;
                }
            }
            if self.interleave {
                r.copy_from_slice(&tmp);
            }
        }
    }
}

/// Per-layer attention settings that the score loop needs.
#[derive(Clone, Debug)]
pub struct LayerSpec<T> {
    /// query heads
    pub n_head: usize,
    /// key/value heads
    pub n_head_kv: usize,
    /// q/k width per head
    pub d_head: usize,
    /// value width per head
    pub d_head_v: usize,
    /// logit scale
    pub scale: T,
    /// keys with `pos_q − pos_k < window` are visible (`None` = all earlier keys)
    pub window: Option<usize>,
    /// only keys in the query's chunk of this many positions are visible
    pub chunk: Option<usize>,
    /// sink logit per head `[n_head]` (empty = none)
    pub sinks: Vec<T>,
}

impl<T: Real> LayerSpec<T> {
    /// Settings of layer `layer`.
    pub fn new(p: &[T], lay: &AttnLayout, cfg: &ModelConfig, layer: usize) -> Self {
        let ext = cfg.attn_ext.clone().unwrap_or_default();
        let window = (ext.sliding_window > 0 && ext.window_layers.get(layer).copied().unwrap_or(false)).then_some(ext.sliding_window);
        LayerSpec {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            d_head: cfg.d_head(),
            d_head_v: cfg.d_head_v(),
            scale: T::from_f64(ext.softmax_scale.unwrap_or(1.0 / (cfg.d_head() as f64).sqrt())),
            window,
            chunk: (ext.attention_chunk > 0 && ext.chunk_layers.get(layer).copied().unwrap_or(false)).then_some(ext.attention_chunk),
            sinks: lay.sinks.as_ref().map(|r| p[r.clone()].to_vec()).unwrap_or_default(),
        }
    }
}

/// RMSNorm of every `w.len()`-wide row of `x` in place (weight `w`).
pub fn rmsnorm_rows<T: Real>(x: &mut [T], w: &[T], eps: f64) {
    let width = w.len();
    let rows = x.len() / width;
    let pre = x.to_vec();
    let mut rstd = vec![T::ZERO; rows];
    rmsnorm_forward(x, &mut rstd, &pre, w, rows, width, eps);
}

/// Rows and values below which [`for_rows`] stays on the calling thread (a decode step's few rows,
/// or a small model's prefill, cost less than a round trip to the rayon pool).
const PAR_MIN_ROWS: usize = 16;
const PAR_MIN_VALUES: usize = 1 << 15;

/// `f(row, pos)` on every `w`-wide row of `x` with its position, on the rayon pool from
/// [`PAR_MIN_ROWS`] rows and [`PAR_MIN_VALUES`] values.
fn for_rows<T: Real>(x: &mut [T], w: usize, positions: &[usize], f: impl Fn(&mut [T], usize) + Sync + Send) {
    if positions.len() < PAR_MIN_ROWS || x.len() < PAR_MIN_VALUES {
        x.chunks_mut(w).zip(positions).for_each(|(row, &pos)| f(row, pos));
    } else {
        x.par_chunks_mut(w).zip(positions.par_iter()).for_each(|(row, &pos)| f(row, pos));
    }
}

fn add_bias<T: Real>(x: &mut [T], b: &[T]) {
    for row in x.chunks_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(a, &c)| *a += c);
    }
}

/// Project `h [n, d_model]` (rows at `positions`) of layer `layer` to rotated queries
/// `[n, n_head·d_head]`, rotated keys `[n, n_head_kv·d_head]` and values `[n, n_head_kv·d_head_v]`.
pub fn project<T: Real>(
    p: &[T],
    lay: &AttnLayout,
    cfg: &ModelConfig,
    layer: usize,
    h: &[T],
    positions: &[usize],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let n = positions.len();
    let d = cfg.d_model;
    let (nh, nkv, dh, dv) = (cfg.n_head, cfg.n_head_kv, cfg.d_head(), cfg.d_head_v());
    let mut q = vec![T::ZERO; n * nh * dh];
    let mut k = vec![T::ZERO; n * nkv * dh];
    let mut v = vec![T::ZERO; n * nkv * dv];
    match (&lay.mla, cfg.attn_ext.as_ref().and_then(|a| a.mla.as_ref())) {
        (Some(ml), Some(m)) => {
            let (qr, rows) = mla_q_and_latent(p, ml, m, cfg, h, positions); // [n, n_head·d_head], [n, kv_lora_rank + d_rope]
            q = qr;
            let (kvr, dr, dn) = (m.kv_lora_rank, m.d_rope, m.d_nope);
            let latent: Vec<T> = rows.chunks(kvr + dr).flat_map(|r| r[..kvr].to_vec()).collect(); // [n, kv_lora_rank]
            let mut kvb = vec![T::ZERO; n * nh * (dn + dv)];
            linear_forward(&mut kvb, &latent, &p[ml.wkv_b.clone()], n, kvr, nh * (dn + dv), Par::Pool); // [n, n_head·(d_nope + d_v)]
            for t in 0..n {
                let kr = &rows[t * (kvr + dr) + kvr..(t + 1) * (kvr + dr)]; // [d_rope], shared by all heads
                for hd in 0..nh {
                    let src = &kvb[(t * nh + hd) * (dn + dv)..(t * nh + hd + 1) * (dn + dv)];
                    let kd = &mut k[(t * nh + hd) * dh..(t * nh + hd + 1) * dh];
                    kd[..dn].copy_from_slice(&src[..dn]);
                    kd[dn..].copy_from_slice(kr);
                    v[(t * nh + hd) * dv..(t * nh + hd + 1) * dv].copy_from_slice(&src[dn..]);
                }
            }
        }
        _ => {
            linear_forward(&mut q, h, &p[lay.wq.clone()], n, d, nh * dh, Par::Pool); // [n, n_head·d_head]
            linear_forward(&mut k, h, &p[lay.wk.clone()], n, d, nkv * dh, Par::Pool); // [n, n_head_kv·d_head]
            linear_forward(&mut v, h, &p[lay.wv.clone()], n, d, nkv * dv, Par::Pool); // [n, n_head_kv·d_head]
            finish_qkv(p, lay, cfg, layer, &Rope::new(cfg), &mut q, &mut k, &mut v, positions);
        }
    }
    (q, k, v)
}

/// Everything [`project`] does to the projected rows `q [n, n_head·d_head]`, `k [n,
/// n_head_kv·d_head]`, `v [n, n_head_kv·d_head]` of a non-latent layer after the products: biases,
/// q/k RMSNorm, then RoPE at `positions` (and the L2 norm) or, in NoPE layers, the temperature.
/// Shared with the fast engine, which computes the products itself.
#[allow(clippy::too_many_arguments)]
pub fn finish_qkv<T: Real>(
    p: &[T],
    lay: &AttnLayout,
    cfg: &ModelConfig,
    layer: usize,
    rope: &Rope,
    q: &mut [T],
    k: &mut [T],
    v: &mut [T],
    positions: &[usize],
) {
    let (nh, nkv, dh) = (cfg.n_head, cfg.n_head_kv, cfg.d_head());
    if let Some(b) = &lay.bias {
        add_bias(q, &p[b[0].clone()]);
        add_bias(k, &p[b[1].clone()]);
        add_bias(v, &p[b[2].clone()]);
    }
    if let (Some(qn), Some(kn)) = (&lay.q_norm, &lay.k_norm) {
        rmsnorm_rows(q, &p[qn.clone()], cfg.norm_eps);
        rmsnorm_rows(k, &p[kn.clone()], cfg.norm_eps);
    }
    let ext = cfg.attn_ext.as_ref();
    if ext.and_then(|a| a.rope_layers.get(layer).copied()).unwrap_or(true) {
        for_rows(q, nh * dh, positions, |row, pos| rope.rotate_row(row, dh, pos));
        for_rows(k, nkv * dh, positions, |row, pos| rope.rotate_row(row, dh, pos));
        if ext.is_some_and(|a| a.qk_l2_norm) {
            let ones = vec![T::ONE; dh];
            rmsnorm_rows(q, &ones, cfg.norm_eps);
            rmsnorm_rows(k, &ones, cfg.norm_eps);
        }
    } else if let Some(t) = ext.and_then(|a| a.temperature) {
        // NoPE layer: q · (1 + attn_scale · ln(1 + floor((p + 1) / floor_scale)))
        for (row, &pos) in q.chunks_mut(nh * dh).zip(positions) {
            let f = ((pos as f32 + 1.0) / t.floor_scale as f32).floor().ln_1p() * t.attn_scale as f32 + 1.0;
            row.iter_mut().for_each(|x| *x *= T::from_f32(f));
        }
    }
}

/// Latent attention of `h [n, d_model]` at `positions`: rotated queries `[n, n_head·d_head]` and
/// the compressed rows `[n, kv_lora_rank + d_rope]` (the normed key/value latent, then the rotated
/// RoPE key shared by all heads) — what the KV-cached decode stores per token.
pub fn mla_q_and_latent<T: Real>(p: &[T], ml: &MlaLayout, m: &Mla, cfg: &ModelConfig, h: &[T], positions: &[usize]) -> (Vec<T>, Vec<T>) {
    let n = positions.len();
    let (d, nh, dh) = (cfg.d_model, cfg.n_head, cfg.d_head());
    let rope = Rope::new(cfg);
    let eps = m.norm_eps;
    let mut q = vec![T::ZERO; n * nh * dh];
    match (&ml.wq_a, &ml.q_a_norm, m.q_lora_rank) {
        (Some(wa), Some(na), Some(r)) => {
            let mut qa = vec![T::ZERO; n * r];
            linear_forward(&mut qa, h, &p[wa.clone()], n, d, r, Par::Pool); // [n, q_lora_rank]
            rmsnorm_rows(&mut qa, &p[na.clone()], eps);
            linear_forward(&mut q, &qa, &p[ml.wq_b.clone()], n, r, nh * dh, Par::Pool);
            // [n, n_head·d_head]
        }
        _ => linear_forward(&mut q, h, &p[ml.wq_b.clone()], n, d, nh * dh, Par::Pool), // [n, n_head·d_head]
    }
    mla_rotate_q(&rope, &mut q, dh, positions);
    let (kvr, dr) = (m.kv_lora_rank, m.d_rope);
    let mut rows = vec![T::ZERO; n * (kvr + dr)];
    linear_forward(&mut rows, h, &p[ml.wkv_a.clone()], n, d, kvr + dr, Par::Pool); // [n, kv_lora_rank + d_rope]
    mla_finish_rows(p, ml, m, &rope, &mut rows, positions);
    (q, rows)
}

/// RoPE of the latent-attention queries `q [n, n_head·d_head]` (the `d_rope` tail of each head).
pub fn mla_rotate_q<T: Real>(rope: &Rope, q: &mut [T], d_head: usize, positions: &[usize]) {
    let w = q.len() / positions.len().max(1);
    for_rows(q, w, positions, |row, pos| rope.rotate_row(row, d_head, pos));
}

/// The products `h · wkv_aᵀ` `rows [n, kv_lora_rank + d_rope]` → cache rows: RMSNorm of the latent
/// part, RoPE of the shared key part at `positions` (`rope` = [`Rope::new`] of the model).
pub fn mla_finish_rows<T: Real>(p: &[T], ml: &MlaLayout, m: &Mla, rope: &Rope, rows: &mut [T], positions: &[usize]) {
    let (kvr, dr) = (m.kv_lora_rank, m.d_rope);
    let k_rope = Rope { offset: 0, ..rope.clone() };
    let norm = &p[ml.kv_a_norm.clone()];
    let eps = m.norm_eps;
    for_rows(rows, kvr + dr, positions, |row, pos| {
        let (lat, kr) = row.split_at_mut(kvr);
        rmsnorm_rows(lat, norm, eps);
        k_rope.rotate_row(kr, dr, pos);
    });
}

/// Absorbed latent attention of one sequence (KV-cached MLA decode): queries `q [nn, n_head·d_head]`
/// (rotated), row t at position `pos0 + t`, against cache rows `rows [≥ pos0 + nn, kv_lora_rank +
/// d_rope]` from [`mla_q_and_latent`]; writes `o [nn, n_head·d_v]`. Per head the key half of
/// `wkv_b` is folded into the query and the value half applied to the attention-weighted latent:
/// the numbers of expanding every cached row ([`attend_seq`] after [`project`]) at the latent's width.
#[allow(clippy::too_many_arguments)]
pub fn attend_latent<T: Real>(s: &LayerSpec<T>, p: &[T], ml: &MlaLayout, m: &Mla, q: &[T], pos0: usize, rows: &[T], o: &mut [T]) {
    let (nh, dh, dv) = (s.n_head, s.d_head, m.d_v);
    let (kvr, dr, dn) = (m.kv_lora_rank, m.d_rope, m.d_nope);
    let wb = &p[ml.wkv_b.clone()]; // [n_head·(d_nope + d_v), kv_lora_rank]
    o.par_chunks_mut(dv).enumerate().for_each(|(idx, oh)| {
        let (t, hq) = (idx / nh, idx % nh);
        let pos = pos0 + t;
        let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w)).max(s.chunk.map_or(0, |c| pos / c * c));
        let qh = &q[(t * nh + hq) * dh..(t * nh + hq + 1) * dh];
        let wk = &wb[hq * (dn + dv) * kvr..(hq * (dn + dv) + dn) * kvr]; // [d_nope, kv_lora_rank]
        let wv = &wb[(hq * (dn + dv) + dn) * kvr..(hq + 1) * (dn + dv) * kvr]; // [d_v, kv_lora_rank]
        let mut q_lat = vec![T::ZERO; kvr]; // Wkᵀ q_nope
        for (i, &qi) in qh[..dn].iter().enumerate() {
            q_lat.iter_mut().zip(&wk[i * kvr..(i + 1) * kvr]).for_each(|(a, &w)| *a += qi * w);
        }
        let mut sc: Vec<T> = (lo..=pos)
            .map(|j| {
                let r = &rows[j * (kvr + dr)..(j + 1) * (kvr + dr)];
                let nope: T = q_lat.iter().zip(&r[..kvr]).map(|(&a, &b)| a * b).sum();
                let rope: T = qh[dn..].iter().zip(&r[kvr..]).map(|(&a, &b)| a * b).sum();
                (nope + rope) * s.scale
            })
            .collect();
        moe_kernels::act::softmax_with_sink(&mut sc, s.sinks.get(hq).copied());
        let mut o_lat = vec![T::ZERO; kvr];
        for (j, &w) in (lo..=pos).zip(&sc) {
            o_lat.iter_mut().zip(&rows[j * (kvr + dr)..j * (kvr + dr) + kvr]).for_each(|(a, &b)| *a += w * b);
        }
        for (i, x) in oh.iter_mut().enumerate() {
            *x = wv[i * kvr..(i + 1) * kvr].iter().zip(&o_lat).map(|(&a, &b)| a * b).sum();
        }
    });
}

/// The slow twin of [`attend_seq`]: one dot product per score, one task per (row, head).
/// Attention of the rows `q [nn, n_head·d_head]` of one sequence, row t at position `pos0 + t`,
/// against that sequence's keys `keys[g] [≥ pos0 + nn, d_head]` and values `values[g]
/// [≥ pos0 + nn, d_head_v]` per KV head `g`; writes `o [nn, n_head·d_head_v]`.
pub fn attend_seq_reference<T: Real>(s: &LayerSpec<T>, q: &[T], pos0: usize, keys: &[&[T]], values: &[&[T]], o: &mut [T]) {
    let (nh, dh, dv) = (s.n_head, s.d_head, s.d_head_v);
    let group = nh / s.n_head_kv;
    // one task per (row, head): decode steps have one row per sequence but many heads
    o.par_chunks_mut(dv).enumerate().for_each(|(idx, oh)| {
        let (t, hq) = (idx / nh, idx % nh);
        let pos = pos0 + t;
        let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w)).max(s.chunk.map_or(0, |c| pos / c * c));
        let g = hq / group;
        let qh = &q[(t * nh + hq) * dh..(t * nh + hq + 1) * dh];
        let mut sc: Vec<T> =
            (lo..=pos).map(|j| qh.iter().zip(&keys[g][j * dh..(j + 1) * dh]).map(|(&a, &b)| a * b).sum::<T>() * s.scale).collect();
        moe_kernels::act::softmax_with_sink(&mut sc, s.sinks.get(hq).copied());
        oh.fill(T::ZERO);
        for (j, &w) in (lo..=pos).zip(sc.iter()) {
            oh.iter_mut().zip(&values[g][j * dv..(j + 1) * dv]).for_each(|(a, &b)| *a += w * b);
        }
    });
}

/// Attention of the rows `q [nn, n_head·d_head]` of one sequence, row t at position `pos0 + t`,
/// against that sequence's keys `keys[g] [≥ pos0 + nn, d_head]` and values `values[g]
/// [≥ pos0 + nn, d_head_v]` per KV head `g`; writes `o [nn, n_head·d_head_v]`. One task per query
/// head: two GEMMs over the keys any row can see (from the first row's window or chunk start),
/// masked softmax (with the sink) in between. Equals [`attend_seq_reference`] (unit-tested).
pub fn attend_seq<T: Real>(s: &LayerSpec<T>, q: &[T], pos0: usize, keys: &[&[T]], values: &[&[T]], o: &mut [T]) {
    let (nh, dh, dv) = (s.n_head, s.d_head, s.d_head_v);
    let group = nh / s.n_head_kv;
    let nn = q.len() / (nh * dh);
    let lo = |pos: usize| s.window.map_or(0, |w| (pos + 1).saturating_sub(w)).max(s.chunk.map_or(0, |c| pos / c * c));
    let (k0, l) = (lo(pos0), pos0 + nn); // keys k0..l are visible to some row
    let lk = l - k0;
    let heads: Vec<Vec<T>> = (0..nh)
        .into_par_iter()
        .map(|hq| {
            let g = hq / group;
            let qh: Vec<T> = (0..nn).flat_map(|t| q[(t * nh + hq) * dh..(t * nh + hq + 1) * dh].to_vec()).collect(); // [nn, d_head]
            let mut sc = vec![T::ZERO; nn * lk];
            matmul(&mut sc, &qh, &keys[g][k0 * dh..l * dh], MatmulShape::nt(nn, dh, lk), T::ZERO, Par::Seq); // [nn, lk]
            for (t, row) in sc.chunks_mut(lk).enumerate() {
                let pos = pos0 + t;
                let (a, b) = (lo(pos) - k0, pos + 1 - k0);
                row.iter_mut().for_each(|x| *x *= s.scale);
                moe_kernels::act::softmax_with_sink(&mut row[a..b], s.sinks.get(hq).copied());
                row[..a].fill(T::ZERO);
                row[b..].fill(T::ZERO);
            }
            let mut oh = vec![T::ZERO; nn * dv];
            matmul(&mut oh, &sc, &values[g][k0 * dv..l * dv], MatmulShape::nn(nn, lk, dv), T::ZERO, Par::Seq); // [nn, d_head_v]
            oh
        })
        .collect();
    for (hq, oh) in heads.iter().enumerate() {
        for t in 0..nn {
            o[(t * nh + hq) * dv..(t * nh + hq + 1) * dv].copy_from_slice(&oh[t * dv..(t + 1) * dv]);
        }
    }
}

/// Output projection (plus its bias) of the attention rows `o [n, n_head·d_head_v]` → `[n, d_model]`.
pub fn output<T: Real>(p: &[T], lay: &AttnLayout, cfg: &ModelConfig, o: &[T]) -> Vec<T> {
    let (d, w) = (cfg.d_model, cfg.n_head * cfg.d_head_v());
    let n = o.len() / w;
    let mut out = vec![T::ZERO; n * d];
    linear_forward(&mut out, o, &p[lay.wo.clone()], n, w, d, Par::Pool); // [n, d_model]
    if let Some(b) = &lay.out_bias {
        add_bias(&mut out, &p[b.clone()]);
    }
    out
}

/// Rows `[n, n_kv·w]` of one sequence → per KV head `[n, w]`.
pub fn per_head<T: Real>(x: &[T], n_kv: usize, w: usize) -> Vec<Vec<T>> {
    (0..n_kv).map(|g| x.chunks(n_kv * w).flat_map(|r| r[g * w..(g + 1) * w].to_vec()).collect()).collect()
}

/// Full-sequence attention of layer `layer` over `h [n_seq·seq_len, d_model]` → `[n, d_model]`.
pub fn attention_ext_forward<T: Real>(
    p: &[T],
    lay: &AttnLayout,
    cfg: &ModelConfig,
    layer: usize,
    h: &[T],
    n_seq: usize,
    seq_len: usize,
) -> Vec<T> {
    let positions: Vec<usize> = (0..n_seq * seq_len).map(|r| r % seq_len).collect();
    let (q, k, v) = project(p, lay, cfg, layer, h, &positions);
    let spec = LayerSpec::new(p, lay, cfg, layer);
    let (nkv, dh, dv, wq) = (cfg.n_head_kv, cfg.d_head(), cfg.d_head_v(), cfg.n_head * cfg.d_head());
    let mut o = vec![T::ZERO; n_seq * seq_len * cfg.n_head * dv];
    for s in 0..n_seq {
        let rows = s * seq_len..(s + 1) * seq_len;
        let kh = per_head(&k[rows.start * nkv * dh..rows.end * nkv * dh], nkv, dh); // n_kv × [seq_len, d_head]
        let vh = per_head(&v[rows.start * nkv * dv..rows.end * nkv * dv], nkv, dv); // n_kv × [seq_len, d_head_v]
        let kr: Vec<&[T]> = kh.iter().map(|x| x.as_slice()).collect();
        let vr: Vec<&[T]> = vh.iter().map(|x| x.as_slice()).collect();
        let ow = cfg.n_head * dv;
        attend_seq(&spec, &q[rows.start * wq..rows.end * wq], 0, &kr, &vr, &mut o[rows.start * ow..rows.end * ow]);
    }
    output(p, lay, cfg, &o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_kernels::rng::Rng;

    #[test]
    fn attend_seq_equals_its_slow_twin_with_windows_chunks_sinks_and_gqa() {
        let mut rng = Rng::new(7);
        let mut rand = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
        for (window, chunk, sinks, pos0, nn) in [
            (None, None, false, 0, 9),
            (Some(3), None, true, 0, 9),
            (None, Some(4), false, 5, 6),
            (Some(5), Some(4), true, 7, 1),
            (None, None, true, 11, 2),
        ] {
            let (nh, nkv, dh, dv) = (4, 2, 6, 5);
            let l = pos0 + nn;
            let s = LayerSpec {
                n_head: nh,
                n_head_kv: nkv,
                d_head: dh,
                d_head_v: dv,
                scale: 0.4,
                window,
                chunk,
                sinks: if sinks { rand(nh) } else { Vec::new() },
            };
            let q = rand(nn * nh * dh);
            let (kh, vh): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (0..nkv).map(|_| (rand(l * dh), rand(l * dv))).unzip();
            let keys: Vec<&[f64]> = kh.iter().map(|x| x.as_slice()).collect();
            let values: Vec<&[f64]> = vh.iter().map(|x| x.as_slice()).collect();
            let (mut fast, mut slow) = (vec![0.0; nn * nh * dv], vec![0.0; nn * nh * dv]);
            attend_seq(&s, &q, pos0, &keys, &values, &mut fast);
            attend_seq_reference(&s, &q, pos0, &keys, &values, &mut slow);
            let err = fast.iter().zip(&slow).fold(0f64, |a, (x, y)| a.max((x - y).abs()));
            assert!(err < 1e-12, "window {window:?} chunk {chunk:?} sinks {sinks} pos0 {pos0}: {err}");
        }
    }
}
