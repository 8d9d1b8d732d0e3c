//! Shape and dtype rules of every op: one function per op family, behind [`infer_type`].

mod geometry;
mod grad;
mod model;
mod train;
mod update;

pub use geometry::{
    conv_axis, conv_out_hw, conv_transpose_axis, range_shape, AxisGeometry, MAX_ELEMENTS,
};

use super::attrs::AttrValue;
use super::op::*;
use super::types::{DType, TensorType};
use geometry::{check_size, want_f32};

/// Infers the output type of `op` applied to operands of types `ins`. The error message
/// names the operands and shapes involved; the caller adds the node.
pub fn infer_type(op: &Op, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    let (lo, hi) = op.arity();
    if ins.len() < lo || ins.len() > hi {
        let want = if lo == hi {
            format!("{lo}")
        } else if hi == usize::MAX {
            format!("at least {lo}")
        } else {
            format!("{lo} or {hi}")
        };
        let s = if want == "1" { "" } else { "s" };
        return Err(format!("takes {want} operand{s}, found {}", ins.len()).into());
    }
    for (i, t) in ins.iter().enumerate() {
        let label_ok = matches!(
            (op, i),
            (
                Op::Train(TrainOp::SoftmaxCrossEntropy) | Op::Grad(GradOp::SoftmaxCrossEntropyGrad),
                1
            )
        );
        if !label_ok && t.dtype != DType::F32 {
            return Err(format!(
                "operand {i} ({}) must be f32, found {t}",
                op.operand_name(i)
            )
            .into());
        }
        check_size(t).map_err(|m| format!("operand {i} ({}) {m}", op.operand_name(i)))?;
    }
    for (key, value) in op.attrs() {
        if let AttrValue::Float(v) = value {
            if !v.is_finite() {
                return Err(format!("attribute `{key}` must be a finite number, found {v}").into());
            }
        }
    }
    match op {
        Op::Model(op) => model::infer(op, ins),
        Op::Pass(op) => model::infer_pass(op, ins),
        Op::Train(op) => train::infer(op, ins),
        Op::Grad(op) => grad::infer(op, ins),
        Op::Update(op) => update::infer(op, ins),
    }
    .and_then(|t: TensorType| {
        want_f32(&t, "the result")?;
        check_size(&t).map_err(|m| format!("the result {m}"))?;
        Ok(t)
    })
}
