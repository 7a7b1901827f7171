//! `n` ranks as threads of one process: the parallel code paths, testable anywhere.
//!
//! Every collective is one primitive, an all-gather of byte blobs under a mutex, and the rest is
//! computed from it on each rank (sums in rank order): slow, and plainly correct. A panic on one
//! rank ends the collectives of all the others (they panic too) instead of leaving them waiting.

use crate::Comm;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The panic message of a rank stopped by another's failure.
const SECONDARY: &str = "another rank failed; this rank stops too";

#[derive(Default)]
struct State {
    /// blobs of the round being collected
    bufs: Vec<Option<Vec<u8>>>,
    deposited: usize,
    /// rounds published so far
    gen: u64,
    /// the last published round and how many ranks have still to take it
    result: Option<Arc<Vec<Vec<u8>>>>,
    left: usize,
    /// sub-groups created by `split`, by (split number, color)
    splits: HashMap<(u64, usize), Arc<Group>>,
}

struct Group {
    n: usize,
    state: Mutex<State>,
    cv: Condvar,
    /// shared by every group of one `spawn`: set when a rank panicked or aborted
    failed: Arc<AtomicBool>,
}

impl Group {
    fn new(n: usize, failed: Arc<AtomicBool>) -> Arc<Group> {
        let state = State { bufs: vec![None; n], ..Default::default() };
        Arc::new(Group { n, state: Mutex::new(state), cv: Condvar::new(), failed })
    }

    fn wait<'a>(&self, g: std::sync::MutexGuard<'a, State>) -> std::sync::MutexGuard<'a, State> {
        if self.failed.load(Ordering::SeqCst) {
            drop(g);
            panic!("{SECONDARY}");
        }
        self.cv.wait_timeout(g, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0
    }

    /// All-gather of `blob` from every rank, in rank order.
    fn exchange(&self, rank: usize, blob: Vec<u8>) -> Arc<Vec<Vec<u8>>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.left > 0 {
            s = self.wait(s); // the previous round is still being taken
        }
        s.bufs[rank] = Some(blob);
        s.deposited += 1;
        let my_gen = s.gen;
        if s.deposited == self.n {
            let all: Vec<Vec<u8>> = s.bufs.iter_mut().map(|b| b.take().expect("every rank deposited")).collect();
            s.result = Some(Arc::new(all));
            s.deposited = 0;
            s.left = self.n;
            s.gen += 1;
            self.cv.notify_all();
        }
        while s.gen == my_gen {
            s = self.wait(s);
        }
        let r = s.result.clone().expect("a published round");
        s.left -= 1;
        if s.left == 0 {
            s.result = None;
            self.cv.notify_all();
        }
        r
    }
}

/// One rank of a thread group.
pub struct ThreadComm {
    group: Arc<Group>,
    rank: usize,
    splits: Mutex<u64>,
}

impl ThreadComm {
    fn gather(&self, blob: &[u8]) -> Arc<Vec<Vec<u8>>> {
        self.group.exchange(self.rank, blob.to_vec())
    }
}

fn sum_in_rank_order<T: crate::Plain + std::ops::AddAssign>(c: &ThreadComm, v: &mut [T]) {
    let all = c.gather(crate::bytes_of(v));
    v.iter_mut().for_each(|x| *x = T::default());
    for b in all.iter() {
        for (x, y) in v.iter_mut().zip(crate::from_bytes::<T>(b)) {
            *x += y;
        }
    }
}

impl Comm for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.group.n
    }
    fn backend(&self) -> &'static str {
        "threads"
    }
    fn split(&self, color: usize, key: usize) -> Arc<dyn Comm> {
        let no = {
            let mut s = self.splits.lock().unwrap_or_else(|e| e.into_inner());
            *s += 1;
            *s
        };
        let all = self.gather(crate::bytes_of(&[color as u64, key as u64]));
        let mut members: Vec<(u64, usize)> = all
            .iter()
            .enumerate()
            .map(|(r, b)| (crate::from_bytes::<u64>(b), r))
            .filter(|(ck, _)| ck[0] == color as u64)
            .map(|(ck, r)| (ck[1], r))
            .collect();
        members.sort();
        let rank = members.iter().position(|&(_, r)| r == self.rank).expect("this rank is in its own color");
        let group = {
            let mut s = self.group.state.lock().unwrap_or_else(|e| e.into_inner());
            s.splits.entry((no, color)).or_insert_with(|| Group::new(members.len(), self.group.failed.clone())).clone()
        };
        Arc::new(ThreadComm { group, rank, splits: Mutex::new(0) })
    }
    fn all_gather_bytes(&self, send: &[u8]) -> Vec<Vec<u8>> {
        self.gather(send).as_ref().clone()
    }
    fn all_to_all_v_bytes(&self, send: &[u8], counts: &[usize]) -> (Vec<u8>, Vec<usize>) {
        assert_eq!(counts.len(), self.group.n, "one count per rank");
        assert_eq!(counts.iter().sum::<usize>(), send.len(), "counts cover the send buffer");
        let mut blob = crate::bytes_of(&counts.iter().map(|&c| c as u64).collect::<Vec<u64>>()).to_vec();
        blob.extend_from_slice(send);
        let all = self.gather(&blob);
        let n = self.group.n;
        let (mut out, mut sizes) = (Vec::new(), Vec::with_capacity(n));
        for b in all.iter() {
            let c: Vec<u64> = crate::from_bytes(&b[..8 * n]);
            let start = 8 * n + c[..self.rank].iter().sum::<u64>() as usize;
            let len = c[self.rank] as usize;
            out.extend_from_slice(&b[start..start + len]);
            sizes.push(len);
        }
        (out, sizes)
    }
    fn all_reduce_sum_f64(&self, v: &mut [f64]) {
        sum_in_rank_order(self, v)
    }
    fn all_reduce_sum_f32(&self, v: &mut [f32]) {
        sum_in_rank_order(self, v)
    }
    fn all_reduce_sum_u64(&self, v: &mut [u64]) {
        sum_in_rank_order(self, v)
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) {
        let all = self.gather(if self.rank == root { buf } else { &[] });
        *buf = all[root].clone();
    }
    fn barrier(&self) {
        self.gather(&[]);
    }
    fn abort(&self, code: i32) -> ! {
        self.group.failed.store(true, Ordering::SeqCst);
        panic!("rank {} aborted the job with code {code}", self.rank)
    }
}

/// Sets the shared failure flag when its thread unwinds.
struct FailGuard(Arc<AtomicBool>);

impl Drop for FailGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Run `f` on `n` ranks, one thread each, and return their results in rank order. A panic on any
/// rank makes the others' collectives panic too; the first rank's panic message is re-raised here.
pub fn spawn<R: Send>(n: usize, f: impl Fn(Arc<dyn Comm>) -> R + Sync) -> Vec<R> {
    assert!(n > 0, "at least one rank");
    let failed = Arc::new(AtomicBool::new(false));
    let group = Group::new(n, failed.clone());
    let results: Vec<std::thread::Result<R>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|rank| {
                let comm: Arc<dyn Comm> = Arc::new(ThreadComm { group: group.clone(), rank, splits: Mutex::new(0) });
                let (f, failed) = (&f, failed.clone());
                s.spawn(move || {
                    let _guard = FailGuard(failed);
                    f(comm)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut out = Vec::with_capacity(n);
    let mut panics = Vec::new();
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => out.push(v),
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                panics.push((rank, msg.unwrap_or_default()));
            }
        }
    }
    // the rank that failed first, not the ones its failure stopped
    if let Some((rank, msg)) = panics.iter().find(|(_, m)| m != SECONDARY).or(panics.first()) {
        panic!("rank {rank} of {n} panicked: {msg}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{all_gather, all_to_all_v, Groups};

    #[test]
    fn collectives_on_three_ranks() {
        let out = spawn(3, |c| {
            let r = c.rank();
            // rank r sends q+1 copies of (10·r + q) to rank q
            let mut send = Vec::new();
            let mut counts = Vec::new();
            for q in 0..3 {
                send.extend(std::iter::repeat_n((10 * r + q) as u32, q + 1));
                counts.push(q + 1);
            }
            let (recv, rc) = all_to_all_v(c.as_ref(), &send, &counts);
            let mut s = [r as f64, 1.0];
            c.all_reduce_sum_f64(&mut s);
            let mut b = if r == 1 { vec![7u8, 8] } else { vec![] };
            c.broadcast_bytes(&mut b, 1);
            c.barrier();
            (recv, rc, s, b, all_gather(c.as_ref(), &[r as u64]))
        });
        for (q, (recv, rc, s, b, g)) in out.into_iter().enumerate() {
            let want: Vec<u32> = (0..3).flat_map(|r| std::iter::repeat_n((10 * r + q) as u32, q + 1)).collect();
            assert_eq!(recv, want);
            assert_eq!(rc, vec![q + 1; 3]);
            assert_eq!(s, [3.0, 3.0]);
            assert_eq!(b, vec![7, 8]);
            assert_eq!(g, vec![vec![0], vec![1], vec![2]]);
        }
    }

    #[test]
    fn groups_split_the_world() {
        let out = spawn(4, |c| {
            let g = Groups::new(c, 2).unwrap();
            let mut v = [g.world.rank() as u64];
            g.ep.all_reduce_sum_u64(&mut v);
            let mut w = [g.world.rank() as u64];
            g.edp.all_reduce_sum_u64(&mut w);
            (g.ep.rank(), g.ep.size(), g.edp.rank(), v[0], w[0])
        });
        // ep groups {0,1} {2,3}; edp groups {0,2} {1,3}
        assert_eq!(out, vec![(0, 2, 0, 1, 2), (1, 2, 0, 1, 4), (0, 2, 1, 5, 2), (1, 2, 1, 5, 4)]);
    }

    #[test]
    #[should_panic(expected = "rank 1 of 2 panicked")]
    fn a_panic_ends_every_rank() {
        spawn(2, |c| {
            if c.rank() == 1 {
                panic!("boom");
            }
            c.barrier(); // rank 0 must not wait forever
        });
    }
}
