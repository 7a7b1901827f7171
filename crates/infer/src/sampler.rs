//! Next-token sampling: greedy, temperature, top-k, top-p (nucleus), deterministic in a seed.

use crate::error::{Error, Result};
use moe_kernels::rng::Rng;
use moe_kernels::Real;
use serde::{Deserialize, Serialize};

/// Sampling settings. The defaults are greedy decoding.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// softmax temperature; 0 = greedy (argmax, ties to the lower token id)
    pub temperature: f32,
    /// keep only the k most likely tokens; 0 = off
    pub top_k: usize,
    /// keep the smallest set of most likely tokens whose probability reaches `top_p`; 1.0 = off
    pub top_p: f32,
    /// seed of the sampling random stream
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl SamplerConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Check the ranges: `temperature ≥ 0` and finite, `0 < top_p ≤ 1`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidSampler {
                field: "temperature",
                reason: format!("{} must be a finite number ≥ 0 (0 = greedy)", self.temperature),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidSampler { field: "top_p", reason: format!("{} must be in (0, 1] (1 = off)", self.top_p) });
        }
        Ok(())
    }

    /// True when every draw is the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// Index of the largest value (ties: the lowest index). NaNs are never chosen unless all are NaN.
pub fn argmax<T: Real>(logits: &[T]) -> u32 {
    assert!(!logits.is_empty(), "argmax: empty logits");
    let mut best = 0usize;
    let mut bv = logits[0].to_f64();
    for (i, &v) in logits.iter().enumerate().skip(1) {
        let v = v.to_f64();
        if v > bv || (bv.is_nan() && !v.is_nan()) {
            (best, bv) = (i, v);
        }
    }
    best as u32
}

/// A sampler: settings plus its random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    cand: Vec<(f64, u32)>,
}

impl Sampler {
    /// A sampler with a fresh stream from `cfg.seed`; errors on out-of-range settings.
    pub fn new(cfg: SamplerConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Sampler { cfg, rng: Rng::derive(cfg.seed, 0x5A3D), cand: Vec::new() })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Draw the next token from `logits [n_vocab]`.
    ///
    /// Order of operations: temperature, then top-k, then top-p over the remaining tokens (sorted
    /// by probability, ties to the lower id), renormalise, draw one uniform number. Greedy settings
    /// (`temperature = 0` or `top_k = 1`) return [`argmax`] and draw nothing.
    pub fn sample<T: Real>(&mut self, logits: &[T]) -> u32 {
        assert!(!logits.is_empty(), "sample: empty logits");
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.cfg.temperature as f64;
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(logits.iter().enumerate().map(|(i, &v)| (v.to_f64() * inv_t, i as u32)).filter(|(v, _)| !v.is_nan()));
        if cand.is_empty() {
            return 0;
        }
        let by_desc = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let k = if self.cfg.top_k > 0 { self.cfg.top_k.min(cand.len()) } else { cand.len() };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, by_desc);
            cand.truncate(k);
        }
        cand.sort_unstable_by(by_desc);
        let m = cand[0].0;
        let mut sum = 0.0;
        for c in cand.iter_mut() {
            c.0 = (c.0 - m).exp();
            sum += c.0;
        }
        let mut keep = cand.len();
        if self.cfg.top_p < 1.0 {
            let target = self.cfg.top_p as f64 * sum;
            let mut acc = 0.0;
            for (i, c) in cand.iter().enumerate() {
                acc += c.0;
                if acc >= target {
                    keep = i + 1;
                    break;
                }
            }
            sum = cand[..keep].iter().map(|c| c.0).sum();
        }
        let u = self.rng.uniform() * sum;
        let mut acc = 0.0;
        for c in &cand[..keep] {
            acc += c.0;
            if u < acc {
                return c.1;
            }
        }
        cand[keep - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_greedy_and_argmax_ties() {
        assert_eq!(argmax(&[1.0f32, 3.0, 3.0, 2.0]), 1);
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.0f32, -1.0, 5.0]), 2);
    }

    #[test]
    fn sampler_top_k_top_p_restrict_support_and_follow_probabilities() {
        let logits = [0.0f32, 1.0, 2.0, 3.0, -50.0];
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 3 }).unwrap();
        for _ in 0..200 {
            let t = s.sample(&logits);
            assert!(t == 3 || t == 2, "{t}");
        }
        // top_p small: only the argmax survives
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 0.1, seed: 3 }).unwrap();
        assert!((0..100).all(|_| s.sample(&logits) == 3));
        // plain sampling matches the softmax frequencies roughly
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 9 }).unwrap();
        let n = 20000;
        let mut c = [0usize; 5];
        (0..n).for_each(|_| c[s.sample(&logits) as usize] += 1);
        let z: f64 = logits.iter().map(|&v| (v as f64).exp()).sum();
        for i in 0..5 {
            let p = (logits[i] as f64).exp() / z;
            assert!((c[i] as f64 / n as f64 - p).abs() < 0.02, "token {i}: {} vs {p}", c[i] as f64 / n as f64);
        }
    }

    #[test]
    fn sampler_rejects_bad_settings() {
        assert!(Sampler::new(SamplerConfig { temperature: -1.0, ..Default::default() }).is_err());
        assert!(Sampler::new(SamplerConfig { top_p: 0.0, ..Default::default() }).is_err());
        assert!(Sampler::new(SamplerConfig { top_p: 1.5, ..Default::default() }).is_err());
    }
}
