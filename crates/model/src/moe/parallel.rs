//! Expert parallelism: the steps between dispatch and experts when the batch and the experts are
//! spread over processes.
//!
//! - [`globalize`]: the routing's expert counts and token count summed over every process of the
//!   batch, and with a capacity limit the kept mask decided over the whole batch (processes in rank
//!   order are the batch's tokens in order), so balancing and dropping mean what they mean in one
//!   process.
//! - [`Exchange`]: dropless token exchange within the expert-parallel group. Rows arrive sorted by
//!   global expert id (the dispatch's stable counting sort); per-expert counts go out by one
//!   all-to-all, the rows by an all-to-all-v, and the receiver regroups them expert-major (expert,
//!   then source rank, then the source's order), which is exactly the order one process would see
//!   for the concatenated batch. The way back is the inverse permutation and the reverse
//!   all-to-all-v.

use super::dispatch::Dispatch;
use super::router::{capacity_keep, Routing};
use moe_dist::{all_gather, all_to_all_v, Comm};
use moe_kernels::Real;
use std::any::TypeId;

/// The bytes of a slice of `f32` or `f64`.
pub(crate) fn real_bytes<T: Real>(s: &[T]) -> &[u8] {
    assert!(TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>(), "Real is f32 or f64");
    // SAFETY: T is f32 or f64: no padding; the length covers exactly the slice's memory.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// `f32`/`f64` values from [`real_bytes`].
pub(crate) fn real_from_bytes<T: Real>(b: &[u8]) -> Vec<T> {
    assert!(TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>(), "Real is f32 or f64");
    let sz = std::mem::size_of::<T>();
    assert_eq!(b.len() % sz, 0, "whole values");
    let mut v = vec![T::ZERO; b.len() / sz];
    // SAFETY: f32/f64 accept every bit pattern; `v` owns exactly `b.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr().cast::<u8>(), b.len()) };
    v
}

/// Make a routing computed on this process's tokens global over `world` (collective; nothing to
/// do in one process).
pub fn globalize<T: Real>(r: &mut Routing<T>, world: &dyn Comm) {
    if world.size() == 1 {
        return;
    }
    let (e, k) = (r.settings.n_expert, r.settings.k);
    let mut v: Vec<u64> = r.counts.iter().map(|&c| c as u64).collect();
    v.push(r.n_tok as u64);
    world.all_reduce_sum_u64(&mut v);
    r.n_tok_global = v[e] as usize;
    v.truncate(e);
    r.counts_global = v;
    if let Some(cap) = r.settings.capacity(r.n_tok_global) {
        // every process's choices and gate values, in rank order = the batch's token order
        let per_rank = all_gather(world, &r.idx);
        // this process's assignments start after the earlier ranks' (k per token)
        let before: usize = per_rank[..world.rank()].iter().map(|v| v.len()).sum();
        let idx = per_rank.concat();
        let probs: Vec<T> = world.all_gather_bytes(real_bytes(&r.probs)).iter().flat_map(|b| real_from_bytes::<T>(b)).collect();
        let kept = capacity_keep(&idx, &probs, r.n_tok_global, k, e, cap);
        r.kept = kept[before..before + r.n_tok * k].to_vec();
    }
}

/// One MoE layer's token exchange within the expert-parallel group, for the rows of one dispatch.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// rows this process sends to each rank of the group
    send: Vec<usize>,
    /// rows received from each rank, in source order
    recv: Vec<usize>,
    /// row `i` of the expert-major order is row `perm[i]` of the received (source-major) order
    perm: Vec<usize>,
    /// rows of local expert `j` are `offsets[j]..offsets[j + 1]` (expert-major order)
    pub offsets: Vec<usize>,
}

impl Exchange {
    /// Plan the exchange of `disp`'s rows (collective over `ep`); this process holds experts
    /// `ep.rank()·n_local..(ep.rank() + 1)·n_local`.
    pub fn new(ep: &dyn Comm, disp: &Dispatch, n_local: usize) -> Exchange {
        let p = ep.size();
        let n_expert = disp.offsets.len() - 1;
        assert_eq!(n_expert, p * n_local, "the experts are shared equally by the group");
        let counts: Vec<u64> = disp.offsets.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
        let send = (0..p).map(|q| disp.offsets[(q + 1) * n_local] - disp.offsets[q * n_local]).collect();
        let (got, _) = all_to_all_v(ep, &counts, &vec![n_local; p]); // [source][local expert]
        let got: Vec<usize> = got.into_iter().map(|c| c as usize).collect();
        // where each (source, expert) block starts in the source-major buffer
        let mut start = vec![0usize; p * n_local];
        let mut acc = 0;
        for (s, c) in start.iter_mut().zip(&got) {
            *s = acc;
            acc += c;
        }
        let mut perm = Vec::with_capacity(acc);
        let mut offsets = vec![0usize];
        for j in 0..n_local {
            for s in 0..p {
                let b = s * n_local + j;
                perm.extend(start[b]..start[b] + got[b]);
            }
            offsets.push(perm.len());
        }
        let recv = got.chunks(n_local).map(|c| c.iter().sum()).collect();
        Exchange { send, recv, perm, offsets }
    }

    /// Rows received from the group, expert-major.
    pub fn n_rows(&self) -> usize {
        self.perm.len()
    }

    /// Send `rows [n_dispatched, w]` (dispatch order) to the processes holding their experts;
    /// returns this process's rows `[n_rows, w]`, expert-major (collective).
    pub fn to_experts<T: Real>(&self, ep: &dyn Comm, rows: &[T], w: usize) -> Vec<T> {
        let counts: Vec<usize> = self.send.iter().map(|&n| n * w * std::mem::size_of::<T>()).collect();
        let (b, _) = ep.all_to_all_v_bytes(real_bytes(rows), &counts);
        let got: Vec<T> = real_from_bytes(&b);
        let mut out = vec![T::ZERO; self.perm.len() * w];
        for (o, &i) in out.chunks_mut(w.max(1)).zip(&self.perm) {
            o.copy_from_slice(&got[i * w..(i + 1) * w]);
        }
        out
    }

    /// The inverse of [`Exchange::to_experts`]: rows `[n_rows, w]` (expert-major) back to the
    /// processes they came from; returns this process's rows in dispatch order (collective).
    pub fn to_source<T: Real>(&self, ep: &dyn Comm, rows: &[T], w: usize) -> Vec<T> {
        let mut back = vec![T::ZERO; self.perm.len() * w];
        for (r, &i) in rows.chunks(w.max(1)).zip(&self.perm) {
            back[i * w..(i + 1) * w].copy_from_slice(r);
        }
        let counts: Vec<usize> = self.recv.iter().map(|&n| n * w * std::mem::size_of::<T>()).collect();
        let (b, _) = ep.all_to_all_v_bytes(real_bytes(&back), &counts);
        real_from_bytes(&b)
    }
}
