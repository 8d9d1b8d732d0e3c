//! CONV_2D, DEPTHWISE_CONV_2D and TRANSPOSE_CONV on int8 with per-channel requantization
//! (LiteRT `reference_integer_ops::ConvPerChannel`, `DepthwiseConvPerChannel`,
//! `TransposeConv`; parameters from `kernel_util.cc` `PopulateConvolutionQuantizationParams`).
//!
//! Per output channel `c` the real multiplier is `(double)in_s · (double)w_s[c] /
//! (double)out_s`; a per-tensor filter scale is broadcast to every channel. The int32
//! accumulator sums `w · (x - in_zp)` over the in-image taps only (padding taps are
//! skipped, which equals padding with the input zero point), adds the bias, requantizes
//! with double rounding, adds the output zero point and clamps to the fused activation.

use super::array::Array;
use super::context::{
    activation_range, checked_numel, constant, int8_params, multiplier, positive, window_geometry,
    Ctx, KernelError, Kernels, PResult,
};
use super::dot8::{self, Packed, Vnni};
use super::fixed::requantize;
use crate::tflite::model::{ElemType, FusedActivation, Options, PaddingMode, Tensor};

/// The per-channel filter scales of a weight tensor quantized along `axis` (or per tensor,
/// broadcast to `channels`), with every zero point 0.
pub(crate) fn filter_scales(w: &Tensor, axis: usize, channels: usize) -> PResult<Vec<f32>> {
    if !matches!(w.dtype, ElemType::I8 | ElemType::I4) {
        return Err(format!(
            "the filter `{}` is {}; int8 kernels need INT8 (or INT4) weights",
            w.name,
            w.dtype.name()
        )
        .into());
    }
    let q = w.quant.as_ref().ok_or_else(|| {
        KernelError(format!(
            "the filter `{}` has no quantization parameters",
            w.name
        ))
    })?;
    if q.zero_point.iter().any(|&z| z != 0) {
        return Err(format!(
            "the filter `{}` has a non-zero zero point; int8 weights are symmetric",
            w.name
        )
        .into());
    }
    if q.is_per_axis() {
        if q.axis != axis || q.scale.len() != channels {
            return Err(format!(
                "the filter `{}` is quantized along dimension {} with {} scales; this op \
                 needs dimension {axis} with {channels}",
                w.name,
                q.axis,
                q.scale.len()
            )
            .into());
        }
        Ok(q.scale.clone())
    } else {
        Ok(vec![q.scale[0]; channels])
    }
}

/// Checks an optional int32 bias of `channels` entries.
pub(crate) fn check_bias(b: Option<&Tensor>, channels: usize) -> PResult<()> {
    if let Some(b) = b {
        if b.dtype != ElemType::I32 {
            return Err(format!(
                "the bias `{}` is {}; int8 kernels need an INT32 bias",
                b.name,
                b.dtype.name()
            )
            .into());
        }
        if b.numel() != channels {
            return Err(format!(
                "the bias `{}` has {} entries for {channels} output channels",
                b.name,
                b.numel()
            )
            .into());
        }
        if let Some(q) = &b.quant {
            if q.zero_point.iter().any(|&z| z != 0) {
                return Err(format!("the bias `{}` has a non-zero zero point", b.name).into());
            }
        }
    }
    Ok(())
}

fn bias_values(b: Option<&Array>, channels: usize) -> PResult<Vec<i32>> {
    match b {
        None => Ok(vec![0; channels]),
        Some(b) => {
            let v = b.as_i32().ok_or_else(|| {
                KernelError(format!(
                    "the bias is {}, expected INT32",
                    b.elem_type().name()
                ))
            })?;
            if v.len() != channels {
                return Err(
                    format!("the bias has {} entries for {channels} channels", v.len()).into(),
                );
            }
            Ok(v.to_vec())
        }
    }
}

/// Per-channel `(multiplier, shift)` for `in_s · w_s[c] / out_s`, in double precision.
fn channel_multipliers(in_s: f32, w_s: &[f32], out_s: f32) -> PResult<(Vec<i32>, Vec<i32>)> {
    let mut mult = Vec::with_capacity(w_s.len());
    let mut shift = Vec::with_capacity(w_s.len());
    for &ws in w_s {
        let (m, s) = multiplier(in_s as f64 * ws as f64 / out_s as f64, "output")?;
        mult.push(m);
        shift.push(s);
    }
    Ok((mult, shift))
}

fn rank4(x: &[usize], what: &str) -> PResult<[usize; 4]> {
    <[usize; 4]>::try_from(x)
        .map_err(|_| KernelError(format!("the {what} must have rank 4, found {x:?}")))
}

fn check_filter(w: &Array, want: [usize; 4]) -> PResult<&[i8]> {
    if w.shape != want {
        return Err(format!("the filter has shape {:?}, prepared for {want:?}", w.shape).into());
    }
    w.as_i8().ok_or_else(|| {
        KernelError(format!(
            "the filter is {}, expected INT8",
            w.elem_type().name()
        ))
    })
}

/// Shared geometry and requantization parameters of CONV_2D and DEPTHWISE_CONV_2D.
#[derive(Clone, Debug)]
struct Window {
    padding: PaddingMode,
    stride: [usize; 2],
    dilation: [usize; 2],
    in_zp: i32,
    out_zp: i32,
    act: (i32, i32),
    mult: Vec<i32>,
    shift: Vec<i32>,
}

impl Window {
    /// Output `[n, oh, ow]` and padding `[top, left]` for an input `[n, h, w, _]` and kernel.
    fn geometry(&self, x: [usize; 4], kh: usize, kw: usize) -> PResult<([usize; 3], [usize; 2])> {
        let (oh, ph) = window_geometry(self.padding, x[1], kh, self.stride[0], self.dilation[0])?;
        let (ow, pw) = window_geometry(self.padding, x[2], kw, self.stride[1], self.dilation[1])?;
        Ok(([x[0], oh, ow], [ph, pw]))
    }

    /// The input coordinate of output `o`, kernel tap `k` along one axis, if inside.
    #[inline]
    fn tap(&self, axis: usize, o: usize, k: usize, pad: usize, size: usize) -> Option<usize> {
        let i = (o * self.stride[axis] + k * self.dilation[axis]).checked_sub(pad)?;
        (i < size).then_some(i)
    }
}

#[allow(clippy::too_many_arguments)]
fn window_params(
    cx: &Ctx,
    padding: PaddingMode,
    stride_h: i32,
    stride_w: i32,
    dilation_h: i32,
    dilation_w: i32,
    activation: FusedActivation,
    filter_axis: usize,
    channels: usize,
) -> PResult<Window> {
    let x = cx.input(0)?;
    let w = cx.input(1)?;
    let y = cx.output()?;
    let (in_s, in_zp) = int8_params(x)?;
    let (out_s, out_zp) = int8_params(y)?;
    let w_s = filter_scales(w, filter_axis, channels)?;
    check_bias(cx.opt_input(2), channels)?;
    let (mult, shift) = channel_multipliers(in_s, &w_s, out_s)?;
    if let PaddingMode::Other(p) = padding {
        return Err(format!("unknown padding mode {p}").into());
    }
    Ok(Window {
        padding,
        stride: [
            positive(stride_h, "stride_h")?,
            positive(stride_w, "stride_w")?,
        ],
        dilation: [
            positive(dilation_h, "dilation_h_factor")?,
            positive(dilation_w, "dilation_w_factor")?,
        ],
        in_zp,
        out_zp,
        act: activation_range(activation, out_s, out_zp)?,
        mult,
        shift,
    })
}

/// `sum(a[i] · b[i])` in wrapping i32 arithmetic, as the reference kernels accumulate. The
/// operands fit i16 (an int8 value minus a zero point, an int8 weight), so the products are
/// exact and the compiler can use 16-bit multiply-adds.
#[inline]
fn dot(a: &[i16], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .fold(0i32, |acc, (&x, &w)| acc.wrapping_add(x as i32 * w as i32))
}

/// CONV_2D: input `[n,h,w,ic]`, filter `[oc,kh,kw,ic/groups]` per-axis on dimension 0,
/// bias int32 `[oc]`. Grouped convolution when the filter has fewer input channels.
#[derive(Clone, Debug)]
pub struct Conv {
    win: Window,
    filter: [usize; 4],
    in_channels: usize,
    /// The 8-bit dot-product kernel, when asked for, the CPU has it and the convolution is
    /// not grouped.
    dot8: Option<Vnni>,
}

impl Conv {
    pub(crate) fn prepare(cx: &Ctx, kernels: Kernels) -> PResult<Conv> {
        cx.inputs_between(2, 3)?;
        let Options::Conv2d {
            padding,
            stride_h,
            stride_w,
            dilation_h,
            dilation_w,
            activation,
        } = cx.op.options
        else {
            return Err("has no Conv2DOptions".into());
        };
        let x = rank4(&cx.input(0)?.shape, "input")?;
        let w_t = cx.input(1)?;
        let filter = rank4(&w_t.shape, "filter")?;
        constant(w_t, "filter")?;
        let in_channels = x[3];
        if filter[3] == 0 || in_channels % filter[3] != 0 || filter[0] == 0 {
            return Err(format!(
                "the filter {filter:?} does not fit an input with {in_channels} channels"
            )
            .into());
        }
        let groups = in_channels / filter[3];
        if filter[0] % groups != 0 {
            return Err(format!(
                "{} output channels do not split into {groups} groups",
                filter[0]
            )
            .into());
        }
        let win = window_params(
            cx, padding, stride_h, stride_w, dilation_h, dilation_w, activation, 0, filter[0],
        )?;
        let dot8 = match kernels {
            Kernels::Fast if filter[3] == in_channels => Vnni::detect(),
            Kernels::Fast | Kernels::Reference => None,
        };
        Ok(Conv {
            win,
            filter,
            in_channels,
            dot8,
        })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        let x = rank4(x, "input")?;
        if x[3] != self.in_channels {
            return Err(format!(
                "the input has {} channels, the filter expects {}",
                x[3], self.in_channels
            )
            .into());
        }
        let ([n, oh, ow], _) = self.win.geometry(x, self.filter[1], self.filter[2])?;
        let out = vec![n, oh, ow, self.filter[0]];
        checked_numel(&out)?;
        Ok(out)
    }

    pub(crate) fn run(&self, x: &Array, w: &Array, b: Option<&Array>) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let xs = rank4(&x.shape, "input")?;
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let [oc, kh, kw, fic] = self.filter;
        let wd = check_filter(w, self.filter)?;
        let bias = bias_values(b, oc)?;
        let (_, [ph, pw]) = self.win.geometry(xs, kh, kw)?;
        if let Some(cpu) = self.dot8 {
            let out = self.run_dot8(cpu, xs, xd, wd, &bias, [ph, pw], &out_shape);
            return Ok(Array::i8(out_shape, out).expect("sized by run_dot8"));
        }
        let [n, h, wid, ic] = xs;
        let (oh, ow) = (out_shape[1], out_shape[2]);
        let per_group = oc / (ic / fic);
        let off = -self.win.in_zp;
        let taps = kh * kw;
        // The filter widened to i16 once, and per output pixel its receptive field ("patch")
        // with the input offset applied and zeros where a tap falls in the padding (LiteRT
        // skips those taps: a zero adds nothing). Each output channel is then a dot product
        // over contiguous memory, which the compiler vectorizes; i32 wrapping sums do not
        // depend on the order, so the result is bit for bit the reference kernel's.
        let w16: Vec<i16> = wd.iter().map(|&v| v as i16).collect();
        let mut patch = vec![0i16; taps * ic];
        let mut out = vec![0i8; n * oh * ow * oc];
        let mut o = 0;
        for bi in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..kh {
                        let iy = self.win.tap(0, oy, ky, ph, h);
                        for kx in 0..kw {
                            let dst = &mut patch[(ky * kw + kx) * ic..(ky * kw + kx + 1) * ic];
                            match (iy, self.win.tap(1, ox, kx, pw, wid)) {
                                (Some(iy), Some(ix)) => {
                                    let src = ((bi * h + iy) * wid + ix) * ic;
                                    for (d, &v) in dst.iter_mut().zip(&xd[src..src + ic]) {
                                        *d = (v as i32 + off) as i16;
                                    }
                                }
                                _ => dst.fill(0),
                            }
                        }
                    }
                    for (c, &bias_c) in bias.iter().enumerate() {
                        let wrow = &w16[c * taps * fic..(c + 1) * taps * fic];
                        let acc = if fic == ic {
                            dot(&patch, wrow)
                        } else {
                            let g = c / per_group;
                            (0..taps).fold(0i32, |acc, t| {
                                let xs = &patch[t * ic + g * fic..t * ic + (g + 1) * fic];
                                acc.wrapping_add(dot(xs, &wrow[t * fic..(t + 1) * fic]))
                            })
                        };
                        out[o] = requantize(
                            acc.wrapping_add(bias_c),
                            self.win.mult[c],
                            self.win.shift[c],
                            self.win.out_zp,
                            self.win.act,
                        );
                        o += 1;
                    }
                }
            }
        }
        Ok(Array::i8(out_shape, out).expect("sized above"))
    }

    /// [`run`](Self::run) on 8-bit dot products ([`dot8`](super::dot8)): per group of 4
    /// output pixels their patches of `x + 128` (padding taps `zp + 128`), then the shared
    /// requantization.
    #[allow(clippy::too_many_arguments)]
    fn run_dot8(
        &self,
        cpu: Vnni,
        xs: [usize; 4],
        xd: &[i8],
        wd: &[i8],
        bias: &[i32],
        [ph, pw]: [usize; 2],
        out_shape: &[usize],
    ) -> Vec<i8> {
        cpu.vectorized(|| {
            let [oc, kh, kw, _] = self.filter;
            let [n, h, wid, ic] = xs;
            let (oh, ow) = (out_shape[1], out_shape[2]);
            let packed = Packed::new(wd, oc, kh * kw * ic, self.win.in_zp);
            let bias = packed.fold_into_bias(bias);
            let len = packed.patch_len();
            let group = dot8::PIXELS;
            let pad_byte = (self.win.in_zp + 128) as u8;
            let pixels = n * oh * ow;
            // A 1x1 convolution of stride 1 without padding reads each output pixel's patch
            // as the input pixel itself: the patches are the input, no copies.
            let direct = kh == 1
                && kw == 1
                && ph == 0
                && pw == 0
                && self.win.stride == [1, 1]
                && len == ic
                && (oh, ow) == (h, wid);
            // the input made unsigned once: x + 128 is the sign bit flipped (and, read as
            // patches, a group's worth of slack past the end for the last partial group)
            let mut xu: Vec<u8> = xd.iter().map(|&v| (v as u8) ^ 0x80).collect();
            if direct {
                xu.resize(xu.len() + group * len, 0);
            }
            // pixels are taken CHUNK at a time: patches built (unless direct), accumulated 4
            // by 4, then requantized together, so the per-channel constants of the
            // requantization are computed once per chunk
            const CHUNK: usize = 64;
            let mut patches = vec![0u8; if direct { 0 } else { (CHUNK + group) * len }];
            let mut acc = vec![0i32; CHUNK * oc];
            let mut out = vec![0i8; pixels * oc];
            let mut first = 0;
            // the next pixel's (image, row, column), advanced without divisions
            let (mut bi, mut oy, mut ox) = (0, 0, 0);
            while first < pixels {
                let count = CHUNK.min(pixels - first);
                if !direct {
                    for p in 0..count {
                        let (b, y, x) = (bi, oy, ox);
                        ox += 1;
                        if ox == ow {
                            ox = 0;
                            oy += 1;
                            if oy == oh {
                                oy = 0;
                                bi += 1;
                            }
                        }
                        let patch = &mut patches[p * len..(p + 1) * len];
                        self.patch(&xu, [b, y, x], xs, [kh, kw], [ph, pw], pad_byte, patch);
                    }
                }
                let source = if direct {
                    &xu[first * len..]
                } else {
                    &patches[..]
                };
                for g in (0..count).step_by(group) {
                    let pixels = group.min(count - g);
                    let acc = &mut acc[g * oc..];
                    packed.accumulate(cpu, &source[g * len..], pixels, acc);
                }
                cpu.requantize(
                    &acc[..count * oc],
                    &bias,
                    &self.win.mult,
                    &self.win.shift,
                    self.win.out_zp,
                    self.win.act,
                    &mut out[first * oc..(first + count) * oc],
                );
                first += count;
            }
            out
        })
    }

    /// The patch of output pixel `(b, oy, ox)` in `x + 128` (`xu`, shape `xs`): taps in
    /// the padding read `pad_byte` (`zp + 128`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn patch(
        &self,
        xu: &[u8],
        [b, oy, ox]: [usize; 3],
        [_, h, wid, ic]: [usize; 4],
        [kh, kw]: [usize; 2],
        [ph, pw]: [usize; 2],
        pad_byte: u8,
        patch: &mut [u8],
    ) {
        for ky in 0..kh {
            let iy = self.win.tap(0, oy, ky, ph, h);
            let row = &mut patch[ky * kw * ic..(ky + 1) * kw * ic];
            // a whole row of taps inside the image is one contiguous run of the input
            // (dilation 1)
            let first_x = self.win.tap(1, ox, 0, pw, wid);
            let last_x = self.win.tap(1, ox, kw - 1, pw, wid);
            if let (Some(iy), Some(ix), Some(_), 1) = (iy, first_x, last_x, self.win.dilation[1]) {
                let src = ((b * h + iy) * wid + ix) * ic;
                row.copy_from_slice(&xu[src..src + kw * ic]);
                continue;
            }
            for kx in 0..kw {
                let dst = &mut row[kx * ic..(kx + 1) * ic];
                match (iy, self.win.tap(1, ox, kx, pw, wid)) {
                    (Some(iy), Some(ix)) => {
                        let src = ((b * h + iy) * wid + ix) * ic;
                        dst.copy_from_slice(&xu[src..src + ic]);
                    }
                    _ => dst.fill(pad_byte),
                }
            }
        }
    }
}

/// DEPTHWISE_CONV_2D: input `[n,h,w,ic]`, filter `[1,kh,kw,ic·m]` per-axis on dimension 3;
/// output channel `c` reads input channel `c / m`. The multiplier is recomputed from the
/// shapes, as LiteRT does (the `depth_multiplier` option is not trusted).
#[derive(Clone, Debug)]
pub struct DepthwiseConv {
    win: Window,
    filter: [usize; 4],
    in_channels: usize,
    /// AVX-512 code for depth multiplier 1, when asked for and the CPU has it.
    fast: Option<Vnni>,
}

impl DepthwiseConv {
    pub(crate) fn prepare(cx: &Ctx, kernels: Kernels) -> PResult<DepthwiseConv> {
        cx.inputs_between(2, 3)?;
        let Options::DepthwiseConv2d {
            padding,
            stride_h,
            stride_w,
            dilation_h,
            dilation_w,
            activation,
            ..
        } = cx.op.options
        else {
            return Err("has no DepthwiseConv2DOptions".into());
        };
        let x = rank4(&cx.input(0)?.shape, "input")?;
        let w_t = cx.input(1)?;
        let filter = rank4(&w_t.shape, "filter")?;
        constant(w_t, "filter")?;
        if filter[0] != 1 || x[3] == 0 || filter[3] % x[3] != 0 {
            return Err(format!(
                "the filter {filter:?} must be [1, kh, kw, {}·multiplier]",
                x[3]
            )
            .into());
        }
        let win = window_params(
            cx, padding, stride_h, stride_w, dilation_h, dilation_w, activation, 3, filter[3],
        )?;
        let fast = match kernels {
            Kernels::Fast if filter[3] == x[3] => Vnni::detect(),
            Kernels::Fast | Kernels::Reference => None,
        };
        Ok(DepthwiseConv {
            win,
            filter,
            in_channels: x[3],
            fast,
        })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        let x = rank4(x, "input")?;
        if x[3] != self.in_channels {
            return Err(format!(
                "the input has {} channels, the filter expects {}",
                x[3], self.in_channels
            )
            .into());
        }
        let ([n, oh, ow], _) = self.win.geometry(x, self.filter[1], self.filter[2])?;
        let out = vec![n, oh, ow, self.filter[3]];
        checked_numel(&out)?;
        Ok(out)
    }

    pub(crate) fn run(&self, x: &Array, w: &Array, b: Option<&Array>) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let xs = rank4(&x.shape, "input")?;
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let [_, kh, kw, oc] = self.filter;
        let wd = check_filter(w, self.filter)?;
        let bias = bias_values(b, oc)?;
        let (_, [ph, pw]) = self.win.geometry(xs, kh, kw)?;
        if let Some(cpu) = self.fast {
            let out = self.run_fast(cpu, xs, xd, wd, &bias, [ph, pw], &out_shape);
            return Ok(Array::i8(out_shape, out).expect("sized by run_fast"));
        }
        let [n, h, wid, ic] = xs;
        let mult = oc / ic;
        let (oh, ow) = (out_shape[1], out_shape[2]);
        let off = -self.win.in_zp;
        // Per output pixel, all channels at once: each valid tap adds `w[tap, c] · x[c / m]`
        // to a row of accumulators (contiguous, vectorized; the i32 wrapping sums are the
        // reference kernel's whatever the order).
        let w16: Vec<i16> = wd.iter().map(|&v| v as i16).collect();
        let mut xrow = vec![0i16; oc];
        let mut acc = vec![0i32; oc];
        let mut out = vec![0i8; n * oh * ow * oc];
        let mut o = 0;
        for bi in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    acc.fill(0);
                    for ky in 0..kh {
                        let Some(iy) = self.win.tap(0, oy, ky, ph, h) else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) = self.win.tap(1, ox, kx, pw, wid) else {
                                continue;
                            };
                            let src = &xd[((bi * h + iy) * wid + ix) * ic..][..ic];
                            for (c, x) in xrow.iter_mut().enumerate() {
                                *x = (src[c / mult] as i32 + off) as i16;
                            }
                            let wrow = &w16[(ky * kw + kx) * oc..(ky * kw + kx + 1) * oc];
                            for ((a, &x), &w) in acc.iter_mut().zip(&xrow).zip(wrow) {
                                *a = a.wrapping_add(w as i32 * x as i32);
                            }
                        }
                    }
                    for (c, &a) in acc.iter().enumerate() {
                        out[o] = requantize(
                            a.wrapping_add(bias[c]),
                            self.win.mult[c],
                            self.win.shift[c],
                            self.win.out_zp,
                            self.win.act,
                        );
                        o += 1;
                    }
                }
            }
        }
        Ok(Array::i8(out_shape, out).expect("sized above"))
    }

    /// [`run`](Self::run) for depth multiplier 1 compiled for AVX-512: per output pixel the
    /// valid taps add `w[tap, c] · (x[c] − zp)` to a row of channel accumulators (16 lanes
    /// per instruction), then the vector requantization.
    #[allow(clippy::too_many_arguments)]
    fn run_fast(
        &self,
        cpu: Vnni,
        xs: [usize; 4],
        xd: &[i8],
        wd: &[i8],
        bias: &[i32],
        [ph, pw]: [usize; 2],
        out_shape: &[usize],
    ) -> Vec<i8> {
        cpu.vectorized(|| {
            let [_, kh, kw, ch] = self.filter;
            let [n, h, wid, _] = xs;
            let (oh, ow) = (out_shape[1], out_shape[2]);
            let zp = self.win.in_zp;
            // one output row's accumulators, requantized together
            let mut acc = vec![0i32; ow * ch];
            let mut taps = Vec::with_capacity(kh * kw);
            let mut out = vec![0i8; n * oh * ow * ch];
            let mut o = 0;
            for bi in 0..n {
                for oy in 0..oh {
                    for (ox, acc) in acc.chunks_exact_mut(ch).enumerate() {
                        taps.clear();
                        for ky in 0..kh {
                            let Some(iy) = self.win.tap(0, oy, ky, ph, h) else {
                                continue;
                            };
                            for kx in 0..kw {
                                if let Some(ix) = self.win.tap(1, ox, kx, pw, wid) {
                                    taps.push((
                                        ((bi * h + iy) * wid + ix) * ch,
                                        (ky * kw + kx) * ch,
                                    ));
                                }
                            }
                        }
                        cpu.depthwise_pixel(xd, wd, &taps, zp, acc);
                    }
                    cpu.requantize(
                        &acc,
                        bias,
                        &self.win.mult,
                        &self.win.shift,
                        self.win.out_zp,
                        self.win.act,
                        &mut out[o..o + ow * ch],
                    );
                    o += ow * ch;
                }
            }
            out
        })
    }
}

/// TRANSPOSE_CONV: inputs `(output_shape int32[4], filter [oc,kh,kw,ic], input, bias?)`.
/// The output size is the constant `output_shape`; the padding follows from it (LiteRT
/// runs `padding.h` with the output as the "input" and requires it to give back the input
/// size). Each input pixel scatters `(x - in_zp) · w` into an int32 scratch image; then
/// bias, per-channel requantization and clamping as in CONV_2D.
///
/// A fused activation is applied as the op specifies. (LiteRT 2.x reads it through the
/// wrong options struct in `transpose_conv.cc` `Prepare`, so qatc's exporter never fuses
/// one into TRANSPOSE_CONV; it emits a separate RELU/RELU6.)
#[derive(Clone, Debug)]
pub struct TransposeConv {
    win: Window,
    filter: [usize; 4],
    output_shape: [usize; 4],
}

impl TransposeConv {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<TransposeConv> {
        cx.inputs_between(3, 4)?;
        let Options::TransposeConv {
            padding,
            stride_h,
            stride_w,
            activation,
        } = cx.op.options
        else {
            return Err("has no TransposeConvOptions".into());
        };
        let shape_t = cx.input(0)?;
        let dims = super::context::const_ints(shape_t, "output shape")?;
        if dims.len() != 4 || dims.iter().any(|&d| d <= 0 || d > i32::MAX as i64) {
            return Err(format!("the output shape {dims:?} must be 4 positive sizes").into());
        }
        let output_shape = [
            dims[0] as usize,
            dims[1] as usize,
            dims[2] as usize,
            dims[3] as usize,
        ];
        checked_numel(&output_shape)?;
        let w_t = cx.input(1)?;
        let filter = rank4(&w_t.shape, "filter")?;
        constant(w_t, "filter")?;
        let x_t = cx.input(2)?;
        let x = rank4(&x_t.shape, "input")?;
        if filter[3] != x[3] || filter[0] != output_shape[3] || filter[0] == 0 {
            return Err(format!(
                "the filter {filter:?} does not map {} input channels to the {} output channels",
                x[3], output_shape[3]
            )
            .into());
        }
        // window_params reads the input at index 0 and the bias at 2; TRANSPOSE_CONV keeps
        // them at 2 and 3, so set the parameters up here.
        let y = cx.output()?;
        let (in_s, in_zp) = int8_params(x_t)?;
        let (out_s, out_zp) = int8_params(y)?;
        let w_s = filter_scales(w_t, 0, filter[0])?;
        check_bias(cx.opt_input(3), filter[0])?;
        let (mult, shift) = channel_multipliers(in_s, &w_s, out_s)?;
        if let PaddingMode::Other(p) = padding {
            return Err(format!("unknown padding mode {p}").into());
        }
        let win = Window {
            padding,
            stride: [
                positive(stride_h, "stride_h")?,
                positive(stride_w, "stride_w")?,
            ],
            dilation: [1, 1],
            in_zp,
            out_zp,
            act: activation_range(activation, out_s, out_zp)?,
            mult,
            shift,
        };
        Ok(TransposeConv {
            win,
            filter,
            output_shape,
        })
    }

    /// The padding `[top, left]`, checking that the output size maps back to `x`.
    fn padding(&self, x: [usize; 4]) -> PResult<[usize; 2]> {
        let [_, oh, ow, _] = self.output_shape;
        let (ih, ph) =
            window_geometry(self.win.padding, oh, self.filter[1], self.win.stride[0], 1)?;
        let (iw, pw) =
            window_geometry(self.win.padding, ow, self.filter[2], self.win.stride[1], 1)?;
        if ih != x[1] || iw != x[2] {
            return Err(format!(
                "the output shape {:?} corresponds to a {ih}x{iw} input, not {}x{}",
                self.output_shape, x[1], x[2]
            )
            .into());
        }
        Ok([ph, pw])
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        let x = rank4(x, "input")?;
        if x[3] != self.filter[3] {
            return Err(format!(
                "the input has {} channels, the filter expects {}",
                x[3], self.filter[3]
            )
            .into());
        }
        if x[0] != self.output_shape[0] {
            return Err(format!(
                "the input batch {} differs from the batch {} of the constant output shape \
                 (TRANSPOSE_CONV models have a fixed batch)",
                x[0], self.output_shape[0]
            )
            .into());
        }
        self.padding(x)?;
        Ok(self.output_shape.to_vec())
    }

    pub(crate) fn run(&self, x: &Array, w: &Array, b: Option<&Array>) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let xs = rank4(&x.shape, "input")?;
        let [ph, pw] = self.padding(xs)?;
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let [oc, kh, kw, ic] = self.filter;
        let wd = check_filter(w, self.filter)?;
        let bias = bias_values(b, oc)?;
        let [n, h, wid, _] = xs;
        let [_, oh, ow, _] = self.output_shape;
        let off = -self.win.in_zp;
        let mut scratch = vec![0i32; n * oh * ow * oc];
        for bi in 0..n {
            for iy in 0..h {
                for ix in 0..wid {
                    for ci in 0..ic {
                        let xv = xd[((bi * h + iy) * wid + ix) * ic + ci] as i32 + off;
                        for ky in 0..kh {
                            let Some(oy) = (iy * self.win.stride[0] + ky).checked_sub(ph) else {
                                continue;
                            };
                            if oy >= oh {
                                continue;
                            }
                            for kx in 0..kw {
                                let Some(ox) = (ix * self.win.stride[1] + kx).checked_sub(pw)
                                else {
                                    continue;
                                };
                                if ox >= ow {
                                    continue;
                                }
                                let dst = ((bi * oh + oy) * ow + ox) * oc;
                                for c in 0..oc {
                                    let wv = wd[((c * kh + ky) * kw + kx) * ic + ci] as i32;
                                    scratch[dst + c] = scratch[dst + c].wrapping_add(xv * wv);
                                }
                            }
                        }
                    }
                }
            }
        }
        let out: Vec<i8> = scratch
            .iter()
            .enumerate()
            .map(|(i, &acc)| {
                let c = i % oc;
                requantize(
                    acc.wrapping_add(bias[c]),
                    self.win.mult[c],
                    self.win.shift[c],
                    self.win.out_zp,
                    self.win.act,
                )
            })
            .collect();
        Ok(Array::i8(out_shape, out).expect("sized above"))
    }
}
