//! The job this process belongs to: one process, or a rank of an `mpirun` launch (MPI through
//! the `mpi` cargo feature).

use moe_dist::{Comm, Single};
use std::sync::Arc;

/// The ranks of the job, kept alive (with MPI initialised) for the life of the command.
pub struct Job {
    /// every rank
    pub world: Arc<dyn Comm>,
    #[cfg(feature = "mpi")]
    _mpi: Option<moe_dist::mpi_comm::MpiRuntime>,
}

/// Ranks announced by the launcher's environment (Open MPI, MPICH/Hydra, PMIx, Slurm's PMI).
fn launcher_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"].iter().find_map(|k| std::env::var(k).ok()?.parse().ok())
}

impl Job {
    /// Join the job: MPI when launched by `mpirun` (and built with `--features mpi`), else one
    /// process. A panic on any rank then aborts every rank (no rank waits forever).
    pub fn join() -> anyhow::Result<Job> {
        let launched = launcher_size();
        #[cfg(feature = "mpi")]
        if launched.is_some() {
            let (rt, world) = moe_dist::mpi_comm::init().map_err(anyhow::Error::msg)?;
            moe_dist::install_abort_on_panic(world.clone());
            let job = Job { world, _mpi: Some(rt) };
            job.debug_panic();
            return Ok(job);
        }
        if let Some(n) = launched.filter(|&n| n > 1) {
            anyhow::bail!(
                "launched as one of {n} MPI ranks, but this moe was built without MPI; build it with `cargo build --release --features mpi` (Debian: apt install libopenmpi-dev openmpi-bin libclang-dev pkgconf)"
            );
        }
        Ok(Job {
            world: Arc::new(Single),
            #[cfg(feature = "mpi")]
            _mpi: None,
        })
    }

    /// Test hook: `MOE_DEBUG_PANIC_RANK=r` makes rank `r` panic once the job has started, to check
    /// that the whole job ends with an error instead of hanging.
    #[cfg(feature = "mpi")]
    fn debug_panic(&self) {
        if std::env::var("MOE_DEBUG_PANIC_RANK").ok().and_then(|v| v.parse::<usize>().ok()) == Some(self.world.rank()) {
            panic!("MOE_DEBUG_PANIC_RANK={}: this rank panics on purpose", self.world.rank());
        }
    }

    /// Whether this rank prints the command's results (rank 0).
    pub fn lead(&self) -> bool {
        self.world.rank() == 0
    }

    /// Run `f`; an error on any rank of a several-rank job is printed with the rank and aborts
    /// the whole job (the other ranks may be inside a collective waiting for this one).
    pub fn run<T>(&self, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        match f() {
            Err(e) if self.world.size() > 1 => {
                eprintln!("rank {} of {}: error: {e:#}", self.world.rank(), self.world.size());
                self.world.abort(2)
            }
            r => r,
        }
    }
}
