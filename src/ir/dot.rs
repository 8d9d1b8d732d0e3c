//! Graphviz DOT output: one box per op with its name, attributes and type; params as
//! ellipses; fake-quant nodes highlighted with their bits, axis and range source.

use super::graph::Graph;
use super::op::Op;
use crate::ir::op::{ModelOp, PassOp};
use std::fmt::Write as _;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders `g` as a DOT digraph (nodes in canonical order, so the output is stable).
pub fn to_dot(g: &Graph) -> String {
    let order = g.canonical_order();
    let index: std::collections::HashMap<_, _> =
        order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=10];");
    for &id in &order {
        let node = g.node(id);
        let i = index[&id];
        let (shape, style) = match &node.op {
            Op::Model(ModelOp::Param) => ("ellipse", "color=gray50, fontcolor=gray30"),
            Op::Model(ModelOp::Input) => ("invhouse", "style=filled, fillcolor=\"#dde8f8\""),
            Op::Model(ModelOp::FakeQuant(_)) | Op::Pass(PassOp::Quant(_)) => {
                ("box", "style=\"filled,rounded\", fillcolor=\"#fde9c8\"")
            }
            _ => ("box", "style=rounded"),
        };
        let mut label = if node.op == Op::Model(ModelOp::Param) {
            format!("@{}\\n{}", escape(&node.name), node.ty)
        } else {
            format!("{}\\n\\\"{}\\\"", node.op.name(), escape(&node.name))
        };
        for (k, v) in node.op.attrs() {
            let _ = write!(label, "\\n{k}={}", escape(&v.to_string()));
        }
        if node.op != Op::Model(ModelOp::Param) {
            let _ = write!(label, "\\n{}", node.ty);
        }
        let _ = writeln!(out, "  n{i} [shape={shape}, {style}, label=\"{label}\"];");
    }
    for &id in &order {
        for (k, o) in g.operands(id).into_iter().enumerate() {
            let style = if g.node(o).op == Op::Model(ModelOp::Param) {
                ", color=gray60"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  n{} -> n{} [label=\"{k}\", fontsize=8{style}];",
                index[&o], index[&id]
            );
        }
    }
    for (k, o) in g.outputs().iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{k} [shape=house, label=\"{}\"];",
            escape(&o.name)
        );
        let _ = writeln!(out, "  n{} -> out{k};", index[&o.node]);
    }
    out.push_str("}\n");
    out
}
