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

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms; ≈ 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Continued fraction of the regularised incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Regularised incomplete beta `I_x(a, b)`.
fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Two-sided p-value `P(|T| ≥ |t|)` of Student's t with `df` degrees of freedom (NaN for NaN).
pub fn student_t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || !(df > 0.0) {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The quantile `t` with `P(T ≤ t) = p` of Student's t with `df` degrees of freedom, for
/// `0.5 ≤ p < 1` (bisection on [`student_t_two_sided_p`]; e.g. p = 0.975, df = 1 → 12.706).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    if !(0.5..1.0).contains(&p) || !(df > 0.0) {
        return f64::NAN;
    }
    let target = 2.0 * (1.0 - p); // two-sided tail at t
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while student_t_two_sided_p(hi, df) > target {
        hi *= 2.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_two_sided_p(mid, df) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Fewest paired seeds for which a comparison states a verdict on seed noise.
pub const MIN_SEEDS_FOR_VERDICT: usize = 3;

/// A paired difference over seeds (`a_s − b_s` for each seed `s`), tested with a paired Student's
/// t-test (df = n − 1): the two-sided p-value and the 95% confidence interval of the mean gap.
/// The gap counts as beyond seed noise when p < 0.05, and only with at least
/// [`MIN_SEEDS_FOR_VERDICT`] seeds (below that: "more seeds needed").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedGap {
    /// mean ± std of the per-seed differences
    pub diff: MeanStd,
    /// `|mean| / (std / √n)`; infinite when all seeds agree exactly, `None` with one seed
    pub t: Option<f64>,
    /// two-sided p-value of the paired t-test (`None` with one seed)
    #[serde(default)]
    pub p_value: Option<f64>,
    /// 95% confidence interval of the mean gap, `mean ± t_{0.975, n−1} · std/√n`
    #[serde(default)]
    pub ci95: Option<(f64, f64)>,
    /// `Some(p < 0.05)` with ≥ 3 seeds; `None` below (one seed: not measured; two: more needed)
    pub beyond_noise: Option<bool>,
}

impl PairedGap {
    /// Of per-seed pairs `(a_s, b_s)`.
    pub fn of(a: &[f64], b: &[f64]) -> Self {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let diff = MeanStd::of(&d);
        if diff.n < 2 {
            return PairedGap { diff, t: None, p_value: None, ci95: None, beyond_noise: None };
        }
        let sem = diff.sem();
        let df = (diff.n - 1) as f64;
        let (t, p) = if !(diff.mean.is_finite() && sem.is_finite()) {
            (f64::NAN, f64::NAN)
        } else if sem > 0.0 {
            let t = diff.mean.abs() / sem;
            (t, student_t_two_sided_p(t, df))
        } else if diff.mean == 0.0 {
            (0.0, 1.0)
        } else {
            (f64::INFINITY, 0.0)
        };
        let h = student_t_quantile(0.975, df) * sem;
        let beyond = (diff.n >= MIN_SEEDS_FOR_VERDICT).then_some(p < 0.05);
        PairedGap { diff, t: Some(t), p_value: Some(p), ci95: Some((diff.mean - h, diff.mean + h)), beyond_noise: beyond }
    }

    /// "p = 0.23, 95% CI [−0.031, +0.004]: more seeds needed" and the like.
    pub fn describe(&self, prec: usize) -> String {
        match (self.p_value, self.ci95) {
            (Some(p), Some((lo, hi))) => {
                let word = match self.beyond_noise {
                    Some(true) => "larger than the seed noise".to_string(),
                    Some(false) => "within the seed noise".to_string(),
                    None => format!("more seeds needed (fewer than {MIN_SEEDS_FOR_VERDICT} paired seeds)"),
                };
                format!(
                    "paired t-test over {} seeds (df {}): t = {:.2}, p = {:.3}, 95% CI [{:+.prec$}, {:+.prec$}]: {word}",
                    self.diff.n,
                    self.diff.n - 1,
                    self.t.unwrap_or(f64::NAN),
                    p,
                    lo,
                    hi
                )
            }
            _ => "one seed: seed noise not measured (use --seeds 3 or more)".to_string(),
        }
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
        let g = PairedGap::of(&[2.0, 2.2, 2.0], &[2.1, 2.0, 2.05]);
        assert_eq!(g.beyond_noise, Some(false));
        // two seeds: a p-value and an interval, but no verdict
        let g = PairedGap::of(&[2.0, 2.1], &[1.9, 1.95]);
        assert_eq!(g.beyond_noise, None);
        assert!(g.p_value.unwrap() > 0.0 && g.describe(3).contains("more seeds needed"), "{}", g.describe(3));
        assert_eq!(PairedGap::of(&[2.0], &[1.0]).beyond_noise, None);
    }

    /// The README's real-prose case: t = 2.7 with one degree of freedom is p ≈ 0.23, not a result.
    #[test]
    fn stats_student_t_matches_tables() {
        for (df, q) in [(1.0, 12.706), (2.0, 4.303), (3.0, 3.182), (5.0, 2.571), (10.0, 2.228), (30.0, 2.042)] {
            let t = student_t_quantile(0.975, df);
            assert!((t - q).abs() < 1e-3, "df {df}: {t} vs {q}");
        }
        assert!((student_t_quantile(0.95, 4.0) - 2.132).abs() < 1e-3);
        let p = student_t_two_sided_p(2.7, 1.0);
        assert!((p - 0.2258).abs() < 1e-3, "{p}");
        assert!((student_t_two_sided_p(2.0, 1e6) - 0.0455).abs() < 1e-3);
        assert!(student_t_two_sided_p(f64::NAN, 3.0).is_nan());
        assert!(!(student_t_two_sided_p(0.0, 3.0) < 1.0), "t = 0 is p = 1");
    }

    #[test]
    fn stats_nan_gap_is_never_beyond_noise() {
        let g = PairedGap::of(&[f64::NAN, 2.0, 2.0], &[1.0, 1.0, 1.0]);
        assert_ne!(g.beyond_noise, Some(true));
    }
}
