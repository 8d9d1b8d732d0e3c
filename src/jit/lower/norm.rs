//! BatchNorm: the inference form, the training form (batch statistics), and the gradients
//! through batch statistics. The per-channel statistics and sums are computed once per tensor
//! and shared between `batch_norm_train`, `batch_mean`/`batch_var`, `batch_norm_grad_input`,
//! `batch_norm_grad_gamma` and the beta gradient's `reduce_sum`.

use super::collective::combined_together;
use super::context::{along, reduced, same, Lower, Val};
use super::stats::{inv_std, train_affine};
use crate::error::Result;
use crate::ir::op::{Reduce, F32};
use crate::jit::lir::{Access, Inst, RedKind, UnOp};

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
    let dxc = l.mul(d, xc);
    let dx = l.mul(dxc, iv);
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

/// `batch_norm` (inference): one fused multiply-add per element with per-channel coefficients.
pub fn batch_norm(cx: &mut Lower, epsilon: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let r = s.len();
    let v = {
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
    };
    Ok(Val { vt: v.vt, shape: s })
}

/// `batch_norm_train`: normalized with the batch's own statistics.
pub fn batch_norm_train(cx: &mut Lower, epsilon: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let r = s.len();
    let v = {
        let (x, gamma, beta) = (cx.arg(0), cx.arg(1), cx.arg(2));
        let coef = train_affine(cx, &x, &gamma, &beta, epsilon.0);
        let n = gamma.numel();
        cx.map("", &s, |l| {
            let xv = l.leaf(same(&x, &s));
            let a = l.leaf(along(coef, 0, &s, r - 1));
            let b = l.leaf(along(coef, n, &s, r - 1));
            l.fma(xv, a, b)
        })
    };
    Ok(Val { vt: v.vt, shape: s })
}

/// `batch_norm_grad_input`: `k1*dy + k2*x + k3` with per-channel coefficients.
pub fn batch_norm_grad_input(cx: &mut Lower, epsilon: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let r = s.len();
    let v = {
        let (dy, x, gamma) = (cx.arg(0), cx.arg(1), cx.arg(2));
        let (mean, _, inv) = inv_std(cx, &x, epsilon.0);
        let (sdy, sdyx) = grad_sums(cx, &dy, &x, epsilon.0);
        // over the ranks of a data-parallel step: the mean of the ranks' sums over equal
        // shards, divided by one shard's count, is the global batch's mean
        let [sdy, sdyx] = combined_together(cx, "bn_sums", [&sdy, &sdyx], Reduce::Mean);
        let m = (x.numel() / mean.numel().max(1)) as f32;
        // gamma*inv/m * (m*dy - sum_dy - x_hat*sum_dy_xhat) = k1*dy + k2*x + k3 with
        // per-channel k1 = gamma*inv, k2 = -(k1/m)*sum_dy_xhat*inv,
        // k3 = -(k1/m)*sum_dy - k2*mean
        let c = mean.shape.clone();
        let n = c[0];
        let coef = cx.temp("coef", 3 * n);
        let mut l = cx.new_loop("coef", &c);
        let g = l.leaf(same(&gamma, &c));
        let iv = l.leaf(same(&inv, &c));
        let mv = l.leaf(same(&mean, &c));
        let s1 = l.leaf(same(&sdy, &c));
        let s2 = l.leaf(same(&sdyx, &c));
        let k1 = l.mul(g, iv);
        let mc = l.c(m);
        let a = l.div(k1, mc);
        let t = l.mul(a, s2);
        let t = l.mul(t, iv);
        let k2 = l.un(UnOp::Neg, t);
        let as1 = l.mul(a, s1);
        let k2m = l.mul(k2, mv);
        let t = l.add(as1, k2m);
        let k3 = l.un(UnOp::Neg, t);
        for (i, k) in [k1, k2, k3].into_iter().enumerate() {
            l.store(
                k,
                Access {
                    vt: coef,
                    offset: i * n,
                    strides: vec![1],
                },
            );
        }
        cx.push(Inst::Loop(l));
        cx.map("", &s, |l| {
            let d = l.leaf(same(&dy, &s));
            let xv = l.leaf(same(&x, &s));
            let k1 = l.leaf(along(coef, 0, &s, r - 1));
            let k2 = l.leaf(along(coef, n, &s, r - 1));
            let k3 = l.leaf(along(coef, 2 * n, &s, r - 1));
            let t = l.fma(k2, xv, k3);
            l.fma(k1, d, t)
        })
    };
    Ok(Val { vt: v.vt, shape: s })
}

/// `batch_norm_grad_gamma`: `sum(dy * x_hat)` per channel.
pub fn batch_norm_grad_gamma(cx: &mut Lower, epsilon: &F32) -> Result<Val> {
    let s = cx.out_shape();
    let _r = s.len();
    let v = {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        grad_sums(cx, &dy, &x, epsilon.0).1
    };
    Ok(Val { vt: v.vt, shape: s })
}
