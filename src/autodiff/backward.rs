//! The reverse sweep: walks a graph from its seeds back to the values gradients are wanted
//! for, asks [`super::rules`] for each op's operand gradients, and sums the contributions a
//! value receives from its several users.
//!
//! Every gradient rule is linear in `dy`, so a contribution may carry a sign instead of a
//! negation node (`sub`'s second operand gets `-dy`): signs are folded into the summation
//! (`a + b - c` becomes `add` and `sub` nodes) and only a gradient that ends up entirely
//! negative is materialized, as `t - (t + t)` (exact in IEEE arithmetic).

use super::rules::{rule, Rule, Site};
use crate::error::{Error, Result};
use crate::ir::op::Activation;
use crate::ir::op::ModelOp;
use crate::ir::types::shape_str;
use crate::ir::{Graph, NodeId, Op};
use std::collections::{HashMap, HashSet};

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

    fn flip(self, negate: bool) -> Contrib {
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

/// Reverse-mode differentiation inside `g`: given seed gradients `(value, d loss / d value)`
/// it adds the nodes computing `d loss / d w` for every `w` of `wrt` and returns them (`None`
/// where `w` does not influence the seeds). `g` must be in the explicit training form (every
/// op has a rule in [`super::rules`]); gradients do not flow through observers, statistics
/// and optimizer ops.
pub fn backward(
    g: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
) -> Result<Vec<Option<NodeId>>> {
    let order = g.topo_order()?;
    // values that depend differentiably on some `wrt`
    let mut from_wrt: HashSet<NodeId> = wrt.iter().copied().collect();
    for &n in &order {
        if from_wrt.contains(&n) || matches!(rule(&g.node(n).op), Rule::NoGradient) {
            continue;
        }
        if g.operands(n).iter().any(|o| from_wrt.contains(o)) {
            from_wrt.insert(n);
        }
    }
    // values the seeds depend on
    let mut to_seed: HashSet<NodeId> = seeds.iter().map(|s| s.0).collect();
    for &n in order.iter().rev() {
        if to_seed.contains(&n) {
            to_seed.extend(g.operands(n));
        }
    }
    let relevant = |n: &NodeId| from_wrt.contains(n) && to_seed.contains(n);

    let mut adj: HashMap<NodeId, Vec<Contrib>> = HashMap::new();
    for &(y, dy) in seeds {
        if g.node(y).ty.shape != g.node(dy).ty.shape {
            return Err(Error::node(
                &g.node(dy).name,
                g.node(dy).op.name(),
                format!(
                    "seed gradient {} does not match the value `{}` {}",
                    g.node(dy).ty,
                    g.node(y).name,
                    g.node(y).ty
                ),
            ));
        }
        adj.entry(y).or_default().push(Contrib::pos(dy));
    }
    let wanted: HashSet<NodeId> = wrt.iter().copied().collect();
    let mut totals: HashMap<NodeId, Contrib> = HashMap::new();

    for &n in order.iter().rev() {
        if !relevant(&n) {
            continue;
        }
        let Some(cs) = adj.remove(&n) else { continue };
        let name = g.node(n).name.clone();
        let mut e = Emit { g: &mut *g };
        let dy = e.sum(&cs, &format!("grad.{name}"))?;
        if wanted.contains(&n) {
            totals.insert(n, dy);
        }
        let operands = e.g.operands(n);
        if !operands.iter().any(&relevant) {
            continue;
        }
        let op = e.g.node(n).op.clone();
        let grad_fn = match rule(&op) {
            Rule::Grad(f) => f,
            Rule::NoGradient => continue,
            Rule::Unsupported(hint) => {
                return Err(Error::Unsupported {
                    node: name,
                    op: op.name().into(),
                    what: "autodiff".into(),
                    hint: hint.into(),
                })
            }
        };
        let site = Site {
            name: name.clone(),
            needs: operands.iter().map(&relevant).collect(),
            x: operands.clone(),
            y: n,
            dy: dy.node,
        };
        let grads = grad_fn(&mut e, &site)?;
        for (i, c) in grads.into_iter().enumerate() {
            let (Some(c), Some(&o)) = (c, operands.get(i)) else {
                continue;
            };
            if !relevant(&o) {
                continue;
            }
            let (got, want) = (&g.node(c.node).ty.shape, &g.node(o).ty.shape);
            if got != want {
                return Err(Error::node(
                    &name,
                    op.name(),
                    format!(
                        "internal: the gradient rule gives operand {i} shape {} but it has {}",
                        shape_str(got),
                        shape_str(want)
                    ),
                ));
            }
            adj.entry(o).or_default().push(c.flip(dy.negated));
        }
    }
    let mut e = Emit { g };
    wrt.iter()
        .map(|w| match totals.get(w) {
            Some(&c) => {
                let name = format!("grad.{}", e.g.node(*w).name);
                e.materialize(c, &name).map(Some)
            }
            None => Ok(None),
        })
        .collect()
}
