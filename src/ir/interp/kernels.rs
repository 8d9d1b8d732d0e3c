//! The numeric kernels of the reference interpreter: convolutions, pools, reductions,
//! broadcasting, fake-quant ranges. Plain loops, written to be obviously right.

use super::value::Value;
use crate::ir::fake_quant::{nudged_for, observe_range, Nudged};
use crate::ir::infer::{conv_axis, conv_transpose_axis, range_shape, AxisGeometry};
use crate::ir::op::*;
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::types::{broadcast_shapes, numel, shape_str, strides};

/// The logistic function `1 / (1 + e^-x)` in f32, as the reference `sigmoid` op computes it.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(super) fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Vec<f32> {
    x.data.iter().map(|&v| f(v)).collect()
}

pub(super) fn zip(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect()
}

/// Elements per channel step along `axis` (1 for per-tensor, so channel index is 0).
pub(super) fn inner_size(shape: &[usize], axis: Option<usize>) -> usize {
    match axis {
        Some(a) => shape[a + 1..].iter().product(),
        None => usize::MAX,
    }
}

pub(super) fn explicit_ranges(q: &FakeQuantAttrs, min: &Tensor, max: &Tensor) -> Vec<Nudged> {
    min.data
        .iter()
        .zip(&max.data)
        .map(|(&lo, &hi)| nudged_for(q, lo, hi))
        .collect()
}

/// The nudged ranges a fake-quant node uses, per its range source.
pub fn fq_ranges(
    q: &FakeQuantAttrs,
    x: &Tensor,
    args: &[&Value],
    params: &ParamStore,
) -> std::result::Result<Vec<Nudged>, OpError> {
    match &q.range {
        RangeSource::LastValue => Ok(observe_range(&x.data, &x.shape, q.axis)
            .into_iter()
            .map(|(lo, hi)| nudged_for(q, lo, hi))
            .collect()),
        RangeSource::Fixed { min, max } => Ok(vec![nudged_for(q, min.0, max.0)]),
        RangeSource::Operands | RangeSource::Trained(_) => Ok(explicit_ranges(
            q,
            args[1].f32().unwrap(),
            args[2].f32().unwrap(),
        )),
        RangeSource::Ema { state, .. }
        | RangeSource::AllValues { state }
        | RangeSource::Tied { state }
        | RangeSource::Learned { state, .. } => {
            let (lo, hi) = state_range(params, state)?;
            let want = range_shape(q, &x.shape);
            for (t, which) in [(lo, "min"), (hi, "max")] {
                if t.shape != want && !(want.is_empty() && t.shape == [1]) {
                    let per = match q.axis {
                        Some(a) => format!("one range per channel of axis {a}"),
                        None => "one range for the whole tensor".into(),
                    };
                    return Err(format!(
                        "quantizer state `{state}.{which}` has shape {} but this quantizer \
                         needs {} ({per})",
                        shape_str(&t.shape),
                        shape_str(&want),
                    )
                    .into());
                }
            }
            Ok(explicit_ranges(q, lo, hi))
        }
    }
}

/// The `(min, max)` state tensors of quantizer `state`.
pub fn state_range<'p>(
    params: &'p ParamStore,
    state: &str,
) -> std::result::Result<(&'p Tensor, &'p Tensor), OpError> {
    let lo = params.get(&format!("{state}.min"));
    let hi = params.get(&format!("{state}.max"));
    match (lo, hi) {
        (Some(lo), Some(hi)) => Ok((lo, hi)),
        _ => Err(format!(
            "quantizer state `{state}` has no observed range yet (params `{state}.min`/`{state}.max`): \
             train or calibrate the model first"
        ).into()),
    }
}

pub(super) fn broadcast(
    a: &Tensor,
    b: &Tensor,
    out: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    debug_assert_eq!(broadcast_shapes(&a.shape, &b.shape).as_deref(), Some(out));
    let index = |shape: &[usize], i: usize| -> usize {
        let os = strides(out);
        let s = strides(shape);
        let off = out.len() - shape.len();
        (0..shape.len())
            .map(|d| {
                if shape[d] == 1 {
                    0
                } else {
                    (i / os[d + off]) % out[d + off] * s[d]
                }
            })
            .sum()
    };
    (0..numel(out))
        .map(|i| f(a.data[index(&a.shape, i)], b.data[index(&b.shape, i)]))
        .collect()
}

pub(super) fn softmax_rows(x: &Tensor) -> Vec<f32> {
    let c = *x.shape.last().unwrap();
    let mut out = vec![0.0; x.data.len()];
    for r in 0..x.data.len() / c {
        let row = &x.data[r * c..(r + 1) * c];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        for k in 0..c {
            out[r * c + k] = e[k] / s;
        }
    }
    out
}

/// Reduces over `axes` with `combine`; `mean` divides by the reduced count.
pub(super) fn reduce(
    x: &Tensor,
    axes: &[usize],
    init: f32,
    combine: impl Fn(f32, f32) -> f32,
    mean: bool,
) -> Vec<f32> {
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let ks = strides(&kept);
    let xs = strides(&x.shape);
    let mut acc = vec![init; numel(&kept)];
    for (i, &v) in x.data.iter().enumerate() {
        let dst: usize = (0..x.shape.len())
            .map(|d| {
                if axes.contains(&d) {
                    0
                } else {
                    (i / xs[d]) % x.shape[d] * ks[d]
                }
            })
            .sum();
        acc[dst] = combine(acc[dst], v);
    }
    if mean {
        let count = (x.data.len() / acc.len().max(1)) as f32;
        acc.iter_mut().for_each(|v| *v /= count);
    }
    acc
}

/// Copies the block `src[src_begin .. src_begin+size]` to `dst[dst_begin ..]`.
pub(super) fn copy_block(
    src: &[f32],
    src_shape: &[usize],
    dst: &mut [f32],
    dst_shape: &[usize],
    src_begin: &[usize],
    dst_begin: &[usize],
    size: &[usize],
) {
    let ss = strides(src_shape);
    let ds = strides(dst_shape);
    let zs = strides(size);
    for i in 0..numel(size) {
        let (mut s, mut d) = (0, 0);
        for k in 0..size.len() {
            let idx = (i / zs[k]) % size[k];
            s += (idx + src_begin[k]) * ss[k];
            d += (idx + dst_begin[k]) * ds[k];
        }
        dst[d] = src[s];
    }
}

/// Per-channel (last axis) mean and biased variance.
pub(super) fn moments(x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let c = *x.shape.last().unwrap();
    let m = (x.data.len() / c) as f32;
    let mut mean = vec![0.0f32; c];
    for (i, &v) in x.data.iter().enumerate() {
        mean[i % c] += v;
    }
    mean.iter_mut().for_each(|v| *v /= m);
    let mut var = vec![0.0f32; c];
    for (i, &v) in x.data.iter().enumerate() {
        let d = v - mean[i % c];
        var[i % c] += d * d;
    }
    var.iter_mut().for_each(|v| *v /= m);
    (mean, var)
}

/// Spatial geometry of a conv-like op on input `[n,h,w,c]` with kernel `[kh,kw]`.
pub(super) fn geometry(
    c: &ConvAttrs,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
) -> (AxisGeometry, AxisGeometry) {
    (
        conv_axis(h, kh, c.stride[0], c.dilation[0], c.padding, 0).unwrap(),
        conv_axis(w, kw, c.stride[1], c.dilation[1], c.padding, 1).unwrap(),
    )
}

/// The input coordinate of output `o`, tap `k` along one axis, if it is inside the image.
#[inline]
pub(super) fn tap(
    o: usize,
    k: usize,
    stride: usize,
    dil: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    let i = (o * stride + k * dil) as isize - pad as isize;
    (i >= 0 && (i as usize) < size).then_some(i as usize)
}

pub(super) fn conv2d(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Vec<f32> {
    let (n, h, wd, ci) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (co, kh, kw) = (w.shape[0], w.shape[1], w.shape[2]);
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let mut acc = b.map(|b| b.data[oc]).unwrap_or(0.0);
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            for ic in 0..ci {
                                acc += x.data[((bi * h + iy) * wd + ix) * ci + ic]
                                    * w.data[((oc * kh + ky) * kw + kx) * ci + ic];
                            }
                        }
                    }
                    out[((bi * oh + oy) * ow + ox) * co + oc] = c.activation.apply(acc);
                }
            }
        }
    }
    out
}

pub(super) fn conv2d_grad_input(
    c: &ConvAttrs,
    dy: &Tensor,
    w: &Tensor,
    in_shape: &[usize],
) -> Vec<f32> {
    let (n, h, wd, ci) = (in_shape[0], in_shape[1], in_shape[2], in_shape[3]);
    let (co, kh, kw) = (w.shape[0], w.shape[1], w.shape[2]);
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dx = vec![0.0; numel(in_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            for ic in 0..ci {
                                dx[((bi * h + iy) * wd + ix) * ci + ic] +=
                                    g * w.data[((oc * kh + ky) * kw + kx) * ci + ic];
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

pub(super) fn conv2d_grad_filter(
    c: &ConvAttrs,
    dy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
) -> Vec<f32> {
    let (n, h, wd, ci) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (co, kh, kw) = (w_shape[0], w_shape[1], w_shape[2]);
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dw = vec![0.0; numel(w_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            for ic in 0..ci {
                                dw[((oc * kh + ky) * kw + kx) * ci + ic] +=
                                    g * x.data[((bi * h + iy) * wd + ix) * ci + ic];
                            }
                        }
                    }
                }
            }
        }
    }
    dw
}

pub(super) fn depthwise(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Vec<f32> {
    let (n, h, wd, ci) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (kh, kw, co) = (w.shape[1], w.shape[2], w.shape[3]);
    let mult = co / ci;
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let ic = oc / mult;
                    let mut acc = b.map(|b| b.data[oc]).unwrap_or(0.0);
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            acc += x.data[((bi * h + iy) * wd + ix) * ci + ic]
                                * w.data[(ky * kw + kx) * co + oc];
                        }
                    }
                    out[((bi * oh + oy) * ow + ox) * co + oc] = c.activation.apply(acc);
                }
            }
        }
    }
    out
}

/// Depthwise gradient: `wrt_input` gives dx (operands dy, kernel), else dkernel (dy, x).
pub(super) fn depthwise_grad(
    c: &ConvAttrs,
    dy: &Tensor,
    other: &Tensor,
    out_shape: &[usize],
    wrt_input: bool,
) -> Vec<f32> {
    let (x_shape, w_shape) = if wrt_input {
        (out_shape, &other.shape[..])
    } else {
        (&other.shape[..], out_shape)
    };
    let (n, h, wd, ci) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let (kh, kw, co) = (w_shape[1], w_shape[2], w_shape[3]);
    let mult = co / ci;
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let ic = oc / mult;
                    let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            let xi = ((bi * h + iy) * wd + ix) * ci + ic;
                            let wi = (ky * kw + kx) * co + oc;
                            if wrt_input {
                                out[xi] += g * other.data[wi];
                            } else {
                                out[wi] += g * other.data[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Visits every (input pixel, kernel tap, output pixel) triple of a transposed conv.
pub(super) fn for_each_transpose_tap(
    c: &ConvAttrs,
    x_shape: &[usize],
    w_shape: &[usize],
    y_shape: &[usize],
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize),
) {
    let (n, h, wd) = (x_shape[0], x_shape[1], x_shape[2]);
    let (kh, kw) = (w_shape[1], w_shape[2]);
    let gy = conv_transpose_axis(h, kh, c.stride[0], c.dilation[0], c.padding, 0).unwrap();
    let gx = conv_transpose_axis(wd, kw, c.stride[1], c.dilation[1], c.padding, 1).unwrap();
    let (oh, ow) = (y_shape[1], y_shape[2]);
    for bi in 0..n {
        for iy in 0..h {
            for ix in 0..wd {
                for ky in 0..kh {
                    let oy =
                        (iy * c.stride[0] + ky * c.dilation[0]) as isize - gy.pad_before as isize;
                    if oy < 0 || oy as usize >= oh {
                        continue;
                    }
                    for kx in 0..kw {
                        let ox = (ix * c.stride[1] + kx * c.dilation[1]) as isize
                            - gx.pad_before as isize;
                        if ox < 0 || ox as usize >= ow {
                            continue;
                        }
                        f(bi, iy, ix, ky, kx, oy as usize, ox as usize);
                    }
                }
            }
        }
    }
}

pub(super) fn conv_transpose(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Vec<f32> {
    let (h, wd, ci) = (x.shape[1], x.shape[2], x.shape[3]);
    let (co, kh, kw) = (w.shape[0], w.shape[1], w.shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for_each_transpose_tap(
        c,
        &x.shape,
        &w.shape,
        out_shape,
        |bi, iy, ix, ky, kx, oy, ox| {
            for oc in 0..co {
                for ic in 0..ci {
                    out[((bi * oh + oy) * ow + ox) * co + oc] += x.data
                        [((bi * h + iy) * wd + ix) * ci + ic]
                        * w.data[((oc * kh + ky) * kw + kx) * ci + ic];
                }
            }
        },
    );
    for (i, v) in out.iter_mut().enumerate() {
        *v = c
            .activation
            .apply(*v + b.map(|b| b.data[i % co]).unwrap_or(0.0));
    }
    out
}

pub(super) fn conv_transpose_grad(
    c: &ConvAttrs,
    dy: &Tensor,
    other: &Tensor,
    out_shape: &[usize],
    wrt_input: bool,
) -> Vec<f32> {
    let (x_shape, w_shape) = if wrt_input {
        (out_shape, &other.shape[..])
    } else {
        (&other.shape[..], out_shape)
    };
    let (h, wd, ci) = (x_shape[1], x_shape[2], x_shape[3]);
    let (co, kh, kw) = (w_shape[0], w_shape[1], w_shape[2]);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for_each_transpose_tap(
        c,
        x_shape,
        w_shape,
        &dy.shape,
        |bi, iy, ix, ky, kx, oy, ox| {
            for oc in 0..co {
                let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                for ic in 0..ci {
                    let xi = ((bi * h + iy) * wd + ix) * ci + ic;
                    let wi = ((oc * kh + ky) * kw + kx) * ci + ic;
                    if wrt_input {
                        out[xi] += g * other.data[wi];
                    } else {
                        out[wi] += g * other.data[xi];
                    }
                }
            }
        },
    );
    out
}

/// In-image taps of pool output `(oy, ox)`: `(iy, ix)` pairs, window order.
pub(super) fn pool_taps(
    p: &PoolAttrs,
    gy: AxisGeometry,
    gx: AxisGeometry,
    h: usize,
    w: usize,
    oy: usize,
    ox: usize,
) -> Vec<(usize, usize)> {
    let mut taps = Vec::new();
    for ky in 0..p.size[0] {
        let Some(iy) = tap(oy, ky, p.stride[0], 1, gy.pad_before, h) else {
            continue;
        };
        for kx in 0..p.size[1] {
            let Some(ix) = tap(ox, kx, p.stride[1], 1, gx.pad_before, w) else {
                continue;
            };
            taps.push((iy, ix));
        }
    }
    taps
}

pub(super) fn pool_geometry(p: &PoolAttrs, h: usize, w: usize) -> (AxisGeometry, AxisGeometry) {
    (
        conv_axis(h, p.size[0], p.stride[0], 1, p.padding, 0).unwrap(),
        conv_axis(w, p.size[1], p.stride[1], 1, p.padding, 1).unwrap(),
    )
}

pub(super) fn pool(p: &PoolAttrs, x: &Tensor, out_shape: &[usize], max: bool) -> Vec<f32> {
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (gy, gx) = pool_geometry(p, h, w);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let taps = pool_taps(p, gy, gx, h, w, oy, ox);
                for k in 0..c {
                    let vals = taps
                        .iter()
                        .map(|&(iy, ix)| x.data[((bi * h + iy) * w + ix) * c + k]);
                    out[((bi * oh + oy) * ow + ox) * c + k] = if max {
                        vals.fold(f32::NEG_INFINITY, f32::max)
                    } else {
                        vals.sum::<f32>() / taps.len() as f32
                    };
                }
            }
        }
    }
    out
}

pub(super) fn max_pool_grad(p: &PoolAttrs, dy: &Tensor, x: &Tensor) -> Vec<f32> {
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (gy, gx) = pool_geometry(p, h, w);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dx = vec![0.0; x.data.len()];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let taps = pool_taps(p, gy, gx, h, w, oy, ox);
                for k in 0..c {
                    // the first maximum in window order takes the gradient
                    let at = |&(iy, ix): &(usize, usize)| ((bi * h + iy) * w + ix) * c + k;
                    let mut best = at(&taps[0]);
                    for t in &taps[1..] {
                        if x.data[at(t)] > x.data[best] {
                            best = at(t);
                        }
                    }
                    dx[best] += dy.data[((bi * oh + oy) * ow + ox) * c + k];
                }
            }
        }
    }
    dx
}

pub(super) fn avg_pool_grad(p: &PoolAttrs, dy: &Tensor, in_shape: &[usize]) -> Vec<f32> {
    let (n, h, w, c) = (in_shape[0], in_shape[1], in_shape[2], in_shape[3]);
    let (gy, gx) = pool_geometry(p, h, w);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dx = vec![0.0; numel(in_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let taps = pool_taps(p, gy, gx, h, w, oy, ox);
                let inv = 1.0 / taps.len() as f32;
                for k in 0..c {
                    let g = dy.data[((bi * oh + oy) * ow + ox) * c + k] * inv;
                    for &(iy, ix) in &taps {
                        dx[((bi * h + iy) * w + ix) * c + k] += g;
                    }
                }
            }
        }
    }
    dx
}

/// The dropout mask value of element `index` at `step`: `1/(1-rate)` kept, `0` dropped.
/// A 32-bit integer hash of `(seed, step, index)`, so the JIT computes the same mask.
pub fn dropout_keep(seed: u64, step: f32, index: usize, rate: f32) -> f32 {
    let mut h = (index as u32)
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add((step as u32).wrapping_mul(0x85EB_CA77))
        .wrapping_add(seed as u32);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    let u = (h >> 8) as f32 * (1.0 / 16_777_216.0);
    if u >= rate {
        1.0 / (1.0 - rate)
    } else {
        0.0
    }
}
