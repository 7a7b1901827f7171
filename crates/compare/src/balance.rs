//! Expert balance per MoE layer from a run's training records: summary numbers and the
//! experts × steps load matrix behind the heatmaps.

use crate::metrics::RunMetrics;
use serde::{Deserialize, Serialize};

/// Balance of one MoE layer over the last part of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerBalance {
    /// layer index in the model
    pub layer: usize,
    /// routed experts
    pub n_expert: usize,
    /// mean over the window of (largest expert load ÷ mean load); 1 = perfectly balanced
    pub max_over_mean: f64,
    /// mean router entropy (nats) over the window
    pub entropy: f64,
    /// `ln(n_expert)`, the entropy of a uniform router, for reference
    pub entropy_uniform: f64,
    /// mean fraction of assignments dropped by the capacity limit
    pub drop_rate: f64,
    /// mean load fraction per expert over the window
    pub load: Vec<f64>,
    /// the window: training steps `first_step..=last_step`
    pub first_step: usize,
    /// last step of the window
    pub last_step: usize,
}

/// Fraction of training (the last 10% of steps, at least one) the summary averages over.
pub const BALANCE_WINDOW: f64 = 0.1;

/// Balance of every MoE layer over the last [`BALANCE_WINDOW`] of training records (empty for a
/// dense model).
pub fn layer_balance(m: &RunMetrics) -> Vec<LayerBalance> {
    let n = m.train.len();
    if n == 0 {
        return Vec::new();
    }
    let w = ((n as f64 * BALANCE_WINDOW).ceil() as usize).clamp(1, n);
    let window = &m.train[n - w..];
    let n_layers = window.iter().map(|t| t.moe.len()).max().unwrap_or(0);
    (0..n_layers)
        .filter_map(|i| {
            let rows: Vec<_> = window.iter().filter_map(|t| t.moe.get(i)).collect();
            let first = rows.first()?;
            let k = rows.len() as f64;
            let n_expert = first.load.len();
            let mut load = vec![0.0; n_expert];
            for r in &rows {
                for (a, b) in load.iter_mut().zip(&r.load) {
                    *a += b / k;
                }
            }
            Some(LayerBalance {
                layer: first.layer,
                n_expert,
                max_over_mean: rows.iter().map(|r| r.max_over_mean).sum::<f64>() / k,
                entropy: rows.iter().map(|r| r.entropy).sum::<f64>() / k,
                entropy_uniform: (n_expert.max(1) as f64).ln(),
                drop_rate: rows.iter().map(|r| r.drop_rate).sum::<f64>() / k,
                load,
                first_step: window[0].step,
                last_step: window[w - 1].step,
            })
        })
        .collect()
}

/// Load fractions of one MoE layer (its position among the run's MoE layers) as a matrix
/// `[n_expert][n_cols]` over training, averaging consecutive steps into at most `max_cols`
/// columns; returns the matrix and the last step of each column.
pub fn load_matrix(m: &RunMetrics, moe_index: usize, max_cols: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
    let rows: Vec<(usize, &Vec<f64>)> = m.train.iter().filter_map(|t| t.moe.get(moe_index).map(|l| (t.step, &l.load))).collect();
    let Some(n_expert) = rows.first().map(|r| r.1.len()) else { return (Vec::new(), Vec::new()) };
    let per = rows.len().div_ceil(max_cols.max(1)).max(1);
    let mut mat = vec![Vec::new(); n_expert];
    let mut steps = Vec::new();
    for chunk in rows.chunks(per) {
        for (e, col) in mat.iter_mut().enumerate() {
            col.push(chunk.iter().map(|r| r.1.get(e).copied().unwrap_or(0.0)).sum::<f64>() / chunk.len() as f64);
        }
        steps.push(chunk[chunk.len() - 1].0);
    }
    (mat, steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{LayerStep, TrainPoint};

    fn metrics(n: usize) -> RunMetrics {
        let train = (1..=n)
            .map(|s| TrainPoint {
                step: s,
                moe: vec![LayerStep { layer: 1, load: vec![0.5, 0.5, 0.0, 0.0], entropy: 1.0, drop_rate: 0.1, max_over_mean: 2.0 }],
                ..Default::default()
            })
            .collect();
        RunMetrics { train, eval: Vec::new() }
    }

    #[test]
    fn balance_summary_over_last_steps() {
        let b = layer_balance(&metrics(20));
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].layer, b[0].n_expert, b[0].first_step, b[0].last_step), (1, 4, 19, 20));
        assert_eq!(b[0].max_over_mean, 2.0);
        assert_eq!(b[0].load, vec![0.5, 0.5, 0.0, 0.0]);
        assert!((b[0].entropy_uniform - 4f64.ln()).abs() < 1e-12);
        assert!(layer_balance(&RunMetrics::default()).is_empty());
    }

    #[test]
    fn balance_load_matrix_downsamples_steps() {
        let (mat, steps) = load_matrix(&metrics(10), 0, 4);
        assert_eq!(mat.len(), 4);
        assert_eq!(steps, vec![3, 6, 9, 10]);
        assert_eq!(mat[0], vec![0.5; 4]);
        assert!(load_matrix(&metrics(10), 1, 4).0.is_empty());
    }
}
