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
    /// The ranks `all_reduce` combines over, and the first error a reduction met.
    pub group: *const GroupCell,
}

pub const CTX_ARENA: i32 = 0;
pub const CTX_STATE: i32 = 8;
pub const CTX_INPUTS: i32 = 16;
pub const CTX_TID: i32 = 24;

/// The compiled step function.
pub type StepFn = unsafe extern "C" fn(*const Ctx);

/// A reusable barrier for the SPMD threads (generation counter). Waiters spin first (a
/// barrier between balanced ops on idle cores is a few microseconds), then sleep until the
/// last thread wakes them, so when the machine is busy and a peer has been preempted, the
/// waiters give their core back instead of burning it for a whole time slice.
pub struct Barrier {
    count: AtomicUsize,
    generation: AtomicUsize,
    n: usize,
    /// Per thread: parked waiting for the generation to move on.
    sleeping: Vec<AtomicBool>,
    threads: std::sync::RwLock<Vec<std::thread::Thread>>,
}

/// Spins of a waiter before it sleeps (tens of microseconds).
const SPINS_BEFORE_SLEEP: u32 = 1 << 15;

impl Barrier {
    pub fn new(n: usize) -> Barrier {
        Barrier {
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            n,
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            threads: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Registers the threads (index = tid) so the last arriver can wake sleepers.
    pub fn set_threads(&self, t: Vec<std::thread::Thread>) {
        *self.threads.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Makes the calling thread thread 0 (the executor may move between threads).
    pub fn set_thread0(&self) {
        let me = std::thread::current();
        let stale = {
            let t = self.threads.read().unwrap_or_else(|e| e.into_inner());
            t.first().map(|t| t.id()) != Some(me.id())
        };
        if stale {
            let mut t = self.threads.write().unwrap_or_else(|e| e.into_inner());
            if t.is_empty() {
                t.push(me);
            } else {
                t[0] = me;
            }
        }
    }

    pub fn wait(&self, tid: usize) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.wake_sleepers();
            return;
        }
        wait_until(
            || self.generation.load(Ordering::Acquire) != gen,
            &self.sleeping[tid],
        );
    }

    fn wake_sleepers(&self) {
        if self.sleeping.iter().any(|s| s.load(Ordering::SeqCst)) {
            let threads = self.threads.read().unwrap_or_else(|e| e.into_inner());
            for (t, s) in self.sleeping.iter().enumerate() {
                if s.load(Ordering::SeqCst) {
                    if let Some(th) = threads.get(t) {
                        th.unpark();
                    }
                }
            }
        }
    }
}

/// Spins until `done()`, then parks (with `sleeping` raised so a waker unparks us).
fn wait_until(done: impl Fn() -> bool, sleeping: &AtomicBool) {
    let mut spins = 0u32;
    while !done() {
        if spins < SPINS_BEFORE_SLEEP {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        sleeping.store(true, Ordering::SeqCst);
        // re-check after announcing: a waker that missed the flag has already made
        // `done()` true
        while !done() {
            std::thread::park_timeout(std::time::Duration::from_millis(1));
        }
        sleeping.store(false, Ordering::SeqCst);
    }
}

/// Called by compiled code between dependent ops.
///
/// # Safety
/// `ctx` must be a context the executor passed to the compiled step.
pub unsafe extern "C" fn qatc_barrier(ctx: *const Ctx) {
    (*(*ctx).barrier).wait((*ctx).tid as usize);
}

/// `dst[m,n] (+)= lhs[m,k] * rhs[k,n]` with arbitrary element strides (row stride `*_rs`,
/// column stride `*_cs`), single-threaded: the compiled code splits the work by thread.
/// Filter-gradient shapes go to the JIT's own `gemm_tn` kernel, the rest to the `gemm` crate.
///
/// # Safety
/// The three matrices must be valid for every element the strides reach.
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
    // filter gradients (aᵀ·b of two tall matrices into a small one) on AVX-512
    if let Some(cpu) =
        crate::cpu::Avx512::detect().filter(|_| super::gemm_tn::applies(m, n, k, lhs_rs, rhs_cs))
    {
        super::gemm_tn::gemm_tn(
            cpu,
            (m, n, k),
            (lhs, lhs_cs),
            (rhs, rhs_rs),
            (dst, dst_rs, dst_cs),
            accumulate != 0,
        );
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
/// ([`crate::ir::fake_quant::nudged_for`]) and writes `[nudged min | nudged max | scale |
/// 1/scale | quant_zero]`, `n` floats each, to `out` (`quant_zero = floor(-min/scale + 0.5)`,
/// [`crate::ir::fake_quant::fake_quant`]'s zero level). `flags`: bit 0 narrow, bit 1 symmetric.
///
/// # Safety
/// `min` and `max` must hold `n` floats and `out` `NUDGED * n`.
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
        let r = crate::ir::fake_quant::nudged_for(&q, *min.add(i), *max.add(i));
        for (k, v) in nudged_row(&r).into_iter().enumerate() {
            *out.add(k * n + i) = v;
        }
    }
}

/// Floats per channel of a nudged range: min, max, scale, 1/scale, quant_zero.
pub const NUDGED: usize = 5;

/// What the compiled fake-quant reads of one nudged range.
pub fn nudged_row(r: &crate::ir::fake_quant::Nudged) -> [f32; NUDGED] {
    // the reference's own expression for the zero level
    let quant_zero = (-r.min * r.inv_scale + 0.5).floor();
    [r.min, r.max, r.scale, r.inv_scale, quant_zero]
}

/// Wall time per LIR instruction, measured on thread 0 between instruction boundaries
/// (so an instruction's time includes waiting for the other threads at its barrier).
/// Both the total and the per-run minimum are kept: on a busy machine the minimum is the
/// robust estimate (preemptions only ever add time).
#[derive(Clone, Debug, Default)]
pub struct Profile {
    last: Option<std::time::Instant>,
    pub nanos: Vec<u64>,
    pub min_nanos: Vec<u64>,
    pub runs: u64,
}

impl Profile {
    pub fn new(instructions: usize) -> Profile {
        Profile {
            last: None,
            nanos: vec![0; instructions],
            min_nanos: vec![u64::MAX; instructions],
            runs: 0,
        }
    }
}

/// Marks the end of instruction `inst` (`u64::MAX`: the start of the step).
///
/// # Safety
/// `ctx` must be a context of a step compiled with profiling, `inst` one of its
/// instructions.
pub unsafe extern "C" fn qatc_prof(ctx: *const Ctx, inst: u64) {
    let p = &mut *(*ctx).profile;
    let now = std::time::Instant::now();
    if inst == u64::MAX {
        p.runs += 1;
    } else if let Some(last) = p.last {
        let ns = (now - last).as_nanos() as u64;
        p.nanos[inst as usize] += ns;
        let m = &mut p.min_nanos[inst as usize];
        *m = (*m).min(ns);
    }
    p.last = Some(now);
}

/// The group a step's `all_reduce` instructions combine over, and the first error one of
/// them met (compiled code cannot return errors: later reductions of the step are skipped
/// and [`crate::exec::Executor::run`] returns the error).
pub struct GroupCell {
    pub group: crate::dist::GroupHandle,
    pub error: std::sync::Mutex<Option<crate::error::Error>>,
}

/// `dst[..n] = all_reduce(src[..n])` over the step's group (`reduce`: 0 mean, 1 min, 2
/// max); `src` may equal `dst`. Runs on thread 0 alone.
///
/// # Safety
/// `ctx` must be a context of the running step, `src` and `dst` must hold `n` floats.
pub unsafe extern "C" fn qatc_all_reduce(
    ctx: *const Ctx,
    src: *const f32,
    dst: *mut f32,
    n: usize,
    reduce: u64,
) {
    use crate::dist::Reduce;
    let cell = &*(*ctx).group;
    if !std::ptr::eq(src, dst) {
        std::ptr::copy_nonoverlapping(src, dst, n);
    }
    let Ok(mut error) = cell.error.lock() else {
        return;
    };
    if error.is_some() {
        return;
    }
    let reduce = match reduce {
        0 => Reduce::Mean,
        1 => Reduce::Min,
        2 => Reduce::Max,
        _ => Reduce::Range,
    };
    if let Err(e) = cell
        .group
        .all_reduce(std::slice::from_raw_parts_mut(dst, n), reduce)
    {
        *error = Some(e);
    }
}

/// The code [`qatc_all_reduce`] takes for `reduce`.
pub fn reduce_code(reduce: crate::dist::Reduce) -> i64 {
    use crate::dist::Reduce;
    match reduce {
        Reduce::Mean => 0,
        Reduce::Min => 1,
        Reduce::Max => 2,
        Reduce::Range => 3,
    }
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
        ("qatc_all_reduce", qatc_all_reduce as *const u8),
        ("qatc_winograd", super::winograd::qatc_winograd as *const u8),
        ("qatc_direct", super::direct::qatc_direct as *const u8),
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

    /// The f32s at byte `offset`.
    pub fn f32s(&self, offset: usize, n: usize) -> &[f32] {
        assert!(offset.is_multiple_of(4) && offset + 4 * n <= self.len.max(Self::ALIGN));
        // SAFETY: in bounds and aligned (checked above); the memory is initialized.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset) as *const f32, n) }
    }

    pub fn f32s_mut(&mut self, offset: usize, n: usize) -> &mut [f32] {
        assert!(offset.is_multiple_of(4) && offset + 4 * n <= self.len.max(Self::ALIGN));
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
    /// The owner sleeps waiting for `pending` to reach zero.
    owner_sleeping: AtomicBool,
    owner: std::sync::Mutex<Option<std::thread::Thread>>,
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
            owner_sleeping: AtomicBool::new(false),
            owner: std::sync::Mutex::new(None),
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

    /// Thread handles indexed by tid (the caller's thread is 0).
    pub fn threads(&self) -> Vec<std::thread::Thread> {
        std::iter::once(std::thread::current())
            .chain(self.workers.iter().map(|w| w.thread().clone()))
            .collect()
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
        if n > 0 {
            let mut owner = s.owner.lock().unwrap_or_else(|e| e.into_inner());
            if owner.as_ref().map(|t| t.id()) != Some(std::thread::current().id()) {
                *owner = Some(std::thread::current());
            }
        }
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
        wait_until(|| s.pending.load(Ordering::Acquire) == 0, &s.owner_sleeping);
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
        if s.pending.fetch_sub(1, Ordering::SeqCst) == 1 && s.owner_sleeping.load(Ordering::SeqCst)
        {
            if let Some(t) = s.owner.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                t.unpark();
            }
        }
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
