//! The decoder-only Transformer: embedding → blocks (attention + dense or MoE FFN) → norm → LM head,
//! with an explicit backward through all of it (see `docs/model-spec.md`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::layers::attention::{attention_block_backward, attention_block_forward, AttnSaved};
use crate::layers::attention_ext::{attention_ext_forward, rope_frequencies};
use crate::layers::mlp::{mlp_backward, mlp_forward, MlpSaved};
use crate::moe::aux::AuxLosses;
use crate::moe::router::Routing;
use crate::moe::stats::RoutingStats;
use crate::moe::{moe_backward, moe_forward, MoeSaved};
use crate::params::{build_layout, build_layout_sharded, shard_params, unshard_params, FfnLayout, Init, ModelLayout, ParamTable};
use crate::stored::MatrixStore;
use moe_dist::Groups;
use moe_kernels::attention::AttnShape;
use moe_kernels::cross_entropy::{cross_entropy_forward, cross_entropy_fused_inplace};
use moe_kernels::embedding::{embedding_backward, embedding_forward};
use moe_kernels::linear::{linear_backward, linear_forward};
use moe_kernels::norm::{rmsnorm_backward, rmsnorm_forward};
use moe_kernels::rng::Rng;
use moe_kernels::rope::RopeTable;
use moe_kernels::{Par, Real};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::ops::Range;

/// Logit elements per LM-head chunk (64 Mi floats = 256 MiB): large chunks pack the `[n_vocab, d_model]`
/// weight fewer times (every chunk packs it for the forward and again for the input gradient).
const HEAD_CHUNK_ELEMS: usize = 64 << 20;

/// A dense or MoE Transformer with all parameters in one flat buffer.
#[derive(Clone, Debug)]
pub struct Transformer<T: Real = f32> {
    /// the architecture
    pub cfg: ModelConfig,
    /// names, shapes and offsets of all parameters
    pub table: ParamTable,
    /// per-layer ranges into `params`
    pub layout: ModelLayout,
    /// all parameters, flat
    pub params: Vec<T>,
    /// per layer: the aux-loss-free selection bias `[n_expert]` (empty when unused)
    pub selection_bias: Vec<Vec<f32>>,
    /// RoPE cos/sin for positions `0..n_ctx`
    pub rope: RopeTable<T>,
    /// matrices kept in their checkpoint format instead of `params` (empty unless loaded with
    /// `HfOptions::keep_dtype`; see [`crate::stored`])
    pub stored: MatrixStore,
    /// this process's place in a data- and expert-parallel job (`None`: one process). Then
    /// `table`, `layout` and `params` hold this process's experts only ([`Transformer::shard`]),
    /// every forward and backward is collective over these groups, and a batch given to them is
    /// this process's share of the job's batch.
    pub dist: Option<Groups>,
}

/// Loss and balance report of one MoE layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MoeLayerReport {
    /// layer index
    pub layer: usize,
    /// weighted aux losses
    pub aux: AuxLosses,
    /// routing statistics
    pub stats: RoutingStats,
}

/// Losses of one forward (and backward).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossReport {
    /// `ce + Σ aux + Σ z`
    pub loss: f64,
    /// mean token cross-entropy
    pub ce: f64,
    /// Σ over MoE layers of the weighted load-balancing loss
    pub aux: f64,
    /// Σ over MoE layers of the weighted z-loss
    pub z: f64,
    /// per MoE layer
    pub moe: Vec<MoeLayerReport>,
}

/// Routing of one MoE layer in a forward pass.
#[derive(Clone, Debug)]
pub struct MoeLayerRouting<T> {
    /// layer index
    pub layer: usize,
    /// the routing decision
    pub routing: Routing<T>,
}

/// Output of [`Transformer::forward`].
#[derive(Clone, Debug)]
pub struct ForwardOutput<T> {
    /// `[n_tok, n_vocab]`
    pub logits: Vec<T>,
    /// aux losses and statistics per MoE layer
    pub moe: Vec<MoeLayerReport>,
    /// routing decisions per MoE layer
    pub routing: Vec<MoeLayerRouting<T>>,
}

enum FfnSaved<T> {
    Dense(MlpSaved<T>),
    Moe(Box<MoeSaved<T>>),
}

struct BlockSaved<T> {
    x_in: Vec<T>,  // [n, d_model]
    rstd1: Vec<T>, // [n]
    h1: Vec<T>,    // [n, d_model]
    attn: AttnSaved<T>,
    x_mid: Vec<T>, // [n, d_model]
    rstd2: Vec<T>, // [n]
    h2: Vec<T>,    // [n, d_model]
    ffn: FfnSaved<T>,
}

impl<T: Real> Transformer<T> {
    /// A model with zeroed weights (norms at one) and no selection bias values yet.
    pub fn zeros(cfg: ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let (table, layout) = build_layout(&cfg);
        // check the memory need before allocating: refuse with the numbers, never abort. The RoPE
        // table holds cos and sin of its first `CACHED_POSITIONS` positions (later ones are computed
        // on use), whatever the context length.
        let size = std::mem::size_of::<T>() as u128;
        let need = table.total as u128 * size;
        let rope_pos = if cfg.attn_ext.is_some() { 0 } else { cfg.n_ctx.min(RopeTable::<T>::CACHED_POSITIONS) as u128 };
        let rope_need = rope_pos * cfg.d_head() as u128 * size;
        if let Some(avail) = available_memory() {
            if need + rope_need > avail as u128 {
                return Err(Error::BadInput(format!(
                    "this model has {} parameters: {} MiB, and a RoPE table of {} positions: {} MiB, more than the {} MiB of memory available",
                    table.total,
                    need >> 20,
                    rope_pos,
                    rope_need >> 20,
                    avail >> 20
                )));
            }
        }
        let mut params = Vec::new();
        params
            .try_reserve_exact(table.total)
            .map_err(|e| Error::BadInput(format!("cannot allocate {} MiB for {} parameters: {e}", need >> 20, table.total)))?;
        params.resize(table.total, T::ZERO);
        for e in &table.entries {
            if e.init == Init::Ones {
                params[e.range()].fill(T::ONE);
            }
        }
        let selection_bias = layout
            .blocks
            .iter()
            .map(|b| match (&b.ffn, &cfg.moe) {
                (FfnLayout::Moe(m), Some(mc)) if mc.bias_update_rate > 0.0 => vec![0.0; m.n_expert],
                _ => Vec::new(),
            })
            .collect();
        let rope = rope_table(&cfg);
        Ok(Transformer { cfg, table, layout, params, selection_bias, rope, stored: MatrixStore::default(), dist: None })
    }

    /// A freshly initialised model (GPT-2 style: N(0, 0.02), output projections scaled by
    /// 1/√(2·n_layer), norms at one), deterministic in `seed`.
    ///
    /// Each tensor draws from its own stream, derived from `seed` and the tensor's name, so two
    /// models that share a tensor (name and shape) start with the same values for it: a dense model
    /// and its MoE twin of one seed share embeddings, attention, norms and LM head, which pairs
    /// their runs more tightly than a common seed alone.
    pub fn new(cfg: ModelConfig, seed: u64) -> Result<Self> {
        let mut m = Self::zeros(cfg)?;
        let mut buf = Vec::new();
        for e in &m.table.entries {
            if let Init::Normal(std) = e.init {
                let mut rng = Rng::derive(seed, 0x1417 ^ moe_kernels::rng::fnv1a(e.name.as_bytes()));
                buf.resize(e.len, 0.0f32);
                rng.fill_normal(&mut buf, std);
                for (p, &v) in m.params[e.range()].iter_mut().zip(&buf) {
                    *p = T::from_f32(v);
                }
            }
        }
        Ok(m)
    }

    /// The same model in another scalar type.
    pub fn cast<U: Real>(&self) -> Transformer<U> {
        Transformer {
            cfg: self.cfg.clone(),
            table: self.table.clone(),
            layout: self.layout.clone(),
            params: self.params.iter().map(|v| U::from_f64(v.to_f64())).collect(),
            selection_bias: self.selection_bias.clone(),
            rope: rope_table(&self.cfg),
            stored: self.stored.clone(),
            dist: self.dist.clone(),
        }
    }

    /// This whole model as expert-parallel rank `groups.ep.rank()` of a job laid out by `groups`:
    /// keeps the rank's contiguous range of each MoE layer's experts ([`build_layout_sharded`]).
    /// With one process (or `groups.ep` of size 1) only `dist` is set.
    pub fn shard(mut self, groups: Groups) -> Result<Self> {
        if self.dist.is_some() {
            return Err(Error::BadInput("the model is already sharded".into()));
        }
        self.check_materialized()?;
        let (rank, size) = (groups.ep.rank(), groups.ep.size());
        if size > 1 {
            let (table, layout) = build_layout_sharded(&self.cfg, rank, size)
                .map_err(|reason| Error::InvalidConfig { field: "moe.n_expert".into(), reason })?;
            self.params = shard_params(&self.table, &self.params, &table, rank);
            self.table = table;
            self.layout = layout;
        }
        self.dist = Some(groups);
        Ok(self)
    }

    /// The whole model's table (every expert), whatever this process holds.
    pub fn full_table(&self) -> ParamTable {
        match &self.dist {
            Some(g) if g.ep.size() > 1 => build_layout(&self.cfg).0,
            _ => self.table.clone(),
        }
    }

    /// `buf`, laid out by this process's `table` (parameters, gradients, optimizer moments), as
    /// the whole model's buffer ([`Transformer::full_table`]), gathered from every expert-parallel
    /// rank (collective over `dist.ep`; a copy in one process).
    pub fn gather_full(&self, buf: &[T]) -> Vec<T> {
        match &self.dist {
            Some(g) if g.ep.size() > 1 => {
                let ep = g.ep.as_ref();
                let shards: Vec<Vec<T>> = ep
                    .all_gather_bytes(crate::moe::parallel::real_bytes(buf))
                    .iter()
                    .map(|b| crate::moe::parallel::real_from_bytes(b))
                    .collect();
                let tables: Vec<ParamTable> =
                    (0..ep.size()).map(|r| build_layout_sharded(&self.cfg, r, ep.size()).expect("sharded before").0).collect();
                unshard_params(&build_layout(&self.cfg).0, &tables, &shards)
            }
            _ => buf.to_vec(),
        }
    }

    /// This process's part of a whole-model buffer laid out by [`Transformer::full_table`].
    pub fn shard_buffer<U: Copy>(&self, full: &[U]) -> Vec<U> {
        match &self.dist {
            Some(g) if g.ep.size() > 1 => shard_params(&build_layout(&self.cfg).0, full, &self.table, g.ep.rank()),
            _ => full.to_vec(),
        }
    }

    /// Error unless every parameter is in `params` (see [`crate::stored`]).
    pub fn check_materialized(&self) -> Result<()> {
        if self.stored.taken() > 0 {
            return Err(Error::BadInput(format!(
                "{} matrices of this model were moved into a fast engine (`EngineWeights::new_taking`); load the checkpoint again to run it otherwise",
                self.stored.taken()
            )));
        }
        match self.stored.dtype_name() {
            Some(dt) => Err(Error::BadInput(format!(
                "{} matrices of this model are kept in {dt} for the fast engine; the f32 reference path needs `Transformer::materialize` first",
                self.stored.len()
            ))),
            None => Ok(()),
        }
    }

    fn check_input(&self, inputs: &[u32], targets: Option<&[u32]>, n_seq: usize, seq_len: usize) -> Result<()> {
        self.check_materialized()?;
        // a process of a parallel job may have an empty share of a small batch: it still joins
        // the collectives
        if (n_seq == 0 && self.dist.is_none()) || seq_len == 0 {
            return Err(Error::BadInput("empty batch".into()));
        }
        if n_seq.checked_mul(seq_len) != Some(inputs.len()) {
            return Err(Error::BadInput(format!("{} input tokens for a batch of {n_seq} × {seq_len}", inputs.len())));
        }
        if seq_len > self.cfg.n_ctx {
            return Err(Error::BadInput(format!("sequence length {seq_len} exceeds n_ctx {}", self.cfg.n_ctx)));
        }
        if let Some(t) = targets {
            if t.len() != inputs.len() {
                return Err(Error::BadInput(format!("{} targets for {} inputs", t.len(), inputs.len())));
            }
        }
        let v = self.cfg.n_vocab as u32;
        if let Some(&bad) = inputs.iter().chain(targets.unwrap_or(&[])).find(|&&x| x >= v) {
            return Err(Error::BadInput(format!("token id {bad} is outside the vocabulary (n_vocab {v})")));
        }
        let need = self.batch_memory(n_seq, seq_len, targets.is_some());
        // /proc/meminfo is read only for batches big enough to matter, not on every training or
        // decode step of an ordinary size
        if let Some(avail) = (need > BATCH_MEMORY_CHECK_FROM).then(available_memory).flatten() {
            if need > avail as u128 {
                return Err(Error::BadInput(format!(
                    "a batch of {n_seq} × {seq_len} tokens needs about {} MiB (attention weights [{n_seq}, {} heads, {seq_len}, {seq_len}], logits [{}, {}]), more than the {} MiB of memory available; use fewer tokens",
                    need >> 20,
                    self.cfg.n_head,
                    n_seq * seq_len,
                    self.cfg.n_vocab,
                    avail >> 20
                )));
            }
        }
        Ok(())
    }

    /// Bytes a forward pass over `n_seq × seq_len` tokens allocates at its peak, in `u128` so that
    /// no product overflows: the attention weights `[n_seq, n_head, seq_len, seq_len]` (one layer's
    /// for a forward, every layer's when `backward` keeps them), the logits `[n, n_vocab]` and the
    /// per-token activations.
    pub fn batch_memory(&self, n_seq: usize, seq_len: usize, backward: bool) -> u128 {
        let c = &self.cfg;
        let prod = |xs: &[usize]| xs.iter().fold(1u128, |p, &x| p.saturating_mul(x as u128));
        let layers = if backward { c.n_layer } else { 1 };
        let probs = prod(&[n_seq, c.n_head, seq_len, seq_len, layers]);
        let width = c.d_model + c.n_head * c.d_head() + 2 * c.n_head_kv * c.d_head() + c.d_ff;
        let acts = prod(&[n_seq, seq_len, width, 4, layers]);
        let logits = prod(&[n_seq, seq_len, c.n_vocab]);
        probs.saturating_add(logits).saturating_add(acts).saturating_mul(std::mem::size_of::<T>() as u128)
    }

    fn attn_shape(&self, n_seq: usize, seq_len: usize) -> AttnShape {
        AttnShape { n_seq, seq_len, n_head: self.cfg.n_head, n_head_kv: self.cfg.n_head_kv, d_head: self.cfg.d_head() }
    }

    fn block_forward(&self, i: usize, x_in: Vec<T>, n_seq: usize, seq_len: usize) -> (Vec<T>, BlockSaved<T>, Option<MoeLayerReport>) {
        let d = self.cfg.d_model;
        let n = n_seq * seq_len;
        let b = &self.layout.blocks[i];
        let p = &self.params;
        let eps = self.cfg.norm_eps;
        let mut h1 = vec![T::ZERO; n * d];
        let mut rstd1 = vec![T::ZERO; n];
        rmsnorm_forward(&mut h1, &mut rstd1, &x_in, &p[b.attn_norm.clone()], n, d, eps); // [n, d_model]
        let (a, attn) = if self.cfg.attn_ext.is_some() {
            (attention_ext_forward(p, &b.attn, &self.cfg, i, &h1, n_seq, seq_len), AttnSaved::default())
        // inference only
        } else {
            attention_block_forward(p, &b.attn, &self.rope, &h1, self.attn_shape(n_seq, seq_len), d, eps)
        };
        let mut x_mid = x_in.clone();
        x_mid.iter_mut().zip(&a).for_each(|(x, &v)| *x += v); // [n, d_model]
        let mut h2 = vec![T::ZERO; n * d];
        let mut rstd2 = vec![T::ZERO; n];
        rmsnorm_forward(&mut h2, &mut rstd2, &x_mid, &p[b.ffn_norm.clone()], n, d, eps); // [n, d_model]
        let (f, ffn, report) = match &b.ffn {
            FfnLayout::Dense(ml) => {
                let (f, s) = mlp_forward(p, ml, &h2, n, d, Par::Pool);
                (f, FfnSaved::Dense(s), None)
            }
            FfnLayout::Moe(ml) => {
                let mc = self.cfg.moe.as_ref().expect("MoE layer implies a moe config");
                let out = moe_forward(p, ml, mc, &self.selection_bias[i], &h2, n, d, i, self.dist.as_ref());
                let rep = MoeLayerReport { layer: i, aux: out.aux, stats: out.stats };
                (out.out, FfnSaved::Moe(Box::new(out.saved)), Some(rep))
            }
        };
        let mut x_out = x_mid.clone();
        x_out.iter_mut().zip(&f).for_each(|(x, &v)| *x += v); // [n, d_model]
        (x_out, BlockSaved { x_in, rstd1, h1, attn, x_mid, rstd2, h2, ffn }, report)
    }

    /// `d_x`: in, the gradient of the block output; out, the gradient of the block input.
    fn block_backward(&self, i: usize, d_x: &mut [T], s: &BlockSaved<T>, g: &mut [T], n_seq: usize, seq_len: usize, aux_scale: f64) {
        let d = self.cfg.d_model;
        let n = n_seq * seq_len;
        let b = &self.layout.blocks[i];
        let p = &self.params;
        let mut d_h2 = vec![T::ZERO; n * d];
        match (&b.ffn, &s.ffn) {
            (FfnLayout::Dense(ml), FfnSaved::Dense(ms)) => mlp_backward(&mut d_h2, g, d_x, &s.h2, ms, p, ml, n, d, Par::Pool),
            (FfnLayout::Moe(ml), FfnSaved::Moe(ms)) => {
                let mc = self.cfg.moe.as_ref().expect("MoE layer implies a moe config");
                moe_backward(&mut d_h2, g, d_x, &s.h2, ms, p, ml, mc, n, d, aux_scale, self.dist.as_ref());
            }
            _ => unreachable!("saved activations match the layout"),
        }
        let gn = &mut g[b.ffn_norm.clone()];
        rmsnorm_backward(d_x, gn, &d_h2, &s.x_mid, &p[b.ffn_norm.clone()], &s.rstd2, n, d);
        let mut d_h1 = vec![T::ZERO; n * d];
        attention_block_backward(&mut d_h1, g, d_x, &s.h1, &s.attn, p, &b.attn, &self.rope, self.attn_shape(n_seq, seq_len), d);
        let gn = &mut g[b.attn_norm.clone()];
        rmsnorm_backward(d_x, gn, &d_h1, &s.x_in, &p[b.attn_norm.clone()], &s.rstd1, n, d);
    }

    /// Final norm: returns (normed `[n, d_model]`, rstd `[n]`).
    fn final_norm(&self, x: &[T], n: usize) -> (Vec<T>, Vec<T>) {
        let d = self.cfg.d_model;
        let mut xf = vec![T::ZERO; n * d];
        let mut rstd = vec![T::ZERO; n];
        rmsnorm_forward(&mut xf, &mut rstd, x, &self.params[self.layout.norm.clone()], n, d, self.cfg.norm_eps);
        (xf, rstd)
    }

    /// LM head + cross-entropy over row chunks (so the `[rows, n_vocab]` logits buffer stays small);
    /// returns the mean CE. With `grad = Some((d_xf, grads, scale))` it also writes `d_xf` and
    /// accumulates the head's weight gradient for `scale · mean CE`.
    fn head_loss(&self, xf: &[T], targets: &[u32], mut grad: Option<(&mut [T], &mut [T], f64)>) -> f64 {
        let (n, d, v) = (targets.len(), self.cfg.d_model, self.cfg.n_vocab);
        if n == 0 {
            return 0.0; // an empty share of a parallel job's batch
        }
        let lm = self.layout.lm_head.clone();
        let w = &self.params[lm.clone()];
        let rows = (HEAD_CHUNK_ELEMS / v).clamp(1, n);
        let mut sum = 0.0;
        let mut logits = vec![T::ZERO; rows * v];
        let mut losses = vec![T::ZERO; rows];
        for r0 in (0..n).step_by(rows) {
            let m = rows.min(n - r0);
            let (xc, tc) = (&xf[r0 * d..(r0 + m) * d], &targets[r0..r0 + m]);
            let (lg, ls) = (&mut logits[..m * v], &mut losses[..m]);
            linear_forward(lg, xc, w, m, d, v, Par::Pool); // [m, n_vocab]
            match grad.as_mut() {
                None => cross_entropy_forward(ls, lg, tc, v),
                Some((d_xf, g, scale)) => {
                    cross_entropy_fused_inplace(ls, lg, tc, v, T::from_f64(*scale / n as f64)); // d_logits
                    linear_backward(Some(&mut d_xf[r0 * d..(r0 + m) * d]), false, &mut g[lm.clone()], lg, xc, w, m, d, v, Par::Pool);
                }
            }
            sum += ls.iter().map(|x| x.to_f64()).sum::<f64>();
        }
        sum / n as f64
    }

    #[allow(clippy::type_complexity)]
    fn blocks_forward(
        &self,
        inputs: &[u32],
        n_seq: usize,
        seq_len: usize,
        keep: bool,
    ) -> Result<(Vec<T>, Vec<BlockSaved<T>>, Vec<MoeLayerReport>, Vec<MoeLayerRouting<T>>)> {
        let d = self.cfg.d_model;
        let mut x = vec![T::ZERO; inputs.len() * d];
        embedding_forward(&mut x, &self.params[self.layout.tok_embeddings.clone()], inputs, d); // [n, d_model]
        let mut saved = Vec::new();
        let mut reports = Vec::new();
        let mut routing = Vec::new();
        for i in 0..self.cfg.n_layer {
            let (x_out, s, rep) = self.block_forward(i, x, n_seq, seq_len);
            x = x_out;
            if let FfnSaved::Moe(ms) = &s.ffn {
                // NaN/Inf gate values make top-k and capacity dropping meaningless: a clear error
                if let Some(a) = ms.routing.probs.iter().position(|v| !v.to_f64().is_finite()) {
                    let e = ms.routing.settings.n_expert;
                    return Err(Error::Diverged {
                        what: format!(
                            "layer {i}: router gate value of token {} expert {} is {}",
                            a / e,
                            a % e,
                            ms.routing.probs[a].to_f64()
                        ),
                    });
                }
            }
            reports.extend(rep);
            if keep {
                saved.push(s);
            } else if let FfnSaved::Moe(ms) = s.ffn {
                routing.push(MoeLayerRouting { layer: i, routing: ms.routing });
            }
        }
        Ok((x, saved, reports, routing))
    }

    /// Logits of a batch `inputs [n_seq, seq_len]` plus routing per MoE layer (no gradients).
    pub fn forward(&self, inputs: &[u32], n_seq: usize, seq_len: usize) -> Result<ForwardOutput<T>> {
        self.check_input(inputs, None, n_seq, seq_len)?;
        let (x, _, moe, routing) = self.blocks_forward(inputs, n_seq, seq_len, false)?;
        let n = inputs.len();
        let (xf, _) = self.final_norm(&x, n);
        let mut logits = vec![T::ZERO; n * self.cfg.n_vocab];
        linear_forward(&mut logits, &xf, &self.params[self.layout.lm_head.clone()], n, self.cfg.d_model, self.cfg.n_vocab, Par::Pool); // [n, n_vocab]
        Ok(ForwardOutput { logits, moe, routing })
    }

    /// Losses of a batch without gradients.
    pub fn loss(&self, inputs: &[u32], targets: &[u32], n_seq: usize, seq_len: usize) -> Result<LossReport> {
        self.check_input(inputs, Some(targets), n_seq, seq_len)?;
        let (x, _, moe, _) = self.blocks_forward(inputs, n_seq, seq_len, false)?;
        let (xf, _) = self.final_norm(&x, inputs.len());
        Ok(report(self.head_loss(&xf, targets, None), moe))
    }

    /// Forward and backward of `scale · loss`; gradients are **accumulated** into `grads`
    /// (same layout as `params`). Use `scale = 1 / n_micro` for gradient accumulation.
    ///
    /// With `dist` the batch is this process's share and the gradients its share of the whole
    /// batch's (sum them over the world: replicated tensors over `world`, experts over `edp`);
    /// the report's CE is this share's mean and its aux/z this share's part of the global loss.
    pub fn forward_backward(
        &self,
        inputs: &[u32],
        targets: &[u32],
        n_seq: usize,
        seq_len: usize,
        grads: &mut [T],
        scale: f64,
    ) -> Result<LossReport> {
        self.check_input(inputs, Some(targets), n_seq, seq_len)?;
        if let Some(field) = self.cfg.inference_only_field() {
            return Err(Error::InvalidConfig {
                field: field.into(),
                reason: "is inference-only: the backward is not implemented for it (forward and KV-cached decode work)".into(),
            });
        }
        if grads.len() != self.params.len() {
            return Err(Error::BadInput(format!("gradient buffer has {} elements, the model {}", grads.len(), self.params.len())));
        }
        let n = inputs.len();
        let d = self.cfg.d_model;
        let (x, saved, moe, _) = self.blocks_forward(inputs, n_seq, seq_len, true)?;
        let (xf, rstd) = self.final_norm(&x, n);
        let mut d_xf = vec![T::ZERO; n * d];
        // several processes: the CE is the mean over the whole batch, so this share's gradient
        // carries n / n_global of it (the aux losses already use global counts)
        let ce_scale = match &self.dist {
            Some(g) => {
                let mut n_global = [n as u64];
                g.world.all_reduce_sum_u64(&mut n_global);
                scale * n as f64 / n_global[0] as f64
            }
            None => scale,
        };
        let ce = self.head_loss(&xf, targets, Some((&mut d_xf, &mut *grads, ce_scale)));
        let rep = report(ce, moe);
        let mut d_x = vec![T::ZERO; n * d];
        let gn = &mut grads[self.layout.norm.clone()];
        rmsnorm_backward(&mut d_x, gn, &d_xf, &x, &self.params[self.layout.norm.clone()], &rstd, n, d);
        for (i, s) in saved.iter().enumerate().rev() {
            self.block_backward(i, &mut d_x, s, grads, n_seq, seq_len, scale);
        }
        embedding_backward(&mut grads[self.layout.tok_embeddings.clone()], &d_x, inputs, d);
        Ok(rep)
    }

    /// Aux-loss-free balancing: move each MoE layer's selection bias by `γ · sign(mean − count)`.
    /// `counts[l]` are the assignment counts of layer `l` since the last update (empty = skip).
    pub fn update_selection_bias(&mut self, counts: &[(usize, Vec<u64>)]) {
        let Some(mc) = &self.cfg.moe else { return };
        let gamma = mc.bias_update_rate as f32;
        if gamma <= 0.0 {
            return;
        }
        for (layer, c) in counts {
            let bias = &mut self.selection_bias[*layer];
            if bias.len() != c.len() || c.is_empty() {
                continue;
            }
            let mean = c.iter().sum::<u64>() as f64 / c.len() as f64;
            for (b, &ci) in bias.iter_mut().zip(c) {
                let diff = mean - ci as f64;
                *b += gamma
                    * if diff > 0.0 {
                        1.0
                    } else if diff < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
            }
        }
    }
}

impl Transformer<f32> {
    /// Parameters `r` (a matrix or part of one), from the parameter buffer or, for a matrix kept
    /// in its checkpoint format, from the [`MatrixStore`] (converted; see [`crate::stored`]).
    pub fn matrix_f32(&self, r: Range<usize>) -> Cow<'_, [f32]> {
        match self.stored.get_f32(r.clone()) {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(&self.params[r]),
        }
    }
}

impl<T: Real> Transformer<T> {
    /// Copy every stored matrix into the parameter buffer (as `T`) and empty the store, so that the
    /// reference path can run the model. Matrices already taken out (`EngineWeights::new_taking`)
    /// cannot come back: the store keeps counting them, so the model still refuses to run
    /// ([`Transformer::check_materialized`]) or be saved ([`Transformer::param_values_f32`]).
    pub fn materialize(&mut self) {
        let store = std::mem::take(&mut self.stored);
        for (r, d) in store.iter() {
            for (p, v) in self.params[r.clone()].iter_mut().zip(d.to_f32(0..d.len())) {
                *p = T::from_f32(v);
            }
        }
        self.stored.taken = store.taken;
    }

    /// Error unless every parameter's value is still in the model (in `params` or kept in the
    /// [`MatrixStore`]), i.e. no matrix was moved into a fast engine; `what` names the operation.
    pub fn check_values_present(&self, what: &str) -> Result<()> {
        match self.stored.taken() {
            0 => Ok(()),
            n => Err(Error::BadInput(format!(
                "cannot {what}: {n} matrices of this model were moved into a fast engine (`EngineWeights::new_taking`) and \
                 their values are no longer in the model; load the checkpoint again"
            ))),
        }
    }

    /// Parameters `r` (a whole tensor of the table) as f32 for saving or exporting: from the
    /// parameter buffer, or from the [`MatrixStore`] for a matrix kept in its checkpoint format
    /// (exact), never the zeros a kept or taken matrix leaves in `params`. Errors when matrices
    /// were taken out ([`Transformer::check_values_present`]), or when `r` is only partly stored.
    pub fn param_values_f32(&self, r: Range<usize>, what: &str) -> Result<Vec<f32>> {
        self.check_values_present(what)?;
        if let Some(v) = self.stored.get_f32(r.clone()) {
            return Ok(v);
        }
        if self.stored.overlaps(&r) {
            return Err(Error::BadInput(format!(
                "cannot {what}: parameters {}..{} are only partly kept in {}; `Transformer::materialize` first",
                r.start,
                r.end,
                self.stored.dtype_name().unwrap_or("another format")
            )));
        }
        Ok(self.params[r].iter().map(|v| v.to_f32()).collect())
    }
}

/// RoPE cos/sin of the plain attention (scaled frequencies with `rope_scaling`); empty with
/// `attn_ext` (that path computes its own, possibly partial, rotation), so large-context imports do
/// not pay for an unused table.
fn rope_table<T: Real>(cfg: &ModelConfig) -> RopeTable<T> {
    let n_pos = if cfg.attn_ext.is_some() { 0 } else { cfg.n_ctx };
    match &cfg.rope_scaling {
        None => RopeTable::new(cfg.d_head(), cfg.rope_theta, n_pos),
        Some(r) => {
            let (inv_freq, factor) = rope_frequencies(cfg.rope_theta, cfg.d_head(), Some(r));
            RopeTable::from_frequencies(&inv_freq, factor, n_pos)
        }
    }
}

fn report(ce: f64, moe: Vec<MoeLayerReport>) -> LossReport {
    let aux: f64 = moe.iter().map(|m| m.aux.aux).sum();
    let z: f64 = moe.iter().map(|m| m.aux.z).sum();
    LossReport { loss: ce + aux + z, ce, aux, z, moe }
}

/// Batches estimated below this many bytes are not checked against the available memory.
const BATCH_MEMORY_CHECK_FROM: u128 = 256 << 20;

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux), `None` elsewhere or when unreadable.
pub(crate) fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_layer_products_are_refused_before_allocating() {
        let cfg = |d_model: usize, n_layer: usize| -> ModelConfig {
            toml::from_str(&format!(
                "n_vocab = 32\nn_ctx = 8\nn_layer = {n_layer}\nd_model = {d_model}\nn_head = 2\nn_head_kv = 1\nd_ff = {d_model}\n"
            ))
            .unwrap()
        };
        // d_model × n_layer × d_ff overflows u64 long before memory runs out: an error with the count
        let e = Transformer::<f32>::zeros(cfg(1 << 24, 4096)).unwrap_err().to_string();
        assert!(e.contains("parameters") && e.contains("2^42"), "{e}");
        let e = Transformer::<f32>::zeros(cfg(1 << 40, 2)).unwrap_err().to_string();
        assert!(e.contains("model.d_model") && e.contains("1099511627776"), "{e}");
        // within the caps but more than any machine has: the memory check names the sizes
        if available_memory().is_some() {
            let e = Transformer::<f32>::zeros(cfg(1 << 16, 32)).unwrap_err().to_string();
            assert!(e.contains("parameters") && e.contains("MiB of memory available"), "{e}");
        }
    }

    #[test]
    fn a_long_token_list_is_refused_with_the_attention_size_not_allocated() {
        let cfg: ModelConfig =
            toml::from_str("n_vocab = 16\nn_ctx = 4194304\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 8\n").unwrap();
        let m = Transformer::<f32>::zeros(cfg).unwrap();
        // 2 heads × (2^21)² weights × 4 bytes = 32 TiB: computed without overflow, refused
        let n = 1usize << 21;
        assert_eq!(m.batch_memory(1, n, false) >> 40, 32);
        assert_eq!(m.batch_memory(usize::MAX, usize::MAX, true), u128::MAX, "saturates instead of overflowing");
        let e = m.forward(&[1, 2], usize::MAX, 2).unwrap_err().to_string();
        assert!(e.contains("2 input tokens"), "{e}");
        if available_memory().is_some() {
            let tokens = vec![1u32; n];
            let e = m.forward(&tokens, 1, n).unwrap_err().to_string();
            assert!(e.contains(&format!("1 × {n} tokens")) && e.contains("2 heads") && e.contains("MiB of memory available"), "{e}");
        }
        // a short list still runs
        assert_eq!(m.forward(&[1, 2, 3], 1, 3).unwrap().logits.len(), 3 * 16);
    }

    fn tensor<'a>(m: &'a Transformer<f32>, name: &str) -> &'a [f32] {
        let e = m.table.entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("{name}"));
        &m.params[e.range()]
    }

    #[test]
    fn a_dense_model_and_its_moe_twin_share_the_init_of_common_tensors() {
        let dense: ModelConfig =
            toml::from_str("n_vocab = 32\nn_ctx = 8\nn_layer = 2\nd_model = 16\nn_head = 2\nn_head_kv = 1\nd_ff = 32\n").unwrap();
        let mut moe_cfg = dense.clone();
        moe_cfg.moe = Some(toml::from_str("n_expert = 4\nn_expert_active = 2\nd_expert = 16\n").unwrap());
        let (d, m) = (Transformer::<f32>::new(dense, 7).unwrap(), Transformer::<f32>::new(moe_cfg, 7).unwrap());
        for name in ["tok_embeddings.weight", "layers.0.attn.wq.weight", "layers.1.attn.wo.weight", "lm_head.weight"] {
            let a = tensor(&d, name);
            assert!(a.iter().any(|&v| v != 0.0), "{name} is initialised");
            assert_eq!(a, tensor(&m, name), "{name}");
        }
        // different tensors of one model and another seed draw different values
        assert_ne!(tensor(&d, "layers.0.attn.wq.weight"), tensor(&d, "layers.1.attn.wq.weight"));
        let d8 = Transformer::<f32>::new(d.cfg.clone(), 8).unwrap();
        assert_ne!(tensor(&d, "lm_head.weight"), tensor(&d8, "lm_head.weight"));
    }
}
