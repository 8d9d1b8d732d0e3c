//! What compiled code runs on: the per-thread context it receives, the barrier between
//! dependent ops, the worker threads of the SPMD model, and the host helpers registered as
//! JIT symbols (GEMM, fake-quant range nudging, `ln`).
//!
//! Execution model: the compiled function `step(ctx)` is run by `threads` threads at once,
//! each with its own [`Ctx`] (only `tid` differs). Every op splits its outer loop by `tid`;
//! a [`Barrier`] separates ops that depend on each other. Thread 0 is the caller's thread;
//! the others are persistent workers that spin briefly between steps and then park.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The argument of the compiled function (one per thread). Field offsets are part of the
/// ABI between this file and `codegen`: see the `CTX_*` constants.
#[repr(C)]
pub struct Ctx {
    pub arena: *mut u8,
    pub state: *mut u8,
    pub inputs: *const *const u8,
    pub tid: u64,
    pub barrier: *const Barrier,
    /// Per-instruction timings (only read when compiled with profiling).
    pub profile: *mut Profile,
}

pub const CTX_ARENA: i32 = 0;
pub const CTX_STATE: i32 = 8;
pub const CTX_INPUTS: i32 = 16;
pub const CTX_TID: i32 = 24;

/// The compiled step function.
pub type StepFn = unsafe extern "C" fn(*const Ctx);

/// A reusable spinning barrier (sense by generation counter). Waiters spin, then yield, so
/// an oversubscribed machine degrades gracefully instead of burning the time slice.
#[repr(C)]
pub struct Barrier {
    count: AtomicUsize,
    generation: AtomicUsize,
    n: usize,
}

/// Spins before a waiter starts yielding its time slice.
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

impl Barrier {
    pub fn new(n: usize) -> Barrier {
        Barrier {
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            n,
        }
    }

    pub fn wait(&self) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == gen {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Called by compiled code between dependent ops.
pub unsafe extern "C" fn qatc_barrier(ctx: *const Ctx) {
    (*(*ctx).barrier).wait();
}

/// `dst[m,n] (+)= lhs[m,k] * rhs[k,n]` with arbitrary element strides (row stride `*_rs`,
/// column stride `*_cs`), single-threaded: the compiled code splits the work by thread.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qatc_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    accumulate: u64,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        accumulate != 0,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Nudges `n` raw ranges `[min[i], max[i]]` exactly as the reference does
/// ([`crate::quant::fake::nudged_for`]) and writes `[nudged min | nudged max | scale |
/// 1/scale]`, `n` floats each, to `out`. `flags`: bit 0 narrow, bit 1 symmetric.
pub unsafe extern "C" fn qatc_nudge(
    min: *const f32,
    max: *const f32,
    n: usize,
    bits: u64,
    flags: u64,
    out: *mut f32,
) {
    let q = crate::ir::op::FakeQuantAttrs {
        bits: bits as u8,
        narrow: flags & 1 != 0,
        symmetric: flags & 2 != 0,
        axis: None,
        range: crate::ir::op::RangeSource::Operands,
    };
    for i in 0..n {
        let r = crate::quant::fake::nudged_for(&q, *min.add(i), *max.add(i));
        *out.add(i) = r.min;
        *out.add(n + i) = r.max;
        *out.add(2 * n + i) = r.scale;
        *out.add(3 * n + i) = r.inv_scale;
    }
}

/// Wall time per LIR instruction, measured on thread 0 between instruction boundaries
/// (so an instruction's time includes waiting for the other threads at its barrier).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    last: Option<std::time::Instant>,
    pub nanos: Vec<u64>,
    pub runs: u64,
}

impl Profile {
    pub fn new(instructions: usize) -> Profile {
        Profile {
            last: None,
            nanos: vec![0; instructions],
            runs: 0,
        }
    }
}

/// Marks the end of instruction `inst` (`u64::MAX`: the start of the step).
pub unsafe extern "C" fn qatc_prof(ctx: *const Ctx, inst: u64) {
    let p = &mut *(*ctx).profile;
    let now = std::time::Instant::now();
    if inst == u64::MAX {
        p.runs += 1;
    } else if let Some(last) = p.last {
        p.nanos[inst as usize] += (now - last).as_nanos() as u64;
    }
    p.last = Some(now);
}

/// The natural logarithm (the loss's log-sum-exp; once per row).
pub extern "C" fn qatc_logf(x: f32) -> f32 {
    x.ln()
}

/// Host symbols the compiled code may call, by the name it imports them under.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("qatc_barrier", qatc_barrier as *const u8),
        ("qatc_gemm", qatc_gemm as *const u8),
        ("qatc_nudge", qatc_nudge as *const u8),
        ("qatc_logf", qatc_logf as *const u8),
        ("qatc_prof", qatc_prof as *const u8),
    ]
}

/// A zeroed, 64-byte aligned byte buffer (the arena and the state memory).
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub const ALIGN: usize = 64;

    pub fn zeroed(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(Self::ALIGN), Self::ALIGN)
            .expect("buffer size fits a layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The f32s at byte `offset`.
    pub fn f32s(&self, offset: usize, n: usize) -> &[f32] {
        assert!(offset % 4 == 0 && offset + 4 * n <= self.len.max(Self::ALIGN));
        // SAFETY: in bounds and aligned (checked above); the memory is initialized.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset) as *const f32, n) }
    }

    pub fn f32s_mut(&mut self, offset: usize, n: usize) -> &mut [f32] {
        assert!(offset % 4 == 0 && offset + 4 * n <= self.len.max(Self::ALIGN));
        // SAFETY: as above, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset) as *mut f32, n) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len.max(Self::ALIGN), Self::ALIGN).unwrap();
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr, layout) }
    }
}

/// One step to run: the function and the per-thread contexts.
#[derive(Clone, Copy)]
struct Job {
    func: Option<StepFn>,
    ctxs: *const Ctx,
}

struct Shared {
    job: UnsafeCell<Job>,
    epoch: AtomicUsize,
    pending: AtomicUsize,
    stop: AtomicBool,
}

// SAFETY: `job` is written by the owner only while no worker reads it (between the
// completion of one epoch and the publication of the next, ordered by `epoch`/`pending`).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// Spins of an idle worker before it parks (covers the host's work between two steps).
const IDLE_SPINS: u32 = 1 << 17;

/// The worker threads `1..threads` of the SPMD model.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(Job {
                func: None,
                ctxs: std::ptr::null(),
            }),
            epoch: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|tid| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("qatc-jit-{tid}"))
                    .spawn(move || worker(s, tid))
                    .expect("spawn a JIT worker thread")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Runs `func` on every thread with `ctxs[tid]` and returns when all are done.
    ///
    /// # Safety
    /// `ctxs` must hold one valid context per thread, and `func` must be a compiled step
    /// whose memory (arena, state, inputs) the contexts point to and outlives the call.
    pub unsafe fn run(&self, func: StepFn, ctxs: &[Ctx]) {
        let s = &*self.shared;
        let n = self.workers.len();
        debug_assert_eq!(ctxs.len(), n + 1);
        *s.job.get() = Job {
            func: Some(func),
            ctxs: ctxs.as_ptr(),
        };
        s.pending.store(n, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        func(&ctxs[0]);
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(s: Arc<Shared>, tid: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if spins < IDLE_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::park();
            }
        }
        // SAFETY: the owner published the job before bumping `epoch` (Release/Acquire) and
        // does not touch it until `pending` reaches zero.
        let job = unsafe { *s.job.get() };
        if let Some(f) = job.func {
            unsafe { f(job.ctxs.add(tid)) };
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
