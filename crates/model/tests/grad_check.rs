//! Whole-model gradients against central finite differences, in f64, on tiny shapes.
//!
//! Every parameter tensor is checked (its largest-gradient element plus random others). Routing is
//! piecewise constant, so an element whose ±eps perturbation changes any top-k or capacity decision
//! is skipped (and counted) instead of loosening the tolerance.

mod common;

use common::fd::{grad_check, N_SEQ, PER_TENSOR, SEQ};
use common::{cfg, perturb, Rng};
use moe_model::moe::{moe_backward, moe_forward};
use moe_model::params::FfnLayout;
use moe_model::Transformer;

const BASE: &str = "n_vocab = 11\nn_ctx = 8\nn_layer = 2\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 6\n";
fn model(text: &str, seed: u64, scale: f64) -> Transformer<f64> {
    let mut m = Transformer::<f64>::new(cfg(text), seed).unwrap();
    perturb(&mut m, scale, seed ^ 0xA5A5);
    m
}

#[test]
fn grad_dense_swiglu_matches_finite_differences() {
    let mut m = model(BASE, 1, 8.0);
    let s = grad_check("dense swiglu", &mut m, 11);
    assert_eq!(s.checked, PER_TENSOR * m.table.entries.len());
}

#[test]
fn grad_dense_gelu_tied_matches_finite_differences() {
    let text = format!("{BASE}activation = \"gelu\"\ntie_embeddings = true\n");
    let mut m = model(&text, 2, 8.0);
    assert!(m.table.get("lm_head.weight").is_none() && m.table.get("layers.0.ffn.w_gate.weight").is_none());
    grad_check("dense gelu tied", &mut m, 12);
}

#[test]
fn grad_moe_softmax_top2_dropless_with_aux_and_z_matches_finite_differences() {
    let text = format!("{BASE}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\naux_loss_coef = 0.3\nz_loss_coef = 0.05\n");
    let mut m = model(&text, 3, 8.0);
    let s = grad_check("moe softmax top-2", &mut m, 13);
    assert_eq!(s.n_dropped, 0);
    assert!(s.aux > 0.0 && s.z > 0.0, "aux {} z {}", s.aux, s.z);
}

#[test]
fn grad_moe_sigmoid_top1_shared_with_selection_bias_matches_finite_differences() {
    let text = format!(
        "{BASE}[moe]\nn_expert = 4\nn_expert_active = 1\nd_expert = 6\nn_expert_shared = 1\nd_expert_shared = 5\n\
         gating = \"sigmoid\"\nrenormalize = false\nbias_update_rate = 0.01\naux_loss_coef = 0.3\nz_loss_coef = 0.05\n"
    );
    let mut m = model(&text, 4, 8.0);
    assert!(m.table.get("layers.1.ffn.shared.w_gate.weight").is_some());
    let mut rng = Rng(44);
    let n = N_SEQ * SEQ;
    let probe = rng.tokens(n, 11);
    let unbiased = m.forward(&probe, N_SEQ, SEQ).unwrap();
    for b in m.selection_bias.iter_mut() {
        assert_eq!(b.len(), 4);
        b.copy_from_slice(&[0.15, -0.1, 0.3, 0.0]);
    }
    // the bias must change at least one choice, or this case would not test it
    let biased = m.forward(&probe, N_SEQ, SEQ).unwrap();
    let changed = unbiased.routing.iter().zip(&biased.routing).any(|(a, b)| a.routing.idx != b.routing.idx);
    assert!(changed, "selection bias changed no routing decision");
    // and the bias never enters the weights: weight = p[idx] (renormalize = false, route_scale 1)
    for r in &biased.routing {
        let r = &r.routing;
        for t in 0..n {
            assert_eq!(r.weight[t], r.probs[t * 4 + r.idx[t] as usize]);
        }
    }
    let s = grad_check("moe sigmoid top-1 shared + bias", &mut m, 14);
    assert!(s.aux > 0.0 && s.z > 0.0);
}

#[test]
fn grad_moe_switch_capacity_top1_with_drops_matches_finite_differences() {
    // N = 10, k = 1, E = 4, factor 0.5: C = ceil(0.5·10/4) = 2, so at most 8 of 10 are kept.
    let text = format!(
        "{BASE}[moe]\nn_expert = 4\nn_expert_active = 1\nd_expert = 6\ncapacity_factor = 0.5\nrenormalize = false\n\
         aux_loss_coef = 0.3\nz_loss_coef = 0.05\n"
    );
    let mut m = model(&text, 5, 8.0);
    let s = grad_check("switch capacity", &mut m, 15);
    assert!(s.n_dropped >= 2 * 2, "expected drops in both layers, got {}", s.n_dropped);
}

#[test]
fn grad_moe_top2_renormalized_capacity_with_drops_matches_finite_differences() {
    // N·k = 20 assignments, C = ceil(0.75·20/4) = 4, at most 16 kept; kept weights keep the
    // pre-drop renormalisation denominator.
    let text = format!(
        "{BASE}[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\ncapacity_factor = 0.75\naux_loss_coef = 0.3\nz_loss_coef = 0.05\n"
    );
    let mut m = model(&text, 6, 8.0);
    let s = grad_check("top-2 capacity", &mut m, 16);
    assert!(s.n_dropped >= 2 * 4, "expected drops in both layers, got {}", s.n_dropped);
}

#[test]
fn grad_moe_pyramid_sigmoid_route_scale_matches_finite_differences() {
    let text = BASE.replace("n_layer = 2", "n_layer = 3")
        + "[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 6\nfirst_dense = 1\nn_expert_per_layer = [3, 5]\n\
           gating = \"sigmoid\"\nroute_scale = 2.5\naux_loss_coef = 0.3\nz_loss_coef = 0.05\n";
    let mut m = model(&text, 7, 8.0);
    assert_eq!(m.table.get("layers.1.ffn.router.weight").unwrap().shape, vec![3, 8]);
    assert_eq!(m.table.get("layers.2.ffn.experts.w_up").unwrap().shape, vec![5, 6, 8]);
    assert!(m.table.get("layers.0.ffn.w_gate.weight").is_some());
    let s = grad_check("pyramid", &mut m, 17);
    assert_eq!(s.n_dropped, 0);
}

/// A token whose only assignment was dropped: an upstream gradient on it alone must give exactly
/// zero gradient to every expert weight, the router and the token's input.
#[test]
fn capacity_dropped_assignment_gets_exactly_zero_gradient() {
    let text = "n_vocab = 11\nn_ctx = 8\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 6\n\
                [moe]\nn_expert = 4\nn_expert_active = 1\nd_expert = 6\ncapacity_factor = 0.5\nrenormalize = false\n";
    let m = model(text, 8, 8.0);
    let FfnLayout::Moe(lay) = &m.layout.blocks[0].ffn else { panic!("layer 0 is MoE") };
    let mc = m.cfg.moe.clone().unwrap();
    let (n, d) = (12, 8);
    let mut rng = Rng(88);
    let h: Vec<f64> = (0..n * d).map(|_| rng.sym()).collect();
    let fwd = moe_forward(&m.params, lay, &mc, &[], &h, n, d, 0, None);
    let r = &fwd.saved.routing;
    let dropped: Vec<usize> = (0..n).filter(|&t| !r.kept[t]).collect();
    let kept: Vec<usize> = (0..n).filter(|&t| r.kept[t]).collect();
    assert!(!dropped.is_empty(), "capacity {} dropped nothing", (0.5f64 * n as f64 / 4.0).ceil());
    // a dropped token contributes nothing to the output
    for &t in &dropped {
        assert!(fwd.out[t * d..(t + 1) * d].iter().all(|&v| v == 0.0), "dropped token {t} has output");
    }
    let backward = |tokens: &[usize]| {
        let mut d_out = vec![0.0f64; n * d];
        for &t in tokens {
            d_out[t * d..(t + 1) * d].iter_mut().for_each(|v| *v = 1.0);
        }
        let mut g = vec![0.0f64; m.params.len()];
        let mut d_h = vec![0.0f64; n * d];
        moe_backward(&mut d_h, &mut g, &d_out, &h, &fwd.saved, &m.params, lay, &mc, n, d, 1.0, None);
        (g, d_h)
    };
    let (g, d_h) = backward(&dropped);
    let wsz = mc.d_expert * d;
    for &t in &dropped {
        let e = r.idx[t] as usize;
        for range in [&lay.w_gate, &lay.w_up, &lay.w_down] {
            assert!(
                g[range.start + e * wsz..range.start + (e + 1) * wsz].iter().all(|&v| v == 0.0),
                "expert {e} got gradient from dropped token {t}"
            );
        }
    }
    assert!(g.iter().all(|&v| v == 0.0), "some parameter got gradient from dropped tokens only");
    assert!(d_h.iter().all(|&v| v == 0.0), "d_h nonzero from dropped tokens only");
    // control: the same expert does get gradient through a kept token
    let e = r.idx[dropped[0]] as usize;
    let t_kept = *kept.iter().find(|&&t| r.idx[t] as usize == e).expect("the expert kept some token");
    let (g, _) = backward(&[t_kept]);
    assert!(g[lay.w_down.start + e * wsz..lay.w_down.start + (e + 1) * wsz].iter().any(|&v| v != 0.0));
}
