//! Data and expert parallelism for training: each process takes its share of every batch, and
//! the gradients, losses, routing statistics and gradient norm are summed over the job so that
//! every step is the step one process would take on the whole batch.
//!
//! The job is laid out by [`moe_dist::Groups`]: non-expert tensors are replicated on every rank and
//! their gradients summed over the world; routed-expert tensors are held by one rank of each
//! expert-parallel group and their gradients summed over the expert-data-parallel group (the
//! ranks holding the same experts). Sums give the same bits on every rank, so replicas stay
//! bitwise identical.

use crate::error::{Error, Result};
use moe_data::Batch;
use moe_dist::{all_gather, Comm, Groups};
use moe_model::moe::stats::RoutingStats;
use moe_model::Transformer;
use rayon::prelude::*;
use std::path::Path;

/// Rank `rank`'s share of `b` among `size`: a contiguous run of its windows (windows split as
/// evenly as possible, earlier ranks taking the remainder; a share may be empty).
pub fn share(b: &Batch, rank: usize, size: usize) -> Batch {
    let (q, r) = (b.batch_size / size, b.batch_size % size);
    let start = rank * q + rank.min(r);
    let n = q + usize::from(rank < r);
    let t = start * b.seq_len..(start + n) * b.seq_len;
    Batch { inputs: b.inputs[t.clone()].to_vec(), targets: b.targets[t].to_vec(), batch_size: n, seq_len: b.seq_len }
}

/// The ranges of `model.table` summed over the world (replicated) and over the expert-data-
/// parallel group (routed experts).
fn split_entries(model: &Transformer<f32>) -> (Vec<std::ops::Range<usize>>, Vec<std::ops::Range<usize>>) {
    let (mut rep, mut exp) = (Vec::new(), Vec::new());
    for e in &model.table.entries {
        if e.routed_expert {
            exp.push(e.range());
        } else {
            rep.push(e.range());
        }
    }
    (rep, exp)
}

fn sum_ranges(comm: &dyn Comm, buf: &mut [f32], ranges: &[std::ops::Range<usize>]) {
    if comm.size() == 1 || ranges.is_empty() {
        return;
    }
    let mut packed: Vec<f32> = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum());
    for r in ranges {
        packed.extend_from_slice(&buf[r.clone()]);
    }
    comm.all_reduce_sum_f32(&mut packed);
    let mut at = 0;
    for r in ranges {
        buf[r.clone()].copy_from_slice(&packed[at..at + r.len()]);
        at += r.len();
    }
}

/// Sum every process's gradient share (collective): replicated tensors over the world, routed
/// experts over the expert-data-parallel group.
pub fn reduce_grads(model: &Transformer<f32>, g: &Groups, grads: &mut [f32]) {
    let (rep, exp) = split_entries(model);
    sum_ranges(g.world.as_ref(), grads, &rep);
    sum_ranges(g.edp.as_ref(), grads, &exp);
}

/// Squares summed in f64 over fixed chunks, in a fixed order.
fn sum_sq(grads: &[f32], ranges: &[std::ops::Range<usize>]) -> f64 {
    ranges
        .iter()
        .map(|r| {
            grads[r.clone()]
                .par_chunks(1 << 15)
                .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
                .collect::<Vec<f64>>()
                .iter()
                .sum::<f64>()
        })
        .sum()
}

/// The global gradient norm of reduced gradients (collective): replicated tensors once, plus every
/// expert-parallel rank's experts. The same bits on every rank.
pub fn global_grad_norm(model: &Transformer<f32>, g: &Groups, grads: &[f32]) -> f64 {
    let (rep, exp) = split_entries(model);
    let mut e = [sum_sq(grads, &exp)];
    g.ep.all_reduce_sum_f64(&mut e);
    (sum_sq(grads, &rep) + e[0]).sqrt()
}

/// Sum routing statistics over the world (collective).
pub fn reduce_stats(world: &dyn Comm, stats: &mut [RoutingStats]) {
    if world.size() == 1 {
        return;
    }
    let mut ints: Vec<u64> = Vec::new();
    let mut floats: Vec<f64> = Vec::new();
    for s in stats.iter() {
        ints.extend_from_slice(&s.counts);
        ints.extend([s.n_dropped, s.n_assign, s.n_tok]);
        floats.push(s.entropy_sum);
    }
    world.all_reduce_sum_u64(&mut ints);
    world.all_reduce_sum_f64(&mut floats);
    let mut at = 0;
    for (s, &ent) in stats.iter_mut().zip(&floats) {
        let n = s.counts.len();
        s.counts.copy_from_slice(&ints[at..at + n]);
        s.n_dropped = ints[at + n];
        s.n_assign = ints[at + n + 1];
        s.n_tok = ints[at + n + 2];
        at += n + 3;
        s.entropy_sum = ent;
    }
}

/// Error unless every rank runs the same experiment (collective): `text` is the resolved config.
pub fn check_same_config(world: &dyn Comm, text: &str, cfg_file: &Path) -> Result<()> {
    let h = moe_kernels::rng::fnv1a(text.as_bytes());
    let all = all_gather(world, &[h]);
    if let Some(r) = all.iter().position(|v| v[0] != h) {
        return Err(Error::Config {
            path: cfg_file.to_path_buf(),
            field: "(whole file)".into(),
            reason: format!("rank {} resolved a different experiment than rank {}: every rank must read the same config", r, world.rank()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order() {
        let b = Batch { inputs: (0..10).collect(), targets: (1..11).collect(), batch_size: 5, seq_len: 2 };
        let parts: Vec<Batch> = (0..3).map(|r| share(&b, r, 3)).collect();
        assert_eq!(parts.iter().map(|p| p.batch_size).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(parts.iter().flat_map(|p| p.inputs.clone()).collect::<Vec<_>>(), b.inputs);
        assert_eq!(parts.iter().flat_map(|p| p.targets.clone()).collect::<Vec<_>>(), b.targets);
        let empty = share(&Batch { inputs: vec![1, 2], targets: vec![2, 3], batch_size: 1, seq_len: 2 }, 1, 2);
        assert_eq!((empty.batch_size, empty.inputs.len()), (0, 0));
    }
}
