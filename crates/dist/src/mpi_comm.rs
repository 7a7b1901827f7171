//! MPI through rsmpi (cargo feature `mpi`): one rank per process, launched by `mpirun`.

use crate::Comm;
use mpi::datatype::PartitionMut;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;
use std::sync::Arc;

/// One rank of an MPI communicator.
pub struct MpiComm {
    comm: SimpleCommunicator,
}

// SAFETY: MPI is initialised with `MPI_THREAD_SERIALIZED` and the crate's contract is that the
// ranks' collectives are called from one thread at a time; the handle itself is an integer/pointer
// MPI owns, safe to move and share between threads that do not call into MPI concurrently.
unsafe impl Send for MpiComm {}
unsafe impl Sync for MpiComm {}

/// Keeps MPI initialised; dropping it finalises MPI (after which no communicator may be used).
pub struct MpiRuntime {
    _universe: mpi::environment::Universe,
}

/// Initialise MPI and return the world communicator.
pub fn init() -> Result<(MpiRuntime, Arc<dyn Comm>), String> {
    let (universe, _level) =
        mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| "MPI is already initialised in this process".to_string())?;
    let world = universe.world();
    Ok((MpiRuntime { _universe: universe }, Arc::new(MpiComm { comm: world })))
}

fn count(n: usize, what: &str) -> i32 {
    i32::try_from(n).unwrap_or_else(|_| panic!("{what}: {n} bytes exceed one MPI message (2 GiB); use more ranks or smaller batches"))
}

/// A receive buffer of `n` bytes whose address is its own even when empty: MPI takes equal send
/// and receive addresses for an (invalid) in-place call, and two empty `Vec`s share one dangling
/// address.
fn recv_buf(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n.max(1));
    v.resize(n, 0);
    v
}

/// `send`, or an empty slice of a local array when empty (see [`recv_buf`]).
fn send_buf<'a>(send: &'a [u8], empty: &'a [u8; 1]) -> &'a [u8] {
    if send.is_empty() {
        &empty[..0]
    } else {
        send
    }
}

fn displs(counts: &[i32]) -> Vec<i32> {
    counts.iter().scan(0i32, |acc, &c| Some(std::mem::replace(acc, *acc + c))).collect()
}

impl MpiComm {
    /// Sum to rank 0, then broadcast: the same bits everywhere, whatever algorithm MPI picks.
    fn sum_then_broadcast<T>(&self, v: &mut [T], op: mpi::collective::SystemOperation)
    where
        T: Equivalence + Copy,
        [T]: Buffer + BufferMut,
    {
        if v.is_empty() {
            return; // every rank has the same length
        }
        let root = self.comm.process_at_rank(0);
        let send = v.to_vec();
        if self.comm.rank() == 0 {
            root.reduce_into_root(&send[..], v, op);
        } else {
            root.reduce_into(&send[..], op);
        }
        root.broadcast_into(v);
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }
    fn size(&self) -> usize {
        self.comm.size() as usize
    }
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn split(&self, color: usize, key: usize) -> Arc<dyn Comm> {
        let c = self
            .comm
            .split_by_color_with_key(Color::with_value(count(color, "split color")), count(key, "split key"))
            .expect("a defined color always gives a communicator");
        Arc::new(MpiComm { comm: c })
    }
    fn all_gather_bytes(&self, send: &[u8]) -> Vec<Vec<u8>> {
        let n = self.size();
        let mut counts = vec![0i32; n];
        self.comm.all_gather_into(&[count(send.len(), "all-gather")][..], &mut counts[..]);
        let d = displs(&counts);
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        let mut buf = recv_buf(total);
        let empty = [0u8; 1];
        {
            let mut part = PartitionMut::new(&mut buf[..], &counts[..], &d[..]);
            self.comm.all_gather_varcount_into(send_buf(send, &empty), &mut part);
        }
        (0..n).map(|q| buf[d[q] as usize..(d[q] + counts[q]) as usize].to_vec()).collect()
    }
    fn all_to_all_v_bytes(&self, send: &[u8], counts: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let n = self.size();
        assert_eq!(counts.len(), n, "one count per rank");
        assert_eq!(counts.iter().sum::<usize>(), send.len(), "counts cover the send buffer");
        let sc: Vec<i32> = counts.iter().map(|&c| count(c, "all-to-all piece")).collect();
        let mut rc = vec![0i32; n];
        self.comm.all_to_all_into(&sc[..], &mut rc[..]);
        let (sd, rd) = (displs(&sc), displs(&rc));
        let total: usize = rc.iter().map(|&c| c as usize).sum();
        let mut recv = recv_buf(total);
        let empty = [0u8; 1];
        {
            let sp = mpi::datatype::Partition::new(send_buf(send, &empty), &sc[..], &sd[..]);
            let mut rp = PartitionMut::new(&mut recv[..], &rc[..], &rd[..]);
            self.comm.all_to_all_varcount_into(&sp, &mut rp);
        }
        (recv, rc.into_iter().map(|c| c as usize).collect())
    }
    fn all_reduce_sum_f64(&self, v: &mut [f64]) {
        self.sum_then_broadcast(v, mpi::collective::SystemOperation::sum())
    }
    fn all_reduce_sum_f32(&self, v: &mut [f32]) {
        self.sum_then_broadcast(v, mpi::collective::SystemOperation::sum())
    }
    fn all_reduce_sum_u64(&self, v: &mut [u64]) {
        if v.is_empty() {
            return; // every rank has the same length
        }
        let send = v.to_vec();
        self.comm.all_reduce_into(&send[..], v, mpi::collective::SystemOperation::sum());
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) {
        let r = self.comm.process_at_rank(root as i32);
        let mut len = [buf.len() as u64];
        r.broadcast_into(&mut len[..]);
        buf.resize(len[0] as usize, 0);
        r.broadcast_into(&mut buf[..]);
    }
    fn broadcast_bytes_idle(&self, buf: &mut Vec<u8>, root: usize) {
        // point to point, so that the waiting ranks can poll and sleep (a blocking MPI call spins)
        const TAG: i32 = 0x6D6F65;
        if self.rank() == root {
            for q in (0..self.size()).filter(|&q| q != root) {
                self.comm.process_at_rank(q as i32).send_with_tag(&buf[..], TAG);
            }
            return;
        }
        let from = self.comm.process_at_rank(root as i32);
        let t0 = std::time::Instant::now();
        loop {
            if from.immediate_probe_with_tag(TAG).is_some() {
                let (msg, _) = from.receive_vec_with_tag::<u8>(TAG);
                *buf = msg;
                return;
            }
            // spin briefly (a step follows a step), then sleep longer the longer it stays idle
            let idle = t0.elapsed();
            if idle < std::time::Duration::from_micros(200) {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(if idle.as_millis() < 100 { 200 } else { 5000 }));
            }
        }
    }
    fn barrier(&self) {
        self.comm.barrier();
    }
    fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }
}
