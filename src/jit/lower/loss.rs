//! Row-wise ops over the last axis: `softmax`, `softmax_grad`, and the loss
//! `softmax_cross_entropy` with its gradient. Rows are short (classes), so each row is a few
//! vector passes; large row counts split over threads. The loss reads i32 labels, which the
//! executor validates against the class count before running.

use super::context::{Lower, Val};
use crate::error::Result;
use crate::jit::cg::{Cg, LANES};
use crate::jit::lir::{Kernel, VtId};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

const PAR_MIN_WORK: usize = 16 * 1024;

/// Folds `elem(j)` over `j in 0..c` with `comb`, starting from `init`.
fn row_fold(
    cg: &mut Cg,
    c: usize,
    init: f32,
    elem: &dyn Fn(&mut Cg, Type, Value) -> Value,
    comb: &dyn Fn(&mut Cg, Value, Value) -> Value,
) -> Value {
    let nv = c / LANES * LANES;
    let mut acc = cg.fconst(F32, init);
    if nv > 0 {
        let vinit = cg.fconst(F32X4, init);
        let v = cg.for_static(0, nv, LANES, &[vinit], |cg, j, a| {
            let e = elem(cg, F32X4, j);
            vec![comb(cg, a[0], e)]
        })[0];
        acc = cg.hreduce(v, |cg, a, b| comb(cg, a, b));
    }
    for j in nv..c {
        let jv = cg.iconst(j as i64);
        let e = elem(cg, F32, jv);
        acc = comb(cg, acc, e);
    }
    acc
}

/// `f(j)` for `j in 0..c`, vectors then scalars.
fn row_each(cg: &mut Cg, c: usize, f: &dyn Fn(&mut Cg, Type, Value)) {
    super::window::for_channels(cg, c, f)
}

/// Writes `softmax(x_row)` to `y_row` (both element pointers).
fn softmax_row(cg: &mut Cg, x: Value, y: Value, c: usize) {
    let m = row_fold(
        cg,
        c,
        f32::NEG_INFINITY,
        &|cg, ty, j| {
            let a = cg.elem_addr(x, j);
            cg.load(ty, a, 0)
        },
        &|cg, a, b| cg.fmax(a, b),
    );
    let s = row_fold(
        cg,
        c,
        0.0,
        &|cg, ty, j| {
            let a = cg.elem_addr(x, j);
            let v = cg.load(ty, a, 0);
            let mv = cg.splat(ty, m);
            let d = cg.fsub(v, mv);
            let e = cg.exp(d);
            let b = cg.elem_addr(y, j);
            cg.store(e, b, 0);
            e
        },
        &|cg, a, b| cg.fadd(a, b),
    );
    row_each(cg, c, &|cg, ty, j| {
        let b = cg.elem_addr(y, j);
        let e = cg.load(ty, b, 0);
        let sv = cg.splat(ty, s);
        let p = cg.fdiv(e, sv);
        cg.store(p, b, 0);
    });
}

/// A row-parallel op: each row of the output depends on the same row of the operands.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// `softmax(x)`
    Softmax,
    /// `softmax_grad(dy, y)`
    SoftmaxGrad,
    /// `softmax_cross_entropy_grad(logits, labels)`
    LossGrad,
}

/// What a [`Rows`] kernel computes: a row-parallel op, or the loss (a sum over rows).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Rows(RowOp),
    Loss,
}

struct Rows {
    name: String,
    which: Which,
    /// Operands: x (or dy), y / labels.
    a: VtId,
    b: Option<VtId>,
    out: VtId,
    rows: usize,
    c: usize,
}

impl Kernel for Rows {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "rows"
    }
    fn flops(&self) -> usize {
        0
    }
    fn reads(&self) -> Vec<VtId> {
        let mut r = vec![self.a];
        r.extend(self.b);
        r
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.out]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1
            && self.which != Which::Loss
            && self.rows * self.c >= PAR_MIN_WORK
            && self.rows >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let c = self.c;
        let ab = cg.ptr(self.a, 0);
        let bb = self.b.map(|b| cg.ptr(b, 0));
        let ob = cg.ptr(self.out, 0);
        match self.which {
            Which::Rows(which) => {
                let (r0, r1) = cg.thread_range(self.rows, 1);
                let rows = self.rows;
                cg.for_range(r0, r1, 1, &[], |cg, r, _| {
                    let off = cg.b.ins().imul_imm_s(r, c as i64);
                    let x = cg.elem_addr(ab, off);
                    let y = cg.elem_addr(ob, off);
                    match which {
                        RowOp::Softmax => softmax_row(cg, x, y, c),
                        RowOp::SoftmaxGrad => {
                            let yr = cg.elem_addr(bb.unwrap(), off);
                            let dot = row_fold(
                                cg,
                                c,
                                0.0,
                                &|cg, ty, j| {
                                    let a = cg.elem_addr(x, j);
                                    let d = cg.load(ty, a, 0);
                                    let b = cg.elem_addr(yr, j);
                                    let yv = cg.load(ty, b, 0);
                                    cg.fmul(d, yv)
                                },
                                &|cg, a, b| cg.fadd(a, b),
                            );
                            row_each(cg, c, &|cg, ty, j| {
                                let a = cg.elem_addr(x, j);
                                let d = cg.load(ty, a, 0);
                                let b = cg.elem_addr(yr, j);
                                let yv = cg.load(ty, b, 0);
                                let dv = cg.splat(ty, dot);
                                let t = cg.fsub(d, dv);
                                let o = cg.fmul(yv, t);
                                let oa = cg.elem_addr(y, j);
                                cg.store(o, oa, 0);
                            });
                        }
                        RowOp::LossGrad => {
                            softmax_row(cg, x, y, c);
                            // y[label] -= 1, then y /= n
                            let la = cg.elem_addr(bb.unwrap(), r);
                            let label = cg.b.ins().load(I32, crate::jit::cg::data_flags(), la, 0);
                            let label = cg.b.ins().sextend(I64, label);
                            let pa = cg.elem_addr(y, label);
                            let p = cg.load(F32, pa, 0);
                            let one = cg.fconst(F32, 1.0);
                            let p = cg.fsub(p, one);
                            cg.store(p, pa, 0);
                            let inv = 1.0 / rows as f32;
                            row_each(cg, c, &|cg, ty, j| {
                                let a = cg.elem_addr(y, j);
                                let v = cg.load(ty, a, 0);
                                let s = cg.fconst(ty, inv);
                                let v = cg.fmul(v, s);
                                cg.store(v, a, 0);
                            });
                        }
                    }
                    vec![]
                });
            }
            Which::Loss => {
                let zero = cg.fconst(F32, 0.0);
                let labels = bb.unwrap();
                let total = cg.for_static(0, self.rows, 1, &[zero], |cg, r, acc| {
                    let off = cg.b.ins().imul_imm_s(r, c as i64);
                    let x = cg.elem_addr(ab, off);
                    let m = row_fold(
                        cg,
                        c,
                        f32::NEG_INFINITY,
                        &|cg, ty, j| {
                            let a = cg.elem_addr(x, j);
                            cg.load(ty, a, 0)
                        },
                        &|cg, a, b| cg.fmax(a, b),
                    );
                    let s = row_fold(
                        cg,
                        c,
                        0.0,
                        &|cg, ty, j| {
                            let a = cg.elem_addr(x, j);
                            let v = cg.load(ty, a, 0);
                            let mv = cg.splat(ty, m);
                            let d = cg.fsub(v, mv);
                            cg.exp(d)
                        },
                        &|cg, a, b| cg.fadd(a, b),
                    );
                    let f = cg.helpers.logf;
                    let ln = cg.call(f, &[s])[0];
                    let lse = cg.fadd(m, ln);
                    let la = cg.elem_addr(labels, r);
                    let label = cg.b.ins().load(I32, crate::jit::cg::data_flags(), la, 0);
                    let label = cg.b.ins().sextend(I64, label);
                    let xa = cg.elem_addr(x, label);
                    let xl = cg.load(F32, xa, 0);
                    let t = cg.fsub(lse, xl);
                    vec![cg.fadd(acc[0], t)]
                })[0];
                let n = cg.fconst(F32, self.rows as f32);
                let loss = cg.fdiv(total, n);
                cg.store(loss, ob, 0);
            }
        }
        Ok(())
    }
}

/// A row-parallel op over the last axis (operand 1, if any, is `y` or the labels).
pub fn rows(cx: &mut Lower, op: RowOp) -> Result<Val> {
    let b = match op {
        RowOp::Softmax => None,
        RowOp::SoftmaxGrad | RowOp::LossGrad => Some(cx.arg(1).vt),
    };
    kernel(cx, Which::Rows(op), b)
}

/// The mean softmax cross-entropy of the logits (operand 0) and labels (operand 1).
pub fn loss(cx: &mut Lower) -> Result<Val> {
    let labels = cx.arg(1).vt;
    kernel(cx, Which::Loss, Some(labels))
}

fn kernel(cx: &mut Lower, which: Which, b: Option<VtId>) -> Result<Val> {
    let out = cx.out_shape();
    let a = cx.arg(0);
    let c = *a.shape.last().unwrap_or(&1);
    let rows = a.numel() / c.max(1);
    let vt = cx.temp("", out.iter().product());
    let name = cx.name().to_string();
    cx.kernel(Rows {
        name,
        which,
        a: a.vt,
        b,
        out: vt,
        rows,
        c,
    });
    Ok(Val { vt, shape: out })
}
