//! The f32 reference interpreter: plain, obviously-correct loops for every op. It is the
//! oracle the JIT and the exporter are checked against, so it favours clarity over speed.
//!
//! Shapes come from the values actually fed (any batch size), re-inferred node by node.

mod grad;
mod kernels;
mod model;
mod train;
mod update;
mod value;

use crate::ir::op::OpError;
use value::Cx;
pub use value::{RunResult, Value};

pub use kernels::{dropout_keep, fq_ranges, sigmoid, state_range};

use super::graph::{Graph, NodeId};
use super::infer::infer_type;
use super::op::Op;
use super::params::ParamStore;
use super::types::TensorType;
use crate::error::{Error, Result};
use crate::ir::op::ModelOp;
use std::collections::HashMap;

/// Runs `g` on `inputs` (by input node name) with weights from `params`.
pub fn run(g: &Graph, params: &ParamStore, inputs: &[(&str, Value)]) -> Result<RunResult> {
    let values = run_all(g, params, inputs)?;
    Ok(RunResult {
        outputs: g
            .outputs()
            .iter()
            .map(|o| (o.name.clone(), values[&o.node].clone()))
            .collect(),
        updates: g
            .updates()
            .iter()
            .map(|u| {
                (
                    u.param.clone(),
                    values[&u.node].f32().cloned().expect("f32 update"),
                )
            })
            .collect(),
    })
}

/// Runs `g` and returns the value of every live node (for comparing intermediates).
pub fn run_all(
    g: &Graph,
    params: &ParamStore,
    inputs: &[(&str, Value)],
) -> Result<HashMap<NodeId, Value>> {
    let mut env: HashMap<NodeId, Value> = HashMap::new();
    for &i in g.inputs() {
        let node = g.node(i);
        let v = inputs
            .iter()
            .find(|(n, _)| *n == node.name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::node(&node.name, "input", "no value was fed for this input"))?;
        let got = v.ty();
        let same_sample = got.shape.len() == node.ty.shape.len()
            && got.shape.iter().skip(1).eq(node.ty.shape.iter().skip(1));
        if got.dtype != node.ty.dtype || !same_sample {
            return Err(Error::node(
                &node.name,
                "input",
                format!("fed {got} but the graph expects {} (any batch)", node.ty),
            ));
        }
        env.insert(i, v);
    }
    for id in g.canonical_order() {
        if env.contains_key(&id) {
            continue;
        }
        let node = g.node(id);
        let v = if node.op == Op::Model(ModelOp::Param) {
            // a param that updates only write (nothing reads it) needs no value yet
            if g.use_count(id) == 0 {
                continue;
            }
            Value::F32(params.require(&node.name)?.clone())
        } else {
            let args: Vec<&Value> = g.operands(id).iter().map(|o| &env[o]).collect();
            eval(&node.op, &args, params).map_err(|e| Error::op(&node.name, node.op.name(), e))?
        };
        env.insert(id, v);
    }
    Ok(env)
}

/// Evaluates one op on values. The error is a message; the caller names the node.
pub fn eval(op: &Op, args: &[&Value], params: &ParamStore) -> std::result::Result<Value, OpError> {
    let tys: Vec<TensorType> = args.iter().map(|a| a.ty()).collect();
    let ty_refs: Vec<&TensorType> = tys.iter().collect();
    let out_ty = infer_type(op, &ty_refs)?;
    let cx = Cx {
        args,
        params,
        out_shape: out_ty.shape,
    };
    match op {
        Op::Model(op) => model::eval(op, &cx),
        Op::Pass(op) => model::eval_pass(op, &cx),
        Op::Train(op) => train::eval(op, &cx),
        Op::Grad(op) => grad::eval(op, &cx),
        Op::Update(op) => update::eval(op, &cx),
    }
}
