//! The cost model and the extractor.
//!
//! A form's cost is compared lexicographically:
//! 1. `infinite`: `quant` markers and attribute-function nodes (and ill-formed nodes) — a
//!    form that still needs one is never chosen while another exists;
//! 2. `kernels`: TFLite kernels plus fake-quant nodes — a fused kernel is one kernel, a
//!    standalone ReLU another, every fake-quant one more; param-only expressions of
//!    foldable ops are free (constant folding removes them);
//! 3. `nodes`: the number of nodes, which breaks ties towards the smaller graph (and keeps
//!    extraction well-founded on e-graph cycles).
//!
//! Costs add up over the term (shared classes count once per use), which is exact for the
//! local choices the rules offer. Ties are broken by the e-node order, so extraction is
//! deterministic. A value used twice (a residual block's input) doubles its term's count,
//! so costs grow as `2^blocks` along a chain of residual blocks: the counts are 128-bit,
//! which keeps every local difference exact up to about 120 chained residual blocks (the
//! pass manager's form check catches a graph beyond that).

use super::analysis::{is_foldable, EGraph};
use super::lang::QNode;
use crate::ir::op::OpKind;
use egg::Id;
use std::collections::HashMap;

/// The cost of a form (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost {
    /// Markers and attribute functions in the term.
    pub infinite: u128,
    /// TFLite kernels and fake-quants in the term.
    pub kernels: u128,
    /// Nodes in the term.
    pub nodes: u128,
}

impl Cost {
    fn add(self, o: Cost) -> Cost {
        Cost {
            infinite: self.infinite.saturating_add(o.infinite),
            kernels: self.kernels.saturating_add(o.kernels),
            nodes: self.nodes.saturating_add(o.nodes),
        }
    }
}

/// The cost of `node` alone.
pub fn node_cost(egraph: &EGraph, node: &QNode) -> Cost {
    match node {
        QNode::Attr(_) | QNode::Value(_) => Cost::default(),
        QNode::Fn(..) => Cost {
            infinite: 1,
            kernels: 0,
            nodes: 1,
        },
        QNode::Op(kind, _) => {
            let infinite = u128::from(*kind == OpKind::Quant);
            let folded = is_foldable(*kind)
                && !node.operands().is_empty()
                && node.operands().iter().all(|&o| egraph[o].data.constant);
            Cost {
                infinite,
                kernels: u128::from(!folded),
                nodes: 1,
            }
        }
    }
}

/// The best e-node of every class that has a finite-depth form.
pub struct Extractor<'a> {
    egraph: &'a EGraph,
    best: HashMap<Id, (Cost, QNode)>,
}

impl<'a> Extractor<'a> {
    pub fn new(egraph: &'a EGraph) -> Extractor<'a> {
        let mut best: HashMap<Id, (Cost, QNode)> = HashMap::new();
        // ill-formed classes (a rule built something that does not type) never win
        let broken = |id: Id| {
            let d = &egraph[id].data;
            d.ty.is_none() && d.attr.is_none()
        };
        let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        ids.sort();
        loop {
            let mut changed = false;
            for &id in &ids {
                for node in &egraph[id].nodes {
                    let mut cost = node_cost(egraph, node);
                    if broken(id) {
                        cost.infinite = cost.infinite.saturating_add(1);
                    }
                    let mut ok = true;
                    for &c in egg::Language::children(node) {
                        match best.get(&egraph.find(c)) {
                            Some((cc, _)) => cost = cost.add(*cc),
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    if !ok {
                        continue;
                    }
                    let better = match best.get(&id) {
                        None => true,
                        Some((old, old_node)) => (cost, node) < (*old, old_node),
                    };
                    if better {
                        best.insert(id, (cost, node.clone()));
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        Extractor { egraph, best }
    }

    /// The best node of class `id` and its cost.
    pub fn best(&self, id: Id) -> Option<(&Cost, &QNode)> {
        self.best.get(&self.egraph.find(id)).map(|(c, n)| (c, n))
    }
}
