//! Shape rules of the gradient ops.

use super::geometry::*;
use crate::ir::op::*;
use crate::ir::types::*;

fn f32t(shape: Shape) -> Result<TensorType, OpError> {
    Ok(TensorType::f32(shape))
}

pub(super) fn infer(op: &GradOp, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    use GradOp::*;
    match op {
        SoftmaxCrossEntropyGrad => {
            super::train::logits_and_labels(ins)?;
            f32t(ins[0].shape.clone())
        }
        ReduceSum(r) => f32t(reduce_shape(&ins[0].shape, &r.axes, r.keepdims)?),
        PReluGradInput => {
            want_same(ins[0], ins[1], "dy and the forward input")?;
            super::model::infer(&ModelOp::PRelu, &[ins[1], ins[2]])
        }
        ReluGrad
        | Relu6Grad
        | LeakyReluGrad { .. }
        | ThresholdedReluGrad { .. }
        | PReluGradAlpha
        | HardSwishGrad
        | SigmoidGrad
        | TanhGrad
        | SoftmaxGrad => {
            want_same(ins[0], ins[1], "dy and the forward value")?;
            if matches!(op, SoftmaxGrad) && ins[1].rank() == 0 {
                return Err("softmax needs an axis".into());
            }
            f32t(ins[0].shape.clone())
        }
        GlobalMaxPoolGrad => {
            let (dy, x) = (ins[0], ins[1]);
            want_rank(x, 4, "the input")?;
            let (n, c) = (x.shape[0], x.shape[3]);
            if dy.shape != [n, c] && dy.shape != [n, 1, 1, c] {
                return Err(format!(
                    "dy {dy} does not match the pool output [{n},{c}] of input {x}"
                )
                .into());
            }
            f32t(x.shape.clone())
        }
        FakeQuantRangeGrad { quant: q, .. } if q.range.trained().is_none() => {
            Err("fake_quant_range_grad differentiates a range=trained quantizer")?
        }
        FakeQuantGrad(q) | FakeQuantRangeGrad { quant: q, .. } => {
            want_same(ins[0], ins[1], "dy and the input")?;
            check_fake_quant(q, ins[1])?;
            check_range_operand(q, ins[1], ins[2], "min")?;
            check_range_operand(q, ins[1], ins[3], "max")?;
            f32t(ins[0].shape.clone())
        }
        Conv2dGradInput { conv, input_shape } => grad_input(conv, input_shape, ins, conv2d_shape),
        DepthwiseConv2dGradInput { conv, input_shape } => {
            grad_input(conv, input_shape, ins, depthwise_shape)
        }
        Conv2dTransposeGradInput { conv, input_shape } => {
            grad_input(conv, input_shape, ins, conv_transpose_shape)
        }
        Conv2dGradFilter { conv, filter_shape } => {
            grad_filter(conv, filter_shape, ins, conv2d_shape)
        }
        DepthwiseConv2dGradFilter { conv, filter_shape } => {
            grad_filter(conv, filter_shape, ins, depthwise_shape)
        }
        Conv2dTransposeGradFilter { conv, filter_shape } => {
            grad_filter(conv, filter_shape, ins, conv_transpose_shape)
        }
        DenseGradInput => {
            let (dy, w) = (ins[0], ins[1]);
            want_rank(dy, 2, "dy")?;
            want_rank(w, 2, "the kernel")?;
            if dy.shape[1] != w.shape[0] {
                return Err(format!("dy {dy} does not match the kernel {w}").into());
            }
            f32t(vec![dy.shape[0], w.shape[1]])
        }
        DenseGradWeight => {
            let (dy, x) = (ins[0], ins[1]);
            want_rank(dy, 2, "dy")?;
            want_rank(x, 2, "the input")?;
            if dy.shape[0] != x.shape[0] {
                return Err(format!("dy {dy} and the input {x} have different batches").into());
            }
            f32t(vec![dy.shape[1], x.shape[1]])
        }
        BatchNormGradInput { epsilon } | BatchNormGradGamma { epsilon } => {
            let x = ins[1];
            want_epsilon(*epsilon)?;
            want_same(ins[0], x, "dy and the input")?;
            let c = channels(x)?;
            if matches!(op, BatchNormGradGamma { .. }) {
                return f32t(vec![c]);
            }
            want_vec(ins[2], c, "gamma")?;
            f32t(x.shape.clone())
        }
        MaxPool2dGrad(p) => {
            let fwd = pool_shape(p, ins[1])?;
            if fwd != ins[0].shape {
                return Err(format!(
                    "dy {} does not match the pool output {}",
                    ins[0],
                    shape_str(&fwd)
                )
                .into());
            }
            f32t(ins[1].shape.clone())
        }
        AvgPool2dGrad { pool, input_shape } => {
            let fwd = pool_shape(pool, &TensorType::f32(input_shape.clone()))?;
            if fwd != ins[0].shape {
                return Err(format!(
                    "dy {} does not match the pool output {}",
                    ins[0],
                    shape_str(&fwd)
                )
                .into());
            }
            f32t(input_shape.clone())
        }
        GlobalAvgPoolGrad { input_shape } => {
            if input_shape.len() != 4 {
                return Err("input_shape must have rank 4".into());
            }
            let (n, c) = (input_shape[0], input_shape[3]);
            if ins[0].shape != [n, c] && ins[0].shape != [n, 1, 1, c] {
                return Err(format!(
                    "dy {} is neither [{n},{c}] nor [{n},1,1,{c}], the pool output of input {}",
                    ins[0],
                    shape_str(input_shape)
                )
                .into());
            }
            f32t(input_shape.clone())
        }
        MeanGrad { axes, input_shape } => {
            let a = reduce_shape(input_shape, axes, false)?;
            let b = reduce_shape(input_shape, axes, true)?;
            if ins[0].shape != a && ins[0].shape != b {
                return Err(format!(
                    "dy {} is neither {} nor {}, the mean of input {} over axes {}",
                    ins[0],
                    shape_str(&a),
                    shape_str(&b),
                    shape_str(input_shape),
                    shape_str(axes)
                )
                .into());
            }
            f32t(input_shape.clone())
        }
        Slice { begin, size } => {
            let x = ins[0];
            if begin.len() != x.rank() || size.len() != x.rank() {
                return Err(format!("begin and size must have {} entries", x.rank()).into());
            }
            for i in 0..x.rank() {
                if begin[i].saturating_add(size[i]) > x.shape[i] {
                    return Err(format!(
                        "slice {}..{} exceeds axis {i} of {x}",
                        begin[i],
                        begin[i].saturating_add(size[i])
                    )
                    .into());
                }
            }
            f32t(size.clone())
        }
        UpsampleNearestGrad { scale } => {
            let dy = ins[0];
            want_rank(dy, 4, "dy")?;
            if scale.contains(&0)
                || !dy.shape[1].is_multiple_of(scale[0])
                || !dy.shape[2].is_multiple_of(scale[1])
            {
                return Err(
                    format!("dy {dy} is not a multiple of scale {}", shape_str(scale)).into(),
                );
            }
            f32t(vec![
                dy.shape[0],
                dy.shape[1] / scale[0],
                dy.shape[2] / scale[1],
                dy.shape[3],
            ])
        }
    }
}

/// The forward output shape of a convolution from its input and kernel shapes.
type ConvShape = fn(&ConvAttrs, &[usize], &[usize]) -> Result<Shape, OpError>;

/// `(dy, kernel) -> dx`: dy must be the forward output of `input_shape`.
fn grad_input(
    conv: &ConvAttrs,
    input_shape: &[usize],
    ins: &[&TensorType],
    forward: ConvShape,
) -> Result<TensorType, OpError> {
    let (dy, w) = (ins[0], ins[1]);
    want_rank(w, 4, "the kernel")?;
    if input_shape.len() != 4 {
        return Err("input_shape must have rank 4".into());
    }
    let fwd = forward(conv, input_shape, &w.shape)?;
    if fwd != dy.shape {
        return Err(format!(
            "dy {dy} does not match the forward output {} of input {}",
            shape_str(&fwd),
            shape_str(input_shape)
        )
        .into());
    }
    f32t(input_shape.to_vec())
}

/// `(dy, x) -> dkernel`: dy must be the forward output of `x` and `filter_shape`.
fn grad_filter(
    conv: &ConvAttrs,
    filter_shape: &[usize],
    ins: &[&TensorType],
    forward: ConvShape,
) -> Result<TensorType, OpError> {
    let (dy, x) = (ins[0], ins[1]);
    want_rank(x, 4, "the input")?;
    if filter_shape.len() != 4 {
        return Err("filter_shape must have rank 4".into());
    }
    let fwd = forward(conv, &x.shape, filter_shape)?;
    if fwd != dy.shape {
        return Err(format!(
            "dy {dy} does not match the forward output {} of input {x}",
            shape_str(&fwd)
        )
        .into());
    }
    f32t(filter_shape.to_vec())
}
