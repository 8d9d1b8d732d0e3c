//! Turns a planned [`Program`] into one function body ([`emit_program`]): loops, GEMM calls
//! into the host `gemm` crate (split over threads along rows, columns or depth), kernels,
//! and the barriers between instructions.

use super::cg::{Cg, LANES};
use super::lir::{Gemm, GemmSplit, Inst, Mat, Program};
use super::plan::Plan;
use crate::error::Result;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Calls the host GEMM on rows `m`, columns `n` and depth `k` (ranges `[lo, hi)`) of `g`,
/// into `dst` (a pointer to element `(m.lo, n.lo)` of a matrix with strides `rs`, `cs`)
/// when given, else into `g.dst`.
fn gemm_call(
    cg: &mut Cg,
    g: &Gemm,
    m: (Value, Value),
    n: (Value, Value),
    k: (Value, Value),
    dst: Option<(Value, isize, isize)>,
    accumulate: bool,
) {
    let at = |cg: &mut Cg, mat: &Mat, r: Value, c: Value| -> Value {
        let base = cg.ptr(mat.vt, mat.offset);
        let ro = cg.b.ins().imul_imm_s(r, mat.rs as i64 * 4);
        let co = cg.b.ins().imul_imm_s(c, mat.cs as i64 * 4);
        let p = cg.b.ins().iadd(base, ro);
        cg.b.ins().iadd(p, co)
    };
    let (dst, drs, dcs) = match dst {
        Some(d) => d,
        None => (at(cg, &g.dst, m.0, n.0), g.dst.rs, g.dst.cs),
    };
    let lhs = at(cg, &g.lhs, m.0, k.0);
    let rhs = at(cg, &g.rhs, k.0, n.0);
    let mm = cg.b.ins().isub(m.1, m.0);
    let nn = cg.b.ins().isub(n.1, n.0);
    let kk = cg.b.ins().isub(k.1, k.0);
    let mut args = vec![mm, nn, kk, dst];
    args.push(cg.iconst(drs as i64));
    args.push(cg.iconst(dcs as i64));
    args.push(lhs);
    args.push(cg.iconst(g.lhs.rs as i64));
    args.push(cg.iconst(g.lhs.cs as i64));
    args.push(rhs);
    args.push(cg.iconst(g.rhs.rs as i64));
    args.push(cg.iconst(g.rhs.cs as i64));
    args.push(cg.iconst(accumulate as i64));
    let f = cg.helpers.gemm;
    cg.call(f, &args);
}

/// This thread's `m x n` partial of a split-K GEMM (row-major).
fn gemm_partial(cg: &mut Cg, g: &Gemm) -> Value {
    let part = g
        .partial
        .expect("planner gives split-K GEMMs a partial buffer");
    let base = cg.ptr(part, 0);
    let tid = cg.tid();
    let off = cg.b.ins().imul_imm_s(tid, (g.m * g.n * 4) as i64);
    cg.b.ins().iadd(base, off)
}

/// Thread 0, after a barrier: the split-K partials summed into the destination.
fn gemm_combine(cg: &mut Cg, g: &Gemm) {
    let part = g.partial.expect("split-K GEMMs have a partial buffer");
    let threads = cg.threads;
    let pbase = cg.ptr(part, 0);
    let dbase = cg.ptr(g.dst.vt, g.dst.offset);
    let first = if g.accumulate { 0 } else { 1 };
    for r in 0..g.m {
        let contiguous = g.dst.cs == 1;
        let nv = if contiguous { g.n / LANES * LANES } else { 0 };
        let row_p = (r * g.n * 4) as i64;
        let row_d = r as i64 * g.dst.rs as i64 * 4;
        let sum = |cg: &mut Cg, ty: Type, pa: Value, po: i64, da: Value, dof: i64| {
            let mut acc = if g.accumulate {
                cg.load(ty, da, dof)
            } else {
                cg.load(ty, pa, po)
            };
            for t in first..threads {
                let v = cg.load(ty, pa, po + (t * g.m * g.n * 4) as i64);
                acc = cg.fadd(acc, v);
            }
            cg.store(acc, da, dof);
        };
        if nv > 0 {
            cg.for_static(0, nv, LANES, &[], |cg, j, _| {
                let pa = cg.elem_addr(pbase, j);
                let da = cg.elem_addr(dbase, j);
                sum(cg, F32X4, pa, row_p, da, row_d);
                vec![]
            });
        }
        for c in nv..g.n {
            let po = row_p + (c * 4) as i64;
            let dof = row_d + c as i64 * g.dst.cs as i64 * 4;
            sum(cg, F32, pbase, po, dbase, dof);
        }
    }
}

/// Emits a GEMM: this thread's share of rows, columns or the `k` range.
pub fn emit_gemm(cg: &mut Cg, g: &Gemm, parallel: bool) {
    let whole = |cg: &mut Cg, n: usize| (cg.iconst(0), cg.iconst(n as i64));
    if !parallel {
        cg.on_thread0(|cg| {
            let (m, n, k) = (whole(cg, g.m), whole(cg, g.n), whole(cg, g.k));
            gemm_call(cg, g, m, n, k, None, g.accumulate)
        });
        return;
    }
    match g.split {
        GemmSplit::Rows => {
            let m = cg.thread_range(g.m, 4);
            let (n, k) = (whole(cg, g.n), whole(cg, g.k));
            gemm_call(cg, g, m, n, k, None, g.accumulate);
        }
        GemmSplit::Cols => {
            let n = cg.thread_range(g.n, 8);
            let (m, k) = (whole(cg, g.m), whole(cg, g.k));
            gemm_call(cg, g, m, n, k, None, g.accumulate);
        }
        GemmSplit::K => {
            // partial[tid] = lhs[:, k-range] * rhs[k-range, :]; thread 0 sums them
            let mn = g.m * g.n;
            let k = cg.thread_range(g.k, 8);
            let part = gemm_partial(cg, g);
            cg.fill(part, mn, 0.0);
            let nonempty = cg.b.ins().icmp(IntCC::SignedLessThan, k.0, k.1);
            cg.if_then(nonempty, |cg| {
                let (m, n) = (whole(cg, g.m), whole(cg, g.n));
                gemm_call(cg, g, m, n, k, Some((part, g.n as isize, 1)), true);
            });
            cg.barrier();
            cg.on_thread0(|cg| gemm_combine(cg, g));
        }
    }
}

/// Where the instructions emitted so far left the threads: whether the last one ran split
/// over threads, and whether it ended on thread 0 alone (after its own barrier, combining
/// partials). Carried from one segment of the program to the next.
#[derive(Clone, Copy, Debug, Default)]
pub struct Emitted {
    last: Option<(bool, bool)>,
}

/// Emits instructions `range` of the program (a segment, or all of it), each with a barrier
/// before it unless it and its predecessor (`before`, possibly in the previous segment)
/// both run on thread 0 alone. Returns the state for the next segment.
///
/// A parallel instruction that ends on thread 0 (after its own barrier, combining partials)
/// needs no barrier before thread-0 work that follows it: the other threads are done with it.
pub fn emit_range(
    cg: &mut Cg,
    prog: &Program,
    plan: &Plan,
    range: std::ops::Range<usize>,
    before: Emitted,
) -> Result<Emitted> {
    let mark = |cg: &mut Cg, i: u64| {
        if let Some(f) = cg.helpers.prof {
            cg.on_thread0(|cg| {
                let ctx = cg.ctx();
                let iv = cg.b.ins().iconst(I64, i as i64);
                cg.b.ins().call(f, &[ctx, iv]);
            });
        }
    };
    if range.start == 0 {
        mark(cg, u64::MAX);
    }
    let mut prev = before.last;
    for i in range {
        let inst = &prog.insts[i];
        let par = plan.parallel[i];
        if let Some((pp, pt0)) = prev {
            if par || (pp && !pt0) {
                cg.barrier();
            }
        }
        cg.par = par;
        // the LIR instruction shows as the source location in CLIF dumps
        cg.b.set_srcloc(cranelift_codegen::ir::SourceLoc::new(i as u32));
        match inst {
            Inst::Loop(l) => super::loops::emit_loop(cg, l, par),
            Inst::Gemm(g) => emit_gemm(cg, g, par),
            Inst::Kernel(k) => {
                if par {
                    k.emit(cg)?;
                } else {
                    let mut res = Ok(());
                    cg.on_thread0(|cg| res = k.emit(cg));
                    res?;
                }
            }
        }
        prev = Some((par, par && inst.ends_on_thread0()));
        mark(cg, i as u64);
    }
    Ok(Emitted { last: prev })
}
