//! petgraph <-> e-graph.
//!
//! [`to_egraph`] adds every live node of a [`Graph`] once, so shared subgraphs stay shared,
//! and records the graph's roots (outputs and updates) by name. [`from_egraph`] extracts
//! the cheapest form of every root (see [`super::cost`]) into a new graph: nodes keep the
//! names their attribute leaves carry, inputs keep their order, and the walk is the same
//! canonical post-order the printer uses, so the result is deterministic.

use super::analysis::{EGraph, QAnalysis};
use super::cost::Extractor;
use super::lang::{AttrLeaf, LeafKind, QNode, ValueLeaf};
use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::ModelOp;
use crate::ir::op::Op;
use crate::ir::types::TensorType;
use egg::Id;
use std::collections::HashMap;
use std::sync::Arc;

/// What a graph's results are, by name, as e-classes.
#[derive(Clone, Debug)]
pub struct Roots {
    pub graph_name: String,
    /// The graph's frozen params (kept frozen in the rebuilt graph).
    pub frozen: Vec<String>,
    /// Graph inputs in declaration order (kept even when unused).
    pub inputs: Vec<(String, TensorType)>,
    pub outputs: Vec<(String, Id)>,
    pub updates: Vec<(String, Id)>,
}

/// Builds an e-graph holding `g`.
pub fn to_egraph(g: &Graph, analysis: QAnalysis) -> Result<(EGraph, Roots)> {
    let mut eg = EGraph::new(analysis);
    let mut class: HashMap<NodeId, Id> = HashMap::new();
    let mut uses: Vec<(Id, usize)> = Vec::new();
    for id in g.canonical_order() {
        let node = g.node(id);
        let enode = match &node.op {
            Op::Model(ModelOp::Input) | Op::Model(ModelOp::Param) => {
                QNode::Value(Arc::new(ValueLeaf {
                    kind: if node.op == Op::Model(ModelOp::Input) {
                        LeafKind::Input
                    } else {
                        LeafKind::Param
                    },
                    name: node.name.clone(),
                    ty: node.ty.clone(),
                }))
            }
            op => {
                let attrs = eg.add(QNode::Attr(Arc::new(AttrLeaf::new(
                    op.clone(),
                    node.name.clone(),
                ))));
                let mut ch = vec![attrs];
                ch.extend(g.operands(id).iter().map(|o| class[o]));
                QNode::Op(op.kind(), ch)
            }
        };
        let c = eg.add(enode);
        if let Some(e) = &eg[c].data.error {
            return Err(Error::node(&node.name, node.op.name(), e.clone()));
        }
        class.insert(id, c);
        uses.push((c, g.use_count(id)));
    }
    for (c, n) in uses {
        eg[c].data.uses = n;
    }
    eg.rebuild();
    let roots = Roots {
        graph_name: g.name.clone(),
        frozen: g.frozen().map(str::to_string).collect(),
        inputs: g
            .inputs()
            .iter()
            .map(|&i| (g.node(i).name.clone(), g.node(i).ty.clone()))
            .collect(),
        outputs: g
            .outputs()
            .iter()
            .map(|o| (o.name.clone(), class[&o.node]))
            .collect(),
        updates: g
            .updates()
            .iter()
            .map(|u| (u.param.clone(), class[&u.node]))
            .collect(),
    };
    Ok((eg, roots))
}

/// Extracts the cheapest form of every root of `eg` into a graph.
pub fn from_egraph(eg: &EGraph, roots: &Roots) -> Result<Graph> {
    let ex = Extractor::new(eg);
    let mut g = Graph::new(roots.graph_name.clone());
    let mut built: HashMap<Id, NodeId> = HashMap::new();
    for (name, ty) in &roots.inputs {
        g.add_input(name.clone(), ty.clone())?;
    }
    let root_ids: Vec<Id> = roots
        .outputs
        .iter()
        .chain(&roots.updates)
        .map(|(_, id)| *id)
        .collect();
    for root in root_ids {
        build(eg, &ex, &mut g, &mut built, root)?;
    }
    for (name, id) in &roots.outputs {
        g.add_output(name.clone(), built[&eg.find(*id)]);
    }
    for (param, id) in &roots.updates {
        g.add_update(param.clone(), built[&eg.find(*id)]);
    }
    for name in &roots.frozen {
        // a frozen param the rewrites removed (folded away) stays gone
        if g.find(name).is_some() {
            g.freeze(name)?;
        }
    }
    Ok(g)
}

fn best<'e>(ex: &'e Extractor, id: Id) -> Result<&'e QNode> {
    ex.best(id).map(|(_, n)| n).ok_or_else(|| {
        Error::Rewrite(format!(
            "e-class {id} has no finite form to extract (a rule cycle without a base case)"
        ))
    })
}

/// Builds class `root` and everything it needs, operands first (an explicit stack: graphs
/// can be deep).
fn build(
    eg: &EGraph,
    ex: &Extractor,
    g: &mut Graph,
    built: &mut HashMap<Id, NodeId>,
    root: Id,
) -> Result<()> {
    let mut stack = vec![(eg.find(root), false)];
    while let Some((id, expanded)) = stack.pop() {
        if built.contains_key(&id) {
            continue;
        }
        let node = best(ex, id)?;
        if !expanded {
            stack.push((id, true));
            for &o in node.operands().iter().rev() {
                let o = eg.find(o);
                if !built.contains_key(&o) {
                    stack.push((o, false));
                }
            }
            continue;
        }
        let nid = match node {
            QNode::Value(v) => match v.kind {
                LeafKind::Input => g.find(&v.name).ok_or_else(|| {
                    Error::Rewrite(format!("input `{}` is not an input of the graph", v.name))
                })?,
                LeafKind::Param => g.param(v.name.clone(), v.ty.clone())?,
            },
            QNode::Op(kind, ch) => {
                let leaf = match best(ex, ch[0])? {
                    QNode::Attr(a) => a.clone(),
                    other => {
                        return Err(Error::Rewrite(format!(
                            "the attributes of a {kind} node are `{other}`, not a leaf"
                        )))
                    }
                };
                let op = leaf.op_of_kind(*kind).map_err(|e| Error::Rewrite(e.0))?;
                let operands: Vec<NodeId> = ch[1..].iter().map(|o| built[&eg.find(*o)]).collect();
                let name = g.unique_name(&leaf.name);
                g.add(op, name, &operands)?
            }
            QNode::Attr(a) => {
                return Err(Error::Rewrite(format!(
                    "attribute leaf `{}` stands where a value is expected",
                    a.name
                )))
            }
            QNode::Fn(f, _) => {
                return Err(Error::Rewrite(format!(
                    "attribute function {f} stands where a value is expected"
                )))
            }
        };
        built.insert(id, nid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::text;

    #[test]
    fn round_trip_keeps_names_sharing_and_outputs() {
        let src = r#"model "m"
param @k : f32[4,1,1,2]
%0 = input "a" : f32[1,3,3,2]
%1 = input "unused" : f32[1,2]
%2 = conv2d "c" (%0, @k)
%3 = relu "r" (%2)
%4 = add "sum" (%3, %2)
output "y" = %4
output "z" = %3
"#;
        let g = text::parse(src, "m.qir").unwrap();
        let (eg, roots) = to_egraph(&g, QAnalysis::default()).unwrap();
        // c is used by r and sum, r by sum and an output
        let c = roots.outputs[1].1;
        assert_eq!(eg[c].data.uses, 2);
        let back = from_egraph(&eg, &roots).unwrap();
        assert_eq!(text::print(&back), text::print(&g));
        assert_eq!(back.node_count(), g.node_count());
    }
}
