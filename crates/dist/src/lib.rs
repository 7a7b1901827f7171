//! Communicators for running one model over several processes: the small set of collectives
//! data and expert parallelism need, behind one trait with three backends.
//!
//! - [`Single`]: one process, size 1, every collective a copy. The default; needs nothing.
//! - [`threads::spawn`]: `n` ranks as threads of one process, for tests of the parallel code
//!   paths on any machine (every collective is an all-gather of byte blobs: slow, plainly correct).
//! - `mpi` (cargo feature `mpi`): MPI through rsmpi, one rank per process, launched by `mpirun`.
//!
//! Every collective is called by every rank of the communicator, in the same order, from one
//! thread at a time (MPI is initialised with `MPI_THREAD_SERIALIZED`). Sums
//! give the same bits on every rank (the MPI backend reduces to rank 0 and broadcasts; the others
//! add in rank order), so replicas updated from them stay bitwise identical.
//!
//! Errors inside a collective are fatal, as MPI's default handler makes them: the job aborts.
//! [`install_abort_on_panic`] makes a panic on any rank end the whole job with a non-zero exit
//! instead of leaving the other ranks waiting in a collective forever.

use std::sync::Arc;

pub mod threads;

#[cfg(feature = "mpi")]
pub mod mpi_comm;

/// A group of ranks that run collectives together.
pub trait Comm: Send + Sync {
    /// This rank, `0..size`.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn size(&self) -> usize;
    /// Backend name (`single`, `threads`, `mpi`), for logs.
    fn backend(&self) -> &'static str;
    /// Collective: ranks passing the same `color` form a new communicator, ranked by `key`
    /// (ties by the rank here).
    fn split(&self, color: usize, key: usize) -> Arc<dyn Comm>;
    /// Collective: every rank's `send` (sizes may differ), in rank order.
    fn all_gather_bytes(&self, send: &[u8]) -> Vec<Vec<u8>>;
    /// Collective: `send` is `size` consecutive pieces of `counts[q]` bytes, piece `q` for rank
    /// `q`. Returns the pieces received, concatenated in source-rank order, and their sizes.
    fn all_to_all_v_bytes(&self, send: &[u8], counts: &[usize]) -> (Vec<u8>, Vec<usize>);
    /// Collective: element-wise sum over ranks, the same bits on every rank.
    fn all_reduce_sum_f64(&self, v: &mut [f64]);
    /// Collective: element-wise sum over ranks, the same bits on every rank.
    fn all_reduce_sum_f32(&self, v: &mut [f32]);
    /// Collective: element-wise sum over ranks.
    fn all_reduce_sum_u64(&self, v: &mut [u64]);
    /// Collective: `root`'s `buf` (its length too) replaces everyone's.
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize);
    /// [`Comm::broadcast_bytes`] for ranks that may wait long (an idle server's workers): they
    /// sleep between polls instead of spinning a core (a millisecond or so of added latency when
    /// the message comes after a pause; none while it keeps coming).
    fn broadcast_bytes_idle(&self, buf: &mut Vec<u8>, root: usize) {
        self.broadcast_bytes(buf, root)
    }
    /// Collective: returns when every rank has entered.
    fn barrier(&self);
    /// End the whole job (every rank, every process) with exit status `code`.
    fn abort(&self, code: i32) -> !;
}

/// One process: size 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single"
    }
    fn split(&self, _color: usize, _key: usize) -> Arc<dyn Comm> {
        Arc::new(Single)
    }
    fn all_gather_bytes(&self, send: &[u8]) -> Vec<Vec<u8>> {
        vec![send.to_vec()]
    }
    fn all_to_all_v_bytes(&self, send: &[u8], counts: &[usize]) -> (Vec<u8>, Vec<usize>) {
        assert_eq!(counts, [send.len()], "one rank: one piece, the whole buffer");
        (send.to_vec(), vec![send.len()])
    }
    fn all_reduce_sum_f64(&self, _v: &mut [f64]) {}
    fn all_reduce_sum_f32(&self, _v: &mut [f32]) {}
    fn all_reduce_sum_u64(&self, _v: &mut [u64]) {}
    fn broadcast_bytes(&self, _buf: &mut Vec<u8>, root: usize) {
        assert_eq!(root, 0, "one rank");
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Plain old data: any bit pattern is a value and there is no padding, so a slice of it can be
/// sent as bytes.
///
/// # Safety
/// Implement only for types with no padding and no invalid bit patterns.
pub unsafe trait Plain: Copy + Default + 'static {}
// SAFETY: primitive numbers: no padding, every bit pattern valid.
unsafe impl Plain for u8 {}
unsafe impl Plain for u32 {}
unsafe impl Plain for u64 {}
unsafe impl Plain for i32 {}
unsafe impl Plain for i64 {}
unsafe impl Plain for f32 {}
unsafe impl Plain for f64 {}

/// The bytes of a slice of plain values.
pub fn bytes_of<T: Plain>(s: &[T]) -> &[u8] {
    // SAFETY: `T: Plain` has no padding; the length covers exactly the slice's memory.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// Values from bytes written by [`bytes_of`] (a length not a multiple of the size panics).
pub fn from_bytes<T: Plain>(b: &[u8]) -> Vec<T> {
    let sz = std::mem::size_of::<T>();
    assert_eq!(b.len() % sz, 0, "{} bytes are not a whole number of {sz}-byte values", b.len());
    let mut v = vec![T::default(); b.len() / sz];
    // SAFETY: `T: Plain` accepts every bit pattern; `v` owns exactly `b.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr().cast::<u8>(), b.len()) };
    v
}

/// Typed [`Comm::all_to_all_v_bytes`]: `counts` and the returned counts are in elements.
pub fn all_to_all_v<T: Plain>(c: &dyn Comm, send: &[T], counts: &[usize]) -> (Vec<T>, Vec<usize>) {
    let sz = std::mem::size_of::<T>();
    let byte_counts: Vec<usize> = counts.iter().map(|&n| n * sz).collect();
    let (b, rc) = c.all_to_all_v_bytes(bytes_of(send), &byte_counts);
    (from_bytes(&b), rc.into_iter().map(|n| n / sz).collect())
}

/// Typed [`Comm::all_gather_bytes`].
pub fn all_gather<T: Plain>(c: &dyn Comm, send: &[T]) -> Vec<Vec<T>> {
    c.all_gather_bytes(bytes_of(send)).iter().map(|b| from_bytes(b)).collect()
}

/// Typed [`Comm::broadcast_bytes`].
pub fn broadcast<T: Plain>(c: &dyn Comm, v: &mut Vec<T>, root: usize) {
    let mut b = bytes_of(v).to_vec();
    c.broadcast_bytes(&mut b, root);
    *v = from_bytes(&b);
}

/// Make a panic on this rank abort the whole job through `comm` (after printing the panic message
/// with the rank), so that no other rank waits forever in a collective. Call once, after the
/// communicator exists.
pub fn install_abort_on_panic(comm: Arc<dyn Comm>) {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("rank {} of {}: panic; aborting the job", comm.rank(), comm.size());
        prev(info);
        comm.abort(101);
    }));
}

/// The layout of a data- and expert-parallel job: `world = ep × edp` ranks; rank
/// `r = d·ep + p` is expert-parallel rank `p` of data group `d`. The ranks of one expert-parallel
/// group (consecutive ranks) exchange tokens and together hold every expert once; the ranks of one
/// expert-data-parallel group (stride `ep`) hold the same experts.
#[derive(Clone)]
pub struct Groups {
    /// every rank
    pub world: Arc<dyn Comm>,
    /// the expert-parallel group of this rank (size `ep`)
    pub ep: Arc<dyn Comm>,
    /// the expert-data-parallel group of this rank (size `world / ep`)
    pub edp: Arc<dyn Comm>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Groups {{ backend: {}, world: {}/{}, ep: {}/{}, edp: {}/{} }}",
            self.world.backend(),
            self.world.rank(),
            self.world.size(),
            self.ep.rank(),
            self.ep.size(),
            self.edp.rank(),
            self.edp.size()
        )
    }
}

impl Groups {
    /// Split `world` into expert-parallel groups of `ep` consecutive ranks (collective).
    /// `ep` must divide the world size.
    pub fn new(world: Arc<dyn Comm>, ep: usize) -> Result<Groups, String> {
        let n = world.size();
        if ep == 0 || !n.is_multiple_of(ep) {
            return Err(format!("--expert-parallel {ep} does not divide the {n} ranks of the job"));
        }
        let r = world.rank();
        let ep_comm = world.split(r / ep, r % ep);
        let edp_comm = world.split(r % ep, r / ep);
        Ok(Groups { world, ep: ep_comm, edp: edp_comm })
    }

    /// One process.
    pub fn single() -> Groups {
        Groups { world: Arc::new(Single), ep: Arc::new(Single), edp: Arc::new(Single) }
    }

    /// Whether this is a one-rank job.
    pub fn is_single(&self) -> bool {
        self.world.size() == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let v = [1.5f32, -0.0, f32::MAX, 3.25];
        assert_eq!(from_bytes::<f32>(bytes_of(&v)), v);
        let w = [u64::MAX, 7];
        assert_eq!(from_bytes::<u64>(bytes_of(&w)), w);
    }

    #[test]
    fn single_is_identity() {
        let c = Single;
        let (r, n) = all_to_all_v(&c, &[1u32, 2, 3], &[3]);
        assert_eq!((r, n), (vec![1, 2, 3], vec![3]));
        assert_eq!(all_gather(&c, &[4.0f64]), vec![vec![4.0]]);
        let mut s = [1.0f64, 2.0];
        c.all_reduce_sum_f64(&mut s);
        assert_eq!(s, [1.0, 2.0]);
        let g = Groups::new(Arc::new(Single), 1).unwrap();
        assert!(g.is_single());
        assert!(Groups::new(Arc::new(Single), 2).is_err());
    }

    #[test]
    fn metered_counts_bytes_by_kind() {
        let m = Arc::new(Meter::default());
        let out = threads::spawn(2, |c| {
            let m = Arc::new(Meter::default());
            let mc = Metered::wrap(c, m.clone());
            let sub = mc.split(0, mc.rank());
            // 3 u32 to the other rank, 1 to itself
            let counts = if mc.rank() == 0 { [1, 3] } else { [3, 1] };
            all_to_all_v(sub.as_ref(), &[1u32, 2, 3, 4], &counts);
            mc.all_reduce_sum_f64(&mut [1.0, 2.0]);
            m.read()
        });
        for r in out {
            assert_eq!((r.a2a_bytes, r.reduce_bytes), (12, 16), "{r:?}");
            assert!(r.seconds() >= 0.0);
        }
        assert_eq!(m.read(), MeterReading::default());
    }
}

/// What a [`Metered`] communicator and the ones split from it have done, on this rank.
#[derive(Debug, Default)]
pub struct Meter {
    a2a: [std::sync::atomic::AtomicU64; 2],
    reduce: [std::sync::atomic::AtomicU64; 2],
    other: [std::sync::atomic::AtomicU64; 2],
}

/// A [`Meter`]'s counts: bytes this rank sent (its payload; the piece for itself excluded) and
/// seconds spent inside the collectives, waiting for slower ranks included.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeterReading {
    /// all-to-all(v): the MoE token exchange
    pub a2a_bytes: u64,
    /// seconds in all-to-all(v)
    pub a2a_s: f64,
    /// all-reduce: gradients, losses, statistics
    pub reduce_bytes: u64,
    /// seconds in all-reduce
    pub reduce_s: f64,
    /// all-gather, broadcast, barrier, split
    pub other_bytes: u64,
    /// seconds in the others
    pub other_s: f64,
}

impl MeterReading {
    /// Seconds in every collective.
    pub fn seconds(&self) -> f64 {
        self.a2a_s + self.reduce_s + self.other_s
    }
}

impl Meter {
    fn add(c: &[std::sync::atomic::AtomicU64; 2], bytes: usize, t0: std::time::Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        c[0].fetch_add(bytes as u64, Relaxed);
        c[1].fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
    }
    /// The counts so far.
    pub fn read(&self) -> MeterReading {
        use std::sync::atomic::Ordering::Relaxed;
        let s = |c: &[std::sync::atomic::AtomicU64; 2]| (c[0].load(Relaxed), c[1].load(Relaxed) as f64 * 1e-9);
        let ((a, at), (r, rt), (o, ot)) = (s(&self.a2a), s(&self.reduce), s(&self.other));
        MeterReading { a2a_bytes: a, a2a_s: at, reduce_bytes: r, reduce_s: rt, other_bytes: o, other_s: ot }
    }
}

/// A communicator that counts bytes and time into a [`Meter`] (shared by the ones split from it).
pub struct Metered {
    inner: Arc<dyn Comm>,
    meter: Arc<Meter>,
}

impl Metered {
    /// `inner`, counted into `meter`.
    pub fn wrap(inner: Arc<dyn Comm>, meter: Arc<Meter>) -> Arc<dyn Comm> {
        Arc::new(Metered { inner, meter })
    }
}

impl Comm for Metered {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn split(&self, color: usize, key: usize) -> Arc<dyn Comm> {
        let t0 = std::time::Instant::now();
        let c = Metered::wrap(self.inner.split(color, key), self.meter.clone());
        Meter::add(&self.meter.other, 0, t0);
        c
    }
    fn all_gather_bytes(&self, send: &[u8]) -> Vec<Vec<u8>> {
        let t0 = std::time::Instant::now();
        let r = self.inner.all_gather_bytes(send);
        Meter::add(&self.meter.other, send.len() * (self.size() - 1), t0);
        r
    }
    fn all_to_all_v_bytes(&self, send: &[u8], counts: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let t0 = std::time::Instant::now();
        let r = self.inner.all_to_all_v_bytes(send, counts);
        Meter::add(&self.meter.a2a, send.len() - counts[self.rank()], t0);
        r
    }
    fn all_reduce_sum_f64(&self, v: &mut [f64]) {
        let t0 = std::time::Instant::now();
        self.inner.all_reduce_sum_f64(v);
        Meter::add(&self.meter.reduce, 8 * v.len(), t0);
    }
    fn all_reduce_sum_f32(&self, v: &mut [f32]) {
        let t0 = std::time::Instant::now();
        self.inner.all_reduce_sum_f32(v);
        Meter::add(&self.meter.reduce, 4 * v.len(), t0);
    }
    fn all_reduce_sum_u64(&self, v: &mut [u64]) {
        let t0 = std::time::Instant::now();
        self.inner.all_reduce_sum_u64(v);
        Meter::add(&self.meter.reduce, 8 * v.len(), t0);
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) {
        let t0 = std::time::Instant::now();
        self.inner.broadcast_bytes(buf, root);
        Meter::add(&self.meter.other, if self.rank() == root { buf.len() * (self.size() - 1) } else { 0 }, t0);
    }
    fn broadcast_bytes_idle(&self, buf: &mut Vec<u8>, root: usize) {
        let t0 = std::time::Instant::now();
        self.inner.broadcast_bytes_idle(buf, root);
        Meter::add(&self.meter.other, if self.rank() == root { buf.len() * (self.size() - 1) } else { 0 }, t0);
    }
    fn barrier(&self) {
        let t0 = std::time::Instant::now();
        self.inner.barrier();
        Meter::add(&self.meter.other, 0, t0);
    }
    fn abort(&self, code: i32) -> ! {
        self.inner.abort(code)
    }
}
