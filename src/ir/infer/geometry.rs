//! The convolution and pooling geometry that the interpreter, the JIT and the exporter share
//! (one definition of SAME padding), and the checks the shape rules are made of.

use crate::ir::op::*;
use crate::ir::types::{shape_str, DType, Shape, TensorType};

/// Output size and padding of one spatial axis of a convolution or pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisGeometry {
    /// Output positions along the axis.
    pub out: usize,
    /// Padding before (top/left); the odd extra pixel of SAME padding goes after.
    pub pad_before: usize,
    /// Padding after (bottom/right), including SAME's odd extra pixel.
    pub pad_after: usize,
}

/// TFLite's `padding.h` rule for a forward convolution or pool along one spatial axis
/// (`axis` 0 is the height, 1 the width: it picks that axis's pair of explicit padding).
pub fn conv_axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
    axis: usize,
) -> Result<AxisGeometry, OpError> {
    let eff_k = effective_kernel(kernel, stride, dilation)?;
    match padding {
        Padding::Same => {
            let out = input.div_ceil(stride);
            // (out - 1) * stride <= input - 1, so only adding the kernel can overflow
            let total = ((out.max(1) - 1) * stride)
                .checked_add(eff_k)
                .ok_or_else(|| too_big("the padded input"))?
                .saturating_sub(input);
            Ok(AxisGeometry {
                out,
                pad_before: total / 2,
                pad_after: total - total / 2,
            })
        }
        Padding::Valid => {
            if input < eff_k {
                return Err(format!(
                    "the (dilated) kernel of size {eff_k} does not fit the input {} of {input} \
                     with valid padding; use padding=same or a smaller kernel",
                    axis_name(axis)
                )
                .into());
            }
            Ok(AxisGeometry {
                out: (input - eff_k) / stride + 1,
                pad_before: 0,
                pad_after: 0,
            })
        }
        Padding::Explicit(p) => {
            let (before, after) = if axis == 0 {
                (p[0], p[1])
            } else {
                (p[2], p[3])
            };
            let padded = input
                .checked_add(before)
                .and_then(|v| v.checked_add(after))
                .ok_or_else(|| too_big("the padded input"))?;
            if padded < eff_k {
                return Err(format!(
                    "the (dilated) kernel of size {eff_k} does not fit the padded input {} of \
                     {padded}",
                    axis_name(axis)
                )
                .into());
            }
            Ok(AxisGeometry {
                out: (padded - eff_k) / stride + 1,
                pad_before: before,
                pad_after: after,
            })
        }
    }
}

/// `[a,b,c]`, like a shape.
pub(super) fn int_list(v: &[i64]) -> String {
    let items: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// `height` or `width`: spatial axis 0 or 1 of a conv or pool.
pub(super) fn axis_name(axis: usize) -> &'static str {
    if axis == 0 {
        "height"
    } else {
        "width"
    }
}

pub(super) fn too_big(what: &str) -> OpError {
    OpError(format!(
        "{what} is too large (more than 2^32 elements per tensor)"
    ))
}

/// The extent of a dilated kernel, `(kernel - 1) * dilation + 1`, after checking that
/// kernel, stride and dilation are at least 1.
pub(super) fn effective_kernel(
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Result<usize, OpError> {
    if stride == 0 || dilation == 0 || kernel == 0 {
        return Err("kernel size, stride and dilation must be at least 1".into());
    }
    (kernel - 1)
        .checked_mul(dilation)
        .and_then(|k| k.checked_add(1))
        .ok_or_else(|| too_big("the dilated kernel"))
}

/// Geometry of a transposed convolution along one axis: the output size and the padding of
/// the equivalent forward convolution (`y[iy*stride - pad_before + k*dil] += x[iy]*w[k]`).
pub fn conv_transpose_axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: Padding,
    axis: usize,
) -> Result<AxisGeometry, OpError> {
    let eff_k = effective_kernel(kernel, stride, dilation)?;
    if input == 0 {
        return Err("the input is empty".into());
    }
    // the extent the input's taps reach: `(input - 1) * stride + eff_k`
    let full = (input - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(eff_k))
        .ok_or_else(|| too_big("the output"))?;
    let strided = input
        .checked_mul(stride)
        .ok_or_else(|| too_big("the output"))?;
    let (out, before) = match padding {
        Padding::Same => (strided, full.saturating_sub(strided) / 2),
        // Keras' rule: `input * stride + max(kernel - stride, 0)`; when the kernel is
        // smaller than the stride the last `stride - kernel` rows get no tap (bias only)
        Padding::Valid => (strided.max(full), 0),
        Padding::Explicit(p) => {
            let (b, a) = if axis == 0 {
                (p[0], p[1])
            } else {
                (p[2], p[3])
            };
            if b.saturating_add(a) >= full {
                return Err(
                    format!("padding {b}+{a} removes the whole output of size {full}").into(),
                );
            }
            (full - b - a, b)
        }
    };
    Ok(AxisGeometry {
        out,
        pad_before: before,
        pad_after: full.saturating_sub(out + before),
    })
}

/// The most elements one tensor may have (TFLite and the JIT index with 32 bits).
pub const MAX_ELEMENTS: usize = 1 << 32;

/// `numel`, or `None` when it overflows.
pub(super) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// A tensor has no empty dimension and at most [`MAX_ELEMENTS`] elements.
pub(super) fn check_size(t: &TensorType) -> Result<(), OpError> {
    if t.shape.contains(&0) {
        return Err(format!("{t} has an empty dimension").into());
    }
    match checked_numel(&t.shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(format!("{t} has more than 2^32 elements").into()),
    }
}

pub(super) fn want_rank(t: &TensorType, rank: usize, what: &str) -> Result<(), OpError> {
    if t.rank() != rank {
        return Err(format!("{what} must have rank {rank}, found {t}").into());
    }
    Ok(())
}

pub(super) fn want_f32(t: &TensorType, what: &str) -> Result<(), OpError> {
    if t.dtype != DType::F32 {
        return Err(format!("{what} must be f32, found {t}").into());
    }
    Ok(())
}

pub(super) fn want_same(a: &TensorType, b: &TensorType, what: &str) -> Result<(), OpError> {
    if a.shape != b.shape {
        return Err(format!(
            "{what}: shapes {} and {} differ",
            shape_str(&a.shape),
            shape_str(&b.shape)
        )
        .into());
    }
    Ok(())
}

pub(super) fn want_vec(t: &TensorType, len: usize, what: &str) -> Result<(), OpError> {
    if t.shape != [len] {
        return Err(format!("{what} must have shape [{len}], found {t}").into());
    }
    Ok(())
}

/// A decay, momentum or beta coefficient: in `[0, 1]`.
pub(super) fn want_unit(name: &str, v: f32) -> Result<(), OpError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{name} must be in [0, 1], found {v}").into());
    }
    Ok(())
}

pub(super) fn want_scalar(t: &TensorType, what: &str) -> Result<(), OpError> {
    if !t.shape.is_empty() && t.shape != [1] {
        return Err(format!("{what} must be a scalar, found {t}").into());
    }
    Ok(())
}

/// Output shape of a conv2d / depthwise_conv2d / pool over `[n,h,w,c]`.
pub fn conv_out_hw(
    x: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) -> Result<[AxisGeometry; 2], OpError> {
    Ok([
        conv_axis(x[1], kernel[0], stride[0], dilation[0], padding, 0)?,
        conv_axis(x[2], kernel[1], stride[1], dilation[1], padding, 1)?,
    ])
}

pub(super) fn check_conv(c: &ConvAttrs) -> Result<(), OpError> {
    if c.stride.contains(&0) || c.dilation.contains(&0) {
        return Err(format!(
            "stride {} and dilation {} must be at least 1",
            shape_str(&c.stride),
            shape_str(&c.dilation)
        )
        .into());
    }
    Ok(())
}

/// `epsilon > 0` (BatchNorm and its folds and gradients).
pub(super) fn want_epsilon(epsilon: F32) -> Result<(), OpError> {
    if epsilon.0 <= 0.0 {
        return Err(format!("epsilon must be > 0, found {}", epsilon.0).into());
    }
    Ok(())
}

/// The channel count (last axis) of a BatchNorm-like input.
pub(super) fn channels(x: &TensorType) -> Result<usize, OpError> {
    x.shape
        .last()
        .copied()
        .ok_or_else(|| OpError(format!("the input {x} has no channel axis")))
}

/// conv2d: x [n,h,w,cin], kernel [cout,kh,kw,cin].
pub(super) fn conv2d_shape(c: &ConvAttrs, x: &[usize], w: &[usize]) -> Result<Shape, OpError> {
    if x[3] != w[3] {
        return Err(format!(
            "kernel {} expects {} input channels but the input {} has {}",
            shape_str(w),
            w[3],
            shape_str(x),
            x[3]
        )
        .into());
    }
    let g = conv_out_hw(x, [w[1], w[2]], c.stride, c.dilation, c.padding)?;
    Ok(vec![x[0], g[0].out, g[1].out, w[0]])
}

/// depthwise_conv2d: x [n,h,w,cin], kernel [1,kh,kw,cin*mult].
pub(super) fn depthwise_shape(c: &ConvAttrs, x: &[usize], w: &[usize]) -> Result<Shape, OpError> {
    if w[0] != 1 || x[3] == 0 || !w[3].is_multiple_of(x[3]) {
        return Err(format!(
            "depthwise kernel {} must be [1,kh,kw,in*multiplier] for an input with {} channels",
            shape_str(w),
            x[3]
        )
        .into());
    }
    let g = conv_out_hw(x, [w[1], w[2]], c.stride, c.dilation, c.padding)?;
    Ok(vec![x[0], g[0].out, g[1].out, w[3]])
}

/// conv2d_transpose: x [n,h,w,cin], kernel [cout,kh,kw,cin].
pub(super) fn conv_transpose_shape(
    c: &ConvAttrs,
    x: &[usize],
    w: &[usize],
) -> Result<Shape, OpError> {
    if x[3] != w[3] {
        return Err(format!(
            "kernel {} expects {} input channels but the input {} has {}",
            shape_str(w),
            w[3],
            shape_str(x),
            x[3]
        )
        .into());
    }
    let h = conv_transpose_axis(x[1], w[1], c.stride[0], c.dilation[0], c.padding, 0)?;
    let ww = conv_transpose_axis(x[2], w[2], c.stride[1], c.dilation[1], c.padding, 1)?;
    Ok(vec![x[0], h.out, ww.out, w[0]])
}

pub(super) fn check_axes(axes: &[usize], rank: usize) -> Result<(), OpError> {
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank {
            return Err(format!("axis {a} is out of range for rank {rank}").into());
        }
        if axes[..i].contains(&a) {
            return Err(format!("axis {a} is listed twice").into());
        }
    }
    Ok(())
}

pub(super) fn reduce_shape(x: &[usize], axes: &[usize], keepdims: bool) -> Result<Shape, OpError> {
    check_axes(axes, x.len())?;
    Ok(x.iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

pub(super) fn check_fake_quant(q: &FakeQuantAttrs, x: &TensorType) -> Result<(), OpError> {
    if !(2..=8).contains(&q.bits) {
        return Err(format!("bits must be in 2..=8, found {}", q.bits).into());
    }
    if let Some(a) = q.axis {
        if a >= x.rank() {
            return Err(format!("quantization axis {a} is out of range for {x}").into());
        }
    }
    match &q.range {
        RangeSource::Ema { decay, state } => {
            if !(0.0..1.0).contains(&decay.0) {
                return Err(format!("ema decay must be in [0, 1), found {}", decay.0).into());
            }
            if state.is_empty() {
                return Err("the quantizer state name is empty".into());
            }
        }
        RangeSource::Fixed { min, max } if !(min.0 <= 0.0 && 0.0 <= max.0 && min.0 < max.0) => {
            return Err(format!(
                "a fixed range must contain 0 and be non-empty, found [{}, {}]",
                min.0, max.0
            )
            .into());
        }
        _ => {}
    }
    Ok(())
}

/// The per-axis (or scalar) shape of a quantizer's min/max for input `x`.
pub fn range_shape(q: &FakeQuantAttrs, x: &[usize]) -> Shape {
    match q.axis {
        Some(a) => vec![x[a]],
        None => vec![],
    }
}

pub(super) fn check_range_operand(
    q: &FakeQuantAttrs,
    x: &TensorType,
    r: &TensorType,
    what: &str,
) -> Result<(), OpError> {
    let want = range_shape(q, &x.shape);
    if r.shape != want && !(want.is_empty() && r.shape == [1]) {
        return Err(format!("{what} must have shape {}, found {r}", shape_str(&want)).into());
    }
    Ok(())
}

pub(super) fn pool_shape(p: &PoolAttrs, x: &TensorType) -> Result<Shape, OpError> {
    want_rank(x, 4, "the input")?;
    if let Padding::Explicit(pad) = p.padding {
        if pad[0] >= p.size[0] || pad[1] >= p.size[0] || pad[2] >= p.size[1] || pad[3] >= p.size[1]
        {
            return Err(format!(
                "explicit padding {} must be smaller than the window {} on every side, \
                 or a window could cover padding only",
                shape_str(&pad),
                shape_str(&p.size)
            )
            .into());
        }
    }
    let g = conv_out_hw(&x.shape, p.size, p.stride, [1, 1], p.padding)?;
    Ok(vec![x.shape[0], g[0].out, g[1].out, x.shape[3]])
}
