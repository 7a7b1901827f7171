//! Inference for moe models: KV cache, batched KV-cached forward, sampling, generation and a
//! decode benchmark.
//!
//! - [`KvCache`]: the keys/values of one sequence, all layers; errors (no panic) past `n_ctx`.
//! - [`forward_step`] / [`forward_step_with`]: one forward over the new tokens of a batch of
//!   sequences, each with its own cache and position (prefill and decode alike). All tokens share
//!   the projections, FFNs and MoE experts as one matrix; attention is per sequence.
//! - [`Sampler`] / [`SamplerConfig`]: greedy, temperature, top-k, top-p, deterministic in a seed.
//! - [`generate`]: prefill + KV-cached decoding of one prompt with streaming callback.
//! - [`bench_decode`]: prefill/decode throughput per batch size and distinct experts per step.
//! - [`Engine`] ([`engine`]): the fast engine — same contract as [`forward_step`] (its slow twin),
//!   f32/bf16/int8 weights, grouped MoE experts, per-step weight-byte and FLOP counters;
//!   [`generate_with_engine`], [`bench_infer`] (roofline report), [`weight_format_quality`]
//!   (perplexity and KL of bf16/int8 against f32). See `docs/inference.md`.
//!
//! MoE routing at inference is always **dropless** (the config's `capacity_factor` is ignored):
//! capacity is a training-time device, and at inference it would make a token's output depend on
//! its batch-mates. With `capacity_factor = 0`, KV-cached decoding reproduces
//! [`moe_model::Transformer::forward`] over the whole sequence.
//!
//! ```
//! use moe_infer::{generate, SamplerConfig};
//! use moe_model::{ModelConfig, Transformer};
//! let cfg: ModelConfig = toml::from_str(
//!     "n_vocab = 32\nn_ctx = 16\nn_layer = 2\nd_model = 16\nn_head = 2\nn_head_kv = 1\nd_ff = 32\n\
//!      [moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 8\n").unwrap();
//! let model: Transformer = Transformer::new(cfg, 0).unwrap();
//! let out = generate(&model, &[1, 2, 3], 5, &SamplerConfig::greedy(), None, |_| {}).unwrap();
//! assert_eq!(out.tokens.len(), 5);
//! // the whole sequence must fit in n_ctx
//! assert!(generate(&model, &[1, 2, 3], 14, &SamplerConfig::greedy(), None, |_| {}).is_err());
//! ```

pub mod bench;
pub mod decode;
pub mod engine;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod sampler;

pub use bench::{bench_decode, expected_distinct, DecodeBench};
pub use decode::{forward_one, forward_step, forward_step_with, StepOptions, StepOutput, StepRouting};
pub use engine::bench::{bench_infer, EngineBench, Machine, Runner};
pub use engine::generate::generate_with_engine;
pub use engine::quality::{quality_against, weight_format_quality, FormatQuality};
pub use engine::weights::EngineWeights;
pub use engine::{Engine, StepStats};
pub use error::{Error, Result};
pub use generate::{generate, generate_until, FinishReason, GenerateOutput};
pub use kv_cache::KvCache;
pub use sampler::{argmax, Sampler, SamplerConfig};
