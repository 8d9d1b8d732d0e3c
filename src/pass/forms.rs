//! The graph forms (README, "Graph forms") a pass promises to leave, and their checks: form
//! 1 (model ops only), the annotated form between `annotate` and `quantize`, form 2 (the
//! QAT graph `default_8bit` makes) and form 3 (the export-ready graph `export` makes, what
//! [`crate::export`] takes). Each error names the node and what is wrong with it; the pass
//! manager checks the form every pipeline step declares.

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::{Activation, FakeQuantAttrs, ModelOp, Op, PassOp, RangeSource};
use crate::ir::params::ParamStore;
use crate::ir::verify::kernel_quant_axis;
use crate::quant::scheme::{policy, state_params, Policy};

/// A graph form a pipeline step must leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Form 1: model ops only (fake-quants included).
    Model,
    /// Model ops and `quant` markers (after `annotate`, before `quantize`).
    Annotated,
    /// Form 2: the QAT graph `default_8bit` makes.
    Qat,
    /// Form 3: the export-ready graph `export` makes.
    ExportReady,
}

impl Form {
    /// The form's name in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Form::Model => "form 1 (a model graph: model ops only)",
            Form::Annotated => "the annotated form (model ops and `quant` markers)",
            Form::Qat => "form 2 (a QAT graph)",
            Form::ExportReady => "form 3 (an export-ready graph)",
        }
    }

    /// Whether checking the form walks the graph's structure (users, neighbours,
    /// quantizer states) rather than looking at each node once.
    pub fn is_costly(self) -> bool {
        match self {
            Form::Model | Form::Annotated => false,
            Form::Qat | Form::ExportReady => true,
        }
    }

    /// Checks that `g` (with `params`) has this form.
    pub fn check(self, g: &Graph, params: &ParamStore) -> Result<()> {
        match self {
            Form::Model => check_families(g, false),
            Form::Annotated => check_families(g, true),
            Form::Qat => check_qat_graph(g, params),
            Form::ExportReady => check_export_ready(g),
        }
    }
}

/// Every node is a model op (or, with `markers`, a `quant` marker).
fn check_families(g: &Graph, markers: bool) -> Result<()> {
    for id in g.canonical_order() {
        let op = &g.node(id).op;
        let ok = match op {
            Op::Model(_) => true,
            Op::Pass(PassOp::Quant(_)) => markers,
            Op::Pass(PassOp::BnScale { .. } | PassOp::ScaleChannels { .. })
            | Op::Train(_)
            | Op::Grad(_)
            | Op::Update(_) => false,
        };
        if !ok {
            return Err(fail(
                g,
                id,
                format!("{} has no place here", op.family().describe()),
            ));
        }
    }
    Ok(())
}

fn fail(g: &Graph, id: NodeId, msg: impl Into<String>) -> Error {
    Error::node(&g.node(id).name, g.node(id).op.name(), msg)
}

fn fq(g: &Graph, id: NodeId) -> Option<&FakeQuantAttrs> {
    g.node(id).op.as_fake_quant()
}

/// Every use of `id` is a fake-quant (it is requantized).
fn quantized_after(g: &Graph, id: NodeId) -> bool {
    let users = g.users(id);
    !users.is_empty()
        && users.iter().all(|(u, _)| fq(g, *u).is_some())
        && !g.outputs().iter().any(|o| o.node == id)
}

/// No use of `id` is a fake-quant, except one tied to a concat's shared scale: a same-scale
/// op whose input has other users keeps that input's scale, and TFLite requantizes its
/// output into the concat's (a QUANTIZE), as for any other concat input.
fn no_fq_after(g: &Graph, id: NodeId) -> bool {
    g.users(id)
        .iter()
        .all(|(u, _)| fq(g, *u).is_none_or(|q| matches!(q.range, RangeSource::Tied { .. })))
}

/// The kernel operand of a kernel op is `fake_quant{last_value}` of a param, per axis on the
/// axis TFLite wants, or per tensor.
fn check_kernel(g: &Graph, id: NodeId) -> Result<()> {
    let k = g
        .operand(id, 1)
        .ok_or_else(|| fail(g, id, "has no kernel"))?;
    let q = fq(g, k).ok_or_else(|| fail(g, id, "its kernel is not fake-quantized"))?;
    let on_param = g.operand(k, 0).is_some_and(|p| g.node(p).op.is_param());
    let axis_ok = q.axis.is_none() || q.axis == kernel_quant_axis(&g.node(id).op);
    let weight_range = matches!(
        q.range,
        RangeSource::LastValue | RangeSource::Learned { .. }
    );
    if !weight_range || !q.symmetric || !q.narrow || !on_param || !axis_ok {
        return Err(fail(
            g,
            id,
            format!(
                "its kernel quantizer `{}` must be a narrow symmetric last_value or learned \
                 fake_quant of a param, per axis {:?} or per tensor",
                g.node(k).name,
                kernel_quant_axis(&g.node(id).op)
            ),
        ));
    }
    if let Some(b) = g.operand(id, 2) {
        if !g.node(b).op.is_param() {
            return Err(fail(g, id, "its bias must be a param"));
        }
    }
    Ok(())
}

/// The states quantizers read exist in `params` as `S.min` / `S.max`.
fn check_states(g: &Graph, params: &ParamStore) -> Result<()> {
    for id in g.canonical_order() {
        if let Some(s) = fq(g, id).and_then(|q| q.range.state()) {
            let (lo, hi) = state_params(s);
            if !params.contains(&lo) || !params.contains(&hi) {
                return Err(fail(
                    g,
                    id,
                    format!("its state params `{lo}`/`{hi}` are missing"),
                ));
            }
        }
    }
    Ok(())
}

fn check_inputs(g: &Graph) -> Result<()> {
    for &i in g.inputs() {
        let users = g.users(i);
        if users.is_empty() || !users.iter().all(|(u, _)| fq(g, *u).is_some()) {
            return Err(fail(
                g,
                i,
                "the model input must be used only by its fake_quant",
            ));
        }
    }
    Ok(())
}

/// The model op of node `id`, or an error naming the family that has no place in `form`.
fn model_op<'g>(g: &'g Graph, id: NodeId, form: &str) -> Result<&'g ModelOp> {
    let op = &g.node(id).op;
    op.as_model().ok_or_else(|| {
        fail(
            g,
            id,
            format!("{} has no place in {form}", op.family().describe()),
        )
    })
}

/// The last node of the group TFLite fuses into op `id`: `id` [-> batch_norm, when it folds
/// into `id`] [-> relu/relu6, when `id` or that BatchNorm has an activation slot], each the
/// sole user of the one before. Nothing may be quantized inside the group.
fn group_end(g: &Graph, id: NodeId) -> NodeId {
    let mut v = id;
    while let [(next, 0)] = g.users(v).as_slice() {
        let next = *next;
        let (Some(here), Some(next_op)) = (g.node(v).op.as_model(), g.node(next).op.as_model())
        else {
            break;
        };
        if matches!(next_op, ModelOp::BatchNorm { .. }) && here.folds_batch_norm() {
            v = next;
        } else if next_op.as_fusable_activation().is_some() && fuses_into(here) {
            v = next;
            break;
        } else {
            break;
        }
    }
    v
}

/// A ReLU/ReLU6 fuses into its producer when the producer has an activation slot, or is a
/// BatchNorm (which joins the kernel op before it).
fn fuses_into(producer: &ModelOp) -> bool {
    producer.activation().is_some() || matches!(producer, ModelOp::BatchNorm { .. })
}

/// Checks graph form 2: a QAT graph (`default_8bit` without overrides).
pub fn check_qat_graph(g: &Graph, params: &ParamStore) -> Result<()> {
    check_inputs(g)?;
    check_states(g, params)?;
    for id in g.canonical_order() {
        let op = model_op(g, id, "a QAT graph")?;
        if matches!(op, ModelOp::Input | ModelOp::Param) {
            continue;
        }
        match policy(op) {
            Policy::Kernel { .. } => {
                check_kernel(g, id)?;
                if op.activation().is_some_and(|a| a != Activation::None) {
                    return Err(fail(g, id, "QAT graphs keep activations as separate nodes"));
                }
                let v = group_end(g, id);
                if !quantized_after(g, v) {
                    return Err(fail(
                        g,
                        v,
                        format!(
                            "the output of the `{}` group must be fake-quantized",
                            g.node(id).name
                        ),
                    ));
                }
            }
            Policy::SharedScale => {
                let out_state = g
                    .users(id)
                    .first()
                    .and_then(|(u, _)| fq(g, *u))
                    .and_then(|q| q.range.state().map(str::to_string));
                for o in g.operands(id) {
                    let tied = fq(g, o).map(|q| &q.range);
                    let ok = matches!(tied, Some(RangeSource::Tied { state }) if Some(state) == out_state.as_ref());
                    if !ok {
                        return Err(fail(
                            g,
                            id,
                            "every concat input must be tied to the output's quantizer state",
                        ));
                    }
                }
            }
            Policy::FoldedBatchNorm => {
                let bad = g.operand(id, 0).is_some_and(|p| fq(g, p).is_some());
                if bad {
                    return Err(fail(
                        g,
                        id,
                        "nothing is quantized between a kernel op and its BatchNorm",
                    ));
                }
            }
            Policy::Explicit => {}
            Policy::Output => {
                if op.as_fusable_activation().is_some() {
                    // no fake-quant between a fusing producer and its activation
                    let between = g
                        .operand(id, 0)
                        .filter(|&p| fq(g, p).is_some() && g.use_count(p) == 1);
                    let producer = between
                        .and_then(|p| g.operand(p, 0))
                        .and_then(|p| g.node(p).op.as_model());
                    if producer.is_some_and(fuses_into) {
                        return Err(fail(
                            g,
                            id,
                            "a fake-quant sits between a fused kernel and its activation",
                        ));
                    }
                }
                // an op with an activation slot is quantized after the activation it fuses
                let v = group_end(g, id);
                if !quantized_after(g, v) {
                    return Err(fail(g, v, "its output must be fake-quantized"));
                }
            }
            Policy::SameScale | Policy::Fixed { .. } => {
                if !no_fq_after(g, id) {
                    return Err(fail(
                        g,
                        id,
                        "same-scale and fixed-output ops take no quantizer",
                    ));
                }
            }
            Policy::Unsupported { why } => {
                return Err(fail(g, id, format!("not expected in a QAT graph: {why}")))
            }
        }
    }
    Ok(())
}

/// Checks graph form 3: the export-ready graph `tflite::export` takes.
pub fn check_export_ready(g: &Graph) -> Result<()> {
    check_inputs(g)?;
    for id in g.canonical_order() {
        let op = model_op(g, id, "an export-ready graph")?;
        if matches!(op, ModelOp::Input | ModelOp::Param) {
            continue;
        }
        if matches!(op, ModelOp::Dropout { .. }) {
            return Err(fail(g, id, "must be gone in an export-ready graph"));
        }
        match policy(op) {
            Policy::FoldedBatchNorm => {
                return Err(fail(g, id, "must be gone in an export-ready graph"))
            }
            Policy::Kernel { .. } => {
                check_kernel(g, id)?;
                if !quantized_after(g, id) {
                    return Err(fail(g, id, "must be followed by an activation fake_quant"));
                }
            }
            Policy::SharedScale => {
                if !quantized_after(g, id) {
                    return Err(fail(g, id, "must be followed by a fake_quant"));
                }
                let state =
                    fq(g, g.users(id)[0].0).and_then(|q| q.range.state().map(str::to_string));
                for o in g.operands(id) {
                    let ok = matches!(fq(g, o).map(|q| &q.range), Some(RangeSource::Tied { state: s }) if Some(s) == state.as_ref());
                    if !ok {
                        return Err(fail(
                            g,
                            id,
                            "concat inputs must be tied to the output's state",
                        ));
                    }
                }
            }
            Policy::Explicit => {}
            Policy::Output => {
                if !quantized_after(g, id) {
                    return Err(fail(g, id, "must be followed by a fake_quant"));
                }
            }
            Policy::SameScale | Policy::Fixed { .. } => {
                if !no_fq_after(g, id) {
                    return Err(fail(g, id, "takes no quantizer after it"));
                }
            }
            Policy::Unsupported { why } => {
                return Err(fail(
                    g,
                    id,
                    format!("not expected in an export-ready graph: {why}"),
                ))
            }
        }
    }
    Ok(())
}
