//! Model features added for Qwen2-MoE — q/k/v projection biases (`attn_bias`) and a sigmoid gate on
//! the shared experts (`moe.shared_gate`) — checked like the rest of the model: whole-model
//! gradients against central finite differences in f64.

mod common;

use common::fd::{grad_check, N_SEQ, SEQ};
use common::{cfg, perturb};
use moe_model::Transformer;

const BASE: &str = "n_vocab = 11\nn_ctx = 8\nn_layer = 2\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 6\n";
/// Biases start at zero; `perturb` moves them to ±0.3 so they change the forward.
fn model(text: &str, seed: u64) -> Transformer<f64> {
    let mut m = Transformer::<f64>::new(cfg(text), seed).unwrap();
    perturb(&mut m, 8.0, seed ^ 0xA5A5);
    m
}

#[test]
fn attn_bias_dense_matches_finite_differences() {
    let mut m = model(&format!("{BASE}attn_bias = true\n"), 41);
    for (n, shape) in [("layers.0.attn.wq.bias", 8), ("layers.0.attn.wk.bias", 4), ("layers.1.attn.wv.bias", 4)] {
        let e = m.table.get(n).unwrap();
        assert_eq!(e.shape, vec![shape], "{n}");
        assert!(!e.decay, "{n} must not be weight-decayed");
    }
    assert!(
        Transformer::<f64>::new(cfg(&format!("{BASE}attn_bias = true\n")), 0).unwrap().params
            [m.table.get("layers.0.attn.wq.bias").unwrap().range()]
        .iter()
        .all(|&b| b == 0.0),
        "biases start at zero"
    );
    grad_check("attn_bias dense", &mut m, 51);
}

#[test]
fn shared_gate_moe_with_attn_bias_matches_finite_differences() {
    // Qwen2-MoE shape: a leading dense layer, renormalised softmax top-2, one gated shared expert
    let text = BASE.replace("n_layer = 2", "n_layer = 3")
        + "attn_bias = true\n[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\nn_expert_shared = 1\nd_expert_shared = 5\n\
           shared_gate = true\nfirst_dense = 1\naux_loss_coef = 0.3\nz_loss_coef = 0.05\n";
    let mut m = model(&text, 42);
    let e = m.table.get("layers.1.ffn.shared_gate.weight").unwrap();
    assert_eq!(e.shape, vec![1, 8]);
    assert!(m.table.get("layers.0.ffn.shared_gate.weight").is_none());
    grad_check("shared_gate + attn_bias MoE", &mut m, 52);
}

#[test]
fn shared_gate_with_two_shared_experts_sigmoid_routing_and_qk_norm_matches_finite_differences() {
    let text = format!(
        "{BASE}attn_bias = true\nqk_norm = \"head\"\n[moe]\nn_expert = 4\nn_expert_active = 1\nd_expert = 6\nn_expert_shared = 2\n\
         d_expert_shared = 3\nshared_gate = true\ngating = \"sigmoid\"\nrenormalize = false\n"
    );
    let mut m = model(&text, 43);
    grad_check("shared_gate ×2, sigmoid, qk_norm + attn_bias", &mut m, 53);
}

#[test]
fn shared_gate_changes_the_output_exactly_as_sigmoid_scaling() {
    // with the gate weight at zero, σ(0) = 1/2: the shared experts' contribution is halved
    let text = format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\nn_expert_shared = 1\n");
    let ungated = model(&text, 44);
    let gated_text = text.clone() + "shared_gate = true\n";
    let mut gated = Transformer::<f64>::zeros(cfg(&gated_text)).unwrap();
    for e in ungated.table.entries.iter() {
        let r = gated.table.get(&e.name).unwrap().range();
        gated.params[r].copy_from_slice(&ungated.params[e.range()]);
    }
    let mut halved = ungated.clone();
    for i in 0..2 {
        let r = halved.table.get(&format!("layers.{i}.ffn.shared.w_down.weight")).unwrap().range();
        halved.params[r].iter_mut().for_each(|v| *v *= 0.5);
    }
    let toks: Vec<u32> = (0..10).map(|i| (i * 3 % 11) as u32).collect();
    let a = gated.forward(&toks, N_SEQ, SEQ).unwrap().logits;
    let b = halved.forward(&toks, N_SEQ, SEQ).unwrap().logits;
    common::assert_close("σ(0)·shared vs shared/2", &a, &b, 1e-12, 1e-12);
}

#[test]
fn attn_bias_and_shared_gate_config_rules() {
    let parse = |s: &str| {
        let v: toml::Value = toml::from_str(s).unwrap();
        moe_model::ModelConfig::from_toml_value(v)
    };
    let e = parse(&format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\nshared_gate = true\n")).unwrap_err().to_string();
    assert!(e.contains("model.moe.shared_gate") && e.contains("n_expert_shared"), "{e}");
    // defaults stay out of serialised configs; set values survive serde
    let plain = serde_json::to_string(&cfg(&format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\n"))).unwrap();
    assert!(!plain.contains("attn_bias") && !plain.contains("shared_gate"), "{plain}");
    let c = cfg(&format!(
        "{BASE}attn_bias = true\n[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\nn_expert_shared = 1\nshared_gate = true\n"
    ));
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains("\"attn_bias\":true") && json.contains("\"shared_gate\":true"), "{json}");
    // checkpoints round-trip the new tensors
    let m = Transformer::<f32>::new(c.clone(), 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    m.save(&p).unwrap();
    assert!(Transformer::<f32>::load(c, &p).unwrap().params == m.params);
}
