//! The geometry of a convolution as its kernels see it: sizes, strides, dilation and
//! padding of both spatial axes, for the forward direction and the transposed one.

use super::rows;
use super::window::WinGeom;
use crate::ir::infer::{conv_axis, conv_transpose_axis};
use crate::ir::op::ConvAttrs;

/// The geometry of a forward convolution `x[n,h,w,ci] * k[co,kh,kw,ci] -> y[n,oh,ow,co]`
/// with `x` tap `(ky,kx)` of output `(oy,ox)` at `(oy*sy + ky*dy - pt, ox*sx + kx*dx - pl)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Geom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub ci: usize,
    pub oh: usize,
    pub ow: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad: [usize; 2],
}

impl Geom {
    /// Output pixels (GEMM rows).
    pub(super) fn m(&self) -> usize {
        self.n * self.oh * self.ow
    }
    /// Kernel taps times input channels (GEMM depth).
    pub(super) fn k(&self) -> usize {
        self.kh * self.kw * self.ci
    }
    /// A 1x1, stride-1, unpadded convolution: a plain GEMM on the NHWC activation.
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.oh == self.h
            && self.ow == self.w
    }
    pub(super) fn key(&self) -> String {
        format!("{self:?}")
    }
    /// Row-kernel axes of the forward convolution (destination = output).
    pub(super) fn axes(&self) -> (rows::Axis, rows::Axis) {
        (
            rows::Axis {
                src: self.h,
                dst: self.oh,
                k: self.kh,
                stride: self.stride[0],
                dilation: self.dilation[0],
                pad: self.pad[0] as isize,
                gather: false,
            },
            rows::Axis {
                src: self.w,
                dst: self.ow,
                k: self.kw,
                stride: self.stride[1],
                dilation: self.dilation[1],
                pad: self.pad[1] as isize,
                gather: false,
            },
        )
    }

    /// Row-kernel axes of the gathering transpose (destination = input).
    pub(super) fn gather_axes(&self) -> (rows::Axis, rows::Axis) {
        let (mut ay, mut ax) = self.axes();
        for a in [&mut ay, &mut ax] {
            std::mem::swap(&mut a.src, &mut a.dst);
            a.gather = true;
        }
        (ay, ax)
    }

    /// The sliding window of this convolution over its input.
    pub(super) fn window(&self) -> WinGeom {
        WinGeom {
            n: self.n,
            src_h: self.h,
            src_w: self.w,
            dst_h: self.oh,
            dst_w: self.ow,
            kh: self.kh,
            kw: self.kw,
            stride: self.stride,
            dilation: self.dilation,
            pad: [self.pad[0] as isize, self.pad[1] as isize],
            gather: false,
        }
    }
}

/// Geometry of a forward conv (or depthwise) from its attributes, input and output shapes.
pub(super) fn forward_geom(c: &ConvAttrs, x: &[usize], y: &[usize], kh: usize, kw: usize) -> Geom {
    let gy = conv_axis(x[1], kh, c.stride[0], c.dilation[0], c.padding, 0).unwrap();
    let gx = conv_axis(x[2], kw, c.stride[1], c.dilation[1], c.padding, 1).unwrap();
    Geom {
        n: x[0],
        h: x[1],
        w: x[2],
        ci: x[3],
        oh: y[1],
        ow: y[2],
        co: y[3],
        kh,
        kw,
        stride: c.stride,
        dilation: c.dilation,
        pad: [gy.pad_before, gx.pad_before],
    }
}

/// The forward-conv view of a transposed conv `x[n,h,w,ci] -> y[n,oh,ow,co]`: a conv whose
/// input is `y` and whose output is `x` (kernel `[ci,kh,kw,co]`).
pub(super) fn transpose_geom(
    c: &ConvAttrs,
    x: &[usize],
    y: &[usize],
    kh: usize,
    kw: usize,
) -> Geom {
    let gy = conv_transpose_axis(x[1], kh, c.stride[0], c.dilation[0], c.padding, 0).unwrap();
    let gx = conv_transpose_axis(x[2], kw, c.stride[1], c.dilation[1], c.padding, 1).unwrap();
    Geom {
        n: x[0],
        h: y[1],
        w: y[2],
        ci: y[3],
        oh: x[1],
        ow: x[2],
        co: x[3],
        kh,
        kw,
        stride: c.stride,
        dilation: c.dilation,
        pad: [gy.pad_before, gx.pad_before],
    }
}
