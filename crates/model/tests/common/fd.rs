//! The whole-model finite-difference check shared by the gradient tests (f64, central differences).
//!
//! Every parameter tensor is checked (its largest-gradient element plus random others). Routing is
//! piecewise constant, so an element whose ±eps perturbation changes any top-k or capacity decision
//! is skipped (and counted) instead of loosening the tolerance.

use super::{ce_per_token, max_abs, Rng};
use moe_model::Transformer;

pub const N_SEQ: usize = 2;
pub const SEQ: usize = 5;
const EPS: f64 = 1e-5;
const ATOL: f64 = 1e-6;
const RTOL: f64 = 1e-5;
pub const PER_TENSOR: usize = 4;

/// Routing decisions of every MoE layer: (idx, kept).
type Decisions = Vec<(Vec<u32>, Vec<bool>)>;

struct Eval {
    loss: f64,
    decisions: Decisions,
    n_dropped: u64,
}

fn eval(m: &Transformer<f64>, inputs: &[u32], targets: &[u32]) -> Eval {
    let out = m.forward(inputs, N_SEQ, SEQ).unwrap();
    let ce = ce_per_token(&out.logits, targets, m.cfg.n_vocab);
    let ce = ce.iter().sum::<f64>() / ce.len() as f64;
    let extra: f64 = out.moe.iter().map(|r| r.aux.aux + r.aux.z).sum();
    let decisions = out.routing.iter().map(|r| (r.routing.idx.clone(), r.routing.kept.clone())).collect();
    let n_dropped = out.moe.iter().map(|r| r.stats.n_dropped).sum();
    Eval { loss: ce + extra, decisions, n_dropped }
}

pub struct Summary {
    pub checked: usize,
    pub n_dropped: u64,
    pub aux: f64,
    pub z: f64,
}

/// Check every tensor of `m` against central differences of the total loss.
pub fn grad_check(name: &str, m: &mut Transformer<f64>, data_seed: u64) -> Summary {
    let mut rng = Rng(data_seed);
    let n = N_SEQ * SEQ;
    let inputs = rng.tokens(n, m.cfg.n_vocab);
    let targets = rng.tokens(n, m.cfg.n_vocab);
    let mut grads = vec![0.0f64; m.params.len()];
    let rep = m.forward_backward(&inputs, &targets, N_SEQ, SEQ, &mut grads, 1.0).unwrap();
    let base = eval(m, &inputs, &targets);
    assert!(
        (base.loss - rep.loss).abs() <= 1e-12 * rep.loss.abs().max(1.0),
        "{name}: forward loss {} vs forward_backward loss {}",
        base.loss,
        rep.loss
    );

    let mut checked = 0;
    let mut skipped = 0;
    let mut failures = Vec::new();
    for e in m.table.entries.clone() {
        let g = &grads[e.range()];
        let gmax = max_abs(g);
        assert!(gmax > 0.0, "{name}: tensor {} has an all-zero gradient; the test shape does not exercise it", e.name);
        // the largest-gradient element first, then random others
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
            let plus = eval(m, &inputs, &targets);
            m.params[at] = orig - EPS;
            let minus = eval(m, &inputs, &targets);
            m.params[at] = orig;
            if plus.decisions != base.decisions || minus.decisions != base.decisions {
                skipped += 1;
                continue;
            }
            let numeric = (plus.loss - minus.loss) / (2.0 * EPS);
            let analytic = grads[at];
            let tol = ATOL + RTOL * gmax;
            if (analytic - numeric).abs() > tol {
                failures.push(format!("{}[{i}]: analytic {analytic:e}, numeric {numeric:e} (tol {tol:e})", e.name));
            }
            done += 1;
        }
        assert_eq!(done, want, "{name}: tensor {}: only {done} of {want} elements had stable routing under ±eps", e.name);
        checked += done;
    }
    assert!(failures.is_empty(), "{name}: gradient mismatches:\n{}", failures.join("\n"));
    // flips must stay rare, or the check would silently cover little
    assert!(skipped * 10 <= checked, "{name}: {skipped} elements skipped for routing flips vs {checked} checked");
    eprintln!("{name}: {checked} elements checked, {skipped} skipped for routing flips, {} dropped", base.n_dropped);
    Summary { checked, n_dropped: base.n_dropped, aux: rep.aux, z: rep.z }
}
