//! Shape and dtype rules of every op, and the convolution/pooling geometry that the
//! interpreter, the JIT and the exporter share (one definition of SAME padding).

use super::attrs::AttrValue;
use super::op::*;
use super::types::{broadcast_shapes, numel, shape_str, DType, Shape, TensorType};

/// Output size and padding of one spatial axis of a convolution or pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisGeometry {
    pub out: usize,
    /// Padding before (top/left); the odd extra pixel of SAME padding goes after.
    pub pad_before: usize,
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
) -> Result<AxisGeometry, String> {
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
                ));
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
                ));
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
fn int_list(v: &[i64]) -> String {
    let items: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// `height` or `width`: spatial axis 0 or 1 of a conv or pool.
fn axis_name(axis: usize) -> &'static str {
    if axis == 0 {
        "height"
    } else {
        "width"
    }
}

fn too_big(what: &str) -> String {
    format!("{what} is too large (more than 2^32 elements per tensor)")
}

/// The extent of a dilated kernel, `(kernel - 1) * dilation + 1`, after checking that
/// kernel, stride and dilation are at least 1.
fn effective_kernel(kernel: usize, stride: usize, dilation: usize) -> Result<usize, String> {
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
) -> Result<AxisGeometry, String> {
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
                return Err(format!(
                    "padding {b}+{a} removes the whole output of size {full}"
                ));
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
fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// A tensor has no empty dimension and at most [`MAX_ELEMENTS`] elements.
fn check_size(t: &TensorType) -> Result<(), String> {
    if t.shape.contains(&0) {
        return Err(format!("{t} has an empty dimension"));
    }
    match checked_numel(&t.shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(format!("{t} has more than 2^32 elements")),
    }
}

fn want_rank(t: &TensorType, rank: usize, what: &str) -> Result<(), String> {
    if t.rank() != rank {
        return Err(format!("{what} must have rank {rank}, found {t}"));
    }
    Ok(())
}

fn want_f32(t: &TensorType, what: &str) -> Result<(), String> {
    if t.dtype != DType::F32 {
        return Err(format!("{what} must be f32, found {t}"));
    }
    Ok(())
}

fn want_same(a: &TensorType, b: &TensorType, what: &str) -> Result<(), String> {
    if a.shape != b.shape {
        return Err(format!(
            "{what}: shapes {} and {} differ",
            shape_str(&a.shape),
            shape_str(&b.shape)
        ));
    }
    Ok(())
}

fn want_vec(t: &TensorType, len: usize, what: &str) -> Result<(), String> {
    if t.shape != [len] {
        return Err(format!("{what} must have shape [{len}], found {t}"));
    }
    Ok(())
}

/// A decay, momentum or beta coefficient: in `[0, 1]`.
fn want_unit(name: &str, v: f32) -> Result<(), String> {
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{name} must be in [0, 1], found {v}"));
    }
    Ok(())
}

fn want_scalar(t: &TensorType, what: &str) -> Result<(), String> {
    if !t.shape.is_empty() && t.shape != [1] {
        return Err(format!("{what} must be a scalar, found {t}"));
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
) -> Result<[AxisGeometry; 2], String> {
    Ok([
        conv_axis(x[1], kernel[0], stride[0], dilation[0], padding, 0)?,
        conv_axis(x[2], kernel[1], stride[1], dilation[1], padding, 1)?,
    ])
}

fn check_conv(c: &ConvAttrs) -> Result<(), String> {
    if c.stride.contains(&0) || c.dilation.contains(&0) {
        return Err(format!(
            "stride {} and dilation {} must be at least 1",
            shape_str(&c.stride),
            shape_str(&c.dilation)
        ));
    }
    Ok(())
}

/// `epsilon > 0` (BatchNorm and its folds and gradients).
fn want_epsilon(epsilon: F32) -> Result<(), String> {
    if epsilon.0 <= 0.0 {
        return Err(format!("epsilon must be > 0, found {}", epsilon.0));
    }
    Ok(())
}

/// The channel count (last axis) of a BatchNorm-like input.
fn channels(x: &TensorType) -> Result<usize, String> {
    x.shape
        .last()
        .copied()
        .ok_or_else(|| format!("the input {x} has no channel axis"))
}

/// conv2d: x [n,h,w,cin], kernel [cout,kh,kw,cin].
fn conv2d_shape(c: &ConvAttrs, x: &[usize], w: &[usize]) -> Result<Shape, String> {
    if x[3] != w[3] {
        return Err(format!(
            "kernel {} expects {} input channels but the input {} has {}",
            shape_str(w),
            w[3],
            shape_str(x),
            x[3]
        ));
    }
    let g = conv_out_hw(x, [w[1], w[2]], c.stride, c.dilation, c.padding)?;
    Ok(vec![x[0], g[0].out, g[1].out, w[0]])
}

/// depthwise_conv2d: x [n,h,w,cin], kernel [1,kh,kw,cin*mult].
fn depthwise_shape(c: &ConvAttrs, x: &[usize], w: &[usize]) -> Result<Shape, String> {
    if w[0] != 1 || x[3] == 0 || w[3] % x[3] != 0 {
        return Err(format!(
            "depthwise kernel {} must be [1,kh,kw,in*multiplier] for an input with {} channels",
            shape_str(w),
            x[3]
        ));
    }
    let g = conv_out_hw(x, [w[1], w[2]], c.stride, c.dilation, c.padding)?;
    Ok(vec![x[0], g[0].out, g[1].out, w[3]])
}

/// conv2d_transpose: x [n,h,w,cin], kernel [cout,kh,kw,cin].
fn conv_transpose_shape(c: &ConvAttrs, x: &[usize], w: &[usize]) -> Result<Shape, String> {
    if x[3] != w[3] {
        return Err(format!(
            "kernel {} expects {} input channels but the input {} has {}",
            shape_str(w),
            w[3],
            shape_str(x),
            x[3]
        ));
    }
    let h = conv_transpose_axis(x[1], w[1], c.stride[0], c.dilation[0], c.padding, 0)?;
    let ww = conv_transpose_axis(x[2], w[2], c.stride[1], c.dilation[1], c.padding, 1)?;
    Ok(vec![x[0], h.out, ww.out, w[0]])
}

fn check_axes(axes: &[usize], rank: usize) -> Result<(), String> {
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank {
            return Err(format!("axis {a} is out of range for rank {rank}"));
        }
        if axes[..i].contains(&a) {
            return Err(format!("axis {a} is listed twice"));
        }
    }
    Ok(())
}

fn reduce_shape(x: &[usize], axes: &[usize], keepdims: bool) -> Result<Shape, String> {
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

fn check_fake_quant(q: &FakeQuantAttrs, x: &TensorType) -> Result<(), String> {
    if !(2..=8).contains(&q.bits) {
        return Err(format!("bits must be in 2..=8, found {}", q.bits));
    }
    if let Some(a) = q.axis {
        if a >= x.rank() {
            return Err(format!("quantization axis {a} is out of range for {x}"));
        }
    }
    match &q.range {
        RangeSource::Ema { decay, state } => {
            if !(0.0..1.0).contains(&decay.0) {
                return Err(format!("ema decay must be in [0, 1), found {}", decay.0));
            }
            if state.is_empty() {
                return Err("the quantizer state name is empty".into());
            }
        }
        RangeSource::Fixed { min, max } if !(min.0 <= 0.0 && 0.0 <= max.0 && min.0 < max.0) => {
            return Err(format!(
                "a fixed range must contain 0 and be non-empty, found [{}, {}]",
                min.0, max.0
            ));
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

fn check_range_operand(
    q: &FakeQuantAttrs,
    x: &TensorType,
    r: &TensorType,
    what: &str,
) -> Result<(), String> {
    let want = range_shape(q, &x.shape);
    if r.shape != want && !(want.is_empty() && r.shape == [1]) {
        return Err(format!(
            "{what} must have shape {}, found {r}",
            shape_str(&want)
        ));
    }
    Ok(())
}

fn pool_shape(p: &PoolAttrs, x: &TensorType) -> Result<Shape, String> {
    want_rank(x, 4, "the input")?;
    if let Padding::Explicit(pad) = p.padding {
        if pad[0] >= p.size[0] || pad[1] >= p.size[0] || pad[2] >= p.size[1] || pad[3] >= p.size[1]
        {
            return Err(format!(
                "explicit padding {} must be smaller than the window {} on every side, \
                 or a window could cover padding only",
                shape_str(&pad),
                shape_str(&p.size)
            ));
        }
    }
    let g = conv_out_hw(&x.shape, p.size, p.stride, [1, 1], p.padding)?;
    Ok(vec![x.shape[0], g[0].out, g[1].out, x.shape[3]])
}

/// Infers the output type of `op` applied to operands of types `ins`. The error message
/// names the operands and shapes involved; the caller adds the node.
pub fn infer_type(op: &Op, ins: &[&TensorType]) -> Result<TensorType, String> {
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
        return Err(format!("takes {want} operand{s}, found {}", ins.len()));
    }
    for (i, t) in ins.iter().enumerate() {
        let label_ok = matches!(
            (op, i),
            (Op::SoftmaxCrossEntropy | Op::SoftmaxCrossEntropyGrad, 1)
        );
        if !label_ok && t.dtype != DType::F32 {
            return Err(format!(
                "operand {i} ({}) must be f32, found {t}",
                op.operand_name(i)
            ));
        }
        check_size(t).map_err(|m| format!("operand {i} ({}) {m}", op.operand_name(i)))?;
    }
    for (key, value) in op.attrs() {
        if let AttrValue::Float(v) = value {
            if !v.is_finite() {
                return Err(format!(
                    "attribute `{key}` must be a finite number, found {v}"
                ));
            }
        }
    }
    let f32t = |shape: Shape| Ok(TensorType::f32(shape));
    use Op::*;
    match op {
        Input | Param => Err("an input or param has no operands to infer a type from".into()),
        Conv2d(c) | DepthwiseConv2d(c) | Conv2dTranspose(c) => {
            check_conv(c)?;
            let (x, w) = (ins[0], ins[1]);
            want_rank(x, 4, "the input")?;
            want_rank(w, 4, "the kernel")?;
            let out = match op {
                Conv2d(_) => conv2d_shape(c, &x.shape, &w.shape)?,
                DepthwiseConv2d(_) => depthwise_shape(c, &x.shape, &w.shape)?,
                _ => conv_transpose_shape(c, &x.shape, &w.shape)?,
            };
            if let Some(b) = ins.get(2) {
                want_vec(b, out[3], "the bias")?;
            }
            f32t(out)
        }
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
                ));
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
        Relu | Relu6 | LeakyRelu { .. } | HardSwish | Sigmoid | Tanh | Quant(_) => {
            if let Quant(q) = op {
                check_fake_quant(q, ins[0])?;
            }
            f32t(ins[0].shape.clone())
        }
        Dropout { rate } => {
            if !(0.0..1.0).contains(&rate.0) {
                return Err(format!("rate must be in [0, 1), found {}", rate.0));
            }
            f32t(ins[0].shape.clone())
        }
        Softmax => {
            if ins[0].rank() == 0 {
                return Err("softmax needs an axis".into());
            }
            f32t(ins[0].shape.clone())
        }
        Add { .. } | Sub { .. } | Mul { .. } => {
            match broadcast_shapes(&ins[0].shape, &ins[1].shape) {
                Some(s) => f32t(s),
                None => Err(format!(
                    "shapes {} and {} do not broadcast",
                    shape_str(&ins[0].shape),
                    shape_str(&ins[1].shape)
                )),
            }
        }
        Concat { axis } => {
            let first = ins[0];
            if *axis >= first.rank() {
                return Err(format!("axis {axis} is out of range for {first}"));
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
                    ));
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
        Mean(r) | ReduceSum(r) => f32t(reduce_shape(&ins[0].shape, &r.axes, r.keepdims)?),
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
                ));
            }
            let known = shape
                .iter()
                .filter(|&&d| d > 0)
                .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
                .unwrap_or(0);
            let mut out = vec![x.shape[0]];
            for &d in shape {
                out.push(if d == -1 {
                    if known == 0 || per_sample % known != 0 {
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
                ));
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
                ));
            }
            if perm.first() != Some(&0) {
                return Err(format!(
                    "perm {} must keep the batch axis 0 first",
                    shape_str(perm)
                ));
            }
            f32t(perm.iter().map(|&p| x.shape[p]).collect())
        }
        Pad { pads } => {
            let x = ins[0];
            if pads.len() != x.rank() {
                return Err(format!(
                    "pads has {} rows for {x} of rank {}",
                    pads.len(),
                    x.rank()
                ));
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
                ));
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
                    ));
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
        BnScale { epsilon } => {
            want_epsilon(*epsilon)?;
            want_rank(ins[0], 1, "gamma")?;
            want_same(ins[0], ins[1], "gamma and moving_var")?;
            f32t(ins[0].shape.clone())
        }
        ScaleChannels { axis } => {
            let w = ins[0];
            if *axis >= w.rank() {
                return Err(format!("axis {axis} is out of range for {w}"));
            }
            want_vec(ins[1], w.shape[*axis], "the scale")?;
            f32t(w.shape.clone())
        }
        SoftmaxCrossEntropy | SoftmaxCrossEntropyGrad => {
            let (l, y) = (ins[0], ins[1]);
            want_rank(l, 2, "the logits")?;
            if y.dtype != DType::I32 || y.shape != [l.shape[0]] {
                return Err(format!("labels must be i32[{}], found {y}", l.shape[0]));
            }
            f32t(if matches!(op, SoftmaxCrossEntropy) {
                vec![]
            } else {
                l.shape.clone()
            })
        }
        ReluGrad
        | Relu6Grad
        | LeakyReluGrad { .. }
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
                ));
            }
            f32t(x.shape.clone())
        }
        BatchNormTrain { epsilon } => {
            let x = ins[0];
            want_epsilon(*epsilon)?;
            let c = channels(x)?;
            want_vec(ins[1], c, "gamma")?;
            want_vec(ins[2], c, "beta")?;
            f32t(x.shape.clone())
        }
        FakeQuantGrad(q) => {
            want_same(ins[0], ins[1], "dy and the input")?;
            check_fake_quant(q, ins[1])?;
            check_range_operand(q, ins[1], ins[2], "min")?;
            check_range_operand(q, ins[1], ins[3], "max")?;
            f32t(ins[0].shape.clone())
        }
        Conv2dGradInput { conv, input_shape }
        | DepthwiseConv2dGradInput { conv, input_shape }
        | Conv2dTransposeGradInput { conv, input_shape } => {
            let (dy, w) = (ins[0], ins[1]);
            want_rank(w, 4, "the kernel")?;
            if input_shape.len() != 4 {
                return Err("input_shape must have rank 4".into());
            }
            let fwd = match op {
                Conv2dGradInput { .. } => conv2d_shape(conv, input_shape, &w.shape)?,
                DepthwiseConv2dGradInput { .. } => depthwise_shape(conv, input_shape, &w.shape)?,
                _ => conv_transpose_shape(conv, input_shape, &w.shape)?,
            };
            if fwd != dy.shape {
                return Err(format!(
                    "dy {dy} does not match the forward output {} of input {}",
                    shape_str(&fwd),
                    shape_str(input_shape)
                ));
            }
            f32t(input_shape.clone())
        }
        Conv2dGradFilter { conv, filter_shape }
        | DepthwiseConv2dGradFilter { conv, filter_shape }
        | Conv2dTransposeGradFilter { conv, filter_shape } => {
            let (dy, x) = (ins[0], ins[1]);
            want_rank(x, 4, "the input")?;
            if filter_shape.len() != 4 {
                return Err("filter_shape must have rank 4".into());
            }
            let fwd = match op {
                Conv2dGradFilter { .. } => conv2d_shape(conv, &x.shape, filter_shape)?,
                DepthwiseConv2dGradFilter { .. } => depthwise_shape(conv, &x.shape, filter_shape)?,
                _ => conv_transpose_shape(conv, &x.shape, filter_shape)?,
            };
            if fwd != dy.shape {
                return Err(format!(
                    "dy {dy} does not match the forward output {} of input {x}",
                    shape_str(&fwd)
                ));
            }
            f32t(filter_shape.clone())
        }
        DenseGradInput => {
            let (dy, w) = (ins[0], ins[1]);
            want_rank(dy, 2, "dy")?;
            want_rank(w, 2, "the kernel")?;
            if dy.shape[1] != w.shape[0] {
                return Err(format!("dy {dy} does not match the kernel {w}"));
            }
            f32t(vec![dy.shape[0], w.shape[1]])
        }
        DenseGradWeight => {
            let (dy, x) = (ins[0], ins[1]);
            want_rank(dy, 2, "dy")?;
            want_rank(x, 2, "the input")?;
            if dy.shape[0] != x.shape[0] {
                return Err(format!("dy {dy} and the input {x} have different batches"));
            }
            f32t(vec![dy.shape[1], x.shape[1]])
        }
        BatchMean | BatchVar { .. } => {
            let x = ins[0];
            if x.rank() == 0 {
                return Err("the input must have a channel axis".into());
            }
            f32t(vec![*x.shape.last().unwrap()])
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
                ));
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
                ));
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
                ));
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
                ));
            }
            f32t(input_shape.clone())
        }
        Slice { begin, size } => {
            let x = ins[0];
            if begin.len() != x.rank() || size.len() != x.rank() {
                return Err(format!("begin and size must have {} entries", x.rank()));
            }
            for i in 0..x.rank() {
                if begin[i].saturating_add(size[i]) > x.shape[i] {
                    return Err(format!(
                        "slice {}..{} exceeds axis {i} of {x}",
                        begin[i],
                        begin[i].saturating_add(size[i])
                    ));
                }
            }
            f32t(size.clone())
        }
        UpsampleNearestGrad { scale } => {
            let dy = ins[0];
            want_rank(dy, 4, "dy")?;
            if scale.contains(&0) || dy.shape[1] % scale[0] != 0 || dy.shape[2] % scale[1] != 0 {
                return Err(format!(
                    "dy {dy} is not a multiple of scale {}",
                    shape_str(scale)
                ));
            }
            f32t(vec![
                dy.shape[0],
                dy.shape[1] / scale[0],
                dy.shape[2] / scale[1],
                dy.shape[3],
            ])
        }
        DropoutMask { rate, shape, .. } => {
            want_scalar(ins[0], "step")?;
            if !(0.0..1.0).contains(&rate.0) {
                return Err(format!("rate must be in [0, 1), found {}", rate.0));
            }
            f32t(shape.clone())
        }
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
                return Err(format!("epsilon must be >= 0, found {}", epsilon.0));
            }
            want_same(ins[0], ins[1], "param and m")?;
            want_same(ins[0], ins[2], "param and v")?;
            want_scalar(ins[3], "lr")?;
            f32t(ins[0].shape.clone())
        }
        ObserveMin { axis } | ObserveMax { axis } => {
            let x = ins[0];
            match axis {
                Some(a) if *a >= x.rank() => Err(format!("axis {a} is out of range for {x}")),
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
    .and_then(|t: TensorType| {
        want_f32(&t, "the result")?;
        check_size(&t).map_err(|m| format!("the result {m}"))?;
        Ok(t)
    })
}
