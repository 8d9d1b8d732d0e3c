//! The verifier: arity, shapes, dtypes, attribute ranges, quantization parameters and axes,
//! state and name references. Runs after every pass in debug builds and tests. Each
//! diagnostic names the node, its op and the shapes involved.

use super::graph::{Graph, NodeId};
use super::infer::infer_type;
use super::op::{Op, RangeSource};
use super::params::ParamStore;
use super::types::{DType, TensorType};
use crate::error::{Error, Result};
use crate::ir::op::{ModelOp, PassOp};
use std::collections::{HashMap, HashSet};

/// What a graph may contain at the point it is verified.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// `quant` markers are allowed (between `annotate` and `quantize`).
    pub allow_markers: bool,
}

/// Verifies a graph with default options (no `quant` markers allowed).
pub fn verify(g: &Graph) -> Result<()> {
    verify_with(g, VerifyOptions::default())
}

fn operand_types(g: &Graph, id: NodeId) -> String {
    let tys: Vec<String> = g
        .operands(id)
        .iter()
        .map(|&o| g.node(o).ty.to_string())
        .collect();
    format!("({})", tys.join(", "))
}

/// The per-axis quantization axis TFLite requires for the kernel operand of `op`.
pub fn kernel_quant_axis(op: &Op) -> Option<usize> {
    op.as_model().and_then(ModelOp::kernel_channel_axis)
}

/// Verifies a graph.
pub fn verify_with(g: &Graph, opts: VerifyOptions) -> Result<()> {
    let order = g.topo_order()?;
    if g.outputs().is_empty() {
        return Err(g.graph_err("the graph has no outputs".into()));
    }
    let mut observers: HashMap<&str, &str> = HashMap::new();
    // (state, node, op) of every `range=tied` quantizer
    let mut tied: Vec<(&str, &str, &str)> = Vec::new();

    for &id in &order {
        let node = g.node(id);
        let op = &node.op;
        let fail = |msg: String| Err(Error::node(&node.name, op.name(), msg));
        match op {
            Op::Model(ModelOp::Input) => {
                if !g.operands(id).is_empty() {
                    return fail("an input takes no operands".into());
                }
                if node.ty.shape.contains(&0) {
                    return fail(format!("input type {} has an empty dimension", node.ty));
                }
                continue;
            }
            Op::Model(ModelOp::Param) => {
                if node.ty.dtype != DType::F32 {
                    return fail(format!("params are f32, found {}", node.ty));
                }
                continue;
            }
            _ => {}
        }
        let operands = g.operands(id);
        // operand indices must be exactly 0..n
        for (i, &o) in operands.iter().enumerate() {
            if g.operand(id, i) != Some(o) {
                return fail(format!("operand {i} is missing or duplicated"));
            }
        }
        let tys: Vec<&TensorType> = operands.iter().map(|&o| &g.node(o).ty).collect();
        let inferred = match infer_type(op, &tys) {
            Ok(t) => t,
            Err(m) => return fail(format!("{m}; operands {}", operand_types(g, id))),
        };
        if inferred != node.ty {
            return fail(format!(
                "declared type {} but the operands {} give {}",
                node.ty,
                operand_types(g, id),
                inferred
            ));
        }
        match op {
            Op::Pass(PassOp::Quant(_)) if !opts.allow_markers => {
                return fail(
                    "a `quant` marker is left in the graph: markers exist only between the \
                     `annotate` and `quantize` passes"
                        .into(),
                )
            }
            Op::Model(ModelOp::FakeQuant(q)) | Op::Pass(PassOp::Quant(q)) => {
                match &q.range {
                    RangeSource::Ema { state, .. }
                    | RangeSource::AllValues { state }
                    | RangeSource::Learned { state, .. } => {
                        if let Some(other) = observers.insert(state, &node.name) {
                            return fail(format!(
                                "quantizer state `{state}` is observed by both `{other}` and `{}`; \
                                 one observes, the others use range=tied",
                                node.name
                            ));
                        }
                    }
                    RangeSource::Tied { state } => tied.push((state, &node.name, op.name())),
                    _ => {}
                }
                // a kernel's per-axis fake-quant must use the axis the TFLite kernel wants
                if let Some(axis) = q.axis {
                    for (user, i) in g.users(id) {
                        let uop = &g.node(user).op;
                        if i == 1 {
                            if let Some(want) = kernel_quant_axis(uop) {
                                if want != axis {
                                    return fail(format!(
                                        "per-axis quantization on axis {axis} of the kernel of {} `{}` {}; \
                                         TFLite quantizes its kernel on axis {want}",
                                        uop.name(),
                                        g.node(user).name,
                                        node.ty
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for (state, user, op) in tied {
        if !observers.contains_key(state) {
            return Err(Error::node(
                user,
                op,
                format!(
                    "range=tied reads state `{state}` but no quantizer observes it (one \
                     quantizer of the group needs range=ema or range=all_values)"
                ),
            ));
        }
    }
    let mut output_names = HashSet::new();
    for o in g.outputs() {
        if !output_names.insert(o.name.as_str()) {
            return Err(g.graph_err(format!("two outputs are named `{}`", o.name)));
        }
    }
    let mut updated = HashSet::new();
    for u in g.updates() {
        let value = g.node(u.node);
        let Some(pid) = g.find(&u.param) else {
            return Err(g.graph_err(format!(
                "update of unknown param `{}` (with value `{}`)",
                u.param, value.name
            )));
        };
        let target = g.node(pid);
        if target.op != Op::Model(ModelOp::Param) {
            return Err(g.graph_err(format!(
                "update of `{}`, which is a {} node, not a param",
                u.param,
                target.op.name()
            )));
        }
        if target.ty != value.ty {
            return Err(g.graph_err(format!(
                "update of param `{}` {} with value `{}` ({}) of type {}",
                u.param,
                target.ty,
                value.name,
                value.op.name(),
                value.ty
            )));
        }
        if !updated.insert(u.param.as_str()) {
            return Err(g.graph_err(format!(
                "param `{}` is updated twice; one step writes each param once",
                u.param
            )));
        }
    }
    Ok(())
}

/// Verifies a graph and that `params` holds every param it uses, with matching shapes.
pub fn verify_with_params(g: &Graph, params: &ParamStore) -> Result<()> {
    verify(g)?;
    params.check_graph(g)
}
