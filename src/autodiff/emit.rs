//! Building gradient nodes: [`Emit`] adds nodes to the graph under construction with
//! unique, readable names; [`Contrib`] is one signed contribution to a value's gradient.

use crate::error::{Error, Result};
use crate::ir::op::Activation;
use crate::ir::op::ModelOp;
use crate::ir::{Graph, NodeId, Op};

/// One contribution to the gradient of a value: `node`, or `-node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contrib {
    pub node: NodeId,
    pub negated: bool,
}

impl Contrib {
    pub fn pos(node: NodeId) -> Contrib {
        Contrib {
            node,
            negated: false,
        }
    }

    pub fn neg(node: NodeId) -> Contrib {
        Contrib {
            node,
            negated: true,
        }
    }

    pub(super) fn flip(self, negate: bool) -> Contrib {
        Contrib {
            node: self.node,
            negated: self.negated ^ negate,
        }
    }
}

/// Adds nodes to the graph under construction with unique, readable names.
pub struct Emit<'g> {
    pub g: &'g mut Graph,
}

impl Emit<'_> {
    /// Adds `op(operands)` named `name` (or `name_1`, … if taken).
    pub fn op(&mut self, op: Op, name: &str, operands: &[NodeId]) -> Result<NodeId> {
        let name = self.g.unique_name(name);
        self.g.add(op, name, operands)
    }

    pub fn shape(&self, id: NodeId) -> Vec<usize> {
        self.g.node(id).ty.shape.clone()
    }

    /// `a + b` (same shapes).
    pub fn add(&mut self, a: NodeId, b: NodeId, name: &str) -> Result<NodeId> {
        let op = Op::Model(ModelOp::Add {
            activation: Activation::None,
        });
        self.op(op, name, &[a, b])
    }

    /// `a - b` (same shapes).
    pub fn sub(&mut self, a: NodeId, b: NodeId, name: &str) -> Result<NodeId> {
        let op = Op::Model(ModelOp::Sub {
            activation: Activation::None,
        });
        self.op(op, name, &[a, b])
    }

    /// `-t`, computed exactly as `t - (t + t)` (the op table has no negation).
    pub fn negate(&mut self, t: NodeId, name: &str) -> Result<NodeId> {
        let twice = self.add(t, t, &format!("{name}.twice"))?;
        self.sub(t, twice, name)
    }

    /// Sums contributions into one value: `(node, negated)`, with the sign left unapplied
    /// when every contribution is negative.
    pub fn sum(&mut self, cs: &[Contrib], name: &str) -> Result<Contrib> {
        let Some(first) = cs
            .iter()
            .position(|c| !c.negated)
            .or((!cs.is_empty()).then_some(0))
        else {
            return Err(Error::Usage(format!(
                "internal: empty gradient sum for {name}"
            )));
        };
        let base = cs[first];
        if cs.len() == 1 {
            return Ok(base);
        }
        let mut acc = base.node;
        let rest: Vec<Contrib> = cs
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != first)
            .map(|(_, &c)| c.flip(base.negated))
            .collect();
        for (i, c) in rest.iter().enumerate() {
            let n = if i + 1 == rest.len() {
                name.to_string()
            } else {
                format!("{name}.acc")
            };
            acc = if c.negated {
                self.sub(acc, c.node, &n)?
            } else {
                self.add(acc, c.node, &n)?
            };
        }
        Ok(Contrib {
            node: acc,
            negated: base.negated,
        })
    }

    /// A contribution as a plain value (negation materialized).
    pub fn materialize(&mut self, c: Contrib, name: &str) -> Result<NodeId> {
        if c.negated {
            self.negate(c.node, name)
        } else {
            Ok(c.node)
        }
    }
}
