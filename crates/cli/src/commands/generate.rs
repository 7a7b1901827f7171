//! `moe generate`

use crate::args::GenerateArgs;
use anyhow::Context;
use moe_infer::{generate, SamplerConfig};
use moe_train::load_run;
use std::io::Write;

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let run = load_run(&a.run)?;
    let prompt = run.tokenizer.encode(&a.prompt).context("encoding the prompt")?;
    let room = run.model.cfg.n_ctx.saturating_sub(prompt.len());
    if room == 0 {
        anyhow::bail!("the prompt has {} tokens; the model's n_ctx is {}", prompt.len(), run.model.cfg.n_ctx);
    }
    let max_new = a.max_tokens.min(room);
    let sampler = SamplerConfig { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed };
    let stop = run.tokenizer.eos_token();
    let mut stdout = std::io::stdout();
    write!(stdout, "{}", a.prompt)?;
    let mut pending: Vec<u32> = Vec::new();
    let tok = &run.tokenizer;
    let out = generate(&run.model, &prompt, max_new, &sampler, stop, |t| {
        // decode incrementally; hold back bytes that do not form complete UTF-8 yet
        pending.push(t);
        if let Ok(s) = tok.decode(&pending) {
            if !s.contains('\u{FFFD}') {
                let _ = write!(stdout, "{s}");
                let _ = stdout.flush();
                pending.clear();
            }
        }
    })?;
    if !pending.is_empty() {
        write!(stdout, "{}", tok.decode(&pending).unwrap_or_default())?;
    }
    writeln!(stdout)?;
    eprintln!(
        "[{} prompt tokens at {:.0} tok/s; {} new tokens at {:.1} tok/s{}]",
        out.n_prompt,
        out.prefill_tokens_per_s,
        out.tokens.len(),
        out.decode_tokens_per_s,
        if max_new < a.max_tokens { format!("; capped at n_ctx {}", run.model.cfg.n_ctx) } else { String::new() }
    );
    Ok(())
}
