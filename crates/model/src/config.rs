//! Model configuration: the `[model]` table of an experiment TOML (see `docs/model-spec.md`).

use crate::error::{invalid, Error, Result};
use moe_kernels::rope::RopeTable;
use serde::{Deserialize, Serialize};

/// Dense FFN activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `w_down(silu(w_gate x) ⊙ w_up x)`
    Swiglu,
    /// `w_down(gelu_tanh(w_up x))`
    Gelu,
}

/// Per-head or full-width RMSNorm of the query and key projections (before RoPE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QkNorm {
    /// no q/k norm
    #[default]
    None,
    /// RMSNorm over each head's `d_head` values, weight `[d_head]` (Qwen3)
    Head,
    /// RMSNorm over the whole projection: `n_head·d_head` for q, `n_head_kv·d_head` for k (OLMoE)
    Full,
}

impl QkNorm {
    /// `true` for [`QkNorm::None`].
    pub fn is_none(&self) -> bool {
        *self == QkNorm::None
    }
}

/// Router gating function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gating {
    /// probabilities over experts
    Softmax,
    /// independent per-expert scores
    Sigmoid,
}

fn default_theta() -> f64 {
    10000.0
}
fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> Activation {
    Activation::Swiglu
}
fn default_one() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_scale() -> f64 {
    1.0
}
fn default_gating() -> Gating {
    Gating::Softmax
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// Architecture of a decoder-only Transformer whose FFN slot is dense or MoE per layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// vocabulary size
    pub n_vocab: usize,
    /// maximum sequence length
    pub n_ctx: usize,
    /// number of blocks
    pub n_layer: usize,
    /// residual width
    pub d_model: usize,
    /// query heads
    pub n_head: usize,
    /// key/value heads (grouped-query attention)
    pub n_head_kv: usize,
    /// width of one attention head; absent = `d_model / n_head`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_head: Option<usize>,
    /// RMSNorm of q and k after the projections, before RoPE
    #[serde(default, skip_serializing_if = "QkNorm::is_none")]
    pub qk_norm: QkNorm,
    /// biases on the q, k and v projections (`layers.{i}.attn.{wq,wk,wv}.bias`; Qwen2)
    #[serde(default, skip_serializing_if = "is_false")]
    pub attn_bias: bool,
    /// RoPE base
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RoPE frequency scaling (linear, llama3, yarn); absent = plain RoPE. Trainable: the rotation
    /// table changes, the math of the layer does not
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// RMSNorm epsilon
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    /// LM head shares the token embedding
    #[serde(default)]
    pub tie_embeddings: bool,
    /// dense FFN width
    pub d_ff: usize,
    /// dense FFN activation
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// MoE settings; `None` = dense everywhere
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeConfig>,
    /// inference-only attention variants of imported architectures (MLA, sinks, sliding windows,
    /// RoPE scaling); a model with them runs forward and KV-cached decode but not the backward
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_ext: Option<AttnExt>,
}

/// Multi-head latent attention (DeepSeek-V2/V3): q from an optional low-rank path, keys and values
/// expanded from one compressed latent per token plus a shared RoPE key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mla {
    /// rank of the q path (`wq_a [q_lora_rank, d_model]`, norm, `wq_b`); `None` = one `wq`
    #[serde(default)]
    pub q_lora_rank: Option<usize>,
    /// width of the compressed key/value latent
    pub kv_lora_rank: usize,
    /// per-head q/k width without RoPE
    pub d_nope: usize,
    /// per-head q/k width with RoPE (the key part is shared by all heads)
    pub d_rope: usize,
    /// per-head value width
    pub d_v: usize,
    /// epsilon of the q and kv latent RMSNorms
    pub norm_eps: f64,
}

/// RoPE frequency scaling (transformers' `rope_parameters.rope_type`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RopeScaling {
    /// every frequency divided by `factor`
    Linear {
        /// position interpolation factor
        factor: f64,
    },
    /// Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth ramp between
    Llama3 {
        /// interpolation factor of the long wavelengths
        factor: f64,
        /// wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled
        low_freq_factor: f64,
        /// wavelengths below `original_max_position_embeddings / high_freq_factor` are kept
        high_freq_factor: f64,
        /// context of pretraining
        original_max_position_embeddings: usize,
    },
    /// YaRN: ramp between interpolated and extrapolated frequencies; cos/sin times `attention_factor`
    Yarn {
        /// interpolation factor
        factor: f64,
        /// rotations where extrapolation starts
        beta_fast: f64,
        /// rotations where interpolation ends
        beta_slow: f64,
        /// context of pretraining
        original_max_position_embeddings: usize,
        /// floor/ceil the correction range
        truncate: bool,
        /// multiplier of cos and sin (already resolved from `mscale` / `mscale_all_dim`)
        attention_factor: f64,
    },
    /// every frequency divided by its own factor, one per rotated pair (a GGUF file's
    /// `rope_freqs` tensor: llama.cpp's form of Llama 3.1 scaling, whose parameters it does not keep)
    Factors {
        /// divisor of each rotated pair's frequency `[rotary dim / 2]`
        factors: Vec<f64>,
    },
}

/// Inference-only attention options. Absent fields keep the plain attention.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttnExt {
    /// multi-head latent attention instead of `wq`/`wk`/`wv` (needs `n_head_kv = n_head`,
    /// `d_head = d_nope + d_rope`)
    #[serde(default)]
    pub mla: Option<Mla>,
    /// RoPE rotates the pairs `(2i, 2i+1)` instead of `(i, i + d/2)`
    #[serde(default)]
    pub rope_interleave: bool,
    /// attention logit scale; absent = `1/√d_head`
    #[serde(default)]
    pub softmax_scale: Option<f64>,
    /// a learned logit per head that joins every softmax and then is dropped
    /// (`layers.{i}.attn.sinks [n_head]`, GPT-OSS)
    #[serde(default)]
    pub sinks: bool,
    /// bias of the output projection `layers.{i}.attn.wo.bias [d_model]`
    #[serde(default)]
    pub out_bias: bool,
    /// key j is visible to query i when `i − j < sliding_window`, in the layers flagged by
    /// `window_layers` (0 = no window)
    #[serde(default)]
    pub sliding_window: usize,
    /// per layer: the sliding window applies (empty = no layer)
    #[serde(default)]
    pub window_layers: Vec<bool>,
    /// chunked attention (Llama 4): key j is visible to query i only when `j / chunk = i / chunk`,
    /// in the layers flagged by `chunk_layers` (0 = off)
    #[serde(default)]
    pub attention_chunk: usize,
    /// per layer: chunked attention applies (empty = no layer)
    #[serde(default)]
    pub chunk_layers: Vec<bool>,
    /// per layer: RoPE applies (empty = every layer; Llama 4's NoPE layers are `false`)
    #[serde(default)]
    pub rope_layers: Vec<bool>,
    /// weightless RMSNorm ("L2 norm", eps `norm_eps`) of each q and k head after RoPE, in RoPE layers
    #[serde(default)]
    pub qk_l2_norm: bool,
    /// Llama 4 attention temperature in layers without RoPE: q at position p is multiplied by
    /// `1 + attn_scale · ln(1 + floor((p + 1) / floor_scale))`
    #[serde(default)]
    pub temperature: Option<AttnTemperature>,
}

/// Position-dependent query scaling of Llama 4's NoPE layers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttnTemperature {
    /// positions per step of the logarithm
    pub floor_scale: f64,
    /// slope
    pub attn_scale: f64,
}

/// GPT-OSS expert activation: `(clamp(up, ±limit) + 1) · g · σ(alpha · g)`, `g = min(gate, limit)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClampedSwiglu {
    /// sigmoid slope
    pub alpha: f64,
    /// clamp bound
    pub limit: f64,
}

/// Inference-only MoE options of imported architectures. Absent fields keep the plain MoE.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeExt {
    /// group-limited routing (DeepSeek-V3): experts form `n_group` equal groups, the `topk_group`
    /// groups with the largest sum of their two best selection scores are kept, top-k is taken
    /// inside them (0 = off)
    #[serde(default)]
    pub n_group: usize,
    /// groups kept per token
    #[serde(default)]
    pub topk_group: usize,
    /// a fixed per-expert selection bias `layers.{i}.ffn.router.fixed_selection_bias [n_expert]`
    /// (DeepSeek-V3 `e_score_correction_bias`): changes which experts are chosen, never the weights
    #[serde(default)]
    pub selection_bias: bool,
    /// router bias `layers.{i}.ffn.router.bias [n_expert]` (GPT-OSS)
    #[serde(default)]
    pub router_bias: bool,
    /// expert biases `ffn.experts.b_gate`, `b_up [n_expert, d_expert]`, `b_down [n_expert, d_model]`
    #[serde(default)]
    pub expert_bias: bool,
    /// clamped SwiGLU of GPT-OSS instead of SwiGLU in the routed experts
    #[serde(default)]
    pub clamped_swiglu: Option<ClampedSwiglu>,
    /// the combine weight multiplies the expert's input instead of its output (Llama 4)
    #[serde(default)]
    pub scale_input: bool,
}

/// Mixture-of-Experts FFN settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeConfig {
    /// routed experts per MoE layer
    pub n_expert: usize,
    /// experts per token (top-k)
    pub n_expert_active: usize,
    /// width of one routed expert
    pub d_expert: usize,
    /// shared experts applied to every token
    #[serde(default)]
    pub n_expert_shared: usize,
    /// width of one shared expert (default: `d_expert`)
    #[serde(default)]
    pub d_expert_shared: Option<usize>,
    /// multiply the shared experts' output by `sigmoid(h · w)`, `w = layers.{i}.ffn.shared_gate.weight
    /// [1, d_model]` (Qwen2-MoE); needs `n_expert_shared > 0`
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared_gate: bool,
    /// softmax or sigmoid scores
    #[serde(default = "default_gating")]
    pub gating: Gating,
    /// divide the k selected weights by their sum
    #[serde(default = "default_true")]
    pub renormalize: bool,
    /// multiply the combine weights
    #[serde(default = "default_scale")]
    pub route_scale: f64,
    /// 0 = dropless; else expert capacity = ceil(factor · n_tok · k / n_expert)
    #[serde(default)]
    pub capacity_factor: f64,
    /// α of the Switch/GShard load-balancing loss
    #[serde(default)]
    pub aux_loss_coef: f64,
    /// β of the router z-loss
    #[serde(default)]
    pub z_loss_coef: f64,
    /// γ of auxiliary-loss-free balancing (0 = no selection bias)
    #[serde(default)]
    pub bias_update_rate: f64,
    /// layer i is MoE when `i >= first_dense && (i + 1) % every == 0`
    #[serde(default = "default_one")]
    pub every: usize,
    /// number of leading dense layers
    #[serde(default)]
    pub first_dense: usize,
    /// n_expert for each MoE layer in order (pyramid); empty = `n_expert` everywhere
    #[serde(default)]
    pub n_expert_per_layer: Vec<usize>,
    /// inference-only routing and expert variants of imported architectures
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<MoeExt>,
}

impl MoeConfig {
    /// Width of one shared expert.
    pub fn d_shared_one(&self) -> usize {
        self.d_expert_shared.unwrap_or(self.d_expert)
    }
    /// Total width of the shared MLP (0 = none).
    pub fn d_shared(&self) -> usize {
        self.n_expert_shared * self.d_shared_one()
    }
}

/// What the FFN slot of one layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnKind {
    /// dense MLP of width `d_ff`
    Dense,
    /// MoE with this many routed experts
    Moe {
        /// routed experts in this layer
        n_expert: usize,
    },
}

/// See [`ModelConfig::MAX_DIM`].
const MAX_DIM: usize = 1 << 24;

impl ModelConfig {
    /// Parse a `[model]` table given as TOML text (the table's contents, not the whole file).
    pub fn from_toml_value(v: toml::Value) -> Result<Self> {
        let cfg: ModelConfig =
            v.try_into().map_err(|e: toml::de::Error| Error::ConfigParse { path: None, message: format!("[model]: {}", e.message()) })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Width of one attention head (`d_head` when given, else `d_model / n_head`); the q/k width.
    pub fn d_head(&self) -> usize {
        self.d_head.unwrap_or(self.d_model / self.n_head.max(1))
    }

    /// Width of one value head (`mla.d_v` with latent attention, else `d_head`).
    pub fn d_head_v(&self) -> usize {
        match self.attn_ext.as_ref().and_then(|a| a.mla.as_ref()) {
            Some(m) => m.d_v,
            None => self.d_head(),
        }
    }

    /// What a KV cache keeps per layer and token: `(heads, key width, value width)` =
    /// `(n_head_kv, d_head, d_head_v)`, or for latent attention one compressed row
    /// `(1, kv_lora_rank + d_rope, 0)` (the normed latent and the rotated shared RoPE key).
    pub fn kv_cache_shape(&self) -> (usize, usize, usize) {
        match self.attn_ext.as_ref().and_then(|a| a.mla.as_ref()) {
            Some(m) => (1, m.kv_lora_rank + m.d_rope, 0),
            None => (self.n_head_kv, self.d_head(), self.d_head_v()),
        }
    }

    /// Uses options the backward does not implement (forward and decode only).
    pub fn inference_only(&self) -> bool {
        self.attn_ext.is_some() || self.moe.as_ref().is_some_and(|m| m.ext.is_some())
    }

    /// The first inference-only field in use, for error messages.
    pub fn inference_only_field(&self) -> Option<&'static str> {
        if self.attn_ext.is_some() {
            Some("model.attn_ext")
        } else if self.moe.as_ref().is_some_and(|m| m.ext.is_some()) {
            Some("model.moe.ext")
        } else {
            None
        }
    }

    /// The FFN kind of every layer.
    pub fn ffn_kinds(&self) -> Vec<FfnKind> {
        let mut out = Vec::with_capacity(self.n_layer);
        let mut moe_idx = 0;
        for i in 0..self.n_layer {
            match &self.moe {
                Some(m) if i >= m.first_dense && (i + 1) % m.every.max(1) == 0 => {
                    let n_expert = m.n_expert_per_layer.get(moe_idx).copied().unwrap_or(m.n_expert);
                    moe_idx += 1;
                    out.push(FfnKind::Moe { n_expert });
                }
                _ => out.push(FfnKind::Dense),
            }
        }
        out
    }

    /// Number of MoE layers.
    pub fn n_moe_layers(&self) -> usize {
        self.ffn_kinds().iter().filter(|k| matches!(k, FfnKind::Moe { .. })).count()
    }

    /// The largest value any one dimension (`n_vocab`, `n_ctx`, `d_model`, …) may have: products of
    /// a few of them stay far inside `usize`.
    pub const MAX_DIM: usize = MAX_DIM;

    /// Check every invariant; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let pos = |field: &str, v: usize| if v == 0 { Err(invalid(field, "must be > 0")) } else { Ok(()) };
        pos("model.n_vocab", self.n_vocab)?;
        pos("model.n_ctx", self.n_ctx)?;
        pos("model.n_layer", self.n_layer)?;
        pos("model.d_model", self.d_model)?;
        pos("model.n_head", self.n_head)?;
        pos("model.n_head_kv", self.n_head_kv)?;
        // sizes that no real checkpoint reaches: products of them stay far inside usize, and a
        // mutated or hostile config is refused before anything is allocated from it
        let mut dims = vec![
            ("model.n_vocab", self.n_vocab),
            ("model.n_ctx", self.n_ctx),
            ("model.n_layer", self.n_layer),
            ("model.d_model", self.d_model),
            ("model.n_head", self.n_head),
            ("model.n_head_kv", self.n_head_kv),
            ("model.d_ff", self.d_ff),
        ];
        dims.extend(self.d_head.map(|d| ("model.d_head", d)));
        if let Some(m) = &self.moe {
            dims.extend([
                ("model.moe.n_expert", m.n_expert),
                ("model.moe.d_expert", m.d_expert),
                ("model.moe.n_expert_shared", m.n_expert_shared),
                ("model.moe.d_expert_shared", m.d_expert_shared.unwrap_or(0)),
            ]);
            dims.extend(m.n_expert_per_layer.iter().map(|&n| ("model.moe.n_expert_per_layer", n)));
        }
        for (field, v) in dims {
            if v > MAX_DIM {
                return Err(invalid(field, format!("{v} is larger than the supported maximum {MAX_DIM}")));
            }
        }
        if self.n_layer > 4096 {
            return Err(invalid("model.n_layer", format!("{} is larger than the supported maximum 4096", self.n_layer)));
        }
        // a generous bound on the parameter count in u128, so the layout's usize products cannot overflow
        {
            let (d, l) = (self.d_model as u128, self.n_layer as u128);
            let dh = self.d_head.unwrap_or(1).max(self.d_model / self.n_head.max(1)) as u128;
            let attn = 4 * d * dh * self.n_head.max(self.n_head_kv) as u128;
            let ffn = match &self.moe {
                None => 3 * d * self.d_ff as u128,
                Some(m) => {
                    let e = m.n_expert_per_layer.iter().copied().chain([m.n_expert]).max().unwrap_or(0) as u128;
                    3 * d
                        * (self.d_ff as u128
                            + e * m.d_expert as u128
                            + (m.n_expert_shared as u128 + 1) * (m.d_expert as u128).max(m.d_expert_shared.unwrap_or(0) as u128))
                        + e * d
                }
            };
            let total = l * (attn + ffn + 4 * d) + 2 * self.n_vocab as u128 * d;
            if total > 1u128 << 42 {
                return Err(invalid("model", format!("about {total} parameters: more than the supported 2^42")));
            }
        }
        // the RoPE table holds cos and sin (f64 at most) of its first positions only (later ones are
        // computed on use), so n_ctx does not size it; a huge d_head still could
        let d_head = self.d_head.unwrap_or(self.d_model / self.n_head);
        let rope_pos = self.n_ctx.min(RopeTable::<f64>::CACHED_POSITIONS);
        let rope_bytes = rope_pos as u128 * d_head as u128 * 8;
        if rope_bytes > 8u128 << 30 {
            return Err(invalid(
                "model.d_head",
                format!("d_head {d_head} × {rope_pos} cached positions needs a {} MiB RoPE table (at most 8 GiB)", rope_bytes >> 20),
            ));
        }
        if let Some(dh) = self.d_head {
            pos("model.d_head", dh)?;
        } else if !self.d_model.is_multiple_of(self.n_head) {
            return Err(invalid("model.n_head", format!("d_model {} is not divisible by n_head {}", self.d_model, self.n_head)));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(invalid("model.n_head_kv", format!("n_head {} is not divisible by n_head_kv {}", self.n_head, self.n_head_kv)));
        }
        if !self.d_head().is_multiple_of(2) {
            let field = if self.d_head.is_some() { "model.d_head" } else { "model.n_head" };
            return Err(invalid(field, format!("d_head = {} must be even for RoPE", self.d_head())));
        }
        if let Some(a) = &self.attn_ext {
            if let Some(m) = &a.mla {
                if self.n_head_kv != self.n_head || self.d_head() != m.d_nope + m.d_rope {
                    return Err(invalid(
                        "model.attn_ext.mla",
                        format!("needs n_head_kv = n_head and d_head = d_nope + d_rope = {}", m.d_nope + m.d_rope),
                    ));
                }
                if m.d_rope % 2 != 0 || m.kv_lora_rank == 0 || m.d_v == 0 || m.q_lora_rank == Some(0) {
                    return Err(invalid("model.attn_ext.mla", "d_rope must be even; ranks and d_v must be > 0"));
                }
            }
            for (field, v) in [("window_layers", &a.window_layers), ("chunk_layers", &a.chunk_layers), ("rope_layers", &a.rope_layers)] {
                if !v.is_empty() && v.len() != self.n_layer {
                    return Err(invalid(
                        &format!("model.attn_ext.{field}"),
                        format!("has {} entries for {} layers", v.len(), self.n_layer),
                    ));
                }
            }
            if a.temperature.is_some_and(|t| !(t.floor_scale > 0.0)) {
                return Err(invalid("model.attn_ext.temperature.floor_scale", "must be > 0"));
            }
        }
        if let Some(r) = &self.rope_scaling {
            let (factor, ok) = match r {
                RopeScaling::Linear { factor } => (*factor, true),
                RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                    (*factor, high_freq_factor >= low_freq_factor && *low_freq_factor > 0.0 && *original_max_position_embeddings > 0)
                }
                RopeScaling::Yarn { factor, beta_fast, beta_slow, original_max_position_embeddings, attention_factor, .. } => {
                    (*factor, *beta_fast > 0.0 && *beta_slow > 0.0 && *original_max_position_embeddings > 0 && attention_factor.is_finite())
                }
                RopeScaling::Factors { factors } => {
                    let rotated = self.attn_ext.as_ref().and_then(|a| a.mla.as_ref()).map_or(self.d_head(), |m| m.d_rope);
                    if factors.len() != rotated / 2 {
                        return Err(invalid(
                            "model.rope_scaling.factors",
                            format!("has {} entries; the {rotated} rotated values of a head make {} pairs", factors.len(), rotated / 2),
                        ));
                    }
                    (1.0, factors.iter().all(|f| f.is_finite() && *f > 0.0))
                }
            };
            if !(factor > 0.0) || !ok {
                return Err(invalid("model.rope_scaling", format!("{r:?} has a factor ≤ 0 or inconsistent parameters")));
            }
        }
        if !(self.rope_theta > 0.0) {
            return Err(invalid("model.rope_theta", "must be > 0"));
        }
        if !(self.norm_eps > 0.0) {
            return Err(invalid("model.norm_eps", "must be > 0"));
        }
        let any_dense = self.ffn_kinds().contains(&FfnKind::Dense);
        if any_dense {
            pos("model.d_ff", self.d_ff)?;
        }
        if let Some(m) = &self.moe {
            pos("model.moe.n_expert", m.n_expert)?;
            pos("model.moe.n_expert_active", m.n_expert_active)?;
            pos("model.moe.d_expert", m.d_expert)?;
            pos("model.moe.every", m.every)?;
            let kinds = self.ffn_kinds();
            let n_moe = kinds.iter().filter(|k| matches!(k, FfnKind::Moe { .. })).count();
            if n_moe == 0 {
                return Err(invalid(
                    "model.moe.every",
                    format!("no layer is MoE with n_layer {}, every {}, first_dense {}", self.n_layer, m.every, m.first_dense),
                ));
            }
            if !m.n_expert_per_layer.is_empty() && m.n_expert_per_layer.len() != n_moe {
                return Err(invalid(
                    "model.moe.n_expert_per_layer",
                    format!("has {} entries but the model has {} MoE layers", m.n_expert_per_layer.len(), n_moe),
                ));
            }
            for k in kinds {
                if let FfnKind::Moe { n_expert } = k {
                    if n_expert == 0 {
                        return Err(invalid("model.moe.n_expert_per_layer", "entries must be > 0"));
                    }
                    if m.n_expert_active > n_expert {
                        return Err(invalid(
                            "model.moe.n_expert_active",
                            format!("top-k {} is larger than n_expert {}", m.n_expert_active, n_expert),
                        ));
                    }
                }
            }
            if m.shared_gate && m.n_expert_shared == 0 {
                return Err(invalid("model.moe.shared_gate", "needs shared experts (n_expert_shared > 0)"));
            }
            if m.n_expert_shared > 0 && m.d_shared_one() == 0 {
                return Err(invalid("model.moe.d_expert_shared", "must be > 0"));
            }
            if m.capacity_factor < 0.0 || !m.capacity_factor.is_finite() {
                return Err(invalid("model.moe.capacity_factor", "must be ≥ 0 (0 = dropless)"));
            }
            if let Some(x) = &m.ext {
                if x.selection_bias && m.bias_update_rate > 0.0 {
                    return Err(invalid(
                        "model.moe.ext.selection_bias",
                        "a fixed selection bias excludes aux-loss-free balancing (bias_update_rate > 0)",
                    ));
                }
                if x.n_group > 0 {
                    // every MoE layer (a pyramid has several expert counts), not only the smallest
                    for (layer, k) in self.ffn_kinds().iter().enumerate() {
                        let FfnKind::Moe { n_expert } = *k else { continue };
                        if n_expert % x.n_group != 0 || x.topk_group == 0 || x.topk_group > x.n_group {
                            return Err(invalid(
                                "model.moe.ext.n_group",
                                format!(
                                    "n_group {} must divide n_expert {n_expert} of layer {layer} and 1 ≤ topk_group {} ≤ n_group",
                                    x.n_group, x.topk_group
                                ),
                            ));
                        }
                        if x.topk_group * (n_expert / x.n_group) < m.n_expert_active {
                            return Err(invalid(
                                "model.moe.ext.topk_group",
                                format!(
                                    "layer {layer}: {} groups of {} experts hold fewer than top-k {}",
                                    x.topk_group,
                                    n_expert / x.n_group,
                                    m.n_expert_active
                                ),
                            ));
                        }
                    }
                }
            }
            for (f, v) in [
                ("aux_loss_coef", m.aux_loss_coef),
                ("z_loss_coef", m.z_loss_coef),
                ("bias_update_rate", m.bias_update_rate),
                ("route_scale", m.route_scale),
            ] {
                if v < 0.0 || !v.is_finite() {
                    return Err(invalid(&format!("model.moe.{f}"), "must be a finite number ≥ 0"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ModelConfig> {
        let v: toml::Value = toml::from_str(s).map_err(|e| Error::ConfigParse { path: None, message: e.to_string() })?;
        ModelConfig::from_toml_value(v)
    }

    const BASE: &str = "n_vocab = 64\nn_ctx = 16\nn_layer = 4\nd_model = 32\nn_head = 4\nn_head_kv = 2\nd_ff = 64\n";

    #[test]
    fn config_placement_every_other_layer() {
        let c = parse(&format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 16\nevery = 2\n")).unwrap();
        assert_eq!(c.ffn_kinds(), vec![FfnKind::Dense, FfnKind::Moe { n_expert: 4 }, FfnKind::Dense, FfnKind::Moe { n_expert: 4 }]);
    }

    #[test]
    fn config_placement_first_dense_and_pyramid() {
        let c = parse(&format!(
            "{BASE}[moe]\nn_expert = 4\nn_expert_active = 1\nd_expert = 16\nfirst_dense = 1\nn_expert_per_layer = [2, 4, 8]\n"
        ))
        .unwrap();
        assert_eq!(
            c.ffn_kinds(),
            vec![FfnKind::Dense, FfnKind::Moe { n_expert: 2 }, FfnKind::Moe { n_expert: 4 }, FfnKind::Moe { n_expert: 8 }]
        );
    }

    /// A huge context costs no RoPE memory up front: the table precomputes its first positions only
    /// and the model runs; a context beyond the supported maximum is a clean error naming the field.
    #[test]
    fn huge_n_ctx_builds_no_full_rope_table_or_is_refused_cleanly() {
        let ctx = |n: usize| parse(&BASE.replace("n_ctx = 16", &format!("n_ctx = {n}")));
        let e = ctx(1 << 30).unwrap_err().to_string();
        assert!(e.contains("model.n_ctx") && e.contains(&(1usize << 30).to_string()), "{e}");
        // the largest accepted context: 2^24 positions (a full f64 table would be 4 GiB)
        let m = crate::Transformer::<f64>::new(ctx(ModelConfig::MAX_DIM).unwrap(), 1).unwrap();
        assert_eq!(m.rope.n_pos(), ModelConfig::MAX_DIM);
        assert_eq!(m.rope.cached_positions(), RopeTable::<f64>::CACHED_POSITIONS);
        let out = m.forward(&[1, 2, 3, 4], 1, 4).unwrap();
        assert!(out.logits.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn config_n_group_is_checked_against_every_pyramid_layer() {
        let pyramid = |n: &str| {
            parse(&format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 16\nfirst_dense = 1\nn_expert_per_layer = {n}\n[moe.ext]\nn_group = 4\ntopk_group = 2\n"))
        };
        pyramid("[4, 8, 16]").unwrap();
        // the smallest layer (4) divides into 4 groups; layer 2's 6 experts do not
        let e = pyramid("[4, 6, 8]").unwrap_err().to_string();
        assert!(e.contains("model.moe.ext.n_group") && e.contains("n_expert 6 of layer 2"), "{e}");
    }

    #[test]
    fn config_with_rope_scaling_and_inference_only_options_round_trips_through_toml() {
        let text = format!(
            "{BASE}[rope_scaling]\ntype = \"yarn\"\nfactor = 4.0\nbeta_fast = 32.0\nbeta_slow = 1.0\n\
             original_max_position_embeddings = 8\ntruncate = false\nattention_factor = 1.1\n\
             [attn_ext]\nsinks = true\nsliding_window = 4\nwindow_layers = [true, false, true, false]\n\
             [moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 16\n[moe.ext]\nrouter_bias = true\n"
        );
        let c = parse(&text).unwrap();
        assert!(c.inference_only() && c.rope_scaling.is_some());
        let back: toml::Value = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(ModelConfig::from_toml_value(back).unwrap(), c);
        let e = parse(&text.replace("factor = 4.0", "factor = -1.0")).unwrap_err().to_string();
        assert!(e.contains("model.rope_scaling"), "{e}");
    }

    #[test]
    fn rope_factors_need_one_positive_factor_per_rotated_pair() {
        // d_head 8: 4 pairs
        let text = format!("{BASE}[rope_scaling]\ntype = \"factors\"\nfactors = [1.0, 1.5, 3.0, 4.0]\n");
        let c = parse(&text).unwrap();
        let back: toml::Value = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(ModelConfig::from_toml_value(back).unwrap(), c);
        let e = parse(&text.replace("3.0, 4.0]", "3.0]")).unwrap_err().to_string();
        assert!(e.contains("model.rope_scaling.factors") && e.contains("4 pairs"), "{e}");
        let e = parse(&text.replace("3.0", "0.0")).unwrap_err().to_string();
        assert!(e.contains("model.rope_scaling"), "{e}");
    }

    #[test]
    fn config_unknown_key_is_rejected_with_its_name() {
        let e = parse(&format!("{BASE}d_modle = 3\n")).unwrap_err().to_string();
        assert!(e.contains("d_modle"), "{e}");
    }

    #[test]
    fn config_impossible_shapes_name_the_field() {
        let e = parse(&BASE.replace("n_head = 4", "n_head = 5")).unwrap_err().to_string();
        assert!(e.contains("model.n_head") && e.contains("divisible"), "{e}");
        let e = parse(&format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 5\nd_expert = 16\n")).unwrap_err().to_string();
        assert!(e.contains("model.moe.n_expert_active") && e.contains("larger"), "{e}");
        let e = parse(&format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 1\nd_expert = 16\nn_expert_per_layer = [2]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_expert_per_layer"), "{e}");
        let e = parse(&BASE.replace("n_head_kv = 2", "n_head_kv = 3")).unwrap_err().to_string();
        assert!(e.contains("model.n_head_kv"), "{e}");
    }
}
