//! Fake quantization and its straight-through gradient. The range (per tensor or per axis)
//! comes from the operands (`range=operands`), from the tensor itself (`last_value`: a fused
//! min/max reduction) or from constants (`fixed`). Ranges are nudged by the host helper
//! `qatc_nudge`, which calls the reference's own `nudged_for`, so the quantization grid is
//! identical; the rounding itself is emitted with the reference's exact operation order
//! (TF's current formula: levels relative to the zero level, times the scale), so the JIT's
//! fake-quant output matches the oracle bit for bit on the same input.

use super::context::{reduced, same, Lower, Val};
use crate::error::Result;
use crate::ir::fake_quant::{nudged_for, symmetric_ratio};
use crate::ir::op::Activation;
use crate::ir::op::{FakeQuantAttrs, GradOp, Op, RangeEnd, RangeLearning, RangeSource, F32};
use crate::ir::{Graph, NodeId};
use crate::jit::cg::Cg;
use crate::jit::lir::{Access, CmpOp, Inst, Kernel, Loop, NodeIx, RedKind, UnOp, VtId};
use crate::jit::runtime::{nudged_row, NUDGED};

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
    fn flops(&self) -> usize {
        0
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
fn range(cx: &mut Lower, q: &FakeQuantAttrs, x: &Val) -> Result<Range> {
    let n = channels(q, &x.shape);
    Ok(match &q.range {
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
        RangeSource::Operands | RangeSource::Trained(_) => {
            let (lo, hi) = (cx.arg(1), cx.arg(2));
            nudge_runtime(cx, q, lo.vt, hi.vt, n)
        }
        RangeSource::Ema { state, .. }
        | RangeSource::AllValues { state }
        | RangeSource::Tied { state }
        | RangeSource::Learned { state, .. } => {
            return Err(cx.unsupported(&format!(
                "fake_quant with range source reading state `{state}` must be made explicit \
                 first: lower the graph with autodiff (`autodiff::train_step` for training, \
                 `autodiff::eval_graph` for evaluation), which turns it into `range=operands`"
            )))
        }
    })
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
    let c = l.clamp(x, r[0], r[1]);
    quantize_clamped(l, c, r)
}

/// The rounding of [`fake_quant`] on an already clamped value.
fn quantize_clamped(l: &mut Loop, c: NodeIx, r: [NodeIx; NUDGED]) -> NodeIx {
    let [nmin, _, scale, inv, zero] = r;
    let t = l.sub(c, nmin);
    let t = l.mul(t, inv);
    let t = l.sub(t, zero);
    let half = l.c(0.5);
    let t = l.add(t, half);
    let f = l.un(UnOp::Floor, t);
    l.mul(f, scale)
}

/// The ReLU or ReLU6 that computes node `id`, and its input.
fn activation_of(g: &Graph, id: NodeId) -> Option<(Activation, NodeId)> {
    let act = g.node(id).op.as_fusable_activation()?;
    Some((act, g.operands(id)[0]))
}

/// Nudged ranges always contain 0 (`nmin <= 0 <= nmax`), which makes two compositions with
/// ReLU/ReLU6 simpler, exactly:
/// - `clamp(relu6(z), nmin, nmax) = clamp(z, 0, min(6, nmax))` (and `min(relu(z), nmax)`
///   for ReLU): one clamp instead of two before the rounding;
/// - `relu6_grad(fake_quant_grad(dq, relu6(z)), z)` is `dq` where `0 < z < 6` and
///   `z <= nmax`, else 0 (the `nmin` test always passes on a positive value).
///
/// The upper bound of an activation's output that the quantizer keeps: `nmax`, or
/// `min(6, nmax)` after ReLU6.
fn active_upper(l: &mut Loop, act: Activation, nmax: NodeIx) -> NodeIx {
    match act {
        Activation::Relu6 => {
            let six = l.c(6.0);
            l.min(six, nmax)
        }
        Activation::None | Activation::Relu => nmax,
    }
}

/// `relu_grad` / `relu6_grad` of a `fake_quant_grad` through the same activation: one mask
/// on the activation's input (see `active_upper` for the rules). `None` when the pattern does not
/// apply.
pub fn activation_grad_through_fake_quant(cx: &mut Lower, act: Activation) -> Option<Val> {
    let g = cx.g;
    let me = cx.node_id();
    let ops = g.operands(me);
    let Op::Grad(GradOp::FakeQuantGrad(q)) = &g.node(ops[0]).op else {
        return None;
    };
    let fq_ops = g.operands(ops[0]);
    let (a, z) = activation_of(g, fq_ops[1])?;
    if a != act || z != ops[1] {
        return None;
    }
    let q = q.clone();
    let (dq, x, lo, hi) = (
        cx.val_of(fq_ops[0]),
        cx.val_of(fq_ops[1]),
        cx.val_of(fq_ops[2]),
        cx.val_of(fq_ops[3]),
    );
    let zv = cx.val_of(z);
    let n = channels(&q, &x.shape);
    let r = nudge_runtime(cx, &q, lo.vt, hi.vt, n);
    let s = cx.out_shape();
    Some(cx.map("", &s, |l| {
        let d = l.leaf(same(&dq, &s));
        let zl = l.leaf(same(&zv, &s));
        let [_, nmax, ..] = range_leaves(l, &r, &q, &s);
        let zero = l.c(0.0);
        let pos = l.cmp(CmpOp::Gt, zl, zero);
        let in_range = l.cmp(CmpOp::Le, zl, nmax);
        let mut m = l.and(pos, in_range);
        if act == Activation::Relu6 {
            let six = l.c(6.0);
            let below = l.cmp(CmpOp::Lt, zl, six);
            m = l.and(m, below);
        }
        l.keep(m, d)
    }))
}

/// `fake_quant` with its range as operands, or from the input itself (`last_value`) or a
/// constant; after a ReLU/ReLU6 the two clamps merge into one.
pub fn fake_quant_op(cx: &mut Lower, q: &FakeQuantAttrs) -> Result<Val> {
    let s = cx.out_shape();
    let x = cx.arg(0);
    let r = range(cx, q, &x)?;
    let x_id = cx.g.operands(cx.node_id())[0];
    Ok(match activation_of(cx.g, x_id) {
        // clamp(act(z), nmin, nmax) in one clamp of z (see `active_upper`)
        Some((act, z_id)) => {
            let z = cx.val_of(z_id);
            cx.map("", &s, |l| {
                let zl = l.leaf(same(&z, &s));
                let rl = range_leaves(l, &r, q, &s);
                let hi = active_upper(l, act, rl[1]);
                let zero = l.c(0.0);
                let c = l.clamp(zl, zero, hi);
                quantize_clamped(l, c, rl)
            })
        }
        None => cx.map("", &s, |l| {
            let xv = l.leaf(same(&x, &s));
            let rl = range_leaves(l, &r, q, &s);
            fake_quant(l, xv, rl)
        }),
    })
}

/// `fake_quant_grad(dy, x, min, max)`: `dy` inside the nudged range, 0 outside.
pub fn fake_quant_grad(cx: &mut Lower, q: &FakeQuantAttrs) -> Result<Val> {
    let s = cx.out_shape();
    let (dy, x, lo, hi) = (cx.arg(0), cx.arg(1), cx.arg(2), cx.arg(3));
    let n = channels(q, &x.shape);
    let r = nudge_runtime(cx, q, lo.vt, hi.vt, n);
    Ok(cx.map("", &s, |l| {
        let d = l.leaf(same(&dy, &s));
        let xv = l.leaf(same(&x, &s));
        let [nmin, nmax, ..] = range_leaves(l, &r, q, &s);
        let m1 = l.cmp(CmpOp::Ge, xv, nmin);
        let m2 = l.cmp(CmpOp::Le, xv, nmax);
        let m = l.and(m1, m2);
        l.keep(m, d)
    }))
}

/// `fake_quant_range_grad(dy, x, min, max)`: each element's share of the gradient of one
/// range end, as [`crate::ir::fake_quant::range_grad`] computes it (same rounding, same
/// routing of a symmetric range's widened ends), times `grad_scale`.
pub fn fake_quant_range_grad(
    cx: &mut Lower,
    q: &FakeQuantAttrs,
    end: RangeEnd,
    grad_scale: F32,
) -> Result<Val> {
    let method = q
        .range
        .trained()
        .ok_or_else(|| cx.unsupported("fake_quant_range_grad of a range that is not trained"))?;
    let s = cx.out_shape();
    let (dy, x, lo, hi) = (cx.arg(0), cx.arg(1), cx.arg(2), cx.arg(3));
    let n = channels(q, &x.shape);
    let r = nudge_runtime(cx, q, lo.vt, hi.vt, n);
    let (qmin, qmax) = q.quant_range();
    let steps = (qmax - qmin) as f32;
    Ok(cx.map("", &s, |l| {
        let d = l.leaf(same(&dy, &s));
        let xv = l.leaf(same(&x, &s));
        let [nmin, nmax, _, inv, _] = range_leaves(l, &r, q, &s);
        let zero = l.c(0.0);
        let below = l.cmp(CmpOp::Lt, xv, nmin);
        let above = l.cmp(CmpOp::Gt, xv, nmax);
        // inside: LSQ's rounding error, (round(u) - u) / L with u = (x - nmin) * inv
        let (in_lo, in_hi) = match method {
            RangeLearning::Pact => (zero, zero),
            RangeLearning::Lsq => {
                let u = l.sub(xv, nmin);
                let u = l.mul(u, inv);
                let half = l.c(0.5);
                let t = l.add(u, half);
                let rounded = l.un(UnOp::Floor, t);
                let e = l.sub(rounded, u);
                let de = l.mul(d, e);
                let per_step = l.c(steps);
                let hi = l.div(de, per_step);
                let lo = l.sub(zero, hi);
                (lo, hi)
            }
        };
        let inside_lo = l.select(above, zero, in_lo);
        let d_lo = l.select(below, d, inside_lo);
        let inside_hi = l.select(below, zero, in_hi);
        let d_hi = l.select(above, d, inside_hi);
        let g = if q.symmetric {
            // the raw ends, per channel like the nudged range
            let strides: Vec<isize> = (0..s.len())
                .map(|k| if Some(k) == q.axis { 1 } else { 0 })
                .collect();
            let raw_min = l.leaf(Access {
                vt: lo.vt,
                offset: 0,
                strides: strides.clone(),
            });
            let raw_max = l.leaf(Access {
                vt: hi.vt,
                offset: 0,
                strides,
            });
            let ratio = l.c(symmetric_ratio(q.bits, q.narrow));
            let min_over = l.div(raw_min, ratio);
            let max_over = l.div(raw_max, ratio);
            let hi_is_max = l.cmp(CmpOp::Ge, raw_max, min_over);
            let lo_is_min = l.cmp(CmpOp::Le, raw_min, max_over);
            match end {
                RangeEnd::Min => {
                    let from_lo = l.keep(lo_is_min, d_lo);
                    let moved = l.div(d_hi, ratio);
                    let from_hi = l.select(hi_is_max, zero, moved);
                    l.add(from_lo, from_hi)
                }
                RangeEnd::Max => {
                    let from_hi = l.keep(hi_is_max, d_hi);
                    let moved = l.div(d_lo, ratio);
                    let from_lo = l.select(lo_is_min, zero, moved);
                    l.add(from_hi, from_lo)
                }
            }
        } else {
            match end {
                RangeEnd::Min => d_lo,
                RangeEnd::Max => d_hi,
            }
        };
        let scale = l.c(grad_scale.0);
        l.mul(g, scale)
    }))
}
