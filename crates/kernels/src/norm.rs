//! RMSNorm: `out = inp / sqrt(mean(inp²) + eps) · weight`.

use crate::Real;
use rayon::prelude::*;

const PAR_MIN_ROWS: usize = 64;

/// Forward over `n` rows of width `d`; saves `rstd[n]` for the backward.
pub fn rmsnorm_forward<T: Real>(out: &mut [T], rstd: &mut [T], inp: &[T], weight: &[T], n: usize, d: usize, eps: f64) {
    assert_eq!(inp.len(), n * d, "rmsnorm_forward: inp length");
    assert_eq!(out.len(), n * d, "rmsnorm_forward: out length");
    assert_eq!(rstd.len(), n, "rmsnorm_forward: rstd length");
    assert_eq!(weight.len(), d, "rmsnorm_forward: weight length");
    let row = |(o, (x, r)): (&mut [T], (&[T], &mut T))| {
        let ss: f64 = x.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / d as f64;
        let rs = T::from_f64(1.0 / (ss + eps).sqrt());
        *r = rs;
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(weight) {
            *o = x * rs * w;
        }
    };
    if n >= PAR_MIN_ROWS {
        out.par_chunks_mut(d).zip(inp.par_chunks(d).zip(rstd.par_iter_mut())).for_each(row);
    } else {
        out.chunks_mut(d).zip(inp.chunks(d).zip(rstd.iter_mut())).for_each(row);
    }
}

/// Backward of [`rmsnorm_forward`]: **accumulates** into `d_inp` and `d_weight`.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward<T: Real>(
    d_inp: &mut [T],
    d_weight: &mut [T],
    d_out: &[T],
    inp: &[T],
    weight: &[T],
    rstd: &[T],
    n: usize,
    d: usize,
) {
    assert_eq!(d_inp.len(), n * d, "rmsnorm_backward: d_inp length");
    assert_eq!(d_weight.len(), d, "rmsnorm_backward: d_weight length");
    assert_eq!(d_out.len(), n * d, "rmsnorm_backward: d_out length");
    assert_eq!(inp.len(), n * d, "rmsnorm_backward: inp length");
    assert_eq!(weight.len(), d, "rmsnorm_backward: weight length");
    assert_eq!(rstd.len(), n, "rmsnorm_backward: rstd length");
    // d_weight needs a reduction over rows; do rows in parallel chunks with per-chunk partial sums.
    let chunk_rows = (n / rayon::current_num_threads().max(1)).clamp(16, 4096).max(1);
    let partials: Vec<Vec<f64>> = d_inp
        .par_chunks_mut(chunk_rows * d)
        .enumerate()
        .map(|(ci, d_inp_chunk)| {
            let mut dw = vec![0.0f64; d];
            let row0 = ci * chunk_rows;
            for (ri, dx) in d_inp_chunk.chunks_mut(d).enumerate() {
                let r = row0 + ri;
                let x = &inp[r * d..(r + 1) * d];
                let dy = &d_out[r * d..(r + 1) * d];
                let rs = rstd[r];
                // y = x·rs·w ; dx = rs·(dy⊙w) − x·rs³·mean(dy⊙w⊙x)
                let mut dot = T::ZERO;
                for i in 0..d {
                    dot += dy[i] * weight[i] * x[i];
                    dw[i] += (dy[i] * x[i] * rs).to_f64();
                }
                let c = dot * rs * rs * rs / T::from_f64(d as f64);
                for i in 0..d {
                    dx[i] += rs * dy[i] * weight[i] - x[i] * c;
                }
            }
            dw
        })
        .collect();
    for p in partials {
        for (g, v) in d_weight.iter_mut().zip(p) {
            *g += T::from_f64(v);
        }
    }
}
