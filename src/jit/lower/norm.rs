//! BatchNorm: the inference form, the training form (batch statistics), and the gradients
//! through batch statistics. The per-channel statistics and sums are computed once per tensor
//! and shared between `batch_norm_train`, `batch_mean`/`batch_var`, `batch_norm_grad_input`,
//! `batch_norm_grad_gamma` and the beta gradient's `reduce_sum`.

use super::reduce::moments;
use super::{along, reduced, same, Lower, Val};
use crate::error::Result;
use crate::ir::op::Op;
use crate::jit::lir::{Access, Inst, RedKind, UnOp};

/// `1 / sqrt(var + eps)` per channel, once per (tensor, epsilon).
fn inv_std(cx: &mut Lower, x: &Val, eps: f32) -> (Val, Val, Val) {
    let (mean, var) = moments(cx, x);
    let key = format!("invstd:{}:{}", x.vt, eps.to_bits());
    let c = mean.shape.clone();
    if let Some(v) = cx.memo.get(&key) {
        let inv = Val {
            vt: v[0],
            shape: c,
        };
        return (mean, var, inv);
    }
    let inv = cx.map("invstd", &c, |l| {
        let v = l.leaf(same(&var, &c));
        let e = l.c(eps);
        let t = l.add(v, e);
        let s = l.un(UnOp::Sqrt, t);
        let one = l.c(1.0);
        l.div(one, s)
    });
    cx.memo.insert(key, vec![inv.vt]);
    (mean, var, inv)
}

/// Per-channel `sum(dy)` and `sum(dy * x_hat)` for the BatchNorm gradients.
fn grad_sums(cx: &mut Lower, dy: &Val, x: &Val, eps: f32) -> (Val, Val) {
    let (mean, _, inv) = inv_std(cx, x, eps);
    let c = mean.shape.clone();
    let key = format!("bnsums:{}:{}:{}", dy.vt, x.vt, eps.to_bits());
    if let Some(v) = cx.memo.get(&key) {
        return (
            Val {
                vt: v[0],
                shape: c.clone(),
            },
            Val { vt: v[1], shape: c },
        );
    }
    let s = x.shape.clone();
    let r = s.len();
    let chan_key = format!("chansum:{}", dy.vt);
    let have_sum = cx.memo.get(&chan_key).map(|v| v[0]);
    let sdyx = cx.temp("sum_dy_xhat", c[0]);
    let mut l = cx.new_loop("sums", &s);
    let d = l.leaf(same(dy, &s));
    let xv = l.leaf(same(x, &s));
    let mv = l.leaf(along(mean.vt, 0, &s, r - 1));
    let iv = l.leaf(along(inv.vt, 0, &s, r - 1));
    let xc = l.sub(xv, mv);
    let xhat = l.mul(xc, iv);
    let dx = l.mul(d, xhat);
    l.reduce(dx, RedKind::Sum, 0.0, 1.0, reduced(sdyx, &s, &[r - 1]));
    let sdy = match have_sum {
        Some(vt) => vt,
        None => {
            let vt = cx.temp("sum_dy", c[0]);
            l.reduce(d, RedKind::Sum, 0.0, 1.0, reduced(vt, &s, &[r - 1]));
            cx.memo.insert(chan_key, vec![vt]);
            vt
        }
    };
    cx.push(Inst::Loop(l));
    cx.memo.insert(key, vec![sdy, sdyx]);
    (
        Val {
            vt: sdy,
            shape: c.clone(),
        },
        Val { vt: sdyx, shape: c },
    )
}

pub fn lower(cx: &mut Lower, op: &Op) -> Result<Val> {
    let s = cx.out_shape();
    let r = s.len();
    let ch = |v: &Val, s: &[usize]| -> Access { along(v.vt, 0, s, s.len() - 1) };
    let v = match op {
        Op::BatchNorm { epsilon, .. } => {
            let eps = epsilon.0;
            let (x, gamma, beta, mean, var) = (cx.arg(0), cx.arg(1), cx.arg(2), cx.arg(3), cx.arg(4));
            let c = gamma.shape.clone();
            // scale = gamma / sqrt(var + eps); shift = beta - mean * scale
            let coef = cx.temp("coef", 2 * c[0]);
            let mut l = cx.new_loop("coef", &c);
            let g = l.leaf(same(&gamma, &c));
            let b = l.leaf(same(&beta, &c));
            let m = l.leaf(same(&mean, &c));
            let v = l.leaf(same(&var, &c));
            let e = l.c(eps);
            let t = l.add(v, e);
            let sq = l.un(UnOp::Sqrt, t);
            let scale = l.div(g, sq);
            let ms = l.mul(m, scale);
            let shift = l.sub(b, ms);
            l.store(scale, Access::identity(coef, &c));
            l.store(
                shift,
                Access {
                    vt: coef,
                    offset: c[0],
                    strides: vec![1],
                },
            );
            cx.push(Inst::Loop(l));
            cx.map("", &s, |l| {
                let xv = l.leaf(same(&x, &s));
                let sc = l.leaf(along(coef, 0, &s, r - 1));
                let sh = l.leaf(along(coef, c[0], &s, r - 1));
                l.fma(xv, sc, sh)
            })
        }
        Op::BatchNormTrain { epsilon } => {
            let (x, gamma, beta) = (cx.arg(0), cx.arg(1), cx.arg(2));
            let (mean, _, inv) = inv_std(cx, &x, epsilon.0);
            cx.map("", &s, |l| {
                let xv = l.leaf(same(&x, &s));
                let mv = l.leaf(ch(&mean, &s));
                let iv = l.leaf(ch(&inv, &s));
                let gv = l.leaf(ch(&gamma, &s));
                let bv = l.leaf(ch(&beta, &s));
                let xc = l.sub(xv, mv);
                let sg = l.mul(iv, gv);
                l.fma(xc, sg, bv)
            })
        }
        Op::BatchNormGradInput { epsilon } => {
            let (dy, x, gamma) = (cx.arg(0), cx.arg(1), cx.arg(2));
            let (mean, _, inv) = inv_std(cx, &x, epsilon.0);
            let (sdy, sdyx) = grad_sums(cx, &dy, &x, epsilon.0);
            let m = (x.numel() / mean.numel().max(1)) as f32;
            cx.map("", &s, |l| {
                let d = l.leaf(same(&dy, &s));
                let xv = l.leaf(same(&x, &s));
                let mv = l.leaf(ch(&mean, &s));
                let iv = l.leaf(ch(&inv, &s));
                let gv = l.leaf(ch(&gamma, &s));
                let s1 = l.leaf(ch(&sdy, &s));
                let s2 = l.leaf(ch(&sdyx, &s));
                // gamma * inv / m * (m*dy - sum_dy - x_hat * sum_dy_xhat)
                let xc = l.sub(xv, mv);
                let xhat = l.mul(xc, iv);
                let mc = l.c(m);
                let md = l.mul(mc, d);
                let t = l.sub(md, s1);
                let xs = l.mul(xhat, s2);
                let t = l.sub(t, xs);
                let gi = l.mul(gv, iv);
                let a = l.div(gi, mc);
                l.mul(a, t)
            })
        }
        Op::BatchNormGradGamma { epsilon } => {
            let (dy, x) = (cx.arg(0), cx.arg(1));
            grad_sums(cx, &dy, &x, epsilon.0).1
        }
        other => unreachable!("{} is not a BatchNorm op", other.name()),
    };
    Ok(Val {
        vt: v.vt,
        shape: s,
    })
}
