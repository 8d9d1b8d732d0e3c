//! Data-parallel training: the ranks of a run and how they combine tensors.
//!
//! A data-parallel run trains one model on `N` ranks (processes, or threads in tests). Every
//! rank holds the same state and runs the same train step on its shard of each global batch
//! (`batch / N` samples). The step combines what must be global with `all_reduce` nodes,
//! which [`crate::autodiff::train_step`] places and the JIT runs through a [`Group`]:
//!
//! - every gradient, averaged before the optimizer update (so the update is the one the whole
//!   batch would give), all in one bucket (`pack`, one `all_reduce`, `unpack`);
//! - every observed range that depends on the batch (min and max over ranks, both ends in one
//!   `reduce=range` exchange) before its moving average;
//! - the reported loss;
//! - BatchNorm's batch statistics, and the sums its gradient takes over the batch, which the
//!   JIT combines inside the BatchNorm lowering when the step runs in a group of several ranks
//!   (synchronized BatchNorm: the statistics of the global batch).
//!
//! Host-side state needs nothing: the step counter and the learning-rate schedule are the
//! same on every rank, the shuffling is seeded by the run, and dropout masks are hashes of
//! the global sample index.
//!
//! A [`Group`] must give every rank the same bits and the same bits on every run (a fixed
//! reduction order), so that a run is reproducible for a fixed `N`.
//!
//! [`Solo`] is the group of one process; [`ThreadGroup`] runs ranks as threads of one
//! process (tests, and machines without MPI); `MpiGroup` (cargo feature `mpi`) runs them as
//! MPI processes under `mpirun`.

#[cfg(feature = "mpi")]
pub mod mpi;

use crate::error::{Error, Result};
pub use crate::ir::op::Reduce;
use std::fmt;
use std::sync::{Arc, Barrier, Mutex};

/// The number of processes an MPI launcher (`mpirun`, `mpiexec`, `srun --mpi`) started, if it
/// started this one: from the environment Open MPI, MPICH and PMI give each process.
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The ranks of a data-parallel run, as seen from one of them.
pub trait Group: Send + Sync {
    /// This rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Combines `data` element by element over all ranks, in place. Every rank passes a
    /// slice of the same length and gets the same bits; the same inputs give the same bits
    /// on every run. ([`Reduce::Range`] data has even length; [`range_by_max`] implements it
    /// with `Max`.)
    fn all_reduce(&self, data: &mut [f32], reduce: Reduce) -> Result<()>;
    /// Sums counters over all ranks, in place (exact).
    fn sum_counts(&self, data: &mut [u64]) -> Result<()>;
}

/// A shared [`Group`], as options and configurations hold it (compared by identity).
#[derive(Clone)]
pub struct GroupHandle(pub Arc<dyn Group>);

impl GroupHandle {
    /// A handle on `group`.
    pub fn new(group: impl Group + 'static) -> GroupHandle {
        GroupHandle(Arc::new(group))
    }

    /// The group of one process.
    pub fn solo() -> GroupHandle {
        GroupHandle::new(Solo)
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.0.rank()
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.0.size()
    }

    /// Whether this rank writes the run's outputs (rank 0).
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// See [`Group::all_reduce`].
    pub fn all_reduce(&self, data: &mut [f32], reduce: Reduce) -> Result<()> {
        self.0.all_reduce(data, reduce)
    }

    /// See [`Group::sum_counts`].
    pub fn sum_counts(&self, data: &mut [u64]) -> Result<()> {
        self.0.sum_counts(data)
    }

    /// This rank's shard of a global batch of `batch` samples: `(first, len)`. Shards are
    /// equal, so the batch must divide by the number of ranks.
    pub fn shard(&self, batch: usize) -> Result<(usize, usize)> {
        let n = self.size();
        if n == 0 || !batch.is_multiple_of(n) {
            return Err(Error::Usage(format!(
                "the batch of {batch} samples does not split evenly over {n} ranks: use a \
                 batch size divisible by {n} (the global batch is split into equal shards)"
            )));
        }
        let len = batch / n;
        Ok((self.rank() * len, len))
    }
}

impl Default for GroupHandle {
    fn default() -> GroupHandle {
        GroupHandle::solo()
    }
}

impl fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.size())
    }
}

impl PartialEq for GroupHandle {
    fn eq(&self, other: &GroupHandle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for GroupHandle {}

/// [`Reduce::Range`] through a maximum: `[lows | highs]` becomes `[-lows | highs]`, is
/// reduced with `max` (exact: negation rounds nothing), and the lows are negated back.
pub fn range_by_max(data: &mut [f32], max: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<()> {
    let half = data.len() / 2;
    data[..half].iter_mut().for_each(|v| *v = -*v);
    let r = max(data);
    data[..half].iter_mut().for_each(|v| *v = -*v);
    r
}

/// One process alone: every reduction is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Group for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce(&self, _: &mut [f32], _: Reduce) -> Result<()> {
        Ok(())
    }
    fn sum_counts(&self, _: &mut [u64]) -> Result<()> {
        Ok(())
    }
}

/// Combines `parts` (one slice per rank, in rank order) into `out`, in rank order.
pub fn combine(parts: &[&[f32]], reduce: Reduce, out: &mut [f32]) {
    out.copy_from_slice(parts[0]);
    let half = out.len() / 2;
    for p in &parts[1..] {
        for (i, (o, &v)) in out.iter_mut().zip(p.iter()).enumerate() {
            *o = match reduce {
                Reduce::Mean => *o + v,
                Reduce::Min => o.min(v),
                Reduce::Max => o.max(v),
                Reduce::Range if i < half => o.min(v),
                Reduce::Range => o.max(v),
            };
        }
    }
    if reduce == Reduce::Mean {
        let n = parts.len() as f32;
        for o in out.iter_mut() {
            *o /= n;
        }
    }
}

struct Shared {
    barrier: Barrier,
    floats: Mutex<Vec<Vec<f32>>>,
    counts: Mutex<Vec<Vec<u64>>>,
}

/// Ranks as threads of one process, combining in rank order through shared memory. Each
/// thread owns one member ([`ThreadGroup::new`]); a member whose peers stopped calling
/// waits forever, so use it where all ranks run the same code (tests, one machine).
pub struct ThreadGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// The `n` members of a new group, in rank order.
    pub fn new(n: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(n),
            floats: Mutex::new(vec![Vec::new(); n]),
            counts: Mutex::new(vec![Vec::new(); n]),
        });
        (0..n)
            .map(|rank| ThreadGroup {
                rank,
                size: n,
                shared: shared.clone(),
            })
            .collect()
    }

    fn exchange<T: Clone>(
        &self,
        slots: &Mutex<Vec<Vec<T>>>,
        data: &mut [T],
        fold: impl FnOnce(&[Vec<T>], &mut [T]),
    ) -> Result<()> {
        let poisoned = |_| Error::Distributed {
            rank: self.rank,
            msg: "a peer thread panicked during a reduction".into(),
        };
        slots.lock().map_err(poisoned)?[self.rank] = data.to_vec();
        self.shared.barrier.wait();
        {
            let all = slots.lock().map_err(poisoned)?;
            if all.iter().any(|v| v.len() != data.len()) {
                return Err(Error::Distributed {
                    rank: self.rank,
                    msg: "the ranks reduced tensors of different sizes".into(),
                });
            }
            fold(&all, data);
        }
        // nobody overwrites a slot before every rank has read them all
        self.shared.barrier.wait();
        Ok(())
    }
}

impl Group for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce(&self, data: &mut [f32], reduce: Reduce) -> Result<()> {
        self.exchange(&self.shared.floats, data, |all, out| {
            let parts: Vec<&[f32]> = all.iter().map(|v| v.as_slice()).collect();
            combine(&parts, reduce, out)
        })
    }
    fn sum_counts(&self, data: &mut [u64]) -> Result<()> {
        self.exchange(&self.shared.counts, data, |all, out| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = all.iter().map(|v| v[i]).sum();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_group_reduces_in_rank_order_on_every_rank() {
        let members = ThreadGroup::new(3);
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = members
                .iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank() as f32;
                        let mut mean = vec![r, 1e8 + r, -r];
                        g.all_reduce(&mut mean, Reduce::Mean).unwrap();
                        let mut lo = vec![r, -r];
                        g.all_reduce(&mut lo, Reduce::Min).unwrap();
                        let mut hi = vec![r, -r];
                        g.all_reduce(&mut hi, Reduce::Max).unwrap();
                        let mut n = vec![g.rank() as u64 + 1];
                        g.sum_counts(&mut n).unwrap();
                        let mut range = vec![r, -r, r, -r];
                        g.all_reduce(&mut range, Reduce::Range).unwrap();
                        let mut by_max = vec![r, -r, r, -r];
                        range_by_max(&mut by_max, |d| g.all_reduce(d, Reduce::Max)).unwrap();
                        assert_eq!(range, by_max);
                        [mean, lo, hi, vec![n[0] as f32], range].concat()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want_mean = ((0.0f32 + 1.0) + 2.0) / 3.0;
        let big = (((1e8f32 + 0.0) + (1e8 + 1.0)) + (1e8 + 2.0)) / 3.0;
        for r in &results {
            assert_eq!(r, &results[0], "every rank gets the same bits");
        }
        assert_eq!(
            results[0],
            vec![want_mean, big, -want_mean, 0.0, -2.0, 2.0, 0.0, 6.0, 0.0, -2.0, 2.0, 0.0]
        );
    }

    #[test]
    fn shards_must_be_equal() {
        let g = GroupHandle::new(ThreadGroup::new(3).remove(1));
        assert_eq!(g.shard(60).unwrap(), (20, 20));
        let e = g.shard(64).unwrap_err().to_string();
        assert!(e.contains("divisible by 3"), "{e}");
    }
}
