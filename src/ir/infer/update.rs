//! Shape rules of the state updates.

use super::geometry::*;
use crate::ir::op::*;
use crate::ir::types::*;

fn f32t(shape: Shape) -> Result<TensorType, OpError> {
    Ok(TensorType::f32(shape))
}

pub(super) fn infer(op: &UpdateOp, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    use UpdateOp::*;
    match op {
        MovingAverage { momentum: k } | AdamMoment { beta: k } | AdamMomentSq { beta: k } => {
            let name = if matches!(op, MovingAverage { .. }) {
                "momentum"
            } else {
                "beta"
            };
            want_unit(name, k.0)?;
            want_same(ins[0], ins[1], "state and value")?;
            f32t(ins[0].shape.clone())
        }
        SgdVelocity { momentum } => {
            want_unit("momentum", momentum.0)?;
            want_same(ins[0], ins[1], "velocity and gradient")?;
            want_scalar(ins[2], "lr")?;
            f32t(ins[0].shape.clone())
        }
        AdamApply { epsilon } => {
            if epsilon.0 < 0.0 {
                return Err(format!("epsilon must be >= 0, found {}", epsilon.0).into());
            }
            want_same(ins[0], ins[1], "param and m")?;
            want_same(ins[0], ins[2], "param and v")?;
            want_scalar(ins[3], "lr")?;
            f32t(ins[0].shape.clone())
        }
        ObserveMin { axis } | ObserveMax { axis } => {
            let x = ins[0];
            match axis {
                Some(a) if *a >= x.rank() => {
                    Err(format!("axis {a} is out of range for {x}").into())
                }
                Some(a) => f32t(vec![x.shape[*a]]),
                None => f32t(vec![]),
            }
        }
        EmaUpdate { .. } | RunningMin | RunningMax => {
            if let EmaUpdate { decay } = op {
                want_unit("decay", decay.0)?;
            }
            want_same(ins[0], ins[1], "state and value")?;
            want_scalar(ins[2], "step")?;
            f32t(ins[0].shape.clone())
        }
    }
}
