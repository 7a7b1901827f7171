//! Decode speed of a trained model: KV-cached greedy decoding of random prompts at batch sizes
//! 1, 8 and 64 via [`moe_infer::bench_decode`].

use crate::error::Result;
use moe_infer::{bench_decode, DecodeBench};
use moe_model::Transformer;

/// Benchmark `model` at `batches` with prompts of `prompt_len` tokens and `n_decode` new tokens
/// (both clamped so they fit `n_ctx`). One untimed warm-up pass at batch 1 comes first.
pub fn decode_speed(model: &Transformer<f32>, batches: &[usize], prompt_len: usize, n_decode: usize, seed: u64) -> Result<Vec<DecodeBench>> {
    let n_ctx = model.cfg.n_ctx;
    let prompt_len = prompt_len.clamp(1, n_ctx.saturating_sub(1).max(1));
    let n_decode = n_decode.min(n_ctx - prompt_len).max(1);
    bench_decode(model, &[1], prompt_len, n_decode.min(4), seed)?;
    Ok(bench_decode(model, batches, prompt_len, n_decode, seed)?)
}
