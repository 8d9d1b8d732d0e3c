//! The e-graph language: qatc's ops, spelled as in [`crate::ir::op`] and `.qir`.
//!
//! An op node is `(kind attrs operand...)`: its **first child is always an attribute leaf**
//! that carries the op's attributes and the graph node's name, so rules can bind them
//! (`(conv2d ?c ?x ?w ?b)`), reuse them on the right side (the fused op keeps `?c`, and with
//! it its name), and names survive rewriting. Params and graph inputs are named leaves.
//! Attribute functions (`(with_activation ?c ?r)`, see [`super::attr_fns`]) compute new
//! attribute leaves on the right side of a rule; the analysis evaluates them.

use super::attr_fns::AttrFn;
pub use super::attr_leaf::AttrLeaf;
use crate::ir::op::{Op, OpKind};
use crate::ir::types::TensorType;
use egg::{Id, Language};
use std::fmt;
use std::sync::Arc;

/// Whether a named leaf is a graph input or a param.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeafKind {
    Input,
    Param,
}

/// A named value leaf: a graph input or a param, with its type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueLeaf {
    pub kind: LeafKind,
    pub name: String,
    pub ty: TensorType,
}

/// One e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QNode {
    /// An op: children are `[attrs, operand 0, operand 1, ...]`.
    Op(OpKind, Vec<Id>),
    /// An attribute leaf.
    Attr(Arc<AttrLeaf>),
    /// A graph input or a param.
    Value(Arc<ValueLeaf>),
    /// An attribute function over attribute classes (right sides of rules only).
    Fn(AttrFn, Vec<Id>),
}

impl QNode {
    /// The op kind of an op node.
    pub fn op_kind(&self) -> Option<OpKind> {
        match self {
            QNode::Op(k, _) => Some(*k),
            _ => None,
        }
    }

    /// The operand classes of an op node (its children without the attribute child).
    pub fn operands(&self) -> &[Id] {
        match self {
            QNode::Op(_, ch) => &ch[1..],
            _ => &[],
        }
    }

    /// The attribute class of an op node.
    pub fn attr_class(&self) -> Option<Id> {
        match self {
            QNode::Op(_, ch) => ch.first().copied(),
            _ => None,
        }
    }
}

/// What e-matching compares before children: the operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Discriminant {
    Op(OpKind),
    Attr,
    Value,
    Fn(AttrFn),
}

impl Language for QNode {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Discriminant {
        match self {
            QNode::Op(k, _) => Discriminant::Op(*k),
            QNode::Attr(_) => Discriminant::Attr,
            QNode::Value(_) => Discriminant::Value,
            QNode::Fn(f, _) => Discriminant::Fn(*f),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (QNode::Op(a, x), QNode::Op(b, y)) => a == b && x.len() == y.len(),
            (QNode::Fn(a, x), QNode::Fn(b, y)) => a == b && x.len() == y.len(),
            (QNode::Attr(a), QNode::Attr(b)) => a == b,
            (QNode::Value(a), QNode::Value(b)) => a == b,
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            QNode::Op(_, ch) | QNode::Fn(_, ch) => ch,
            QNode::Attr(_) | QNode::Value(_) => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            QNode::Op(_, ch) | QNode::Fn(_, ch) => ch,
            QNode::Attr(_) | QNode::Value(_) => &mut [],
        }
    }
}

impl fmt::Display for QNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QNode::Op(k, _) => f.write_str(k.name()),
            QNode::Fn(func, _) => f.write_str(func.name()),
            QNode::Attr(a) => {
                let parts: Vec<String> =
                    a.op.attrs()
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                write!(f, "{:?}{{{}}}", a.name, parts.join(","))
            }
            QNode::Value(v) => match v.kind {
                LeafKind::Param => write!(f, "@{}", v.name),
                LeafKind::Input => write!(f, "input:{}", v.name),
            },
        }
    }
}

/// The arity range `(min, max)` of an op kind's operands, without building an op (rule
/// files check their patterns with it). `max == usize::MAX` is variadic.
pub fn kind_arity(kind: OpKind) -> (usize, usize) {
    use OpKind as K;
    match kind {
        // fake_quant takes (x) or, with range=operands, (x, min, max)
        K::FakeQuant => (1, 3),
        K::Concat => (1, usize::MAX),
        _ => match Op::from_attrs(kind, Vec::new()) {
            Ok(op) => op.arity(),
            // ops with required attributes: their arity does not depend on them
            Err(_) => match kind {
                K::Reshape
                | K::Transpose
                | K::Pad
                | K::Crop
                | K::Dropout
                | K::Mean
                | K::ReduceSum
                | K::Slice
                | K::GlobalAvgPoolGrad
                | K::MeanGrad
                | K::AvgPool2dGrad => (1, 1),
                K::ScaleChannels => (2, 2),
                K::DropoutMask => (1, 1),
                K::Conv2dGradInput
                | K::Conv2dGradFilter
                | K::DepthwiseConv2dGradInput
                | K::DepthwiseConv2dGradFilter
                | K::Conv2dTransposeGradInput
                | K::Conv2dTransposeGradFilter => (2, 2),
                _ => (1, 1),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{Activation, ModelOp, PassOp, F32};

    #[test]
    fn kind_arity_agrees_with_the_op_table() {
        // every kind whose op can be built with default attributes
        for &k in OpKind::ALL {
            if let Ok(op) = Op::from_attrs(k, Vec::new()) {
                if k != OpKind::FakeQuant {
                    assert_eq!(kind_arity(k), op.arity(), "{k}");
                }
            }
        }
        let pairs = [
            (
                OpKind::Reshape,
                Op::Model(ModelOp::Reshape { shape: vec![-1] }),
            ),
            (
                OpKind::Dropout,
                Op::Model(ModelOp::Dropout { rate: F32(0.5) }),
            ),
            (
                OpKind::ScaleChannels,
                Op::Pass(PassOp::ScaleChannels { axis: 0 }),
            ),
            (
                OpKind::Transpose,
                Op::Model(ModelOp::Transpose { perm: vec![0] }),
            ),
        ];
        for (k, op) in pairs {
            assert_eq!(kind_arity(k), op.arity(), "{k}");
        }
    }

    #[test]
    fn a_marker_leaf_serves_a_fake_quant_node() {
        let q = crate::ir::op::FakeQuantAttrs::activation("s");
        let leaf = AttrLeaf::new(Op::Pass(PassOp::Quant(q.clone())), "m");
        assert_eq!(
            leaf.op_of_kind(OpKind::FakeQuant).unwrap(),
            Op::Model(ModelOp::FakeQuant(q))
        );
        let relu = AttrLeaf::new(
            Op::Model(ModelOp::Add {
                activation: Activation::Relu,
            }),
            "a",
        );
        let err = relu.op_of_kind(OpKind::Concat).unwrap_err();
        assert!(err.0.contains("`a`"), "{err}");
    }
}
