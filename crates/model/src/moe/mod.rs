//! The MoE FFN: router → dispatch → experts → combine (+ shared experts), with explicit backward.
//!
//! Each step lives in its own file; this module only composes them. Aux losses and routing
//! statistics come back in [`MoeForward`], never through globals.

pub mod aux;
pub mod dispatch;
pub mod experts;
pub mod parallel;
pub mod reference;
pub mod router;
pub mod stats;

use crate::config::MoeConfig;
use crate::layers::mlp::{mlp_backward, mlp_forward, MlpSaved};
use crate::params::MoeLayout;
use aux::{aux_backward_probs, aux_forward, entropy_sum, z_backward_logits, AuxLosses};
use dispatch::{dispatch, Dispatch};
use experts::{experts_backward, experts_forward, gather_rows, ExpertsSaved};
use moe_dist::Groups;
use moe_kernels::{Par, Real};
use parallel::{globalize, Exchange};
use rayon::prelude::*;
use router::{gating_backward, route, router_linear_backward, weights_backward, RouterSettings, Routing};
use stats::RoutingStats;

/// Everything the backward needs.
#[derive(Debug)]
pub struct MoeSaved<T> {
    /// routing decision (also read by callers for statistics)
    pub routing: Routing<T>,
    dispatch: Dispatch,
    experts: ExpertsSaved<T>,
    /// with expert parallelism: the exchange, and the expert outputs back in dispatch order
    exchange: Option<(Exchange, Vec<T>)>,
    shared: Option<MlpSaved<T>>,
    /// with `shared_gate`: the shared experts' output before the gate `[n_tok, d_model]` and
    /// `sigmoid(h · w_gate) [n_tok]`
    shared_gate: Option<(Vec<T>, Vec<T>)>,
}

/// Output of one MoE FFN forward.
#[derive(Debug)]
pub struct MoeForward<T> {
    /// `[n_tok, d_model]`
    pub out: Vec<T>,
    /// activations for the backward
    pub saved: MoeSaved<T>,
    /// weighted aux losses
    pub aux: AuxLosses,
    /// balance statistics
    pub stats: RoutingStats,
}

impl<T> MoeSaved<T> {
    /// The dispatch (rows of this process's assignments, sorted by expert).
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Expert outputs before the combine weights, in dispatch order `[n_rows, d_model]` (with
    /// expert parallelism: back at this process, whichever process computed them).
    pub fn expert_outputs(&self) -> &[T] {
        match &self.exchange {
            Some((_, y)) => y,
            None => &self.experts.y,
        }
    }
}

/// Forward of one MoE FFN over `h [n_tok, d_model]`.
///
/// With `dist` (several processes; collective over its groups) `h` is this process's share of
/// the batch: routing statistics, the balancing loss and capacity dropping are global over
/// `dist.world`, and the rows travel to the processes of `dist.ep` holding their experts and back
/// ([`parallel`]). The returned aux losses and statistics are this process's share (sum them over
/// the world).
#[allow(clippy::too_many_arguments)]
pub fn moe_forward<T: Real>(
    p: &[T],
    lay: &MoeLayout,
    cfg: &MoeConfig,
    selection_bias: &[f32],
    h: &[T],
    n_tok: usize,
    d_model: usize,
    layer: usize,
    dist: Option<&Groups>,
) -> MoeForward<T> {
    let settings = RouterSettings::new(cfg, lay.n_expert);
    let k = settings.k;
    // a fixed selection bias among the parameters (DeepSeek-V3) replaces the balancing one
    let fixed: Option<Vec<f32>> = lay.selection_bias.as_ref().map(|r| p[r.clone()].iter().map(|v| v.to_f32()).collect());
    let selection_bias = fixed.as_deref().unwrap_or(selection_bias);
    let router_bias = lay.router_bias.as_ref().map(|r| &p[r.clone()]);
    let mut routing = route(&p[lay.router.clone()], router_bias, h, n_tok, d_model, settings, selection_bias);
    if let Some(g) = dist {
        globalize(&mut routing, g.world.as_ref());
    }
    let disp = dispatch(&routing);
    let act = cfg.ext.as_ref().and_then(|x| x.clamped_swiglu);
    let scale_input = cfg.ext.as_ref().is_some_and(|x| x.scale_input);
    // Llama 4: the weight scales the expert's input, the output joins unweighted
    let row_weight: Option<Vec<T>> = scale_input.then(|| {
        let mut w = vec![T::ZERO; disp.n_rows()];
        for (a, &row) in disp.row_of.iter().enumerate() {
            if row != u32::MAX {
                w[row as usize] = routing.weight[a];
            }
        }
        w
    });
    let x = gather_rows(h, &disp, d_model, row_weight.as_deref());
    let (experts, exchange) = match dist.filter(|g| g.ep.size() > 1) {
        None => (experts_forward(p, lay, x, &disp.offsets, d_model, cfg.d_expert, act), None),
        Some(g) => {
            let ex = Exchange::new(g.ep.as_ref(), &disp, lay.n_local);
            let x = ex.to_experts(g.ep.as_ref(), &x, d_model);
            let e = experts_forward(p, lay, x, &ex.offsets, d_model, cfg.d_expert, act);
            let y = ex.to_source(g.ep.as_ref(), &e.y, d_model);
            (e, Some((ex, y)))
        }
    };
    let (mut out, shared, shared_gate) = match &lay.shared {
        Some(sl) => {
            let (mut o, s) = mlp_forward(p, sl, h, n_tok, d_model, Par::Pool);
            let gate = lay.shared_gate.as_ref().map(|gr| {
                // out_shared[t] = sigmoid(h[t] · w) · mlp(h[t])
                let w = &p[gr.clone()];
                let sig: Vec<T> =
                    h.chunks(d_model).map(|ht| moe_kernels::act::sigmoid_exact(ht.iter().zip(w).map(|(&a, &b)| a * b).sum())).collect();
                let pre = o.clone();
                o.chunks_mut(d_model).zip(&sig).for_each(|(row, &sg)| row.iter_mut().for_each(|x| *x *= sg));
                (pre, sig)
            });
            (o, Some(s), gate)
        }
        None => (vec![T::ZERO; n_tok * d_model], None, None),
    };
    // combine: out[t] += Σ_slots w · y[row]
    let y_rows = match &exchange {
        Some((_, y)) => y,
        None => &experts.y,
    };
    out.par_chunks_mut(d_model).enumerate().for_each(|(t, o)| {
        for s in 0..k {
            let row = disp.row_of[t * k + s];
            if row == u32::MAX {
                continue;
            }
            let w = if scale_input { T::ONE } else { routing.weight[t * k + s] };
            let y = &y_rows[row as usize * d_model..(row as usize + 1) * d_model];
            for (a, &b) in o.iter_mut().zip(y) {
                *a += w * b;
            }
        }
    });
    let aux = aux_forward(&routing, cfg.aux_loss_coef, cfg.z_loss_coef);
    let n_assign = (n_tok * k) as u64;
    let stats = RoutingStats {
        layer,
        counts: routing.counts.iter().map(|&c| c as u64).collect(),
        n_dropped: n_assign - disp.n_rows() as u64,
        n_assign,
        entropy_sum: entropy_sum(&routing),
        n_tok: n_tok as u64,
    };
    MoeForward { out, saved: MoeSaved { routing, dispatch: disp, experts, exchange, shared, shared_gate }, aux, stats }
}

/// Backward of [`moe_forward`]: **accumulates** into `d_h` and the gradients in `g`.
/// `aux_scale` multiplies the aux/z-loss gradients (the same scale the CE gradient got). With
/// `dist` (the forward's) it is collective like the forward; the expert gradients accumulated
/// are this process's experts' from the whole expert-parallel group's tokens.
#[allow(clippy::too_many_arguments)]
pub fn moe_backward<T: Real>(
    d_h: &mut [T],
    g: &mut [T],
    d_out: &[T],
    h: &[T],
    s: &MoeSaved<T>,
    p: &[T],
    lay: &MoeLayout,
    cfg: &MoeConfig,
    n_tok: usize,
    d_model: usize,
    aux_scale: f64,
    dist: Option<&Groups>,
) {
    let r = &s.routing;
    let (e, k) = (lay.n_expert, r.settings.k);
    if let (Some(sl), Some(ss)) = (&lay.shared, &s.shared) {
        match (&lay.shared_gate, &s.shared_gate) {
            (Some(gr), Some((pre, sig))) => {
                // y = σ(z)·m, z = h·w: d_m = σ·d_y, d_z = (d_y·m)·σ(1−σ), d_w = Σ d_z·h, d_h += d_z·w
                let w = &p[gr.clone()];
                let mut d_m = vec![T::ZERO; n_tok * d_model];
                let mut d_z = vec![T::ZERO; n_tok];
                for t in 0..n_tok {
                    let r = t * d_model..(t + 1) * d_model;
                    let sg = sig[t];
                    let dot: T = d_out[r.clone()].iter().zip(&pre[r.clone()]).map(|(&a, &b)| a * b).sum();
                    d_z[t] = dot * sg * (T::ONE - sg);
                    d_m[r.clone()].iter_mut().zip(&d_out[r]).for_each(|(a, &b)| *a = sg * b);
                }
                mlp_backward(d_h, g, &d_m, h, ss, p, sl, n_tok, d_model, Par::Pool);
                let gw = &mut g[gr.clone()];
                for ((&dz, ht), dht) in d_z.iter().zip(h.chunks(d_model)).zip(d_h.chunks_mut(d_model)) {
                    gw.iter_mut().zip(ht).for_each(|(a, &b)| *a += dz * b);
                    dht.iter_mut().zip(w).for_each(|(a, &b)| *a += dz * b);
                }
            }
            _ => mlp_backward(d_h, g, d_out, h, ss, p, sl, n_tok, d_model, Par::Pool),
        }
    }
    // d_weight[t,s] = d_out[t] · y[row]; d_y[row] = w · d_out[t]
    let mut d_weight = vec![T::ZERO; n_tok * k];
    let mut d_y = vec![T::ZERO; s.dispatch.n_rows() * d_model];
    d_weight.par_chunks_mut(k).enumerate().for_each(|(t, dw)| {
        let dout = &d_out[t * d_model..(t + 1) * d_model];
        for (slot, dws) in dw.iter_mut().enumerate() {
            let row = s.dispatch.row_of[t * k + slot];
            if row != u32::MAX {
                let y = &s.expert_outputs()[row as usize * d_model..(row as usize + 1) * d_model];
                *dws = dout.iter().zip(y).map(|(&a, &b)| a * b).sum();
            }
        }
    });
    d_y.par_chunks_mut(d_model).zip(s.dispatch.token.par_iter()).enumerate().for_each(|(row, (dy, &t))| {
        let t = t as usize;
        let slot = (0..k).find(|&sl| s.dispatch.row_of[t * k + sl] == row as u32).expect("row belongs to its token");
        let w = r.weight[t * k + slot];
        for (a, &b) in dy.iter_mut().zip(&d_out[t * d_model..(t + 1) * d_model]) {
            *a = w * b;
        }
    });
    let d_x = match (&s.exchange, dist) {
        (Some((ex, _)), Some(gr)) => {
            let d_y = ex.to_experts(gr.ep.as_ref(), &d_y, d_model);
            let d_x = experts_backward(g, &d_y, &s.experts, p, lay, &ex.offsets, d_model, cfg.d_expert);
            ex.to_source(gr.ep.as_ref(), &d_x, d_model)
        }
        (None, _) => experts_backward(g, &d_y, &s.experts, p, lay, &s.dispatch.offsets, d_model, cfg.d_expert),
        (Some(_), None) => panic!("an expert-parallel forward needs its groups in the backward"),
    };
    // scatter-add expert input gradients back to tokens (per token, deterministic order)
    d_h.par_chunks_mut(d_model).enumerate().for_each(|(t, dh)| {
        for slot in 0..k {
            let row = s.dispatch.row_of[t * k + slot];
            if row != u32::MAX {
                for (a, &b) in dh.iter_mut().zip(&d_x[row as usize * d_model..(row as usize + 1) * d_model]) {
                    *a += b;
                }
            }
        }
    });
    // router: weights → p, aux → p, p → z, z-loss → z, z → (h, W_router)
    let mut d_probs = vec![T::ZERO; n_tok * e];
    weights_backward(&mut d_probs, &d_weight, r);
    aux_backward_probs(&mut d_probs, r, cfg.aux_loss_coef, aux_scale);
    let mut d_logits = vec![T::ZERO; n_tok * e];
    gating_backward(&mut d_logits, &d_probs, r);
    z_backward_logits(&mut d_logits, r, cfg.z_loss_coef, aux_scale);
    router_linear_backward(d_h, &mut g[lay.router.clone()], &d_logits, h, &p[lay.router.clone()], n_tok, d_model, e);
}
