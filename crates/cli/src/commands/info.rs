//! `moe info`

use crate::args::InfoArgs;
use anyhow::Context;
use moe_model::accounting::{account, ModelAccount};
use moe_model::hf::{parse_config, HfOptions};
use moe_model::ModelConfig;
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
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let hc = parse_config(&text, &path, &HfOptions::default())?;
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
        (None, None) => anyhow::bail!("give --config FILE, --run DIR or --model HF_DIR"),
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
    println!("parameters        {} total, {} active per token ({} in embeddings/head)", human(acc.params_total as f64), human(acc.params_active as f64), human(acc.params_embedding as f64));
    println!("sparsity          {:.2} (n_expert / n_expert_active)", acc.sparsity);
    println!("FLOPs per token   {} forward, {} training (3×), at seq_len {}", human(acc.flops_fwd), human(acc.flops_train), acc.seq_len);
    println!();
    println!("{:>5}  {:<6} {:>8} {:>12} {:>12} {:>12}", "layer", "ffn", "n_expert", "params", "active", "fwd FLOPs");
    for l in &acc.layers {
        println!("{:>5}  {:<6} {:>8} {:>12} {:>12} {:>12}", l.layer, l.kind, l.n_expert, human(l.params_total as f64), human(l.params_active as f64), human(l.flops_fwd));
    }
    Ok(())
}
