//! Reference semantics of the state updates.

use super::kernels::*;
use super::value::{Cx, Value};
use crate::ir::fake_quant::observe_range;
use crate::ir::op::OpError;
use crate::ir::op::UpdateOp;

pub(super) fn eval(op: &UpdateOp, cx: &Cx) -> Result<Value, OpError> {
    use UpdateOp::*;
    match op {
        MovingAverage { momentum } => {
            let m = momentum.0;
            cx.t(zip(cx.f(0), cx.f(1), |old, v| old * m + v * (1.0 - m)))
        }
        SgdVelocity { momentum } => {
            let lr = cx.f(2).data[0];
            cx.t(zip(cx.f(0), cx.f(1), |v, g| momentum.0 * v - lr * g))
        }
        AdamMoment { beta } => cx.t(zip(cx.f(0), cx.f(1), |m, g| {
            beta.0 * m + (1.0 - beta.0) * g
        })),
        AdamMomentSq { beta } => cx.t(zip(cx.f(0), cx.f(1), |v, g| {
            beta.0 * v + (1.0 - beta.0) * g * g
        })),
        AdamApply { epsilon } => {
            let (p, m, v, lr) = (cx.f(0), cx.f(1), cx.f(2), cx.f(3).data[0]);
            cx.t((0..p.data.len())
                .map(|i| p.data[i] - lr * m.data[i] / (v.data[i].sqrt() + epsilon.0))
                .collect())
        }
        ObserveMin { axis } | ObserveMax { axis } => {
            let x = cx.f(0);
            let r = observe_range(&x.data, &x.shape, *axis);
            let is_min = matches!(op, ObserveMin { .. });
            cx.t(r
                .into_iter()
                .map(|(lo, hi)| if is_min { lo } else { hi })
                .collect())
        }
        EmaUpdate { decay } => {
            let first = cx.f(2).data[0] == 0.0;
            let d = decay.0;
            cx.t(zip(cx.f(0), cx.f(1), |old, v| {
                if first {
                    v
                } else {
                    old * d + v * (1.0 - d)
                }
            }))
        }
        RunningMin | RunningMax => {
            let first = cx.f(2).data[0] == 0.0;
            let is_min = matches!(op, RunningMin);
            cx.t(zip(cx.f(0), cx.f(1), |old, v| match (first, is_min) {
                (true, _) => v,
                (false, true) => old.min(v),
                (false, false) => old.max(v),
            }))
        }
    }
}
