//! Ranks as MPI processes (cargo feature `mpi`, over the system's Open MPI or MPICH through
//! the `mpi` crate): `mpirun -np N qatc train …`.
//!
//! Reductions run over `MPI_Isend`/`MPI_Irecv` in a fixed order, so a run is reproducible
//! for a fixed number of ranks and every rank gets the same bits: messages up to
//! [`SMALL`] floats by recursive doubling (`log2 N` exchanges: latency-optimal, for the many
//! small reductions of BatchNorm statistics and observed ranges), larger ones by a ring (a
//! reduce-scatter, then an all-gather: bandwidth-optimal, for gradients). The README's
//! scaling model uses the same two costs. Every exchange has a deadline: a peer that has
//! died or hangs makes the job stop with an error naming it (the error is printed, then
//! `MPI_Abort` ends every rank), never a job that hangs forever.

use super::{Group, Reduce};
use crate::error::{Error, Result};
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use std::time::{Duration, Instant};

/// The processes of `MPI_COMM_WORLD` as a [`Group`].
pub struct MpiGroup {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Ranks of the world on this machine (for threads per rank).
    local: usize,
    timeout: Duration,
    /// Testing hook (`QATC_MPI_FAULT=stall@R` or `die@R`): what rank R does at its first
    /// reduction instead of taking part.
    fault: Option<Fault>,
    calls: std::sync::atomic::AtomicU64,
    /// The receive buffer of float reductions, kept between calls.
    scratch: std::sync::Mutex<Vec<f32>>,
    // last: finalizes MPI when dropped
    _universe: Universe,
}

// SAFETY: MPI is initialized with `Threading::Funneled`, and a run calls the group only from
// the thread that created it (the training loop's thread, which is also thread 0 of the
// JIT's steps); the handles are plain integers or pointers MPI owns.
unsafe impl Send for MpiGroup {}
unsafe impl Sync for MpiGroup {}

const TAG: i32 = 0x5141;

/// A fault a test makes one rank play.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Stop answering (a hung process, a lost network).
    Stall,
    /// End abruptly (a crash, an out-of-memory kill).
    Die,
}

/// Messages up to this many elements are reduced by recursive doubling, longer ones by a ring.
pub const SMALL: usize = 4096;

impl MpiGroup {
    /// Initializes MPI; `timeout` bounds how long a reduction waits for a peer.
    pub fn init(timeout: Duration) -> Result<MpiGroup> {
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::Usage("MPI was initialized already in this process".into()))?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let local = world.split_shared(rank as i32).size() as usize;
        let fault = std::env::var("QATC_MPI_FAULT").ok().and_then(|s| {
            let (what, at) = s.split_once('@')?;
            (at.parse::<usize>().ok()? == rank).then_some(())?;
            match what {
                "stall" => Some(Fault::Stall),
                "die" => Some(Fault::Die),
                _ => None,
            }
        });
        Ok(MpiGroup {
            size: world.size() as usize,
            world,
            rank,
            local,
            timeout,
            fault,
            calls: std::sync::atomic::AtomicU64::new(0),
            scratch: std::sync::Mutex::new(Vec::new()),
            _universe: universe,
        })
    }

    /// How many ranks run on this machine.
    pub fn local_size(&self) -> usize {
        self.local
    }

    /// Ends every rank of the job with exit code `code` (after an error on this one).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Sends `send` to rank `to` while receiving `recv` from rank `from` (either may be
    /// absent), within the deadline; on timeout prints which peer is silent and aborts the
    /// job.
    fn exchange<T: Equivalence>(
        &self,
        to: Option<usize>,
        send: &[T],
        from: Option<usize>,
        recv: &mut [T],
        call: u64,
    ) {
        let deadline = Instant::now() + self.timeout;
        mpi::request::scope(|scope| {
            let mut s = to.map(|to| {
                self.world
                    .process_at_rank(to as i32)
                    .immediate_send_with_tag(scope, send, TAG)
            });
            let mut r = from.map(|from| {
                self.world
                    .process_at_rank(from as i32)
                    .immediate_receive_into_with_tag(scope, recv, TAG)
            });
            let mut spins = 0u32;
            loop {
                if let Some(q) = s.take() {
                    s = q.test().err();
                }
                if let Some(q) = r.take() {
                    r = q.test().err();
                }
                if s.is_none() && r.is_none() {
                    return;
                }
                if Instant::now() > deadline {
                    // pending requests cannot be dropped: the job ends here
                    let silent = if r.is_some() { from } else { to };
                    self.timed_out(silent.unwrap_or(self.rank), call);
                }
                spins += 1;
                if spins > 1000 {
                    std::thread::yield_now();
                }
            }
        })
    }

    fn timed_out(&self, silent: usize, call: u64) -> ! {
        let e = Error::Distributed {
            rank: self.rank,
            msg: format!(
                "no answer from rank {silent} within {:.0} s in reduction #{call}: rank {silent} \
                 has died or hangs. Stopping every rank (raise --mpi-timeout if steps are \
                 legitimately that slow)",
                self.timeout.as_secs_f64()
            ),
        };
        eprintln!("error: {e}");
        self.abort(75)
    }

    /// All-reduce of `data` with `op` (the lower rank's operand first), then `finish` on the
    /// reduced values: recursive doubling up to [`SMALL`] elements, a ring above.
    fn reduce<T: Equivalence + Copy + Default>(
        &self,
        data: &mut [T],
        buf: &mut Vec<T>,
        op: impl Fn(T, T) -> T,
        finish: impl Fn(T) -> T,
    ) {
        let call = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        match self.fault {
            Some(Fault::Stall) => {
                eprintln!("rank {}: QATC_MPI_FAULT: not answering", self.rank);
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Some(Fault::Die) => {
                eprintln!("rank {}: QATC_MPI_FAULT: dying", self.rank);
                std::process::abort();
            }
            None => {}
        }
        // the scratch buffer is kept between calls: allocating (and faulting in) a large one
        // per call cost more than the exchange itself
        if buf.len() < data.len() {
            buf.resize(data.len(), T::default());
        }
        if self.size == 1 {
            data.iter_mut().for_each(|v| *v = finish(*v));
        } else if data.len() <= SMALL {
            self.doubling(data, &mut buf[..data.len()], op, finish, call);
        } else {
            self.ring(data, buf, op, finish, call);
        }
    }

    /// Recursive doubling: the ranks past the largest power of two `p <= n` first hand their
    /// values to rank `r - p`; the first `p` ranks combine with partner `r ^ 2^k` for each
    /// `k` (both sides putting the lower rank's operand first, so both get the same bits);
    /// the result goes back to the ranks past `p`.
    fn doubling<T: Equivalence + Copy + Default>(
        &self,
        data: &mut [T],
        buf: &mut [T],
        op: impl Fn(T, T) -> T,
        finish: impl Fn(T) -> T,
        call: u64,
    ) {
        let (n, r) = (self.size, self.rank);
        let p = 1usize << (usize::BITS - 1 - n.leading_zeros());
        if r >= p {
            self.exchange(Some(r - p), data, None, &mut [], call);
            self.exchange(None, &[], Some(r - p), data, call);
            return;
        }
        if r + p < n {
            self.exchange(None, &[], Some(r + p), buf, call);
            for (x, &y) in data.iter_mut().zip(buf.iter()) {
                *x = op(*x, y);
            }
        }
        let mut mask = 1;
        while mask < p {
            let partner = r ^ mask;
            self.exchange(Some(partner), data, Some(partner), buf, call);
            for (x, &y) in data.iter_mut().zip(buf.iter()) {
                *x = if r < partner { op(*x, y) } else { op(y, *x) };
            }
            mask <<= 1;
        }
        for x in data.iter_mut() {
            *x = finish(*x);
        }
        if r + p < n {
            self.exchange(Some(r + p), data, None, &mut [], call);
        }
    }

    /// Ring all-reduce: a reduce-scatter (chunk `c` summed in ring order starting after its
    /// owner) then an all-gather of the reduced chunks.
    fn ring<T: Equivalence + Copy + Default>(
        &self,
        data: &mut [T],
        buf: &mut [T],
        op: impl Fn(T, T) -> T,
        finish: impl Fn(T) -> T,
        call: u64,
    ) {
        let n = self.size;
        let (left, right) = (Some((self.rank + n - 1) % n), Some((self.rank + 1) % n));
        let len = data.len();
        let bounds = |c: usize| (c * len / n, (c + 1) * len / n);
        let r = self.rank;
        // after n-1 steps this rank holds chunk (r+1) % n reduced
        for s in 0..n - 1 {
            let (a, b) = bounds((r + n - s) % n);
            let (c, d) = bounds((r + 2 * n - s - 1) % n);
            self.exchange(right, &data[a..b], left, &mut buf[..d - c], call);
            for (x, &y) in data[c..d].iter_mut().zip(&buf[..d - c]) {
                *x = op(y, *x);
            }
        }
        let (a, b) = bounds((r + 1) % n);
        for x in &mut data[a..b] {
            *x = finish(*x);
        }
        // all-gather: pass the reduced chunks around the ring
        for s in 0..n - 1 {
            let (a, b) = bounds((r + 1 + n - s) % n);
            let (c, d) = bounds((r + n - s) % n);
            self.exchange(right, &data[a..b], left, &mut buf[..d - c], call);
            data[c..d].copy_from_slice(&buf[..d - c]);
        }
    }
}

impl Group for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce(&self, data: &mut [f32], reduce: Reduce) -> Result<()> {
        let n = self.size as f32;
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let buf = &mut *guard;
        match reduce {
            Reduce::Mean => self.reduce(data, buf, |a, b| a + b, |v| v / n),
            Reduce::Min => self.reduce(data, buf, f32::min, |v| v),
            Reduce::Max => self.reduce(data, buf, f32::max, |v| v),
            Reduce::Range => {
                drop(guard);
                return super::range_by_max(data, |d| self.all_reduce(d, Reduce::Max));
            }
        }
        Ok(())
    }
    fn sum_counts(&self, data: &mut [u64]) -> Result<()> {
        self.reduce(data, &mut Vec::new(), |a, b| a + b, |v| v);
        Ok(())
    }
}
