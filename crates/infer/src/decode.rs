//! Batched, KV-cached forward over new tokens of many sequences at once.
//!
//! [`forward_step`] appends `tokens[i]` to sequence `i` (whose keys/values live in `caches[i]`)
//! and returns the logits of each sequence's last new token. A prefill is a call with the whole
//! prompt, a decode step a call with one token per sequence; both can be mixed in one call, and
//! sequences may join or leave between calls because every cache is independent.
//!
//! All new tokens of all sequences form one `[n_new_total, d_model]` matrix for the norms, the
//! q/k/v/o projections, the dense FFNs and the MoE layers — so the experts of a MoE layer see the
//! whole batch's tokens grouped by expert, which is what makes batched MoE decoding efficient.
//! Attention is per sequence against its own cache (causal inside the new chunk), with RoPE at the
//! true positions and grouped-query heads.
//!
//! **Routing is always dropless here**: the config's `capacity_factor` is ignored. Capacity is a
//! training-time device for static shapes; applied at inference it would make a token's output
//! depend on which other sequences share its batch (and on prefill vs decode chunking).

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use moe_kernels::embedding::embedding_forward;
use moe_kernels::linear::linear_forward;
use moe_kernels::matmul::{matmul, MatmulShape};
use moe_kernels::norm::rmsnorm_forward;
use moe_kernels::{Par, Real};
use moe_model::layers::attention::{qk_norm_forward, qkv_bias_forward};
use moe_model::layers::attention_ext;
use moe_model::layers::mlp::mlp_forward;
use moe_model::moe::moe_forward;
use moe_model::params::FfnLayout;
use moe_model::{ModelConfig, MoeConfig, Transformer};
use rayon::prelude::*;

/// What [`forward_step_with`] returns besides the last-token logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepOptions {
    /// logits of every new position (`[n_new_i, n_vocab]` per sequence) instead of the last one
    pub all_logits: bool,
    /// summarise the routing of every MoE layer
    pub routing: bool,
}

/// Routing of one MoE layer over all new tokens of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRouting {
    /// layer index
    pub layer: usize,
    /// routed experts in this layer
    pub n_expert: usize,
    /// experts per token
    pub k: usize,
    /// tokens routed (all sequences together)
    pub n_tok: usize,
    /// (token, slot) assignments per expert `[n_expert]`
    pub counts: Vec<u32>,
    /// number of distinct experts the step's tokens touched
    pub distinct: usize,
}

/// Output of [`forward_step_with`].
#[derive(Clone, Debug)]
pub struct StepOutput<T> {
    /// per sequence: `[n_vocab]` (last new token) or `[n_new_i, n_vocab]` with `all_logits`
    pub logits: Vec<Vec<T>>,
    /// per MoE layer, in layer order (empty unless `StepOptions::routing`)
    pub routing: Vec<StepRouting>,
}

/// Append `tokens[i]` to sequence `i` and return the logits `[n_vocab]` of its last new token.
///
/// Errors (leaving every cache unchanged) when the lengths differ, a token list is empty, a token
/// id is out of range, a cache belongs to another model shape, or a sequence would exceed `n_ctx`.
pub fn forward_step<T: Real, S: AsRef<[u32]>>(model: &Transformer<T>, caches: &mut [&mut KvCache<T>], tokens: &[S]) -> Result<Vec<Vec<T>>> {
    Ok(forward_step_with(model, caches, tokens, StepOptions::default())?.logits)
}

/// [`forward_step`] for a single sequence.
pub fn forward_one<T: Real>(model: &Transformer<T>, cache: &mut KvCache<T>, tokens: &[u32]) -> Result<Vec<T>> {
    let mut l = forward_step(model, &mut [cache], &[tokens])?;
    Ok(l.pop().expect("one sequence"))
}

/// Check that every token id is inside the vocabulary.
pub(crate) fn validate_tokens(cfg: &ModelConfig, tokens: &[u32]) -> Result<()> {
    match tokens.iter().find(|&&x| x as usize >= cfg.n_vocab) {
        Some(&bad) => Err(Error::BadInput(format!("token id {bad} is outside the vocabulary (n_vocab {})", cfg.n_vocab))),
        None => Ok(()),
    }
}

/// Check a batch step's inputs against the model config (shared by the reference path and the
/// engine): one cache per token list, no empty sequence, ids in the vocabulary, room in `n_ctx`.
pub(crate) fn validate<T: Real, S: AsRef<[u32]>>(cfg: &moe_model::ModelConfig, caches: &[&mut KvCache<T>], tokens: &[S]) -> Result<()> {
    if caches.len() != tokens.len() {
        return Err(Error::BadInput(format!("{} caches for {} token lists", caches.len(), tokens.len())));
    }
    if tokens.is_empty() {
        return Err(Error::BadInput("empty batch".into()));
    }
    for (s, (c, t)) in caches.iter().zip(tokens).enumerate() {
        let t = t.as_ref();
        c.check_model(cfg)?;
        if t.is_empty() {
            return Err(Error::BadInput(format!("sequence {s} has no new tokens")));
        }
        validate_tokens(cfg, t).map_err(|e| Error::BadInput(format!("sequence {s}: {e}")))?;
        if c.len() + t.len() > cfg.n_ctx {
            return Err(Error::ContextOverflow { seq: s, len: c.len(), n_new: t.len(), n_ctx: cfg.n_ctx });
        }
    }
    Ok(())
}

/// [`forward_step`] with options: all positions' logits and/or per-layer routing summaries.
pub fn forward_step_with<T: Real, S: AsRef<[u32]>>(
    model: &Transformer<T>,
    caches: &mut [&mut KvCache<T>],
    tokens: &[S],
    opts: StepOptions,
) -> Result<StepOutput<T>> {
    validate(&model.cfg, caches, tokens)?;
    model.check_materialized()?;
    for (c, t) in caches.iter_mut().zip(tokens) {
        c.reserve(t.as_ref().len())?;
    }
    let cfg = &model.cfg;
    let p = &model.params;
    let d = cfg.d_model;
    let (n_head, n_kv, dh) = (cfg.n_head, cfg.n_head_kv, cfg.d_head());
    let (dq, dkv) = (n_head * dh, n_kv * dh);
    let eps = cfg.norm_eps;

    // row offsets of each sequence in the flat [n, ·] matrices, and true positions
    let mut offs = Vec::with_capacity(tokens.len() + 1);
    offs.push(0usize);
    let mut flat = Vec::new();
    let mut positions = Vec::new();
    for (c, t) in caches.iter().zip(tokens) {
        let t = t.as_ref();
        flat.extend_from_slice(t);
        positions.extend(c.len()..c.len() + t.len());
        offs.push(flat.len());
    }
    let n = flat.len();
    let len0: Vec<usize> = caches.iter().map(|c| c.len()).collect();
    let dropless: Option<MoeConfig> = cfg.moe.clone().map(|mut m| {
        m.capacity_factor = 0.0;
        m
    });

    let mut x = vec![T::ZERO; n * d];
    embedding_forward(&mut x, &p[model.layout.tok_embeddings.clone()], &flat, d); // [n, d_model]
    let mut h = vec![T::ZERO; n * d];
    let mut rstd = vec![T::ZERO; n];
    let mut q = vec![T::ZERO; n * dq];
    let mut k = vec![T::ZERO; n * dkv];
    let mut v = vec![T::ZERO; n * dkv];
    let mut a = vec![T::ZERO; n * d];
    let mut routing = Vec::new();
    for (i, b) in model.layout.blocks.iter().enumerate() {
        // attention
        rmsnorm_forward(&mut h, &mut rstd, &x, &p[b.attn_norm.clone()], n, d, eps); // [n, d_model]
        if cfg.attn_ext.is_some() {
            a = ext_attention(model, caches, i, &h, &positions, &offs, &len0); // [n, d_model]
        } else {
            linear_forward(&mut q, &h, &p[b.attn.wq.clone()], n, d, dq, Par::Pool); // [n, n_head·d_head]
            linear_forward(&mut k, &h, &p[b.attn.wk.clone()], n, d, dkv, Par::Pool); // [n, n_head_kv·d_head]
            linear_forward(&mut v, &h, &p[b.attn.wv.clone()], n, d, dkv, Par::Pool); // [n, n_head_kv·d_head]
            qkv_bias_forward(p, &b.attn, &mut q, &mut k, &mut v);
            qk_norm_forward(p, &b.attn, &mut q, &mut k, model.cfg.norm_eps);
            model.rope.apply_at(&mut q, &positions, n_head);
            model.rope.apply_at(&mut k, &positions, n_kv);
            for (s, c) in caches.iter_mut().enumerate() {
                let r = offs[s]..offs[s + 1];
                c.write(i, &k[r.start * dkv..r.end * dkv], &v[r.start * dkv..r.end * dkv]);
            }
            let views: Vec<&KvCache<T>> = caches.iter().map(|c| &**c).collect();
            let o = cached_attention(&views, i, &q, &offs, &len0, n_head, n_kv, dh); // [n, n_head·d_head]
            linear_forward(&mut a, &o, &p[b.attn.wo.clone()], n, dq, d, Par::Pool);
            // [n, d_model]
        }
        x.iter_mut().zip(&a).for_each(|(x, &v)| *x += v);
        // FFN
        rmsnorm_forward(&mut h, &mut rstd, &x, &p[b.ffn_norm.clone()], n, d, eps); // [n, d_model]
        let f = match &b.ffn {
            FfnLayout::Dense(ml) => mlp_forward(p, ml, &h, n, d, Par::Pool).0,
            FfnLayout::Moe(ml) => {
                let mc = dropless.as_ref().expect("MoE layer implies a moe config");
                let out = moe_forward(p, ml, mc, &model.selection_bias[i], &h, n, d, i, None);
                if opts.routing {
                    let r = &out.saved.routing;
                    let mut seen = vec![false; ml.n_expert];
                    r.idx.iter().for_each(|&e| seen[e as usize] = true);
                    routing.push(StepRouting {
                        layer: i,
                        n_expert: ml.n_expert,
                        k: r.settings.k,
                        n_tok: n,
                        counts: r.counts.clone(),
                        distinct: seen.iter().filter(|&&s| s).count(),
                    });
                }
                out.out
            }
        };
        x.iter_mut().zip(&f).for_each(|(x, &v)| *x += v);
    }
    for (c, t) in caches.iter_mut().zip(tokens) {
        c.advance(t.as_ref().len());
    }

    // final norm + LM head, only on the rows whose logits are wanted
    let rows: Vec<usize> = if opts.all_logits { (0..n).collect() } else { offs[1..].iter().map(|&e| e - 1).collect() };
    let m = rows.len();
    let mut xs = Vec::with_capacity(m * d);
    for &r in &rows {
        xs.extend_from_slice(&x[r * d..(r + 1) * d]);
    }
    let mut xf = vec![T::ZERO; m * d];
    let mut rs = vec![T::ZERO; m];
    rmsnorm_forward(&mut xf, &mut rs, &xs, &p[model.layout.norm.clone()], m, d, eps);
    let nv = cfg.n_vocab;
    let mut logits = vec![T::ZERO; m * nv];
    linear_forward(&mut logits, &xf, &p[model.layout.lm_head.clone()], m, d, nv, Par::Pool); // [m, n_vocab]
    let logits = if opts.all_logits {
        offs.windows(2).map(|w| logits[w[0] * nv..w[1] * nv].to_vec()).collect()
    } else {
        logits.chunks(nv).map(|c| c.to_vec()).collect()
    };
    Ok(StepOutput { logits, routing })
}

/// Attention of layer `layer` for models with `attn_ext` (latent attention, sinks, sliding windows,
/// chunks, NoPE layers, scaled RoPE): the projection and score code of the full forward
/// (`moe_model::layers::attention_ext`), against each sequence's cache. Writes this step's keys
/// and values into the caches — for latent attention only the compressed rows, attended in the
/// absorbed form (`attend_latent`) — and returns `[n, d_model]`.
fn ext_attention<T: Real>(
    model: &Transformer<T>,
    caches: &mut [&mut KvCache<T>],
    layer: usize,
    h: &[T],
    positions: &[usize],
    offs: &[usize],
    len0: &[usize],
) -> Vec<T> {
    let (cfg, p) = (&model.cfg, &model.params);
    let lay = &model.layout.blocks[layer].attn;
    let n = *offs.last().expect("offsets");
    let spec = attention_ext::LayerSpec::new(p, lay, cfg, layer);
    if let (Some(ml), Some(m)) = (&lay.mla, cfg.attn_ext.as_ref().and_then(|a| a.mla.as_ref())) {
        // latent attention: cache the compressed rows, attend in the absorbed form
        let (q, rows) = attention_ext::mla_q_and_latent(p, ml, m, cfg, h, positions); // [n, n_head·d_head], [n, kv_lora_rank + d_rope]
        let (w, wq, wo) = (m.kv_lora_rank + m.d_rope, cfg.n_head * cfg.d_head(), cfg.n_head * m.d_v);
        let mut o = vec![T::ZERO; n * wo]; // [n, n_head·d_v]
        for (s, c) in caches.iter_mut().enumerate() {
            let r = offs[s]..offs[s + 1];
            c.write(layer, &rows[r.start * w..r.end * w], &[]);
            let cached = c.keys_upto(layer, 0, len0[s] + r.len()); // [l, kv_lora_rank + d_rope]
            attention_ext::attend_latent(&spec, p, ml, m, &q[r.start * wq..r.end * wq], len0[s], cached, &mut o[r.start * wo..r.end * wo]);
        }
        return attention_ext::output(p, lay, cfg, &o);
    }
    let (q, k, v) = attention_ext::project(p, lay, cfg, layer, h, positions); // [n, n_head·d_head], [n, n_head_kv·d_head], [n, n_head_kv·d_head_v]
    let (nh, nkv, dh, dv) = (cfg.n_head, cfg.n_head_kv, cfg.d_head(), cfg.d_head_v());
    for (s, c) in caches.iter_mut().enumerate() {
        let r = offs[s]..offs[s + 1];
        c.write(layer, &k[r.start * nkv * dh..r.end * nkv * dh], &v[r.start * nkv * dv..r.end * nkv * dv]);
    }
    let mut o = vec![T::ZERO; n * nh * dv]; // [n, n_head·d_head_v]
    for (s, c) in caches.iter().enumerate() {
        let r = offs[s]..offs[s + 1];
        let l = len0[s] + r.len();
        let keys: Vec<&[T]> = (0..nkv).map(|g| c.keys_upto(layer, g, l)).collect(); // n_kv × [l, d_head]
        let values: Vec<&[T]> = (0..nkv).map(|g| c.values_upto(layer, g, l)).collect(); // n_kv × [l, d_head_v]
        attention_ext::attend_seq(
            &spec,
            &q[r.start * nh * dh..r.end * nh * dh],
            len0[s],
            &keys,
            &values,
            &mut o[r.start * nh * dv..r.end * nh * dv],
        );
    }
    attention_ext::output(p, lay, cfg, &o)
}

/// Attention of the new rows `q [n, n_head·d_head]` (already rotated) against each sequence's cache,
/// which already holds this step's keys/values at positions `len0[s]..len0[s] + n_new_s`.
/// One rayon task per (sequence, KV head) handles that head's query group with two small GEMMs.
#[allow(clippy::too_many_arguments)]
fn cached_attention<T: Real>(
    caches: &[&KvCache<T>],
    layer: usize,
    q: &[T],
    offs: &[usize],
    len0: &[usize],
    n_head: usize,
    n_kv: usize,
    dh: usize,
) -> Vec<T> {
    let dq = n_head * dh;
    let group = n_head / n_kv;
    let scale = T::from_f64(1.0 / (dh as f64).sqrt());
    let tasks: Vec<(usize, usize)> = (0..caches.len()).flat_map(|s| (0..n_kv).map(move |g| (s, g))).collect();
    let results: Vec<Vec<T>> = tasks
        .par_iter()
        .map(|&(s, g)| {
            let (r0, nn) = (offs[s], offs[s + 1] - offs[s]);
            let l = len0[s] + nn;
            let kg = caches[s].keys_upto(layer, g, l); // [l, d_head]
            let vg = caches[s].values_upto(layer, g, l); // [l, d_head]
            let mut out = vec![T::ZERO; group * nn * dh]; // [group, nn, d_head]
            let mut qh = vec![T::ZERO; nn * dh];
            let mut sc = vec![T::ZERO; nn * l];
            for j in 0..group {
                let hq = g * group + j;
                for t in 0..nn {
                    let base = (r0 + t) * dq + hq * dh;
                    qh[t * dh..(t + 1) * dh].copy_from_slice(&q[base..base + dh]);
                }
                matmul(&mut sc, &qh, kg, MatmulShape::nt(nn, dh, l), T::ZERO, Par::Seq); // [nn, l]
                for t in 0..nn {
                    let vis = len0[s] + t + 1; // causal: keys 0..=position
                    let row = &mut sc[t * l..(t + 1) * l];
                    row[..vis].iter_mut().for_each(|x| *x *= scale);
                    moe_kernels::act::softmax_with_sink(&mut row[..vis], None);
                    row[vis..].fill(T::ZERO);
                }
                matmul(&mut out[j * nn * dh..(j + 1) * nn * dh], &sc, vg, MatmulShape::nn(nn, l, dh), T::ZERO, Par::Seq);
                // [nn, d_head]
            }
            out
        })
        .collect();
    let n = *offs.last().expect("offsets");
    let mut o = vec![T::ZERO; n * dq];
    for (&(s, g), res) in tasks.iter().zip(&results) {
        let (r0, nn) = (offs[s], offs[s + 1] - offs[s]);
        for j in 0..group {
            let hq = g * group + j;
            for t in 0..nn {
                let base = (r0 + t) * dq + hq * dh;
                o[base..base + dh].copy_from_slice(&res[(j * nn + t) * dh..(j * nn + t + 1) * dh]);
            }
        }
    }
    o
}
