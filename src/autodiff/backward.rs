//! The reverse sweep: walks a graph from its seeds back to the values gradients are wanted
//! for, asks [`super::rules`] for each op's operand gradients, and sums the contributions a
//! value receives from its several users.
//!
//! Every gradient rule is linear in `dy`, so a contribution may carry a sign instead of a
//! negation node (`sub`'s second operand gets `-dy`): signs are folded into the summation
//! (`a + b - c` becomes `add` and `sub` nodes) and only a gradient that ends up entirely
//! negative is materialized, as `t - (t + t)` (exact in IEEE arithmetic).

use super::emit::{Contrib, Emit};
use super::rules::{rule, Rule, Site};
use crate::error::{Error, Result};
use crate::ir::types::shape_str;
use crate::ir::{Graph, NodeId};
use std::collections::{HashMap, HashSet};

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
