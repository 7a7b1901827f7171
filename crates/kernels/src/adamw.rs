//! AdamW update, as `torch.optim.AdamW` (decoupled weight decay, bias correction).

use rayon::prelude::*;

/// Hyper-parameters of one AdamW step.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// learning rate
    pub lr: f32,
    /// first-moment decay
    pub beta1: f32,
    /// second-moment decay
    pub beta2: f32,
    /// denominator epsilon
    pub eps: f32,
    /// decoupled weight decay (0 for parameters that are not decayed)
    pub weight_decay: f32,
    /// 1-based step count, for bias correction
    pub t: u64,
}

/// One AdamW step over a parameter slice and its gradient and moments (`s.t >= 1`, checked).
pub fn adamw_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWStep) {
    assert!(p.len() == g.len() && p.len() == m.len() && p.len() == v.len(), "adamw_update: lengths");
    assert!(s.t >= 1, "adamw_update: step count t is 1-based, got 0");
    let bc1 = 1.0 - (s.beta1 as f64).powi(s.t as i32);
    let bc2 = 1.0 - (s.beta2 as f64).powi(s.t as i32);
    let step = (s.lr as f64 / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let decay = 1.0 - s.lr * s.weight_decay;
    p.par_iter_mut()
        .zip(g.par_iter())
        .zip(m.par_iter_mut().zip(v.par_iter_mut()))
        .with_min_len(4096)
        .for_each(|((p, &g), (m, v))| {
            *p *= decay;
            *m = s.beta1 * *m + (1.0 - s.beta1) * g;
            *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
            *p -= step * *m / ((*v).sqrt() / bc2_sqrt + s.eps);
        });
}
