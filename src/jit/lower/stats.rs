//! Per-channel statistics shared between lowerings: batch mean and variance (one pass,
//! memoized per tensor), channel extremes, inverse standard deviations, and BatchNorm's
//! training-mode affine coefficients. BatchNorm's forward and backward lowerings, the batch
//! statistic ops and the observers of BatchNorm outputs all read them, so each is computed
//! once per step.

use super::collective::{combined, combined_together};
use super::context::{along, reduced, same, Lower, Val};
use crate::ir::op::Reduce;
use crate::jit::lir::{Access, Inst, RedKind, UnOp, VtId};

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

/// Per-channel (last axis) statistics of a tensor, computed in one pass.
pub struct Stats {
    pub mean: Val,
    /// Biased variance.
    pub var: Val,
    pub min: Val,
    pub max: Val,
}

/// Per-channel batch statistics of `x`, once per tensor (`batch_norm_train`, `batch_mean`,
/// `batch_var`, the BatchNorm gradients and the observers of BatchNorm outputs share them).
///
/// One pass accumulates `sum(x - s)` and `sum((x - s)^2)` with `s` the channel's first
/// value, a shift close enough to the mean that `E[(x-s)^2] - E[x-s]^2` does not cancel
/// badly, plus the channel's min and max. Reductions nobody reads are dropped later.
pub fn stats(cx: &mut Lower, x: &Val) -> Stats {
    let c = *x.shape.last().unwrap_or(&1);
    let cs = vec![c];
    let key = format!("stats:{}:{c}", x.vt);
    let val = |vt| Val {
        vt,
        shape: cs.clone(),
    };
    if let Some(v) = cx.memo.get(&key) {
        return Stats {
            mean: val(v[0]),
            var: val(v[1]),
            min: val(v[2]),
            max: val(v[3]),
        };
    }
    let s = x.shape.clone();
    let r = s.len();
    let m = (x.numel() / c.max(1)) as f32;
    let (s1, s2) = (cx.temp("sum", c), cx.temp("sumsq", c));
    let (lo, hi) = (cx.temp("min", c), cx.temp("max", c));
    let mut l = cx.new_loop("stats", &s);
    let xv = l.leaf(same(x, &s));
    let shift = l.leaf(along(x.vt, 0, &s, r - 1));
    let d = l.sub(xv, shift);
    let d2 = l.mul(d, d);
    let keep = [r - 1];
    l.reduce(d, RedKind::Sum, 0.0, 1.0, reduced(s1, &s, &keep));
    l.reduce(d2, RedKind::Sum, 0.0, 1.0, reduced(s2, &s, &keep));
    l.reduce(xv, RedKind::Min, f32::INFINITY, 1.0, reduced(lo, &s, &keep));
    l.reduce(
        xv,
        RedKind::Max,
        f32::NEG_INFINITY,
        1.0,
        reduced(hi, &s, &keep),
    );
    cx.push(Inst::Loop(l));
    // mean = s + sum/m, var = max(sumsq/m - (sum/m)^2, 0)
    let (mean, var) = (cx.temp("mean", c), cx.temp("var", c));
    let mut l = cx.new_loop("moments", &cs);
    let sh = l.leaf(Access {
        vt: x.vt,
        offset: 0,
        strides: vec![1],
    });
    let a = l.leaf(Access::identity(s1, &cs));
    let b = l.leaf(Access::identity(s2, &cs));
    let inv_m = l.c(1.0 / m);
    let q = l.mul(a, inv_m);
    let mu = l.add(sh, q);
    let e2 = l.mul(b, inv_m);
    let q2 = l.mul(q, q);
    let v = l.sub(e2, q2);
    let z = l.c(0.0);
    let v = l.max(v, z);
    l.store(mu, Access::identity(mean, &cs));
    l.store(v, Access::identity(var, &cs));
    cx.push(Inst::Loop(l));
    let (mean, var, lo, hi) = if cx.ranks > 1 {
        combine_over_ranks(cx, mean, var, lo, hi, &cs)
    } else {
        (mean, var, lo, hi)
    };
    cx.memo.insert(key, vec![mean, var, lo, hi]);
    Stats {
        mean: val(mean),
        var: val(var),
        min: val(lo),
        max: val(hi),
    }
}

/// The statistics of the global batch of a data-parallel step from each rank's own (equal
/// shards): mean `mu = mean_r(mean_r)`, variance `mean_r(var_r + (mean_r - mu)^2)` (no
/// `E[x^2] - mu^2` cancellation), extremes over the ranks.
fn combine_over_ranks(
    cx: &mut Lower,
    mean: VtId,
    var: VtId,
    lo: VtId,
    hi: VtId,
    cs: &[usize],
) -> (VtId, VtId, VtId, VtId) {
    let val = |vt| Val {
        vt,
        shape: cs.to_vec(),
    };
    let gmean = combined(cx, "global_mean", &val(mean), Reduce::Mean);
    let spread = cx.map("spread", cs, |l| {
        let m = l.leaf(Access::identity(mean, cs));
        let g = l.leaf(same(&gmean, cs));
        let v = l.leaf(Access::identity(var, cs));
        let d = l.sub(m, g);
        l.fma(d, d, v)
    });
    let gvar = combined(cx, "global_var", &spread, Reduce::Mean);
    let [glo, ghi] = combined_together(cx, "global_range", [&val(lo), &val(hi)], Reduce::Range);
    (gmean.vt, gvar.vt, glo.vt, ghi.vt)
}

/// Per-channel batch mean and biased variance of `x`.
pub fn moments(cx: &mut Lower, x: &Val) -> (Val, Val) {
    let st = stats(cx, x);
    (st.mean, st.var)
}

/// `1 / sqrt(var + eps)` per channel, once per (tensor, epsilon).
pub fn inv_std(cx: &mut Lower, x: &Val, eps: f32) -> (Val, Val, Val) {
    let (mean, var) = moments(cx, x);
    let key = format!("invstd:{}:{}", x.vt, eps.to_bits());
    let c = mean.shape.clone();
    if let Some(v) = cx.memo.get(&key) {
        let inv = Val { vt: v[0], shape: c };
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

/// `batch_norm_train(x, gamma, beta)` as a per-channel affine map `fma(x, a_c, b_c)`:
/// `[a | b]` with `a = gamma * inv_std`, `b = beta - mean * a`; once per operands.
pub fn train_affine(cx: &mut Lower, x: &Val, gamma: &Val, beta: &Val, eps: f32) -> VtId {
    let key = format!(
        "bnaffine:{}:{}:{}:{}",
        x.vt,
        gamma.vt,
        beta.vt,
        eps.to_bits()
    );
    if let Some(v) = cx.memo.get(&key) {
        return v[0];
    }
    let (mean, _, inv) = inv_std(cx, x, eps);
    let c = mean.shape.clone();
    let n = c[0];
    let coef = cx.temp("coef", 2 * n);
    let mut l = cx.new_loop("coef", &c);
    let g = l.leaf(same(gamma, &c));
    let b = l.leaf(same(beta, &c));
    let m = l.leaf(same(&mean, &c));
    let i = l.leaf(same(&inv, &c));
    let sg = l.mul(i, g);
    let ms = l.mul(m, sg);
    let sh = l.sub(b, ms);
    l.store(sg, Access::identity(coef, &c));
    l.store(
        sh,
        Access {
            vt: coef,
            offset: n,
            strides: vec![1],
        },
    );
    cx.push(Inst::Loop(l));
    cx.memo.insert(key, vec![coef]);
    coef
}
