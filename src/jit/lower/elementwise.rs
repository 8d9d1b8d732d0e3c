//! Elementwise ops: activations and their gradients, broadcasting arithmetic, optimizer
//! and observer state updates, dropout masks. Each becomes one [`Loop`] storing its result;
//! fusion later merges chains of them into single passes.
//!
//! Where the reference computes a value with a particular operation order (fake-quant
//! rounding, hard-swish's `x * c / 6`), the same order is kept so results match bit for
//! bit; `Fma` nodes mark where a fused multiply-add may change the last bit.

use super::{along, bcast, same, scalar, Lower, Val};
use crate::error::Result;
use crate::ir::op::{Activation, Op};
use crate::jit::lir::{CmpOp, ENode, Loop, NodeIx, UnOp};

/// Applies a fused activation.
pub fn activation(l: &mut Loop, a: Activation, x: NodeIx) -> NodeIx {
    match a {
        Activation::None => x,
        Activation::Relu => {
            let z = l.c(0.0);
            l.max(x, z)
        }
        Activation::Relu6 => {
            let z = l.c(0.0);
            let six = l.c(6.0);
            l.clamp(x, z, six)
        }
    }
}

/// `1 / (1 + e^-x)`
pub fn sigmoid(l: &mut Loop, x: NodeIx) -> NodeIx {
    let nx = l.un(UnOp::Neg, x);
    let e = l.un(UnOp::Exp, nx);
    let one = l.c(1.0);
    let d = l.add(one, e);
    l.div(one, d)
}

/// `sign(x) (1 - e^-2|x|) / (1 + e^-2|x|)`
pub fn tanh(l: &mut Loop, x: NodeIx) -> NodeIx {
    let ax = l.un(UnOp::Abs, x);
    let m2 = l.c(-2.0);
    let t = l.mul(ax, m2);
    let e = l.un(UnOp::Exp, t);
    let one = l.c(1.0);
    let num = l.sub(one, e);
    let den = l.add(one, e);
    let r = l.div(num, den);
    let nr = l.un(UnOp::Neg, r);
    let z = l.c(0.0);
    let neg = l.cmp(CmpOp::Lt, x, z);
    l.select(neg, nr, r)
}

pub fn lower(cx: &mut Lower, op: &Op) -> Result<Val> {
    // the gradient of an activation through its own fake-quant: one mask
    let act = match op {
        Op::ReluGrad => Some(Activation::Relu),
        Op::Relu6Grad => Some(Activation::Relu6),
        _ => None,
    };
    if let Some(v) = act.and_then(|a| super::quant::activation_grad_through_fake_quant(cx, a)) {
        return Ok(v);
    }
    let shape = cx.out_shape();
    let s = shape.clone();
    use Op::*;
    // unary ops on operand 0
    let unary = |cx: &mut Lower, f: &dyn Fn(&mut Loop, NodeIx) -> NodeIx| {
        let x = cx.arg(0);
        cx.map("", &s, |l| {
            let xv = l.leaf(same(&x, &s));
            f(l, xv)
        })
    };
    // (dy, x) gradient ops
    let grad = |cx: &mut Lower, f: &dyn Fn(&mut Loop, NodeIx, NodeIx) -> NodeIx| {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        cx.map("", &s, |l| {
            let d = l.leaf(same(&dy, &s));
            let xv = l.leaf(same(&x, &s));
            f(l, d, xv)
        })
    };
    let v = match op {
        Relu => unary(cx, &|l, x| activation(l, Activation::Relu, x)),
        Relu6 => unary(cx, &|l, x| activation(l, Activation::Relu6, x)),
        LeakyRelu { alpha } => {
            let a = alpha.0;
            unary(cx, &|l, x| {
                let z = l.c(0.0);
                let ge = l.cmp(CmpOp::Ge, x, z);
                let al = l.c(a);
                let ax = l.mul(al, x);
                l.select(ge, x, ax)
            })
        }
        HardSwish => unary(cx, &|l, x| {
            let three = l.c(3.0);
            let t = l.add(x, three);
            let z = l.c(0.0);
            let six = l.c(6.0);
            let c = l.clamp(t, z, six);
            let p = l.mul(x, c);
            l.div(p, six)
        }),
        Sigmoid => unary(cx, &|l, x| sigmoid(l, x)),
        Tanh => unary(cx, &|l, x| tanh(l, x)),
        Add { activation: a } | Sub { activation: a } | Mul { activation: a } => {
            let (x, y) = (cx.arg(0), cx.arg(1));
            let a = *a;
            let kind = op.kind();
            cx.map("", &s, |l| {
                let xv = l.leaf(bcast(&x, &s));
                let yv = l.leaf(bcast(&y, &s));
                let r = match kind {
                    crate::ir::OpKind::Add => l.add(xv, yv),
                    crate::ir::OpKind::Sub => l.sub(xv, yv),
                    _ => l.mul(xv, yv),
                };
                activation(l, a, r)
            })
        }
        ReluGrad => grad(cx, &|l, d, x| {
            let z = l.c(0.0);
            let m = l.cmp(CmpOp::Gt, x, z);
            l.keep(m, d)
        }),
        Relu6Grad => grad(cx, &|l, d, x| {
            let z = l.c(0.0);
            let six = l.c(6.0);
            let m1 = l.cmp(CmpOp::Gt, x, z);
            let m2 = l.cmp(CmpOp::Lt, x, six);
            let m = l.and(m1, m2);
            l.keep(m, d)
        }),
        LeakyReluGrad { alpha } => {
            let a = alpha.0;
            grad(cx, &|l, d, x| {
                let z = l.c(0.0);
                let m = l.cmp(CmpOp::Gt, x, z);
                let al = l.c(a);
                let ad = l.mul(al, d);
                l.select(m, d, ad)
            })
        }
        HardSwishGrad => grad(cx, &|l, d, x| {
            let m3 = l.c(-3.0);
            let p3 = l.c(3.0);
            let two = l.c(2.0);
            let six = l.c(6.0);
            let z = l.c(0.0);
            let t = l.mul(two, x);
            let t = l.add(t, p3);
            let mid = l.mul(d, t);
            let mid = l.div(mid, six);
            let above = l.cmp(CmpOp::Gt, x, p3);
            let hi = l.select(above, d, mid);
            let below = l.cmp(CmpOp::Lt, x, m3);
            l.select(below, z, hi)
        }),
        SigmoidGrad => grad(cx, &|l, d, y| {
            let one = l.c(1.0);
            let dy = l.mul(d, y);
            let om = l.sub(one, y);
            l.mul(dy, om)
        }),
        TanhGrad => grad(cx, &|l, d, y| {
            let one = l.c(1.0);
            let yy = l.mul(y, y);
            let om = l.sub(one, yy);
            l.mul(d, om)
        }),
        MovingAverage { momentum } => {
            let m = momentum.0;
            grad(cx, &|l, old, v| {
                let mc = l.c(m);
                let om = l.c(1.0 - m);
                let t = l.mul(v, om);
                l.fma(old, mc, t)
            })
        }
        AdamMoment { beta } => {
            let b = beta.0;
            grad(cx, &|l, m, g| {
                let bc = l.c(b);
                let ob = l.c(1.0 - b);
                let t = l.mul(ob, g);
                l.fma(bc, m, t)
            })
        }
        AdamMomentSq { beta } => {
            let b = beta.0;
            grad(cx, &|l, v, g| {
                let bc = l.c(b);
                let ob = l.c(1.0 - b);
                let t = l.mul(ob, g);
                let t = l.mul(t, g);
                l.fma(bc, v, t)
            })
        }
        SgdVelocity { momentum } => {
            let m = momentum.0;
            let (v, g, lr) = (cx.arg(0), cx.arg(1), cx.arg(2));
            cx.map("", &s, |l| {
                let vv = l.leaf(same(&v, &s));
                let gv = l.leaf(same(&g, &s));
                let lrv = l.leaf(scalar(lr.vt, &s));
                let mc = l.c(m);
                let lg = l.mul(lrv, gv);
                let mv = l.mul(mc, vv);
                l.sub(mv, lg)
            })
        }
        AdamApply { epsilon } => {
            let eps = epsilon.0;
            let (p, m, v, lr) = (cx.arg(0), cx.arg(1), cx.arg(2), cx.arg(3));
            cx.map("", &s, |l| {
                let pv = l.leaf(same(&p, &s));
                let mv = l.leaf(same(&m, &s));
                let vv = l.leaf(same(&v, &s));
                let lrv = l.leaf(scalar(lr.vt, &s));
                let sq = l.un(UnOp::Sqrt, vv);
                let e = l.c(eps);
                let den = l.add(sq, e);
                let num = l.mul(lrv, mv);
                let q = l.div(num, den);
                l.sub(pv, q)
            })
        }
        EmaUpdate { .. } | RunningMin | RunningMax => {
            let (old, val, step) = (cx.arg(0), cx.arg(1), cx.arg(2));
            let op = op.clone();
            cx.map("", &s, |l| {
                let o = l.leaf(same(&old, &s));
                let v = l.leaf(same(&val, &s));
                let st = l.leaf(scalar(step.vt, &s));
                let z = l.c(0.0);
                let first = l.cmp(CmpOp::Eq, st, z);
                let later = match op {
                    EmaUpdate { decay } => {
                        let d = l.c(decay.0);
                        let od = l.c(1.0 - decay.0);
                        let t = l.mul(v, od);
                        l.fma(o, d, t)
                    }
                    RunningMin => l.min(o, v),
                    _ => l.max(o, v),
                };
                l.select(first, v, later)
            })
        }
        DropoutMask { rate, seed, .. } => {
            let step = cx.arg(0);
            let (rate, seed) = (rate.0, *seed);
            cx.map("", &s, |l| {
                let st = l.leaf(scalar(step.vt, &s));
                l.node(ENode::DropoutKeep {
                    step: st,
                    seed,
                    rate: rate.to_bits(),
                })
            })
        }
        ScaleChannels { axis } => {
            let (w, sc) = (cx.arg(0), cx.arg(1));
            let axis = *axis;
            cx.map("", &s, |l| {
                let wv = l.leaf(same(&w, &s));
                let sv = l.leaf(along(sc.vt, 0, &s, axis));
                l.mul(wv, sv)
            })
        }
        BnScale { epsilon } => {
            let eps = epsilon.0;
            grad(cx, &|l, g, v| {
                let e = l.c(eps);
                let t = l.add(v, e);
                let sq = l.un(UnOp::Sqrt, t);
                l.div(g, sq)
            })
        }
        other => unreachable!("{} is not elementwise", other.name()),
    };
    Ok(v)
}
