//! Loop fusion and dead-store elimination on LIR.
//!
//! Two consecutive [`Loop`]s over the same iteration space become one when every value the
//! second reads from the first is read at the same index it was stored (it is then taken
//! from a register) and none of them is a reduction of the first (which is complete only
//! after the loop). So `relu(conv)`, its observer's min/max and the straight-through mask of
//! the backward pass each become single passes over memory.
//!
//! Afterwards a store whose value nobody reads (every reader was fused) is dropped, and
//! instructions whose results are all unused are removed.

use super::lir::{ENode, Inst, Loop, NodeIx, Program, VtId};
use std::collections::HashSet;

/// Loops larger than this (in expression nodes) are not grown further: register pressure.
const MAX_NODES: usize = 160;

pub fn fuse(prog: &mut Program) {
    let insts = std::mem::take(&mut prog.insts);
    let mut out: Vec<Inst> = Vec::with_capacity(insts.len());
    for inst in insts {
        if let Inst::Loop(b) = inst {
            if let Some(Inst::Loop(a)) = out.last_mut() {
                if can_merge(a, &b) {
                    merge(a, b);
                    continue;
                }
            }
            out.push(Inst::Loop(b));
        } else {
            out.push(inst);
        }
    }
    prog.insts = out;
    eliminate_dead(prog);
}

fn can_merge(a: &Loop, b: &Loop) -> bool {
    if a.shape != b.shape || a.nodes.len() + b.nodes.len() > MAX_NODES {
        return false;
    }
    let red_outs: HashSet<VtId> = a.reds.iter().map(|r| r.out.vt).collect();
    for leaf in &b.leaves {
        if red_outs.contains(&leaf.vt) {
            return false;
        }
        let written: Vec<_> = a.stores.iter().filter(|(_, s)| s.vt == leaf.vt).collect();
        if !written.is_empty() && !written.iter().any(|(_, s)| s == leaf) {
            // stored by `a` at other indices: another thread may not have written it yet
            return false;
        }
        if written.len() > 1 {
            return false;
        }
    }
    // `b` must not overwrite what `a` reads at other indices
    let b_writes: HashSet<VtId> = b.writes().into_iter().collect();
    if a.leaves.iter().any(|l| b_writes.contains(&l.vt)) {
        return false;
    }
    true
}

fn merge(a: &mut Loop, b: Loop) {
    let mut map: Vec<NodeIx> = Vec::with_capacity(b.nodes.len());
    for n in &b.nodes {
        let m = |i: NodeIx| map[i as usize];
        let new = match *n {
            ENode::Leaf(li) => {
                let acc = &b.leaves[li as usize];
                if let Some((node, _)) = a.stores.iter().find(|(_, s)| s == acc) {
                    map.push(*node);
                    continue;
                }
                map.push(a.leaf(acc.clone()));
                continue;
            }
            ENode::Const(c) => ENode::Const(c),
            ENode::Un(op, x) => ENode::Un(op, m(x)),
            ENode::Bin(op, x, y) => ENode::Bin(op, m(x), m(y)),
            ENode::Fma(x, y, z) => ENode::Fma(m(x), m(y), m(z)),
            ENode::Cmp(op, x, y) => ENode::Cmp(op, m(x), m(y)),
            ENode::And(x, y) => ENode::And(m(x), m(y)),
            ENode::Select(x, y, z) => ENode::Select(m(x), m(y), m(z)),
            ENode::DropoutKeep { step, seed, rate } => ENode::DropoutKeep {
                step: m(step),
                seed,
                rate,
            },
        };
        map.push(a.node(new));
    }
    for (n, s) in b.stores {
        a.stores.push((map[n as usize], s));
    }
    for mut r in b.reds {
        r.node = map[r.node as usize];
        a.reds.push(r);
    }
    a.name = format!("{}+{}", a.name, b.name);
}

/// Drops stores and instructions whose results nobody reads, until nothing changes.
pub fn eliminate_dead(prog: &mut Program) {
    let protected: HashSet<VtId> = prog
        .outputs
        .iter()
        .map(|o| o.1)
        .chain(prog.updates.iter().map(|u| u.1))
        .collect();
    loop {
        let mut read: HashSet<VtId> = protected.clone();
        for inst in &prog.insts {
            read.extend(inst.reads());
        }
        let mut changed = false;
        for inst in &mut prog.insts {
            if let Inst::Loop(l) = inst {
                let before = l.stores.len() + l.reds.len();
                l.stores.retain(|(_, s)| read.contains(&s.vt));
                l.reds.retain(|r| read.contains(&r.out.vt));
                if l.stores.len() + l.reds.len() != before {
                    prune(l);
                    changed = true;
                }
            }
        }
        let before = prog.insts.len();
        prog.insts.retain(|inst| match inst {
            Inst::Loop(l) => !l.stores.is_empty() || !l.reds.is_empty(),
            other => other.writes().iter().any(|w| read.contains(w)),
        });
        changed |= prog.insts.len() != before;
        if !changed {
            break;
        }
    }
}

/// Removes nodes and leaves no store or reduction depends on.
fn prune(l: &mut Loop) {
    let mut live = vec![false; l.nodes.len()];
    for (n, _) in &l.stores {
        live[*n as usize] = true;
    }
    for r in &l.reds {
        live[r.node as usize] = true;
    }
    for i in (0..l.nodes.len()).rev() {
        if !live[i] {
            continue;
        }
        let mut mark = |j: NodeIx| live[j as usize] = true;
        match l.nodes[i] {
            ENode::Leaf(_) | ENode::Const(_) => {}
            ENode::Un(_, a) => mark(a),
            ENode::Bin(_, a, b) | ENode::Cmp(_, a, b) | ENode::And(a, b) => {
                mark(a);
                mark(b);
            }
            ENode::Fma(a, b, c) | ENode::Select(a, b, c) => {
                mark(a);
                mark(b);
                mark(c);
            }
            ENode::DropoutKeep { step, .. } => mark(step),
        }
    }
    let mut remap = vec![u32::MAX; l.nodes.len()];
    let mut leaf_remap = vec![u32::MAX; l.leaves.len()];
    let mut nodes = Vec::new();
    let mut leaves = Vec::new();
    for (i, n) in l.nodes.iter().enumerate() {
        if !live[i] {
            continue;
        }
        let m = |j: NodeIx| remap[j as usize];
        let new = match *n {
            ENode::Leaf(li) => {
                if leaf_remap[li as usize] == u32::MAX {
                    leaf_remap[li as usize] = leaves.len() as u32;
                    leaves.push(l.leaves[li as usize].clone());
                }
                ENode::Leaf(leaf_remap[li as usize])
            }
            ENode::Const(c) => ENode::Const(c),
            ENode::Un(op, a) => ENode::Un(op, m(a)),
            ENode::Bin(op, a, b) => ENode::Bin(op, m(a), m(b)),
            ENode::Fma(a, b, c) => ENode::Fma(m(a), m(b), m(c)),
            ENode::Cmp(op, a, b) => ENode::Cmp(op, m(a), m(b)),
            ENode::And(a, b) => ENode::And(m(a), m(b)),
            ENode::Select(a, b, c) => ENode::Select(m(a), m(b), m(c)),
            ENode::DropoutKeep { step, seed, rate } => ENode::DropoutKeep {
                step: m(step),
                seed,
                rate,
            },
        };
        remap[i] = nodes.len() as u32;
        nodes.push(new);
    }
    for (n, _) in &mut l.stores {
        *n = remap[*n as usize];
    }
    for r in &mut l.reds {
        r.node = remap[r.node as usize];
    }
    l.nodes = nodes;
    l.leaves = leaves;
    l.rehash();
}
