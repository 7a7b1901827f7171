//! The whole-model finite-difference check shared by the feature tests (f64, central differences).

use super::{ce_per_token, max_abs, Rng};
use moe_model::Transformer;

pub const N_SEQ: usize = 2;
pub const SEQ: usize = 5;
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
pub fn grad_check(name: &str, m: &mut Transformer<f64>, seed: u64) {
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

