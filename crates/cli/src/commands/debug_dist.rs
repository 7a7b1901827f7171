//! `moe debug-dist` (hidden): checks the job's communicator the way the tests under `mpirun` need,
//! each rank against values it computes itself. Exits non-zero on the first mismatch.

use crate::dist::Job;
use moe_dist::{all_gather, all_to_all_v, broadcast, Groups};
use moe_model::moe::dispatch::Dispatch;
use moe_model::moe::parallel::Exchange;

/// A deterministic value of rank `r`, item `i`.
fn val(r: usize, i: usize) -> f32 {
    (r * 1000 + i) as f32 * 0.5 + 0.125
}

pub fn run() -> anyhow::Result<()> {
    let job = Job::join()?;
    job.run(|| check(&job))
}

fn check(job: &Job) -> anyhow::Result<()> {
    let w = job.world.as_ref();
    let (r, n) = (w.rank(), w.size());
    let mut checks = 0;
    let mut ensure = |ok: bool, what: &str| -> anyhow::Result<()> {
        checks += 1;
        anyhow::ensure!(ok, "rank {r} of {n}: {what}");
        Ok(())
    };
    // sums, gathers, broadcast
    let mut s: Vec<f64> = (0..5).map(|i| (r * 10 + i) as f64).collect();
    w.all_reduce_sum_f64(&mut s);
    ensure(s.iter().enumerate().all(|(i, &x)| x == (0..n).map(|q| (q * 10 + i) as f64).sum::<f64>()), "all-reduce f64")?;
    let mut u = vec![r as u64 + 1; 3];
    w.all_reduce_sum_u64(&mut u);
    ensure(u == vec![(n * (n + 1) / 2) as u64; 3], "all-reduce u64")?;
    let g = all_gather(w, &vec![r as u32; r + 1]);
    ensure(g.iter().enumerate().all(|(q, v)| v == &vec![q as u32; q + 1]), "all-gather of different sizes")?;
    let mut b: Vec<u32> = if r == n - 1 { vec![7, 8, 9] } else { vec![] };
    broadcast(w, &mut b, n - 1);
    ensure(b == [7, 8, 9], "broadcast")?;
    // all-to-all-v: rank r sends q + 1 values to rank q
    let counts: Vec<usize> = (0..n).map(|q| q + 1).collect();
    let send: Vec<f32> = (0..n).flat_map(|q| (0..q + 1).map(move |i| val(r, q * 100 + i))).collect();
    let (got, rc) = all_to_all_v(w, &send, &counts);
    let want: Vec<f32> = (0..n).flat_map(|q| (0..r + 1).map(move |i| val(q, r * 100 + i))).collect();
    ensure(got == want && rc == vec![r + 1; n], "all-to-all-v")?;
    // the MoE token exchange, there and back, 1..=3 experts per rank, empty experts included
    for n_local in 1..=3 {
        let e = n * n_local;
        let mut offsets = vec![0usize];
        for j in 0..e {
            offsets.push(offsets[j] + (r + 2 * j) % 4);
        }
        let rows = offsets[e];
        let disp = Dispatch { offsets, token: vec![0; rows], row_of: vec![] };
        let x: Vec<f32> = (0..rows * 5).map(|i| val(r, i)).collect();
        let ex = Exchange::new(w, &disp, n_local);
        let there = ex.to_experts(w, &x, 5);
        // an identity expert: the rows come back unchanged
        let back = ex.to_source(w, &there, 5);
        ensure(back == x, &format!("token exchange with {n_local} experts per rank"))?;
    }
    // groups: expert-parallel groups of consecutive ranks when 2 divides the world
    if n % 2 == 0 {
        let gr = Groups::new(job.world.clone(), 2).map_err(anyhow::Error::msg)?;
        let mut v = [r as u64];
        gr.ep.all_reduce_sum_u64(&mut v);
        ensure(v[0] == (r / 2 * 4 + 1) as u64 && gr.ep.rank() == r % 2 && gr.edp.rank() == r / 2, "groups")?;
    }
    w.barrier();
    println!("rank {r} of {n} ({}): {checks} checks passed", w.backend());
    Ok(())
}
