//! The parameter table: every tensor's stable name, shape and place in one flat buffer.
//!
//! Parameters live in one contiguous `Vec<T>` (llm.c style) and gradients in a second buffer with
//! the same layout, so the optimizer, gradient clipping, accumulation and checkpoints all work on
//! flat slices. Layers keep `Range`s into the buffer.

use crate::config::{Activation, FfnKind, ModelConfig, QkNorm};
use std::ops::Range;

/// How a tensor is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// all ones (norm weights)
    Ones,
    /// N(0, std²)
    Normal(f32),
    /// all zeros (biases)
    Zeros,
}

/// One named tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    /// stable checkpoint name, e.g. `layers.0.attn.wq.weight`
    pub name: String,
    /// shape, row-major
    pub shape: Vec<usize>,
    /// offset in the flat buffer
    pub offset: usize,
    /// number of elements
    pub len: usize,
    /// AdamW applies weight decay to it
    pub decay: bool,
    /// initialisation
    pub init: Init,
    /// belongs to a routed expert stack (for active-parameter accounting)
    pub routed_expert: bool,
}

impl ParamEntry {
    /// The entry's range in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Ordered list of all parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamTable {
    /// entries in buffer order
    pub entries: Vec<ParamEntry>,
    /// total elements
    pub total: usize,
}

impl ParamTable {
    fn push(&mut self, name: String, shape: &[usize], decay: bool, init: Init) -> Range<usize> {
        let len: usize = shape.iter().product();
        let r = self.total..self.total + len;
        self.entries.push(ParamEntry { name, shape: shape.to_vec(), offset: self.total, len, decay, init, routed_expert: false });
        self.total += len;
        r
    }

    /// Look an entry up by name.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Ranges of one attention block.
#[derive(Clone, Debug)]
pub struct AttnLayout {
    /// `[n_head·d_head, d_model]`
    pub wq: Range<usize>,
    /// `[n_head_kv·d_head, d_model]`
    pub wk: Range<usize>,
    /// `[n_head_kv·d_head, d_model]`
    pub wv: Range<usize>,
    /// `[d_model, n_head·d_head]`
    pub wo: Range<usize>,
    /// q RMSNorm weight: `[d_head]` (per head) or `[n_head·d_head]` (full width); `None` = no q/k norm
    pub q_norm: Option<Range<usize>>,
    /// k RMSNorm weight: `[d_head]` (per head) or `[n_head_kv·d_head]` (full width)
    pub k_norm: Option<Range<usize>>,
    /// q/k/v projection biases `[n_head·d_head]`, `[n_head_kv·d_head]`, `[n_head_kv·d_head]`
    /// (`attn_bias`); `None` = no biases
    pub bias: Option<[Range<usize>; 3]>,
    /// latent-attention weights (`attn_ext.mla`); then `wq`, `wk`, `wv` are empty
    pub mla: Option<MlaLayout>,
    /// per-head sink logits `[n_head]` (`attn_ext.sinks`)
    pub sinks: Option<Range<usize>>,
    /// output projection bias `[d_model]` (`attn_ext.out_bias`)
    pub out_bias: Option<Range<usize>>,
}

/// Ranges of a multi-head latent attention block (`d_qk = d_nope + d_rope`).
#[derive(Clone, Debug)]
pub struct MlaLayout {
    /// `[q_lora_rank, d_model]`, absent without a q latent
    pub wq_a: Option<Range<usize>>,
    /// `[q_lora_rank]`
    pub q_a_norm: Option<Range<usize>>,
    /// `[n_head·d_qk, q_lora_rank]` (or `[n_head·d_qk, d_model]` without a q latent)
    pub wq_b: Range<usize>,
    /// `[kv_lora_rank + d_rope, d_model]`: the latent, then the shared RoPE key
    pub wkv_a: Range<usize>,
    /// `[kv_lora_rank]`
    pub kv_a_norm: Range<usize>,
    /// `[n_head·(d_nope + d_v), kv_lora_rank]`: per head the key part, then the value
    pub wkv_b: Range<usize>,
}

/// Ranges of a dense MLP (also used for shared experts).
#[derive(Clone, Debug)]
pub struct MlpLayout {
    /// `[d_ff, d_model]`, absent for GELU
    pub w_gate: Option<Range<usize>>,
    /// `[d_ff, d_model]`
    pub w_up: Range<usize>,
    /// `[d_model, d_ff]`
    pub w_down: Range<usize>,
    /// hidden width
    pub d_ff: usize,
    /// activation
    pub activation: Activation,
}

/// Ranges of a MoE FFN.
#[derive(Clone, Debug)]
pub struct MoeLayout {
    /// routed experts in this layer
    pub n_expert: usize,
    /// global id of the first expert this process holds (0 unless experts are sharded)
    pub first_expert: usize,
    /// experts this process holds, `first_expert..first_expert + n_local` (`n_expert` unless
    /// sharded); the expert stacks and expert biases below hold these only
    pub n_local: usize,
    /// `[n_expert, d_model]`
    pub router: Range<usize>,
    /// `[n_local, d_expert, d_model]`
    pub w_gate: Range<usize>,
    /// `[n_local, d_expert, d_model]`
    pub w_up: Range<usize>,
    /// `[n_local, d_model, d_expert]`
    pub w_down: Range<usize>,
    /// shared experts as one SwiGLU MLP
    pub shared: Option<MlpLayout>,
    /// `[1, d_model]`: sigmoid gate of the shared experts' output (`shared_gate`)
    pub shared_gate: Option<Range<usize>>,
    /// `[n_expert]` router bias (`moe.ext.router_bias`)
    pub router_bias: Option<Range<usize>>,
    /// `[n_expert]` fixed selection bias (`moe.ext.selection_bias`)
    pub selection_bias: Option<Range<usize>>,
    /// expert biases `[n_local, d_expert]` (gate, up) and `[n_local, d_model]` (down)
    pub expert_bias: Option<[Range<usize>; 3]>,
}

/// FFN slot of one block.
// one per layer, built once per model: the variants' size difference costs nothing
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum FfnLayout {
    /// dense MLP
    Dense(MlpLayout),
    /// mixture of experts
    Moe(MoeLayout),
}

/// Ranges of one block.
#[derive(Clone, Debug)]
pub struct BlockLayout {
    /// `[d_model]`
    pub attn_norm: Range<usize>,
    /// attention weights
    pub attn: AttnLayout,
    /// `[d_model]`
    pub ffn_norm: Range<usize>,
    /// FFN weights
    pub ffn: FfnLayout,
}

/// Ranges of the whole model.
#[derive(Clone, Debug)]
pub struct ModelLayout {
    /// `[n_vocab, d_model]`
    pub tok_embeddings: Range<usize>,
    /// blocks
    pub blocks: Vec<BlockLayout>,
    /// `[d_model]`
    pub norm: Range<usize>,
    /// `[n_vocab, d_model]`; equals `tok_embeddings` when tied
    pub lm_head: Range<usize>,
}

fn mlp_layout(t: &mut ParamTable, prefix: &str, d_model: usize, d_ff: usize, activation: Activation, std: f32, std_out: f32) -> MlpLayout {
    let w_gate = match activation {
        Activation::Swiglu => Some(t.push(format!("{prefix}.w_gate.weight"), &[d_ff, d_model], true, Init::Normal(std))),
        Activation::Gelu => None,
    };
    let w_up = t.push(format!("{prefix}.w_up.weight"), &[d_ff, d_model], true, Init::Normal(std));
    let w_down = t.push(format!("{prefix}.w_down.weight"), &[d_model, d_ff], true, Init::Normal(std_out));
    MlpLayout { w_gate, w_up, w_down, d_ff, activation }
}

/// Build the parameter table and layout of a (validated) config.
pub fn build_layout(cfg: &ModelConfig) -> (ParamTable, ModelLayout) {
    build_layout_sharded(cfg, 0, 1).expect("one shard always divides")
}

/// Like [`build_layout`], for expert-parallel rank `rank` of `size`: every MoE layer's routed
/// experts are split into `size` contiguous ranges of equal length and this layout holds range
/// `rank` (tensors keep their names; the expert stacks are `[n_expert / size, …]`). Everything
/// else is whole. An expert count that `size` does not divide is an error naming the layer.
pub fn build_layout_sharded(cfg: &ModelConfig, rank: usize, size: usize) -> Result<(ParamTable, ModelLayout), String> {
    for (i, kind) in cfg.ffn_kinds().into_iter().enumerate() {
        if let FfnKind::Moe { n_expert } = kind {
            if !n_expert.is_multiple_of(size) {
                return Err(format!(
                    "layer {i} has {n_expert} routed experts, which {size} expert-parallel ranks cannot share equally; use an expert-parallel size that divides every layer's expert count"
                ));
            }
        }
    }
    let mut t = ParamTable::default();
    let d = cfg.d_model;
    let dh = cfg.d_head();
    let std = 0.02f32;
    let std_out = std / (2.0 * cfg.n_layer as f32).sqrt();
    let tok_embeddings = t.push("tok_embeddings.weight".into(), &[cfg.n_vocab, d], false, Init::Normal(std));
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for (i, kind) in cfg.ffn_kinds().into_iter().enumerate() {
        let attn_norm = t.push(format!("layers.{i}.attn_norm.weight"), &[d], false, Init::Ones);
        let ext = cfg.attn_ext.as_ref();
        let mla = ext.and_then(|a| a.mla.as_ref());
        let d_v = cfg.d_head_v();
        let mut attn = match mla {
            None => AttnLayout {
                wq: t.push(format!("layers.{i}.attn.wq.weight"), &[cfg.n_head * dh, d], true, Init::Normal(std)),
                wk: t.push(format!("layers.{i}.attn.wk.weight"), &[cfg.n_head_kv * dh, d], true, Init::Normal(std)),
                wv: t.push(format!("layers.{i}.attn.wv.weight"), &[cfg.n_head_kv * dh, d], true, Init::Normal(std)),
                wo: t.push(format!("layers.{i}.attn.wo.weight"), &[d, cfg.n_head * dh], true, Init::Normal(std_out)),
                q_norm: None,
                k_norm: None,
                bias: None,
                mla: None,
                sinks: None,
                out_bias: None,
            },
            Some(m) => {
                let empty = t.total..t.total;
                let (wq_a, q_a_norm, q_in) = match m.q_lora_rank {
                    Some(r) => (
                        Some(t.push(format!("layers.{i}.attn.wq_a.weight"), &[r, d], true, Init::Normal(std))),
                        Some(t.push(format!("layers.{i}.attn.q_a_norm.weight"), &[r], false, Init::Ones)),
                        r,
                    ),
                    None => (None, None, d),
                };
                let ml = MlaLayout {
                    wq_a,
                    q_a_norm,
                    wq_b: t.push(format!("layers.{i}.attn.wq_b.weight"), &[cfg.n_head * dh, q_in], true, Init::Normal(std)),
                    wkv_a: t.push(format!("layers.{i}.attn.wkv_a.weight"), &[m.kv_lora_rank + m.d_rope, d], true, Init::Normal(std)),
                    kv_a_norm: t.push(format!("layers.{i}.attn.kv_a_norm.weight"), &[m.kv_lora_rank], false, Init::Ones),
                    wkv_b: t.push(
                        format!("layers.{i}.attn.wkv_b.weight"),
                        &[cfg.n_head * (m.d_nope + m.d_v), m.kv_lora_rank],
                        true,
                        Init::Normal(std),
                    ),
                };
                let wo = t.push(format!("layers.{i}.attn.wo.weight"), &[d, cfg.n_head * d_v], true, Init::Normal(std_out));
                AttnLayout {
                    wq: empty.clone(),
                    wk: empty.clone(),
                    wv: empty,
                    wo,
                    q_norm: None,
                    k_norm: None,
                    bias: None,
                    mla: Some(ml),
                    sinks: None,
                    out_bias: None,
                }
            }
        };
        let qk_widths = match cfg.qk_norm {
            QkNorm::None => None,
            QkNorm::Head => Some((dh, dh)),
            QkNorm::Full => Some((cfg.n_head * dh, cfg.n_head_kv * dh)),
        };
        if let Some((wq, wk)) = qk_widths {
            attn.q_norm = Some(t.push(format!("layers.{i}.attn.q_norm.weight"), &[wq], false, Init::Ones));
            attn.k_norm = Some(t.push(format!("layers.{i}.attn.k_norm.weight"), &[wk], false, Init::Ones));
        }
        if cfg.attn_bias {
            attn.bias = Some([
                t.push(format!("layers.{i}.attn.wq.bias"), &[cfg.n_head * dh], false, Init::Zeros),
                t.push(format!("layers.{i}.attn.wk.bias"), &[cfg.n_head_kv * dh], false, Init::Zeros),
                t.push(format!("layers.{i}.attn.wv.bias"), &[cfg.n_head_kv * dh], false, Init::Zeros),
            ]);
        }
        if ext.is_some_and(|a| a.sinks) {
            attn.sinks = Some(t.push(format!("layers.{i}.attn.sinks"), &[cfg.n_head], false, Init::Zeros));
        }
        if ext.is_some_and(|a| a.out_bias) {
            attn.out_bias = Some(t.push(format!("layers.{i}.attn.wo.bias"), &[d], false, Init::Zeros));
        }
        let ffn_norm = t.push(format!("layers.{i}.ffn_norm.weight"), &[d], false, Init::Ones);
        let ffn = match kind {
            FfnKind::Dense => FfnLayout::Dense(mlp_layout(&mut t, &format!("layers.{i}.ffn"), d, cfg.d_ff, cfg.activation, std, std_out)),
            FfnKind::Moe { n_expert } => {
                let m = cfg.moe.as_ref().expect("MoE layer implies a moe config");
                let de = m.d_expert;
                let n_local = n_expert / size;
                let first_global = rank * n_local;
                let router = t.push(format!("layers.{i}.ffn.router.weight"), &[n_expert, d], true, Init::Normal(std));
                let first_expert = t.entries.len();
                let w_gate = t.push(format!("layers.{i}.ffn.experts.w_gate"), &[n_local, de, d], true, Init::Normal(std));
                let w_up = t.push(format!("layers.{i}.ffn.experts.w_up"), &[n_local, de, d], true, Init::Normal(std));
                let w_down = t.push(format!("layers.{i}.ffn.experts.w_down"), &[n_local, d, de], true, Init::Normal(std_out));
                for e in &mut t.entries[first_expert..] {
                    e.routed_expert = true;
                }
                let shared = (m.n_expert_shared > 0)
                    .then(|| mlp_layout(&mut t, &format!("layers.{i}.ffn.shared"), d, m.d_shared(), Activation::Swiglu, std, std_out));
                let shared_gate = (shared.is_some() && m.shared_gate)
                    .then(|| t.push(format!("layers.{i}.ffn.shared_gate.weight"), &[1, d], true, Init::Normal(std)));
                let x = m.ext.clone().unwrap_or_default();
                let router_bias = x.router_bias.then(|| t.push(format!("layers.{i}.ffn.router.bias"), &[n_expert], false, Init::Zeros));
                let selection_bias = x
                    .selection_bias
                    .then(|| t.push(format!("layers.{i}.ffn.router.fixed_selection_bias"), &[n_expert], false, Init::Zeros));
                let expert_bias = x.expert_bias.then(|| {
                    let b = [
                        t.push(format!("layers.{i}.ffn.experts.b_gate"), &[n_local, de], false, Init::Zeros),
                        t.push(format!("layers.{i}.ffn.experts.b_up"), &[n_local, de], false, Init::Zeros),
                        t.push(format!("layers.{i}.ffn.experts.b_down"), &[n_local, d], false, Init::Zeros),
                    ];
                    let n = t.entries.len();
                    t.entries[n - 3..].iter_mut().for_each(|e| e.routed_expert = true);
                    b
                });
                FfnLayout::Moe(MoeLayout {
                    n_expert,
                    first_expert: first_global,
                    n_local,
                    router,
                    w_gate,
                    w_up,
                    w_down,
                    shared,
                    shared_gate,
                    router_bias,
                    selection_bias,
                    expert_bias,
                })
            }
        };
        blocks.push(BlockLayout { attn_norm, attn, ffn_norm, ffn });
    }
    let norm = t.push("norm.weight".into(), &[d], false, Init::Ones);
    let lm_head = if cfg.tie_embeddings {
        tok_embeddings.clone()
    } else {
        t.push("lm_head.weight".into(), &[cfg.n_vocab, d], true, Init::Normal(std))
    };
    Ok((t, ModelLayout { tok_embeddings, blocks, norm, lm_head }))
}

/// The part of `full` (laid out by `full_table`) that expert-parallel rank `rank` of `size` holds,
/// laid out by `local_table` (from [`build_layout_sharded`] with the same `rank` and `size`):
/// routed-expert tensors are cut to the rank's contiguous range of experts, the rest copied.
pub fn shard_params<T: Copy>(full_table: &ParamTable, full: &[T], local_table: &ParamTable, rank: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(local_table.total);
    for e in &local_table.entries {
        let f = full_table.get(&e.name).expect("the sharded table names the full table's tensors");
        let start = if e.routed_expert { f.offset + rank * e.len } else { f.offset };
        out.extend_from_slice(&full[start..start + e.len]);
    }
    out
}

/// The inverse of [`shard_params`]: the full buffer from every rank's shard (`shards[r]` laid
/// out by `tables[r]`).
pub fn unshard_params<T: Copy + Default>(full_table: &ParamTable, tables: &[ParamTable], shards: &[Vec<T>]) -> Vec<T> {
    let mut full = vec![T::default(); full_table.total];
    for (rank, (t, s)) in tables.iter().zip(shards).enumerate() {
        for e in &t.entries {
            if e.routed_expert || rank == 0 {
                let f = full_table.get(&e.name).expect("the sharded table names the full table's tensors");
                let start = if e.routed_expert { f.offset + rank * e.len } else { f.offset };
                full[start..start + e.len].copy_from_slice(&s[e.range()]);
            }
        }
    }
    full
}
