//! Loop fusion and dead-store elimination on LIR.
//!
//! 0. **Broadcast reads.** A loop that reads another loop's elementwise result broadcast
//!    along some dimensions (BatchNorm's statistics shift every channel by the batch's
//!    first value, `y[0, 0, 0, c]`) recomputes those few values from the producer's
//!    inputs at the broadcast index instead. Such a read would otherwise keep the result in
//!    memory and keep the two loops apart (another thread may not have written that element
//!    yet), so a convolution's bias add, its BatchNorm statistics and the normalization
//!    become one pass over the raw convolution output.
//! 1. **Rematerialization.** A loop that reads, at its own index, a value another loop
//!    computed elementwise over the same space recomputes it instead, when that adds no
//!    full-size load (the producer's other inputs are per-channel vectors, scalars, or tensors
//!    the consumer reads anyway). BatchNorm-normalized values, ReLU6 outputs and fake-quant
//!    masks are then computed where they are used and never written to memory.
//! 2. **Merging.** A loop joins an earlier loop over the same space (the nearest one it can
//!    move up to: nothing in between writes what it reads) when every value it reads from
//!    that loop is read at the index it was stored (then it comes from a register) and none
//!    of them is a reduction of that loop (complete only after the loop). So an activation and
//!    its observers, or the straight-through masks and the BatchNorm gradient sums, are one
//!    pass.
//! 3. **Dead stores.** A store whose value nobody reads any more is dropped, and
//!    instructions whose results are all unused are removed.

use super::lir::{Access, ENode, Inst, Loop, NodeIx, Program, VtId};
use std::collections::{HashMap, HashSet};

/// Loops larger than this (in expression nodes) are not grown further: register pressure.
const MAX_NODES: usize = 160;

/// How far back (in instructions) a loop may move to join another.
const MERGE_WINDOW: usize = 12;

pub fn fuse(prog: &mut Program) {
    inline_broadcast_reads(prog);
    rematerialize(prog);
    eliminate_dead(prog);
    merge_loops(prog);
    eliminate_dead(prog);
}

// ---- rematerialization ---------------------------------------------------------------------

/// Children of a node.
fn children(n: &ENode) -> Vec<NodeIx> {
    match *n {
        ENode::Leaf(_) | ENode::Const(_) => vec![],
        ENode::Un(_, a) => vec![a],
        ENode::Bin(_, a, b) | ENode::Cmp(_, a, b) | ENode::And(a, b) => vec![a, b],
        ENode::Fma(a, b, c) | ENode::Select(a, b, c) => vec![a, b, c],
        ENode::DropoutKeep { step, .. } => vec![step],
    }
}

/// A node with its children renamed by `f`.
fn remap(n: &ENode, f: impl Fn(NodeIx) -> NodeIx) -> ENode {
    match *n {
        ENode::Leaf(l) => ENode::Leaf(l),
        ENode::Const(c) => ENode::Const(c),
        ENode::Un(op, a) => ENode::Un(op, f(a)),
        ENode::Bin(op, a, b) => ENode::Bin(op, f(a), f(b)),
        ENode::Fma(a, b, c) => ENode::Fma(f(a), f(b), f(c)),
        ENode::Cmp(op, a, b) => ENode::Cmp(op, f(a), f(b)),
        ENode::And(a, b) => ENode::And(f(a), f(b)),
        ENode::Select(a, b, c) => ENode::Select(f(a), f(b), f(c)),
        ENode::DropoutKeep { step, seed, rate } => ENode::DropoutKeep {
            step: f(step),
            seed,
            rate,
        },
    }
}

/// Nodes `root` depends on, in index (topological) order.
fn subtree(l: &Loop, root: NodeIx) -> Vec<NodeIx> {
    let mut need = vec![false; l.nodes.len()];
    need[root as usize] = true;
    for i in (0..=root as usize).rev() {
        if need[i] {
            for c in children(&l.nodes[i]) {
                need[c as usize] = true;
            }
        }
    }
    (0..=root).filter(|&i| need[i as usize]).collect()
}

/// A leaf is "big" when it streams a tensor of about the loop's size (not a per-channel
/// vector or a scalar): loading it costs memory bandwidth.
fn is_big(l: &Loop, a: &Access) -> bool {
    a.strides
        .iter()
        .zip(&l.shape)
        .filter(|(s, _)| **s != 0)
        .map(|(_, d)| d)
        .product::<usize>()
        * 8
        >= l.numel()
}

/// Values stored once, by a loop at its own index: vt -> (instruction, stored node).
fn producers(prog: &Program) -> HashMap<VtId, (usize, NodeIx)> {
    let mut writers: HashMap<VtId, usize> = HashMap::new();
    for inst in &prog.insts {
        for w in inst.writes() {
            *writers.entry(w).or_default() += 1;
        }
    }
    let mut producer = HashMap::new();
    for (i, inst) in prog.insts.iter().enumerate() {
        if let Inst::Loop(l) = inst {
            for (n, a) in &l.stores {
                if writers[&a.vt] == 1 && *a == l.identity(a.vt) {
                    producer.insert(a.vt, (i, *n));
                }
            }
        }
    }
    producer
}

/// `a` reads the identity of its vt with some dimensions broadcast (stride 0): which ones,
/// if so.
fn broadcast_dims(l: &Loop, a: &Access) -> Option<Vec<bool>> {
    let id = l.identity(a.vt);
    if a.offset != id.offset || *a == id {
        return None;
    }
    let zeroed: Vec<bool> = a.strides.iter().map(|&s| s == 0).collect();
    let fits = a
        .strides
        .iter()
        .zip(&id.strides)
        .all(|(&s, &i)| s == 0 || s == i);
    fits.then_some(zeroed)
}

/// `a` with the dimensions in `zeroed` broadcast.
fn broadcast(a: &Access, zeroed: &[bool]) -> Access {
    let strides = a
        .strides
        .iter()
        .zip(zeroed)
        .map(|(&s, &z)| if z { 0 } else { s })
        .collect();
    Access {
        strides,
        ..a.clone()
    }
}

fn inline_broadcast_reads(prog: &mut Program) {
    let mut producer = producers(prog);
    for c in 0..prog.insts.len() {
        while let Inst::Loop(cl) = &prog.insts[c] {
            let mut pick = None;
            for (li, a) in cl.leaves.iter().enumerate() {
                let (Some(&(p, root)), Some(zeroed)) = (producer.get(&a.vt), broadcast_dims(cl, a))
                else {
                    continue;
                };
                let Inst::Loop(pl) = &prog.insts[p] else {
                    continue;
                };
                if p >= c || pl.shape != cl.shape {
                    continue;
                }
                let sub = subtree(pl, root);
                if sub.len() > 40 || cl.nodes.len() + sub.len() > MAX_NODES {
                    continue;
                }
                // the producer's value at the broadcast index: its leaves broadcast the same
                // way (an element's flat index, which dropout hashes, would differ)
                let elementwise = sub.iter().all(|&i| match pl.nodes[i as usize] {
                    ENode::DropoutKeep { .. } => false,
                    ENode::Leaf(pli) => !is_big(pl, &broadcast(&pl.leaves[pli as usize], &zeroed)),
                    _ => true,
                });
                if elementwise {
                    pick = Some((li, p, root, zeroed));
                    break;
                }
            }
            let Some((li, p, root, zeroed)) = pick else {
                break;
            };
            inline_into(prog, &mut producer, (c, li), (p, root), |a| {
                broadcast(a, &zeroed)
            });
        }
    }
}

/// Inlines node `root` of loop `p` for leaf `li` of loop `c` (`p < c`, both loops), the
/// producer's leaves read through `at`, and renumbers `c`'s stores in `producer`.
fn inline_into(
    prog: &mut Program,
    producer: &mut HashMap<VtId, (usize, NodeIx)>,
    (c, li): (usize, usize),
    (p, root): (usize, NodeIx),
    at: impl Fn(&Access) -> Access,
) {
    let (before, from_c) = prog.insts.split_at_mut(c);
    let (Inst::Loop(pl), Inst::Loop(cl)) = (&before[p], &mut from_c[0]) else {
        return;
    };
    inline_leaf(cl, li, pl, root, at);
    // the rebuilt loop's own stores have new node numbers
    for (n, a) in &cl.stores {
        if let Some(e) = producer.get_mut(&a.vt) {
            if e.0 == c {
                e.1 = *n;
            }
        }
    }
}

fn rematerialize(prog: &mut Program) {
    let mut producer = producers(prog);
    // Values some instruction must read from memory (a GEMM or kernel, an access at another
    // index or over another iteration space) stay stored: recomputing them elsewhere saves
    // nothing.
    let mut pinned: HashSet<VtId> = prog.outputs.iter().map(|o| o.1).collect();
    for inst in &prog.insts {
        match inst {
            Inst::Loop(l) => {
                for a in &l.leaves {
                    let same_space = producer.get(&a.vt).is_some_and(
                        |&(p, _)| matches!(&prog.insts[p], Inst::Loop(pl) if pl.shape == l.shape),
                    );
                    if *a != l.identity(a.vt) || !same_space {
                        pinned.insert(a.vt);
                    }
                }
            }
            other => pinned.extend(other.reads()),
        }
    }
    for c in 0..prog.insts.len() {
        while let Inst::Loop(cl) = &prog.insts[c] {
            // the first leaf worth recomputing
            let mut pick = None;
            for (li, a) in cl.leaves.iter().enumerate() {
                let Some(&(p, root)) = producer.get(&a.vt) else {
                    continue;
                };
                if p >= c || pinned.contains(&a.vt) || *a != cl.identity(a.vt) {
                    continue;
                }
                let Inst::Loop(pl) = &prog.insts[p] else {
                    continue;
                };
                if pl.shape != cl.shape {
                    continue;
                }
                let sub = subtree(pl, root);
                if sub.len() > 40 || cl.nodes.len() + sub.len() > MAX_NODES {
                    continue;
                }
                let new_big = sub
                    .iter()
                    .filter_map(|&i| match pl.nodes[i as usize] {
                        ENode::Leaf(pli) => Some(&pl.leaves[pli as usize]),
                        _ => None,
                    })
                    .filter(|pa| is_big(pl, pa) && !cl.leaves.contains(pa))
                    .count();
                if new_big <= 1 {
                    pick = Some((li, p, root));
                    break;
                }
            }
            let Some((li, p, root)) = pick else {
                break;
            };
            inline_into(prog, &mut producer, (c, li), (p, root), Access::clone);
        }
    }
}

/// Replaces every use of leaf `li` of `c` by the expression of node `root` of `p`, the
/// producer's leaves read through `at` (the identity, or a broadcast).
fn inline_leaf(c: &mut Loop, li: usize, p: &Loop, root: NodeIx, at: impl Fn(&Access) -> Access) {
    let old = std::mem::replace(c, Loop::new(c.name.clone(), &c.shape.clone()));
    // the producer's expression, rebuilt in `c`
    let mut pmap: HashMap<NodeIx, NodeIx> = HashMap::new();
    for i in subtree(p, root) {
        let n = &p.nodes[i as usize];
        let new = match n {
            ENode::Leaf(pli) => c.leaf(at(&p.leaves[*pli as usize])),
            other => {
                let m = remap(other, |j| pmap[&j]);
                c.node(m)
            }
        };
        pmap.insert(i, new);
    }
    let value = pmap[&root];
    let mut map: Vec<NodeIx> = Vec::with_capacity(old.nodes.len());
    for n in &old.nodes {
        let new = match n {
            ENode::Leaf(l) if *l as usize == li => value,
            ENode::Leaf(l) => c.leaf(old.leaves[*l as usize].clone()),
            other => {
                let m = remap(other, |j| map[j as usize]);
                c.node(m)
            }
        };
        map.push(new);
    }
    for (n, a) in old.stores {
        c.store(map[n as usize], a);
    }
    for r in old.reds {
        let mut r = r;
        r.node = map[r.node as usize];
        c.reds.push(r);
    }
    prune(c);
}

// ---- merging ---------------------------------------------------------------------------------

fn merge_loops(prog: &mut Program) {
    // A loop computing a param's new value may later be given the param's memory (an
    // in-place update), so for moving it counts as writing the param too.
    let param_vt: HashMap<&str, VtId> = prog
        .params
        .iter()
        .map(|(n, vt, _)| (n.as_str(), *vt))
        .collect();
    let updates: HashMap<VtId, VtId> = prog
        .updates
        .iter()
        .filter_map(|(p, src)| param_vt.get(p.as_str()).map(|&pv| (*src, pv)))
        .collect();
    let insts = std::mem::take(&mut prog.insts);
    let mut out: Vec<Inst> = Vec::with_capacity(insts.len());
    'next: for inst in insts {
        let Inst::Loop(b) = inst else {
            out.push(inst);
            continue;
        };
        let reads: HashSet<VtId> = b.reads().into_iter().collect();
        let mut writes: HashSet<VtId> = b.writes().into_iter().collect();
        let aliased: Vec<VtId> = writes
            .iter()
            .filter_map(|w| updates.get(w).copied())
            .collect();
        writes.extend(aliased);
        let lo = out.len().saturating_sub(MERGE_WINDOW);
        for j in (lo..out.len()).rev() {
            if let Inst::Loop(a) = &out[j] {
                if can_merge(a, &b) {
                    let Inst::Loop(a) = &mut out[j] else {
                        unreachable!()
                    };
                    merge(a, b);
                    continue 'next;
                }
            }
            // `b` cannot move above an instruction it depends on or interferes with
            let iw = out[j].writes();
            let ir = out[j].reads();
            if iw.iter().any(|w| reads.contains(w) || writes.contains(w))
                || ir.iter().any(|r| writes.contains(r))
            {
                break;
            }
        }
        out.push(Inst::Loop(b));
    }
    prog.insts = out;
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
        let new = match n {
            ENode::Leaf(li) => {
                let acc = &b.leaves[*li as usize];
                match a.stores.iter().find(|(_, s)| s == acc) {
                    Some((node, _)) => *node,
                    None => a.leaf(acc.clone()),
                }
            }
            other => {
                let m = remap(other, |j| map[j as usize]);
                a.node(m)
            }
        };
        map.push(new);
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

// ---- dead stores -------------------------------------------------------------------------------

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
        if live[i] {
            for c in children(&l.nodes[i]) {
                live[c as usize] = true;
            }
        }
    }
    let mut remap_ix = vec![u32::MAX; l.nodes.len()];
    let mut leaf_remap = vec![u32::MAX; l.leaves.len()];
    let mut nodes = Vec::new();
    let mut leaves = Vec::new();
    for (i, n) in l.nodes.iter().enumerate() {
        if !live[i] {
            continue;
        }
        let new = match *n {
            ENode::Leaf(li) => {
                if leaf_remap[li as usize] == u32::MAX {
                    leaf_remap[li as usize] = leaves.len() as u32;
                    leaves.push(l.leaves[li as usize].clone());
                }
                ENode::Leaf(leaf_remap[li as usize])
            }
            ref other => remap(other, |j| remap_ix[j as usize]),
        };
        remap_ix[i] = nodes.len() as u32;
        nodes.push(new);
    }
    for (n, _) in &mut l.stores {
        *n = remap_ix[*n as usize];
    }
    for r in &mut l.reds {
        r.node = remap_ix[r.node as usize];
    }
    l.nodes = nodes;
    l.leaves = leaves;
    l.rehash();
}
