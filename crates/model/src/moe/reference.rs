//! The per-token oracle of the MoE FFN forward: plain loops, no dispatch, no grouping.
//! Tests compare [`super::moe_forward`] with it.

use crate::config::{ClampedSwiglu, Gating, MoeConfig};
use crate::params::MoeLayout;
use moe_kernels::Real;

fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.to_f64() * y.to_f64()).sum()
}

/// Expert biases `(gate [f], up [f], down [d])` of one expert, when the layout has them.
type Biases<'a> = Option<(&'a [f64], &'a [f64], &'a [f64])>;

fn swiglu_mlp(x: &[f64], wg: &[f64], wu: &[f64], wd: &[f64], d: usize, f: usize) -> Vec<f64> {
    expert_mlp(x, wg, wu, wd, d, f, None, None)
}

/// SwiGLU (or GPT-OSS's clamped variant) with optional biases, plain loops.
#[allow(clippy::too_many_arguments)]
fn expert_mlp(
    x: &[f64],
    wg: &[f64],
    wu: &[f64],
    wd: &[f64],
    d: usize,
    f: usize,
    bias: Biases<'_>,
    clamp: Option<ClampedSwiglu>,
) -> Vec<f64> {
    let act: Vec<f64> = (0..f)
        .map(|j| {
            let mut g = dot(&wg[j * d..(j + 1) * d], x);
            let mut u = dot(&wu[j * d..(j + 1) * d], x);
            if let Some((bg, bu, _)) = bias {
                g += bg[j];
                u += bu[j];
            }
            match clamp {
                None => g / (1.0 + (-g).exp()) * u,
                Some(c) => {
                    let g = g.min(c.limit);
                    let u = u.clamp(-c.limit, c.limit);
                    (u + 1.0) * g / (1.0 + (-c.alpha * g).exp())
                }
            }
        })
        .collect();
    (0..d).map(|i| dot(&wd[i * f..(i + 1) * f], &act) + bias.map_or(0.0, |(_, _, bd)| bd[i])).collect()
}

/// MoE output for `h [n_tok, d_model]`, token by token, in f64.
pub fn moe_forward_reference<T: Real>(
    p: &[T],
    lay: &MoeLayout,
    cfg: &MoeConfig,
    selection_bias: &[f32],
    h: &[T],
    n_tok: usize,
    d: usize,
) -> Vec<f64> {
    let e = lay.n_expert;
    let k = cfg.n_expert_active;
    let de = cfg.d_expert;
    let pf: Vec<f64> = p.iter().map(|v| v.to_f64()).collect();
    let hf: Vec<f64> = h.iter().map(|v| v.to_f64()).collect();
    let wr = &pf[lay.router.clone()];
    let ext = cfg.ext.clone().unwrap_or_default();
    let fixed: Option<Vec<f32>> = lay.selection_bias.as_ref().map(|r| pf[r.clone()].iter().map(|&v| v as f32).collect());
    let selection_bias = fixed.as_deref().unwrap_or(selection_bias);
    // 1. per-token gate values and choices
    let mut probs = vec![0.0; n_tok * e];
    let mut chosen: Vec<Vec<usize>> = Vec::with_capacity(n_tok);
    for t in 0..n_tok {
        let x = &hf[t * d..(t + 1) * d];
        let z: Vec<f64> =
            (0..e).map(|j| dot(&wr[j * d..(j + 1) * d], x) + lay.router_bias.as_ref().map_or(0.0, |b| pf[b.start + j])).collect();
        let pr: Vec<f64> = match cfg.gating {
            Gating::Softmax => {
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
                z.iter().map(|v| (v - m).exp() / s).collect()
            }
            Gating::Sigmoid => z.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
        };
        let mut choice: Vec<f64> = (0..e).map(|j| pr[j] + selection_bias.get(j).map_or(0.0, |&b| b as f64)).collect();
        if ext.n_group > 1 {
            // keep the topk_group groups with the largest sum of their two best choices
            let gs = e / ext.n_group;
            let mut groups: Vec<(f64, usize)> = (0..ext.n_group)
                .map(|g| {
                    let mut c = choice[g * gs..(g + 1) * gs].to_vec();
                    c.sort_by(|a, b| b.partial_cmp(a).expect("finite"));
                    (c.iter().take(2).sum(), g)
                })
                .collect();
            groups.sort_by(|a, b| b.0.partial_cmp(&a.0).expect("finite").then(a.1.cmp(&b.1)));
            for &(_, g) in &groups[ext.topk_group..] {
                choice[g * gs..(g + 1) * gs].iter_mut().for_each(|v| *v = f64::NEG_INFINITY);
            }
        }
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| choice[b].partial_cmp(&choice[a]).expect("finite").then(a.cmp(&b)));
        order.truncate(k);
        probs[t * e..(t + 1) * e].copy_from_slice(&pr);
        chosen.push(order);
    }
    // 2. capacity: per expert keep the largest gate values
    let mut kept = vec![vec![true; k]; n_tok];
    if cfg.capacity_factor > 0.0 {
        let cap = (cfg.capacity_factor * (n_tok * k) as f64 / e as f64).ceil() as usize;
        for j in 0..e {
            let mut cand: Vec<(usize, usize)> = Vec::new();
            for (t, ch) in chosen.iter().enumerate() {
                for (s, &c) in ch.iter().enumerate() {
                    if c == j {
                        cand.push((t, s));
                    }
                }
            }
            cand.sort_by(|a, b| probs[b.0 * e + j].partial_cmp(&probs[a.0 * e + j]).expect("finite").then(a.0.cmp(&b.0)));
            for &(t, s) in cand.iter().skip(cap) {
                kept[t][s] = false;
            }
        }
    }
    // 3. experts, token by token
    let mut out = vec![0.0; n_tok * d];
    for t in 0..n_tok {
        let x = &hf[t * d..(t + 1) * d];
        let sel_sum: f64 = chosen[t].iter().map(|&j| probs[t * e + j]).sum();
        let o = &mut out[t * d..(t + 1) * d];
        for (s, &j) in chosen[t].iter().enumerate() {
            if !kept[t][s] {
                continue;
            }
            let mut w = probs[t * e + j];
            if cfg.renormalize {
                w /= sel_sum;
            }
            w *= cfg.route_scale;
            let wsz = de * d;
            // Llama 4 scales the expert's input by the weight instead of its output
            let xin: Vec<f64> = x.iter().map(|&v| if ext.scale_input { v * w } else { v }).collect();
            let bias = lay.expert_bias.as_ref().map(|b| {
                (
                    &pf[b[0].start + j * de..b[0].start + (j + 1) * de],
                    &pf[b[1].start + j * de..b[1].start + (j + 1) * de],
                    &pf[b[2].start + j * d..b[2].start + (j + 1) * d],
                )
            });
            let y = expert_mlp(
                &xin,
                &pf[lay.w_gate.start + j * wsz..lay.w_gate.start + (j + 1) * wsz],
                &pf[lay.w_up.start + j * wsz..lay.w_up.start + (j + 1) * wsz],
                &pf[lay.w_down.start + j * wsz..lay.w_down.start + (j + 1) * wsz],
                d,
                de,
                bias,
                ext.clamped_swiglu,
            );
            let w_out = if ext.scale_input { 1.0 } else { w };
            for (a, b) in o.iter_mut().zip(y) {
                *a += w_out * b;
            }
        }
        if let Some(sl) = &lay.shared {
            let y =
                swiglu_mlp(x, &pf[sl.w_gate.clone().expect("shared is swiglu")], &pf[sl.w_up.clone()], &pf[sl.w_down.clone()], d, sl.d_ff);
            // Qwen2-MoE: the shared experts' output times sigmoid(x · w_shared_gate)
            let g = lay.shared_gate.as_ref().map_or(1.0, |gr| 1.0 / (1.0 + (-dot(&pf[gr.clone()], x)).exp()));
            for (a, b) in o.iter_mut().zip(y) {
                *a += g * b;
            }
        }
    }
    out
}
