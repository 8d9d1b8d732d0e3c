//! Elementwise ops: activations and their gradients, broadcasting arithmetic, optimizer
//! and observer state updates, dropout masks. Each becomes one [`Loop`] storing its result;
//! fusion later merges chains of them into single passes.
//!
//! Where the reference computes a value with a particular operation order (fake-quant
//! rounding, hard-swish's `x * c / 6`), the same order is kept so results match bit for
//! bit; `Fma` nodes mark where a fused multiply-add may change the last bit.

use super::context::{along, bcast, same, scalar, Lower, Val};
use crate::error::Result;
use crate::ir::op::{Activation, F32};
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

/// `f(x)` over operand 0.
fn unary(cx: &mut Lower, s: &[usize], f: &dyn Fn(&mut Loop, NodeIx) -> NodeIx) -> Val {
    let x = cx.arg(0);
    cx.map("", s, |l| {
        let xv = l.leaf(same(&x, s));
        f(l, xv)
    })
}

/// `f(a, b)` over operands 0 and 1 of the same shape (`(dy, x)` gradients, state updates).
fn grad(cx: &mut Lower, s: &[usize], f: &dyn Fn(&mut Loop, NodeIx, NodeIx) -> NodeIx) -> Val {
    let (a, b) = (cx.arg(0), cx.arg(1));
    cx.map("", s, |l| {
        let av = l.leaf(same(&a, s));
        let bv = l.leaf(same(&b, s));
        f(l, av, bv)
    })
}

/// The arithmetic of `add`, `sub`, `mul`.
#[derive(Clone, Copy)]
pub enum Arith {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
}

/// What a `(old, value, step)` update becomes after its first step.
#[derive(Clone, Copy)]
pub enum Later {
    /// `ema_update`: `decay*old + (1-decay)*value`.
    Ema {
        /// The weight of the old value.
        decay: f32,
    },
    /// `running_min`
    Min,
    /// `running_max`
    Max,
}

/// `relu`
pub fn relu(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = { unary(cx, &s, &|l, x| activation(l, Activation::Relu, x)) };
    Ok(v)
}

/// `relu6`
pub fn relu6(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = { unary(cx, &s, &|l, x| activation(l, Activation::Relu6, x)) };
    Ok(v)
}

/// `leaky_relu`
pub fn leaky_relu(cx: &mut Lower, alpha: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let a = alpha.0;
        unary(cx, &s, &|l, x| {
            let z = l.c(0.0);
            let ge = l.cmp(CmpOp::Ge, x, z);
            let al = l.c(a);
            let ax = l.mul(al, x);
            l.select(ge, x, ax)
        })
    };
    Ok(v)
}

/// `thresholded_relu(x)`: `x` above `theta`, `0` at and below.
pub fn thresholded_relu(cx: &mut Lower, theta: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let t = theta.0;
    Ok(unary(cx, &s, &|l, x| {
        let th = l.c(t);
        let gt = l.cmp(CmpOp::Gt, x, th);
        let z = l.c(0.0);
        l.select(gt, x, z)
    }))
}

/// `prelu(x, alpha)`: `x` for `x >= 0`, `alpha * x` below; the slope broadcasts.
pub fn prelu(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let (x, alpha) = (cx.arg(0), cx.arg(1));
    Ok(cx.map("", &s, |l| {
        let xv = l.leaf(same(&x, &s));
        let av = l.leaf(bcast(&alpha, &s));
        let z = l.c(0.0);
        let ge = l.cmp(CmpOp::Ge, xv, z);
        let ax = l.mul(av, xv);
        l.select(ge, xv, ax)
    }))
}

/// `prelu_grad_input(dy, x, alpha)`: `dy` for `x > 0`, `alpha * dy` elsewhere.
pub fn prelu_grad_input(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let (dy, x, alpha) = (cx.arg(0), cx.arg(1), cx.arg(2));
    Ok(cx.map("", &s, |l| {
        let d = l.leaf(same(&dy, &s));
        let xv = l.leaf(same(&x, &s));
        let av = l.leaf(bcast(&alpha, &s));
        let z = l.c(0.0);
        let gt = l.cmp(CmpOp::Gt, xv, z);
        let ad = l.mul(av, d);
        l.select(gt, d, ad)
    }))
}

/// `prelu_grad_alpha(dy, x)`: `dy * min(x, 0)`.
pub fn prelu_grad_alpha(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    Ok(grad(cx, &s, &|l, d, x| {
        let z = l.c(0.0);
        let neg = l.min(x, z);
        l.mul(d, neg)
    }))
}

/// `hard_swish`: `x * clamp(x + 3, 0, 6) / 6`, in the reference's operation order.
pub fn hard_swish(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        unary(cx, &s, &|l, x| {
            let three = l.c(3.0);
            let t = l.add(x, three);
            let z = l.c(0.0);
            let six = l.c(6.0);
            let c = l.clamp(t, z, six);
            let p = l.mul(x, c);
            l.div(p, six)
        })
    };
    Ok(v)
}

/// `sigmoid`
pub fn sigmoid_op(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = { unary(cx, &s, &|l, x| sigmoid(l, x)) };
    Ok(v)
}

/// `tanh`
pub fn tanh_op(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = { unary(cx, &s, &|l, x| tanh(l, x)) };
    Ok(v)
}

/// `add`, `sub`, `mul` with numpy broadcasting and a fused activation.
pub fn arith(cx: &mut Lower, arith: Arith, a: &Activation) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let (x, y) = (cx.arg(0), cx.arg(1));
        let a = *a;
        cx.map("", &s, |l| {
            let xv = l.leaf(bcast(&x, &s));
            let yv = l.leaf(bcast(&y, &s));
            let r = match arith {
                Arith::Add => l.add(xv, yv),
                Arith::Sub => l.sub(xv, yv),
                Arith::Mul => l.mul(xv, yv),
            };
            activation(l, a, r)
        })
    };
    Ok(v)
}

/// `relu_grad(dy, x)`
pub fn relu_grad(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        // the gradient of an activation through its own fake-quant: one mask
        if let Some(v) = super::quant::activation_grad_through_fake_quant(cx, Activation::Relu) {
            return Ok(v);
        }
        grad(cx, &s, &|l, d, x| {
            let z = l.c(0.0);
            let m = l.cmp(CmpOp::Gt, x, z);
            l.keep(m, d)
        })
    };
    Ok(v)
}

/// `relu6_grad(dy, x)`
pub fn relu6_grad(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        if let Some(v) = super::quant::activation_grad_through_fake_quant(cx, Activation::Relu6) {
            return Ok(v);
        }
        grad(cx, &s, &|l, d, x| {
            let z = l.c(0.0);
            let six = l.c(6.0);
            let m1 = l.cmp(CmpOp::Gt, x, z);
            let m2 = l.cmp(CmpOp::Lt, x, six);
            let m = l.and(m1, m2);
            l.keep(m, d)
        })
    };
    Ok(v)
}

/// `leaky_relu_grad(dy, x)`
pub fn leaky_relu_grad(cx: &mut Lower, alpha: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let a = alpha.0;
        grad(cx, &s, &|l, d, x| {
            let z = l.c(0.0);
            let m = l.cmp(CmpOp::Gt, x, z);
            let al = l.c(a);
            let ad = l.mul(al, d);
            l.select(m, d, ad)
        })
    };
    Ok(v)
}

/// `thresholded_relu_grad(dy, x)`: `dy` where `x > theta`, else `0`.
pub fn thresholded_relu_grad(cx: &mut Lower, theta: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let t = theta.0;
    Ok(grad(cx, &s, &|l, d, x| {
        let th = l.c(t);
        let m = l.cmp(CmpOp::Gt, x, th);
        let z = l.c(0.0);
        l.select(m, d, z)
    }))
}

/// `hard_swish_grad(dy, x)`
pub fn hard_swish_grad(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        grad(cx, &s, &|l, d, x| {
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
        })
    };
    Ok(v)
}

/// `sigmoid_grad(dy, y)`
pub fn sigmoid_grad(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        grad(cx, &s, &|l, d, y| {
            let one = l.c(1.0);
            let dy = l.mul(d, y);
            let om = l.sub(one, y);
            l.mul(dy, om)
        })
    };
    Ok(v)
}

/// `tanh_grad(dy, y)`
pub fn tanh_grad(cx: &mut Lower) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        grad(cx, &s, &|l, d, y| {
            let one = l.c(1.0);
            let yy = l.mul(y, y);
            let om = l.sub(one, yy);
            l.mul(d, om)
        })
    };
    Ok(v)
}

/// `moving_average(old, value)`
pub fn moving_average(cx: &mut Lower, momentum: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let m = momentum.0;
        grad(cx, &s, &|l, old, v| {
            let mc = l.c(m);
            let om = l.c(1.0 - m);
            let t = l.mul(v, om);
            l.fma(old, mc, t)
        })
    };
    Ok(v)
}

/// `adam_moment(m, g)`
pub fn adam_moment(cx: &mut Lower, beta: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let b = beta.0;
        grad(cx, &s, &|l, m, g| {
            let bc = l.c(b);
            let ob = l.c(1.0 - b);
            let t = l.mul(ob, g);
            l.fma(bc, m, t)
        })
    };
    Ok(v)
}

/// `adam_moment_sq(v, g)`
pub fn adam_moment_sq(cx: &mut Lower, beta: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let b = beta.0;
        grad(cx, &s, &|l, v, g| {
            let bc = l.c(b);
            let ob = l.c(1.0 - b);
            let t = l.mul(ob, g);
            let t = l.mul(t, g);
            l.fma(bc, v, t)
        })
    };
    Ok(v)
}

/// `sgd_velocity(v, g, lr)`
pub fn sgd_velocity(cx: &mut Lower, momentum: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
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
    };
    Ok(v)
}

/// `adam_apply(p, m, v, lr)`
pub fn adam_apply(cx: &mut Lower, epsilon: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
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
    };
    Ok(v)
}

/// `ema_update`, `running_min`, `running_max`: the value at step 0, `later` after.
pub fn first_then(cx: &mut Lower, later: Later) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let (old, val, step) = (cx.arg(0), cx.arg(1), cx.arg(2));
        cx.map("", &s, |l| {
            let o = l.leaf(same(&old, &s));
            let v = l.leaf(same(&val, &s));
            let st = l.leaf(scalar(step.vt, &s));
            let z = l.c(0.0);
            let first = l.cmp(CmpOp::Eq, st, z);
            let later = match later {
                Later::Ema { decay } => {
                    let d = l.c(decay);
                    let od = l.c(1.0 - decay);
                    let t = l.mul(v, od);
                    l.fma(o, d, t)
                }
                Later::Min => l.min(o, v),
                Later::Max => l.max(o, v),
            };
            l.select(first, v, later)
        })
    };
    Ok(v)
}

/// `dropout_mask(step)`: the hash of (seed, step, index) against the rate.
pub fn dropout_mask(cx: &mut Lower, rate: &F32, seed: &u64) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
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
    };
    Ok(v)
}

/// `scale_channels(w, s)`
pub fn scale_channels(cx: &mut Lower, axis: &usize) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let (w, sc) = (cx.arg(0), cx.arg(1));
        let axis = *axis;
        cx.map("", &s, |l| {
            let wv = l.leaf(same(&w, &s));
            let sv = l.leaf(along(sc.vt, 0, &s, axis));
            l.mul(wv, sv)
        })
    };
    Ok(v)
}

/// `bn_scale(gamma, var)`
pub fn bn_scale(cx: &mut Lower, epsilon: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let v = {
        let eps = epsilon.0;
        grad(cx, &s, &|l, g, v| {
            let e = l.c(eps);
            let t = l.add(v, e);
            let sq = l.un(UnOp::Sqrt, t);
            l.div(g, sq)
        })
    };
    Ok(v)
}
