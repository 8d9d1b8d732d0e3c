//! How a command learns whether it is one rank of a data-parallel run: under an MPI
//! launcher (`mpirun -np N qatc train …`) it joins `MPI_COMM_WORLD` (in a qatc built with
//! the `mpi` feature); otherwise it runs alone.

use crate::dist::{launched_ranks, GroupHandle};
use crate::error::{Error, Result};
use crate::workflow::Ranks;

/// For the commands that run in one process: an error when an MPI launcher started several
/// (each would write the same outputs).
pub fn alone(command: &str) -> Result<()> {
    match launched_ranks() {
        Some(n) if n > 1 => Err(Error::Usage(format!(
            "qatc {command} runs in one process, but mpirun started {n}: run it without \
             mpirun (only `qatc train` and `qatc bench` train data-parallel)"
        ))),
        _ => Ok(()),
    }
}

/// This process' place in the run, and how to stop every rank after an error on this one.
pub struct Launch {
    /// The ranks and this rank's JIT threads.
    pub ranks: Ranks,
    #[cfg(feature = "mpi")]
    mpi: Option<std::sync::Arc<crate::dist::mpi::MpiGroup>>,
}

impl Launch {
    /// Joins the MPI job this process was launched in, if any. `timeout_secs` bounds how long
    /// a reduction waits for a peer; `threads` overrides the JIT threads of this rank (by
    /// default the machine's cores shared among the ranks running on it).
    pub fn join(timeout_secs: f64, threads: Option<usize>) -> Result<Launch> {
        if !(timeout_secs > 0.0 && timeout_secs.is_finite()) {
            return Err(Error::Usage(format!(
                "--mpi-timeout must be a positive number of seconds, found {timeout_secs}"
            )));
        }
        let alone = Launch {
            ranks: Ranks {
                group: GroupHandle::solo(),
                threads,
            },
            #[cfg(feature = "mpi")]
            mpi: None,
        };
        #[cfg(feature = "mpi")]
        {
            if launched_ranks().is_some() {
                let timeout = std::time::Duration::from_secs_f64(timeout_secs);
                let g = std::sync::Arc::new(crate::dist::mpi::MpiGroup::init(timeout)?);
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let threads = threads.unwrap_or((cores / g.local_size().max(1)).max(1));
                return Ok(Launch {
                    ranks: Ranks {
                        group: GroupHandle(g.clone()),
                        threads: Some(threads),
                    },
                    mpi: Some(g),
                });
            }
            Ok(alone)
        }
        #[cfg(not(feature = "mpi"))]
        {
            if launched_ranks().is_some() {
                return Err(Error::Usage(
                    "qatc was started by an MPI launcher but built without MPI: build it with \
                     `cargo build --release --features mpi` (needs Open MPI or MPICH and \
                     libclang)"
                        .into(),
                ));
            }
            Ok(alone)
        }
    }

    /// After an error on this rank: in a run of several ranks, prints it (naming the rank)
    /// and ends every rank, so none waits forever for this one; alone, returns it.
    pub fn fail(&self, e: Error) -> Error {
        #[cfg(feature = "mpi")]
        if let Some(g) = &self.mpi {
            if crate::dist::Group::size(&**g) > 1 {
                let rank = crate::dist::Group::rank(&**g);
                eprintln!("error: rank {rank}: {e}");
                g.abort(1);
            }
        }
        e
    }
}
