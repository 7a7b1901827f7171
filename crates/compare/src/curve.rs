//! Loss-vs-compute curves: how much compute a dense model needs to reach a given loss.
//!
//! Two methods, always labelled in reports:
//! - **interpolated**: along a measured curve `(C_i, L_i)` (ordered by compute), the first
//!   segment where the loss falls to the target, interpolated linearly in `log C` (exact at the
//!   points, no model assumed);
//! - **power law**: a least-squares fit of `L(C) = a + b · (C / C_ref)^(−c)` (grid search over
//!   `c ∈ [0.02, 2]`, closed-form `a, b` for each `c`, `b > 0`), inverted as
//!   `C = C_ref · (b / (L − a))^(1/c)`; targets at or below the fitted floor `a` are unreachable.
//!   Used beyond the measured range (extrapolation), and for the sweep's dense ladder.

use serde::{Deserialize, Serialize};

/// How a compute estimate was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// log-linear interpolation between measured points
    Interpolated,
    /// power-law fit evaluated beyond the measured points
    Extrapolated,
    /// power-law fit inside the measured range
    PowerLaw,
    /// the target is below what the curve (or its fitted floor) reaches
    Unreachable,
}

/// Compute needed to reach a loss, and how it was found.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeEstimate {
    /// FLOPs needed (`None` when unreachable)
    pub flops: Option<f64>,
    /// how
    pub method: Method,
}

/// `L(C) = a + b · (C / c_ref)^(−c)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerLaw {
    /// irreducible loss (floor)
    pub a: f64,
    /// scale
    pub b: f64,
    /// exponent
    pub c: f64,
    /// compute normalisation
    pub c_ref: f64,
    /// root-mean-square residual of the fit
    pub rmse: f64,
}

impl PowerLaw {
    /// Fit to `(compute, loss)` points (at least 3 with distinct compute; `None` otherwise or when
    /// no fit with `b > 0` exists, i.e. the loss does not fall with compute).
    pub fn fit(points: &[(f64, f64)]) -> Option<PowerLaw> {
        let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(c, l)| *c > 0.0 && c.is_finite() && l.is_finite()).collect();
        if pts.len() < 3 {
            return None;
        }
        let c_ref = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        if pts.iter().all(|p| (p.0 - c_ref).abs() <= 1e-12 * c_ref) {
            return None;
        }
        let mut best: Option<PowerLaw> = None;
        for i in 1..=200 {
            let c = 0.01 * i as f64;
            let xs: Vec<f64> = pts.iter().map(|p| (p.0 / c_ref).powf(-c)).collect();
            let n = xs.len() as f64;
            let (mx, my) = (xs.iter().sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
            let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
            if sxx <= 0.0 {
                continue;
            }
            let sxy: f64 = xs.iter().zip(&pts).map(|(x, p)| (x - mx) * (p.1 - my)).sum();
            let b = sxy / sxx;
            if b <= 0.0 {
                continue;
            }
            let a = my - b * mx;
            let sse: f64 = xs.iter().zip(&pts).map(|(x, p)| (a + b * x - p.1).powi(2)).sum();
            let rmse = (sse / n).sqrt();
            if best.is_none_or(|bst| rmse < bst.rmse) {
                best = Some(PowerLaw { a, b, c, c_ref, rmse });
            }
        }
        best
    }

    /// Predicted loss at `flops`.
    pub fn loss_at(&self, flops: f64) -> f64 {
        self.a + self.b * (flops / self.c_ref).powf(-self.c)
    }

    /// Compute at which the fit reaches `loss` (`None` at or below the floor `a`).
    pub fn flops_for(&self, loss: f64) -> Option<f64> {
        (loss > self.a).then(|| self.c_ref * (self.b / (loss - self.a)).powf(1.0 / self.c))
    }
}

/// First crossing of `target` along `curve` (sorted by compute), interpolated linearly in
/// `log C`. A target above the first point's loss maps to the first point's compute.
pub fn interpolate(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    let first = curve.first()?;
    if target >= first.1 {
        return Some(first.0);
    }
    for w in curve.windows(2) {
        let ((c0, l0), (c1, l1)) = (w[0], w[1]);
        if l1 <= target && l0 > target {
            let f = (l0 - target) / (l0 - l1);
            return Some((c0.ln() + f * (c1.ln() - c0.ln())).exp());
        }
    }
    None
}

/// Compute the dense `curve` needs to reach `target`: interpolated when the curve gets there,
/// else extrapolated with a power law fitted to the curve's later half (at least 3 points), else
/// unreachable.
pub fn compute_to_reach(curve: &[(f64, f64)], target: f64) -> ComputeEstimate {
    if let Some(c) = interpolate(curve, target) {
        return ComputeEstimate { flops: Some(c), method: Method::Interpolated };
    }
    let tail = &curve[curve.len() / 2..];
    let tail = if tail.len() >= 3 { tail } else { curve };
    match PowerLaw::fit(tail).and_then(|p| p.flops_for(target)) {
        Some(c) if c.is_finite() => ComputeEstimate { flops: Some(c), method: Method::Extrapolated },
        _ => ComputeEstimate { flops: None, method: Method::Unreachable },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn law(c: f64) -> f64 {
        1.5 + 2.0 * (c / 1e9).powf(-0.3)
    }

    #[test]
    fn curve_power_law_fit_recovers_parameters() {
        let pts: Vec<(f64, f64)> = (0..8).map(|i| 1e9 * 2f64.powi(i)).map(|c| (c, law(c))).collect();
        let p = PowerLaw::fit(&pts).unwrap();
        assert!((p.c - 0.3).abs() < 0.011, "{p:?}");
        assert!((p.a - 1.5).abs() < 0.05, "{p:?}");
        let c = p.flops_for(law(5e10)).unwrap();
        assert!((c / 5e10 - 1.0).abs() < 0.1, "{c}");
        assert!(p.flops_for(1.0).is_none());
        assert!(PowerLaw::fit(&pts[..2]).is_none());
        let rising: Vec<(f64, f64)> = pts.iter().map(|&(c, l)| (c, 10.0 - l)).collect();
        assert!(PowerLaw::fit(&rising).is_none());
    }

    #[test]
    fn curve_interpolation_is_log_linear_and_labelled() {
        let curve = [(1e9, 3.0), (4e9, 2.0), (16e9, 1.8)];
        assert!((interpolate(&curve, 2.5).unwrap() - 2e9).abs() < 1e-3 * 2e9);
        assert_eq!(interpolate(&curve, 3.5), Some(1e9));
        assert_eq!(interpolate(&curve, 1.0), None);
        assert_eq!(compute_to_reach(&curve, 2.0).method, Method::Interpolated);
        let pts: Vec<(f64, f64)> = (0..8).map(|i| 1e9 * 2f64.powi(i)).map(|c| (c, law(c))).collect();
        let e = compute_to_reach(&pts, law(1e12));
        assert_eq!(e.method, Method::Extrapolated);
        assert!((e.flops.unwrap() / 1e12 - 1.0).abs() < 0.2, "{e:?}");
        assert_eq!(compute_to_reach(&pts, 1.0).method, Method::Unreachable);
    }
}
