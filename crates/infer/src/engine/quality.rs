//! Quality cost of a weight format: perplexity and KL divergence from the f32 model on a token
//! stream, both through the engine (f32 engine vs `dtype` engine) on the same windows — or of
//! another copy of the same model (e.g. the checkpoint quantised by llama.cpp and read back from its
//! GGUF file) against the f32 original.

use super::Engine;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_model::Transformer;
use serde::{Deserialize, Serialize};

/// Result of [`weight_format_quality`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormatQuality {
    /// the format compared with f32
    pub dtype: String,
    /// the GEMV kernel of the `dtype` engine, `+gemm` when the windows' products have enough rows
    /// for the wide path (weights dequantised to f32 per tile, the `gemm` crate; the experts' fewer
    /// rows per product may still take the GEMV kernel)
    pub kernel: String,
    /// bits per weight of the engine's matrices (attention, experts, LM head; not the router or
    /// the embedding), see [`super::EngineWeights::matrix_bits_per_weight`]
    pub bits_per_weight: f64,
    /// predicted tokens
    pub n_tok: usize,
    /// perplexity with f32 weights
    pub ppl_f32: f64,
    /// perplexity with `dtype` weights
    pub ppl: f64,
    /// mean over positions of KL(p_f32 ‖ p_dtype), nats
    pub kl_mean: f64,
    /// median over positions of the KL, nats (the mean is dominated by the few positions where a
    /// near-tie — a routing choice, the top token — flips)
    pub kl_median: f64,
    /// 99th percentile of the KL, nats
    pub kl_p99: f64,
    /// largest KL at one position, nats
    pub kl_max: f64,
    /// fraction of positions where both pick the same argmax
    pub top1_agree: f64,
}

/// `(log-softmax of row)` into `out`.
fn log_softmax(row: &[f32], out: &mut [f64]) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    out.iter_mut().zip(row).for_each(|(o, &v)| *o = v as f64 - lse);
}

/// Perplexity and KL of `dtype` (on `kernel`, see [`Engine::with_kernel`]) against exact f32 on consecutive windows of `seq_len + 1` tokens of
/// `tokens` (at most `max_windows`): each window's first `seq_len` tokens are prefilled with all
/// logits, and predict the next token at every position.
pub fn weight_format_quality(
    model: &Transformer<f32>,
    tokens: &[u32],
    dtype: WeightDtype,
    kernel: Kernel,
    seq_len: usize,
    max_windows: usize,
) -> Result<FormatQuality> {
    quality_against(model, model, tokens, dtype, kernel, seq_len, max_windows)
}

/// As [`weight_format_quality`], with the weights under test taken from `other`, a model of the
/// same shape as `model` (the same checkpoint converted or quantised elsewhere), run in `dtype`,
/// against `model` in f32.
pub fn quality_against(
    model: &Transformer<f32>,
    other: &Transformer<f32>,
    tokens: &[u32],
    dtype: WeightDtype,
    kernel: Kernel,
    seq_len: usize,
    max_windows: usize,
) -> Result<FormatQuality> {
    let (a, b) = (&model.cfg, &other.cfg);
    if (a.n_vocab, a.d_model, a.n_layer, model.params.len()) != (b.n_vocab, b.d_model, b.n_layer, other.params.len()) {
        return Err(Error::BadInput(format!(
            "quality: the models differ in shape (n_vocab {} / {}, d_model {} / {}, n_layer {} / {}, parameters {} / {})",
            a.n_vocab,
            b.n_vocab,
            a.d_model,
            b.d_model,
            a.n_layer,
            b.n_layer,
            model.params.len(),
            other.params.len()
        )));
    }
    if seq_len == 0 || seq_len > model.cfg.n_ctx.min(other.cfg.n_ctx) {
        return Err(Error::BadInput(format!("quality: seq_len {seq_len} must be in 1..=n_ctx ({})", model.cfg.n_ctx.min(other.cfg.n_ctx))));
    }
    let n_win = (tokens.len().saturating_sub(1) / seq_len).min(max_windows);
    if n_win == 0 {
        return Err(Error::BadInput(format!("quality: {} tokens cannot fill one window of {seq_len} + 1", tokens.len())));
    }
    let nv = model.cfg.n_vocab;
    let mut e32 = Engine::new(model, WeightDtype::F32)?;
    let mut eq = Engine::with_kernel(other, dtype, kernel)?;
    let (mut ce32, mut ceq, mut agree) = (0.0f64, 0.0f64, 0usize);
    let mut kls = Vec::with_capacity(n_win * seq_len);
    let (mut lp, mut lq) = (vec![0.0f64; nv], vec![0.0f64; nv]);
    for w in 0..n_win {
        let win = &tokens[w * seq_len..w * seq_len + seq_len + 1];
        let mut c32 = KvCache::with_capacity(&model.cfg, seq_len);
        let mut cq = KvCache::with_capacity(&other.cfg, seq_len);
        let l32 = e32.step_all_logits(&mut [&mut c32], &[&win[..seq_len]])?;
        let lqv = eq.step_all_logits(&mut [&mut cq], &[&win[..seq_len]])?;
        for t in 0..seq_len {
            let (a, b) = (&l32[t * nv..(t + 1) * nv], &lqv[t * nv..(t + 1) * nv]);
            log_softmax(a, &mut lp);
            log_softmax(b, &mut lq);
            let target = win[t + 1] as usize;
            ce32 -= lp[target];
            ceq -= lq[target];
            let kl: f64 = lp.iter().zip(&lq).map(|(&x, &y)| x.exp() * (x - y)).sum();
            kls.push(kl);
            agree += (crate::sampler::argmax(a) == crate::sampler::argmax(b)) as usize;
        }
    }
    let nf = kls.len() as f64;
    let kl_sum: f64 = kls.iter().sum();
    // a NaN (a broken format) sorts last: it shows in the maximum, and in the mean
    kls.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| kls[((p * (kls.len() - 1) as f64).round() as usize).min(kls.len() - 1)];
    Ok(FormatQuality {
        dtype: dtype.name().to_string(),
        kernel: {
            // a window's products of `seq_len` rows take the wide path from `gemm_min_rows_for` on
            let name = eq.kernel().resolved(dtype).name();
            if seq_len >= crate::engine::linear::gemm_min_rows_for(dtype, eq.kernel()) {
                format!("{name}+gemm")
            } else {
                name.to_string()
            }
        },
        bits_per_weight: eq.weights().matrix_bits_per_weight(),
        n_tok: kls.len(),
        ppl_f32: (ce32 / nf).exp(),
        ppl: (ceq / nf).exp(),
        kl_mean: kl_sum / nf,
        kl_median: pct(0.5),
        kl_p99: pct(0.99),
        kl_max: kls[kls.len() - 1],
        top1_agree: agree as f64 / nf,
    })
}
