//! Model features added for Qwen2-MoE — q/k/v projection biases (`attn_bias`) and a sigmoid gate on
//! the shared experts (`moe.shared_gate`) — checked like the rest of the model: whole-model
//! gradients against central finite differences in f64.

mod common;

use common::{cfg, ce_per_token, max_abs, perturb, Rng};
use moe_model::Transformer;

const BASE: &str = "n_vocab = 11\nn_ctx = 8\nn_layer = 2\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 6\n";
const N_SEQ: usize = 2;
const SEQ: usize = 5;
const EPS: f64 = 1e-5;
const ATOL: f64 = 1e-6;
const RTOL: f64 = 1e-5;
const PER_TENSOR: usize = 4;

fn eval(m: &Transformer<f64>, inputs: &[u32], targets: &[u32]) -> (f64, Vec<Vec<u32>>) {
    let out = m.forward(inputs, N_SEQ, SEQ).unwrap();
    let ce = ce_per_token(&out.logits, targets, m.cfg.n_vocab);
    let ce = ce.iter().sum::<f64>() / ce.len() as f64;
    let extra: f64 = out.moe.iter().map(|r| r.aux.aux + r.aux.z).sum();
    (ce + extra, out.routing.iter().map(|r| r.routing.idx.clone()).collect())
}

/// Every tensor: its largest-gradient element plus random others; elements whose ±eps flips a
/// routing decision are skipped (routing is piecewise constant).
fn grad_check(name: &str, m: &mut Transformer<f64>, seed: u64) {
    let mut rng = Rng(seed);
    let n = N_SEQ * SEQ;
    let inputs = rng.tokens(n, m.cfg.n_vocab);
    let targets = rng.tokens(n, m.cfg.n_vocab);
    let mut grads = vec![0.0f64; m.params.len()];
    let rep = m.forward_backward(&inputs, &targets, N_SEQ, SEQ, &mut grads, 1.0).unwrap();
    let (base, base_dec) = eval(m, &inputs, &targets);
    assert!((base - rep.loss).abs() <= 1e-12 * base.abs().max(1.0), "{name}: forward {base} vs forward_backward {}", rep.loss);
    let (mut failures, mut checked, mut skipped) = (Vec::new(), 0, 0);
    for e in m.table.entries.clone() {
        let g = &grads[e.range()];
        let gmax = max_abs(g);
        assert!(gmax > 0.0, "{name}: tensor {} has an all-zero gradient", e.name);
        let arg = g.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap().0;
        let mut order = vec![arg];
        let mut rest: Vec<usize> = (0..e.len).filter(|&i| i != arg).collect();
        for i in (1..rest.len()).rev() {
            rest.swap(i, rng.below(i + 1));
        }
        order.extend(rest);
        let want = PER_TENSOR.min(e.len);
        let mut done = 0;
        for &i in &order {
            if done == want {
                break;
            }
            let at = e.offset + i;
            let orig = m.params[at];
            m.params[at] = orig + EPS;
            let (plus, dp) = eval(m, &inputs, &targets);
            m.params[at] = orig - EPS;
            let (minus, dm) = eval(m, &inputs, &targets);
            m.params[at] = orig;
            if dp != base_dec || dm != base_dec {
                skipped += 1;
                continue;
            }
            let numeric = (plus - minus) / (2.0 * EPS);
            let analytic = grads[at];
            let tol = ATOL + RTOL * gmax;
            if (analytic - numeric).abs() > tol {
                failures.push(format!("{}[{i}]: analytic {analytic:e}, numeric {numeric:e} (tol {tol:e})", e.name));
            }
            done += 1;
        }
        assert_eq!(done, want, "{name}: tensor {}: too many routing flips", e.name);
        checked += done;
    }
    assert!(failures.is_empty(), "{name}: gradient mismatches:\n{}", failures.join("\n"));
    assert!(skipped * 10 <= checked, "{name}: {skipped} skipped vs {checked} checked");
    eprintln!("{name}: {checked} elements checked, {skipped} skipped for routing flips");
}

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
    assert!(Transformer::<f64>::new(cfg(&format!("{BASE}attn_bias = true\n")), 0).unwrap().params[m.table.get("layers.0.attn.wq.bias").unwrap().range()].iter().all(|&b| b == 0.0), "biases start at zero");
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
    let c = cfg(&format!("{BASE}attn_bias = true\n[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\nn_expert_shared = 1\nshared_gate = true\n"));
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains("\"attn_bias\":true") && json.contains("\"shared_gate\":true"), "{json}");
    // checkpoints round-trip the new tensors
    let m = Transformer::<f32>::new(c.clone(), 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    m.save(&p).unwrap();
    assert!(Transformer::<f32>::load(c, &p).unwrap().params == m.params);
}
