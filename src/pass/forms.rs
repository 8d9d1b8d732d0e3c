//! Checks that a graph has the form (README, Graph forms) a pass promises: form 2 (the QAT graph
//! `default_8bit` makes) and form 3 (the export-ready graph `export` makes, what
//! `tflite::export` takes). Each error names the node and what is wrong with it.

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::{Activation, FakeQuantAttrs, Op, OpKind, RangeSource};
use crate::ir::params::ParamStore;
use crate::ir::verify::kernel_quant_axis;
use crate::quant::scheme::{policy, state_params, Policy};

fn fail(g: &Graph, id: NodeId, msg: impl Into<String>) -> Error {
    Error::node(&g.node(id).name, g.node(id).op.name(), msg)
}

fn fq(g: &Graph, id: NodeId) -> Option<&FakeQuantAttrs> {
    match &g.node(id).op {
        Op::FakeQuant(q) => Some(q),
        _ => None,
    }
}

/// Every use of `id` is a fake-quant (it is requantized).
fn quantized_after(g: &Graph, id: NodeId) -> bool {
    let users = g.users(id);
    !users.is_empty()
        && users.iter().all(|(u, _)| fq(g, *u).is_some())
        && !g.outputs().iter().any(|o| o.node == id)
}

fn no_fq_after(g: &Graph, id: NodeId) -> bool {
    g.users(id).iter().all(|(u, _)| fq(g, *u).is_none())
}

/// The kernel operand of a kernel op is `fake_quant{last_value}` of a param, per axis on the
/// axis TFLite wants, or per tensor.
fn check_kernel(g: &Graph, id: NodeId) -> Result<()> {
    let k = g
        .operand(id, 1)
        .ok_or_else(|| fail(g, id, "has no kernel"))?;
    let q = fq(g, k).ok_or_else(|| fail(g, id, "its kernel is not fake-quantized"))?;
    let on_param = g.operand(k, 0).is_some_and(|p| g.node(p).op == Op::Param);
    let axis_ok = q.axis.is_none() || q.axis == kernel_quant_axis(&g.node(id).op);
    if q.range != RangeSource::LastValue || !q.symmetric || !q.narrow || !on_param || !axis_ok {
        return Err(fail(
            g,
            id,
            format!(
                "its kernel quantizer `{}` must be a narrow symmetric last_value fake_quant of a \
                 param, per axis {:?} or per tensor",
                g.node(k).name,
                kernel_quant_axis(&g.node(id).op)
            ),
        ));
    }
    if let Some(b) = g.operand(id, 2) {
        if g.node(b).op != Op::Param {
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

/// Checks graph form 2: a QAT graph (`default_8bit` without overrides).
pub fn check_qat_graph(g: &Graph, params: &ParamStore) -> Result<()> {
    check_inputs(g)?;
    check_states(g, params)?;
    for id in g.canonical_order() {
        let op = &g.node(id).op;
        match op.kind() {
            OpKind::Quant => return Err(fail(g, id, "a quant marker is left")),
            OpKind::Conv2d | OpKind::DepthwiseConv2d | OpKind::Dense | OpKind::Conv2dTranspose => {
                check_kernel(g, id)?;
                if op.activation() != Some(Activation::None) {
                    return Err(fail(g, id, "QAT graphs keep activations as separate nodes"));
                }
                // conv [-> batch_norm] [-> relu/relu6] -> fake_quant, nothing quantized inside
                let mut v = id;
                loop {
                    let users = g.users(v);
                    let next = match users.as_slice() {
                        [(u, 0)] => Some(*u),
                        _ => None,
                    };
                    match next.map(|u| g.node(u).op.kind()) {
                        Some(OpKind::BatchNorm) if g.node(v).op.kind() != OpKind::BatchNorm => {
                            v = next.unwrap()
                        }
                        Some(OpKind::Relu | OpKind::Relu6) => {
                            v = next.unwrap();
                            break;
                        }
                        _ => break,
                    }
                }
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
            OpKind::Concat => {
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
            OpKind::BatchNorm => {
                let bad = g.operand(id, 0).is_some_and(|p| fq(g, p).is_some());
                if bad {
                    return Err(fail(
                        g,
                        id,
                        "nothing is quantized between a kernel op and its BatchNorm",
                    ));
                }
            }
            OpKind::FakeQuant | OpKind::Input | OpKind::Param => {}
            k => match policy(k) {
                Policy::Output => {
                    if matches!(k, OpKind::Relu | OpKind::Relu6) {
                        // no fake-quant between a fusing producer and its activation
                        let between = g
                            .operand(id, 0)
                            .filter(|&p| fq(g, p).is_some() && g.use_count(p) == 1);
                        let producer = between
                            .and_then(|p| g.operand(p, 0))
                            .map(|p| g.node(p).op.kind());
                        if matches!(
                            producer,
                            Some(
                                OpKind::Conv2d
                                    | OpKind::DepthwiseConv2d
                                    | OpKind::Dense
                                    | OpKind::Conv2dTranspose
                                    | OpKind::BatchNorm
                                    | OpKind::Add
                                    | OpKind::Sub
                                    | OpKind::Mul
                            )
                        ) {
                            return Err(fail(
                                g,
                                id,
                                "a fake-quant sits between a fused kernel and its activation",
                            ));
                        }
                    }
                    if !quantized_after(g, id) {
                        return Err(fail(g, id, "its output must be fake-quantized"));
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
                _ => return Err(fail(g, id, "not expected in a QAT graph")),
            },
        }
    }
    Ok(())
}

/// Checks graph form 3: the export-ready graph `tflite::export` takes.
pub fn check_export_ready(g: &Graph) -> Result<()> {
    check_inputs(g)?;
    for id in g.canonical_order() {
        let op = &g.node(id).op;
        match op.kind() {
            OpKind::Quant
            | OpKind::BatchNorm
            | OpKind::Dropout
            | OpKind::BnScale
            | OpKind::ScaleChannels => {
                return Err(fail(g, id, "must be gone in an export-ready graph"))
            }
            OpKind::Conv2d | OpKind::DepthwiseConv2d | OpKind::Dense | OpKind::Conv2dTranspose => {
                check_kernel(g, id)?;
                if !quantized_after(g, id) {
                    return Err(fail(g, id, "must be followed by an activation fake_quant"));
                }
            }
            OpKind::Add | OpKind::Sub | OpKind::Mul => {
                if !quantized_after(g, id) {
                    return Err(fail(g, id, "must be followed by a fake_quant"));
                }
            }
            OpKind::Concat => {
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
            OpKind::FakeQuant | OpKind::Input | OpKind::Param => {}
            k if op.is_training_op() => {
                return Err(fail(g, id, format!("training op {k} in an export graph")))
            }
            k => match policy(k) {
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
                _ => return Err(fail(g, id, "not expected in an export-ready graph")),
            },
        }
    }
    Ok(())
}
