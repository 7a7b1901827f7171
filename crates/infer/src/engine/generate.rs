//! Single-sequence generation through the [`Engine`]: the same contract and output as
//! [`crate::generate`] (the reference-path twin), prefill and decode steps on the fast engine.

use super::Engine;
use crate::error::Result;
use crate::generate::GenerateOutput;
use crate::sampler::SamplerConfig;

/// [`crate::generate`] on `engine`: up to `max_new_tokens` tokens after `prompt`, `on_token`
/// called with each as soon as it is chosen; stops after any of `stop_tokens`.
///
/// # Errors
/// As [`crate::generate`] (checked up front).
pub fn generate_with_engine(
    engine: &mut Engine<'_>,
    prompt: &[u32],
    max_new_tokens: usize,
    sampler: &SamplerConfig,
    stop_tokens: &[u32],
    on_token: impl FnMut(u32),
) -> Result<GenerateOutput> {
    let model = engine.model();
    crate::generate::generate_loop(&model.cfg, prompt, max_new_tokens, sampler, stop_tokens, on_token, |cache, tokens, s| {
        Ok(s.sample(engine.step(&mut [cache], &[tokens])?))
    })
}
