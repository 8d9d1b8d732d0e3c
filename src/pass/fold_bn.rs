//! `fold_bn` (rules: `passes/fold_bn.rules`): a conv2d / depthwise_conv2d / dense followed by
//! a BatchNorm becomes one op with a folded kernel and bias (eval and export mode only).
//!
//! With `s = gamma / sqrt(var + eps)` per output channel, `batch_norm(op(x, w, b)) =
//! op(x, w * s, (b - mean) * s + beta)`. A weight fake-quant moves onto the folded kernel;
//! this is exact for a narrow symmetric per-axis quantizer on the output-channel axis (the
//! scaling rescales each channel's range and grid, a negative `s` mirrors the symmetric
//! grid). A per-tensor weight quantizer does not commute with per-channel scaling, so the
//! pass refuses it unless `allow_inexact_bn_fold` is set (then it warns).
//!
//! After saturation the param-only subexpressions the rules built (`bn_scale`,
//! `scale_channels`, the bias expression) are constant-folded with the reference
//! interpreter into new params named after their root: `<op>.folded_kernel`,
//! `<op>.folded_bias`.

use super::context::{Pass, PassContext};
use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::interp::{eval, Value};
use crate::ir::op::{ModelOp, PassOp};
use crate::ir::op::{Op, OpKind, RangeSource};
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::verify::kernel_quant_axis;
use crate::rewrite::analysis::is_foldable;
use crate::rewrite::Mode;
use std::collections::{HashMap, HashSet};

pub struct FoldBn;

/// The kernel op a BatchNorm folds into: operand 0 when it is a conv2d / depthwise / dense.
fn fold_target(g: &Graph, bn: NodeId) -> Option<NodeId> {
    let p = g.operand(bn, 0)?;
    matches!(
        g.node(p).op.kind(),
        OpKind::Conv2d | OpKind::DepthwiseConv2d | OpKind::Dense
    )
    .then_some(p)
}

impl Pass for FoldBn {
    fn name(&self) -> &'static str {
        "fold_bn"
    }

    fn description(&self) -> &'static str {
        "fold BatchNorm into the conv2d/depthwise_conv2d/dense before it (eval mode)"
    }

    fn run(&self, g: Graph, cx: &mut PassContext<'_>) -> Result<Graph> {
        let bns: Vec<NodeId> = g
            .canonical_order()
            .into_iter()
            .filter(|&n| g.node(n).op.kind() == OpKind::BatchNorm)
            .collect();
        if cx.opts.mode == Mode::Train {
            if let Some(&bn) = bns.first() {
                return Err(Error::Unsupported {
                    node: g.node(bn).name.clone(),
                    op: "batch_norm".into(),
                    what: "fold_bn in train mode".into(),
                    hint: "a training graph's BatchNorm normalizes with batch statistics, which \
                           cannot be folded into weights; run fold_bn (the `export` pipeline) in \
                           eval mode (PipelineOptions::eval(), qatc dump --mode eval)"
                        .into(),
                });
            }
        }
        for &bn in &bns {
            let Some(op) = fold_target(&g, bn) else {
                continue;
            };
            let Some(k) = g.operand(op, 1) else { continue };
            let Op::Model(ModelOp::FakeQuant(q)) = &g.node(k).op else {
                continue;
            };
            let weight_range = matches!(
                q.range,
                RangeSource::LastValue | RangeSource::Learned { .. }
            );
            let exact = weight_range
                && q.symmetric
                && q.narrow
                && q.axis.is_some()
                && q.axis == kernel_quant_axis(&g.node(op).op);
            if exact {
                continue;
            }
            let (bn_name, op_name) = (&g.node(bn).name, &g.node(op).name);
            let why =
                format!(
                "the kernel of `{op_name}` is quantized by `{}` {}, which does not commute with \
                 the BatchNorm's per-output-channel scaling: the folded kernel's quantization \
                 would differ from the one trained (TFMOT #1131)",
                g.node(k).name,
                if q.axis.is_none() { "per tensor" } else { "on another axis" }
            );
            if cx.opts.allow_inexact_bn_fold {
                cx.warn(format!("folding `{bn_name}` inexactly: {why}"));
            } else {
                return Err(Error::Unsupported {
                    node: bn_name.clone(),
                    op: "batch_norm".into(),
                    what: "fold_bn".into(),
                    hint: format!(
                        "{why}. Quantize that layer per axis (override `{op_name}=per_axis`), or \
                         allow the inexact fold (PipelineOptions::allow_inexact_bn_fold, \
                         --allow-inexact-fold of qatc train and qatc dump)"
                    ),
                });
            }
        }
        let mut out = cx.saturate(&g, "fold_bn")?;
        fold_constants(&mut out, cx.params)?;
        for n in out.canonical_order() {
            if out.node(n).op.kind() == OpKind::BatchNorm {
                let input = out
                    .operand(n, 0)
                    .map(|p| out.node(p).name.clone())
                    .unwrap_or_default();
                cx.warn(format!(
                    "batch_norm `{}` is not folded: its input `{input}` is not a conv2d, \
                     depthwise_conv2d or dense used only by it; TFLite export needs it folded",
                    out.node(n).name
                ));
            }
        }
        Ok(out)
    }
}

/// A folded kernel `scale_channels(w, s)` that a weight quantizer `q` reads, with `q`
/// narrow, symmetric, last_value and per axis on the scaled axis, is computed as
/// `scale_channels(q(w), s)`. Both are equal after `q` in exact arithmetic (the rule
/// `fake_quant_through_scaling`), but `q(w) * s` lies on `q`'s grid for the scaled range, so
/// quantizing it again cannot meet a rounding tie that float error could tip: the exported
/// int8 weights are exactly the trained levels, and the folded graph computes what the
/// unfolded one did to float precision.
fn on_weight_grid(
    g: &Graph,
    root: NodeId,
    values: &HashMap<NodeId, Value>,
    params: &ParamStore,
) -> Result<Option<(Tensor, Option<LearnedScaling>)>> {
    let Op::Pass(PassOp::ScaleChannels { axis }) = g.node(root).op else {
        return Ok(None);
    };
    let users = g.users(root);
    let mut quantizers = users.iter().map(|(u, _)| &g.node(*u).op);
    let Some(Op::Model(ModelOp::FakeQuant(q))) = quantizers.next() else {
        return Ok(None);
    };
    let same = quantizers.all(|o| *o == Op::Model(ModelOp::FakeQuant(q.clone())));
    let weight_range = matches!(
        q.range,
        RangeSource::LastValue | RangeSource::Learned { .. }
    );
    let exact = weight_range && q.symmetric && q.narrow && q.axis == Some(axis);
    if !same || !exact {
        return Ok(None);
    }
    let operands = g.operands(root);
    let fq = Op::Model(ModelOp::FakeQuant(q.clone()));
    let node = g.node(root);
    let err = |e| Error::op(&node.name, node.op.name(), e);
    let quantized = eval(&fq, &[&values[&operands[0]]], params).map_err(err)?;
    let scale = &values[&operands[1]];
    let scaled = eval(&node.op, &[&quantized, scale], params).map_err(err)?;
    let Some(scaled) = scaled.into_f32() else {
        return Ok(None);
    };
    // a learned range is scaled with its channel (by |s|: the grid is symmetric)
    let learned = match &q.range {
        RangeSource::Learned { state, .. } => Some(LearnedScaling {
            state: state.clone(),
            by: scale
                .f32()
                .map(|t| t.data.iter().map(|v| v.abs()).collect())
                .unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(Some((scaled, learned)))
}

/// A learned weight range whose kernel a fold scaled per channel.
struct LearnedScaling {
    state: String,
    by: Vec<f32>,
}

/// Replaces every maximal param-only subexpression of foldable ops by a new param holding
/// its value (named after its root node). Returns the new params' names.
pub fn fold_constants(g: &mut Graph, params: &mut ParamStore) -> Result<Vec<String>> {
    let order = g.canonical_order();
    let mut constant: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let node = g.node(id);
        let operands = g.operands(id);
        let is_const = node.op == Op::Model(ModelOp::Param)
            || (is_foldable(node.op.kind())
                && !operands.is_empty()
                && operands.iter().all(|o| constant.contains(o)));
        if is_const {
            constant.insert(id);
        }
    }
    let roots: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| constant.contains(&id) && g.node(id).op != Op::Model(ModelOp::Param))
        .filter(|&id| {
            g.users(id).iter().any(|(u, _)| !constant.contains(u))
                || g.outputs().iter().any(|o| o.node == id)
                || g.updates().iter().any(|u| u.node == id)
        })
        .collect();
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let mut values: HashMap<NodeId, Value> = HashMap::new();
    for &id in &order {
        if !constant.contains(&id) {
            continue;
        }
        let node = g.node(id);
        let v = if node.op == Op::Model(ModelOp::Param) {
            Value::F32(params.require(&node.name)?.clone())
        } else {
            let args: Vec<&Value> = g.operands(id).iter().map(|o| &values[o]).collect();
            eval(&node.op, &args, params).map_err(|e| Error::op(&node.name, node.op.name(), e))?
        };
        values.insert(id, v);
    }
    let mut names = Vec::new();
    let mut scalings = Vec::new();
    for root in roots {
        let name = g.node(root).name.clone();
        let ty = g.node(root).ty.clone();
        let tensor = match on_weight_grid(g, root, &values, params)? {
            Some((t, learned)) => {
                scalings.extend(learned);
                t
            }
            None => values[&root].f32().cloned().expect("folded values are f32"),
        };
        if tensor.data.iter().any(|v| !v.is_finite()) {
            return Err(Error::node(
                &name,
                g.node(root).op.name(),
                "constant folding produced a non-finite value (a BatchNorm variance + epsilon <= 0?)",
            ));
        }
        let tmp = g.unique_name(&format!("{name}.unfolded"));
        g.rename(root, tmp)?;
        params.insert(name.clone(), tensor);
        let p = g.param(name.clone(), ty)?;
        g.replace_all_uses(root, p);
        names.push(name);
    }
    // after every fold read the learned ranges as trained
    let mut scaled_states = HashSet::new();
    for s in scalings {
        if !scaled_states.insert(s.state.clone()) {
            return Err(Error::param(
                format!("{}.max", s.state),
                "is the learned range of a kernel that two BatchNorms scale; give each layer \
                 its own kernel",
            ));
        }
        for end in ["min", "max"] {
            let pname = format!("{}.{end}", s.state);
            let t = params.get_mut(&pname).ok_or_else(|| {
                Error::param(
                    &pname,
                    "is missing: the learned weight range was not trained",
                )
            })?;
            if t.data.len() != s.by.len() {
                return Err(Error::param(
                    &pname,
                    format!(
                        "has {} channels but the BatchNorm scales {}",
                        t.data.len(),
                        s.by.len()
                    ),
                ));
            }
            t.data.iter_mut().zip(&s.by).for_each(|(v, k)| *v *= k);
        }
    }
    g.dce();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::interp::run;
    use crate::ir::params::Tensor;
    use crate::ir::text::parse;
    use crate::pass::{run_pipeline, PipelineOptions};
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(
            shape.to_vec(),
            (0..n).map(|_| rng.random_range(lo..hi)).collect(),
        )
    }

    /// `op` (+ optional weight fake-quant, optional bias) -> batch_norm -> relu, on random
    /// weights, inputs and BatchNorm statistics (gamma of both signs, positive variance).
    /// Returns the largest output difference between the graph and its folded form.
    fn fold_error(op: &str, bias: bool, weight_fq: bool, seed: u64) -> f32 {
        fold_error_with(op, bias, weight_fq.then_some(true), seed)
    }

    /// `per_axis`: `None` no weight quantizer, `Some(true)` per axis, `Some(false)` per tensor
    /// (folded inexactly).
    fn fold_error_with(op: &str, bias: bool, per_axis: Option<bool>, seed: u64) -> f32 {
        fold_error_ranged(op, bias, per_axis, false, seed)
    }

    /// `learned`: the weight quantizer's range is learned (LSQ), narrower than the weights
    /// (so they clip), instead of `last_value`.
    fn fold_error_ranged(
        op: &str,
        bias: bool,
        per_axis: Option<bool>,
        learned: bool,
        seed: u64,
    ) -> f32 {
        let weight_fq = per_axis.is_some();
        let (x_ty, k_shape, c, attrs, axis) = match op {
            "conv2d" => (
                "f32[2,5,5,3]",
                vec![4, 3, 3, 3],
                4,
                " {stride=[1,1], padding=same}",
                0,
            ),
            "depthwise_conv2d" => (
                "f32[2,5,5,3]",
                vec![1, 3, 3, 6],
                6,
                " {stride=[2,2], padding=same}",
                3,
            ),
            "dense" => ("f32[2,7]", vec![5, 7], 5, "", 0),
            _ => unreachable!(),
        };
        let kernel = if weight_fq {
            let axis = if per_axis == Some(true) {
                format!(", axis={axis}")
            } else {
                String::new()
            };
            let range = if learned {
                "bits=4, narrow=true, symmetric=true{axis}, range=learned, method=lsq, state=\"k/fq\""
            } else {
                "bits=8, narrow=true, symmetric=true{axis}, range=last_value"
            }
            .replace("{axis}", &axis);
            format!("%1 = fake_quant \"k/fq\" (@k) {{{range}}}\n")
        } else {
            String::new()
        };
        let k = if weight_fq { "%1" } else { "@k" };
        let b = if bias { ", @b" } else { "" };
        let src = format!(
            "model \"f\"\nparam @k : f32{k_shape:?}\nparam @b : f32[{c}]\nparam @g : f32[{c}]\nparam @be : f32[{c}]\nparam @m : f32[{c}]\nparam @v : f32[{c}]\n\
             %0 = input \"x\" : {x_ty}\n{kernel}%2 = {op} \"op\" (%0, {k}{b}){attrs}\n\
             %3 = batch_norm \"bn\" (%2, @g, @be, @m, @v)\n%4 = relu \"act\" (%3)\noutput \"y\" = %4\n"
        );
        let g = parse(&src, "fold.qir").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = ParamStore::new();
        p.insert("k", uniform(&mut rng, &k_shape, -1.0, 1.0));
        p.insert("b", uniform(&mut rng, &[c], -0.5, 0.5));
        let gamma: Vec<f32> = (0..c)
            .map(|i| {
                let mag = rng.random_range(0.5f32..1.5);
                if i % 2 == 0 {
                    mag
                } else {
                    -mag
                }
            })
            .collect();
        p.insert("g", Tensor::new(vec![c], gamma));
        p.insert("be", uniform(&mut rng, &[c], -1.0, 1.0));
        p.insert("m", uniform(&mut rng, &[c], -1.0, 1.0));
        p.insert("v", uniform(&mut rng, &[c], 0.1, 2.0));
        if learned {
            let lo: Vec<f32> = (0..c).map(|i| -0.4 - 0.05 * i as f32).collect();
            let hi: Vec<f32> = (0..c).map(|i| 0.5 + 0.03 * i as f32).collect();
            p.insert("k/fq.min", Tensor::new(vec![c], lo));
            p.insert("k/fq.max", Tensor::new(vec![c], hi));
        }
        let x_shape: Vec<usize> = g.node(g.inputs()[0]).ty.shape.clone();
        let x = uniform(&mut rng, &x_shape, -1.0, 1.0);
        let before = run(&g, &p, &[("x", x.clone().into())]).unwrap();
        let opts = PipelineOptions {
            allow_inexact_bn_fold: per_axis == Some(false),
            ..PipelineOptions::eval()
        };
        let folded = run_pipeline(g, &mut p, "fold_bn", &opts).unwrap();
        if weight_fq {
            // the weight fake-quant now quantizes the folded kernel
            let fq = folded.find("k/fq").expect("the weight quantizer stays");
            let k = folded.operand(fq, 0).unwrap();
            assert_eq!(folded.node(k).name, "op.folded_kernel");
        }
        assert!(
            !folded
                .node_ids()
                .any(|n| folded.node(n).op.kind() == OpKind::BatchNorm),
            "{}",
            crate::ir::text::print(&folded)
        );
        let after = run(&folded, &p, &[("x", x.into())]).unwrap();
        let (a, b) = (
            before.outputs[0].1.f32().unwrap(),
            after.outputs[0].1.f32().unwrap(),
        );
        a.max_abs_diff(b)
    }

    /// `FOLD_SEEDS=300 cargo test --lib folding_preserves` runs more seeds (all pass:
    /// max |diff| 4.8e-6).
    #[test]
    fn folding_preserves_the_function() {
        for op in ["conv2d", "depthwise_conv2d", "dense"] {
            for bias in [true, false] {
                for weight_fq in [false, true] {
                    for seed in 0..std::env::var("FOLD_SEEDS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(4)
                    {
                        let e = fold_error(op, bias, weight_fq, seed);
                        assert!(
                            e <= 1e-5,
                            "{op} bias={bias} weight_fq={weight_fq} seed={seed}: max |diff| {e}"
                        );
                    }
                }
            }
        }
    }

    /// A learned kernel range is scaled with its channel: the folded graph computes what the
    /// trained one did, although the learned ranges clip the weights (a `last_value` range
    /// of the folded kernel would not).
    #[test]
    fn folding_scales_a_learned_kernel_range_with_its_channel() {
        for op in ["conv2d", "depthwise_conv2d", "dense"] {
            for seed in 0..3 {
                let e = fold_error_ranged(op, true, Some(true), true, seed);
                assert!(e <= 1e-5, "{op} seed={seed}: max |diff| {e}");
            }
        }
    }

    #[test]
    fn folding_a_per_tensor_quantized_kernel_is_not_exact() {
        // why fold_bn refuses per-tensor weight quantizers by default: BN scales channels
        // differently, so the per-tensor grid of the folded kernel is not the trained one
        let worst = (0..4)
            .map(|seed| fold_error_with("conv2d", true, Some(false), seed))
            .fold(0.0f32, f32::max);
        assert!(worst > 1e-3, "{worst}");
    }
}
