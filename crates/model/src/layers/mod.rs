//! Layers with explicit forward/backward: attention and the dense MLP. The MoE FFN is in `crate::moe`.

pub mod attention;
pub mod attention_ext;
pub mod mlp;
