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

use super::{Pass, PassContext};
use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::interp::{eval, Value};
use crate::ir::op::{Op, OpKind, RangeSource};
use crate::ir::params::ParamStore;
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
            let Op::FakeQuant(q) = &g.node(k).op else {
                continue;
            };
            let exact = q.range == RangeSource::LastValue
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
                         qatc dump --allow-inexact-fold)"
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

/// Replaces every maximal param-only subexpression of foldable ops by a new param holding
/// its value (named after its root node). Returns the new params' names.
pub fn fold_constants(g: &mut Graph, params: &mut ParamStore) -> Result<Vec<String>> {
    let order = g.canonical_order();
    let mut constant: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let node = g.node(id);
        let operands = g.operands(id);
        let is_const = node.op == Op::Param
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
        .filter(|&id| constant.contains(&id) && g.node(id).op != Op::Param)
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
        let v = if node.op == Op::Param {
            Value::F32(params.require(&node.name)?.clone())
        } else {
            let args: Vec<&Value> = g.operands(id).iter().map(|o| &values[o]).collect();
            eval(&node.op, &args, params).map_err(|m| Error::node(&node.name, node.op.name(), m))?
        };
        values.insert(id, v);
    }
    let mut names = Vec::new();
    for root in roots {
        let name = g.node(root).name.clone();
        let ty = g.node(root).ty.clone();
        let tensor = values[&root].f32().cloned().expect("folded values are f32");
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
    g.dce();
    Ok(names)
}
