//! Reductions and their gradients: observers (`observe_min/max`, per tensor or per axis),
//! `reduce_sum`, `mean`, global pools, batch statistics, and the broadcasts that are their
//! gradients. A reduction is a [`Loop`](crate::jit::lir::Loop) with a [`Red`](crate::jit::lir::Red): it fuses with
//! the elementwise loop producing its input, so an activation and its observer are one pass.

use super::context::{reduced, same, Lower, Val};
use super::stats::{moments, reduce, stats, train_affine};
use crate::error::Result;
use crate::ir::op::{Activation, Op};
use crate::ir::op::{ReduceAttrs, TrainOp};
use crate::jit::lir::{Access, Inst, RedKind};

/// `observe_min/max` (per tensor) of `act(batch_norm_train(y))`: the activation and the
/// normalization `fma(y, a_c, b_c)` are monotone per channel, so the extreme of the observed
/// tensor is the activation of the per-channel affine map of `y`'s channel extremes (from
/// the statistics pass). Bit-identical to reducing the elementwise values, and no pass of its
/// own over the tensor.
fn observe_batch_norm(cx: &mut Lower, is_min: bool) -> Option<Val> {
    let g = cx.g;
    let x_id = g.operands(cx.node_id())[0];
    let (act, z_id) = match g.node(x_id).op.as_fusable_activation() {
        Some(act) => (act, g.operands(x_id)[0]),
        None => (Activation::None, x_id),
    };
    let Op::Train(TrainOp::BatchNormTrain { epsilon }) = g.node(z_id).op else {
        return None;
    };
    let ops = g.operands(z_id);
    let (y, gamma, beta) = (cx.val_of(ops[0]), cx.val_of(ops[1]), cx.val_of(ops[2]));
    let coef = train_affine(cx, &y, &gamma, &beta, epsilon.0);
    let st = stats(cx, &y);
    let c = st.min.shape.clone();
    let n = c[0];
    let out = cx.temp("", 1);
    let mut l = cx.new_loop("", &c);
    let lo = l.leaf(Access::identity(st.min.vt, &c));
    let hi = l.leaf(Access::identity(st.max.vt, &c));
    let a = l.leaf(Access::identity(coef, &c));
    let b = l.leaf(Access {
        vt: coef,
        offset: n,
        strides: vec![1],
    });
    let p = l.fma(lo, a, b);
    let q = l.fma(hi, a, b);
    let v = if is_min { l.min(p, q) } else { l.max(p, q) };
    let v = super::elementwise::activation(&mut l, act, v);
    let kind = if is_min { RedKind::Min } else { RedKind::Max };
    // observers fold from 0: min(min(x), 0) and max(max(x), 0)
    l.reduce(v, kind, 0.0, 1.0, reduced(out, &c, &[]));
    cx.push(Inst::Loop(l));
    Some(Val {
        vt: out,
        shape: vec![],
    })
}

/// `observe_min` / `observe_max`: `min(min(x), 0)` or `max(max(x), 0)`, per `axis` when set.
pub fn observe(cx: &mut Lower, axis: &Option<usize>, is_min: bool) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        if axis.is_none() {
            if let Some(v) = observe_batch_norm(cx, is_min) {
                return Ok(Val {
                    vt: v.vt,
                    shape: out,
                });
            }
        }
        let x = cx.arg(0);
        let keep: Vec<usize> = axis.iter().copied().collect();
        let kind = if is_min { RedKind::Min } else { RedKind::Max };
        // min(min(x), 0) and max(max(x), 0): the fold starts at 0
        reduce(cx, "", &x, &keep, kind, 0.0, 1.0)
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `reduce_sum` and `mean` over some axes.
pub fn sum_or_mean(cx: &mut Lower, r: &ReduceAttrs, is_mean: bool) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let x = cx.arg(0);
        let keep: Vec<usize> = (0..x.shape.len()).filter(|d| !r.axes.contains(d)).collect();
        let count: usize = r.axes.iter().map(|&a| x.shape[a]).product();
        let scale = if is_mean {
            1.0 / count.max(1) as f32
        } else {
            1.0
        };
        if !is_mean && keep == [x.shape.len() - 1] {
            // a channel sum (BatchNorm's beta gradient): share it with the BatchNorm
            // gradient that computes the same sum
            let key = format!("chansum:{}", x.vt);
            if let Some(v) = cx.memo.get(&key) {
                return Ok(Val {
                    vt: v[0],
                    shape: out,
                });
            }
            let v = reduce(cx, "", &x, &keep, RedKind::Sum, 0.0, 1.0);
            cx.memo.insert(key, vec![v.vt]);
            v
        } else {
            reduce(cx, "", &x, &keep, RedKind::Sum, 0.0, scale)
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `global_avg_pool` / `global_max_pool` over H and W.
pub fn global_pool(cx: &mut Lower, is_avg: bool) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let x = cx.arg(0);
        let hw = (x.shape[1] * x.shape[2]) as f32;
        if is_avg {
            reduce(cx, "", &x, &[0, 3], RedKind::Sum, 0.0, 1.0 / hw)
        } else {
            reduce(cx, "", &x, &[0, 3], RedKind::Max, f32::NEG_INFINITY, 1.0)
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `global_avg_pool_grad`: dy spread evenly over H and W.
pub fn global_avg_pool_grad(cx: &mut Lower, input_shape: &[usize]) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let dy = cx.arg(0);
        let s = input_shape;
        let inv = 1.0 / (s[1] * s[2]) as f32;
        cx.map("", s, |l| {
            let d = l.leaf(reduced(dy.vt, s, &[0, 3]));
            let c = l.c(inv);
            l.mul(d, c)
        })
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `mean_grad`: dy spread evenly over the reduced axes.
pub fn mean_grad(cx: &mut Lower, axes: &[usize], input_shape: &[usize]) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let dy = cx.arg(0);
        let s = input_shape;
        let count: usize = axes.iter().map(|&a| s[a]).product();
        let inv = 1.0 / count.max(1) as f32;
        let keep: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
        cx.map("", s, |l| {
            let d = l.leaf(reduced(dy.vt, s, &keep));
            let c = l.c(inv);
            l.mul(d, c)
        })
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `batch_mean`: the mean of every channel.
pub fn batch_mean(cx: &mut Lower) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let x = cx.arg(0);
        moments(cx, &x).0
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `batch_var`: the (optionally Bessel-corrected) variance of every channel.
pub fn batch_var(cx: &mut Lower, unbiased: &bool) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let x = cx.arg(0);
        let (_, var) = moments(cx, &x);
        // the count of the global batch (the moments are the ranks' combined ones)
        let m = (x.numel() / var.numel().max(1) * cx.ranks.max(1)) as f32;
        if *unbiased && m > 1.0 {
            let corr = m / (m - 1.0);
            let s = var.shape.clone();
            cx.map("", &s, |l| {
                let v = l.leaf(same(&var, &s));
                let c = l.c(corr);
                l.mul(v, c)
            })
        } else {
            var
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}
