//! `qatc bench`: QAT training throughput of the JIT (samples/s in steady state after a
//! warm-up) and the compile time of each train step.
//!
//! Each line gives the achieved GFLOP/s of the step's arithmetic (GEMMs and convolution
//! kernels, [`crate::jit::CompileStats::flops`]) at the median step time, and the process'
//! peak resident memory so far (`getrusage`: compilation, the arena, the state and the
//! feeds; run one model per process to compare it with another tool's).
//!
//! Without arguments it measures the three reference configurations compared against TFMOT
//! (`../shared/bench/tfmot_reference.py throughput`): `mnist_cnn` at batch 32 and 256 and
//! `mbv2_tiny` at batch 64, each quantized with the `default_8bit` pipeline and trained with
//! Adam (Keras' `"adam"`, as the reference does). Inputs are synthetic (uniform images,
//! random labels): throughput does not depend on the values.

use crate::error::{Error, Result};
use crate::exec::{Executor, Feed};
use crate::ir::op::{GradOp, TrainOp};
use crate::ir::{DType, Graph, Op, ParamStore};
use crate::jit::{compile, JitOptions, Winograd};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::Instant;

/// `qatc bench --winograd`: the lowering of stride-1 3×3 convolutions.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradArg {
    /// im2col and GEMMs, like every other convolution.
    Off,
    /// Winograd F(2×2, 3×3).
    F2,
    /// Winograd F(4×4, 3×3).
    F4,
}

impl WinogradArg {
    fn variant(self) -> Option<Winograd> {
        match self {
            WinogradArg::Off => None,
            WinogradArg::F2 => Some(Winograd::F2),
            WinogradArg::F4 => Some(Winograd::F4),
        }
    }
    fn name(self) -> &'static str {
        match self {
            WinogradArg::Off => "off",
            WinogradArg::F2 => "F(2x2,3x3)",
            WinogradArg::F4 => "F(4x4,3x3)",
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    qatc bench                                  # mnist_cnn @32, @256, mbv2_tiny @64 (QAT)\n  \
    qatc bench --model mbv2_tiny --batch 64 --profile\n  \
    qatc bench --model mnist_cnn --float --threads 1\n  \
    qatc bench --model resnet8 --batch 64 --input-shape 28,28,1\n  \
    qatc bench --graph step.qir --steps 200       # any train-step graph")]
pub struct BenchArgs {
    /// A reference model (mnist_cnn, mbv2_tiny, resnet8, ds_cnn, mobilenet_v1_025,
    /// mobilenet_v2_035); default: the three standard configurations.
    #[arg(long, conflicts_with = "graph")]
    pub model: Option<String>,
    /// `H,W,C`: build the reference model for this input shape (its own by default).
    #[arg(long, requires = "model")]
    pub input_shape: Option<String>,
    /// Build the reference model for this many classes (its own by default).
    #[arg(long, requires = "model")]
    pub classes: Option<usize>,
    /// Batch size (default: 32 for mnist_cnn, 64 for mbv2_tiny).
    #[arg(long, conflicts_with = "graph")]
    pub batch: Option<usize>,
    /// Benchmark the float train step instead of the QAT one.
    #[arg(long, conflicts_with = "graph")]
    pub float: bool,
    /// A train-step graph (`.qir`, params from the `.safetensors` beside it) to benchmark.
    #[arg(long, value_name = "FILE")]
    pub graph: Option<PathBuf>,
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Untimed steps first (caches, branch predictors, the OS's page faults).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Do not emit fused multiply-adds.
    #[arg(long)]
    pub no_fma: bool,
    /// Do not fuse loops (to measure what fusion buys).
    #[arg(long)]
    pub no_fuse: bool,
    /// How stride-1 3×3 convolutions are lowered: Winograd F(4×4, 3×3) or F(2×2, 3×3), or
    /// `off` for im2col GEMMs (to measure what each buys).
    #[arg(long, value_enum, default_value_t = WinogradArg::F4)]
    pub winograd: WinogradArg,
    /// Lower strided and small-channel convolutions as im2col GEMMs and `col2im` instead of
    /// the direct kernels (to measure what those buy).
    #[arg(long)]
    pub no_direct: bool,
    /// Time every instruction of the compiled step and print the most expensive ones.
    #[arg(long)]
    pub profile: bool,
    /// Instructions the profile lists.
    #[arg(long, default_value_t = 25, requires = "profile")]
    pub top: usize,
    /// Print the compiled program (one line per instruction).
    #[arg(long)]
    pub listing: bool,
    /// Under mpirun: measure the ranks' all-reduce instead (times per size, from 1 KiB to
    /// 16 MiB of floats, and the reference models' gradient sizes), the constants of the
    /// scaling model in the README.
    #[arg(long, conflicts_with_all = ["graph", "profile", "listing"])]
    pub allreduce: bool,
    /// Predict data-parallel scaling to 8, 32 and 128 ranks over 10, 25 and 100 Gbit/s
    /// networks: this machine's measured step time per rank (weak scaling, `--batch` samples
    /// per rank) plus the step's reductions costed as the MPI group runs them (README,
    /// "Data-parallel training").
    #[arg(long, conflicts_with_all = ["graph", "allreduce"])]
    pub scaling: bool,
    /// Under mpirun: how long a rank waits for a peer before stopping the job [default: 600].
    #[arg(long, value_name = "SECS")]
    pub mpi_timeout: Option<f64>,
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub name: String,
    pub batch: usize,
    /// JIT compilation of the train step (lowering, fusion, planning, Cranelift).
    pub compile_secs: f64,
    /// Mean wall time of a timed step.
    pub step_secs: f64,
    /// Median wall time of a timed step (robust to preemption on a shared machine).
    pub median_step_secs: f64,
    /// Throughput over all timed steps (from the mean).
    pub samples_per_sec: f64,
    /// Arithmetic of one step (GEMMs and convolution kernels, 2 per multiply-add).
    pub flops_per_step: usize,
    /// The process' peak resident set size after the timed steps, when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// The reductions over the ranks per step, the floats of each (data-parallel).
    pub reductions: Vec<usize>,
}

impl BenchResult {
    /// Achieved GFLOP/s at the median step time.
    pub fn gflops(&self) -> f64 {
        self.flops_per_step as f64 / self.median_step_secs.max(1e-12) * 1e-9
    }

    pub fn line(&self) -> String {
        let rss = match self.peak_rss_bytes {
            Some(b) => format!("{:.0} MiB", b as f64 / (1 << 20) as f64),
            None => "?".into(),
        };
        let comm = match self.reductions.len() {
            0 => String::new(),
            k => format!(
                "  {k} all-reduces of {} floats per step",
                self.reductions.iter().sum::<usize>()
            ),
        };
        format!(
            "{:<24} batch {:>4}  {:>8.0} samples/s  {:>8.3} ms/step (median {:.3})  {:>6.1} GFLOP/s  compile {:>6.1} ms  peak RSS {rss}{comm}",
            self.name,
            self.batch,
            self.samples_per_sec,
            self.step_secs * 1e3,
            self.median_step_secs * 1e3,
            self.gflops(),
            self.compile_secs * 1e3
        )
    }
}

/// The process' peak resident set size (`getrusage(RUSAGE_SELF)`), if the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage writes one plain-data struct that we own and zeroed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    // Linux reports kibibytes
    (ok && usage.ru_maxrss > 0).then(|| usage.ru_maxrss as u64 * 1024)
}

/// The configurations compared with TFMOT.
pub const STANDARD: &[(&str, usize)] = &[("mnist_cnn", 32), ("mnist_cnn", 256), ("mbv2_tiny", 64)];

/// The train step of a reference model: quantized with `default_8bit` (unless `float`),
/// differentiated by `autodiff::train_step` with Adam, with its initial state.
pub fn train_step_of(model: &str, batch: usize, float: bool) -> Result<(Graph, ParamStore)> {
    train_step_built(crate::models::by_name(model, 0)?, batch, float)
}

/// [`train_step_of`] for a model already built.
pub fn train_step_built(
    m: crate::ir::builder::Model,
    batch: usize,
    float: bool,
) -> Result<(Graph, ParamStore)> {
    train_step_sharded(m, batch, float, crate::autodiff::Shard::default())
}

/// [`train_step_built`] for one rank of a data-parallel run: the step of its `batch /
/// ranks` samples of every global batch of `batch`.
pub fn train_step_sharded(
    m: crate::ir::builder::Model,
    batch: usize,
    float: bool,
    shard: crate::autodiff::Shard,
) -> Result<(Graph, ParamStore)> {
    let mut params = m.params;
    let graph = if float {
        m.graph
    } else {
        crate::pass::run_pipeline(
            m.graph,
            &mut params,
            "default_8bit",
            &crate::pass::PipelineOptions::default(),
        )?
    };
    let spec = crate::autodiff::TrainSpec {
        shard,
        ..crate::autodiff::TrainSpec::new(batch / shard.ranks.max(1))
    };
    let step = crate::autodiff::train_step(&graph, &spec)?;
    let state = step.initial_state(&params)?;
    Ok((step.graph, state))
}

/// Synthetic but valid feeds for a train-step graph: images uniform in [0, 1), labels below
/// the loss's class count, `step` counting from 0, a constant `lr`.
struct Feeds {
    f32s: Vec<(String, Vec<f32>)>,
    i32s: Vec<(String, Vec<i32>)>,
}

impl Feeds {
    fn new(g: &Graph, seed: u64) -> Result<Feeds> {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let mut f32s = Vec::new();
        let mut i32s = Vec::new();
        for &i in g.inputs() {
            let n = g.node(i);
            match n.ty.dtype {
                DType::F32 => {
                    let data = match n.name.as_str() {
                        "step" => vec![0.0],
                        "lr" => vec![1e-3],
                        _ => (0..n.ty.numel())
                            .map(|_| r.random_range(0.0..1.0))
                            .collect(),
                    };
                    f32s.push((n.name.clone(), data));
                }
                DType::I32 => {
                    let classes = g
                        .users(i)
                        .iter()
                        .find(|(u, _)| {
                            matches!(
                                g.node(*u).op,
                                Op::Train(TrainOp::SoftmaxCrossEntropy)
                                    | Op::Grad(GradOp::SoftmaxCrossEntropyGrad)
                            )
                        })
                        .map(|(u, _)| g.node(g.operands(*u)[0]).ty.shape[1])
                        .unwrap_or(10) as i32;
                    let data = (0..n.ty.numel())
                        .map(|_| r.random_range(0..classes))
                        .collect();
                    i32s.push((n.name.clone(), data));
                }
                DType::I8 => {
                    return Err(Error::Usage(format!(
                    "input `{}` is i8; qatc bench feeds train-step graphs (f32 inputs, i32 labels)",
                    n.name
                )))
                }
            }
        }
        Ok(Feeds { f32s, i32s })
    }

    fn set_step(&mut self, step: usize) {
        if let Some((_, v)) = self.f32s.iter_mut().find(|(n, _)| n == "step") {
            v[0] = step as f32;
        }
    }

    fn feeds(&self) -> Vec<(&str, Feed<'_>)> {
        self.f32s
            .iter()
            .map(|(n, v)| (n.as_str(), Feed::F32(v)))
            .chain(self.i32s.iter().map(|(n, v)| (n.as_str(), Feed::I32(v))))
            .collect()
    }
}

/// How to measure.
#[derive(Clone, Copy, Debug)]
pub struct Measure {
    /// Untimed steps first.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Print the per-instruction profile (needs [`JitOptions::profile`]): this many
    /// instructions (0: the summary by kind only).
    pub print_profile: Option<usize>,
    /// Print the compiled program.
    pub print_listing: bool,
}

/// Prints a line; a closed pipe (`qatc bench | head`) ends the output quietly.
fn say(line: impl std::fmt::Display) {
    let _ = super::say(&format!("{line}\n"));
}

/// Compiles `graph` and measures it: `warmup` untimed steps, then `steps` timed ones.
pub fn measure(
    name: &str,
    graph: &Graph,
    params: &ParamStore,
    opts: &JitOptions,
    m: Measure,
) -> Result<BenchResult> {
    let Measure {
        warmup,
        steps,
        print_profile,
        print_listing,
    } = m;
    // samples per step over all ranks of a data-parallel run
    let batch = graph.batch().unwrap_or(1) * opts.group.size();
    let t0 = Instant::now();
    let mut exe = compile(graph, params, opts)?;
    let compile_secs = t0.elapsed().as_secs_f64();
    let root = opts.group.is_root();
    if print_listing && root {
        say(exe.listing());
        let st = exe.stats();
        say(format!(
            "{} instructions ({} loops, {} GEMMs, {} kernels), {} KiB code in {} functions, arena {:.1} MiB, state {:.1} MiB, updates {} in place / {} copied",
            st.instructions,
            st.loops,
            st.gemms,
            st.kernels,
            st.code_bytes / 1024,
            st.functions,
            st.arena_bytes as f64 / (1 << 20) as f64,
            st.state_bytes as f64 / (1 << 20) as f64,
            st.updates_in_place,
            st.updates_copied
        ));
    }
    let mut feeds = Feeds::new(graph, 1)?;
    for s in 0..warmup {
        feeds.set_step(s);
        exe.run(&feeds.feeds())?;
    }
    let steps = steps.max(1);
    let mut times = Vec::with_capacity(steps);
    let t = Instant::now();
    for s in 0..steps {
        let ts = Instant::now();
        feeds.set_step(warmup + s);
        exe.run(&feeds.feeds())?;
        times.push(ts.elapsed().as_secs_f64());
    }
    let secs = t.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let median_step_secs = times[times.len() / 2];
    if let (Some(top), Some(p), true) = (print_profile, exe.profile(), root) {
        print_profile_table(name, &p, top);
    }
    Ok(BenchResult {
        name: name.to_string(),
        batch,
        compile_secs,
        step_secs: secs / steps as f64,
        median_step_secs,
        samples_per_sec: (batch * steps) as f64 / secs,
        flops_per_step: exe.stats().flops * opts.group.size(),
        peak_rss_bytes: peak_rss_bytes(),
        reductions: exe.stats().reductions.clone(),
    })
}

/// The per-instruction profile: totals by kind, then the `top` most expensive instructions,
/// each with its achieved GFLOP/s where it does arithmetic (minimum times: robust to
/// preemption on a shared machine) and its mean time beside it (the gap shows where the
/// step loses time to waiting and noise).
fn print_profile_table(name: &str, p: &[crate::jit::InstProfile], top: usize) {
    let total: f64 = p.iter().map(|r| r.min_secs).sum();
    let mean: f64 = p.iter().map(|r| r.mean_secs).sum();
    let gflops = |flops: usize, secs: f64| {
        if flops > 0 && secs > 0.0 {
            format!("{:>6.1} GFLOP/s", flops as f64 / secs * 1e-9)
        } else {
            String::new()
        }
    };
    say(format!(
        "{name}: {:.3} ms per step (sum of per-instruction minima; mean {:.3} ms)",
        total * 1e3,
        mean * 1e3
    ));
    // by kind: time, count, arithmetic
    let mut kinds: Vec<(String, f64, usize, usize)> = Vec::new();
    for r in p {
        let kind = r.name.split(':').next().unwrap_or("").to_string();
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => {
                k.1 += r.min_secs;
                k.2 += 1;
                k.3 += r.flops;
            }
            None => kinds.push((kind, r.min_secs, 1, r.flops)),
        }
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (k, s, n, flops) in &kinds {
        say(format!(
            "  {:>8.1} us {:>5.1}%  {n:>3} x {k:<24} {}",
            s * 1e6,
            100.0 * s / total,
            gflops(*flops, *s)
        ));
    }
    let mut rows: Vec<(usize, &crate::jit::InstProfile)> = p.iter().enumerate().collect();
    rows.sort_by(|a, b| b.1.min_secs.total_cmp(&a.1.min_secs));
    for (i, r) in rows.iter().take(top) {
        say(format!(
            "  {i:4} {:>8.1} us {:>5.1}%  {:<15} (mean {:>8.1} us)  {}",
            r.min_secs * 1e6,
            100.0 * r.min_secs / total,
            gflops(r.flops, r.min_secs),
            r.mean_secs * 1e6,
            r.name
        ));
    }
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let launch = super::ranks::Launch::join(a.mpi_timeout.unwrap_or(600.0), a.threads)?;
    run_as(a, &launch.ranks).map_err(|e| launch.fail(e))
}

fn run_as(a: &BenchArgs, ranks: &crate::workflow::Ranks) -> Result<()> {
    let group = &ranks.group;
    let say = |line: String| {
        if group.is_root() {
            say(line)
        }
    };
    if a.allreduce {
        return allreduce(group, &say);
    }
    if a.steps == 0 {
        return Err(Error::Usage(
            "--steps must be at least 1 (a throughput needs timed steps)".into(),
        ));
    }
    let mut opts = JitOptions {
        group: group.clone(),
        ..JitOptions::default()
    };
    if let Some(t) = ranks.threads {
        opts.threads = t.max(1);
    }
    opts.fma &= !a.no_fma;
    opts.fuse = !a.no_fuse;
    opts.winograd = a.winograd.variant();
    opts.direct = !a.no_direct;
    opts.profile = a.profile;
    let m = Measure {
        warmup: a.warmup,
        steps: a.steps,
        print_profile: a.profile.then_some(a.top),
        print_listing: a.listing,
    };
    say(format!(
        "qatc bench: {}threads {}, fma {}, fusion {}, winograd {}, direct {}, {} warm-up + {} timed steps",
        if group.size() > 1 {
            format!("{} ranks x ", group.size())
        } else {
            String::new()
        },
        opts.threads,
        opts.fma,
        opts.fuse,
        a.winograd.name(),
        opts.direct,
        m.warmup,
        m.steps
    ));
    if let Some(path) = &a.graph {
        if group.size() > 1 {
            return Err(Error::Usage(
                "--graph benchmarks one process; give --model under mpirun".into(),
            ));
        }
        let (graph, params) = crate::ir::text::load_model(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| graph.name.clone());
        say(measure(&name, &graph, &params, &opts, m)?.line());
        return Ok(());
    }
    let configs: Vec<(String, usize)> = match &a.model {
        None => STANDARD
            .iter()
            .filter(|(_, b)| a.batch.is_none_or(|x| x == *b))
            .map(|(n, b)| (n.to_string(), *b))
            .collect(),
        Some(name) => {
            let batch = a.batch.unwrap_or(if name == "mbv2_tiny" { 64 } else { 32 });
            vec![(name.clone(), batch)]
        }
    };
    if configs.is_empty() {
        return Err(Error::Usage(
            "no standard configuration has that batch size; give --model too".into(),
        ));
    }
    let kind = if a.float { "float" } else { "QAT" };
    for (model, batch) in configs {
        let build = || {
            crate::workflow::Job {
                model: model.clone(),
                input_shape: a.input_shape.clone(),
                classes: a.classes,
                ..Default::default()
            }
            .load_model()
        };
        let shard = crate::autodiff::Shard {
            rank: group.rank(),
            ranks: group.size(),
        };
        group.shard(batch)?;
        let (graph, params) = train_step_sharded(build()?, batch, a.float, shard)?;
        let name = format!("{model} {kind}");
        let r = measure(&name, &graph, &params, &opts, m)?;
        say(r.line());
        if a.scaling {
            let reductions = reductions_per_rank(build()?, batch, a.float)?;
            for line in scaling_table(r.median_step_secs, batch, &reductions) {
                say(line);
            }
        }
    }
    Ok(())
}

/// The floats of each reduction of a rank's train step in a data-parallel run with `batch`
/// samples per rank (the same for any number of ranks above one).
fn reductions_per_rank(
    m: crate::ir::builder::Model,
    batch: usize,
    float: bool,
) -> Result<Vec<usize>> {
    let shard = crate::autodiff::Shard { rank: 0, ranks: 2 };
    let (graph, params) = train_step_sharded(m, 2 * batch, float, shard)?;
    // compiled only, never run: any group of two ranks gives the program its reductions
    let member = crate::dist::ThreadGroup::new(2).remove(0);
    let opts = JitOptions {
        threads: 1,
        group: crate::dist::GroupHandle::new(member),
        ..JitOptions::default()
    };
    Ok(compile(&graph, &params, &opts)?.stats().reductions.clone())
}

/// A network for the scaling model: link bandwidth and per-message latency.
struct Network {
    name: &'static str,
    bytes_per_sec: f64,
    latency_secs: f64,
}

/// The networks of the scaling table. Bandwidths are the links' nominal rates; latencies are
/// typical MPI small-message latencies (TCP over Ethernet, RDMA over InfiniBand), assumed,
/// not measured here.
const NETWORKS: &[Network] = &[
    Network {
        name: "10 Gbit/s Ethernet (TCP, 25 us)",
        bytes_per_sec: 1.25e9,
        latency_secs: 25e-6,
    },
    Network {
        name: "25 Gbit/s Ethernet (RoCE, 5 us)",
        bytes_per_sec: 3.125e9,
        latency_secs: 5e-6,
    },
    Network {
        name: "100 Gbit/s InfiniBand (2 us)",
        bytes_per_sec: 12.5e9,
        latency_secs: 2e-6,
    },
];

/// Time of one all-reduce of `floats` floats over `ranks` ranks as [`crate::dist`]'s MPI
/// group runs it: recursive doubling up to 4096 floats (`ceil(log2 N)` exchanges of the
/// whole message, plus two when `N` is not a power of two), a ring above (`2(N-1)` exchanges
/// of `1/N` of it).
pub fn allreduce_secs(floats: usize, ranks: usize, bytes_per_sec: f64, latency_secs: f64) -> f64 {
    if ranks <= 1 {
        return 0.0;
    }
    let bytes = 4.0 * floats as f64;
    let n = ranks as f64;
    if floats <= 4096 {
        let p2 = ranks.is_power_of_two();
        let steps = (usize::BITS - (ranks - 1).leading_zeros()) as f64 + if p2 { 0.0 } else { 2.0 };
        steps * (latency_secs + bytes / bytes_per_sec)
    } else {
        2.0 * (n - 1.0) * (latency_secs + bytes / n / bytes_per_sec)
    }
}

/// Predicted weak scaling: each rank runs `step_secs` of computation on its `batch` samples,
/// then waits for its reductions; efficiency `step / (step + reductions)`.
fn scaling_table(step_secs: f64, batch: usize, reductions: &[usize]) -> Vec<String> {
    let floats: usize = reductions.iter().sum();
    let mut out = vec![format!(
        "  scaling model: {:.3} ms compute per step of {batch} samples per rank, {} all-reduces \
         of {floats} floats per step",
        step_secs * 1e3,
        reductions.len()
    )];
    for net in NETWORKS {
        let mut line = format!("    {:<34}", net.name);
        for ranks in [8, 32, 128] {
            let comm: f64 = reductions
                .iter()
                .map(|&f| allreduce_secs(f, ranks, net.bytes_per_sec, net.latency_secs))
                .sum();
            let eff = step_secs / (step_secs + comm);
            let rate = (ranks * batch) as f64 / (step_secs + comm);
            line += &format!(
                "  N={ranks:<3} {:>5.1} ms comm {:>4.0}% eff {:>8.0} samples/s",
                comm * 1e3,
                eff * 100.0,
                rate
            );
        }
        out.push(line);
    }
    out
}

/// `qatc bench --allreduce`: the median time of the group's all-reduce (mean) of `n` floats,
/// for sizes from 256 floats to 4 Mi floats and for each reference model's gradient (its
/// trainable parameter count), with the algorithmic bandwidth `4n / t`.
fn allreduce(group: &crate::dist::GroupHandle, say: &dyn Fn(String)) -> Result<()> {
    let mut sizes: Vec<(String, usize)> = (0..=7)
        .map(|k| 256usize << (2 * k))
        .map(|n| (format!("{} floats", n), n))
        .collect();
    for name in crate::models::NAMES {
        let m = crate::models::by_name(name, 0)?;
        // what the optimizer updates (BatchNorm's moving statistics are not gradients)
        let n: usize = m
            .params
            .iter()
            .filter(|(name, _)| !name.contains("moving_"))
            .map(|(_, t)| t.numel())
            .sum();
        sizes.push((format!("{name} gradient"), n));
    }
    say(format!(
        "qatc bench --allreduce: {} ranks, all-reduce (mean; recursive doubling up to 4096 floats, ring above), median of 30 after 5 warm-up",
        group.size()
    ));
    let ranks = group.size() as f32;
    let fill = |i: usize| (i % 7) as f32 + group.rank() as f32;
    for (what, n) in sizes {
        let mut data: Vec<f32> = Vec::new();
        let mut times = Vec::new();
        for rep in 0..35 {
            data.clear();
            data.extend((0..n).map(fill));
            let t = Instant::now();
            group.all_reduce(&mut data, crate::dist::Reduce::Mean)?;
            if rep >= 5 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        // small integers sum exactly: every rank must hold exactly the mean
        let bad = data
            .iter()
            .enumerate()
            .position(|(i, &v)| v != (i % 7) as f32 + (ranks - 1.0) / 2.0);
        if let Some(i) = bad {
            return Err(crate::Error::Distributed {
                rank: group.rank(),
                msg: format!("all-reduce of {n} floats: element {i} is {}", data[i]),
            });
        }
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        say(format!(
            "{what:<36} {n:>9} floats {:>10.1} us {:>8.2} GB/s",
            t * 1e6,
            4.0 * n as f64 / t * 1e-9
        ));
    }
    Ok(())
}
