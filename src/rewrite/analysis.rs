//! The e-class analysis: what conditions and the cost model know about a class.
//!
//! - value classes: the tensor type (from [`crate::ir::infer`]), whether the value is a
//!   param-only expression that constant folding removes, and the use count of the value
//!   in the graph the e-graph was built from;
//! - attribute classes: the attribute leaf (attribute functions are evaluated here, and
//!   their result leaf added to their class);
//! - the whole e-graph: the train/eval mode and pass options conditions read.

use super::attr_leaf::AttrError;
use super::lang::{AttrLeaf, LeafKind, QNode};
use crate::ir::infer::infer_type;
use crate::ir::op::OpKind;
use crate::ir::types::TensorType;
use egg::{DidMerge, Id};
use std::sync::Arc;

/// Train or eval: what the graph is for (dropout, BatchNorm folding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The graph trains: dropout is active, BatchNorm uses batch statistics.
    Train,
    /// Inference and export: dropout is the identity, BatchNorm uses moving statistics.
    #[default]
    Eval,
}

impl Mode {
    /// Parses `train` or `eval` (`qatc dump --mode`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "train" => Some(Mode::Train),
            "eval" => Some(Mode::Eval),
            _ => None,
        }
    }

    /// The spelling [`Mode::parse`] reads: `train` or `eval`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Train => "train",
            Mode::Eval => "eval",
        }
    }
}

/// The analysis: global facts, plus per-class [`Data`].
#[derive(Clone, Debug, Default)]
pub struct QAnalysis {
    pub mode: Mode,
    /// `fold_bn` may fold a BatchNorm into a kernel with a per-tensor weight quantizer
    /// (not exact: see `fold_bn`).
    pub allow_inexact_fold: bool,
    /// The quantizer states some `range=tied` quantizer of the input graph reads (set by
    /// [`super::saturate_egraph`] from the graph): removing the quantizer that observes one
    /// of them would leave its tied readers without a range.
    pub tied_states: std::collections::BTreeSet<String>,
}

/// What the analysis knows about one e-class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Data {
    /// The type of a value class.
    pub ty: Option<TensorType>,
    /// The leaf of an attribute class.
    pub attr: Option<Arc<AttrLeaf>>,
    /// How many ops, outputs and updates used this value in the graph the e-graph was built
    /// from (the largest over merged classes); 1 for values rules created.
    pub uses: usize,
    /// A param-only expression of foldable ops: constant folding turns it into a param.
    pub constant: bool,
    /// Why the class has no type or attribute (an ill-formed node a rule built), or a type
    /// conflict between merged classes.
    pub error: Option<String>,
}

pub type EGraph = egg::EGraph<QNode, QAnalysis>;

/// Ops constant folding may evaluate: everything but inputs, quantizers and training ops.
pub fn is_foldable(kind: OpKind) -> bool {
    !matches!(
        kind,
        OpKind::Input | OpKind::Param | OpKind::FakeQuant | OpKind::Quant | OpKind::Dropout
    ) && (kind as usize) < (OpKind::SoftmaxCrossEntropy as usize)
}

/// The attribute leaf of class `id`, if it has one.
pub fn attr_of(egraph: &EGraph, id: Id) -> Option<&Arc<AttrLeaf>> {
    egraph[id].data.attr.as_ref()
}

fn make_op(egraph: &EGraph, kind: OpKind, ch: &[Id]) -> Data {
    let mut data = Data {
        uses: 1,
        ..Data::default()
    };
    let Some((&attr_id, operands)) = ch.split_first() else {
        data.error = Some(format!("a {kind} node has no attribute child"));
        return data;
    };
    let Some(attr) = egraph[attr_id].data.attr.clone() else {
        data.error = Some(format!(
            "the attributes of a {kind} node are not known: {}",
            egraph[attr_id]
                .data
                .error
                .clone()
                .unwrap_or_else(|| "its first child is not an attribute".into())
        ));
        return data;
    };
    let op = match attr.op_of_kind(kind) {
        Ok(op) => op,
        Err(e) => {
            data.error = Some(e.0);
            return data;
        }
    };
    let tys: Option<Vec<&TensorType>> = operands
        .iter()
        .map(|&o| egraph[o].data.ty.as_ref())
        .collect();
    let Some(tys) = tys else {
        data.error = Some(format!("an operand of {kind} `{}` has no type", attr.name));
        return data;
    };
    match infer_type(&op, &tys) {
        Ok(t) => data.ty = Some(t),
        Err(m) => data.error = Some(format!("{kind} `{}`: {m}", attr.name)),
    }
    data.constant = is_foldable(kind)
        && !operands.is_empty()
        && operands.iter().all(|&o| egraph[o].data.constant);
    data
}

impl egg::Analysis<QNode> for QAnalysis {
    type Data = Data;

    fn make(egraph: &mut EGraph, enode: &QNode, _id: Id) -> Data {
        match enode {
            QNode::Op(kind, ch) => make_op(egraph, *kind, ch),
            QNode::Attr(a) => Data {
                attr: Some(a.clone()),
                uses: 1,
                ..Data::default()
            },
            QNode::Value(v) => Data {
                ty: Some(v.ty.clone()),
                constant: v.kind == LeafKind::Param,
                uses: 1,
                ..Data::default()
            },
            QNode::Fn(f, ch) => {
                let args: Option<Vec<Arc<AttrLeaf>>> =
                    ch.iter().map(|&c| egraph[c].data.attr.clone()).collect();
                let result = match args {
                    Some(args) => {
                        let refs: Vec<&AttrLeaf> = args.iter().map(|a| a.as_ref()).collect();
                        f.eval(&refs)
                    }
                    None => Err(AttrError(format!(
                        "an argument of {} is not an attribute",
                        f.name()
                    ))),
                };
                match result {
                    Ok(leaf) => Data {
                        attr: Some(Arc::new(leaf)),
                        uses: 1,
                        ..Data::default()
                    },
                    Err(e) => Data {
                        error: Some(e.0),
                        uses: 1,
                        ..Data::default()
                    },
                }
            }
        }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        let before = a.clone();
        match (&a.ty, &b.ty) {
            (None, Some(_)) => a.ty = b.ty.clone(),
            (Some(x), Some(y)) if x != y => {
                a.error = Some(format!("type conflict: one form has type {x}, another {y}"))
            }
            _ => {}
        }
        if a.attr.is_none() {
            a.attr = b.attr.clone();
        }
        a.uses = a.uses.max(b.uses);
        a.constant |= b.constant;
        let conflict = a
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("type conflict"));
        if !conflict {
            // an error only matters while nothing in the class has a type or attribute
            a.error = if a.ty.is_some() || a.attr.is_some() {
                None
            } else {
                a.error.clone().or(b.error.clone())
            };
        }
        DidMerge(*a != before, *a != b)
    }

    fn modify(egraph: &mut EGraph, id: Id) {
        // an attribute function's class gets its value as a leaf
        let class = &egraph[id];
        let has_fn = class.nodes.iter().any(|n| matches!(n, QNode::Fn(..)));
        if !has_fn || class.nodes.iter().any(|n| matches!(n, QNode::Attr(_))) {
            return;
        }
        if let Some(leaf) = class.data.attr.clone() {
            let leaf_id = egraph.add(QNode::Attr(leaf));
            egraph.union(id, leaf_id);
        }
    }
}
