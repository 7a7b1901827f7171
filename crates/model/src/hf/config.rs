//! `config.json` of a Hugging Face checkpoint → [`ModelConfig`].
//!
//! Every option that would change the math and that the model cannot express is an error naming
//! the file and the field; options that only matter for training or serving in transformers
//! (dropout, jitter noise, `use_cache`, …) are ignored. See `docs/hf-support.md`.

use super::fields::{context_len, moe_cfg, token_ids, Fields};
pub use super::fields::{Family, HfOptions};
use crate::config::{Activation, AttnExt, ModelConfig, MoeConfig, QkNorm};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The architectures (`architectures[0]`) this module loads.
pub const SUPPORTED: &[&str] = &[
    "LlamaForCausalLM",
    "MixtralForCausalLM",
    "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM",
    "Qwen2MoeForCausalLM",
    "OlmoeForCausalLM",
    "DeepseekV3ForCausalLM",
    "GptOssForCausalLM",
    "Llama4ForCausalLM",
    "Llama4ForConditionalGeneration",
];

/// A parsed and checked `config.json`.
#[derive(Clone, Debug)]
pub struct HfConfig {
    /// `architectures[0]`
    pub arch: String,
    /// naming family
    pub family: Family,
    /// the model it maps onto
    pub cfg: ModelConfig,
    /// `bos_token_id` of config.json
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` of config.json (a number or a list)
    pub eos_token_ids: Vec<u32>,
}

/// Parse the text of a `config.json`; `path` names it in errors.
pub fn parse_config(text: &str, path: &Path, opts: &HfOptions) -> Result<HfConfig> {
    let root: Value = serde_json::from_str(text)
        .map_err(|e| Error::ConfigParse { path: Some(path.to_path_buf()), message: format!("not valid JSON: {e}") })?;
    let obj = root.as_object().ok_or_else(|| Error::ConfigParse { path: Some(path.to_path_buf()), message: "not a JSON object".into() })?;
    let f = Fields { obj, path: path.to_path_buf(), prefix: "" };
    let arch = match f.get("architectures") {
        Some(Value::Array(a)) if !a.is_empty() => {
            a[0].as_str().ok_or_else(|| f.err("architectures", "entries must be strings"))?.to_string()
        }
        _ => return Err(f.err("architectures", "is missing or empty; cannot tell the architecture")),
    };
    let family = match arch.as_str() {
        "LlamaForCausalLM" => Family::Llama,
        "MixtralForCausalLM" => Family::Mixtral,
        "Qwen3ForCausalLM" => Family::Qwen3,
        "Qwen3MoeForCausalLM" => Family::Qwen3Moe,
        "OlmoeForCausalLM" => Family::Olmoe,
        "Qwen2MoeForCausalLM" => Family::Qwen2Moe,
        "DeepseekV3ForCausalLM" => Family::DeepseekV3,
        "GptOssForCausalLM" => Family::GptOss,
        "Llama4ForCausalLM" | "Llama4ForConditionalGeneration" => Family::Llama4,
        other => {
            return Err(f.err("architectures", format!("architecture `{other}` is not supported (supported: {})", SUPPORTED.join(", "))))
        }
    };

    if matches!(family, Family::DeepseekV3 | Family::GptOss | Family::Llama4) {
        // Llama 4 as released: the text model's settings under `text_config`
        let text = match arch.as_str() {
            "Llama4ForConditionalGeneration" => match f.get("text_config") {
                Some(Value::Object(o)) => Some(Fields { obj: o, path: path.to_path_buf(), prefix: "text_config." }),
                _ => return Err(f.err("text_config", "is missing; Llama4ForConditionalGeneration keeps the text model's settings there")),
            },
            _ => None,
        };
        let tf = text.as_ref().unwrap_or(&f);
        let cfg = super::config_ext::parse(tf, family, opts)?;
        let bos = token_ids(tf.get("bos_token_id").or_else(|| f.get("bos_token_id"))).first().copied();
        let eos = token_ids(tf.get("eos_token_id").or_else(|| f.get("eos_token_id")));
        return Ok(HfConfig { arch, family, cfg, bos_token_id: bos, eos_token_ids: eos });
    }

    // ---- options that change the math and are not expressible ----
    if let Some(act) = f.str_opt("hidden_act")? {
        if act != "silu" {
            return Err(f.err("hidden_act", format!("`{act}` is not supported (only silu: SwiGLU)")));
        }
    }
    // Qwen2-MoE: `qkv_bias` (transformers ≥ 5; default true, and always true before) → attn_bias
    let attn_bias = match family {
        Family::Qwen2Moe => f.bool_or("qkv_bias", true)?,
        _ => false,
    };
    super::config_ext::check_quantization(&f)?;
    f.must_be_off("attention_bias", "no attention biases")?;
    f.must_be_off("mlp_bias", "no MLP biases")?;
    if f.get("clip_qkv").is_some() {
        return Err(f.err("clip_qkv", "q/k/v clipping is not supported"));
    }
    for field in [
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "logit_scale",
        "embedding_multiplier",
        "residual_multiplier",
        "attention_multiplier",
        "logits_scaling",
    ] {
        if f.get(field).is_some() {
            return Err(f.err(field, "is not supported"));
        }
    }
    // RoPE base and scaling (linear, llama3, yarn)
    let (max_pos, n_ctx) = context_len(&f, opts)?;
    let rope = super::config_ext::rope_spec(&f, max_pos)?;
    let rope_theta = rope.theta;

    let d_model = f.usize("hidden_size")?;
    let n_head = f.usize("num_attention_heads")?;
    let n_head_kv = f.usize_opt("num_key_value_heads")?.unwrap_or(n_head);
    let n_layer = f.usize("num_hidden_layers")?;
    let head_dim = f.usize_opt("head_dim")?;
    if n_head == 0 {
        return Err(f.err("num_attention_heads", "must be > 0"));
    }
    let d_head = match head_dim {
        Some(h) if d_model % n_head == 0 && h == d_model / n_head => None,
        Some(h) => Some(h),
        None => None,
    };
    let window = sliding_window(&f, family, n_ctx, n_layer)?;

    let qk_norm = match family {
        Family::Qwen3 | Family::Qwen3Moe => QkNorm::Head,
        Family::Olmoe => QkNorm::Full,
        _ => QkNorm::None,
    };
    let intermediate = f.usize_opt("intermediate_size")?;
    let moe = match family {
        Family::Llama | Family::Qwen3 | Family::DeepseekV3 | Family::GptOss | Family::Llama4 => None,
        Family::Mixtral => {
            Some(moe_cfg(f.usize("num_local_experts")?, f.usize("num_experts_per_tok")?, f.usize("intermediate_size")?, true))
        }
        Family::Olmoe => {
            let n_expert = num_experts(&f)?;
            Some(moe_cfg(n_expert, f.usize("num_experts_per_tok")?, f.usize("intermediate_size")?, f.bool_or("norm_topk_prob", false)?))
        }
        Family::Qwen3Moe => qwen_moe_cfg(&f, n_layer)?,
        Family::Qwen2Moe => match qwen_moe_cfg(&f, n_layer)? {
            None => None,
            Some(mut m) => {
                // one shared expert whose output is scaled by sigmoid(shared_expert_gate · h)
                let d_shared = f.usize("shared_expert_intermediate_size")?;
                if d_shared == 0 {
                    return Err(f.err("shared_expert_intermediate_size", "must be > 0"));
                }
                m.n_expert_shared = 1;
                m.d_expert_shared = Some(d_shared);
                m.shared_gate = true;
                Some(m)
            }
        },
    };
    // Mixtral and OLMoE use intermediate_size for the experts; their layers are all MoE
    let needs_dense = moe.as_ref().is_none_or(|m| m.first_dense > 0 || m.every > 1);
    let d_ff = intermediate.unwrap_or(0);
    if needs_dense && d_ff == 0 {
        return Err(f.err("intermediate_size", "is missing or 0 but the model has dense layers"));
    }
    let cfg = ModelConfig {
        n_vocab: f.usize("vocab_size")?,
        n_ctx,
        n_layer,
        d_model,
        n_head,
        n_head_kv,
        d_head,
        qk_norm,
        attn_bias,
        rope_theta,
        norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        tie_embeddings: f.bool_or("tie_word_embeddings", false)?,
        d_ff,
        activation: Activation::Swiglu,
        moe,
        attn_ext: window.map(|(sliding_window, window_layers)| AttnExt { sliding_window, window_layers, ..AttnExt::default() }),
        rope_scaling: rope.scaling,
    };
    // a window shorter than the context takes the inference-only attention path; a scaled RoPE
    // only changes the rotation table
    cfg.validate().map_err(|e| f.err("(mapped config)", e))?;
    Ok(HfConfig {
        arch,
        family,
        cfg,
        bos_token_id: token_ids(f.get("bos_token_id")).first().copied(),
        eos_token_ids: token_ids(f.get("eos_token_id")),
    })
}

/// `num_experts` (hub configs) or `num_local_experts` (what transformers 5 writes).
fn num_experts(f: &Fields<'_>) -> Result<usize> {
    match (f.usize_opt("num_experts")?, f.usize_opt("num_local_experts")?) {
        (Some(a), Some(b)) if a != b => Err(f.err("num_experts", format!("{a} disagrees with num_local_experts {b}"))),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(f.err("num_experts", "is missing")),
    }
}

/// The sliding window of the families that have one, as transformers 5 applies it: `(window,
/// per-layer flags)`, or `None` when no layer's window is shorter than the context (then it masks
/// nothing). Mixtral: every layer. Qwen3-MoE: every layer with `use_sliding_window`. Qwen3 and
/// Qwen2-MoE: the `sliding_attention` entries of `layer_types` (default as their configs compute
/// it from `use_sliding_window` and `max_window_layers`). OLMoE passes the window only to fused
/// attention kernels, so a short one is refused rather than guessed.
fn sliding_window(f: &Fields<'_>, family: Family, n_ctx: usize, n_layer: usize) -> Result<Option<(usize, Vec<bool>)>> {
    let use_sw = f.bool_or("use_sliding_window", false)?;
    let layers: Vec<bool> = match family {
        Family::Mixtral => vec![true; n_layer],
        Family::Qwen3Moe if use_sw => vec![true; n_layer],
        Family::Qwen3 | Family::Qwen2Moe if use_sw => match f.get("layer_types") {
            Some(Value::Array(a)) => {
                let v: Vec<bool> = a
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(f.err("layer_types", format!("`{t}` is not supported (sliding_attention, full_attention)"))),
                    })
                    .collect::<Result<_>>()?;
                if v.len() != n_layer {
                    return Err(f.err("layer_types", format!("has {} entries for {n_layer} layers", v.len())));
                }
                v
            }
            _ => {
                let mwl = f.usize_opt("max_window_layers")?.unwrap_or(28);
                (0..n_layer).map(|i| if family == Family::Qwen3 { i >= mwl } else { i % 2 == 0 && i < mwl }).collect()
            }
        },
        Family::Olmoe => {
            if let Some(w) = f.usize_opt("sliding_window")? {
                if w < n_ctx {
                    return Err(f.err(
                        "sliding_window",
                        format!("a sliding window of {w} < context {n_ctx} is not supported for OLMoE; load with a context of at most {w} (HfOptions::n_ctx)"),
                    ));
                }
            }
            return Ok(None);
        }
        _ => return Ok(None),
    };
    match f.usize_opt("sliding_window")? {
        Some(0) => Err(f.err("sliding_window", "must be > 0")),
        Some(w) if w < n_ctx && layers.iter().any(|&l| l) => Ok(Some((w, layers))),
        _ => Ok(None),
    }
}

/// Qwen3-MoE: layer i is MoE iff `i ∉ mlp_only_layers && (i + 1) % decoder_sparse_step == 0`;
/// find our `(every, first_dense)` with the same placement.
/// The routed experts of Qwen3-MoE and Qwen2-MoE (`None` when `num_experts` is 0: a dense model).
fn qwen_moe_cfg(f: &Fields<'_>, n_layer: usize) -> Result<Option<MoeConfig>> {
    let n_expert = num_experts(f)?;
    if n_expert == 0 {
        return Ok(None);
    }
    let mut m = moe_cfg(n_expert, f.usize("num_experts_per_tok")?, f.usize("moe_intermediate_size")?, f.bool_or("norm_topk_prob", false)?);
    let (every, first_dense) = qwen3_moe_placement(f, n_layer)?;
    m.every = every;
    m.first_dense = first_dense;
    Ok(Some(m))
}

fn qwen3_moe_placement(f: &Fields<'_>, n_layer: usize) -> Result<(usize, usize)> {
    let step = f.usize_opt("decoder_sparse_step")?.unwrap_or(1);
    if step == 0 {
        return Err(f.err("decoder_sparse_step", "must be > 0"));
    }
    let only: Vec<usize> = match f.get("mlp_only_layers") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().map(|v| v as usize).ok_or_else(|| f.err("mlp_only_layers", "entries must be integers")))
            .collect::<Result<_>>()?,
        Some(v) => return Err(f.err("mlp_only_layers", format!("expected a list, got {v}"))),
    };
    let want: Vec<bool> = (0..n_layer).map(|i| !only.contains(&i) && (i + 1) % step == 0).collect();
    for every in 1..=n_layer.max(1) {
        for first_dense in 0..n_layer {
            let got: Vec<bool> = (0..n_layer).map(|i| i >= first_dense && (i + 1) % every == 0).collect();
            if got == want {
                return Ok((every, first_dense));
            }
        }
    }
    Err(f.err(
        "mlp_only_layers",
        format!("MoE placement (decoder_sparse_step {step}, mlp_only_layers {only:?}) is not expressible as leading dense layers + every-n placement"),
    ))
}

#[cfg(test)]
mod tests {
    use super::{parse_config, HfOptions};
    use std::path::Path;

    fn llama(extra: &str) -> String {
        format!(
            r#"{{"architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
                "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 2, "max_position_embeddings": 64{extra}}}"#
        )
    }

    fn err(text: &str, opts: &HfOptions) -> String {
        parse_config(text, Path::new("ckpt/config.json"), opts).unwrap_err().to_string()
    }

    #[test]
    fn a_billion_positions_are_refused_naming_the_file_field_and_numbers() {
        let text = llama("").replace("\"max_position_embeddings\": 64", "\"max_position_embeddings\": 1000000000");
        let e = err(&text, &HfOptions::default());
        assert!(
            e.contains("ckpt/config.json") && e.contains("max_position_embeddings") && e.contains("1000000000") && e.contains("16777216"),
            "{e}"
        );
        // the same for the newer families (parsed by config_ext)
        let ds = r#"{"architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 32, "hidden_size": 16, "num_attention_heads": 2,
            "num_hidden_layers": 1, "max_position_embeddings": 1000000000, "intermediate_size": 32}"#;
        let e = err(ds, &HfOptions::default());
        assert!(e.contains("max_position_embeddings") && e.contains("1000000000"), "{e}");
        // a shorter context makes it loadable; a huge requested one is refused too
        let ok = parse_config(&text, Path::new("config.json"), &HfOptions { n_ctx: Some(128), ..Default::default() }).unwrap();
        assert_eq!(ok.cfg.n_ctx, 128);
        let e = err(&text, &HfOptions { n_ctx: Some(1 << 30), ..Default::default() });
        assert!(e.contains("requested context of 1073741824"), "{e}");
    }

    #[test]
    fn dimension_products_that_overflow_are_refused_with_the_numbers() {
        // each dimension within the cap, their product (≈ 2^24 · 2^24 · 4096 · 3) far past 2^64
        let text = llama("")
            .replace("\"hidden_size\": 16", "\"hidden_size\": 16777216")
            .replace("\"intermediate_size\": 32", "\"intermediate_size\": 16777216")
            .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 4096");
        let e = err(&text, &HfOptions::default());
        assert!(e.contains("ckpt/config.json") && e.contains("parameters") && e.contains("2^42"), "{e}");
        // a single dimension past usize-safe sizes
        let text = llama("").replace("\"hidden_size\": 16", "\"hidden_size\": 1099511627776");
        let e = err(&text, &HfOptions::default());
        assert!(e.contains("1099511627776") && e.contains("model.d_model"), "{e}");
    }
}
