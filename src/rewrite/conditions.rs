//! Named conditions: the Rust predicates a rule's `if` clause calls, e.g.
//! `if single_use(?m), fuses_activation(?y)`. A condition gets the e-graph (its analysis
//! data and global mode) and the classes bound to its `?var` arguments.
//!
//! To add one: a function here, a row in [`CONDITIONS`] (name, arity, what it checks); the
//! rule loader rejects unknown names and wrong arities, and `passes/README.md` lists them.
//! Conditions must be monotone (once true for a class, true after more merges), so the
//! saturated e-graph does not depend on the order rules fire in.

use super::analysis::{attr_of, EGraph, Mode};
use super::lang::QNode;
use crate::ir::op::{Activation, OpKind, RangeSource};
use egg::Id;

/// A named condition.
pub struct Condition {
    pub name: &'static str,
    pub arity: usize,
    /// One line for the README and error messages.
    pub doc: &'static str,
    pub check: fn(&EGraph, &[Id]) -> bool,
}

/// Every condition rules may use.
pub const CONDITIONS: &[Condition] = &[
    Condition {
        name: "eval_mode",
        arity: 0,
        doc: "the pipeline runs in eval mode (inference, export)",
        check: |eg, _| eg.analysis.mode == Mode::Eval,
    },
    Condition {
        name: "single_use",
        arity: 1,
        doc:
            "the value had exactly one use (op operand, output or update) in the pass's input graph",
        check: |eg, a| eg[a[0]].data.uses <= 1,
    },
    Condition {
        name: "same_type",
        arity: 2,
        doc: "both values have the same type (dtype and shape)",
        check: |eg, a| {
            let (x, y) = (&eg[a[0]].data.ty, &eg[a[1]].data.ty);
            x.is_some() && x == y
        },
    },
    Condition {
        name: "identity_perm",
        arity: 1,
        doc: "the transpose attributes permute nothing",
        check: |eg, a| match attr_of(eg, a[0]).map(|l| &l.op) {
            Some(crate::ir::op::Op::Model(crate::ir::op::ModelOp::Transpose { perm })) => {
                perm.iter().enumerate().all(|(i, &p)| i == p)
            }
            _ => false,
        },
    },
    Condition {
        name: "no_activation",
        arity: 1,
        doc: "the op attributes have no fused activation yet",
        check: |eg, a| attr_of(eg, a[0]).and_then(|l| l.op.activation()) == Some(Activation::None),
    },
    Condition {
        name: "fuses_activation",
        arity: 1,
        doc: "the value comes from a kernel TFLite fuses ReLU/ReLU6 into: conv2d, \
              depthwise_conv2d, conv2d_transpose, dense, add, sub, mul, or a batch_norm of a \
              conv2d/depthwise_conv2d/dense (folded at export)",
        check: fuses_activation,
    },
    Condition {
        name: "folds_batch_norm",
        arity: 1,
        doc: "the value comes from a conv2d, depthwise_conv2d or dense (a following BatchNorm \
              folds into its kernel and bias)",
        check: |eg, a| has_kind(eg, a[0], &BN_FOLD_TARGETS),
    },
    Condition {
        name: "same_quantizer",
        arity: 2,
        doc: "both fake-quant attributes quantize identically (bits, narrow, symmetric, axis, \
              and the same range source)",
        check: |eg, a| match (quant_attrs(eg, a[0]), quant_attrs(eg, a[1])) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    },
    Condition {
        name: "per_tensor",
        arity: 1,
        doc: "the fake-quant attributes are per-tensor (an activation quantizer, not a \
              per-axis weight quantizer)",
        check: |eg, a| quant_attrs(eg, a[0]).is_some_and(|q| q.axis.is_none()),
    },
    Condition {
        name: "untied",
        arity: 1,
        doc: "no `range=tied` quantizer of the pass's input graph reads the state of this \
              fake-quant (a concat's output quantizer that its inputs share may not go)",
        check: |eg, a| {
            quant_attrs(eg, a[0]).is_some_and(|q| match &q.range {
                RangeSource::Ema { state, .. }
                | RangeSource::AllValues { state }
                | RangeSource::Learned { state, .. } => !eg.analysis.tied_states.contains(state),
                RangeSource::LastValue
                | RangeSource::Tied { .. }
                | RangeSource::Fixed { .. }
                | RangeSource::Operands
                | RangeSource::Trained(_) => true,
            })
        },
    },
    Condition {
        name: "scaling_commutes",
        arity: 2,
        doc: "scale_channels (second argument) commutes with the weight fake-quant (first): a \
              narrow symmetric last_value quantizer per axis on the scaled axis (or any \
              last_value quantizer when the pass allows inexact folding)",
        check: scaling_commutes,
    },
];

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.arity)
    }
}

/// The condition named `name`.
pub fn condition(name: &str) -> Option<&'static Condition> {
    CONDITIONS.iter().find(|c| c.name == name)
}

const BN_FOLD_TARGETS: [OpKind; 3] = [OpKind::Conv2d, OpKind::DepthwiseConv2d, OpKind::Dense];

const ACTIVATION_HOSTS: [OpKind; 7] = [
    OpKind::Conv2d,
    OpKind::DepthwiseConv2d,
    OpKind::Conv2dTranspose,
    OpKind::Dense,
    OpKind::Add,
    OpKind::Sub,
    OpKind::Mul,
];

/// Class `id` holds an op node of one of `kinds`.
fn has_kind(eg: &EGraph, id: Id, kinds: &[OpKind]) -> bool {
    eg[id]
        .nodes
        .iter()
        .any(|n| n.op_kind().is_some_and(|k| kinds.contains(&k)))
}

fn fuses_activation(eg: &EGraph, a: &[Id]) -> bool {
    eg[a[0]].nodes.iter().any(|n| match n {
        QNode::Op(k, ch) if ACTIVATION_HOSTS.contains(k) => {
            attr_of(eg, ch[0]).and_then(|l| l.op.activation()) == Some(Activation::None)
        }
        QNode::Op(OpKind::BatchNorm, ch) => has_kind(eg, ch[1], &BN_FOLD_TARGETS),
        _ => false,
    })
}

fn quant_attrs(eg: &EGraph, id: Id) -> Option<&crate::ir::op::FakeQuantAttrs> {
    match attr_of(eg, id).map(|l| &l.op) {
        Some(crate::ir::op::Op::Model(crate::ir::op::ModelOp::FakeQuant(q)))
        | Some(crate::ir::op::Op::Pass(crate::ir::op::PassOp::Quant(q))) => Some(q),
        _ => None,
    }
}

fn scaling_commutes(eg: &EGraph, a: &[Id]) -> bool {
    let Some(q) = quant_attrs(eg, a[0]) else {
        return false;
    };
    let Some(crate::ir::op::Op::Pass(crate::ir::op::PassOp::ScaleChannels { axis })) =
        attr_of(eg, a[1]).map(|l| &l.op)
    else {
        return false;
    };
    // a narrow symmetric grid is symmetric about 0, so a negative scale mirrors it exactly
    let exact = q.symmetric && q.narrow && q.axis == Some(*axis);
    match q.range {
        RangeSource::LastValue => exact || eg.analysis.allow_inexact_fold,
        // the learned range is scaled with the kernel by fold_bn
        RangeSource::Learned { .. } => exact,
        RangeSource::Ema { .. }
        | RangeSource::AllValues { .. }
        | RangeSource::Tied { .. }
        | RangeSource::Fixed { .. }
        | RangeSource::Operands
        | RangeSource::Trained(_) => false,
    }
}
