//! Expert-parallel decoding equals one process: ranks (threads standing in for `mpirun`'s
//! processes) each hold a share of every MoE layer's experts, step the same batch, and sum their
//! contributions; the logits match the one-process engine's and the greedy tokens are the same.

mod common;
use common::*;

use moe_dist::{threads, Groups};
use moe_infer::*;
use moe_kernels::quant::WeightDtype;
use moe_model::Transformer;

const CFG: &str = "n_vocab = 48\nn_ctx = 64\nn_layer = 3\nd_model = 32\nn_head = 4\nn_head_kv = 2\nd_ff = 48\n\
     [moe]\nn_expert = 8\nn_expert_active = 2\nd_expert = 24\nn_expert_shared = 1\nd_expert_shared = 20\nshared_gate = true\n\
     first_dense = 1\nn_expert_per_layer = [8, 4]\n";

/// Prefill three prompts, then greedy decode; returns every step's logits.
fn decode(eng: &mut Engine<'_>, m: &Transformer<f32>) -> Vec<Vec<f32>> {
    let nv = m.cfg.n_vocab;
    let mut caches: Vec<KvCache<f32>> = (0..3).map(|_| KvCache::new(&m.cfg)).collect();
    let mut step: Vec<Vec<u32>> = vec![tokens(20, nv, 5), tokens(3, nv, 6), tokens(9, nv, 7)];
    let mut out = Vec::new();
    for _ in 0..5 {
        let mut refs: Vec<&mut KvCache<f32>> = caches.iter_mut().collect();
        let l = eng.step(&mut refs, &step).unwrap().to_vec();
        step = l.chunks(nv).map(|r| vec![argmax(r)]).collect();
        out.push(l);
    }
    out
}

#[test]
fn expert_parallel_engine_equals_one_process() {
    let mut m = Transformer::<f32>::new(cfg(CFG), 3).unwrap();
    m.params.iter_mut().for_each(|p| *p *= 4.0);
    let one = decode(&mut Engine::new(&m, WeightDtype::F32).unwrap(), &m);
    for p in [2, 4] {
        let ranks = threads::spawn(p, |w| {
            let g = Groups::new(w.clone(), p).unwrap();
            let mine = m.clone().shard(g).unwrap();
            let mut eng = Engine::new(&mine, WeightDtype::F32).unwrap().with_expert_parallel(w).unwrap();
            decode(&mut eng, &mine)
        });
        for (r, steps) in ranks.iter().enumerate() {
            for (i, (a, b)) in steps.iter().zip(&one).enumerate() {
                assert_close(a, b, 1e-5, &format!("{p} ranks, rank {r}, step {i}"));
            }
        }
    }
    // a model sharded for other ranks is refused
    let e = threads::spawn(2, |w| {
        let g = Groups::new(w.clone(), 2).unwrap();
        let mine = m.clone().shard(g).unwrap();
        let other =
            threads::spawn(1, |w1| Engine::new(&mine, WeightDtype::F32).unwrap().with_expert_parallel(w1).err().map(|e| e.to_string()));
        other[0].clone()
    });
    assert!(e[0].as_deref().is_some_and(|s| s.contains("not rank 0's share of 1 ranks")), "{e:?}");
}
