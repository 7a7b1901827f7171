//! Single-sequence generation through the [`Engine`]: the same contract and output as
//! [`crate::generate`] (the reference-path twin), prefill and decode steps on the fast engine.

use super::Engine;
use crate::error::{Error, Result};
use crate::generate::{FinishReason, GenerateOutput};
use crate::kv_cache::KvCache;
use crate::sampler::{Sampler, SamplerConfig};
use std::time::Instant;

/// [`crate::generate`] on `engine`: up to `max_new_tokens` tokens after `prompt`, `on_token`
/// called with each as soon as it is chosen; stops after `stop_token`.
///
/// # Errors
/// As [`crate::generate`] (checked up front).
pub fn generate_with_engine(
    engine: &mut Engine<'_>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &SamplerConfig,
    stop_token: Option<u32>,
    mut on_token: impl FnMut(u32),
) -> Result<GenerateOutput> {
    let cfg = &engine.model().cfg;
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
    let mut tok = sampler.sample(engine.step(&mut [&mut cache], &[prompt])?);
    out.prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    loop {
        out.tokens.push(tok);
        on_token(tok);
        if stop_token == Some(tok) {
            out.finish = FinishReason::Stop;
            break;
        }
        if out.tokens.len() == max_new_tokens {
            break;
        }
        tok = sampler.sample(engine.step(&mut [&mut cache], &[[tok]])?);
    }
    out.decode_s = t1.elapsed().as_secs_f64();
    out.prefill_tokens_per_s = prompt.len() as f64 / out.prefill_s.max(1e-12);
    out.decode_tokens_per_s = out.tokens.len() as f64 / out.decode_s.max(1e-12);
    Ok(out)
}
