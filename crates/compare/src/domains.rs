//! Which domain each expert serves: a forward pass over validation windows whose tokens carry
//! domain tags (the built-in synthetic corpus has six: arithmetic, formal, recall, records, prose, facts), counting for each domain the
//! fraction of its tokens' top-k assignments that go to each expert.

use crate::error::Result;
use moe_data::dataset::window_domains;
use moe_model::Transformer;
use serde::{Deserialize, Serialize};

/// Domain × expert routing of one MoE layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerDomains {
    /// layer index in the model
    pub layer: usize,
    /// routed experts
    pub n_expert: usize,
    /// domain names (rows)
    pub domains: Vec<String>,
    /// `fraction[d][e]`: share of domain `d`'s (token, slot) assignments routed to expert `e`;
    /// each row sums to 1 (rows of domains without tokens are 0)
    pub fraction: Vec<Vec<f64>>,
    /// tokens of each domain in the analysed windows
    pub tokens: Vec<u64>,
    /// for each expert, the domain with the largest share of the expert's assignments, and
    /// that share (`P(domain | expert)`), e.g. `("arithmetic", 0.62)`
    pub top_domain: Vec<(String, f64)>,
    /// mean over experts of `max_d P(d | expert)` divided by the same with assignments spread in
    /// proportion to domain sizes: 1 = no specialisation, larger = experts prefer domains
    pub specialisation: f64,
}

/// Route `max_batches` batches of `batch_size` sequential validation windows of `seq_len` tokens
/// (as in evaluation) through `model` and tabulate domains × experts for every MoE layer.
/// `domains` tags each token of `tokens` with an index into `names`.
pub fn expert_domains(
    model: &Transformer<f32>,
    tokens: &[u32],
    domains: &[u8],
    names: &[String],
    batch_size: usize,
    seq_len: usize,
    max_batches: usize,
) -> Result<Vec<LayerDomains>> {
    if tokens.len() < seq_len + 1 || names.is_empty() || domains.len() != tokens.len() {
        return Ok(Vec::new());
    }
    let n_windows = ((tokens.len() - 1) / seq_len).min(batch_size * max_batches.max(1));
    let offsets: Vec<usize> = (0..n_windows).map(|i| i * seq_len).collect();
    let nd = names.len();
    // per MoE layer: counts[d][e], and domain token counts
    let mut tables: Vec<(usize, Vec<Vec<u64>>)> = Vec::new();
    let mut dom_tokens = vec![0u64; nd];
    for chunk in offsets.chunks(batch_size.max(1)) {
        let batch = moe_data::Batch::from_offsets(tokens, chunk, seq_len);
        let tags = window_domains(domains, chunk, seq_len);
        for &t in &tags {
            if (t as usize) < nd {
                dom_tokens[t as usize] += 1;
            }
        }
        let out = model.forward(&batch.inputs, batch.batch_size, seq_len)?;
        for (li, r) in out.routing.iter().enumerate() {
            let ne = r.routing.settings.n_expert;
            let k = r.routing.settings.k;
            if tables.len() <= li {
                tables.push((r.layer, vec![vec![0u64; ne]; nd]));
            }
            let tab = &mut tables[li].1;
            for (tok, &d) in tags.iter().enumerate() {
                let d = d as usize;
                if d >= nd {
                    continue;
                }
                for &e in &r.routing.idx[tok * k..(tok + 1) * k] {
                    if (e as usize) < ne {
                        tab[d][e as usize] += 1;
                    }
                }
            }
        }
    }
    let total_tok: u64 = dom_tokens.iter().sum();
    Ok(tables
        .into_iter()
        .map(|(layer, counts)| {
            let ne = counts.first().map_or(0, |r| r.len());
            let fraction: Vec<Vec<f64>> = counts
                .iter()
                .map(|row| {
                    let s: u64 = row.iter().sum();
                    row.iter().map(|&c| if s > 0 { c as f64 / s as f64 } else { 0.0 }).collect()
                })
                .collect();
            let prior_max = dom_tokens.iter().map(|&t| t as f64 / total_tok.max(1) as f64).fold(0.0, f64::max);
            let mut top_domain = Vec::with_capacity(ne);
            let mut spec = 0.0;
            for e in 0..ne {
                let col: u64 = counts.iter().map(|r| r[e]).sum();
                let (best, share) = counts
                    .iter()
                    .enumerate()
                    .map(|(d, r)| (d, if col > 0 { r[e] as f64 / col as f64 } else { 0.0 }))
                    .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
                top_domain.push((names[best].clone(), share));
                spec += share / ne as f64;
            }
            LayerDomains {
                layer,
                n_expert: ne,
                domains: names.to_vec(),
                fraction,
                tokens: dom_tokens.clone(),
                top_domain,
                specialisation: if prior_max > 0.0 { spec / prior_max } else { 0.0 },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_model::ModelConfig;

    #[test]
    fn domains_rows_sum_to_one_per_layer() {
        let cfg: ModelConfig = toml::from_str("n_vocab = 16\nn_ctx = 8\nn_layer = 2\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 8\n[moe]\nn_expert = 4\nn_expert_active = 2\nd_expert = 4\n").unwrap();
        let m = Transformer::new(cfg, 3).unwrap();
        let tokens: Vec<u32> = (0..65).map(|i| (i * 5 % 16) as u32).collect();
        let domains: Vec<u8> = (0..65).map(|i| (i / 20) as u8 % 2).collect();
        let names = vec!["a".to_string(), "b".to_string()];
        let t = expert_domains(&m, &tokens, &domains, &names, 3, 8, 2).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].layer, 1);
        assert_eq!(t[0].tokens.iter().sum::<u64>(), 6 * 8);
        for l in &t {
            for row in &l.fraction {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            }
            assert_eq!(l.top_domain.len(), 4);
            assert!(l.specialisation > 0.0);
        }
        // no domains: nothing to report
        assert!(expert_domains(&m, &tokens, &domains, &[], 3, 8, 2).unwrap().is_empty());
    }
}
