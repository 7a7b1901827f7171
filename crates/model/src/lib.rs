//! Dense and Mixture-of-Experts decoder-only Transformers with explicit forward/backward.
//!
//! The exact model is specified in `docs/model-spec.md`. Parameters live in one flat buffer
//! described by a [`params::ParamTable`] of stable tensor names; gradients use the same layout.
//!
//! ```
//! use moe_model::{ModelConfig, Transformer};
//! let cfg: ModelConfig = toml::from_str(
//!     "n_vocab = 32\nn_ctx = 8\nn_layer = 1\nd_model = 16\nn_head = 2\nn_head_kv = 1\nd_ff = 32\n\
//!      [moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 8\n").unwrap();
//! let model: Transformer = Transformer::new(cfg, 0).unwrap();
//! let inputs = [1u32, 2, 3, 4];
//! let mut grads = vec![0.0f32; model.params.len()];
//! let rep = model.forward_backward(&inputs, &[2, 3, 4, 5], 1, 4, &mut grads, 1.0).unwrap();
//! assert!(rep.ce > 0.0 && rep.moe.len() == 1);
//! ```

pub mod accounting;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod layers;
pub mod moe;
pub mod params;
pub mod stored;
pub mod transformer;

pub use config::{Activation, AttnExt, AttnTemperature, ClampedSwiglu, FfnKind, Gating, Mla, ModelConfig, MoeConfig, MoeExt, RopeScaling};
pub use error::{Error, Result};
pub use transformer::{ForwardOutput, LossReport, MoeLayerReport, Transformer};
