//! Model features added for Hugging Face architectures — an explicit `d_head` (≠ d_model / n_head)
//! and q/k RMSNorm (`qk_norm = "head"` as in Qwen3, `"full"` as in OLMoE) — checked like the rest of
//! the model: whole-model gradients against central finite differences in f64.

mod common;

use common::fd::{grad_check, N_SEQ, SEQ};
use common::{cfg, perturb};
use moe_model::config::QkNorm;
use moe_model::Transformer;

const BASE: &str = "n_vocab = 11\nn_ctx = 8\nn_layer = 2\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 6\n";
fn model(text: &str, seed: u64) -> Transformer<f64> {
    let mut m = Transformer::<f64>::new(cfg(text), seed).unwrap();
    perturb(&mut m, 8.0, seed ^ 0xA5A5);
    m
}

#[test]
fn qk_norm_head_with_explicit_d_head_matches_finite_differences() {
    // d_head 6 ≠ d_model / n_head = 4: wq [12, 8], wo [8, 12], q_norm/k_norm [6]
    let text = format!("{BASE}d_head = 6\nqk_norm = \"head\"\n");
    let mut m = model(&text, 21);
    assert_eq!(m.cfg.qk_norm, QkNorm::Head);
    assert_eq!(m.table.get("layers.0.attn.wq.weight").unwrap().shape, vec![12, 8]);
    assert_eq!(m.table.get("layers.0.attn.wo.weight").unwrap().shape, vec![8, 12]);
    for n in ["layers.1.attn.q_norm.weight", "layers.1.attn.k_norm.weight"] {
        let e = m.table.get(n).unwrap();
        assert_eq!(e.shape, vec![6], "{n}");
        assert!(!e.decay, "{n} must not be weight-decayed");
    }
    grad_check("qk_norm head, d_head 6", &mut m, 31);
}

#[test]
fn qk_norm_full_width_moe_matches_finite_differences() {
    let text = format!(
        "{BASE}qk_norm = \"full\"\n[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\nrenormalize = false\naux_loss_coef = 0.3\nz_loss_coef = 0.05\n"
    );
    let mut m = model(&text, 22);
    assert_eq!(m.table.get("layers.0.attn.q_norm.weight").unwrap().shape, vec![8]); // n_head·d_head
    assert_eq!(m.table.get("layers.0.attn.k_norm.weight").unwrap().shape, vec![4]); // n_head_kv·d_head
    grad_check("qk_norm full, MoE", &mut m, 32);
}

#[test]
fn qk_norm_head_tied_gelu_small_heads_matches_finite_differences() {
    let text = BASE.replace("n_head = 2", "n_head = 4").replace("n_head_kv = 1", "n_head_kv = 2")
        + "d_head = 2\nqk_norm = \"head\"\ntie_embeddings = true\nactivation = \"gelu\"\n";
    let mut m = model(&text, 23);
    grad_check("qk_norm head, d_head 2, tied gelu", &mut m, 33);
}

#[test]
fn qk_norm_f32_forward_matches_f64_and_checkpoints_round_trip() {
    let text = format!("{BASE}d_head = 6\nqk_norm = \"head\"\n");
    let m64 = model(&text, 24);
    let m32: Transformer<f32> = m64.cast();
    let toks = [1u32, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    let a = m64.forward(&toks, N_SEQ, SEQ).unwrap().logits;
    let b = m32.forward(&toks, N_SEQ, SEQ).unwrap().logits;
    common::assert_close("f32 vs f64 logits", &b, &a, 1e-4, 1e-4);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    m32.save(&p).unwrap();
    let back = Transformer::<f32>::load(m32.cfg.clone(), &p).unwrap();
    assert!(back.params == m32.params);
    // the config survives serde, and the defaults stay out of serialised configs
    let json = serde_json::to_string(&m32.cfg).unwrap();
    assert!(json.contains("\"qk_norm\":\"head\"") && json.contains("\"d_head\":6"), "{json}");
    let plain = serde_json::to_string(&cfg(BASE)).unwrap();
    assert!(!plain.contains("qk_norm") && !plain.contains("d_head"), "{plain}");
}

#[test]
fn qk_norm_and_d_head_config_errors_name_the_field() {
    let parse = |s: &str| {
        let v: toml::Value = toml::from_str(s).unwrap();
        moe_model::ModelConfig::from_toml_value(v)
    };
    let e = parse(&format!("{BASE}d_head = 5\n")).unwrap_err().to_string();
    assert!(e.contains("model.d_head") && e.contains("even"), "{e}");
    let e = parse(&format!("{BASE}qk_norm = \"rows\"\n")).unwrap_err().to_string();
    assert!(e.contains("qk_norm") || e.contains("rows"), "{e}");
    // with an explicit d_head, d_model need not be divisible by n_head
    let c = parse(
        &BASE
            .replace("n_head = 2", "n_head = 3")
            .replace("n_head_kv = 1", "n_head_kv = 3")
            .replace("d_model = 8", "d_model = 8\nd_head = 4"),
    )
    .unwrap();
    assert_eq!(c.d_head(), 4);
}

#[test]
fn rope_scaling_llama3_and_yarn_match_finite_differences() {
    // a scaled RoPE changes the rotation table (YaRN also scales it by its attention factor); the
    // backward applies the transposed table, so training works as for plain RoPE
    for (seed, scaling) in [
        (41, "type = \"llama3\"\nfactor = 4.0\nlow_freq_factor = 1.0\nhigh_freq_factor = 4.0\noriginal_max_position_embeddings = 4\n"),
        (42, "type = \"yarn\"\nfactor = 4.0\nbeta_fast = 32.0\nbeta_slow = 1.0\noriginal_max_position_embeddings = 4\ntruncate = false\nattention_factor = 1.2\n"),
    ] {
        let text = format!("{BASE}d_head = 6\nqk_norm = \"head\"\n[rope_scaling]\n{scaling}");
        let mut m = model(&text, seed);
        assert!(m.cfg.rope_scaling.is_some() && !m.cfg.inference_only());
        grad_check(&format!("rope scaling {seed}"), &mut m, seed + 10);
    }
}
