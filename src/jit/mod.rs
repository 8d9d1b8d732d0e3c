//! The Cranelift JIT: compiles a graph (a train step, graph form 4, or an eval graph,
//! form 5, or any model graph whose fake-quant ranges are explicit) into **one native step**
//! with static shapes, and runs it as an [`Executor`].
//!
//! The way through:
//! 1. `plan::schedule` orders the ops (updates of a param after its last other reader);
//! 2. `lower/` turns each op into LIR (`lir.rs`): elementwise/reduction `lir::Loop`s,
//!    GEMMs for the host GEMM, and special kernels (im2col, depthwise, pools, softmax rows);
//! 3. `fuse.rs` merges consecutive loops over the same space (elementwise chains and the
//!    reductions that read them become single passes) and drops dead stores;
//! 4. `plan::plan` places params in the state memory (updates written in place where
//!    possible), temporaries in one arena by liveness, and decides threading;
//! 5. `codegen.rs`/`loops.rs` emit Cranelift code: `f32x4` loops with explicit FMA,
//!    one barrier between dependent ops; the GEMM and a few helpers are host symbols
//!    (`runtime.rs`);
//! 6. `link.rs` cuts the program into segments, one Cranelift function each, compiles them
//!    on every core at once and links them behind one step function.
//!
//! Threads: the function runs on `threads` threads at once (SPMD); each op splits its outer
//! loop by thread id, and GEMMs split their rows, columns or reduction.
//!
//! For people working on the JIT: `qatc bench --listing --profile` prints the compiled
//! program and a per-instruction profile, and `QATC_JIT_DUMP=<dir>` writes the CLIF (source
//! locations are LIR instruction numbers) and the machine code of every compiled graph.
//!
//! ```
//! use qatc::exec::{Executor, Feed};
//! use qatc::ir::builder::{Act, Layer, Sequential};
//! use qatc::jit::{compile, JitOptions};
//!
//! let model = Sequential::new("tiny", &[4, 4, 1], 0)
//!     .add(Layer::conv2d(2, 3).activation(Act::Relu))
//!     .add(Layer::flatten())
//!     .add(Layer::dense(3))
//!     .build()
//!     .unwrap();
//! let mut exe = compile(&model.graph, &model.params, &JitOptions::default()).unwrap();
//! let out = exe.run(&[("input", Feed::F32(&[0.5; 16]))]).unwrap();
//! assert_eq!(out[0].shape, vec![1, 3]);
//! ```

mod cg;
mod codegen;
mod direct;
mod fuse;
mod gemm_tn;
mod host;
mod isa;
mod link;
mod lir;
mod loops;
mod lower;
mod plan;
mod runtime;
mod winograd;

pub use isa::Features;
#[doc(hidden)]
pub use runtime::qatc_gemm;
pub use winograd::Variant as Winograd;

use crate::error::{Error, Result};
use crate::exec::{Executor, Feed};
use crate::ir::op::{GradOp, TrainOp};
use crate::ir::{DType, Graph, Op, ParamStore, Tensor};
use cg::Loc;
use cranelift_jit::JITModule;

use crate::dist::GroupHandle;
use runtime::{AlignedBuf, Barrier, Ctx, Pool, StepFn};
use std::time::{Duration, Instant};

/// How to compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitOptions {
    /// Threads the step runs on (1 = the caller's thread only).
    pub threads: usize,
    /// Emit fused multiply-adds (on by default when the CPU has FMA; ignored otherwise).
    pub fma: bool,
    /// Fuse consecutive loops (on by default; off only to measure what fusion buys).
    pub fuse: bool,
    /// Lower stride-1 3×3 convolutions with this Winograd algorithm (F(4×4, 3×3) by
    /// default; `None`: im2col GEMMs like every other convolution).
    pub winograd: Option<Winograd>,
    /// Compute the forward pass and input gradient of the other non-pointwise convolutions
    /// (strided, non-3×3) and all three directions of first layers directly, without patch
    /// matrices, where the CPU has AVX-512 (on by default; off, they are im2col GEMMs and
    /// `col2im`).
    pub direct: bool,
    /// Time every LIR instruction (see [`JitExecutor::profile`]); off by default.
    pub profile: bool,
    /// The ranks of a data-parallel step ([`crate::dist`]): its `all_reduce` nodes and its
    /// BatchNorm statistics combine over them. The group of one process by default.
    pub group: GroupHandle,
}

impl Default for JitOptions {
    fn default() -> Self {
        JitOptions {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fma: isa::Features::host().fma,
            fuse: true,
            winograd: Some(Winograd::F4),
            direct: true,
            profile: false,
            group: GroupHandle::solo(),
        }
    }
}

/// What compilation produced, for reports and benchmarks.
#[derive(Clone, Debug)]
pub struct CompileStats {
    /// Wall time of the whole compilation (lowering, planning, Cranelift).
    pub time: Duration,
    /// LIR instructions after fusion.
    pub instructions: usize,
    /// Of which loops, GEMMs and special kernels.
    pub loops: usize,
    /// GEMM instructions (dense layers, 1x1 and im2col convolutions, their gradients).
    pub gemms: usize,
    /// Special kernels that emit their own code (im2col, depthwise, pools, softmax rows, …).
    pub kernels: usize,
    /// Bytes of machine code.
    pub code_bytes: usize,
    /// Cranelift functions the program was cut into (compiled in parallel), besides the step
    /// function that calls them in order.
    pub functions: usize,
    /// Bytes of the temporaries' arena; temporaries whose lifetimes do not overlap share space.
    pub arena_bytes: usize,
    /// Bytes of the state memory: params, optimizer slots and observer ranges, kept between
    /// steps.
    pub state_bytes: usize,
    /// Params updated in place / copied back at the end of the step.
    pub updates_in_place: usize,
    /// Params whose new value is computed elsewhere and copied back at the end of the step.
    pub updates_copied: usize,
    /// Arithmetic of one run (GEMMs and convolution kernels, 2 per
    /// multiply-add), for GFLOP/s.
    pub flops: usize,
    /// The reductions over the ranks of a data-parallel step, in program order: the floats
    /// each combines (none in one process).
    pub reductions: Vec<usize>,
}

/// One instruction's share of a profiled run ([`JitExecutor::profile`]).
#[derive(Clone, Debug)]
pub struct InstProfile {
    /// `kind: name` (`gemm: conv2d_1/dW`, `depthwise: …`).
    pub name: String,
    /// Mean wall time per run.
    pub mean_secs: f64,
    /// Minimum wall time over runs (robust to preemption on a shared machine).
    pub min_secs: f64,
    /// Arithmetic per run (2 per multiply-add; 0 for data movement).
    pub flops: usize,
}

impl InstProfile {
    /// Achieved GFLOP/s at the minimum time, when the instruction does arithmetic.
    pub fn gflops(&self) -> Option<f64> {
        (self.flops > 0 && self.min_secs > 0.0).then(|| self.flops as f64 / self.min_secs * 1e-9)
    }
}

struct Input {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    numel: usize,
    /// Classes of a loss reading this input as labels (validated before each run).
    label_classes: Option<(usize, String)>,
}

struct Output {
    loc: Loc,
    shape: Vec<usize>,
}

/// The JIT as a training backend ([`crate::train::fit`] compiles every graph it runs).
#[derive(Clone, Debug, Default)]
pub struct Jit(pub JitOptions);

impl crate::train::Backend for Jit {
    fn executor(&self, graph: &Graph, state: ParamStore) -> Result<Box<dyn Executor>> {
        Ok(Box::new(compile(graph, &state, &self.0)?))
    }

    fn executor_in(
        &self,
        graph: &Graph,
        state: ParamStore,
        group: &GroupHandle,
    ) -> Result<Box<dyn Executor>> {
        let opts = JitOptions {
            group: group.clone(),
            ..self.0.clone()
        };
        Ok(Box::new(compile(graph, &state, &opts)?))
    }
}

/// A compiled graph with its parameter state.
pub struct JitExecutor {
    graph_name: String,
    func: StepFn,
    arena: AlignedBuf,
    state: AlignedBuf,
    state_layout: Vec<(String, usize, Vec<usize>)>,
    barrier: Box<Barrier>,
    group: Box<runtime::GroupCell>,
    pool: Pool,
    threads: usize,
    inputs: Vec<Input>,
    outputs: Vec<Output>,
    stats: CompileStats,
    listing: String,
    profile: Option<Box<runtime::Profile>>,
    inst_names: Vec<String>,
    inst_flops: Vec<usize>,
    // Keeps the code alive; last so it is dropped after the pool has stopped.
    _module: JITModule,
}

// SAFETY: the executor owns its memory and code; `run` takes `&mut self`.
unsafe impl Send for JitExecutor {}

/// Compiles `graph` with the parameter values in `params` (every param of the graph must be
/// there with its declared shape).
pub fn compile(graph: &Graph, params: &ParamStore, opts: &JitOptions) -> Result<JitExecutor> {
    let t0 = Instant::now();
    params.check_graph(graph)?;
    if graph.outputs().is_empty() {
        return Err(Error::Graph {
            graph: graph.name.clone(),
            msg: "the graph has no outputs to compile".into(),
        });
    }
    let threads = opts.threads.max(1);
    let features = isa::Features::host();
    let use_fma = opts.fma && features.fma;

    let order = plan::schedule(graph);
    let mut lower = lower::Lower::new(graph);
    lower.threads = threads;
    lower.ranks = opts.group.size();
    lower.winograd = opts.winograd;
    lower.direct = opts.direct;
    let mut prog = lower.run(&order)?;
    if opts.fuse {
        fuse::fuse(&mut prog);
    } else {
        fuse::eliminate_dead(&mut prog);
    }
    let plan = plan::plan(&mut prog, threads)?;
    let listing = describe(&prog, &plan);

    // ---- Cranelift ----------------------------------------------------------------------
    // QATC_JIT_DUMP=dir writes the CLIF and the machine code (for people working on the JIT)
    let dump = std::env::var_os("QATC_JIT_DUMP").map(std::path::PathBuf::from);
    let linked = link::link(&link::Target {
        prog: &prog,
        plan: &plan,
        graph_name: &graph.name,
        threads,
        use_fma,
        profile: opts.profile,
        dump: dump.as_deref().map(|d| (d, listing.as_str())),
    })?;
    let (module, func) = (linked.module, linked.step);

    // ---- memory -------------------------------------------------------------------------
    let mut state = AlignedBuf::zeroed(plan.state_bytes);
    for (name, off, shape) in &plan.state {
        let t = params.require(name)?;
        state
            .f32s_mut(*off, shape.iter().product())
            .copy_from_slice(&t.data);
    }
    let arena = AlignedBuf::zeroed(plan.arena_bytes);

    let mut inputs: Vec<Input> = prog
        .inputs
        .iter()
        .map(|(name, dtype, shape)| Input {
            name: name.clone(),
            dtype: *dtype,
            shape: shape.clone(),
            numel: shape.iter().product(),
            label_classes: None,
        })
        .collect();
    for id in graph.node_ids() {
        let n = graph.node(id);
        if matches!(
            n.op,
            Op::Train(TrainOp::SoftmaxCrossEntropy) | Op::Grad(GradOp::SoftmaxCrossEntropyGrad)
        ) {
            let ops = graph.operands(id);
            let classes = graph.node(ops[0]).ty.shape[1];
            if let Some(slot) = graph.inputs().iter().position(|&i| i == ops[1]) {
                inputs[slot].label_classes = Some((classes, n.name.clone()));
            }
        }
    }
    let outputs = prog
        .outputs
        .iter()
        .map(|(_, vt, shape)| Output {
            loc: plan.locs[*vt],
            shape: shape.clone(),
        })
        .collect();
    let count = |f: fn(&lir::Inst) -> bool| prog.insts.iter().filter(|i| f(i)).count();
    let stats = CompileStats {
        time: t0.elapsed(),
        instructions: prog.insts.len(),
        loops: count(|i| matches!(i, lir::Inst::Loop(_))),
        gemms: count(|i| matches!(i, lir::Inst::Gemm(_))),
        kernels: count(|i| matches!(i, lir::Inst::Kernel(_))),
        code_bytes: linked.code_bytes,
        functions: linked.segments,
        arena_bytes: plan.arena_bytes,
        state_bytes: plan.state_bytes,
        updates_in_place: plan.in_place.len(),
        updates_copied: plan.copied.len(),
        flops: prog.insts.iter().map(lir::Inst::flops).sum(),
        reductions: prog
            .insts
            .iter()
            .map(lir::Inst::communicates)
            .filter(|&n| n > 0)
            .collect(),
    };
    let pool = Pool::new(threads);
    let barrier = Box::new(Barrier::new(threads));
    barrier.set_threads(pool.threads());
    Ok(JitExecutor {
        graph_name: graph.name.clone(),
        func,
        arena,
        state,
        state_layout: plan.state,
        barrier,
        group: Box::new(runtime::GroupCell {
            group: opts.group.clone(),
            error: std::sync::Mutex::new(None),
        }),
        pool,
        threads,
        inputs,
        outputs,
        stats,
        listing,
        profile: opts
            .profile
            .then(|| Box::new(runtime::Profile::new(prog.insts.len()))),
        inst_names: prog
            .insts
            .iter()
            .map(|i| {
                let kind = match i {
                    lir::Inst::Loop(_) => "loop",
                    lir::Inst::Gemm(_) => "gemm",
                    lir::Inst::Kernel(k) => k.kind(),
                };
                format!("{kind}: {}", i.name())
            })
            .collect(),
        inst_flops: prog.insts.iter().map(lir::Inst::flops).collect(),
        _module: module,
    })
}

/// A readable listing of the planned program (one line per instruction).
fn describe(prog: &lir::Program, plan: &plan::Plan) -> String {
    let mut s = String::new();
    for (i, inst) in prog.insts.iter().enumerate() {
        let what = match inst {
            lir::Inst::Loop(l) => format!(
                "loop {:?} nodes={} stores={} reds={}",
                l.shape,
                l.nodes.len(),
                l.stores.len(),
                l.reds.len()
            ),
            lir::Inst::Gemm(g) => format!("gemm m={} n={} k={} {:?}", g.m, g.n, g.k, g.split),
            lir::Inst::Kernel(_) => "kernel".to_string(),
        };
        let par = if plan.parallel[i] { "par" } else { "t0 " };
        s.push_str(&format!("{i:4} {par} {:<48} {what}\n", inst.name()));
    }
    s
}

impl JitExecutor {
    /// What compiling this executor produced (time, instruction counts, memory).
    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// The compiled program, one LIR instruction per line (after fusion and planning).
    pub fn listing(&self) -> &str {
        &self.listing
    }

    /// The threads each step runs on ([`JitOptions::threads`], at least 1).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Wall time and arithmetic of every LIR instruction, in program order, when compiled
    /// with [`JitOptions::profile`].
    pub fn profile(&self) -> Option<Vec<InstProfile>> {
        let p = self.profile.as_ref()?;
        let runs = p.runs.max(1) as f64;
        Some(
            self.inst_names
                .iter()
                .zip(&self.inst_flops)
                .zip(p.nanos.iter().zip(&p.min_nanos))
                .map(|((name, &flops), (&ns, &min))| InstProfile {
                    name: name.clone(),
                    mean_secs: ns as f64 * 1e-9 / runs,
                    min_secs: min as f64 * 1e-9,
                    flops,
                })
                .collect(),
        )
    }

    fn read_loc(&self, loc: Loc, numel: usize, feeds: &[*const u8]) -> Vec<f32> {
        match loc {
            Loc::Arena(off) => self.arena.f32s(off, numel).to_vec(),
            Loc::State(off) => self.state.f32s(off, numel).to_vec(),
            Loc::Input(slot) => {
                // SAFETY: the feed slice outlives this call and holds `numel` f32s.
                unsafe { std::slice::from_raw_parts(feeds[slot] as *const f32, numel).to_vec() }
            }
            Loc::None => vec![0.0; numel],
        }
    }
}

impl Executor for JitExecutor {
    fn run(&mut self, feeds: &[(&str, Feed)]) -> Result<Vec<Tensor>> {
        for (name, _) in feeds {
            if !self.inputs.iter().any(|i| i.name == *name) {
                return Err(Error::Usage(format!(
                    "graph `{}` has no input named `{name}`",
                    self.graph_name
                )));
            }
        }
        let mut table: Vec<*const u8> = Vec::with_capacity(self.inputs.len());
        for inp in &self.inputs {
            let feed = feeds
                .iter()
                .find(|(n, _)| *n == inp.name)
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    Error::node(&inp.name, "input", "no value was fed for this input")
                })?;
            let (len, ptr, dtype) = match feed {
                Feed::F32(d) => (d.len(), d.as_ptr() as *const u8, DType::F32),
                Feed::I32(d) => (d.len(), d.as_ptr() as *const u8, DType::I32),
            };
            if dtype != inp.dtype {
                return Err(Error::node(
                    &inp.name,
                    "input",
                    format!(
                        "fed {} values but the graph expects {}",
                        dtype.name(),
                        inp.dtype.name()
                    ),
                ));
            }
            if len != inp.numel {
                return Err(Error::node(
                    &inp.name,
                    "input",
                    format!(
                        "fed {len} values but the compiled graph takes exactly {} (shape {:?}); \
                         the JIT compiles static shapes: rebatch the graph (Graph::rebatch) and \
                         compile again for another batch size",
                        inp.numel, inp.shape
                    ),
                ));
            }
            if let (Some((classes, node)), Feed::I32(labels)) = (&inp.label_classes, feed) {
                if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= *classes) {
                    return Err(Error::node(
                        node,
                        "softmax_cross_entropy",
                        format!("label {bad} is outside the {classes} classes"),
                    ));
                }
            }
            table.push(ptr);
        }
        let profile: *mut runtime::Profile = match &mut self.profile {
            Some(p) => &mut **p,
            None => std::ptr::null_mut(),
        };
        let ctxs: Vec<Ctx> = (0..self.threads)
            .map(|tid| Ctx {
                arena: self.arena.ptr(),
                state: self.state.ptr(),
                inputs: table.as_ptr(),
                tid: tid as u64,
                barrier: &*self.barrier,
                profile,
                group: &*self.group,
            })
            .collect();
        self.barrier.set_thread0();
        // SAFETY: every context points at memory owned by `self` (arena, state, barrier) or
        // borrowed for the duration of this call (the feeds); the planner sized the arena
        // and state for every access the code makes.
        unsafe { self.pool.run(self.func, &ctxs) };
        if let Some(e) = self.group.error.lock().ok().and_then(|mut e| e.take()) {
            return Err(e);
        }
        let outs = self
            .outputs
            .iter()
            .map(|o| {
                let n = o.shape.iter().product();
                Tensor::new(o.shape.clone(), self.read_loc(o.loc, n, &table))
            })
            .collect::<Vec<_>>();
        Ok(outs)
    }

    fn params(&self) -> ParamStore {
        let mut p = ParamStore::new();
        for (name, off, shape) in &self.state_layout {
            let n = shape.iter().product();
            p.insert(
                name.clone(),
                Tensor::new(shape.clone(), self.state.f32s(*off, n).to_vec()),
            );
        }
        p
    }

    fn set_params(&mut self, params: &ParamStore) -> Result<()> {
        for (name, t) in params.iter() {
            let Some((_, _, shape)) = self.state_layout.iter().find(|(n, _, _)| n == name) else {
                return Err(Error::param(name, "the graph has no such param"));
            };
            if *shape != t.shape {
                return Err(Error::param(
                    name,
                    format!("shape {:?} does not match the graph's {:?}", t.shape, shape),
                ));
            }
        }
        for (name, t) in params.iter() {
            let (_, off, _) = self
                .state_layout
                .iter()
                .find(|(n, _, _)| n == name)
                .unwrap();
            self.state
                .f32s_mut(*off, t.numel())
                .copy_from_slice(&t.data);
        }
        Ok(())
    }
}
