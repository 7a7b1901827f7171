//! What `config.json` parsing shares between the common families (`config.rs`) and the
//! newer ones (`config_ext`): the family names, the load options, typed field access with errors
//! that name the file and the field, and the plain MoE settings of a checkpoint.

use crate::config::{Gating, ModelConfig, MoeConfig};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Which weight-naming family an architecture uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// LlamaForCausalLM
    Llama,
    /// MixtralForCausalLM (`block_sparse_moe`, experts `w1/w3/w2`)
    Mixtral,
    /// Qwen3ForCausalLM (per-head q/k norm)
    Qwen3,
    /// Qwen3MoeForCausalLM (per-head q/k norm, `mlp.gate`, experts `gate/up/down_proj`)
    Qwen3Moe,
    /// OlmoeForCausalLM (full-width q/k norm)
    Olmoe,
    /// Qwen2MoeForCausalLM (q/k/v biases, sigmoid-gated shared expert)
    Qwen2Moe,
    /// DeepseekV3ForCausalLM (latent attention, grouped sigmoid routing, shared experts; inference only)
    DeepseekV3,
    /// GptOssForCausalLM (sinks, sliding windows, biased clamped-SwiGLU experts, YaRN; inference only)
    GptOss,
    /// Llama4ForCausalLM text model (NoPE layers, chunked attention, input-scaled experts; inference only)
    Llama4,
}

/// Options of [`super::parse_config`].
#[derive(Clone, Debug, Default)]
pub struct HfOptions {
    /// context length; default `max_position_embeddings`. A sliding window is accepted only when it
    /// covers the whole context (then it changes nothing).
    pub n_ctx: Option<usize>,
    /// load even when the parameters need more memory than `/proc/meminfo` reports available
    pub skip_memory_check: bool,
    /// keep the matrices of a bf16 (or f16) checkpoint in that format for the fast inference
    /// engine instead of converting them to f32 (see [`crate::stored`]); the f32 reference path
    /// then needs `Transformer::materialize`
    pub keep_dtype: bool,
}

pub(crate) struct Fields<'a> {
    pub(crate) obj: &'a Map<String, Value>,
    pub(crate) path: PathBuf,
    /// where `obj` sits in the file (`text_config.` for multimodal configs), for error messages
    pub(crate) prefix: &'static str,
}

impl<'a> Fields<'a> {
    pub(crate) fn err(&self, field: &str, msg: impl std::fmt::Display) -> Error {
        Error::ConfigParse { path: Some(self.path.clone()), message: format!("field `{}{field}`: {msg}", self.prefix) }
    }
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }
    pub(crate) fn usize_opt(&self, field: &str) -> Result<Option<usize>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| self.err(field, format!("expected a non-negative integer, got {v}")))
            }
        }
    }
    pub(crate) fn usize(&self, field: &str) -> Result<usize> {
        self.usize_opt(field)?.ok_or_else(|| self.err(field, "is missing"))
    }
    pub(crate) fn f64_or(&self, field: &str, default: f64) -> Result<f64> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(field, format!("expected a number, got {v}"))),
        }
    }
    pub(crate) fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(field, format!("expected true or false, got {v}"))),
        }
    }
    pub(crate) fn str_opt(&self, field: &str) -> Result<Option<&'a str>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.err(field, format!("expected a string, got {v}"))),
        }
    }
    /// Must be absent, null or `false`.
    pub(crate) fn must_be_off(&self, field: &str, why: &str) -> Result<()> {
        match self.get(field) {
            None | Some(Value::Bool(false)) => Ok(()),
            Some(v) => Err(self.err(field, format!("{v} is not supported ({why})"))),
        }
    }
}

/// Token ids: a number, a list of numbers, or null.
pub(crate) fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn moe_cfg(n_expert: usize, k: usize, d_expert: usize, renormalize: bool) -> MoeConfig {
    MoeConfig {
        n_expert,
        n_expert_active: k,
        d_expert,
        n_expert_shared: 0,
        d_expert_shared: None,
        shared_gate: false,
        gating: Gating::Softmax,
        renormalize,
        route_scale: 1.0,
        capacity_factor: 0.0,
        aux_loss_coef: 0.0,
        z_loss_coef: 0.0,
        bias_update_rate: 0.0,
        every: 1,
        first_dense: 0,
        n_expert_per_layer: Vec::new(),
        ext: None,
    }
}

/// `max_position_embeddings` and the context length to load with (`opts.n_ctx`, else that), refused
/// above [`ModelConfig::MAX_DIM`] positions with the numbers and the field (the KV cache and the
/// attention buffers grow with the context), before anything is built from it.
pub(crate) fn context_len(f: &Fields<'_>, opts: &HfOptions) -> Result<(usize, usize)> {
    let max_pos = f.usize("max_position_embeddings")?;
    let max = ModelConfig::MAX_DIM;
    match opts.n_ctx {
        Some(n) if n > max => {
            Err(f.err("max_position_embeddings", format!("the requested context of {n} positions is more than the supported {max}")))
        }
        Some(n) => Ok((max_pos, n)),
        None if max_pos > max => Err(f.err(
            "max_position_embeddings",
            format!("{max_pos} positions are more than the supported {max}; load with a shorter context (HfOptions::n_ctx)"),
        )),
        None => Ok((max_pos, max_pos)),
    }
}
