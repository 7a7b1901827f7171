//! Model features added for Hugging Face architectures — an explicit `d_head` (≠ d_model / n_head)
//! and q/k RMSNorm (`qk_norm = "head"` as in Qwen3, `"full"` as in OLMoE) — checked like the rest of
//! the model: whole-model gradients against central finite differences in f64.

mod common;

use common::{cfg, ce_per_token, max_abs, perturb, Rng};
use moe_model::config::QkNorm;
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
    let c = parse(&BASE.replace("n_head = 2", "n_head = 3").replace("n_head_kv = 1", "n_head_kv = 3").replace("d_model = 8", "d_model = 8\nd_head = 4")).unwrap();
    assert_eq!(c.d_head(), 4);
}
