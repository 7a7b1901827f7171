//! Each optimised kernel against a plainly correct twin (the crate's `naive` or a formula written
//! here) on awkward shapes.

mod common;

use common::*;
use moe_kernels::adamw::{adamw_update, AdamWStep};
use moe_kernels::attention::{attention_forward, attention_forward_naive, AttnShape};
use moe_kernels::cross_entropy::{cross_entropy_forward, logsumexp};
use moe_kernels::matmul::naive;
use moe_kernels::norm::rmsnorm_forward;
use moe_kernels::rng::Rng;
use moe_kernels::rope::RopeTable;
use moe_kernels::{matmul, MatmulShape, Par, Real};

// ---------------------------------------------------------------- matmul

const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Runs `matmul` with `Seq` and `Pool` from the same C and checks both against the naive twin, with
/// an error bound proportional to `Σ_p |a_ip·b_pj|` (the f32 rounding scale of each entry).
fn check_matmul_f32(m: usize, k: usize, n: usize, seed: u64) {
    let mut g = Rng::new(seed);
    for (ta, tb) in LAYOUTS {
        for beta in [0.0f32, 1.0] {
            let s = MatmulShape { m, k, n, trans_a: ta, trans_b: tb };
            let a = randn_f32(&mut g, m * k);
            let b = randn_f32(&mut g, k * n);
            let c0 = randn_f32(&mut g, m * n);
            let mut want: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
            let (a64, b64): (Vec<f64>, Vec<f64>) = (a.iter().map(|&v| v as f64).collect(), b.iter().map(|&v| v as f64).collect());
            naive::matmul(&mut want, &a64, &b64, s, beta as f64);
            let mut bound = vec![0.0f64; m * n];
            let (a_abs, b_abs): (Vec<f64>, Vec<f64>) = (a64.iter().map(|v| v.abs()).collect(), b64.iter().map(|v| v.abs()).collect());
            naive::matmul(&mut bound, &a_abs, &b_abs, s, 0.0);
            for par in [Par::Seq, Par::Pool] {
                let mut c = c0.clone();
                matmul(&mut c, &a, &b, s, beta, par);
                for (i, ((&x, &y), &bd)) in c.iter().zip(&want).zip(&bound).enumerate() {
                    let tol = 1e-6 * (k as f64 + 2.0) * (bd + y.abs()) + 1e-30;
                    assert!(((x as f64) - y).abs() <= tol, "{m}x{k}x{n} ta={ta} tb={tb} beta={beta} {par:?} [{i}]: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn matmul_f32_1x1x1_seq_and_pool_match_naive() {
    check_matmul_f32(1, 1, 1, 100);
}

#[test]
fn matmul_f32_row_vector_gemv_shapes_match_naive() {
    check_matmul_f32(1, 129, 67, 101);
    check_matmul_f32(1, 31, 1, 102);
    check_matmul_f32(67, 129, 1, 103); // matrix · column vector
}

#[test]
fn matmul_f32_non_tile_multiple_sizes_match_naive() {
    for (i, &(m, k, n)) in [(31, 67, 129), (129, 31, 67), (67, 129, 31), (31, 31, 31)].iter().enumerate() {
        check_matmul_f32(m, k, n, 110 + i as u64);
    }
}

#[test]
fn matmul_f32_pool_above_parallel_threshold_matches_seq_closely() {
    // 129·67·129 > 64³, so Par::Pool really goes parallel here.
    let (m, k, n) = (129, 67, 129);
    let mut g = Rng::new(120);
    let a = randn_f32(&mut g, m * k);
    let b = randn_f32(&mut g, k * n);
    let s = MatmulShape::nt(m, k, n);
    let (mut c_seq, mut c_pool) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
    matmul(&mut c_seq, &a, &b, s, 0.0, Par::Seq);
    matmul(&mut c_pool, &a, &b, s, 0.0, Par::Pool);
    assert_close("pool vs seq", &c_pool, &c_seq, 1e-4, 1e-5);
    check_matmul_f32(m, k, n, 121);
}

#[test]
fn matmul_k0_beta0_zeroes_c_and_beta1_keeps_c() {
    for par in [Par::Seq, Par::Pool] {
        for (ta, tb) in LAYOUTS {
            let s = MatmulShape { m: 3, k: 0, n: 5, trans_a: ta, trans_b: tb };
            let mut c = vec![f32::NAN; 15];
            matmul(&mut c, &[], &[], s, 0.0, par);
            assert!(c.iter().all(|&v| v == 0.0), "beta 0: {c:?}");
            let c0: Vec<f32> = (0..15).map(|i| i as f32 - 7.5).collect();
            let mut c = c0.clone();
            matmul(&mut c, &[], &[], s, 1.0, par);
            assert_eq!(c, c0, "beta 1");
            let mut c64 = vec![f64::NAN; 15];
            matmul(&mut c64, &[], &[], s, 0.0, par);
            assert!(c64.iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn matmul_beta0_ignores_nan_in_c() {
    let (m, k, n) = (7, 5, 9);
    let mut g = Rng::new(130);
    let a = randn(&mut g, m * k);
    let b = randn(&mut g, k * n);
    for par in [Par::Seq, Par::Pool] {
        let mut c = vec![f64::NAN; m * n];
        matmul(&mut c, &a, &b, MatmulShape::nn(m, k, n), 0.0, par);
        let mut want = vec![0.0; m * n];
        naive::matmul(&mut want, &a, &b, MatmulShape::nn(m, k, n), 0.0);
        assert_close("beta 0 over NaN", &c, &want, 1e-12, 1e-12);
    }
}

#[test]
fn matmul_f64_awkward_shapes_match_naive_tightly() {
    let mut g = Rng::new(131);
    for &(m, k, n) in &[(1, 1, 1), (1, 67, 31), (31, 67, 129), (5, 1, 3)] {
        for (ta, tb) in LAYOUTS {
            let s = MatmulShape { m, k, n, trans_a: ta, trans_b: tb };
            let a = randn(&mut g, m * k);
            let b = randn(&mut g, k * n);
            let c0 = randn(&mut g, m * n);
            let (mut c, mut want) = (c0.clone(), c0.clone());
            matmul(&mut c, &a, &b, s, 1.0, Par::Pool);
            naive::matmul(&mut want, &a, &b, s, 1.0);
            assert_close("f64", &c, &want, 1e-12 * k as f64, 1e-12);
        }
    }
}

// ---------------------------------------------------------------- attention

fn check_attention_forward<T: Real + Into<f64>>(s: AttnShape, seed: u64, tol: f64) {
    let q_len = s.n_seq * s.seq_len * s.n_head * s.d_head;
    let kv_len = s.n_seq * s.seq_len * s.n_head_kv * s.d_head;
    let mut g = Rng::new(seed);
    let mut rnd = |n: usize| -> Vec<T> { (0..n).map(|_| T::from_f64(1.5 * g.normal())).collect() };
    let (q, k, v) = (rnd(q_len), rnd(kv_len), rnd(kv_len));
    let t = s.seq_len;
    let mut out = vec![T::from_f64(f64::NAN); q_len];
    let mut probs = vec![T::from_f64(f64::NAN); s.n_seq * s.n_head * t * t];
    attention_forward(&mut out, &mut probs, &q, &k, &v, s);
    let mut want = vec![T::ZERO; q_len];
    attention_forward_naive(&mut want, &q, &k, &v, s);
    assert_close(&format!("{s:?} out"), &out, &want, tol, tol);
    for (bh, p) in probs.chunks(t * t).enumerate() {
        for i in 0..t {
            let row = &p[i * t..(i + 1) * t];
            let sum: f64 = row[..=i].iter().map(|&x| x.into()).sum();
            assert!((sum - 1.0).abs() <= tol, "{s:?} head {bh} row {i} sums to {sum}");
            assert!(row[..=i].iter().all(|&x| x.into() > 0.0), "{s:?} head {bh} row {i}: {row:?}");
            assert!(row[i + 1..].iter().all(|&x| x.into() == 0.0), "{s:?} head {bh} row {i} not causal: {row:?}");
        }
    }
}

const ATTN_SHAPES: [AttnShape; 5] = [
    AttnShape { n_seq: 1, seq_len: 1, n_head: 2, n_head_kv: 1, d_head: 4 },
    AttnShape { n_seq: 2, seq_len: 7, n_head: 3, n_head_kv: 3, d_head: 5 }, // group 1
    AttnShape { n_seq: 3, seq_len: 5, n_head: 4, n_head_kv: 2, d_head: 8 }, // group 2
    AttnShape { n_seq: 2, seq_len: 9, n_head: 8, n_head_kv: 2, d_head: 3 }, // group 4
    AttnShape { n_seq: 1, seq_len: 33, n_head: 4, n_head_kv: 1, d_head: 16 },
];

#[test]
fn attention_forward_f32_matches_naive_and_probs_are_causal_rows() {
    for (i, &s) in ATTN_SHAPES.iter().enumerate() {
        check_attention_forward::<f32>(s, 200 + i as u64, 2e-5);
    }
}

#[test]
fn attention_forward_f64_matches_naive_and_probs_are_causal_rows() {
    for (i, &s) in ATTN_SHAPES.iter().enumerate() {
        check_attention_forward::<f64>(s, 210 + i as u64, 1e-12);
    }
}

#[test]
fn attention_forward_seq_len_1_output_equals_v() {
    let s = AttnShape { n_seq: 2, seq_len: 1, n_head: 4, n_head_kv: 2, d_head: 3 };
    let mut g = Rng::new(220);
    let q = randn(&mut g, 2 * 4 * 3);
    let k = randn(&mut g, 2 * 2 * 3);
    let v = randn(&mut g, 2 * 2 * 3);
    let (mut out, mut probs) = (vec![0.0; q.len()], vec![0.0; 2 * 4]);
    attention_forward(&mut out, &mut probs, &q, &k, &v, s);
    for b in 0..2 {
        for h in 0..4 {
            let o = &out[(b * 4 + h) * 3..][..3];
            let vg = &v[(b * 2 + h / 2) * 3..][..3];
            assert_eq!(o, vg, "seq {b} head {h}");
        }
    }
}

// ---------------------------------------------------------------- rope

/// HF rotate_half RoPE, one element at a time, in f64.
fn rope_reference(x: &[f64], positions: &[usize], n_head: usize, d: usize, theta: f64) -> Vec<f64> {
    let half = d / 2;
    let mut out = x.to_vec();
    for (row, &p) in positions.iter().enumerate() {
        for h in 0..n_head {
            let base = (row * n_head + h) * d;
            for i in 0..half {
                let angle = p as f64 * theta.powf(-2.0 * i as f64 / d as f64);
                let (c, s) = (angle.cos(), angle.sin());
                let (x1, x2) = (x[base + i], x[base + i + half]);
                out[base + i] = x1 * c - x2 * s;
                out[base + i + half] = x2 * c + x1 * s;
            }
        }
    }
    out
}

#[test]
fn rope_apply_f64_matches_per_element_formula() {
    let (n_seq, seq_len, n_head, d, pos0, theta) = (2, 5, 3, 8, 7, 10_000.0);
    let table = RopeTable::<f64>::new(d, theta, 64);
    let x = randn(&mut Rng::new(300), n_seq * seq_len * n_head * d);
    let mut y = x.clone();
    table.apply(&mut y, n_seq, seq_len, n_head, pos0, false);
    let positions: Vec<usize> = (0..n_seq).flat_map(|_| pos0..pos0 + seq_len).collect();
    assert_close("rope f64", &y, &rope_reference(&x, &positions, n_head, d, theta), 1e-12, 1e-12);
}

#[test]
fn rope_apply_f32_large_positions_match_per_element_formula() {
    let (n_seq, seq_len, n_head, d, pos0, theta) = (1, 4, 2, 6, 1000, 500_000.0);
    let table = RopeTable::<f32>::new(d, theta, pos0 + seq_len);
    assert_eq!(table.n_pos(), pos0 + seq_len);
    let x = randn_f32(&mut Rng::new(301), n_seq * seq_len * n_head * d);
    let mut y = x.clone();
    table.apply(&mut y, n_seq, seq_len, n_head, pos0, false);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let positions: Vec<usize> = (pos0..pos0 + seq_len).collect();
    assert_close("rope f32", &y, &rope_reference(&x64, &positions, n_head, d, theta), 2e-6, 2e-6);
}

#[test]
fn rope_apply_at_equals_apply_for_same_positions() {
    let (n_seq, seq_len, n_head, d, pos0) = (3, 4, 2, 10, 5);
    let table = RopeTable::<f32>::new(d, 10_000.0, 16);
    let x = randn_f32(&mut Rng::new(302), n_seq * seq_len * n_head * d);
    let mut a = x.clone();
    table.apply(&mut a, n_seq, seq_len, n_head, pos0, false);
    let positions: Vec<usize> = (0..n_seq).flat_map(|_| pos0..pos0 + seq_len).collect();
    let mut b = x.clone();
    table.apply_at(&mut b, &positions, n_head);
    assert_eq!(a, b);
}

#[test]
fn rope_apply_at_arbitrary_positions_matches_formula() {
    let (n_head, d, theta) = (2, 4, 10_000.0);
    let positions = [9usize, 0, 3, 3, 15];
    let table = RopeTable::<f64>::new(d, theta, 16);
    let x = randn(&mut Rng::new(303), positions.len() * n_head * d);
    let mut y = x.clone();
    table.apply_at(&mut y, &positions, n_head);
    assert_close("apply_at", &y, &rope_reference(&x, &positions, n_head, d, theta), 1e-12, 1e-12);
}

#[test]
fn rope_apply_then_inverse_is_identity() {
    let (n_seq, seq_len, n_head, d, pos0) = (2, 6, 3, 8, 2);
    let table = RopeTable::<f32>::new(d, 10_000.0, pos0 + seq_len);
    let x = randn_f32(&mut Rng::new(304), n_seq * seq_len * n_head * d);
    let mut y = x.clone();
    table.apply(&mut y, n_seq, seq_len, n_head, pos0, false);
    assert!(y.iter().zip(&x).any(|(a, b)| (a - b).abs() > 1e-2), "rotation did nothing");
    table.apply(&mut y, n_seq, seq_len, n_head, pos0, true);
    assert_close("roundtrip", &y, &x, 1e-6, 1e-6);
}

#[test]
#[should_panic(expected = "beyond table")]
fn rope_apply_past_table_end_panics() {
    let table = RopeTable::<f32>::new(4, 10_000.0, 8);
    let mut x = vec![0.0f32; 3 * 4];
    table.apply(&mut x, 1, 3, 1, 6, false);
}

// ---------------------------------------------------------------- adamw

/// `torch.optim.AdamW` for one parameter tensor, textbook form, in f64.
struct AdamWRef {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl AdamWRef {
    fn step(&mut self, g: &[f32], s: AdamWStep) {
        let (lr, b1, b2, eps, wd) = (s.lr as f64, s.beta1 as f64, s.beta2 as f64, s.eps as f64, s.weight_decay as f64);
        let t = s.t as i32;
        for i in 0..self.p.len() {
            let g = g[i] as f64;
            self.p[i] *= 1.0 - lr * wd;
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let m_hat = self.m[i] / (1.0 - b1.powi(t));
            let v_hat = self.v[i] / (1.0 - b2.powi(t));
            self.p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}

fn check_adamw(weight_decay: f32, steps: u64, seed: u64) {
    let n = 37;
    let mut g = Rng::new(seed);
    let mut p = randn_f32(&mut g, n);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut reference = AdamWRef { p: p.iter().map(|&x| x as f64).collect(), m: vec![0.0; n], v: vec![0.0; n] };
    for t in 1..=steps {
        let mut grad = randn_f32(&mut g, n);
        grad[0] = 0.0; // only decay acts (and, at t = 1, nothing else)
        grad[1] = 1e-9; // below eps scale
        grad[2] = 50.0;
        let s = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay, t };
        adamw_update(&mut p, &grad, &mut m, &mut v, s);
        reference.step(&grad, s);
        let what = format!("wd={weight_decay} t={t}");
        assert_close(&format!("{what} p"), &p, &reference.p, 1e-6, 1e-6);
        assert_close(&format!("{what} m"), &m, &reference.m, 1e-6, 1e-5); // m cancels: absolute floor
        assert_close(&format!("{what} v"), &v, &reference.v, 1e-20, 1e-5);
    }
}

#[test]
fn adamw_update_t1_no_decay_matches_torch_reference() {
    check_adamw(0.0, 1, 400);
}

#[test]
fn adamw_update_t1_with_decay_matches_torch_reference() {
    check_adamw(0.1, 1, 401);
}

#[test]
fn adamw_update_t5_no_decay_matches_torch_reference() {
    check_adamw(0.0, 5, 402);
}

#[test]
fn adamw_update_t5_with_decay_matches_torch_reference() {
    check_adamw(0.1, 5, 403);
}

#[test]
fn adamw_update_t1_moves_each_param_by_about_lr() {
    // At t = 1 bias correction makes the Adam step exactly lr·sign(g) (up to eps).
    let mut p = vec![1.0f32, -2.0, 0.5];
    let g = [0.3f32, -4.0, 1e-3];
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    adamw_update(&mut p, &g, &mut m, &mut v, AdamWStep { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, t: 1 });
    assert_close("p", &p, &[0.99f32, -1.99, 0.49], 1e-5, 0.0);
}

// ---------------------------------------------------------------- rmsnorm forward

fn rmsnorm_reference(x: &[f64], w: &[f64], d: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let mut out = Vec::with_capacity(x.len());
    let mut rstd = Vec::new();
    for row in x.chunks(d) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps).sqrt();
        rstd.push(r);
        out.extend(row.iter().zip(w).map(|(v, w)| v * r * w));
    }
    (out, rstd)
}

#[test]
fn rmsnorm_forward_f64_matches_formula() {
    for &(n, d) in &[(1, 1), (3, 7), (70, 5)] {
        let mut g = Rng::new(500 + n as u64);
        let x = randn(&mut g, n * d);
        let w = randn(&mut g, d);
        let (mut out, mut rstd) = (vec![f64::NAN; n * d], vec![f64::NAN; n]);
        rmsnorm_forward(&mut out, &mut rstd, &x, &w, n, d, 1e-6);
        let (want, want_rstd) = rmsnorm_reference(&x, &w, d, 1e-6);
        assert_close("out", &out, &want, 1e-14, 1e-13);
        assert_close("rstd", &rstd, &want_rstd, 0.0, 1e-13);
    }
}

#[test]
fn rmsnorm_forward_f32_small_and_large_rows_match_formula() {
    let (n, d, eps) = (4, 9, 1e-5);
    let mut g = Rng::new(510);
    let mut x = randn_f32(&mut g, n * d);
    for v in &mut x[d..2 * d] {
        *v *= 1e3; // large row
    }
    for v in &mut x[2 * d..3 * d] {
        *v *= 1e-4; // row where eps matters
    }
    x[3 * d..].fill(0.0); // all-zero row: rstd = 1/sqrt(eps), out = 0
    let w = randn_f32(&mut g, d);
    let (mut out, mut rstd) = (vec![0.0f32; n * d], vec![0.0f32; n]);
    rmsnorm_forward(&mut out, &mut rstd, &x, &w, n, d, eps);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let (want, want_rstd) = rmsnorm_reference(&x64, &w64, d, eps);
    assert_close("out", &out, &want, 1e-6, 1e-6);
    assert_close("rstd", &rstd, &want_rstd, 0.0, 1e-6);
}

// ---------------------------------------------------------------- cross-entropy forward

fn cross_entropy_reference(logits: &[f64], targets: &[u32], n_vocab: usize) -> Vec<f64> {
    logits
        .chunks(n_vocab)
        .zip(targets)
        .map(|(row, &t)| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let log_z = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            -(row[t as usize] - log_z)
        })
        .collect()
}

#[test]
fn cross_entropy_forward_f64_matches_log_softmax_formula() {
    let (n_vocab, targets) = (11, [0u32, 10, 3, 3, 7]);
    let logits: Vec<f64> = randn(&mut Rng::new(600), targets.len() * n_vocab).iter().map(|v| 3.0 * v).collect();
    let mut losses = vec![f64::NAN; targets.len()];
    cross_entropy_forward(&mut losses, &logits, &targets, n_vocab);
    assert_close("losses", &losses, &cross_entropy_reference(&logits, &targets, n_vocab), 1e-13, 1e-13);
    assert!(losses.iter().all(|&l| l > 0.0));
}

#[test]
fn cross_entropy_forward_large_logits_do_not_overflow() {
    let n_vocab = 4;
    let logits64 = [1e4, -1e4, 0.0, 9999.0, /**/ 1e4, 1e4, 1e4, 1e4, /**/ -1e4, -1e4 + 3.0, -1e4, -1e4];
    let targets = [3u32, 2, 1];
    let want = cross_entropy_reference(&logits64, &targets, n_vocab);
    assert!((want[0] - (1.0 + (-1.0f64).exp()).ln() - 1.0).abs() < 1e-12); // sanity of the reference
    assert!((want[1] - 4.0f64.ln()).abs() < 1e-12);

    let mut losses = [f64::NAN; 3];
    cross_entropy_forward(&mut losses, &logits64, &targets, n_vocab);
    assert_close("f64", &losses, &want, 1e-9, 0.0);

    let logits32: Vec<f32> = logits64.iter().map(|&v| v as f32).collect();
    let mut losses32 = [f32::NAN; 3];
    cross_entropy_forward(&mut losses32, &logits32, &targets, n_vocab);
    assert_close("f32", &losses32, &want, 2e-3, 0.0); // ulp(1e4) ≈ 1e-3 in f32
    assert!((logsumexp(&[1e4f32, 1e4]) - (1e4 + 2f32.ln())).abs() <= 1e-3);
}
