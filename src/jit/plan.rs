//! Scheduling and memory planning.
//!
//! - [`schedule`]: the order ops are lowered in: the graph's canonical order, except that an
//!   op computing a param's new value waits until every other reader of the param has run,
//!   so the new value can be written over the old one in place.
//! - [`plan`]: where every virtual tensor lives. Params live in the state memory (one
//!   aligned block, laid out once); an update whose value is computed by an elementwise loop
//!   after the param's last other read is stored straight into the param's state (no
//!   per-step copy); other updates are copied back by loops appended at the end. Temporaries
//!   share one arena: each gets the lowest offset free over its lifetime (first write to last
//!   read), largest first. The planner also decides which instructions run on all threads and
//!   gives their reductions per-thread partial buffers.

use super::cg::Loc;
use super::lir::{Access, Inst, Loop, Program, Storage, VtId};
use super::loops::loop_parallel;
use crate::error::{Error, Result};
use crate::ir::op::ModelOp;
use crate::ir::{Graph, NodeId, Op};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Byte alignment of every buffer (a cache line).
const ALIGN: usize = 64;

/// GEMMs below this many flops run on one thread.
const GEMM_PAR_MIN_FLOPS: usize = 1 << 18;

fn align(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

pub struct Plan {
    pub locs: Vec<Loc>,
    /// Per instruction: split over threads.
    pub parallel: Vec<bool>,
    pub arena_bytes: usize,
    pub state_bytes: usize,
    /// Params: name, byte offset in the state memory, shape.
    pub state: Vec<(String, usize, Vec<usize>)>,
    /// Params whose update is written in place.
    pub in_place: Vec<String>,
    /// Params whose update is copied back at the end of the step.
    pub copied: Vec<String>,
}

/// The lowering order of the live non-leaf nodes: a list schedule that prefers the ready op
/// reading the most recently touched value (produced or read), and among those one that
/// re-reads a value over one that reads a fresh result: so a filter gradient runs right after
/// the input gradient that read the same tensor (still in cache), not at the end of the step.
/// Ties go to the graph's canonical order. An op computing a param's new value waits until
/// every other reader of the param has run, so the new value can overwrite the old in place.
pub fn schedule(g: &Graph) -> Vec<NodeId> {
    let canon = g.canonical_order();
    let pos: HashMap<NodeId, usize> = canon.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let live: HashSet<NodeId> = canon
        .iter()
        .copied()
        .filter(|&n| {
            !matches!(
                g.node(n).op,
                Op::Model(ModelOp::Input) | Op::Model(ModelOp::Param)
            )
        })
        .collect();
    // update source -> params whose other readers it waits for
    let mut waits_for: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for u in g.updates() {
        if let Some(p) = g.find(&u.param) {
            if live.contains(&u.node) {
                waits_for.entry(u.node).or_default().push(p);
            }
        }
    }
    let distinct = |v: Vec<NodeId>| -> Vec<NodeId> {
        v.into_iter()
            .filter(|o| live.contains(o))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let mut indeg: HashMap<NodeId, usize> = live
        .iter()
        .map(|&n| (n, distinct(g.operands(n)).len()))
        .collect();
    let blocked = |n: NodeId, done: &HashSet<NodeId>| -> bool {
        waits_for.get(&n).is_some_and(|ps| {
            ps.iter().any(|&p| {
                g.users(p)
                    .iter()
                    .any(|&(r, _)| r != n && live.contains(&r) && !done.contains(&r))
            })
        })
    };
    // when each value was last touched (1-based step), and whether by a read
    let mut touched: HashMap<NodeId, (usize, bool)> = HashMap::new();
    let key = |n: NodeId, touched: &HashMap<NodeId, (usize, bool)>| {
        let best = g
            .operands(n)
            .iter()
            .filter_map(|o| touched.get(o))
            .copied()
            .max()
            .unwrap_or((0, false));
        (Reverse(best), pos[&n])
    };
    let mut ready: Vec<NodeId> = live.iter().copied().filter(|n| indeg[n] == 0).collect();
    let mut done: HashSet<NodeId> = HashSet::new();
    let mut order = Vec::with_capacity(live.len());
    while order.len() < live.len() {
        let pick = |cands: &mut dyn Iterator<Item = (usize, NodeId)>| {
            cands.min_by_key(|&(_, n)| key(n, &touched)).map(|(i, _)| i)
        };
        let free = pick(
            &mut ready
                .iter()
                .copied()
                .enumerate()
                .filter(|&(_, n)| !blocked(n, &done)),
        );
        // only blocked updates left: release one; it will be copied back instead
        let Some(i) = free.or_else(|| pick(&mut ready.iter().copied().enumerate())) else {
            break;
        };
        let next = ready.swap_remove(i);
        order.push(next);
        done.insert(next);
        let step = order.len();
        for o in g.operands(next) {
            touched.insert(o, (step, true));
        }
        touched.insert(next, (step, false));
        for u in distinct(g.users(next).into_iter().map(|(u, _)| u).collect()) {
            let d = indeg.get_mut(&u).expect("live user");
            *d -= 1;
            if *d == 0 {
                ready.push(u);
            }
        }
    }
    order
}

/// Plans memory and threading; may append copy-back loops to the program.
pub fn plan(prog: &mut Program, threads: usize) -> Result<Plan> {
    let nvt = prog.vts.len();
    let mut locs = vec![Loc::None; nvt];
    // inputs and params
    let mut state = Vec::new();
    let mut state_off = 0usize;
    let mut param_vt: HashMap<String, VtId> = HashMap::new();
    for (name, vt, shape) in &prog.params {
        locs[*vt] = Loc::State(state_off);
        state.push((name.clone(), state_off, shape.clone()));
        param_vt.insert(name.clone(), *vt);
        state_off += align(prog.vts[*vt].numel * 4);
    }
    for (vt, v) in prog.vts.iter().enumerate() {
        match v.storage {
            Storage::Input(slot) => locs[vt] = Loc::Input(slot),
            Storage::Zeros => {
                locs[vt] = Loc::State(state_off);
                state_off += align(v.numel * 4);
            }
            _ => {}
        }
    }

    // ---- updates: in place or copied back -------------------------------------------
    let mut writers: HashMap<VtId, Vec<usize>> = HashMap::new();
    let mut readers: HashMap<VtId, Vec<usize>> = HashMap::new();
    for (i, inst) in prog.insts.iter().enumerate() {
        for w in inst.writes() {
            writers.entry(w).or_default().push(i);
        }
        for r in inst.reads() {
            readers.entry(r).or_default().push(i);
        }
    }
    let outputs: HashSet<VtId> = prog.outputs.iter().map(|o| o.1).collect();
    // params whose old value must survive the whole step
    let mut keep_old: HashSet<VtId> = outputs.clone();
    for (_, src) in &prog.updates {
        if matches!(prog.vts[*src].storage, Storage::Param(_)) {
            keep_old.insert(*src);
        }
    }
    let mut seen_params = HashSet::new();
    let mut placed_sources = HashSet::new();
    let mut in_place = Vec::new();
    let mut copies: Vec<(String, VtId, VtId)> = Vec::new();
    for (name, src) in prog.updates.clone() {
        let pv = *param_vt.get(&name).ok_or_else(|| {
            Error::Jit(format!(
                "update of `{name}`, which is not a param of the graph"
            ))
        })?;
        if !seen_params.insert(pv) {
            return Err(Error::Jit(format!("param `{name}` is updated twice")));
        }
        let ok = prog.vts[src].storage == Storage::Temp
            && prog.vts[src].numel == prog.vts[pv].numel
            && !keep_old.contains(&pv)
            && !placed_sources.contains(&src)
            && in_place_ok(prog, &writers, &readers, pv, src);
        if ok {
            let Loc::State(off) = locs[pv] else {
                unreachable!()
            };
            locs[src] = Loc::State(off);
            placed_sources.insert(src);
            in_place.push(name);
        } else {
            copies.push((name, pv, src));
        }
    }
    let mut copied = Vec::new();
    for (name, pv, src) in copies {
        let n = prog.vts[pv].numel;
        let mut l = Loop::new(format!("{name}.writeback"), &[n]);
        let v = l.leaf(Access::identity(src, &[n]));
        l.store(v, Access::identity(pv, &[n]));
        prog.insts.push(Inst::Loop(l));
        copied.push(name);
    }

    // ---- threading and partials -----------------------------------------------------
    let mut parallel = Vec::with_capacity(prog.insts.len());
    let mut new_vts = Vec::new();
    let mut next_vt = prog.vts.len();
    for inst in &mut prog.insts {
        let par = match inst {
            Inst::Loop(l) => {
                let par = loop_parallel(l, threads);
                if par {
                    for r in &mut l.reds {
                        let n = prog.vts[r.out.vt].numel;
                        new_vts.push((format!("{}.partial", l.name), threads * n));
                        r.partial = Some(next_vt);
                        next_vt += 1;
                    }
                }
                par
            }
            Inst::Gemm(g) => {
                let par = threads > 1 && g.flops() >= GEMM_PAR_MIN_FLOPS;
                if par && g.split == super::lir::GemmSplit::K {
                    new_vts.push((format!("{}.partial", g.name), threads * g.m * g.n));
                    g.partial = Some(next_vt);
                    next_vt += 1;
                }
                par
            }
            Inst::Kernel(k) => k.parallel(threads),
        };
        parallel.push(par);
    }
    for (name, n) in new_vts {
        prog.vt(name, n);
    }
    locs.resize(prog.vts.len(), Loc::None);

    // ---- lifetimes and arena placement ------------------------------------------------
    let end = prog.insts.len();
    let mut first = vec![usize::MAX; prog.vts.len()];
    let mut last = vec![0usize; prog.vts.len()];
    let mut first_read = vec![usize::MAX; prog.vts.len()];
    for (i, inst) in prog.insts.iter().enumerate() {
        for w in inst.writes().into_iter().chain(inst.scratch()) {
            first[w] = first[w].min(i);
            last[w] = last[w].max(i);
        }
        for r in inst.reads() {
            last[r] = last[r].max(i);
            first_read[r] = first_read[r].min(i);
        }
    }
    for o in &outputs {
        last[*o] = end;
    }
    let mut intervals: Vec<(usize, usize, usize, VtId)> = Vec::new(); // bytes, first, last, vt
    for vt in 0..prog.vts.len() {
        if prog.vts[vt].storage != Storage::Temp || locs[vt] != Loc::None {
            continue;
        }
        if first[vt] == usize::MAX {
            if first_read[vt] != usize::MAX {
                return Err(Error::Jit(format!(
                    "internal: `{}` is read by `{}` but never written",
                    prog.vts[vt].name,
                    prog.insts[first_read[vt]].name()
                )));
            }
            continue; // never used
        }
        if first_read[vt] < first[vt] {
            return Err(Error::Jit(format!(
                "internal: `{}` is read by `{}` before it is written",
                prog.vts[vt].name,
                prog.insts[first_read[vt]].name()
            )));
        }
        intervals.push((align(prog.vts[vt].numel * 4), first[vt], last[vt], vt));
    }
    intervals.sort_by_key(|&(bytes, first, _, vt)| (Reverse(bytes), first, vt));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // offset, bytes, first, last
    let mut arena_bytes = 0;
    for (bytes, f, l, vt) in intervals {
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|p| p.2 <= l && f <= p.3)
            .map(|p| (p.0, p.0 + p.1))
            .collect();
        conflicts.sort();
        let mut off = 0;
        for (s, e) in conflicts {
            if off + bytes <= s {
                break;
            }
            off = off.max(e);
        }
        placed.push((off, bytes, f, l));
        locs[vt] = Loc::Arena(off);
        arena_bytes = arena_bytes.max(off + bytes);
    }
    Ok(Plan {
        locs,
        parallel,
        arena_bytes,
        state_bytes: state_off,
        state,
        in_place,
        copied,
    })
}

/// Whether update value `src` can be stored over param `pv`: a single elementwise loop
/// writes it at the loop's own index, and every read of the param happens before that
/// loop or in it at the same index.
fn in_place_ok(
    prog: &Program,
    writers: &HashMap<VtId, Vec<usize>>,
    readers: &HashMap<VtId, Vec<usize>>,
    pv: VtId,
    src: VtId,
) -> bool {
    let Some(w) = writers.get(&src) else {
        return false;
    };
    if w.len() != 1 || writers.contains_key(&pv) {
        return false;
    }
    let w = w[0];
    let Inst::Loop(l) = &prog.insts[w] else {
        return false;
    };
    let n: usize = l.numel();
    if n != prog.vts[src].numel {
        return false;
    }
    let id = l.identity(src);
    let stores: Vec<_> = l.stores.iter().filter(|(_, s)| s.vt == src).collect();
    if stores.len() != 1 || stores[0].1 != id {
        return false;
    }
    // nobody but this loop reads `src` before the loop (it cannot: SSA), and reads of the
    // param in the loop are at the same index
    let pid = l.identity(pv);
    let same_index = l.leaves.iter().filter(|a| a.vt == pv).all(|a| *a == pid);
    if !same_index {
        return false;
    }
    readers
        .get(&pv)
        .map(|rs| rs.iter().all(|&r| r <= w))
        .unwrap_or(true)
}
