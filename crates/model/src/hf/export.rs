//! Export a model as a Hugging Face `save_pretrained` directory: `LlamaForCausalLM` for dense
//! SwiGLU models, `MixtralForCausalLM` for MoE models whose every layer is a softmax top-k,
//! renormalised MoE without shared experts. Anything else is an error naming the field that does
//! not map (see `docs/hf-support.md`).

use crate::checkpoint::{serialize_tensors, write_atomic};
use crate::config::{Activation, FfnKind, Gating, ModelConfig, RopeScaling};
use crate::error::{invalid, Error, Result};
use crate::params::FfnLayout;
use crate::transformer::Transformer;
use moe_kernels::Real;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// One exported tensor: Hugging Face name, shape, f32 little-endian bytes.
pub type HfTensor = (String, Vec<usize>, Vec<u8>);

/// What [`export_hf_dir`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// `architectures[0]` of the written config.json
    pub architecture: String,
    /// tensors in model.safetensors
    pub n_tensors: usize,
}

/// The transformers architecture `cfg` maps onto, or an error naming the first field that does not map.
pub fn export_architecture(cfg: &ModelConfig) -> Result<&'static str> {
    let no = |field: &str, why: &str| Err(invalid(field, format!("cannot be exported to Hugging Face Llama/Mixtral: {why}")));
    if cfg.activation != Activation::Swiglu && cfg.ffn_kinds().contains(&FfnKind::Dense) {
        return no("model.activation", "only swiglu (hidden_act = silu)");
    }
    if !cfg.qk_norm.is_none() {
        return no("model.qk_norm", "Llama and Mixtral have no q/k norm");
    }
    if cfg.attn_bias {
        return no("model.attn_bias", "Llama and Mixtral export has no attention biases");
    }
    if let Some(f) = cfg.inference_only_field() {
        return no(f, "inference-only options are not exported");
    }
    let Some(m) = &cfg.moe else { return Ok("LlamaForCausalLM") };
    if m.first_dense > 0 || m.every != 1 {
        return no(if m.first_dense > 0 { "model.moe.first_dense" } else { "model.moe.every" }, "Mixtral has an MoE FFN in every layer");
    }
    if m.n_expert_per_layer.iter().any(|&n| n != m.n_expert) {
        return no("model.moe.n_expert_per_layer", "Mixtral has the same number of experts in every layer");
    }
    if m.n_expert_shared > 0 {
        return no("model.moe.n_expert_shared", "Mixtral has no shared experts");
    }
    if m.gating != Gating::Softmax {
        return no("model.moe.gating", "Mixtral routes with softmax");
    }
    if !m.renormalize {
        return no("model.moe.renormalize", "Mixtral renormalises the top-k weights");
    }
    if m.route_scale != 1.0 {
        return no("model.moe.route_scale", "Mixtral has no routed scaling factor");
    }
    if m.bias_update_rate > 0.0 {
        return no("model.moe.bias_update_rate", "Mixtral has no expert-selection bias");
    }
    Ok("MixtralForCausalLM")
}

/// `rope_parameters` of transformers 5 for our RoPE (and its scaling).
fn rope_parameters(cfg: &ModelConfig) -> Result<Value> {
    let theta = cfg.rope_theta;
    Ok(match &cfg.rope_scaling {
        None => json!({ "rope_type": "default", "rope_theta": theta }),
        Some(RopeScaling::Linear { factor }) => json!({ "rope_type": "linear", "rope_theta": theta, "factor": factor }),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => json!({
            "rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position_embeddings,
        }),
        Some(RopeScaling::Yarn { factor, beta_fast, beta_slow, original_max_position_embeddings, truncate, attention_factor }) => json!({
            "rope_type": "yarn", "rope_theta": theta, "factor": factor, "beta_fast": beta_fast, "beta_slow": beta_slow,
            "original_max_position_embeddings": original_max_position_embeddings, "truncate": truncate,
            "attention_factor": attention_factor,
        }),
        Some(RopeScaling::Factors { .. }) => {
            return Err(invalid(
                "model.rope_scaling",
                "cannot be exported to Hugging Face Llama/Mixtral: per-pair RoPE factors (a GGUF file's rope_freqs) have no transformers rope_type",
            ))
        }
    })
}

/// config.json of the export (transformers 5 key names, plus `rope_theta` for older readers).
pub fn export_config(cfg: &ModelConfig, bos: Option<u32>, eos: Option<u32>) -> Result<Value> {
    let arch = export_architecture(cfg)?;
    let mut c = json!({
        "architectures": [arch],
        "model_type": if arch == "LlamaForCausalLM" { "llama" } else { "mixtral" },
        "vocab_size": cfg.n_vocab,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head_kv,
        "head_dim": cfg.d_head(),
        "max_position_embeddings": cfg.n_ctx,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": rope_parameters(cfg)?,
        "hidden_act": "silu",
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": true,
        "dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
    });
    match &cfg.moe {
        None => {
            c["intermediate_size"] = json!(cfg.d_ff);
            c["attention_bias"] = json!(false);
            c["mlp_bias"] = json!(false);
            c["pretraining_tp"] = json!(1);
        }
        Some(m) => {
            c["intermediate_size"] = json!(m.d_expert);
            c["num_local_experts"] = json!(m.n_expert);
            c["num_experts_per_tok"] = json!(m.n_expert_active);
            // transformers' load-balancing loss is k × ours for the same coefficient
            c["router_aux_loss_coef"] = json!(m.aux_loss_coef / m.n_expert_active as f64);
            c["router_jitter_noise"] = json!(0.0);
            c["output_router_logits"] = json!(false);
            c["sliding_window"] = Value::Null;
        }
    }
    Ok(c)
}

fn f32_bytes<T: Real>(v: &[T]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_f32().to_le_bytes()).collect()
}

/// The export's tensors under Hugging Face names (f32), in a stable order.
pub fn export_tensors<T: Real>(m: &Transformer<T>) -> Result<Vec<HfTensor>> {
    let cfg = &m.cfg;
    export_architecture(cfg)?;
    m.check_values_present("export")?;
    // kept matrices are exported from the store (real values); taken ones refuse (ADR-0007)
    let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let e = m.table.get(name).ok_or_else(|| invalid(name, "tensor is missing from the model"))?;
        Ok((e.shape.clone(), m.param_values_f32(e.range(), &format!("export tensor `{name}`"))?))
    };
    let mut out: Vec<HfTensor> = Vec::new();
    let direct = |out: &mut Vec<HfTensor>, ours: &str, hf: String| -> Result<()> {
        let (shape, v) = get(ours)?;
        out.push((hf, shape, f32_bytes(&v)));
        Ok(())
    };
    direct(&mut out, "tok_embeddings.weight", "model.embed_tokens.weight".into())?;
    for (i, b) in m.layout.blocks.iter().enumerate() {
        let (o, h) = (format!("layers.{i}"), format!("model.layers.{i}"));
        direct(&mut out, &format!("{o}.attn_norm.weight"), format!("{h}.input_layernorm.weight"))?;
        for (ours, hf) in [("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")] {
            direct(&mut out, &format!("{o}.attn.{ours}.weight"), format!("{h}.self_attn.{hf}.weight"))?;
        }
        direct(&mut out, &format!("{o}.ffn_norm.weight"), format!("{h}.post_attention_layernorm.weight"))?;
        match &b.ffn {
            FfnLayout::Dense(_) => {
                for (ours, hf) in [("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")] {
                    direct(&mut out, &format!("{o}.ffn.{ours}.weight"), format!("{h}.mlp.{hf}.weight"))?;
                }
            }
            FfnLayout::Moe(ml) => {
                direct(&mut out, &format!("{o}.ffn.router.weight"), format!("{h}.block_sparse_moe.gate.weight"))?;
                for (ours, hf) in [("w_gate", "w1"), ("w_up", "w3"), ("w_down", "w2")] {
                    let (shape, v) = get(&format!("{o}.ffn.experts.{ours}"))?;
                    let per = v.len() / ml.n_expert;
                    for e in 0..ml.n_expert {
                        out.push((
                            format!("{h}.block_sparse_moe.experts.{e}.{hf}.weight"),
                            shape[1..].to_vec(),
                            f32_bytes(&v[e * per..(e + 1) * per]),
                        ));
                    }
                }
            }
        }
    }
    direct(&mut out, "norm.weight", "model.norm.weight".into())?;
    if !cfg.tie_embeddings {
        direct(&mut out, "lm_head.weight", "lm_head.weight".into())?;
    }
    Ok(out)
}

/// Write `dir/config.json`, `dir/generation_config.json` and `dir/model.safetensors` (f32, one
/// file), each atomically. `eos` (e.g. the tokenizer's end-of-text id) goes into both configs.
pub fn export_hf_dir<T: Real>(m: &Transformer<T>, dir: &Path, eos: Option<u32>) -> Result<ExportReport> {
    let arch = export_architecture(&m.cfg)?;
    let config = export_config(&m.cfg, None, eos)?;
    let tensors = export_tensors(m)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let st_path = dir.join("model.safetensors");
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = serialize_tensors(&tensors, meta, &st_path)?;
    write_atomic(&st_path, &bytes)?;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n";
    write_atomic(&dir.join("config.json"), pretty(&config).as_bytes())?;
    let gen = json!({ "bos_token_id": Value::Null, "eos_token_id": eos, "do_sample": false });
    write_atomic(&dir.join("generation_config.json"), pretty(&gen).as_bytes())?;
    Ok(ExportReport { architecture: arch.to_string(), n_tensors: tensors.len() })
}
