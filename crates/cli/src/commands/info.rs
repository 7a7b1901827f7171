//! `moe info`

use crate::args::InfoArgs;
use moe_model::accounting::{account, ModelAccount};
use moe_model::hf::{read_config, HfOptions};
use moe_model::{ModelConfig, RopeScaling};
use moe_train::load_experiment;

fn human(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

pub fn run(a: InfoArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.model {
        if !a.set.is_empty() {
            anyhow::bail!("--set applies to experiment configs, not to --model");
        }
        let hc = read_config(dir, &HfOptions::default())?;
        let seq_len = a.seq_len.unwrap_or(hc.cfg.n_ctx);
        let acc = account(&hc.cfg, seq_len);
        if a.json {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "architecture": hc.arch, "model": hc.cfg, "account": acc }))?);
            return Ok(());
        }
        println!("checkpoint        {} ({})", dir.display(), hc.arch);
        return print_table(&hc.cfg, &acc);
    }
    let path = match (&a.config, &a.run) {
        (Some(c), _) => c.clone(),
        (None, Some(r)) => r.join("config.resolved.toml"),
        (None, None) => anyhow::bail!("give --config FILE, --run DIR or --model HF_DIR|FILE.gguf"),
    };
    let (cfg, _) = load_experiment(&path, &a.set)?;
    let acc = account(&cfg.model, a.seq_len.unwrap_or(cfg.train.seq_len));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&acc)?);
        return Ok(());
    }
    println!("config            {}", path.display());
    print_table(&cfg.model, &acc)
}

fn print_table(m: &ModelConfig, acc: &ModelAccount) -> anyhow::Result<()> {
    println!(
        "architecture      {} layers, d_model {}, {} heads ({} KV) of {}, n_vocab {}, n_ctx {}{}{}{}",
        m.n_layer,
        m.d_model,
        m.n_head,
        m.n_head_kv,
        m.d_head(),
        m.n_vocab,
        m.n_ctx,
        if m.qk_norm.is_none() { String::new() } else { format!(", qk_norm {:?}", m.qk_norm).to_lowercase() },
        if m.attn_bias { ", q/k/v bias" } else { "" },
        if m.tie_embeddings { ", tied embeddings" } else { "" }
    );
    let opts = options(m);
    if !opts.is_empty() {
        println!("options           {}{}", opts.join(", "), if m.inference_only() { " (inference only)" } else { "" });
    }
    if let Some(moe) = &m.moe {
        println!(
            "moe               {} experts top-{} (d_expert {}), {} shared{}, {:?} gating, capacity {}",
            moe.n_expert,
            moe.n_expert_active,
            moe.d_expert,
            moe.n_expert_shared,
            if moe.shared_gate { " (sigmoid-gated)" } else { "" },
            moe.gating,
            if moe.capacity_factor > 0.0 { format!("{}", moe.capacity_factor) } else { "dropless".into() }
        );
    }
    println!(
        "parameters        {} total, {} active per token ({} in embeddings/head)",
        human(acc.params_total as f64),
        human(acc.params_active as f64),
        human(acc.params_embedding as f64)
    );
    println!("sparsity          {:.2} (n_expert / n_expert_active)", acc.sparsity);
    println!("FLOPs per token   {} forward, {} training (3×), at seq_len {}", human(acc.flops_fwd), human(acc.flops_train), acc.seq_len);
    println!();
    println!("{:>5}  {:<6} {:>8} {:>12} {:>12} {:>12}", "layer", "ffn", "n_expert", "params", "active", "fwd FLOPs");
    for l in &acc.layers {
        println!(
            "{:>5}  {:<6} {:>8} {:>12} {:>12} {:>12}",
            l.layer,
            l.kind,
            l.n_expert,
            human(l.params_total as f64),
            human(l.params_active as f64),
            human(l.flops_fwd)
        );
    }
    Ok(())
}

/// RoPE scaling and the inference-only options of imported architectures, in words.
fn options(m: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    match &m.rope_scaling {
        Some(RopeScaling::Linear { factor }) => out.push(format!("RoPE linear ×{factor}")),
        Some(RopeScaling::Llama3 { factor, original_max_position_embeddings, .. }) => {
            out.push(format!("RoPE llama3 ×{factor} from {original_max_position_embeddings}"))
        }
        Some(RopeScaling::Yarn { factor, original_max_position_embeddings, .. }) => {
            out.push(format!("RoPE yarn ×{factor} from {original_max_position_embeddings}"))
        }
        Some(RopeScaling::Factors { factors }) => {
            let (lo, hi) = factors.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &f| (lo.min(f), hi.max(f)));
            out.push(format!("RoPE per-pair factors {lo:.3}–{hi:.3} (GGUF rope_freqs)"))
        }
        None => {}
    }
    let count = |v: &[bool]| v.iter().filter(|&&x| x).count();
    if let Some(a) = &m.attn_ext {
        if let Some(l) = &a.mla {
            let q = l.q_lora_rank.map_or("no q latent".to_string(), |r| format!("q_lora {r}"));
            out.push(format!("latent attention ({q}, kv_lora {}, rope {}, d_v {})", l.kv_lora_rank, l.d_rope, l.d_v));
        }
        if a.sinks {
            out.push("attention sinks".into());
        }
        if a.out_bias {
            out.push("o bias".into());
        }
        if a.sliding_window > 0 {
            out.push(format!("sliding window {} on {} of {} layers", a.sliding_window, count(&a.window_layers), m.n_layer));
        }
        if a.attention_chunk > 0 {
            out.push(format!("chunks of {} on {} layers", a.attention_chunk, count(&a.chunk_layers)));
        }
        if !a.rope_layers.is_empty() {
            out.push(format!("{} NoPE layers", a.rope_layers.len() - count(&a.rope_layers)));
        }
        if a.qk_l2_norm {
            out.push("q/k L2 norm".into());
        }
        if a.temperature.is_some() {
            out.push("attention temperature".into());
        }
    }
    if let Some(x) = m.moe.as_ref().and_then(|mo| mo.ext.as_ref()) {
        if x.n_group > 1 {
            out.push(format!("top-{} of {} expert groups", x.topk_group, x.n_group));
        }
        for (on, what) in [
            (x.selection_bias, "fixed selection bias"),
            (x.router_bias, "router bias"),
            (x.expert_bias, "expert biases"),
            (x.scale_input, "weights scale the expert input"),
        ] {
            if on {
                out.push(what.into());
            }
        }
        if let Some(c) = x.clamped_swiglu {
            out.push(format!("clamped SwiGLU (alpha {}, limit {})", c.alpha, c.limit));
        }
    }
    out
}
