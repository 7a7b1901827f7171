//! Single-sequence generation: prefill the prompt, then KV-cached decoding one token at a time.

use crate::decode::forward_one;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::sampler::{Sampler, SamplerConfig};
use moe_kernels::Real;
use moe_model::Transformer;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` were generated
    Length,
    /// a stop token was generated (it is the last element of `tokens`)
    Stop,
}

/// Result of [`generate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateOutput {
    /// the generated tokens (not the prompt); includes the stop token when one ended generation
    pub tokens: Vec<u32>,
    /// prompt length
    pub n_prompt: usize,
    /// why generation ended
    pub finish: FinishReason,
    /// seconds spent on the prompt's forward
    pub prefill_s: f64,
    /// seconds spent sampling and on the decode forwards
    pub decode_s: f64,
    /// prompt tokens per second of prefill
    pub prefill_tokens_per_s: f64,
    /// generated tokens per second of decoding (the first token comes from the prefill logits)
    pub decode_tokens_per_s: f64,
}

/// Generate up to `max_new_tokens` tokens after `prompt`, calling `on_token` with each one as soon
/// as it is chosen (for streaming).
///
/// The prompt goes through one prefill forward; every further token costs one KV-cached decode
/// step. Generation stops after `max_new_tokens` tokens or right after `stop_token` is produced
/// (the stop token is returned and passed to `on_token`). MoE routing is dropless (see
/// [`crate::decode`]).
///
/// # Errors
/// An empty prompt, a token id outside the vocabulary, invalid sampler settings, or
/// `prompt.len() + max_new_tokens > n_ctx` — the whole sequence must fit in the context; generation
/// never silently truncates. (Checked up front, so nothing runs when it fails.)
pub fn generate<T: Real>(
    model: &Transformer<T>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &SamplerConfig,
    stop_token: Option<u32>,
    on_token: impl FnMut(u32),
) -> Result<GenerateOutput> {
    generate_until(model, prompt, max_new_tokens, sampler, stop_token.as_slice(), on_token)
}

/// [`generate`] stopping after any of `stop_tokens` (a checkpoint may declare several
/// end-of-sequence ids, e.g. Llama 3's `<|eot_id|>` and `<|end_of_text|>`).
///
/// # Errors
/// As [`generate`].
pub fn generate_until<T: Real>(
    model: &Transformer<T>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &SamplerConfig,
    stop_tokens: &[u32],
    on_token: impl FnMut(u32),
) -> Result<GenerateOutput> {
    generate_loop(&model.cfg, prompt, max_new_tokens, sampler, stop_tokens, on_token, |cache, tokens, s| {
        Ok(s.sample(&forward_one(model, cache, tokens)?))
    })
}

/// The generation loop shared by [`generate`] and [`crate::engine::generate_with_engine`]: checks,
/// one prefill step over the prompt, then one step per token; `step` runs the forward of the new
/// tokens on the cache and samples the next token from the last position's logits.
pub(crate) fn generate_loop<T: Real>(
    cfg: &moe_model::ModelConfig,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &SamplerConfig,
    stop_tokens: &[u32],
    mut on_token: impl FnMut(u32),
    mut step: impl FnMut(&mut KvCache<T>, &[u32], &mut Sampler) -> Result<u32>,
) -> Result<GenerateOutput> {
    let n_ctx = cfg.n_ctx;
    if prompt.is_empty() {
        return Err(Error::BadInput("empty prompt".into()));
    }
    if prompt.len() + max_new_tokens > n_ctx {
        return Err(Error::ContextOverflow { seq: 0, len: prompt.len(), n_new: max_new_tokens, n_ctx });
    }
    let mut sampler = Sampler::new(*sampler)?;
    let mut cache = KvCache::with_capacity(cfg, prompt.len() + max_new_tokens);
    let mut out = GenerateOutput {
        tokens: Vec::with_capacity(max_new_tokens),
        n_prompt: prompt.len(),
        finish: FinishReason::Length,
        prefill_s: 0.0,
        decode_s: 0.0,
        prefill_tokens_per_s: 0.0,
        decode_tokens_per_s: 0.0,
    };
    if max_new_tokens == 0 {
        crate::decode::validate_tokens(cfg, prompt)?;
        return Ok(out);
    }
    let t0 = Instant::now();
    let mut tok = step(&mut cache, prompt, &mut sampler)?;
    out.prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    loop {
        out.tokens.push(tok);
        on_token(tok);
        if stop_tokens.contains(&tok) {
            out.finish = FinishReason::Stop;
            break;
        }
        if out.tokens.len() == max_new_tokens {
            break;
        }
        tok = step(&mut cache, &[tok], &mut sampler)?;
    }
    out.decode_s = t1.elapsed().as_secs_f64();
    out.prefill_tokens_per_s = prompt.len() as f64 / out.prefill_s.max(1e-12);
    out.decode_tokens_per_s = out.tokens.len() as f64 / out.decode_s.max(1e-12);
    Ok(out)
}
