//! Expert parallelism equals one process: the token exchange is exact, and an MoE layer whose
//! batch and experts are spread over 1–4 ranks (threads standing in for processes) gives expert
//! outputs and expert gradients bitwise equal to the same layer run on the whole batch in one
//! process, for every MoE variant the trainer supports.

mod common;

use common::{cfg, perturb, Rng};
use moe_dist::{threads, Groups};
use moe_model::moe::dispatch::Dispatch;
use moe_model::moe::parallel::Exchange;
use moe_model::moe::{moe_backward, moe_forward};
use moe_model::params::{build_layout_sharded, shard_params, FfnLayout, MoeLayout};
use moe_model::Transformer;

const BASE: &str = "n_vocab = 11\nn_ctx = 8\nn_layer = 1\nd_model = 8\nn_head = 2\nn_head_kv = 1\nd_ff = 6\n";

#[test]
fn exchange_there_and_back_is_exact() {
    for p in 1..=4 {
        for n_local in 1..=3 {
            let e = p * n_local;
            let out = threads::spawn(p, |c| {
                // a dispatch of this rank's rows: a few rows per expert, some experts empty
                let mut rng = Rng(17 + c.rank() as u64 * 101 + e as u64);
                let mut offsets = vec![0usize];
                for _ in 0..e {
                    let n = rng.below(4);
                    offsets.push(offsets.last().unwrap() + n);
                }
                let n_rows = *offsets.last().unwrap();
                let disp = Dispatch { offsets, token: vec![0; n_rows], row_of: vec![] };
                let rows: Vec<f32> = (0..n_rows * 3).map(|i| (c.rank() * 1000 + i) as f32 + 0.25).collect();
                let ex = Exchange::new(c.as_ref(), &disp, n_local);
                let there = ex.to_experts(c.as_ref(), &rows, 3);
                assert_eq!(there.len(), ex.n_rows() * 3);
                assert_eq!(*ex.offsets.last().unwrap(), ex.n_rows());
                let back = ex.to_source(c.as_ref(), &there, 3);
                (rows, back)
            });
            for (rank, (rows, back)) in out.into_iter().enumerate() {
                assert_eq!(rows, back, "np {p}, {n_local} experts per rank, rank {rank}");
            }
        }
    }
}

fn moe_layout(m: &Transformer<f64>) -> MoeLayout {
    m.layout.blocks.iter().find_map(|b| if let FfnLayout::Moe(l) = &b.ffn { Some(l.clone()) } else { None }).unwrap()
}

struct Case {
    name: &'static str,
    moe: &'static str,
    bias: bool,
}

/// The layer on the whole batch in one process vs spread over `p` expert-parallel ranks (each
/// its share of the tokens): expert outputs and expert gradients bitwise, the rest close.
fn ep_equals_one_process(c: &Case, p: usize) {
    let text = format!("{BASE}[moe]\n{}", c.moe);
    let mut m = Transformer::<f64>::new(cfg(&text), 5).unwrap();
    perturb(&mut m, 4.0, 9);
    let mc = m.cfg.moe.clone().unwrap();
    let lay = moe_layout(&m);
    let (d, n_tok) = (m.cfg.d_model, 12 * p);
    let mut rng = Rng(77);
    let h: Vec<f64> = (0..n_tok * d).map(|_| rng.sym()).collect();
    let d_out: Vec<f64> = (0..n_tok * d).map(|_| rng.sym()).collect();
    let bias: Vec<f32> = if c.bias { (0..lay.n_expert).map(|i| 0.05 * i as f32).collect() } else { vec![] };
    // one process
    let one = moe_forward(&m.params, &lay, &mc, &bias, &h, n_tok, d, 0, None);
    let mut g_one = vec![0.0; m.params.len()];
    let mut dh_one = vec![0.0; n_tok * d];
    moe_backward(&mut dh_one, &mut g_one, &d_out, &h, &one.saved, &m.params, &lay, &mc, n_tok, d, 1.0, None);
    let dropped = one.stats.n_dropped;
    // p ranks, expert-parallel over all of them
    let per = n_tok / p;
    let ranks = threads::spawn(p, |world| {
        let g = Groups::new(world, p).unwrap();
        let r = g.ep.rank();
        let (table, layout) = build_layout_sharded(&m.cfg, r, p).unwrap();
        let params = shard_params(&m.table, &m.params, &table, r);
        let lay_r = if let FfnLayout::Moe(l) = &layout.blocks[0].ffn { l.clone() } else { unreachable!() };
        let rows = r * per * d..(r + 1) * per * d;
        let f = moe_forward(&params, &lay_r, &mc, &bias, &h[rows.clone()], per, d, 0, Some(&g));
        let mut grads = vec![0.0; params.len()];
        let mut dh = vec![0.0; per * d];
        moe_backward(
            &mut dh,
            &mut grads,
            &d_out[rows],
            &h[r * per * d..(r + 1) * per * d],
            &f.saved,
            &params,
            &lay_r,
            &mc,
            per,
            d,
            1.0,
            Some(&g),
        );
        (f.out, f.saved.expert_outputs().to_vec(), f.aux, f.stats, dh, grads, table, f.saved.dispatch().row_of.clone())
    });
    let (mut aux, mut z, mut drops) = (0.0, 0.0, 0);
    let mut y_rows = 0;
    for (r, (out, y, a, st, dh, grads, table, row_of)) in ranks.iter().enumerate() {
        let rows = r * per * d..(r + 1) * per * d;
        let what = format!("{} at np {p}, rank {r}", c.name);
        // expert outputs bitwise: each kept (token, slot) assignment's row, computed on whichever
        // rank holds its expert, is the one-process row of the same assignment
        let k = mc.n_expert_active;
        let y_one = one.saved.expert_outputs();
        for (a, &rr) in row_of.iter().enumerate() {
            let ro = one.saved.dispatch().row_of[r * per * k + a];
            assert_eq!(ro == u32::MAX, rr == u32::MAX, "{what}: assignment {a} kept in one run only");
            if rr != u32::MAX {
                let (ro, rr) = (ro as usize * d, rr as usize * d);
                assert!(y[rr..rr + d] == y_one[ro..ro + d], "{what}: expert output of assignment {a} differs from one process");
            }
        }
        y_rows += y.len() / d;
        for (i, (&a, &b)) in out.iter().zip(&one.out[rows.clone()]).enumerate() {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{what}: out[{i}] {a} vs {b}");
        }
        for (i, (&a, &b)) in dh.iter().zip(&dh_one[rows]).enumerate() {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{what}: d_h[{i}] {a} vs {b}");
        }
        // expert gradients bitwise; the router's (replicated) summed over ranks below
        let want = shard_params(&m.table, &g_one, table, r);
        for e in table.entries.iter().filter(|e| e.routed_expert) {
            if grads[e.range()] != want[e.range()] {
                let (a, b) = (&grads[e.range()], &want[e.range()]);
                let i = (0..a.len()).find(|&i| a[i] != b[i]).unwrap();
                panic!("{what}: gradient of `{}` differs from one process at {i} of {}: {} vs {}", e.name, a.len(), a[i], b[i]);
            }
        }
        aux += a.aux;
        z += a.z;
        drops += st.n_dropped;
    }
    assert_eq!(y_rows, one.saved.expert_outputs().len() / d, "{}: rows after dropping", c.name);
    assert_eq!(drops, dropped, "{}: dropped assignments", c.name);
    assert!((aux - one.aux.aux).abs() <= 1e-12 * (1.0 + one.aux.aux.abs()), "{}: aux {aux} vs {}", c.name, one.aux.aux);
    assert!((z - one.aux.z).abs() <= 1e-12 * (1.0 + one.aux.z.abs()), "{}: z {z} vs {}", c.name, one.aux.z);
    // replicated tensors: the sum over ranks of each rank's share is the one-process gradient
    let full_table = &m.table;
    for e in full_table.entries.iter().filter(|e| !e.routed_expert) {
        let mut sum = vec![0.0; e.len];
        for (_, _, _, _, _, grads, table, _) in &ranks {
            let le = table.get(&e.name).unwrap();
            sum.iter_mut().zip(&grads[le.range()]).for_each(|(s, &g)| *s += g);
        }
        for (i, (&a, &b)) in sum.iter().zip(&g_one[e.range()]).enumerate() {
            assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "{} at np {p}: `{}`[{i}] {a} vs {b}", c.name, e.name);
        }
    }
    assert!(c.name != "top-1 with capacity and drops" || dropped > 0, "the capacity case drops nothing");
}

const CASES: &[Case] = &[
    Case {
        name: "top-2 softmax, aux + z losses",
        moe: "n_expert = 8\nn_expert_active = 2\nd_expert = 4\naux_loss_coef = 0.01\nz_loss_coef = 0.001\n",
        bias: false,
    },
    Case {
        name: "top-1 with capacity and drops",
        moe: "n_expert = 4\nn_expert_active = 1\nd_expert = 4\ncapacity_factor = 1.0\nrenormalize = false\naux_loss_coef = 0.01\n",
        bias: false,
    },
    Case { name: "shared experts", moe: "n_expert = 4\nn_expert_active = 2\nd_expert = 4\nn_expert_shared = 1\n", bias: false },
    Case {
        name: "sigmoid + selection bias",
        moe: "n_expert = 8\nn_expert_active = 2\nd_expert = 4\ngating = \"sigmoid\"\nbias_update_rate = 0.001\n",
        bias: true,
    },
];

#[test]
fn expert_parallel_layer_equals_one_process() {
    for c in CASES {
        for p in [1, 2, 4] {
            ep_equals_one_process(c, p);
        }
    }
}

#[test]
fn experts_that_do_not_divide_are_an_error() {
    let m = cfg(&format!("{BASE}[moe]\nn_expert = 6\nn_expert_active = 2\nd_expert = 4\n"));
    let e = build_layout_sharded(&m, 0, 4).unwrap_err();
    assert!(e.contains("layer 0 has 6 routed experts") && e.contains("4 expert-parallel ranks"), "{e}");
    assert!(build_layout_sharded(&m, 1, 3).is_ok());
}
