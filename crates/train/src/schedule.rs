//! Learning-rate schedule: linear warmup from 0, then cosine decay to `lr · min_lr_ratio`.

use crate::config::TrainConfig;

/// Warmup + cosine schedule over `steps` optimizer steps (step indices are 0-based).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// peak learning rate
    pub lr: f64,
    /// final learning rate as a fraction of `lr`
    pub min_lr_ratio: f64,
    /// warmup steps
    pub warmup_steps: usize,
    /// total steps; the cosine reaches its minimum here
    pub steps: usize,
}

impl Schedule {
    /// The schedule of a `[train]` table.
    pub fn from_config(t: &TrainConfig) -> Self {
        Schedule { lr: t.lr, min_lr_ratio: t.min_lr_ratio, warmup_steps: t.warmup_steps, steps: t.steps }
    }

    /// Learning rate of step `step` (0-based): `lr · (step+1) / warmup` during warmup, then
    /// `min + (lr − min) · ½(1 + cos(π · (step − warmup) / (steps − warmup)))`, and `min` from
    /// `steps` on.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let min = self.lr * self.min_lr_ratio;
        let span = self.steps.saturating_sub(self.warmup_steps);
        if span == 0 {
            return self.lr;
        }
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        min + (self.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Schedule {
        Schedule { lr: 1e-3, min_lr_ratio: 0.1, warmup_steps: 10, steps: 110 }
    }

    #[test]
    fn schedule_warmup_is_linear_from_zero() {
        let s = s();
        assert!((s.lr_at(0) - 1e-4).abs() < 1e-15);
        assert!((s.lr_at(4) - 5e-4).abs() < 1e-15);
        assert!((s.lr_at(9) - 1e-3).abs() < 1e-15);
        for i in 0..9 {
            assert!(s.lr_at(i + 1) > s.lr_at(i));
        }
    }

    #[test]
    fn schedule_cosine_decays_to_min() {
        let s = s();
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-15);
        assert!((s.lr_at(60) - 0.55e-3).abs() < 1e-12, "midpoint {}", s.lr_at(60));
        assert!((s.lr_at(110) - 1e-4).abs() < 1e-15);
        assert!((s.lr_at(500) - 1e-4).abs() < 1e-15);
        for i in 10..110 {
            assert!(s.lr_at(i + 1) <= s.lr_at(i));
        }
    }

    #[test]
    fn schedule_degenerate_cases() {
        let no_warmup = Schedule { warmup_steps: 0, ..s() };
        assert!((no_warmup.lr_at(0) - 1e-3).abs() < 1e-15);
        let constant = Schedule { min_lr_ratio: 1.0, warmup_steps: 0, ..s() };
        assert!((0..200).all(|i| (constant.lr_at(i) - 1e-3).abs() < 1e-15));
        let all_warmup = Schedule { warmup_steps: 200, steps: 100, ..s() };
        assert!((all_warmup.lr_at(99) - 0.5e-3).abs() < 1e-15);
        assert!((all_warmup.lr_at(300) - 1e-3).abs() < 1e-15);
    }
}
