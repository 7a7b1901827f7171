//! Mean ± standard deviation over seeds, and the paired test of a gap against seed noise.

use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (n − 1 denominator; 0 for a single value) of some values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// mean
    pub mean: f64,
    /// sample standard deviation (0 when n = 1)
    pub std: f64,
    /// number of values
    pub n: usize,
}

impl MeanStd {
    /// Of `values` (NaN mean for none).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return MeanStd { mean: f64::NAN, std: 0.0, n };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
        MeanStd { mean, std, n }
    }

    /// Standard error of the mean, `std / √n`.
    pub fn sem(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.std / (self.n as f64).sqrt()
        }
    }

    /// `mean` with `prec` decimals, plus ` ± std` when there is more than one value.
    pub fn fmt(&self, prec: usize) -> String {
        if self.n > 1 {
            format!("{:.prec$} ± {:.prec$}", self.mean, self.std)
        } else {
            format!("{:.prec$}", self.mean)
        }
    }
}

/// A paired difference over seeds (`a_s − b_s` for each seed `s`) and whether it exceeds seed
/// noise: `|mean| > 2 · std / √n` (≈ a 95% interval) with n ≥ 2.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedGap {
    /// mean ± std of the per-seed differences
    pub diff: MeanStd,
    /// `|mean| / (std / √n)`; infinite when all seeds agree exactly, `None` with one seed
    pub t: Option<f64>,
    /// `Some(true)` when the gap exceeds twice its standard error, `None` with one seed
    pub beyond_noise: Option<bool>,
}

impl PairedGap {
    /// Of per-seed pairs `(a_s, b_s)`.
    pub fn of(a: &[f64], b: &[f64]) -> Self {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let diff = MeanStd::of(&d);
        if diff.n < 2 {
            return PairedGap { diff, t: None, beyond_noise: None };
        }
        let sem = diff.sem();
        let t = if sem > 0.0 { diff.mean.abs() / sem } else { f64::INFINITY };
        PairedGap { diff, t: Some(t), beyond_noise: Some(t > 2.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_mean_std_and_format() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0]);
        assert_eq!((m.mean, m.std, m.n), (2.0, 1.0, 3));
        assert_eq!(m.fmt(2), "2.00 ± 1.00");
        assert_eq!(MeanStd::of(&[1.5]).fmt(3), "1.500");
        assert!(MeanStd::of(&[]).mean.is_nan());
    }

    #[test]
    fn stats_paired_gap_against_noise() {
        let g = PairedGap::of(&[2.0, 2.1, 2.2], &[1.9, 2.0, 2.1]);
        assert!((g.diff.mean - 0.1).abs() < 1e-12);
        assert_eq!(g.beyond_noise, Some(true));
        let g = PairedGap::of(&[2.0, 2.2], &[2.1, 2.0]);
        assert_eq!(g.beyond_noise, Some(false));
        assert_eq!(PairedGap::of(&[2.0], &[1.0]).beyond_noise, None);
    }
}
