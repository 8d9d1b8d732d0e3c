//! Fake quantization and its straight-through gradient. The range (per tensor or per axis)
//! comes from the operands (`range=operands`), from the tensor itself (`last_value`: a fused
//! min/max reduction) or from constants (`fixed`). Ranges are nudged by the host helper
//! `qatc_nudge`, which calls the reference's own `nudged_for`, so the quantization grid is
//! identical; the rounding itself is emitted with the reference's exact operation order
//! (TF's current formula: levels relative to the zero level, times the scale), so the JIT's
//! fake-quant output matches the oracle bit for bit on the same input.

use super::{reduced, same, Lower, Val};
use crate::error::Result;
use crate::ir::op::{FakeQuantAttrs, Op, RangeSource};
use crate::jit::codegen::Cg;
use crate::jit::lir::{Access, CmpOp, Inst, Kernel, Loop, NodeIx, RedKind, UnOp, VtId};
use crate::jit::runtime::{nudged_row, NUDGED};
use crate::quant::fake::nudged_for;

/// Calls `qatc_nudge` on `n` ranges: writes `[nmin | nmax | scale | inv_scale | zero]` to
/// `out`.
struct Nudge {
    name: String,
    min: VtId,
    max: VtId,
    n: usize,
    bits: u8,
    flags: u64,
    out: VtId,
}

impl Kernel for Nudge {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "nudge"
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.min, self.max]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.out]
    }
    fn parallel(&self, _threads: usize) -> bool {
        false
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let args = [
            cg.ptr(self.min, 0),
            cg.ptr(self.max, 0),
            cg.iconst(self.n as i64),
            cg.iconst(self.bits as i64),
            cg.iconst(self.flags as i64),
            cg.ptr(self.out, 0),
        ];
        let f = cg.helpers.nudge;
        cg.call(f, &args);
        Ok(())
    }
}

/// The nudged range of a quantizer: where its per-channel vectors live, or compile-time
/// constants ([`NUDGED`] values: min, max, scale, 1/scale, zero level).
enum Range {
    Runtime { vt: VtId, n: usize },
    Const([f32; NUDGED]),
}

fn flags(q: &FakeQuantAttrs) -> u64 {
    (q.narrow as u64) | ((q.symmetric as u64) << 1)
}

fn channels(q: &FakeQuantAttrs, shape: &[usize]) -> usize {
    q.axis.map(|a| shape[a]).unwrap_or(1)
}

fn nudge_runtime(cx: &mut Lower, q: &FakeQuantAttrs, min: VtId, max: VtId, n: usize) -> Range {
    let key = format!("nudge:{min}:{max}:{}:{}", q.bits, flags(q));
    if let Some(v) = cx.memo.get(&key) {
        return Range::Runtime { vt: v[0], n };
    }
    let out = cx.temp("nudged", NUDGED * n);
    let name = format!("{}.nudge", cx.name());
    cx.kernel(Nudge {
        name,
        min,
        max,
        n,
        bits: q.bits,
        flags: flags(q),
        out,
    });
    cx.memo.insert(key, vec![out]);
    Range::Runtime { vt: out, n }
}

/// The range of fake-quant `q` on input `x` (`range=operands`: operands 1 and 2).
fn range(cx: &mut Lower, q: &FakeQuantAttrs, x: &Val) -> Range {
    let n = channels(q, &x.shape);
    match &q.range {
        RangeSource::Fixed { min, max } => Range::Const(nudged_row(&nudged_for(q, min.0, max.0))),
        RangeSource::LastValue => {
            // min(min(x), 0) and max(max(x), 0) per channel: one pass
            let s = x.shape.clone();
            let keep: Vec<usize> = q.axis.into_iter().collect();
            let lo = cx.temp("min", n);
            let hi = cx.temp("max", n);
            let mut l = cx.new_loop("range", &s);
            let xv = l.leaf(same(x, &s));
            l.reduce(xv, RedKind::Min, 0.0, 1.0, reduced(lo, &s, &keep));
            l.reduce(xv, RedKind::Max, 0.0, 1.0, reduced(hi, &s, &keep));
            cx.push(Inst::Loop(l));
            nudge_runtime(cx, q, lo, hi, n)
        }
        _ => {
            let (lo, hi) = (cx.arg(1), cx.arg(2));
            nudge_runtime(cx, q, lo.vt, hi.vt, n)
        }
    }
}

/// Leaves of the nudged range: min, max, scale, 1/scale, zero level.
fn range_leaves(l: &mut Loop, r: &Range, q: &FakeQuantAttrs, s: &[usize]) -> [NodeIx; NUDGED] {
    match r {
        Range::Const(v) => v.map(|x| l.c(x)),
        Range::Runtime { vt, n } => {
            let mut out = [0; NUDGED];
            for (k, o) in out.iter_mut().enumerate() {
                let strides = (0..s.len())
                    .map(|d| if Some(d) == q.axis { 1 } else { 0 })
                    .collect();
                *o = l.leaf(Access {
                    vt: *vt,
                    offset: k * n,
                    strides,
                });
            }
            out
        }
    }
}

/// `floor((clamp(x, nmin, nmax) - nmin) * inv - zero + 0.5) * scale`, in the reference's
/// order (no fused multiply-add, so the level chosen is the same).
pub fn fake_quant(l: &mut Loop, x: NodeIx, r: [NodeIx; NUDGED]) -> NodeIx {
    let [nmin, nmax, scale, inv, zero] = r;
    let c = l.clamp(x, nmin, nmax);
    let t = l.sub(c, nmin);
    let t = l.mul(t, inv);
    let t = l.sub(t, zero);
    let half = l.c(0.5);
    let t = l.add(t, half);
    let f = l.un(UnOp::Floor, t);
    l.mul(f, scale)
}

pub fn lower(cx: &mut Lower, op: &Op) -> Result<Val> {
    let s = cx.out_shape();
    let v = match op {
        Op::FakeQuant(q) => {
            let x = cx.arg(0);
            let r = range(cx, q, &x);
            cx.map("", &s, |l| {
                let xv = l.leaf(same(&x, &s));
                let rl = range_leaves(l, &r, q, &s);
                fake_quant(l, xv, rl)
            })
        }
        Op::FakeQuantGrad(q) => {
            // the gradient always takes its range as operands 2 and 3
            let (dy, x, lo, hi) = (cx.arg(0), cx.arg(1), cx.arg(2), cx.arg(3));
            let n = channels(q, &x.shape);
            let r = nudge_runtime(cx, q, lo.vt, hi.vt, n);
            cx.map("", &s, |l| {
                let d = l.leaf(same(&dy, &s));
                let xv = l.leaf(same(&x, &s));
                let [nmin, nmax, ..] = range_leaves(l, &r, q, &s);
                let m1 = l.cmp(CmpOp::Ge, xv, nmin);
                let m2 = l.cmp(CmpOp::Le, xv, nmax);
                let m = l.and(m1, m2);
                l.keep(m, d)
            })
        }
        other => unreachable!("{} is not a fake-quant op", other.name()),
    };
    Ok(v)
}
