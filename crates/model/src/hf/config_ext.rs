//! `config.json` of the inference-only architectures (DeepSeek-V3, GPT-OSS, Llama 4) → [`ModelConfig`] with
//! `attn_ext` / `moe.ext`, and RoPE scaling (`rope_parameters` / `rope_scaling`) for every family.
//! Errors name the file and the field, as in `config.rs` (both through [`super::fields`]).

use super::fields::{context_len, moe_cfg, Family, Fields, HfOptions};
use crate::config::{Activation, AttnExt, AttnTemperature, ClampedSwiglu, Gating, Mla, ModelConfig, MoeExt, QkNorm, RopeScaling};
use crate::error::Result;
use serde_json::{Map, Value};

/// RoPE settings of a config.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RopeSpec {
    /// base
    pub theta: f64,
    /// frequency scaling (`None` = default RoPE)
    pub scaling: Option<RopeScaling>,
    /// DeepSeek's softmax-scale multiplier `mscale(factor, mscale_all_dim)²` (1 otherwise)
    pub softmax_mscale: f64,
}

fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// RoPE base and scaling from `rope_theta`, `rope_scaling` (transformers 4) and `rope_parameters`
/// (transformers 5), the latter taking precedence key by key.
pub(crate) fn rope_spec(f: &Fields<'_>, max_pos: usize) -> Result<RopeSpec> {
    let mut theta = f.f64_or("rope_theta", 10000.0)?;
    let mut keys: Map<String, Value> = Map::new();
    let mut origin: Map<String, Value> = Map::new(); // key → field it came from (for errors)
    for field in ["rope_scaling", "rope_parameters"] {
        let Some(v) = f.get(field) else { continue };
        let o = v.as_object().ok_or_else(|| f.err(field, format!("expected an object, got {v}")))?;
        for (k, val) in o {
            if !val.is_null() {
                keys.insert(k.clone(), val.clone());
                origin.insert(k.clone(), Value::String(field.to_string()));
            }
        }
    }
    let name = |k: &str| format!("{}.{k}", origin.get(k).and_then(|v| v.as_str()).unwrap_or("rope_parameters"));
    let num = |k: &str| -> Result<Option<f64>> {
        match keys.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| f.err(&name(k), format!("expected a number, got {v}"))),
        }
    };
    if let Some(t) = num("rope_theta")? {
        theta = t;
    }
    if !(theta > 0.0) {
        return Err(f.err("rope_theta", "must be > 0"));
    }
    let ty_key = if keys.contains_key("rope_type") { "rope_type" } else { "type" };
    let ty = match keys.get(ty_key) {
        None => "default".to_string(),
        Some(v) => v.as_str().ok_or_else(|| f.err(&name(ty_key), format!("expected a string, got {v}")))?.to_string(),
    };
    let allowed: &[&str] = match ty.as_str() {
        "default" => &[],
        "linear" => &["factor"],
        "llama3" => &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
        "yarn" => &[
            "factor",
            "beta_fast",
            "beta_slow",
            "original_max_position_embeddings",
            "truncate",
            "attention_factor",
            "mscale",
            "mscale_all_dim",
        ],
        other => return Err(f.err(&name(ty_key), format!("RoPE type `{other}` is not supported (default, linear, llama3, yarn)"))),
    };
    for (k, v) in &keys {
        let ok = matches!(k.as_str(), "rope_type" | "type" | "rope_theta")
            || allowed.contains(&k.as_str())
            || (k == "partial_rotary_factor" && v.as_f64() == Some(1.0))
            || (ty == "default" && k == "factor" && v.as_f64() == Some(1.0));
        if !ok {
            return Err(f.err(&name(k), format!("{v} is not supported with RoPE type `{ty}`")));
        }
    }
    if let Some(v) = f.get("partial_rotary_factor") {
        if v.as_f64() != Some(1.0) {
            return Err(f.err("partial_rotary_factor", format!("{v} is not supported (only full rotary)")));
        }
    }
    let need = |k: &str| -> Result<f64> { num(k)?.ok_or_else(|| f.err(&name(k), format!("is missing (needed by RoPE type `{ty}`)"))) };
    let orig = |k: &str| -> Result<usize> {
        let v = need(k)?;
        if v >= 1.0 && v.fract() == 0.0 {
            Ok(v as usize)
        } else {
            Err(f.err(&name(k), format!("expected a positive integer, got {v}")))
        }
    };
    let mut softmax_mscale = 1.0;
    let scaling = match ty.as_str() {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: need("factor")? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position_embeddings: orig("original_max_position_embeddings")?,
        }),
        _ => {
            let original = orig("original_max_position_embeddings")?;
            let factor = num("factor")?.unwrap_or(max_pos as f64 / original as f64);
            let (mscale, mscale_all) = (num("mscale")?.unwrap_or(0.0), num("mscale_all_dim")?.unwrap_or(0.0));
            let attention_factor = match num("attention_factor")? {
                Some(a) => a,
                None if mscale != 0.0 && mscale_all != 0.0 => yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all),
                None => yarn_mscale(factor, 1.0),
            };
            if mscale_all != 0.0 {
                softmax_mscale = yarn_mscale(factor, mscale_all).powi(2);
            }
            let truncate = match keys.get("truncate") {
                None => true,
                Some(v) => v.as_bool().ok_or_else(|| f.err(&name("truncate"), format!("expected true or false, got {v}")))?,
            };
            Some(RopeScaling::Yarn {
                factor,
                beta_fast: num("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0),
                beta_slow: num("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
                original_max_position_embeddings: original,
                truncate,
                attention_factor,
            })
        }
    };
    Ok(RopeSpec { theta, scaling, softmax_mscale })
}

fn check_common(f: &Fields<'_>) -> Result<()> {
    if let Some(act) = f.str_opt("hidden_act")? {
        if act != "silu" {
            return Err(f.err("hidden_act", format!("`{act}` is not supported (only silu)")));
        }
    }
    for field in ["attn_logit_softcapping", "final_logit_softcapping", "logit_scale", "clip_qkv"] {
        if f.get(field).is_some() {
            return Err(f.err(field, "is not supported"));
        }
    }
    check_quantization(f)
}

/// Quantized checkpoints (FP8 blocks with scales, MXFP4, GPTQ, …) are an error naming the method.
pub(crate) fn check_quantization(f: &Fields<'_>) -> Result<()> {
    match f.get("quantization_config") {
        None => Ok(()),
        Some(q) => {
            let method = q.get("quant_method").and_then(|m| m.as_str()).unwrap_or("unknown");
            Err(f.err("quantization_config", format!("quantized weights (`{method}`) are not supported; use a bf16/f16/f32 checkpoint")))
        }
    }
}

/// Our `(every, first_dense)` placing MoE layers exactly where `want` says.
fn placement(want: &[bool]) -> Option<(usize, usize)> {
    let n = want.len();
    (1..=n.max(1))
        .flat_map(|every| (0..n).map(move |fd| (every, fd)))
        .find(|&(every, fd)| (0..n).all(|i| want[i] == (i >= fd && (i + 1) % every == 0)))
}

/// A list of layer flags given as 0/1 numbers or booleans.
fn flags(f: &Fields<'_>, field: &str, n_layer: usize) -> Result<Option<Vec<bool>>> {
    match f.get(field) {
        None => Ok(None),
        Some(Value::Array(a)) if a.is_empty() => Ok(None),
        Some(Value::Array(a)) => {
            let v: Vec<bool> = a
                .iter()
                .map(|x| {
                    x.as_bool()
                        .or_else(|| x.as_u64().map(|u| u != 0))
                        .ok_or_else(|| f.err(field, format!("entries must be 0/1 or booleans, got {x}")))
                })
                .collect::<Result<_>>()?;
            if v.len() != n_layer {
                return Err(f.err(field, format!("has {} entries for {n_layer} layers", v.len())));
            }
            Ok(Some(v))
        }
        Some(v) => Err(f.err(field, format!("expected a list, got {v}"))),
    }
}

/// DeepSeek-V3, GPT-OSS or Llama 4 `config.json` → our config.
pub(crate) fn parse(f: &Fields<'_>, family: Family, opts: &HfOptions) -> Result<ModelConfig> {
    check_common(f)?;
    let d_model = f.usize("hidden_size")?;
    let n_head = f.usize("num_attention_heads")?;
    if n_head == 0 {
        return Err(f.err("num_attention_heads", "must be > 0"));
    }
    let n_layer = f.usize("num_hidden_layers")?;
    let (max_pos, n_ctx) = context_len(f, opts)?;
    let rope = rope_spec(f, max_pos)?;
    let n_expert = match (f.usize_opt("n_routed_experts")?, f.usize_opt("num_local_experts")?) {
        (Some(a), Some(b)) if a != b => return Err(f.err("n_routed_experts", format!("{a} disagrees with num_local_experts {b}"))),
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err(f.err("num_local_experts", "is missing")),
    };
    let k = f.usize("num_experts_per_tok")?;
    let mut cfg = ModelConfig {
        n_vocab: f.usize("vocab_size")?,
        n_ctx,
        n_layer,
        d_model,
        n_head,
        n_head_kv: n_head,
        d_head: None,
        qk_norm: QkNorm::None,
        attn_bias: false,
        rope_theta: rope.theta,
        norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        tie_embeddings: f.bool_or("tie_word_embeddings", false)?,
        d_ff: 0,
        activation: Activation::Swiglu,
        moe: None,
        attn_ext: None,
        rope_scaling: None,
    };
    cfg.rope_scaling = rope.scaling.clone();
    let mut ext = AttnExt::default();
    match family {
        Family::DeepseekV3 => {
            f.must_be_off("attention_bias", "DeepSeek-V3 without projection biases")?;
            if let Some(kv) = f.usize_opt("num_key_value_heads")? {
                if kv != n_head {
                    return Err(f.err(
                        "num_key_value_heads",
                        format!("{kv} ≠ num_attention_heads {n_head}: latent attention expands keys to every head"),
                    ));
                }
            }
            let mla = Mla {
                q_lora_rank: f.usize_opt("q_lora_rank")?,
                kv_lora_rank: f.usize("kv_lora_rank")?,
                d_nope: f.usize("qk_nope_head_dim")?,
                d_rope: f.usize("qk_rope_head_dim")?,
                d_v: f.usize("v_head_dim")?,
                norm_eps: 1e-6, // transformers builds q_a_layernorm / kv_a_layernorm with the default eps
            };
            let d_qk = mla.d_nope + mla.d_rope;
            cfg.d_head = Some(d_qk);
            ext.softmax_scale = Some(rope.softmax_mscale / (d_qk as f64).sqrt());
            ext.rope_interleave = f.bool_or("rope_interleave", true)?;
            ext.mla = Some(mla);
            let d_expert = f.usize("moe_intermediate_size")?;
            let mut m = moe_cfg(n_expert, k, d_expert, f.bool_or("norm_topk_prob", true)?);
            m.gating = Gating::Sigmoid;
            m.route_scale = f.f64_or("routed_scaling_factor", 1.0)?;
            m.first_dense = f.usize_opt("first_k_dense_replace")?.unwrap_or(0);
            let n_shared = f.usize_opt("n_shared_experts")?.unwrap_or(0);
            if n_shared > 0 {
                m.n_expert_shared = n_shared;
                m.d_expert_shared = Some(d_expert);
            }
            let n_group = f.usize_opt("n_group")?.unwrap_or(1);
            let topk_group = f.usize_opt("topk_group")?.unwrap_or(1);
            if n_group == 0 || n_expert % n_group != 0 {
                return Err(f.err("n_group", format!("{n_group} must divide n_routed_experts {n_expert}")));
            }
            if n_group > 1 && (n_expert / n_group < 2 || topk_group == 0 || topk_group > n_group) {
                return Err(f.err("topk_group", format!("needs 1 ≤ topk_group ≤ n_group {n_group} and groups of ≥ 2 experts")));
            }
            m.ext = Some(MoeExt { n_group: if n_group > 1 { n_group } else { 0 }, topk_group, selection_bias: true, ..MoeExt::default() });
            if m.first_dense > 0 {
                cfg.d_ff = f.usize("intermediate_size")?;
            }
            if m.first_dense >= n_layer {
                cfg.moe = None; // every layer dense
            } else {
                cfg.moe = Some(m);
            }
        }
        Family::GptOss => {
            let bias = f.bool_or("attention_bias", true)?;
            cfg.n_head_kv = f.usize_opt("num_key_value_heads")?.unwrap_or(n_head);
            if let Some(h) = f.usize_opt("head_dim")? {
                cfg.d_head = Some(h);
            }
            cfg.attn_bias = bias;
            ext.out_bias = bias;
            ext.sinks = true;
            let layer_types: Vec<String> = match f.get("layer_types") {
                None => (0..n_layer).map(|i| if i % 2 == 0 { "sliding_attention" } else { "full_attention" }.to_string()).collect(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| f.err("layer_types", "entries must be strings")))
                    .collect::<Result<_>>()?,
                Some(v) => return Err(f.err("layer_types", format!("expected a list, got {v}"))),
            };
            if layer_types.len() != n_layer {
                return Err(f.err("layer_types", format!("has {} entries for {n_layer} layers", layer_types.len())));
            }
            ext.window_layers = layer_types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(f.err("layer_types", format!("`{other}` is not supported (sliding_attention, full_attention)"))),
                })
                .collect::<Result<_>>()?;
            if ext.window_layers.iter().any(|&w| w) {
                ext.sliding_window = f.usize("sliding_window")?;
                if ext.sliding_window == 0 {
                    return Err(f.err("sliding_window", "must be > 0"));
                }
            }
            let mut m = moe_cfg(n_expert, k, f.usize("intermediate_size")?, true);
            m.ext = Some(MoeExt {
                router_bias: true,
                expert_bias: true,
                clamped_swiglu: Some(ClampedSwiglu { alpha: f.f64_or("swiglu_alpha", 1.702)?, limit: f.f64_or("swiglu_limit", 7.0)? }),
                ..MoeExt::default()
            });
            cfg.moe = Some(m);
        }
        Family::Llama4 => {
            cfg.n_head_kv = f.usize_opt("num_key_value_heads")?.unwrap_or(n_head);
            if let Some(h) = f.usize_opt("head_dim")? {
                cfg.d_head = Some(h);
            }
            let bias = f.bool_or("attention_bias", false)?;
            cfg.attn_bias = bias;
            ext.out_bias = bias;
            ext.rope_interleave = true; // complex multiplication over (2i, 2i+1)
                                        // `no_rope_layers[i]` = 1 means layer i *uses* RoPE (transformers' naming)
            let interval = f.usize_opt("no_rope_layer_interval")?.unwrap_or(4).max(1);
            let rope_layers =
                flags(f, "no_rope_layers", n_layer)?.unwrap_or_else(|| (0..n_layer).map(|i| (i + 1) % interval != 0).collect());
            let layer_types: Vec<String> = match f.get("layer_types") {
                None => rope_layers.iter().map(|&r| if r { "chunked_attention" } else { "full_attention" }.to_string()).collect(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| f.err("layer_types", "entries must be strings")))
                    .collect::<Result<_>>()?,
                Some(v) => return Err(f.err("layer_types", format!("expected a list, got {v}"))),
            };
            if layer_types.len() != n_layer {
                return Err(f.err("layer_types", format!("has {} entries for {n_layer} layers", layer_types.len())));
            }
            ext.chunk_layers = layer_types
                .iter()
                .map(|t| match t.as_str() {
                    "chunked_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(f.err("layer_types", format!("`{other}` is not supported (chunked_attention, full_attention)"))),
                })
                .collect::<Result<_>>()?;
            ext.attention_chunk = f.usize_opt("attention_chunk_size")?.unwrap_or(0);
            if ext.attention_chunk == 0 {
                ext.chunk_layers.clear();
            }
            ext.rope_layers = rope_layers;
            ext.qk_l2_norm = f.bool_or("use_qk_norm", true)?;
            // a flag; transformers 4 configs wrote a number there (used only for its truth value)
            let tuning = match f.get("attn_temperature_tuning") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(Value::Number(n)) => n.as_f64() != Some(0.0),
                Some(v) => return Err(f.err("attn_temperature_tuning", format!("expected true/false, got {v}"))),
            };
            if tuning {
                ext.temperature =
                    Some(AttnTemperature { floor_scale: f.f64_or("floor_scale", 8192.0)?, attn_scale: f.f64_or("attn_scale", 0.1)? });
            }
            let d_expert = f.usize("intermediate_size")?;
            let mut m = moe_cfg(n_expert, f.usize_opt("num_experts_per_tok")?.unwrap_or(1), d_expert, false);
            m.gating = Gating::Sigmoid;
            m.n_expert_shared = 1;
            m.d_expert_shared = Some(d_expert);
            m.ext = Some(MoeExt { scale_input: true, ..MoeExt::default() });
            let want: Vec<bool> = match f.get("moe_layers") {
                Some(Value::Array(a)) => {
                    let l: Vec<usize> = a
                        .iter()
                        .map(|x| x.as_u64().map(|v| v as usize).ok_or_else(|| f.err("moe_layers", "entries must be integers")))
                        .collect::<Result<_>>()?;
                    (0..n_layer).map(|i| l.contains(&i)).collect()
                }
                Some(v) => return Err(f.err("moe_layers", format!("expected a list, got {v}"))),
                None => {
                    let step = f.usize_opt("interleave_moe_layer_step")?.unwrap_or(1).max(1);
                    (0..n_layer).map(|i| (i + 1) % step == 0).collect()
                }
            };
            if want.iter().any(|&w| !w) {
                cfg.d_ff = f.usize("intermediate_size_mlp")?;
            }
            if want.iter().any(|&w| w) {
                let (every, first_dense) = placement(&want)
                    .ok_or_else(|| f.err("moe_layers", "this placement of MoE layers is not expressible (first_dense + every)"))?;
                m.every = every;
                m.first_dense = first_dense;
                cfg.moe = Some(m);
            }
        }
        _ => unreachable!("only DeepSeek-V3, GPT-OSS and Llama 4 come here"),
    }
    cfg.attn_ext = Some(ext);
    cfg.validate().map_err(|e| f.err("(mapped config)", e))?;
    Ok(cfg)
}
