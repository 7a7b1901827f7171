//! The verdict of a comparison: for each MoE, its loss against the dense baseline at equal
//! compute, the paired gap over seeds against seed noise, and the compute multiplier read off the
//! dense run's own loss-vs-compute curve.

use crate::curve::{compute_to_reach, Method};
use crate::results::{fmt_flops, fmt_loss, ModelResult};
use crate::stats::{MeanStd, PairedGap};
use serde::{Deserialize, Serialize};

/// One MoE against the dense baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// the MoE model
    pub moe: String,
    /// the dense baseline
    pub dense: String,
    /// MoE final validation loss over seeds
    pub moe_loss: MeanStd,
    /// dense final validation loss over seeds
    pub dense_loss: MeanStd,
    /// per-seed `moe − dense` (negative: MoE better), and whether it exceeds seed noise
    pub gap: PairedGap,
    /// `gap.mean / dense_loss.mean`
    pub rel_gap: f64,
    /// dense compute to reach the MoE's loss ÷ the MoE's compute, per seed (`None`: unreachable)
    pub multiplier_per_seed: Vec<Option<f64>>,
    /// over the seeds where it is defined
    pub multiplier: Option<MeanStd>,
    /// how the multiplier was obtained (the least reliable method over seeds)
    pub method: Method,
    /// the sentence for the report
    pub text: String,
}

fn rank(m: Method) -> u8 {
    match m {
        Method::Interpolated => 0,
        Method::PowerLaw => 1,
        Method::Extrapolated => 2,
        Method::Unreachable => 3,
    }
}

/// The verdict of `moe` against `dense` (same seeds, paired by index).
pub fn verdict(moe: &ModelResult, dense: &ModelResult) -> Verdict {
    let n = moe.seeds.len().min(dense.seeds.len());
    let (ml, dl): (Vec<f64>, Vec<f64>) = (0..n).map(|i| (moe.seeds[i].val_loss, dense.seeds[i].val_loss)).unzip();
    let gap = PairedGap::of(&ml, &dl);
    let mut method = Method::Interpolated;
    let mut per_seed = Vec::with_capacity(n);
    for i in 0..n {
        let est = compute_to_reach(&dense.seeds[i].curve, moe.seeds[i].curve_val_loss);
        if rank(est.method) > rank(method) {
            method = est.method;
        }
        per_seed.push(est.flops.map(|c| c / moe.seeds[i].flops.max(1.0)));
    }
    let defined: Vec<f64> = per_seed.iter().flatten().copied().collect();
    let multiplier = (!defined.is_empty()).then(|| MeanStd::of(&defined));
    let moe_loss = MeanStd::of(&ml);
    let dense_loss = MeanStd::of(&dl);
    let rel_gap = gap.diff.mean / dense_loss.mean;
    let budget = moe.seeds.first().map_or(0.0, |s| s.flops);
    let mut text = format!(
        "{} reached val loss {} vs {} {} at equal compute ({} training FLOPs): Δ {:+.4} ({:+.1}%)",
        moe.name,
        fmt_loss(moe_loss.mean),
        dense.name,
        fmt_loss(dense_loss.mean),
        fmt_flops(budget),
        gap.diff.mean,
        100.0 * rel_gap
    );
    match (&multiplier, method) {
        (_, Method::Unreachable) | (None, _) => text.push_str(&format!("; the {} loss-vs-compute curve never reaches that loss (> 1× the compute, and a power-law fit of its tail does not reach it either)", dense.name)),
        (Some(m), meth) => {
            let how = match meth {
                Method::Interpolated => "interpolated on the dense run's loss-vs-compute curve",
                _ => "extrapolated beyond the budget with a power-law fit of the dense curve's tail",
            };
            let val = if m.n > 1 { format!("{:.2}× ± {:.2}", m.mean, m.std) } else { format!("{:.2}×", m.mean) };
            text.push_str(&format!("; the {} model would need ≈ {val} the compute to match ({how})", dense.name));
        }
    }
    match gap.p_value {
        None => text.push_str(". One seed: seed noise not measured (use --seeds 3 or more)."),
        Some(_) => text.push_str(&format!(
            ". Over {n} seeds the paired gap is {:+.4} ± {:.4} (std); {}.",
            gap.diff.mean,
            gap.diff.std,
            gap.describe(4)
        )),
    }
    Verdict {
        moe: moe.name.clone(),
        dense: dense.name.clone(),
        moe_loss,
        dense_loss,
        gap,
        rel_gap,
        multiplier_per_seed: per_seed,
        multiplier,
        method,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{base_experiment, default_trio, Scale};
    use crate::results::SeedResult;
    use crate::run::RunStatus;

    fn seed(i: usize, final_loss: f64, curve: Vec<(f64, f64)>) -> SeedResult {
        SeedResult {
            seed: i,
            train_seed: i as u64,
            run_dir: "r".into(),
            status: RunStatus::Trained,
            steps: 10,
            tokens: 100,
            flops: 1e10,
            val_loss: final_loss,
            val_ppl: final_loss.exp(),
            curve_val_loss: final_loss,
            tokens_per_s: 1.0,
            elapsed_s: 1.0,
            curve,
            accuracy: None,
        }
    }

    #[test]
    fn verdict_interpolates_and_states_noise() {
        let trio = default_trio(&base_experiment(Scale::Tiny));
        let curve = vec![(2.5e9, 3.0), (5e9, 2.5), (1e10, 2.2)];
        let dense = ModelResult::new(&trio[0], 10, vec![seed(0, 2.2, curve.clone()), seed(1, 2.21, curve.clone())]);
        let moe = ModelResult::new(&trio[1], 10, vec![seed(0, 2.5, vec![]), seed(1, 2.5, vec![])]);
        let v = verdict(&moe, &dense);
        assert_eq!(v.method, Method::Interpolated);
        assert!((v.multiplier.unwrap().mean - 0.5).abs() < 1e-9);
        assert!(v.text.contains("2.5000") && v.text.contains("2.2050"), "{}", v.text);
        assert!(v.text.contains("0.50×") && v.text.contains("more seeds needed") && v.text.contains("p = "), "{}", v.text);
        let better = ModelResult::new(&trio[1], 10, vec![seed(0, 1.0, vec![])]);
        let v = verdict(&better, &dense);
        assert_eq!(v.method, Method::Unreachable);
        assert!(v.text.contains("never reaches") && v.text.contains("seed noise not measured"), "{}", v.text);
    }

    #[test]
    fn the_multiplier_reads_the_curve_loss_not_the_larger_final_evaluation() {
        let trio = default_trio(&base_experiment(Scale::Tiny));
        let curve = vec![(2.5e9, 3.0), (5e9, 2.5), (1e10, 2.2)];
        // the whole validation split is harder than the curve's batches: finals are 0.3 higher
        let with_final = |i, curve_loss: f64, c: Vec<(f64, f64)>| SeedResult {
            val_loss: curve_loss + 0.3,
            curve_val_loss: curve_loss,
            ..seed(i, curve_loss, c)
        };
        let dense = ModelResult::new(&trio[0], 10, vec![with_final(0, 2.2, curve)]);
        let moe = ModelResult::new(&trio[1], 10, vec![with_final(0, 2.5, vec![])]);
        let v = verdict(&moe, &dense);
        assert!((v.multiplier.unwrap().mean - 0.5).abs() < 1e-9, "{}", v.text);
        assert!(v.text.contains("2.8000") && v.text.contains("2.5000"), "{}", v.text);
    }
}
