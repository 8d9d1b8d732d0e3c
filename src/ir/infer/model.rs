//! Shape rules of model ops and pass helpers.

use super::geometry::*;
use crate::ir::op::*;
use crate::ir::types::*;

fn f32t(shape: Shape) -> Result<TensorType, OpError> {
    Ok(TensorType::f32(shape))
}

pub(super) fn infer(op: &ModelOp, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    use ModelOp::*;
    match op {
        Input | Param => Err("an input or param has no operands to infer a type from".into()),
        Relu | Relu6 | LeakyRelu { .. } | ThresholdedRelu { .. } | HardSwish | Sigmoid | Tanh => {
            f32t(ins[0].shape.clone())
        }
        Mean(r) => f32t(reduce_shape(&ins[0].shape, &r.axes, r.keepdims)?),
        Conv2d(c) => conv_like(c, ins, conv2d_shape),
        DepthwiseConv2d(c) => conv_like(c, ins, depthwise_shape),
        Conv2dTranspose(c) => conv_like(c, ins, conv_transpose_shape),
        Dense { .. } => {
            let (x, w) = (ins[0], ins[1]);
            want_rank(x, 2, "the input (flatten it first)")?;
            want_rank(w, 2, "the kernel")?;
            if x.shape[1] != w.shape[1] {
                return Err(format!(
                    "kernel {} expects {} input features but the input {x} has {}",
                    shape_str(&w.shape),
                    w.shape[1],
                    x.shape[1]
                )
                .into());
            }
            if let Some(b) = ins.get(2) {
                want_vec(b, w.shape[0], "the bias")?;
            }
            f32t(vec![x.shape[0], w.shape[0]])
        }
        BatchNorm { epsilon, momentum } => {
            let x = ins[0];
            want_epsilon(*epsilon)?;
            want_unit("momentum", momentum.0)?;
            let c = channels(x)?;
            for (i, name) in ["gamma", "beta", "moving_mean", "moving_var"]
                .iter()
                .enumerate()
            {
                want_vec(ins[i + 1], c, name)?;
            }
            f32t(x.shape.clone())
        }
        Dropout { rate } => {
            if !(0.0..1.0).contains(&rate.0) {
                return Err(format!("rate must be in [0, 1), found {}", rate.0).into());
            }
            f32t(ins[0].shape.clone())
        }
        Softmax => {
            if ins[0].rank() == 0 {
                return Err("softmax needs an axis".into());
            }
            f32t(ins[0].shape.clone())
        }
        PRelu => {
            let (x, alpha) = (ins[0], ins[1]);
            let per_sample = alpha.rank() < x.rank();
            if !per_sample || broadcast_shapes(&x.shape, &alpha.shape).as_ref() != Some(&x.shape) {
                return Err(format!(
                    "alpha {} must broadcast against one sample of {x} (one slope per \
                     channel is alpha[1, 1, c])",
                    shape_str(&alpha.shape)
                )
                .into());
            }
            f32t(x.shape.clone())
        }
        Add { .. } | Sub { .. } | Mul { .. } => {
            match broadcast_shapes(&ins[0].shape, &ins[1].shape) {
                Some(s) => f32t(s),
                None => Err(format!(
                    "shapes {} and {} do not broadcast",
                    shape_str(&ins[0].shape),
                    shape_str(&ins[1].shape)
                )
                .into()),
            }
        }
        Concat { axis } => {
            let first = ins[0];
            if *axis >= first.rank() {
                return Err(format!("axis {axis} is out of range for {first}").into());
            }
            let mut out = first.shape.clone();
            for (i, t) in ins.iter().enumerate().skip(1) {
                let same_rest = t.rank() == first.rank()
                    && t.shape
                        .iter()
                        .zip(&first.shape)
                        .enumerate()
                        .all(|(d, (a, b))| d == *axis || a == b);
                if !same_rest {
                    return Err(format!(
                        "operand {i} {t} does not match operand 0 {first} outside axis {axis}"
                    )
                    .into());
                }
                out[*axis] += t.shape[*axis];
            }
            f32t(out)
        }
        MaxPool2d(p) | AvgPool2d(p) => f32t(pool_shape(p, ins[0])?),
        GlobalAvgPool { keepdims } | GlobalMaxPool { keepdims } => {
            want_rank(ins[0], 4, "the input")?;
            let s = &ins[0].shape;
            f32t(if *keepdims {
                vec![s[0], 1, 1, s[3]]
            } else {
                vec![s[0], s[3]]
            })
        }
        Reshape { shape } => {
            let x = ins[0];
            if x.rank() == 0 {
                return Err("a scalar has no batch dimension to keep".into());
            }
            let per_sample = numel(&x.shape[1..]);
            let unknown = shape.iter().filter(|&&d| d == -1).count();
            if unknown > 1 || shape.iter().any(|&d| d < -1 || d == 0) {
                return Err(format!(
                    "shape {} must hold positive sizes and at most one -1",
                    int_list(shape)
                )
                .into());
            }
            let known = shape
                .iter()
                .filter(|&&d| d > 0)
                .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
                .unwrap_or(0);
            let mut out = vec![x.shape[0]];
            for &d in shape {
                out.push(if d == -1 {
                    if known == 0 || !per_sample.is_multiple_of(known) {
                        0
                    } else {
                        per_sample / known
                    }
                } else {
                    d as usize
                });
            }
            if checked_numel(&out[1..]) != Some(per_sample) {
                return Err(format!(
                    "cannot reshape {x} to per-sample shape {}: {per_sample} elements per sample",
                    int_list(shape)
                )
                .into());
            }
            f32t(out)
        }
        Flatten => {
            let x = ins[0];
            if x.rank() == 0 {
                return Err("a scalar has no batch dimension".into());
            }
            f32t(vec![x.shape[0], numel(&x.shape[1..])])
        }
        Transpose { perm } => {
            let x = ins[0];
            let mut sorted = perm.clone();
            sorted.sort();
            if sorted != (0..x.rank()).collect::<Vec<_>>() {
                return Err(format!(
                    "perm {} is not a permutation of the axes of {x}",
                    shape_str(perm)
                )
                .into());
            }
            if perm.first() != Some(&0) {
                return Err(
                    format!("perm {} must keep the batch axis 0 first", shape_str(perm)).into(),
                );
            }
            f32t(perm.iter().map(|&p| x.shape[p]).collect())
        }
        Pad { pads } => {
            let x = ins[0];
            if pads.len() != x.rank() {
                return Err(
                    format!("pads has {} rows for {x} of rank {}", pads.len(), x.rank()).into(),
                );
            }
            if pads.first().is_some_and(|p| *p != [0, 0]) {
                return Err("the batch axis cannot be padded".into());
            }
            let padded: Option<Shape> = x
                .shape
                .iter()
                .zip(pads)
                .map(|(d, p)| d.checked_add(p[0])?.checked_add(p[1]))
                .collect();
            f32t(padded.ok_or_else(|| too_big("the padded tensor"))?)
        }
        Crop { crops } => {
            let x = ins[0];
            if crops.len() != x.rank() {
                return Err(format!(
                    "crops has {} rows for {x} of rank {}",
                    crops.len(),
                    x.rank()
                )
                .into());
            }
            if crops.first().is_some_and(|p| *p != [0, 0]) {
                return Err("the batch axis cannot be cropped".into());
            }
            let mut out = Vec::new();
            for (i, (d, c)) in x.shape.iter().zip(crops).enumerate() {
                if c[0].saturating_add(c[1]) >= *d {
                    return Err(format!(
                        "crop {} removes all of axis {i} (size {d}) of {x}",
                        shape_str(c)
                    )
                    .into());
                }
                out.push(d - c[0] - c[1]);
            }
            f32t(out)
        }
        UpsampleNearest { scale } => {
            let x = ins[0];
            want_rank(x, 4, "the input")?;
            if scale.contains(&0) {
                return Err("scale must be at least 1".into());
            }
            let (h, w) = (
                x.shape[1].checked_mul(scale[0]),
                x.shape[2].checked_mul(scale[1]),
            );
            match (h, w) {
                (Some(h), Some(w)) => f32t(vec![x.shape[0], h, w, x.shape[3]]),
                _ => Err(too_big("the upsampled tensor")),
            }
        }
        FakeQuant(q) => {
            let x = ins[0];
            check_fake_quant(q, x)?;
            if ins.len() == 3 {
                check_range_operand(q, x, ins[1], "min")?;
                check_range_operand(q, x, ins[2], "max")?;
            }
            f32t(x.shape.clone())
        }
    }
}

pub(super) fn infer_pass(op: &PassOp, ins: &[&TensorType]) -> Result<TensorType, OpError> {
    use PassOp::*;
    match op {
        Quant(q) => {
            check_fake_quant(q, ins[0])?;
            f32t(ins[0].shape.clone())
        }
        BnScale { epsilon } => {
            want_epsilon(*epsilon)?;
            want_rank(ins[0], 1, "gamma")?;
            want_same(ins[0], ins[1], "gamma and moving_var")?;
            f32t(ins[0].shape.clone())
        }
        ScaleChannels { axis } => {
            let w = ins[0];
            if *axis >= w.rank() {
                return Err(format!("axis {axis} is out of range for {w}").into());
            }
            want_vec(ins[1], w.shape[*axis], "the scale")?;
            f32t(w.shape.clone())
        }
    }
}

/// A convolution's output shape from its input and kernel shapes.
type ConvShape = fn(&ConvAttrs, &[usize], &[usize]) -> Result<Shape, OpError>;

/// A convolution's output: `shape` of its input and kernel, checked against the bias.
fn conv_like(c: &ConvAttrs, ins: &[&TensorType], shape: ConvShape) -> Result<TensorType, OpError> {
    check_conv(c)?;
    let (x, w) = (ins[0], ins[1]);
    want_rank(x, 4, "the input")?;
    want_rank(w, 4, "the kernel")?;
    let out = shape(c, &x.shape, &w.shape)?;
    if let Some(b) = ins.get(2) {
        want_vec(b, out[3], "the bias")?;
    }
    f32t(out)
}
