//! Code generation for [`Loop`]s: a loop nest over the (coalesced) iteration space whose
//! innermost dimension runs 4 lanes at a time (unrolled), then one vector at a time, then a
//! scalar tail. Leaves invariant along the inner dimension are loaded once per row and
//! splatted; reductions accumulate in registers when the innermost dimension is reduced and
//! in memory otherwise, into per-thread partials that thread 0 combines after a barrier.

use super::cg::{Cg, LANES};
use super::lir::{Access, BinOp, CmpOp, ENode, Loop, RedKind, UnOp};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Vectors per iteration of the main inner loop.
const UNROLL: usize = 2;

/// Loops smaller than this run on thread 0 alone (a barrier costs more than the work).
pub const PAR_MIN_ELEMS: usize = 8192;

/// The iteration space after merging dimensions that every access walks contiguously.
pub struct Coalesced {
    pub dims: Vec<usize>,
    /// Per access (leaves, stores, red outs, then the flat-index access), per dim.
    pub strides: Vec<Vec<isize>>,
}

/// All accesses of a loop, in the order [`Coalesced::strides`] uses.
fn accesses(l: &Loop) -> Vec<Access> {
    let mut a: Vec<Access> = l.leaves.clone();
    a.extend(l.stores.iter().map(|(_, s)| s.clone()));
    a.extend(l.reds.iter().map(|r| r.out.clone()));
    // the row-major flat index (dropout hashes it)
    a.push(Access::identity(usize::MAX, &l.shape));
    a
}

pub fn coalesce(l: &Loop) -> Coalesced {
    let acc = accesses(l);
    let mut dims: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<isize>> = vec![Vec::new(); acc.len()];
    for d in 0..l.shape.len() {
        if l.shape[d] == 1 {
            continue;
        }
        let can_merge = !dims.is_empty()
            && acc.iter().enumerate().all(|(ai, a)| {
                let prev = *strides[ai].last().unwrap();
                prev == a.strides[d] * l.shape[d] as isize
            });
        if can_merge {
            let last = dims.len() - 1;
            dims[last] *= l.shape[d];
            for (ai, a) in acc.iter().enumerate() {
                *strides[ai].last_mut().unwrap() = a.strides[d];
            }
        } else {
            dims.push(l.shape[d]);
            for (ai, a) in acc.iter().enumerate() {
                strides[ai].push(a.strides[d]);
            }
        }
    }
    if dims.is_empty() {
        dims.push(1);
        for s in &mut strides {
            s.push(0);
        }
    }
    Coalesced { dims, strides }
}

/// Whether the loop is split over threads (the planner and the emitter must agree).
pub fn loop_parallel(l: &Loop, threads: usize) -> bool {
    if threads <= 1 || l.numel() < PAR_MIN_ELEMS {
        return false;
    }
    let c = coalesce(l);
    if c.dims.len() == 1 {
        true
    } else {
        c.dims[0] >= threads
    }
}

fn red_identity(k: RedKind) -> f32 {
    match k {
        RedKind::Sum => 0.0,
        RedKind::Min => f32::INFINITY,
        RedKind::Max => f32::NEG_INFINITY,
    }
}

fn combine(cg: &mut Cg, k: RedKind, a: Value, b: Value) -> Value {
    match k {
        RedKind::Sum => cg.fadd(a, b),
        RedKind::Min => cg.fmin(a, b),
        RedKind::Max => cg.fmax(a, b),
    }
}

struct Emitter<'l> {
    l: &'l Loop,
    c: Coalesced,
    live: Vec<bool>,
    n_leaves: usize,
    n_stores: usize,
    flat_ix: usize,
    /// Base pointers of every access (index into `c.strides`); red outs point at this
    /// thread's target (partial or output).
    base: Vec<Value>,
    needs_flat: bool,
}

/// Emits one loop. `par`: split over threads (else thread 0 runs it).
pub fn emit_loop(cg: &mut Cg, l: &Loop, par: bool) {
    if l.numel() == 0 {
        return;
    }
    if par {
        emit_body(cg, l, true);
    } else {
        cg.on_thread0(|cg| emit_body(cg, l, false));
    }
}

fn emit_body(cg: &mut Cg, l: &Loop, par: bool) {
    let mut e = Emitter::prepare(cg, l, coalesce(l), par);
    let offs: Vec<Value> = (0..e.c.strides.len()).map(|_| cg.iconst(0)).collect();
    e.nest(cg, 0, &offs, par);
    if l.reds.is_empty() {
        return;
    }
    if par {
        cg.barrier();
        cg.on_thread0(|cg| finalize_partials(cg, l));
    } else {
        for r in &l.reds {
            if r.scale != 1.0 {
                let numel = red_numel(cg, r.out.vt, l);
                scale_in_place(cg, r.out.vt, numel, r.scale);
            }
        }
    }
}

/// Thread 0, after a barrier: every reduction's per-thread partials into its output.
fn finalize_partials(cg: &mut Cg, l: &Loop) {
    for r in &l.reds {
        let numel = red_numel(cg, r.out.vt, l);
        let part = r.partial.expect("planner sets partials of parallel loops");
        finalize(cg, r.kind, r.scale, part, r.out.vt, numel);
    }
}

/// The number of elements a reduction writes: its whole output vt.
fn red_numel(cg: &Cg, vt: usize, _l: &Loop) -> usize {
    cg.numels[vt]
}

fn finalize(cg: &mut Cg, kind: RedKind, scale: f32, part: usize, out: usize, numel: usize) {
    let threads = cg.threads;
    let pb = cg.ptr(part, 0);
    let ob = cg.ptr(out, 0);
    let body = |cg: &mut Cg, ty: Type, j: Value| {
        let pa = cg.elem_addr(pb, j);
        let mut acc = cg.load(ty, pa, 0);
        for t in 1..threads {
            let v = cg.load(ty, pa, (t * numel * 4) as i64);
            acc = combine(cg, kind, acc, v);
        }
        if scale != 1.0 {
            let s = cg.fconst(ty, scale);
            acc = cg.fmul(acc, s);
        }
        let oa = cg.elem_addr(ob, j);
        cg.store(acc, oa, 0);
    };
    let nv = numel / LANES * LANES;
    cg.for_static(0, nv, LANES, &[], |cg, j, _| {
        body(cg, F32X4, j);
        vec![]
    });
    cg.for_static(nv, numel, 1, &[], |cg, j, _| {
        body(cg, F32, j);
        vec![]
    });
}

fn scale_in_place(cg: &mut Cg, vt: usize, numel: usize, scale: f32) {
    let b = cg.ptr(vt, 0);
    let body = |cg: &mut Cg, ty: Type, j: Value| {
        let a = cg.elem_addr(b, j);
        let v = cg.load(ty, a, 0);
        let s = cg.fconst(ty, scale);
        let v = cg.fmul(v, s);
        cg.store(v, a, 0);
    };
    let nv = numel / LANES * LANES;
    cg.for_static(0, nv, LANES, &[], |cg, j, _| {
        body(cg, F32X4, j);
        vec![]
    });
    cg.for_static(nv, numel, 1, &[], |cg, j, _| {
        body(cg, F32, j);
        vec![]
    });
}

impl<'l> Emitter<'l> {
    /// Live nodes, base pointers, and initialized reduction targets (this thread's partial
    /// when `par`, else the output).
    fn prepare(cg: &mut Cg, l: &'l Loop, c: Coalesced, par: bool) -> Emitter<'l> {
        let n_leaves = l.leaves.len();
        let n_stores = l.stores.len();
        let flat_ix = c.strides.len() - 1;
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
            let mut mark = |j: u32| live[j as usize] = true;
            match l.nodes[i] {
                ENode::Leaf(_) | ENode::Const(_) => {}
                ENode::Un(_, a) => mark(a),
                ENode::Bin(_, a, b) | ENode::Cmp(_, a, b) | ENode::And(a, b) => {
                    mark(a);
                    mark(b)
                }
                ENode::Fma(a, b, c) | ENode::Select(a, b, c) => {
                    mark(a);
                    mark(b);
                    mark(c)
                }
                ENode::DropoutKeep { step, .. } => mark(step),
            }
        }
        let needs_flat = l
            .nodes
            .iter()
            .enumerate()
            .any(|(i, n)| live[i] && matches!(n, ENode::DropoutKeep { .. }));
        let mut base = Vec::with_capacity(c.strides.len());
        for a in &l.leaves {
            base.push(cg.ptr(a.vt, a.offset));
        }
        for (_, a) in &l.stores {
            base.push(cg.ptr(a.vt, a.offset));
        }
        for r in &l.reds {
            assert_eq!(r.out.offset, 0, "reduction outputs start at their vt");
            let target = match (par, r.partial) {
                (true, Some(p)) => {
                    let numel = red_numel(cg, r.out.vt, l);
                    let pb = cg.ptr(p, 0);
                    let tid = cg.tid();
                    let off = cg.b.ins().imul_imm_s(tid, (numel * 4) as i64);
                    cg.b.ins().iadd(pb, off)
                }
                _ => cg.ptr(r.out.vt, 0),
            };
            base.push(target);
        }
        base.push(cg.iconst(0)); // flat index "pointer": element offsets are the index itself
        for (ri, r) in l.reds.iter().enumerate() {
            let numel = red_numel(cg, r.out.vt, l);
            let p = base[n_leaves + n_stores + ri];
            cg.fill(p, numel, r.init);
        }
        Emitter {
            l,
            c,
            live,
            n_leaves,
            n_stores,
            flat_ix,
            base,
            needs_flat,
        }
    }

    fn red_base(&self, ri: usize) -> usize {
        self.n_leaves + self.n_stores + ri
    }

    /// Loops over dimension `k` (and recursively the inner ones) with the element offsets
    /// `offs` of every access at the start of this sub-space.
    fn nest(&mut self, cg: &mut Cg, k: usize, offs: &[Value], par: bool) {
        let r = self.c.dims.len();
        let n = self.c.dims[k];
        let range = |cg: &mut Cg, granule: usize| {
            if k == 0 && par {
                cg.thread_range(n, granule)
            } else {
                (cg.iconst(0), cg.iconst(n as i64))
            }
        };
        if k + 1 == r {
            let (lo, hi) = range(cg, LANES * UNROLL);
            self.inner(cg, offs, lo, hi);
            return;
        }
        let (lo, hi) = range(cg, 1);
        if k + 2 == r && self.rows_unrolled_ok() {
            self.rows_unrolled(cg, offs, lo, hi);
            return;
        }
        let strides: Vec<isize> = self.c.strides.iter().map(|s| s[k]).collect();
        let offs = offs.to_vec();
        cg.for_range(lo, hi, 1, &[], |cg, i, _| {
            let child: Vec<Value> = offs
                .iter()
                .zip(&strides)
                .map(|(&o, &s)| {
                    if s == 0 {
                        o
                    } else {
                        let d = cg.b.ins().imul_imm_s(i, s as i64);
                        cg.b.ins().iadd(o, d)
                    }
                })
                .collect();
            self.nest(cg, k + 1, &child, false);
            vec![]
        });
    }

    /// Whether the last two dimensions run as a loop over rows with the (short) innermost
    /// dimension unrolled: then leaves constant along the rows (per-channel vectors) and
    /// reductions over the rows (per-channel sums) live in registers. Better than a short
    /// inner loop even when some of them spill (a spill reloads from L1 like a leaf would):
    /// up to 64 channels, measured on mbv2_tiny's BatchNorm statistics over 64 channels
    /// (four per-channel sums; 825 µs in memory, under 183 µs unrolled).
    fn rows_unrolled_ok(&self) -> bool {
        let r = self.c.dims.len();
        let n = self.c.dims[r - 1];
        if r < 2 || !(LANES..=64).contains(&n) {
            return false;
        }
        self.c
            .strides
            .iter()
            .enumerate()
            .all(|(ai, s)| ai == self.flat_ix || s[r - 1] == 0 || s[r - 1] == 1)
    }

    /// Rows `lo..hi` of dimension `r-2`, each row's `r-1` dimension unrolled.
    ///
    /// Reductions fall in four groups: per-channel over the rows (one accumulator per
    /// vector chunk, carried through the row loop), whole (one accumulator, carried), per
    /// row (one accumulator folded within each row, then into memory) and per element
    /// (accumulated in memory by `element`).
    fn rows_unrolled(&mut self, cg: &mut Cg, offs: &[Value], lo: Value, hi: Value) {
        let r = self.c.dims.len();
        let n = self.c.dims[r - 1];
        let nv = n / LANES;
        let nt = n - nv * LANES;
        let row_s: Vec<isize> = self.c.strides.iter().map(|s| s[r - 2]).collect();
        let inner: Vec<isize> = self.c.strides.iter().map(|s| s[r - 1]).collect();
        let row0: Vec<Value> = offs
            .iter()
            .enumerate()
            .map(|(ai, &o)| {
                if ai == self.flat_ix {
                    o
                } else {
                    cg.elem_addr(self.base[ai], o)
                }
            })
            .collect();
        // row-invariant leaves: one value per vector chunk and per tail element
        let mut fixed_v: Vec<Vec<Option<Value>>> = vec![vec![None; self.n_leaves]; nv];
        let mut fixed_s: Vec<Vec<Option<Value>>> = vec![vec![None; self.n_leaves]; nt];
        for li in 0..self.n_leaves {
            if row_s[li] != 0 || !self.leaf_live(li) {
                continue;
            }
            if inner[li] == 0 {
                let v = cg.load(F32, row0[li], 0);
                let vv = cg.splat(F32X4, v);
                fixed_v.iter_mut().for_each(|f| f[li] = Some(vv));
                fixed_s.iter_mut().for_each(|f| f[li] = Some(v));
            } else {
                for (u, f) in fixed_v.iter_mut().enumerate() {
                    f[li] = Some(cg.load(F32X4, row0[li], (u * LANES * 4) as i64));
                }
                for (t, f) in fixed_s.iter_mut().enumerate() {
                    f[li] = Some(cg.load(F32, row0[li], ((nv * LANES + t) * 4) as i64));
                }
            }
        }
        let group = |row: bool, inn: isize| -> Vec<usize> {
            (0..self.l.reds.len())
                .filter(|&ri| {
                    let b = self.red_base(ri);
                    (row_s[b] == 0) == row && inner[b] == inn
                })
                .collect()
        };
        let chan = group(true, 1); // per channel, over rows
        let whole = group(true, 0); // over rows and the row
        let per_row = group(false, 0); // over the row only
        let kind = |ri: usize| self.l.reds[ri].kind;
        let (qc, qw) = (chan.len(), whole.len());
        // carried: chan x (nv vectors + nt scalars), then whole x (1 vector + 1 scalar)
        let mut init = Vec::new();
        for _ in 0..nv {
            for &ri in &chan {
                init.push(cg.fconst(F32X4, red_identity(kind(ri))));
            }
        }
        for _ in 0..nt {
            for &ri in &chan {
                init.push(cg.fconst(F32, red_identity(kind(ri))));
            }
        }
        for &ri in &whole {
            init.push(cg.fconst(F32X4, red_identity(kind(ri))));
        }
        for &ri in &whole {
            init.push(cg.fconst(F32, red_identity(kind(ri))));
        }
        let wv = (nv + nt) * qc; // first whole vector accumulator
        let ws = wv + qw; // first whole scalar accumulator
        let base = self.base.clone();
        let flat_ix = self.flat_ix;
        let offs = offs.to_vec();
        let regs: Vec<usize> = chan.iter().chain(&whole).chain(&per_row).copied().collect();
        let accs = cg.for_range(lo, hi, 1, &init, |cg, i, carried| {
            let rows: Vec<Value> = offs
                .iter()
                .enumerate()
                .map(|(ai, &o)| {
                    let o = if row_s[ai] == 0 {
                        o
                    } else {
                        let d = cg.b.ins().imul_imm_s(i, row_s[ai] as i64);
                        cg.b.ins().iadd(o, d)
                    };
                    if ai == flat_ix {
                        o
                    } else {
                        cg.elem_addr(base[ai], o)
                    }
                })
                .collect();
            // leaves constant along the row but not across rows: one scalar per row
            let hoisted: Vec<Option<Value>> = (0..self.n_leaves)
                .map(|li| {
                    (inner[li] == 0 && row_s[li] != 0 && self.leaf_live(li))
                        .then(|| cg.load(F32, rows[li], 0))
                })
                .collect();
            let ctx = RowCtx {
                rows,
                inner: inner.clone(),
                hoisted,
            };
            let zero = cg.iconst(0);
            let mut out = carried.to_vec();
            let mut rv: Vec<Value> = per_row
                .iter()
                .map(|&ri| cg.fconst(F32X4, red_identity(kind(ri))))
                .collect();
            let mut rs: Vec<Value> = per_row
                .iter()
                .map(|&ri| cg.fconst(F32, red_identity(kind(ri))))
                .collect();
            for u in 0..nv + nt {
                let vector = u < nv;
                let (ty, lane, fixed) = if vector {
                    (F32X4, u * LANES, &fixed_v[u])
                } else {
                    (F32, nv * LANES + (u - nv), &fixed_s[u - nv])
                };
                let mut mine: Vec<Value> = out[u * qc..(u + 1) * qc].to_vec();
                let w0 = if vector { wv } else { ws };
                mine.extend_from_slice(&out[w0..w0 + qw]);
                mine.extend_from_slice(if vector { &rv } else { &rs });
                let got = self.element(cg, &ctx, zero, lane, ty, &regs, &mine, fixed);
                out[u * qc..(u + 1) * qc].copy_from_slice(&got[..qc]);
                out[w0..w0 + qw].copy_from_slice(&got[qc..qc + qw]);
                if vector {
                    rv = got[qc + qw..].to_vec();
                } else {
                    rs = got[qc + qw..].to_vec();
                }
            }
            for (k, &ri) in per_row.iter().enumerate() {
                let kd = kind(ri);
                let mut v = rs[k];
                if nv > 0 {
                    let h = cg.hreduce(rv[k], |cg, a, b| combine(cg, kd, a, b));
                    v = combine(cg, kd, h, v);
                }
                let p = ctx.rows[self.red_base(ri)];
                let old = cg.load(F32, p, 0);
                let nw = combine(cg, kd, old, v);
                cg.store(nw, p, 0);
            }
            out
        });
        // carried accumulators meet memory once
        for (k, &ri) in chan.iter().enumerate() {
            let kd = kind(ri);
            let p = row0[self.red_base(ri)];
            for u in 0..nv + nt {
                let (ty, off) = if u < nv {
                    (F32X4, (u * LANES * 4) as i64)
                } else {
                    (F32, ((nv * LANES + u - nv) * 4) as i64)
                };
                let old = cg.load(ty, p, off);
                let v = combine(cg, kd, old, accs[u * qc + k]);
                cg.store(v, p, off);
            }
        }
        for (k, &ri) in whole.iter().enumerate() {
            let kd = kind(ri);
            let h = cg.hreduce(accs[wv + k], |cg, a, b| combine(cg, kd, a, b));
            let v = combine(cg, kd, h, accs[ws + k]);
            let p = row0[self.red_base(ri)];
            let old = cg.load(F32, p, 0);
            let v = combine(cg, kd, old, v);
            cg.store(v, p, 0);
        }
    }

    /// The innermost dimension from `lo` to `hi` (element indices).
    fn inner(&mut self, cg: &mut Cg, offs: &[Value], lo: Value, hi: Value) {
        let r = self.c.dims.len();
        let inner: Vec<isize> = self.c.strides.iter().map(|s| s[r - 1]).collect();
        let n = self.c.dims[r - 1];
        let vectorize = n >= LANES
            && inner
                .iter()
                .enumerate()
                .all(|(ai, &s)| ai == self.flat_ix || s == 0 || s == 1);
        // row pointers (byte addresses) of every access, except the flat index (kept as an
        // element offset)
        let rows: Vec<Value> = offs
            .iter()
            .enumerate()
            .map(|(ai, &o)| {
                if ai == self.flat_ix {
                    o
                } else {
                    cg.elem_addr(self.base[ai], o)
                }
            })
            .collect();
        // leaves invariant along the row: loaded once
        let mut hoisted: Vec<Option<Value>> = vec![None; self.n_leaves];
        for li in 0..self.n_leaves {
            if inner[li] == 0 && self.leaf_live(li) {
                hoisted[li] = Some(cg.load(F32, rows[li], 0));
            }
        }
        let ctx = RowCtx {
            rows,
            inner,
            hoisted,
        };
        // reductions that accumulate in registers (the inner dim is reduced)
        let reg_reds: Vec<usize> = (0..self.l.reds.len())
            .filter(|&ri| ctx.inner[self.red_base(ri)] == 0)
            .collect();

        let mut scalar_start = lo;
        let mut accs_scalar: Vec<Value> = reg_reds
            .iter()
            .map(|&ri| cg.fconst(F32, red_identity(self.l.reds[ri].kind)))
            .collect();
        if vectorize {
            // main: UNROLL vectors per iteration
            let span = cg.b.ins().isub(hi, lo);
            let step = (LANES * UNROLL) as i64;
            let main_n = cg.b.ins().band_imm_s(span, -step);
            let main_hi = cg.b.ins().iadd(lo, main_n);
            let init: Vec<Value> = (0..UNROLL)
                .flat_map(|_| reg_reds.iter().map(|&ri| self.l.reds[ri].kind))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|k| cg.fconst(F32X4, red_identity(k)))
                .collect();
            let accs = cg.for_range(lo, main_hi, step, &init, |cg, j, carried| {
                let mut out = Vec::with_capacity(carried.len());
                for u in 0..UNROLL {
                    let mine = &carried[u * reg_reds.len()..(u + 1) * reg_reds.len()];
                    let got = self.element(cg, &ctx, j, u * LANES, F32X4, &reg_reds, mine, &[]);
                    out.extend(got);
                }
                out
            });
            // one vector at a time
            let span = cg.b.ins().isub(hi, main_hi);
            let vn = cg.b.ins().band_imm_s(span, -(LANES as i64));
            let vec_hi = cg.b.ins().iadd(main_hi, vn);
            let first: Vec<Value> = accs[..reg_reds.len()].to_vec();
            let mut vaccs = cg.for_range(main_hi, vec_hi, LANES as i64, &first, |cg, j, c| {
                self.element(cg, &ctx, j, 0, F32X4, &reg_reds, c, &[])
            });
            // fold the unrolled accumulators and the lanes into the scalar accumulators
            for u in 1..UNROLL {
                for (q, &ri) in reg_reds.iter().enumerate() {
                    let k = self.l.reds[ri].kind;
                    vaccs[q] = combine(cg, k, vaccs[q], accs[u * reg_reds.len() + q]);
                }
            }
            for (q, &ri) in reg_reds.iter().enumerate() {
                let k = self.l.reds[ri].kind;
                accs_scalar[q] = cg.hreduce(vaccs[q], |cg, a, b| combine(cg, k, a, b));
            }
            scalar_start = vec_hi;
        }
        let accs_scalar = cg.for_range(scalar_start, hi, 1, &accs_scalar, |cg, j, c| {
            self.element(cg, &ctx, j, 0, F32, &reg_reds, c, &[])
        });
        // register reductions meet memory once per row
        for (q, &ri) in reg_reds.iter().enumerate() {
            let k = self.l.reds[ri].kind;
            let p = ctx.rows[self.red_base(ri)];
            let old = cg.load(F32, p, 0);
            let v = combine(cg, k, old, accs_scalar[q]);
            cg.store(v, p, 0);
        }
    }

    fn leaf_live(&self, li: usize) -> bool {
        self.l
            .nodes
            .iter()
            .enumerate()
            .any(|(i, n)| self.live[i] && *n == ENode::Leaf(li as u32))
    }

    /// Computes one vector (or scalar) of the loop at element index `j + lane_off` of the
    /// row; stores, memory reductions, and returns the updated register accumulators.
    #[allow(clippy::too_many_arguments)]
    fn element(
        &self,
        cg: &mut Cg,
        ctx: &RowCtx,
        j: Value,
        lane_off: usize,
        ty: Type,
        reg_reds: &[usize],
        accs: &[Value],
        fixed: &[Option<Value>],
    ) -> Vec<Value> {
        let l = self.l;
        let addr = |cg: &mut Cg, ai: usize| -> (Value, i64) {
            let s = ctx.inner[ai];
            let idx = if s == 1 {
                j
            } else {
                cg.b.ins().imul_imm_s(j, s as i64)
            };
            (
                cg.elem_addr(ctx.rows[ai], idx),
                (lane_off as i64) * 4 * s as i64,
            )
        };
        let mut vals: Vec<Option<Value>> = vec![None; l.nodes.len()];
        for i in 0..l.nodes.len() {
            if !self.live[i] {
                continue;
            }
            let v = match l.nodes[i] {
                ENode::Leaf(li) => {
                    let li = li as usize;
                    match (fixed.get(li).copied().flatten(), ctx.hoisted[li]) {
                        (Some(v), _) => v,
                        (None, Some(s)) => cg.splat(ty, s),
                        (None, None) => {
                            let (a, off) = addr(cg, li);
                            cg.load(ty, a, off)
                        }
                    }
                }
                ENode::Const(bits) => cg.fconst(ty, f32::from_bits(bits)),
                ENode::Un(op, a) => {
                    let a = vals[a as usize].unwrap();
                    match op {
                        UnOp::Neg => cg.b.ins().fneg(a),
                        UnOp::Abs => cg.b.ins().fabs(a),
                        UnOp::Sqrt => cg.b.ins().sqrt(a),
                        UnOp::Floor => cg.b.ins().floor(a),
                        UnOp::Exp => cg.exp(a),
                    }
                }
                ENode::Bin(op, a, b) => {
                    let (a, b) = (vals[a as usize].unwrap(), vals[b as usize].unwrap());
                    match op {
                        BinOp::Add => cg.fadd(a, b),
                        BinOp::Sub => cg.fsub(a, b),
                        BinOp::Mul => cg.fmul(a, b),
                        BinOp::Div => cg.fdiv(a, b),
                        BinOp::Min => cg.fmin(a, b),
                        BinOp::Max => cg.fmax(a, b),
                    }
                }
                ENode::Fma(a, b, c) => {
                    let (a, b, c) = (
                        vals[a as usize].unwrap(),
                        vals[b as usize].unwrap(),
                        vals[c as usize].unwrap(),
                    );
                    cg.fma(a, b, c)
                }
                ENode::Cmp(op, a, b) => {
                    let (a, b) = (vals[a as usize].unwrap(), vals[b as usize].unwrap());
                    let cc = match op {
                        CmpOp::Lt => FloatCC::LessThan,
                        CmpOp::Le => FloatCC::LessThanOrEqual,
                        CmpOp::Gt => FloatCC::GreaterThan,
                        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
                        CmpOp::Eq => FloatCC::Equal,
                    };
                    cg.fcmp(cc, a, b)
                }
                ENode::And(a, b) => {
                    let (a, b) = (vals[a as usize].unwrap(), vals[b as usize].unwrap());
                    cg.mask_and(a, b)
                }
                ENode::Select(m, a, b) => {
                    let (m, a, b) = (
                        vals[m as usize].unwrap(),
                        vals[a as usize].unwrap(),
                        vals[b as usize].unwrap(),
                    );
                    cg.select(m, a, b)
                }
                ENode::DropoutKeep { step, seed, rate } => {
                    debug_assert!(self.needs_flat);
                    let step = vals[step as usize].unwrap();
                    let flat_row = ctx.rows[self.flat_ix];
                    let flat = cg.b.ins().iadd(flat_row, j);
                    let flat = cg.b.ins().iadd_imm_s(flat, lane_off as i64);
                    dropout_keep(cg, ty, flat, step, seed, f32::from_bits(rate))
                }
            };
            vals[i] = Some(v);
        }
        // stores
        for (si, (n, _)) in l.stores.iter().enumerate() {
            let ai = self.n_leaves + si;
            let (a, off) = addr(cg, ai);
            cg.store(vals[*n as usize].unwrap(), a, off);
        }
        // reductions
        let mut out = accs.to_vec();
        for (ri, r) in l.reds.iter().enumerate() {
            let v = vals[r.node as usize].unwrap();
            if let Some(q) = reg_reds.iter().position(|&x| x == ri) {
                out[q] = combine(cg, r.kind, out[q], v);
            } else {
                let (a, off) = addr(cg, self.red_base(ri));
                let old = cg.load(ty, a, off);
                let nv = combine(cg, r.kind, old, v);
                cg.store(nv, a, off);
            }
        }
        out
    }
}

struct RowCtx {
    rows: Vec<Value>,
    inner: Vec<isize>,
    hoisted: Vec<Option<Value>>,
}

/// [`crate::ir::interp::dropout_keep`] for the lanes at flat indices `flat..flat+lanes`.
fn dropout_keep(cg: &mut Cg, ty: Type, flat: Value, step: Value, seed: u64, rate: f32) -> Value {
    let vector = ty.is_vector();
    let ity = if vector { I32X4 } else { I32 };
    let step_s = if vector {
        cg.b.ins().extractlane(step, 0u8)
    } else {
        step
    };
    let step_u = cg.b.ins().fcvt_to_uint_sat(I32, step_s);
    let sm = cg.b.ins().imul_imm_s(step_u, 0x85EB_CA77u32 as i32 as i64);
    let base = cg.b.ins().iadd_imm_s(sm, seed as u32 as i32 as i64);
    let idx = cg.b.ins().ireduce(I32, flat);
    let k = |cg: &mut Cg, v: u32| -> Value {
        let c = cg.b.ins().iconst(I32, v as i32 as i64);
        if vector {
            cg.b.ins().splat(I32X4, c)
        } else {
            c
        }
    };
    let idx = if vector {
        let s = cg.b.ins().splat(I32X4, idx);
        let iota = cg.i32x4_const([0, 1, 2, 3]);
        cg.b.ins().iadd(s, iota)
    } else {
        idx
    };
    let m1 = k(cg, 0x9E37_79B1);
    let mut h = cg.b.ins().imul(idx, m1);
    let base = if vector {
        cg.b.ins().splat(I32X4, base)
    } else {
        base
    };
    h = cg.b.ins().iadd(h, base);
    let shr = |cg: &mut Cg, h: Value, s: i64| -> Value {
        let t = cg.b.ins().ushr_imm_s(h, s);
        cg.b.ins().bxor(h, t)
    };
    h = shr(cg, h, 15);
    let m2 = k(cg, 0x2C1B_3C6D);
    h = cg.b.ins().imul(h, m2);
    h = shr(cg, h, 12);
    let m3 = k(cg, 0x297A_2D39);
    h = cg.b.ins().imul(h, m3);
    h = shr(cg, h, 15);
    let top = cg.b.ins().ushr_imm_s(h, 8);
    let ftype = if vector { F32X4 } else { F32 };
    let _ = ity;
    let u = cg.b.ins().fcvt_from_sint(ftype, top);
    let inv = cg.fconst(ftype, 1.0 / 16_777_216.0);
    let u = cg.fmul(u, inv);
    let r = cg.fconst(ftype, rate);
    let keep = cg.fcmp(FloatCC::GreaterThanOrEqual, u, r);
    let scale = cg.fconst(ftype, 1.0 / (1.0 - rate));
    let zero = cg.fconst(ftype, 0.0);
    cg.select(keep, scale, zero)
}
