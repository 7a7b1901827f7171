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
    let k = Consts { decay, beta1: s.beta1, beta2: s.beta2, step, bc2_sqrt, eps: s.eps };
    // Chunks of plain slices (not zipped element iterators) so the loop vectorises; on CPUs
    // with AVX-512 the same loop is compiled for it and picked at run time.
    p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK))).for_each(
        |((p, g), (m, v))| {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                unsafe { update_avx512(p, g, m, v, k) };
                return;
            }
            update(p, g, m, v, k);
        },
    );
}

const CHUNK: usize = 1 << 14;

#[derive(Clone, Copy)]
struct Consts {
    decay: f32,
    beta1: f32,
    beta2: f32,
    step: f32,
    bc2_sqrt: f32,
    eps: f32,
}

#[inline(always)]
fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: Consts) {
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let mi = k.beta1 * m[i] + (1.0 - k.beta1) * gi;
        let vi = k.beta2 * v[i] + (1.0 - k.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * k.decay - k.step * mi / (vi.sqrt() / k.bc2_sqrt + k.eps);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn update_avx512(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: Consts) {
    update(p, g, m, v, k)
}
