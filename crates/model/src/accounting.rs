//! Parameter and FLOP accounting: total vs active parameters and FLOPs per token, per layer.
//!
//! Conventions (stated so numbers can be compared with papers):
//! - *active* parameters count everything a token touches: embeddings, attention, dense FFNs,
//!   routers, shared experts, and `k / n_expert` of the routed expert stacks;
//! - forward FLOPs per token = 2 × (active parameters used in matmuls, i.e. without the embedding
//!   lookup unless the head is tied) + attention scores and values `4 · n_head · d_head · seq_len`
//!   per layer (the PaLM convention, at the given context length, causal mask not halved);
//! - training FLOPs per token = 3 × forward.

use crate::params::{build_layout, FfnLayout, Init};
use crate::ModelConfig;
use serde::{Deserialize, Serialize};

/// Accounting of one block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerAccount {
    /// layer index
    pub layer: usize,
    /// "dense" or "moe"
    pub kind: String,
    /// routed experts (0 for dense)
    pub n_expert: usize,
    /// all parameters of the block
    pub params_total: u64,
    /// parameters one token uses
    pub params_active: u64,
    /// forward FLOPs per token in this block
    pub flops_fwd: f64,
}

/// Accounting of a whole model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelAccount {
    /// all parameters
    pub params_total: u64,
    /// parameters used per token
    pub params_active: u64,
    /// embedding table (+ untied LM head) parameters
    pub params_embedding: u64,
    /// forward FLOPs per token at `seq_len`
    pub flops_fwd: f64,
    /// training FLOPs per token (3 × forward)
    pub flops_train: f64,
    /// n_expert / n_expert_active (1 for dense)
    pub sparsity: f64,
    /// context length used for the attention term
    pub seq_len: usize,
    /// per block
    pub layers: Vec<LayerAccount>,
}

/// Account a config at context length `seq_len`.
pub fn account(cfg: &ModelConfig, seq_len: usize) -> ModelAccount {
    let (table, layout) = build_layout(cfg);
    let d = cfg.d_model as u64;
    let k = cfg.moe.as_ref().map_or(1, |m| m.n_expert_active) as u64;
    let attn_ctx = 4.0 * (cfg.n_head * cfg.d_head()) as f64 * seq_len as f64;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for (i, b) in layout.blocks.iter().enumerate() {
        let prefix = format!("layers.{i}.");
        let entries: Vec<_> = table.entries.iter().filter(|e| e.name.starts_with(&prefix)).collect();
        let total: u64 = entries.iter().map(|e| e.len as u64).sum();
        let (kind, n_expert, active) = match &b.ffn {
            FfnLayout::Dense(_) => ("dense", 0, total),
            FfnLayout::Moe(m) => {
                let routed: u64 = entries.iter().filter(|e| e.routed_expert).map(|e| e.len as u64).sum();
                ("moe", m.n_expert, total - routed + routed * k / m.n_expert as u64)
            }
        };
        // norm weights and biases are elementwise, not matmul parameters
        let norm_params: u64 = entries.iter().filter(|e| matches!(e.init, Init::Ones | Init::Zeros)).map(|e| e.len as u64).sum();
        let flops = 2.0 * (active - norm_params) as f64 + attn_ctx;
        layers.push(LayerAccount { layer: i, kind: kind.into(), n_expert, params_total: total, params_active: active, flops_fwd: flops });
    }
    let emb = (cfg.n_vocab as u64) * d * if cfg.tie_embeddings { 1 } else { 2 };
    let params_total = table.total as u64;
    let params_active = emb + d + layers.iter().map(|l| l.params_active).sum::<u64>();
    let head_flops = 2.0 * (cfg.n_vocab as f64) * d as f64;
    let flops_fwd = head_flops + layers.iter().map(|l| l.flops_fwd).sum::<f64>();
    let sparsity = cfg.moe.as_ref().map_or(1.0, |m| m.n_expert as f64 / m.n_expert_active as f64);
    ModelAccount { params_total, params_active, params_embedding: emb, flops_fwd, flops_train: 3.0 * flops_fwd, sparsity, seq_len, layers }
}
