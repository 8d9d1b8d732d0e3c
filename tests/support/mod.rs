//! Shared helpers of the TFLite tests: a stand-in for the passes branch's `default_8bit` +
//! `export` pipelines (fold BatchNorm, fuse ReLU/ReLU6, insert fake-quants calibrated on
//! data), random data, and the LiteRT runner.
#![allow(dead_code)]

pub mod float;

use qatc::int8::{npy, Array};
use qatc::ir::graph::{Graph, NodeId};
use qatc::ir::interp::{self, Value};
use qatc::ir::op::ModelOp;
use qatc::ir::op::{FakeQuantAttrs, Op, RangeSource, F32};
use qatc::ir::params::{ParamStore, Tensor};
use qatc::ir::types::TensorType;
use qatc::quant::scheme::{policy, Policy};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

// ---- data --------------------------------------------------------------------------------

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    let mut r = rng(seed);
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| r.random_range(lo..hi)).collect(),
    )
}

/// Random biases and BatchNorm statistics, so that folding and bias quantization matter.
pub fn randomize_params(params: &mut ParamStore, seed: u64) {
    let mut r = rng(seed);
    let names: Vec<String> = params.names().cloned().collect();
    for name in names {
        let t = params.get_mut(&name).unwrap();
        let (lo, hi) = if name.ends_with(".bias") || name.ends_with(".beta") {
            (-0.3, 0.3)
        } else if name.ends_with(".alpha") {
            // PReLU slopes, some negative (a sign the int8 kernel must keep)
            (-0.2, 0.6)
        } else if name.ends_with(".gamma") {
            (0.5, 1.5)
        } else if name.ends_with(".moving_mean") {
            (-0.2, 0.2)
        } else if name.ends_with(".moving_variance") {
            (0.5, 2.0)
        } else {
            continue;
        };
        for v in &mut t.data {
            *v = r.random_range(lo..hi);
        }
    }
}

// ---- a stand-in QAT + export pipeline ------------------------------------------------------

/// How to quantize: activation and weight bits, and whether activation quantizers get
/// `range=fixed` (else `range=ema` with state params).
#[derive(Clone, Copy, Debug)]
pub struct Qat {
    pub act_bits: u8,
    pub weight_bits: u8,
    pub fixed_ranges: bool,
}

impl Default for Qat {
    fn default() -> Self {
        Qat {
            act_bits: 8,
            weight_bits: 8,
            fixed_ranges: false,
        }
    }
}

/// The weight quantizer axis of a kernel op under `default_8bit`, if it has a kernel: the
/// scheme's policy says (per axis, or `Some(None)` for per tensor).
fn kernel_axis(op: &Op) -> Option<Option<usize>> {
    let m = op.as_model()?;
    match policy(m) {
        Policy::Kernel { per_axis } => Some(m.kernel_channel_axis().filter(|_| per_axis)),
        _ => None,
    }
}

/// Ops whose output gets an activation quantizer in an export-ready graph.
fn needs_quantizer(op: &Op) -> bool {
    op.as_model().is_some_and(|m| {
        matches!(
            policy(m),
            Policy::Kernel { .. } | Policy::Output | Policy::SharedScale
        )
    })
}

fn sole_user(g: &Graph, id: NodeId) -> Option<NodeId> {
    let users = g.users(id);
    let is_output = g.outputs().iter().any(|o| o.node == id);
    match users.as_slice() {
        [(u, 0)] if !is_output => Some(*u),
        _ => None,
    }
}

/// Folds BatchNorm into the preceding conv/dense and fuses a following ReLU/ReLU6 (what the
/// passes branch's `export` pipeline does), keeping the float semantics.
fn fold_and_fuse(src: &Graph, params: &ParamStore) -> (Graph, ParamStore) {
    let mut g = Graph::new(&src.name);
    let mut p = ParamStore::new();
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let mut consumed: HashSet<NodeId> = HashSet::new();
    for &i in src.inputs() {
        let n = src.node(i);
        map.insert(i, g.add_input(&n.name, n.ty.clone()).unwrap());
    }
    let param = |g: &mut Graph, p: &mut ParamStore, name: &str, t: Tensor| -> NodeId {
        let id = g.param(name, TensorType::f32(t.shape.clone())).unwrap();
        p.insert(name, t);
        id
    };
    for id in src.canonical_order() {
        if map.contains_key(&id) || consumed.contains(&id) {
            continue;
        }
        let node = src.node(id);
        let ops = src.operands(id);
        match &node.op {
            Op::Model(ModelOp::Param) | Op::Model(ModelOp::Input) => {}
            Op::Model(ModelOp::Conv2d(_))
            | Op::Model(ModelOp::DepthwiseConv2d(_))
            | Op::Model(ModelOp::Dense { .. })
            | Op::Model(ModelOp::Conv2dTranspose(_)) => {
                let mut op = node.op.clone();
                let kname = &src.node(ops[1]).name;
                let mut k = params.get(kname).unwrap().clone();
                let oc = *node.ty.shape.last().unwrap();
                let mut b = match ops.get(2) {
                    Some(&b) => params.get(&src.node(b).name).unwrap().clone(),
                    None => Tensor::zeros(vec![oc]),
                };
                let mut last = id;
                if let Some(bn) = sole_user(src, id)
                    .filter(|&u| matches!(src.node(u).op, Op::Model(ModelOp::BatchNorm { .. })))
                {
                    let Op::Model(ModelOp::BatchNorm { epsilon, .. }) = src.node(bn).op else {
                        unreachable!()
                    };
                    let bo = src.operands(bn);
                    let get = |i: usize| params.get(&src.node(bo[i]).name).unwrap().data.clone();
                    let (gamma, beta, mean, var) = (get(1), get(2), get(3), get(4));
                    let scale: Vec<f32> = (0..oc)
                        .map(|c| gamma[c] / (var[c] + epsilon.0).sqrt())
                        .collect();
                    let axis_last = matches!(op, Op::Model(ModelOp::DepthwiseConv2d(_)));
                    let inner: usize = k.shape[1..].iter().product();
                    for (i, w) in k.data.iter_mut().enumerate() {
                        let c = if axis_last { i % oc } else { i / inner };
                        *w *= scale[c];
                    }
                    for c in 0..oc {
                        b.data[c] = (b.data[c] - mean[c]) * scale[c] + beta[c];
                    }
                    consumed.insert(bn);
                    last = bn;
                }
                if let Some(act) = sole_user(src, last)
                    .and_then(|u| src.node(u).op.as_fusable_activation().map(|a| (u, a)))
                {
                    op.set_activation(act.1);
                    consumed.insert(act.0);
                    last = act.0;
                }
                let x = map[&ops[0]];
                let kid = param(&mut g, &mut p, kname, k);
                let bid = param(&mut g, &mut p, &format!("{}.bias", node.name), b);
                let y = g.add(op, &node.name, &[x, kid, bid]).unwrap();
                map.insert(id, y);
                map.insert(last, y);
            }
            Op::Model(ModelOp::Add { .. })
            | Op::Model(ModelOp::Sub { .. })
            | Op::Model(ModelOp::Mul { .. }) => {
                let mut op = node.op.clone();
                let mut last = id;
                if let Some((u, a)) = sole_user(src, id)
                    .and_then(|u| src.node(u).op.as_fusable_activation().map(|a| (u, a)))
                {
                    op.set_activation(a);
                    consumed.insert(u);
                    last = u;
                }
                let xs: Vec<NodeId> = ops
                    .iter()
                    .map(|o| match src.node(*o).op {
                        Op::Model(ModelOp::Param) => {
                            let n = &src.node(*o).name;
                            param(&mut g, &mut p, n, params.get(n).unwrap().clone())
                        }
                        _ => map[o],
                    })
                    .collect();
                let y = g.add(op, &node.name, &xs).unwrap();
                map.insert(id, y);
                map.insert(last, y);
            }
            Op::Model(ModelOp::Dropout { .. }) => {
                map.insert(id, map[&ops[0]]);
            }
            Op::Model(ModelOp::BatchNorm { .. }) => {
                panic!("BatchNorm `{}` does not follow a conv", node.name)
            }
            op => {
                let xs: Vec<NodeId> = ops
                    .iter()
                    .map(|o| match src.node(*o).op {
                        Op::Model(ModelOp::Param) => {
                            let n = &src.node(*o).name;
                            param(&mut g, &mut p, n, params.get(n).unwrap().clone())
                        }
                        _ => map[o],
                    })
                    .collect();
                let y = g.add(op.clone(), &node.name, &xs).unwrap();
                map.insert(id, y);
            }
        }
    }
    for o in src.outputs() {
        g.add_output(&o.name, map[&o.node]);
    }
    (g, p)
}

fn range_of(v: &Value) -> (f32, f32) {
    let t = v.f32().unwrap();
    let lo = t.data.iter().copied().fold(0.0f32, f32::min);
    let hi = t.data.iter().copied().fold(0.0f32, f32::max);
    (lo, hi)
}

/// The data fed to each input of `g`: input `k` gets `x · (k + 1)`, so that several inputs
/// get different ranges (and so different quantizations).
pub fn input_feeds(g: &Graph, x: &Tensor) -> Vec<(String, Tensor)> {
    g.inputs()
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let t = Tensor::new(
                x.shape.clone(),
                x.data.iter().map(|v| v * (k + 1) as f32).collect(),
            );
            (g.node(i).name.clone(), t)
        })
        .collect()
}

/// A model graph (form 1) to an export-ready graph (form 3) with quantizer ranges calibrated
/// on `calib` (input `k` is fed `calib · (k + 1)`): BatchNorm folded, ReLU/ReLU6 fused, weight
/// fake-quants (narrow, symmetric, per-axis as TFLite wants, last value), activation
/// fake-quants after every requantizing op, concat inputs tied to the concat's quantizer.
pub fn export_ready(
    model: &Graph,
    params: &ParamStore,
    calib: &Tensor,
    q: Qat,
) -> (Graph, ParamStore) {
    let (f, fp) = fold_and_fuse(model, params);
    let mut fc = f.clone();
    fc.rebatch(calib.shape[0]).unwrap();
    let feeds = input_feeds(&fc, calib);
    let refs: Vec<(&str, Value)> = feeds
        .iter()
        .map(|(n, t)| (n.as_str(), Value::F32(t.clone())))
        .collect();
    let values = interp::run_all(&fc, &fp, &refs).unwrap();

    let mut g = Graph::new(&f.name);
    let mut p = fp.clone();
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    let act = |state: &str, (lo, hi): (f32, f32), p: &mut ParamStore| -> FakeQuantAttrs {
        let mut a = FakeQuantAttrs::activation(state);
        a.bits = q.act_bits;
        if q.fixed_ranges {
            a.range = RangeSource::Fixed {
                min: F32(lo),
                max: F32(hi.max(lo + 1e-3)),
            };
        } else {
            p.insert(format!("{state}.min"), Tensor::scalar(lo));
            p.insert(format!("{state}.max"), Tensor::scalar(hi));
        }
        a
    };
    for &i in f.inputs() {
        let n = f.node(i);
        let x = g.add_input(&n.name, n.ty.clone()).unwrap();
        let a = act(&n.name, range_of(&values[&i]), &mut p);
        let fq = g
            .add(
                Op::Model(ModelOp::FakeQuant(a)),
                format!("{}/quant", n.name),
                &[x],
            )
            .unwrap();
        map.insert(i, fq);
    }
    for id in f.canonical_order() {
        if map.contains_key(&id) {
            continue;
        }
        let node = f.node(id);
        let ops = f.operands(id);
        if node.op == Op::Model(ModelOp::Param) {
            let pid = g.param(&node.name, node.ty.clone()).unwrap();
            map.insert(id, pid);
            continue;
        }
        let mut xs: Vec<NodeId> = ops.iter().map(|o| map[o]).collect();
        if matches!(
            node.op,
            Op::Model(ModelOp::Add { .. })
                | Op::Model(ModelOp::Sub { .. })
                | Op::Model(ModelOp::Mul { .. })
        ) {
            // a constant operand gets its own quantizer (8-bit, asymmetric, its own range)
            for (k, &o) in ops.iter().enumerate() {
                if f.node(o).op == Op::Model(ModelOp::Param) {
                    let q = FakeQuantAttrs {
                        range: RangeSource::LastValue,
                        ..FakeQuantAttrs::activation("unused")
                    };
                    let name = format!("{}/{}/quant", node.name, f.node(o).name);
                    xs[k] = g
                        .add(Op::Model(ModelOp::FakeQuant(q)), name, &[xs[k]])
                        .unwrap();
                }
            }
        }
        if let Some(axis) = kernel_axis(&node.op) {
            let mut w = FakeQuantAttrs::weight(axis);
            w.bits = q.weight_bits;
            let fq = g
                .add(
                    Op::Model(ModelOp::FakeQuant(w)),
                    format!("{}/quant", f.node(ops[1]).name),
                    &[xs[1]],
                )
                .unwrap();
            xs[1] = fq;
        }
        if let Op::Model(ModelOp::Concat { .. }) = node.op {
            for (k, x) in xs.iter_mut().enumerate() {
                let tied = FakeQuantAttrs {
                    range: RangeSource::Tied {
                        state: node.name.clone(),
                    },
                    ..FakeQuantAttrs::activation(&node.name)
                };
                let mut tied = tied;
                tied.bits = q.act_bits;
                if q.fixed_ranges {
                    // fixed ranges have no state to tie to: give every input the output's range
                    tied.range = RangeSource::Fixed {
                        min: F32(range_of(&values[&id]).0),
                        max: F32(range_of(&values[&id])
                            .1
                            .max(range_of(&values[&id]).0 + 1e-3)),
                    };
                }
                *x = g
                    .add(
                        Op::Model(ModelOp::FakeQuant(tied)),
                        format!("{}/in{k}/quant", node.name),
                        &[*x],
                    )
                    .unwrap();
            }
        }
        let y = g.add(node.op.clone(), &node.name, &xs).unwrap();
        let y = if needs_quantizer(&node.op) {
            let a = act(&node.name, range_of(&values[&id]), &mut p);
            g.add(
                Op::Model(ModelOp::FakeQuant(a)),
                format!("{}/quant", node.name),
                &[y],
            )
            .unwrap()
        } else {
            y
        };
        map.insert(id, y);
    }
    for o in f.outputs() {
        g.add_output(&o.name, map[&o.node]);
    }
    qatc::ir::verify::verify_with_params(&g, &p).unwrap();
    (g, p)
}

/// Whether a graph keeps the float semantics enough: max |a - b| of two runs.
pub fn run_float(g: &Graph, p: &ParamStore, x: &Tensor) -> Tensor {
    let mut g = g.clone();
    g.rebatch(x.shape[0]).unwrap();
    let feeds = input_feeds(&g, x);
    let refs: Vec<(&str, Value)> = feeds
        .iter()
        .map(|(n, t)| (n.as_str(), Value::F32(t.clone())))
        .collect();
    let r = interp::run(&g, p, &refs).unwrap();
    r.outputs[0].1.f32().unwrap().clone()
}

/// The interpreter inputs for `x` (see [`input_feeds`]).
pub fn input_arrays(g: &Graph, x: &Tensor) -> Vec<Array> {
    input_feeds(g, x).iter().map(|(_, t)| to_array(t)).collect()
}

pub fn to_array(t: &Tensor) -> Array {
    Array::f32(t.shape.clone(), t.data.clone()).unwrap()
}

// ---- LiteRT ------------------------------------------------------------------------------

/// The LiteRT runner: `QATC_LITERT_PYTHON` names a Python with `ai-edge-litert` (set up by
/// `scripts/test.sh`).
pub struct LiteRt {
    python: PathBuf,
    script: PathBuf,
}

/// The LiteRT runner, or `None` (after printing why) when it is not set up. With
/// `QATC_REQUIRE_LITERT=1` a missing runner fails the test instead.
pub fn litert() -> Option<LiteRt> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/litert_run.py");
    match std::env::var_os("QATC_LITERT_PYTHON") {
        Some(p) if Path::new(&p).exists() => Some(LiteRt {
            python: PathBuf::from(p),
            script,
        }),
        other => {
            let why = match other {
                Some(p) => format!(
                    "QATC_LITERT_PYTHON={} does not exist",
                    Path::new(&p).display()
                ),
                None => "QATC_LITERT_PYTHON is not set".to_string(),
            };
            if std::env::var("QATC_REQUIRE_LITERT").as_deref() == Ok("1") {
                panic!("LiteRT interop tests are required (QATC_REQUIRE_LITERT=1) but {why}; run scripts/test.sh");
            }
            eprintln!(
                "note: skipping the LiteRT interop check: {why} (scripts/test.sh sets it up)"
            );
            None
        }
    }
}

/// Which LiteRT op resolver a job uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// `BUILTIN_REF`: the reference kernels.
    Reference,
    /// The default: optimized kernels plus XNNPACK.
    Default,
}

pub struct Job<'a> {
    pub name: String,
    pub model: &'a [u8],
    pub inputs: Vec<Array>,
    pub resolver: Resolver,
    pub outputs: usize,
}

impl LiteRt {
    /// Runs all jobs in one Python process; per job, the outputs or LiteRT's error.
    pub fn run(&self, jobs: &[Job]) -> Vec<Result<Vec<Array>, String>> {
        let dir = std::env::temp_dir().join(format!(
            "qatc-litert-{}-{}",
            std::process::id(),
            jobs.first().map(|j| j.name.as_str()).unwrap_or("none")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut spec = Vec::new();
        for (k, job) in jobs.iter().enumerate() {
            let model = dir.join(format!("{k}.tflite"));
            std::fs::write(&model, job.model).unwrap();
            let inputs: Vec<String> = job
                .inputs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let p = dir.join(format!("{k}.in{i}.npy"));
                    npy::write(&p, a).unwrap();
                    p.display().to_string()
                })
                .collect();
            let outputs: Vec<String> = (0..job.outputs)
                .map(|i| dir.join(format!("{k}.out{i}.npy")).display().to_string())
                .collect();
            spec.push(serde_json::json!({
                "model": model.display().to_string(),
                "resolver": match job.resolver { Resolver::Reference => "ref", Resolver::Default => "default" },
                "inputs": inputs,
                "outputs": outputs,
            }));
        }
        let jobs_path = dir.join("jobs.json");
        let results_path = dir.join("results.json");
        std::fs::write(&jobs_path, serde_json::to_vec(&spec).unwrap()).unwrap();
        let out = std::process::Command::new(&self.python)
            .arg(&self.script)
            .arg(&jobs_path)
            .arg(&results_path)
            .output()
            .expect("run the LiteRT helper");
        assert!(
            out.status.success(),
            "the LiteRT helper failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&results_path).unwrap()).unwrap();
        let outcome = results
            .iter()
            .zip(jobs)
            .enumerate()
            .map(|(k, (r, job))| {
                if r["ok"].as_bool() == Some(true) {
                    Ok((0..job.outputs)
                        .map(|i| npy::read(dir.join(format!("{k}.out{i}.npy"))).unwrap())
                        .collect())
                } else {
                    Err(format!("{}: {}", job.name, r["error"]))
                }
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }
}

// ---- one-layer models: one per exported op kind ------------------------------------------

use qatc::ir::builder::{Act, Functional, Layer, Model, Sequential};

/// A named export case: a float model and how to quantize it.
pub struct Case {
    pub name: &'static str,
    pub model: Model,
    pub qat: Qat,
}

fn seq(name: &'static str, input: &[usize], layers: Vec<Layer>) -> Model {
    let mut s = Sequential::new(name, input, 7);
    for l in layers {
        s = s.add(l);
    }
    let mut m = s.build().unwrap();
    randomize_params(&mut m.params, 11);
    m
}

/// Two inputs joined by a binary op (so each operand has its own quantization).
fn two_inputs(name: &'static str, join: fn(&mut Functional, NodeId, NodeId) -> NodeId) -> Model {
    let mut f = Functional::new(name, 5);
    let a = f.input("a", &[6, 6, 4]).unwrap();
    let b = f.input("b", &[6, 6, 4]).unwrap();
    let y = join(&mut f, a, b);
    f.output("output", y);
    f.build().unwrap()
}

fn qir(text: &str) -> Model {
    let graph = qatc::ir::text::parse(text, "case.qir").unwrap();
    Model {
        graph,
        params: ParamStore::new(),
    }
}

/// One small model per op kind the exporter maps (and a few variants of each).
pub fn one_layer_cases() -> Vec<Case> {
    let c = |name, model| Case {
        name,
        model,
        qat: Qat::default(),
    };
    let img = [8, 8, 3];
    vec![
        c("conv2d_same_relu", seq("conv2d_same_relu", &img, vec![Layer::conv2d(4, 3).same().activation(Act::Relu)])),
        c("conv2d_valid_stride2", seq("conv2d_valid_stride2", &img, vec![Layer::conv2d(5, 3).stride(2)])),
        c("conv2d_dilated_relu6", seq("conv2d_dilated_relu6", &img, vec![Layer::conv2d(4, 3).dilation(2).same().activation(Act::Relu6)])),
        c("depthwise_conv2d", seq("depthwise_conv2d", &img, vec![Layer::depthwise_conv2d(3).same().activation(Act::Relu6)])),
        c("depthwise_conv2d_mult2_stride2", seq("depthwise_conv2d_mult2_stride2", &img, vec![Layer::depthwise_conv2d(3).depth_multiplier(2).stride(2)])),
        c("dense", seq("dense", &img, vec![Layer::flatten(), Layer::dense(10)])),
        c("dense_relu", seq("dense_relu", &[12], vec![Layer::dense(6).activation(Act::Relu)])),
        c("conv2d_transpose", seq("conv2d_transpose", &[5, 5, 3], vec![Layer::conv2d_transpose(4, 3).stride(2).same()])),
        c("conv2d_transpose_relu_valid", seq("conv2d_transpose_relu_valid", &[4, 4, 2], vec![Layer::conv2d_transpose(3, 2).stride(2).activation(Act::Relu)])),
        c("add_relu", two_inputs("add_relu", |f, a, b| {
            let y = f.add(a, b).unwrap();
            f.layer(y, Layer::relu()).unwrap()
        })),
        c("sub", two_inputs("sub", |f, a, b| f.sub(a, b).unwrap())),
        c("mul", two_inputs("mul", |f, a, b| f.mul(a, b).unwrap())),
        c("concat", two_inputs("concat", |f, a, b| f.concat(&[a, b], 3).unwrap())),
        c("max_pool2d", seq("max_pool2d", &img, vec![Layer::max_pool(2)])),
        // a same-scale op whose input has another user: its output is requantized into the
        // concat's shared scale (once refused by the QAT form check)
        c("max_pool2d_into_concat", {
            let mut m = qir("model \"max_pool2d_into_concat\"\nparam @k : f32[4,3,3,3]\n%0 = input \"input\" : f32[1,6,6,3]\n%1 = conv2d \"conv\" (%0, @k) {padding=same}\n%2 = max_pool2d \"pool\" (%1) {size=[3,3], stride=[1,1], padding=same}\n%3 = concat \"concat\" (%1, %2) {axis=3}\noutput \"output\" = %3\n");
            let k = (0..108).map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.06).collect();
            m.params.insert("k", Tensor::new(vec![4, 3, 3, 3], k));
            m
        }),
        c("avg_pool2d_same", seq("avg_pool2d_same", &[7, 7, 3], vec![Layer::avg_pool(3).stride(2).same()])),
        c("global_avg_pool", seq("global_avg_pool", &img, vec![Layer::GlobalAvgPool])),
        c("global_max_pool", seq("global_max_pool", &img, vec![Layer::GlobalMaxPool])),
        c("mul_add_constant", {
            let mut m = qir("model \"mul_add_constant\"\nparam @scale : f32[4]\n%0 = input \"input\" : f32[1,6,6,4]\n%1 = mul \"mul\" (%0, @scale)\n%2 = add \"add\" (%1, @scale)\noutput \"output\" = %2\n");
            m.params.insert("scale", Tensor::new(vec![4], vec![0.5, -1.5, 2.0, 0.25]));
            m
        }),
        c("mean_keepdims", qir("model \"mean_keepdims\"\n%0 = input \"input\" : f32[1,6,6,4]\n%1 = mean \"mean\" (%0) {axes=[1], keepdims=true}\noutput \"output\" = %1\n")),
        c("relu", seq("relu", &img, vec![Layer::Activation(Act::Relu)])),
        c("relu6", seq("relu6", &img, vec![Layer::Activation(Act::Relu6)])),
        c("leaky_relu", seq("leaky_relu", &img, vec![Layer::Activation(Act::LeakyRelu(0.2))])),
        c("hard_swish", seq("hard_swish", &img, vec![Layer::Activation(Act::HardSwish)])),
        c("prelu", seq("prelu", &img, vec![Layer::prelu_per_channel()])),
        c("thresholded_relu", {
            let mut m = qir("model \"thresholded_relu\"\nparam @k : f32[4,3,3,3]\n%0 = input \"input\" : f32[1,6,6,3]\n%1 = conv2d \"conv\" (%0, @k) {padding=same}\n%2 = thresholded_relu \"thresholded\" (%1) {theta=0.3}\noutput \"output\" = %2\n");
            let k = (0..108).map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.05).collect();
            m.params.insert("k", Tensor::new(vec![4, 3, 3, 3], k));
            m
        }),
        c("sigmoid", seq("sigmoid", &img, vec![Layer::Activation(Act::Sigmoid)])),
        c("tanh", seq("tanh", &img, vec![Layer::Activation(Act::Tanh)])),
        c("softmax", seq("softmax", &[16], vec![Layer::Activation(Act::Softmax)])),
        c("reshape", seq("reshape", &img, vec![Layer::Reshape(vec![16, -1])])),
        c("flatten", seq("flatten", &img, vec![Layer::flatten()])),
        c("transpose", seq("transpose", &[4, 6, 3], vec![Layer::Permute(vec![2, 1, 3])])),
        c("pad", seq("pad", &img, vec![Layer::ZeroPadding([[1, 2], [0, 1]])])),
        c("crop", seq("crop", &img, vec![Layer::Cropping([[1, 2], [2, 0]])])),
        c("upsample_nearest", seq("upsample_nearest", &[4, 5, 3], vec![Layer::UpSampling([2, 3])])),
        Case {
            name: "conv2d_4bit",
            model: seq("conv2d_4bit", &img, vec![Layer::conv2d(4, 3).same().activation(Act::Relu)]),
            qat: Qat { act_bits: 4, weight_bits: 4, fixed_ranges: false },
        },
        Case {
            name: "dense_2bit_act_fixed",
            model: seq("dense_2bit_act_fixed", &[12], vec![Layer::dense(6)]),
            qat: Qat { act_bits: 2, weight_bits: 3, fixed_ranges: true },
        },
        Case {
            name: "add_fixed_ranges",
            model: two_inputs("add_fixed_ranges", |f, a, b| f.add(a, b).unwrap()),
            qat: Qat { act_bits: 8, weight_bits: 8, fixed_ranges: true },
        },
    ]
}

/// The input shape (batch 1) of a case's model; every input has this shape.
pub fn input_shape(m: &Model) -> Vec<usize> {
    m.graph.node(m.graph.inputs()[0]).ty.shape.clone()
}

/// An export-ready version of a case, calibrated on uniform [-1, 1) data.
pub fn prepare(case: &Case, seed: u64) -> (Graph, ParamStore) {
    let mut shape = input_shape(&case.model);
    shape[0] = 8;
    let calib = uniform(&shape, -1.0, 1.0, seed);
    export_ready(&case.model.graph, &case.model.params, &calib, case.qat)
}

// ---- the real pipelines ----------------------------------------------------------------------

/// A model through the passes branch's pipelines — `default_8bit` (train mode), then
/// `export` (eval mode) — with its observer states calibrated on `calib`: two runs of the
/// f32 interpreter, each setting every observed state to the range its quantizer's input
/// takes (the first run quantizes with the initial ±6 states, the second with the
/// calibrated ones).
pub fn through_pipelines(model: &Model, calib: &Tensor) -> (Graph, ParamStore) {
    use qatc::pass::{run_pipeline, PipelineOptions};
    let mut p = model.params.clone();
    let qat = run_pipeline(
        model.graph.clone(),
        &mut p,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let g = run_pipeline(qat, &mut p, "export", &PipelineOptions::eval()).unwrap();
    for _ in 0..2 {
        let mut gc = g.clone();
        gc.rebatch(calib.shape[0]).unwrap();
        let feeds = input_feeds(&gc, calib);
        let refs: Vec<(&str, Value)> = feeds
            .iter()
            .map(|(n, t)| (n.as_str(), Value::F32(t.clone())))
            .collect();
        let values = interp::run_all(&gc, &p, &refs).unwrap();
        for id in gc.node_ids() {
            if let Op::Model(ModelOp::FakeQuant(q)) = &gc.node(id).op {
                if let RangeSource::Ema { state, .. } | RangeSource::AllValues { state } = &q.range
                {
                    let x = gc.operand(id, 0).unwrap();
                    let (lo, hi) = range_of(&values[&x]);
                    p.insert(format!("{state}.min"), Tensor::scalar(lo));
                    p.insert(format!("{state}.max"), Tensor::scalar(hi));
                }
            }
        }
    }
    (g, p)
}
