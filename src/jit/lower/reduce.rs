//! Reductions and their gradients: observers (`observe_min/max`, per tensor or per axis),
//! `reduce_sum`, `mean`, global pools, batch statistics, and the broadcasts that are their
//! gradients. A reduction is a [`Loop`] with a [`Red`](crate::jit::lir::Red): it fuses with
//! the elementwise loop producing its input, so an activation and its observer are one pass.

use super::{along, reduced, same, Lower, Val};
use crate::error::Result;
use crate::ir::op::Op;
use crate::jit::lir::{Inst, RedKind};

/// Reduces `x` over every axis not in `keep` into a new vt.
pub fn reduce(
    cx: &mut Lower,
    suffix: &str,
    x: &Val,
    keep: &[usize],
    kind: RedKind,
    init: f32,
    scale: f32,
) -> Val {
    let s = x.shape.clone();
    let out_numel: usize = keep.iter().map(|&d| s[d]).product();
    let vt = cx.temp(suffix, out_numel);
    let mut l = cx.new_loop(suffix, &s);
    let xv = l.leaf(same(x, &s));
    l.reduce(xv, kind, init, scale, reduced(vt, &s, keep));
    cx.push(Inst::Loop(l));
    Val {
        vt,
        shape: keep.iter().map(|&d| s[d]).collect(),
    }
}

/// Per-channel (last axis) batch mean and biased variance of `x`, computed once per tensor
/// (`batch_norm_train`, `batch_mean`, `batch_var` and the BatchNorm gradients share them).
pub fn moments(cx: &mut Lower, x: &Val) -> (Val, Val) {
    let c = *x.shape.last().unwrap_or(&1);
    let key = format!("moments:{}:{c}", x.vt);
    if let Some(v) = cx.memo.get(&key) {
        let cs = vec![c];
        return (
            Val {
                vt: v[0],
                shape: cs.clone(),
            },
            Val { vt: v[1], shape: cs },
        );
    }
    let s = x.shape.clone();
    let r = s.len();
    let m = (x.numel() / c.max(1)) as f32;
    let mean = reduce(cx, "mean", x, &[r - 1], RedKind::Sum, 0.0, 1.0 / m);
    let var_vt = cx.temp("var", c);
    let mut l = cx.new_loop("var", &s);
    let xv = l.leaf(same(x, &s));
    let mv = l.leaf(along(mean.vt, 0, &s, r - 1));
    let d = l.sub(xv, mv);
    let d2 = l.mul(d, d);
    l.reduce(d2, RedKind::Sum, 0.0, 1.0 / m, super::reduced(var_vt, &s, &[r - 1]));
    cx.push(Inst::Loop(l));
    cx.memo.insert(key, vec![mean.vt, var_vt]);
    (
        mean,
        Val {
            vt: var_vt,
            shape: vec![c],
        },
    )
}

pub fn lower(cx: &mut Lower, op: &Op) -> Result<Val> {
    let out = cx.out_shape();
    use Op::*;
    let v = match op {
        ObserveMin { axis } | ObserveMax { axis } => {
            let x = cx.arg(0);
            let keep: Vec<usize> = axis.iter().copied().collect();
            let kind = if matches!(op, ObserveMin { .. }) {
                RedKind::Min
            } else {
                RedKind::Max
            };
            // min(min(x), 0) and max(max(x), 0): the fold starts at 0
            reduce(cx, "", &x, &keep, kind, 0.0, 1.0)
        }
        ReduceSum(r) | Mean(r) => {
            let x = cx.arg(0);
            let keep: Vec<usize> = (0..x.shape.len()).filter(|d| !r.axes.contains(d)).collect();
            let count: usize = r.axes.iter().map(|&a| x.shape[a]).product();
            let scale = if matches!(op, Mean(_)) {
                1.0 / count.max(1) as f32
            } else {
                1.0
            };
            if matches!(op, ReduceSum(_)) && keep == [x.shape.len() - 1] {
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
        }
        GlobalAvgPool { .. } | GlobalMaxPool { .. } => {
            let x = cx.arg(0);
            let hw = (x.shape[1] * x.shape[2]) as f32;
            if matches!(op, GlobalAvgPool { .. }) {
                reduce(cx, "", &x, &[0, 3], RedKind::Sum, 0.0, 1.0 / hw)
            } else {
                reduce(cx, "", &x, &[0, 3], RedKind::Max, f32::NEG_INFINITY, 1.0)
            }
        }
        GlobalAvgPoolGrad { input_shape } => {
            let dy = cx.arg(0);
            let s = input_shape.clone();
            let inv = 1.0 / (s[1] * s[2]) as f32;
            cx.map("", &s, |l| {
                let d = l.leaf(reduced(dy.vt, &s, &[0, 3]));
                let c = l.c(inv);
                l.mul(d, c)
            })
        }
        MeanGrad { axes, input_shape } => {
            let dy = cx.arg(0);
            let s = input_shape.clone();
            let count: usize = axes.iter().map(|&a| s[a]).product();
            let inv = 1.0 / count.max(1) as f32;
            let keep: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
            cx.map("", &s, |l| {
                let d = l.leaf(reduced(dy.vt, &s, &keep));
                let c = l.c(inv);
                l.mul(d, c)
            })
        }
        BatchMean => {
            let x = cx.arg(0);
            moments(cx, &x).0
        }
        BatchVar { unbiased } => {
            let x = cx.arg(0);
            let (_, var) = moments(cx, &x);
            let m = (x.numel() / var.numel().max(1)) as f32;
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
        }
        other => unreachable!("{} is not a reduction", other.name()),
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}
