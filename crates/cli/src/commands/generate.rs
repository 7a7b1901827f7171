//! `moe generate`: from a run directory, a Hugging Face checkpoint or a GGUF file.

use crate::args::EngineArg;
use crate::args::GenerateArgs;
use anyhow::Context;
use moe_data::{ChatMessage, Detokenizer, Tokenizer};
use moe_infer::{generate_until, generate_with_engine, Engine, EngineWeights, SamplerConfig};
use moe_kernels::gemv::Kernel;
use moe_model::hf::HfOptions;
use moe_model::Transformer;
use moe_train::load_run;
use std::io::Write;

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    match (&a.run, &a.model) {
        (Some(run), _) => {
            let mut run = load_run(run)?;
            let prompt = run.tokenizer.encode(&a.prompt).context("encoding the prompt")?;
            let stop: Vec<u32> = run.tokenizer.eos_token().into_iter().collect();
            stream(&a, &mut run.model, &run.tokenizer, prompt, &stop)
        }
        (None, Some(dir)) => {
            moe_serve::load::check_has_tokenizer(dir)?;
            // the fast engine converts the matrices itself: a bf16/f16 checkpoint's stay 2-byte until then
            let keep_dtype = a.engine == EngineArg::Fast;
            let mut m = moe_model::hf::load(dir, &HfOptions { keep_dtype, ..Default::default() })
                .with_context(|| format!("loading {}", dir.display()))?;
            let (tok, template) = moe_serve::load::checkpoint_tokenizer(dir, &m)?;
            // with --chat the model sees the rendered conversation (special tokens as text, which
            // the tokenizer recognises); the template adds bos itself when it wants one
            let text = if a.chat {
                let t = template.with_context(|| {
                    format!(
                        "--chat: {} has no chat template (chat_template.jinja or `chat_template` in tokenizer_config.json; `tokenizer.chat_template` of a GGUF file)",
                        dir.display()
                    )
                })?;
                let mut msgs: Vec<ChatMessage> = a.system.iter().map(|s| ChatMessage::new("system", s)).collect();
                msgs.push(ChatMessage::new("user", &a.prompt));
                t.render(&msgs, true)?
            } else {
                a.prompt.clone()
            };
            let mut prompt = Vec::new();
            if a.add_bos {
                prompt.push(m.bos_token_id.with_context(|| format!("--add-bos: {} defines no bos_token_id", dir.display()))?);
            }
            prompt.extend(tok.encode(&text).context("encoding the prompt")?);
            if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= m.cfg.n_vocab) {
                anyhow::bail!("the tokenizer produced id {bad}, outside the model's vocabulary ({})", m.cfg.n_vocab);
            }
            // every end-of-sequence id the checkpoint declares stops generation
            let stop: Vec<u32> = if m.eos_token_ids.is_empty() { tok.eos_token().into_iter().collect() } else { m.eos_token_ids.clone() };
            stream(&a, &mut m.model, &tok, prompt, &stop)
        }
        (None, None) => anyhow::bail!("give --run DIR or --model HF_DIR"),
    }
}

fn stream(a: &GenerateArgs, model: &mut Transformer<f32>, tok: &Tokenizer, prompt: Vec<u32>, stop: &[u32]) -> anyhow::Result<()> {
    if prompt.is_empty() {
        anyhow::bail!("the prompt encodes to no tokens");
    }
    let n_ctx = model.cfg.n_ctx;
    let room = n_ctx.saturating_sub(prompt.len());
    if room == 0 {
        anyhow::bail!("the prompt has {} tokens; the model's n_ctx is {}", prompt.len(), n_ctx);
    }
    let max_new = a.max_tokens.min(room);
    let sampler = SamplerConfig { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed };
    let mut stdout = std::io::stdout();
    if !a.chat {
        write!(stdout, "{}", a.prompt)?;
    }
    // incremental detokenisation, continuing the prompt: the printed text is decode(prompt ++ ids)
    let mut detok = Detokenizer::new(tok, &prompt);
    let on_token = |t: u32| {
        if stop.contains(&t) {
            return; // the end-of-sequence token is not part of the text
        }
        if let Ok(s) = detok.push(t) {
            let _ = write!(stdout, "{s}");
            let _ = stdout.flush();
        }
    };
    let out = match a.engine {
        EngineArg::Reference => generate_until(model, &prompt, max_new, &sampler, stop, on_token)?,
        EngineArg::Fast => {
            // default format: the one the checkpoint suggests (a bf16 one's, a GGUF file's nearest)
            let dtype = a.dtype.map(super::bench::dtype_of).unwrap_or_else(|| moe_infer::engine::weights::default_dtype(model));
            // converts the matrices, releasing a kept bf16/f16 checkpoint's 2-byte copies as it goes
            let w = EngineWeights::new_taking(model, dtype);
            let mut engine = Engine::with_weights(model, w, Kernel::Auto)?;
            generate_with_engine(&mut engine, &prompt, max_new, &sampler, stop, on_token)?
        }
    };
    write!(stdout, "{}", detok.finish().context("decoding the output")?)?;
    writeln!(stdout)?;
    eprintln!(
        "[{} prompt tokens at {:.0} tok/s; {} new tokens at {:.1} tok/s{}]",
        out.n_prompt,
        out.prefill_tokens_per_s,
        out.tokens.len(),
        out.decode_tokens_per_s,
        if max_new < a.max_tokens { format!("; capped at n_ctx {n_ctx}") } else { String::new() }
    );
    Ok(())
}
