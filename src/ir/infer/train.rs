//! Shape rules of the training forward ops.

use super::geometry::*;
use crate::ir::op::*;
use crate::ir::types::*;

fn f32t(shape: Shape) -> Result<TensorType, OpError> {
    Ok(TensorType::f32(shape))
}

pub(super) fn infer(op: &TrainOp, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    use TrainOp::*;
    match op {
        SoftmaxCrossEntropy => {
            logits_and_labels(ins)?;
            f32t(vec![])
        }
        BatchNormTrain { epsilon } => {
            let x = ins[0];
            want_epsilon(*epsilon)?;
            let c = channels(x)?;
            want_vec(ins[1], c, "gamma")?;
            want_vec(ins[2], c, "beta")?;
            f32t(x.shape.clone())
        }
        BatchMean | BatchVar { .. } => {
            let x = ins[0];
            if x.rank() == 0 {
                return Err("the input must have a channel axis".into());
            }
            f32t(vec![*x.shape.last().unwrap()])
        }
        DropoutMask { rate, shape, .. } => {
            want_scalar(ins[0], "step")?;
            if !(0.0..1.0).contains(&rate.0) {
                return Err(format!("rate must be in [0, 1), found {}", rate.0).into());
            }
            f32t(shape.clone())
        }
        AllReduce { reduce } => {
            let x = ins[0];
            if *reduce == Reduce::Range && (x.rank() != 1 || !x.numel().is_multiple_of(2)) {
                return Err(format!(
                    "reduce=range takes a vector of lows then highs (even length), found {x}"
                )
                .into());
            }
            f32t(x.shape.clone())
        }
        Pack => {
            if let Some(t) = ins.iter().find(|t| t.dtype != DType::F32) {
                return Err(format!("pack takes f32 tensors, found {t}").into());
            }
            f32t(vec![ins.iter().map(|t| t.numel()).sum()])
        }
        Unpack { offset, shape } => {
            let x = ins[0];
            let n: usize = shape.iter().product();
            if x.rank() != 1 || offset + n > x.numel() {
                return Err(format!(
                    "unpack takes {n} elements from {offset} of a vector, found {x}"
                )
                .into());
            }
            f32t(shape.clone())
        }
    }
}

/// Checks the `(logits[n,c], labels i32[n])` operands of the loss and its gradient.
pub(super) fn logits_and_labels(ins: &[&TensorType]) -> Result<(), OpError> {
    let (l, y) = (ins[0], ins[1]);
    want_rank(l, 2, "the logits")?;
    if y.dtype != DType::I32 || y.shape != [l.shape[0]] {
        return Err(format!("labels must be i32[{}], found {y}", l.shape[0]).into());
    }
    Ok(())
}
