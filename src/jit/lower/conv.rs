//! Contractions: `dense`, `conv2d`, `depthwise_conv2d`, `conv2d_transpose` and all their
//! gradients.
//!
//! Convolutions and dense layers are GEMMs on the host GEMM. In NHWC a 1x1 stride-1
//! convolution is a plain GEMM on the activation; other convolutions go through `im2col`
//! (`[pixels, kh*kw*cin]`, shared between the forward pass and the filter gradient) and
//! their input gradient through a gathering `col2im`. Transposed convolutions are the same
//! three primitives with the roles of input and output exchanged and the kernel's first and
//! last axes swapped. Bias and fused activation follow as a loop, which fuses with whatever
//! elementwise op comes next.
//!
//! Depthwise convolutions are direct sliding-window kernels vectorized over channels
//! (`window.rs`); the filter gradient reduces into per-thread partials.

use super::context::{along, same, Lower, Val};
use super::elementwise::activation;
use super::rows::{self, RowBody, Rows, Tap};
use super::window::{for_channels, mask_value, pixel, WinGeom};
use crate::error::Result;
use crate::ir::infer::{conv_axis, conv_transpose_axis};
use crate::ir::op::{Activation, ConvAttrs};
use crate::jit::cg::Cg;
use crate::jit::lir::{Access, Gemm, GemmSplit, Inst, Kernel, Mat, VtId};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

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
    fn m(&self) -> usize {
        self.n * self.oh * self.ow
    }
    /// Kernel taps times input channels (GEMM depth).
    fn k(&self) -> usize {
        self.kh * self.kw * self.ci
    }
    /// A 1x1, stride-1, unpadded convolution: a plain GEMM on the NHWC activation.
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.oh == self.h
            && self.ow == self.w
    }
    fn key(&self) -> String {
        format!("{self:?}")
    }
    /// Row-kernel axes of the forward convolution (destination = output).
    fn axes(&self) -> (rows::Axis, rows::Axis) {
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
    fn gather_axes(&self) -> (rows::Axis, rows::Axis) {
        let (mut ay, mut ax) = self.axes();
        for a in [&mut ay, &mut ax] {
            std::mem::swap(&mut a.src, &mut a.dst);
            a.gather = true;
        }
        (ay, ax)
    }

    /// The sliding window of this convolution over its input.
    fn window(&self) -> WinGeom {
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
fn forward_geom(c: &ConvAttrs, x: &[usize], y: &[usize], kh: usize, kw: usize) -> Geom {
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
fn transpose_geom(c: &ConvAttrs, x: &[usize], y: &[usize], kh: usize, kw: usize) -> Geom {
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

fn mat(vt: VtId, rs: usize, cs: usize) -> Mat {
    Mat {
        vt,
        offset: 0,
        rs: rs as isize,
        cs: cs as isize,
    }
}

/// How to share a GEMM between threads: split the long output side, or the reduction when
/// the output is small and the reduction long (filter gradients).
fn split_for(m: usize, n: usize, k: usize) -> GemmSplit {
    if k > 4 * m.max(n) && m * n <= 64 * 1024 {
        GemmSplit::K
    } else if m >= n {
        GemmSplit::Rows
    } else {
        GemmSplit::Cols
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm(cx: &mut Lower, suffix: &str, m: usize, n: usize, k: usize, dst: Mat, lhs: Mat, rhs: Mat) {
    let name = if suffix.is_empty() {
        cx.name().to_string()
    } else {
        format!("{}.{suffix}", cx.name())
    };
    cx.push(Inst::Gemm(Gemm {
        name,
        m,
        n,
        k,
        dst,
        lhs,
        rhs,
        accumulate: false,
        split: split_for(m, n, k),
        partial: None,
    }));
}

/// `im2col(x)`: `[n*oh*ow, kh*kw*ci]`, or `x` itself for pointwise convolutions. Shared by
/// the forward pass and the filter gradient of the same input.
fn columns(cx: &mut Lower, x: VtId, g: &Geom) -> VtId {
    if g.pointwise() {
        return x;
    }
    let key = format!("im2col:{x}:{}", g.key());
    if let Some(v) = cx.memo.get(&key) {
        return v[0];
    }
    let cols = cx.temp("im2col", g.m() * g.k());
    let name = format!("{}.im2col", cx.name());
    cx.kernel(Im2col {
        name,
        x,
        cols,
        g: g.clone(),
    });
    cx.memo.insert(key, vec![cols]);
    cols
}

/// `y[m, co] = cols[m, K] * k[co, K]^T`
fn conv_forward(cx: &mut Lower, x: VtId, k: VtId, y: VtId, g: &Geom) {
    let cols = columns(cx, x, g);
    let kk = g.k();
    gemm(
        cx,
        "",
        g.m(),
        g.co,
        kk,
        mat(y, g.co, 1),
        mat(cols, kk, 1),
        mat(k, 1, kk),
    );
}

/// `dx = col2im(dy[m, co] * k[co, K])`
fn conv_grad_input(cx: &mut Lower, dy: VtId, k: VtId, dx: VtId, g: &Geom) {
    let kk = g.k();
    if g.pointwise() {
        gemm(
            cx,
            "",
            g.m(),
            g.ci,
            g.co,
            mat(dx, g.ci, 1),
            mat(dy, g.co, 1),
            mat(k, kk, 1),
        );
        return;
    }
    let dcols = cx.temp("dcols", g.m() * kk);
    gemm(
        cx,
        "dcols",
        g.m(),
        kk,
        g.co,
        mat(dcols, kk, 1),
        mat(dy, g.co, 1),
        mat(k, kk, 1),
    );
    let name = format!("{}.col2im", cx.name());
    cx.kernel(Col2im {
        name,
        dcols,
        dx,
        g: g.clone(),
    });
}

/// `dk[co, K] = dy[m, co]^T * cols[m, K]`
fn conv_grad_filter(cx: &mut Lower, dy: VtId, x: VtId, dk: VtId, g: &Geom) {
    let cols = columns(cx, x, g);
    let kk = g.k();
    gemm(
        cx,
        "",
        g.co,
        kk,
        g.m(),
        mat(dk, kk, 1),
        mat(dy, 1, g.co),
        mat(cols, kk, 1),
    );
}

/// Swaps axes 0 and 3 of a `[a, kh, kw, b]` kernel into a new `[b, kh, kw, a]` one.
fn swap_kernel_axes(cx: &mut Lower, suffix: &str, k: VtId, shape: &[usize]) -> Val {
    let (a, kh, kw, b) = (shape[0], shape[1], shape[2], shape[3]);
    let out = [b, kh, kw, a];
    let vt = cx.temp(suffix, a * kh * kw * b);
    let mut l = cx.new_loop(suffix, &out);
    // out[j, y, x, i] = k[i, y, x, j]
    let src = Access {
        vt: k,
        offset: 0,
        strides: vec![1, (kw * b) as isize, b as isize, (kh * kw * b) as isize],
    };
    let v = l.leaf(src);
    l.store(v, Access::identity(vt, &out));
    cx.push(Inst::Loop(l));
    Val {
        vt,
        shape: out.to_vec(),
    }
}

/// Bias and fused activation after a contraction into `raw` (skipped when there is neither).
fn epilogue(cx: &mut Lower, raw: Val, bias: Option<Val>, act: Activation) -> Val {
    if bias.is_none() && act == Activation::None {
        return raw;
    }
    let s = raw.shape.clone();
    let r = s.len();
    cx.map("", &s, |l| {
        let y = l.leaf(same(&raw, &s));
        let y = match &bias {
            Some(b) => {
                let bv = l.leaf(along(b.vt, 0, &s, r - 1));
                l.add(y, bv)
            }
            None => y,
        };
        activation(l, act, y)
    })
}

/// The bias operand of a convolution or dense node, if it has one.
fn bias(cx: &Lower) -> Option<Val> {
    (cx.n_args() > 2).then(|| cx.arg(2))
}

/// `dense`: one GEMM, bias and activation in the epilogue.
pub fn dense(cx: &mut Lower, act: &Activation) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (x, k) = (cx.arg(0), cx.arg(1));
        let (n, i, o) = (x.shape[0], x.shape[1], k.shape[0]);
        let raw = cx.temp(
            if bias(cx).is_some() || *act != Activation::None {
                "raw"
            } else {
                ""
            },
            n * o,
        );
        gemm(
            cx,
            "",
            n,
            o,
            i,
            mat(raw, o, 1),
            mat(x.vt, i, 1),
            mat(k.vt, 1, i),
        );
        let b = bias(cx);
        epilogue(
            cx,
            Val {
                vt: raw,
                shape: out.clone(),
            },
            b,
            *act,
        )
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `dense_grad_input`: `dy · kernel`.
pub fn dense_grad_input(cx: &mut Lower) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, k) = (cx.arg(0), cx.arg(1));
        let (n, o, i) = (dy.shape[0], k.shape[0], k.shape[1]);
        let dx = cx.temp("", n * i);
        gemm(
            cx,
            "",
            n,
            i,
            o,
            mat(dx, i, 1),
            mat(dy.vt, o, 1),
            mat(k.vt, i, 1),
        );
        Val {
            vt: dx,
            shape: out.clone(),
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `dense_grad_weight`: `dyᵀ · x`.
pub fn dense_grad_weight(cx: &mut Lower) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        let (n, o, i) = (dy.shape[0], dy.shape[1], x.shape[1]);
        let dk = cx.temp("", o * i);
        gemm(
            cx,
            "",
            o,
            i,
            n,
            mat(dk, i, 1),
            mat(dy.vt, 1, o),
            mat(x.vt, i, 1),
        );
        Val {
            vt: dk,
            shape: out.clone(),
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `conv2d`: patch GEMMs, bias and activation in the epilogue.
pub fn conv2d(cx: &mut Lower, c: &ConvAttrs) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (x, k) = (cx.arg(0), cx.arg(1));
        let g = forward_geom(c, &x.shape, &out, k.shape[1], k.shape[2]);
        let has_epi = bias(cx).is_some() || c.activation != Activation::None;
        let raw = cx.temp(if has_epi { "raw" } else { "" }, out.iter().product());
        conv_forward(cx, x.vt, k.vt, raw, &g);
        let b = bias(cx);
        epilogue(
            cx,
            Val {
                vt: raw,
                shape: out.clone(),
            },
            b,
            c.activation,
        )
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `conv2d_grad_input`: the transposed convolution of dy.
pub fn conv2d_grad_input(cx: &mut Lower, conv: &ConvAttrs, input_shape: &[usize]) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, k) = (cx.arg(0), cx.arg(1));
        let g = forward_geom(conv, input_shape, &dy.shape, k.shape[1], k.shape[2]);
        let dx = cx.temp("", input_shape.iter().product());
        conv_grad_input(cx, dy.vt, k.vt, dx, &g);
        Val {
            vt: dx,
            shape: out.clone(),
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `conv2d_grad_filter`: `dyᵀ · patches(x)`.
pub fn conv2d_grad_filter(cx: &mut Lower, conv: &ConvAttrs, filter_shape: &[usize]) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        let g = forward_geom(conv, &x.shape, &dy.shape, filter_shape[1], filter_shape[2]);
        let dk = cx.temp("", filter_shape.iter().product());
        conv_grad_filter(cx, dy.vt, x.vt, dk, &g);
        Val {
            vt: dk,
            shape: out.clone(),
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `conv2d_transpose`: conv2d's input gradient with the kernel's axes swapped.
pub fn conv2d_transpose(cx: &mut Lower, c: &ConvAttrs) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (x, k) = (cx.arg(0), cx.arg(1));
        let g = transpose_geom(c, &x.shape, &out, k.shape[1], k.shape[2]);
        let kf = swap_kernel_axes(cx, "kernel_t", k.vt, &k.shape);
        let has_epi = bias(cx).is_some() || c.activation != Activation::None;
        let raw = cx.temp(if has_epi { "raw" } else { "" }, out.iter().product());
        conv_grad_input(cx, x.vt, kf.vt, raw, &g);
        let b = bias(cx);
        epilogue(
            cx,
            Val {
                vt: raw,
                shape: out.clone(),
            },
            b,
            c.activation,
        )
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `conv2d_transpose_grad_input`: a forward convolution of dy.
pub fn conv2d_transpose_grad_input(
    cx: &mut Lower,
    conv: &ConvAttrs,
    input_shape: &[usize],
) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, k) = (cx.arg(0), cx.arg(1));
        let g = transpose_geom(conv, input_shape, &dy.shape, k.shape[1], k.shape[2]);
        let kf = swap_kernel_axes(cx, "kernel_t", k.vt, &k.shape);
        let dx = cx.temp("", input_shape.iter().product());
        conv_forward(cx, dy.vt, kf.vt, dx, &g);
        Val {
            vt: dx,
            shape: out.clone(),
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `conv2d_transpose_grad_filter`: conv2d's filter gradient, axes swapped back.
pub fn conv2d_transpose_grad_filter(
    cx: &mut Lower,
    conv: &ConvAttrs,
    filter_shape: &[usize],
) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        let g = transpose_geom(conv, &x.shape, &dy.shape, filter_shape[1], filter_shape[2]);
        let fs = filter_shape;
        let dkf = cx.temp("dkernel_t", fs.iter().product());
        conv_grad_filter(cx, x.vt, dy.vt, dkf, &g);
        let swapped = [fs[3], fs[1], fs[2], fs[0]];
        swap_kernel_axes(cx, "", dkf, &swapped)
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `depthwise_conv2d`: the row-tiled depthwise kernel.
pub fn depthwise_conv2d(cx: &mut Lower, c: &ConvAttrs) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (x, k) = (cx.arg(0), cx.arg(1));
        let g = forward_geom(c, &x.shape, &out, k.shape[1], k.shape[2]);
        let has_epi = bias(cx).is_some() || c.activation != Activation::None;
        let raw = cx.temp(if has_epi { "raw" } else { "" }, out.iter().product());
        let name = cx.name().to_string();
        let zeros = cx.prog.zeros(Rows::zero_row(&g.axes().1, g.ci));
        cx.kernel(Depthwise {
            name,
            x: x.vt,
            k: k.vt,
            y: raw,
            zeros,
            g,
        });
        let b = bias(cx);
        epilogue(
            cx,
            Val {
                vt: raw,
                shape: out.clone(),
            },
            b,
            c.activation,
        )
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `depthwise_conv2d_grad_input`: the depthwise gather kernel.
pub fn depthwise_conv2d_grad_input(
    cx: &mut Lower,
    conv: &ConvAttrs,
    input_shape: &[usize],
) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, k) = (cx.arg(0), cx.arg(1));
        let g = forward_geom(conv, input_shape, &dy.shape, k.shape[1], k.shape[2]);
        let dx = cx.temp("", input_shape.iter().product());
        let name = cx.name().to_string();
        let zeros = cx.prog.zeros(Rows::zero_row(&g.gather_axes().1, g.co));
        cx.kernel(DepthwiseGradInput {
            name,
            dy: dy.vt,
            k: k.vt,
            dx,
            zeros,
            g,
        });
        Val {
            vt: dx,
            shape: out.clone(),
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

/// `depthwise_conv2d_grad_filter`: per-thread partial sums of `dy * x` taps.
pub fn depthwise_conv2d_grad_filter(
    cx: &mut Lower,
    conv: &ConvAttrs,
    filter_shape: &[usize],
) -> Result<Val> {
    let out = cx.out_shape();
    let v = {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        let g = forward_geom(conv, &x.shape, &dy.shape, filter_shape[1], filter_shape[2]);
        let numel: usize = filter_shape.iter().product();
        let dk = cx.temp("", numel);
        let partial = (cx.threads > 1).then(|| cx.temp("partial", cx.threads * numel));
        let name = cx.name().to_string();
        let zeros = cx.prog.zeros(Rows::zero_row(&g.axes().1, g.ci));
        cx.kernel(DepthwiseGradFilter {
            name,
            dy: dy.vt,
            x: x.vt,
            dk,
            partial,
            zeros,
            g,
        });
        Val {
            vt: dk,
            shape: out.clone(),
        }
    };
    Ok(Val {
        vt: v.vt,
        shape: out,
    })
}

// ---- kernels ---------------------------------------------------------------------------

/// Work (multiply-adds) above which a kernel is split over threads.
const PAR_MIN_WORK: usize = 16 * 1024;

/// `cols[(b,oy,ox), (ky,kx,c)] = x[b, oy*sy+ky*dy-pt, ox*sx+kx*dx-pl, c]` (0 outside).
struct Im2col {
    name: String,
    x: VtId,
    cols: VtId,
    g: Geom,
}

impl Kernel for Im2col {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "im2col"
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.x]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.cols]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && self.g.m() * self.g.k() >= PAR_MIN_WORK && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let (ci, kk) = (g.ci, g.k());
        let xb = cg.ptr(self.x, 0);
        let cb = cg.ptr(self.cols, 0);
        g.window().for_pixels(cg, &|cg, b, y, x, taps| {
            let row = pixel(cg, b, y, x, g.oh, g.ow, 1);
            let row = cg.b.ins().imul_imm_s(row, kk as i64);
            let dst = cg.elem_addr(cb, row);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let valid = taps.valid(cg, ky, kx);
                    let src = pixel(cg, b, taps.rows[ky].0, taps.cols[kx].0, g.h, g.w, ci);
                    let src = cg.elem_addr(xb, src);
                    let off = ((ky * g.kw + kx) * ci) as i64;
                    let dst_t = cg.b.ins().iadd_imm_s(dst, off * 4);
                    for_channels(cg, ci, &|cg, ty, c| {
                        let sa = cg.elem_addr(src, c);
                        let v = cg.load(ty, sa, 0);
                        let v = mask_value(cg, valid, v, 0.0);
                        let da = cg.elem_addr(dst_t, c);
                        cg.store(v, da, 0);
                    });
                }
            }
        });
        Ok(())
    }
}

/// The gathering inverse of im2col: `dx[b,iy,ix,c] = sum of dcols entries that read it`.
struct Col2im {
    name: String,
    dcols: VtId,
    dx: VtId,
    g: Geom,
}

impl Kernel for Col2im {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "col2im"
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.dcols]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.dx]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && self.g.m() * self.g.k() >= PAR_MIN_WORK && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let (ci, kk) = (g.ci, g.k());
        let mut win = g.window();
        // destination: the input image; source: the output pixels (rows of dcols)
        win.gather = true;
        std::mem::swap(&mut win.src_h, &mut win.dst_h);
        std::mem::swap(&mut win.src_w, &mut win.dst_w);
        let db = cg.ptr(self.dcols, 0);
        let xb = cg.ptr(self.dx, 0);
        win.for_pixels(cg, &|cg, b, y, x, taps| {
            let dst = pixel(cg, b, y, x, g.h, g.w, ci);
            let dst = cg.elem_addr(xb, dst);
            for_channels(cg, ci, &|cg, ty, c| {
                let mut acc = cg.fconst(ty, 0.0);
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let valid = taps.valid(cg, ky, kx);
                        let row = pixel(cg, b, taps.rows[ky].0, taps.cols[kx].0, g.oh, g.ow, 1);
                        let row = cg.b.ins().imul_imm_s(row, kk as i64);
                        let src = cg.elem_addr(db, row);
                        let sa = cg.elem_addr(src, c);
                        let v = cg.load(ty, sa, (((ky * g.kw + kx) * ci) * 4) as i64);
                        let v = mask_value(cg, valid, v, 0.0);
                        acc = cg.fadd(acc, v);
                    }
                }
                let da = cg.elem_addr(dst, c);
                cg.store(acc, da, 0);
            });
        });
        Ok(())
    }
}

/// Depthwise convolution `y[b,oy,ox,c] = sum x[b, iy, ix, c / mult] * k[ky, kx, c]`.
struct Depthwise {
    name: String,
    x: VtId,
    k: VtId,
    y: VtId,
    zeros: VtId,
    g: Geom,
}

/// `acc = sum over taps of src * k[tap]`, stored at the destination pixel (depthwise
/// forward and its gathered input gradient). Weights of the channel vector stay in registers.
struct WeightedTaps {
    k: Value,
    co: usize,
    taps: usize,
}

impl RowBody for WeightedTaps {
    fn start(&self, cg: &mut Cg, ty: Type, c: Value, _xc: Value) -> (Vec<Value>, Vec<Value>) {
        let ka = cg.elem_addr(self.k, c);
        let w = (0..self.taps)
            .map(|t| cg.load(ty, ka, (t * self.co * 4) as i64))
            .collect();
        (w, vec![])
    }
    fn pixel(
        &self,
        cg: &mut Cg,
        ty: Type,
        w: &[Value],
        _state: &[Value],
        taps: &[Tap],
        dst: Value,
        dst_off: i64,
    ) -> Vec<Value> {
        let mut acc: Option<Value> = None;
        for t in taps {
            let x = cg.load(ty, t.ptr, t.off);
            acc = Some(match acc {
                None => cg.fmul(x, w[t.index]),
                Some(a) => cg.fma(x, w[t.index], a),
            });
        }
        let acc = acc.unwrap_or_else(|| cg.fconst(ty, 0.0));
        cg.store(acc, dst, dst_off);
        vec![]
    }
    fn end(&self, _cg: &mut Cg, _ty: Type, _c: Value, _state: &[Value]) {}
}

/// `acc[tap] += src[tap] * dst_pixel`, with the accumulators of a channel vector carried
/// along the row and kept in the per-thread partial (depthwise filter gradient).
struct TapProducts {
    acc: Value,
    co: usize,
    taps: usize,
}

impl RowBody for TapProducts {
    fn start(&self, cg: &mut Cg, ty: Type, c: Value, _xc: Value) -> (Vec<Value>, Vec<Value>) {
        let aa = cg.elem_addr(self.acc, c);
        let acc = (0..self.taps)
            .map(|t| cg.load(ty, aa, (t * self.co * 4) as i64))
            .collect();
        (vec![], acc)
    }
    fn pixel(
        &self,
        cg: &mut Cg,
        ty: Type,
        _consts: &[Value],
        state: &[Value],
        taps: &[Tap],
        dst: Value,
        dst_off: i64,
    ) -> Vec<Value> {
        let d = cg.load(ty, dst, dst_off);
        let mut acc = state.to_vec();
        for t in taps {
            let x = cg.load(ty, t.ptr, t.off);
            acc[t.index] = cg.fma(x, d, acc[t.index]);
        }
        acc
    }
    fn end(&self, cg: &mut Cg, _ty: Type, c: Value, state: &[Value]) {
        let aa = cg.elem_addr(self.acc, c);
        for (t, &v) in state.iter().enumerate() {
            cg.store(v, aa, (t * self.co * 4) as i64);
        }
    }
}

impl Kernel for Depthwise {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "depthwise"
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.x, self.k]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.y]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1
            && self.g.m() * self.g.co * self.g.kh * self.g.kw >= PAR_MIN_WORK
            && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let (ay, ax) = g.axes();
        let k = cg.ptr(self.k, 0);
        Rows {
            n: g.n,
            ay,
            ax,
            dst: self.y,
            dst_c: g.co,
            src: self.x,
            src_c: g.ci,
            zeros: self.zeros,
        }
        .emit(
            cg,
            &WeightedTaps {
                k,
                co: g.co,
                taps: g.kh * g.kw,
            },
        );
        Ok(())
    }
}

/// `dx[b,iy,ix,ic] = sum over taps and multiplier of dy[b,oy,ox,ic*mult+m] * k[ky,kx,ic*mult+m]`.
struct DepthwiseGradInput {
    name: String,
    dy: VtId,
    k: VtId,
    dx: VtId,
    zeros: VtId,
    g: Geom,
}

impl Kernel for DepthwiseGradInput {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "depthwise_grad_input"
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.dy, self.k]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.dx]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1
            && self.g.m() * self.g.co * self.g.kh * self.g.kw >= PAR_MIN_WORK
            && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        if g.co == g.ci {
            let (ay, ax) = g.gather_axes();
            let k = cg.ptr(self.k, 0);
            Rows {
                n: g.n,
                ay,
                ax,
                dst: self.dx,
                dst_c: g.ci,
                src: self.dy,
                src_c: g.co,
                zeros: self.zeros,
            }
            .emit(
                cg,
                &WeightedTaps {
                    k,
                    co: g.co,
                    taps: g.kh * g.kw,
                },
            );
            return Ok(());
        }
        self.emit_multiplier(cg)
    }
}

impl DepthwiseGradInput {
    /// Channel multiplier > 1: each input channel gathers several output channels.
    fn emit_multiplier(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let (ci, co) = (g.ci, g.co);
        let mult = co / ci;
        let mut win = g.window();
        win.gather = true;
        std::mem::swap(&mut win.src_h, &mut win.dst_h);
        std::mem::swap(&mut win.src_w, &mut win.dst_w);
        let db = cg.ptr(self.dy, 0);
        let kb = cg.ptr(self.k, 0);
        let xb = cg.ptr(self.dx, 0);
        win.for_pixels(cg, &|cg, b, y, x, taps| {
            let dst = pixel(cg, b, y, x, g.h, g.w, ci);
            let dst = cg.elem_addr(xb, dst);
            let srcs: Vec<(Value, Option<Value>)> = (0..g.kh * g.kw)
                .map(|t| {
                    let (ky, kx) = (t / g.kw, t % g.kw);
                    let valid = taps.valid(cg, ky, kx);
                    let p = pixel(cg, b, taps.rows[ky].0, taps.cols[kx].0, g.oh, g.ow, co);
                    (cg.elem_addr(db, p), valid)
                })
                .collect();
            if mult == 1 {
                for_channels(cg, ci, &|cg, ty, c| {
                    let mut acc = cg.fconst(ty, 0.0);
                    for (t, &(src, valid)) in srcs.iter().enumerate() {
                        let sa = cg.elem_addr(src, c);
                        let v = cg.load(ty, sa, 0);
                        let v = mask_value(cg, valid, v, 0.0);
                        let ka = cg.elem_addr(kb, c);
                        let kv = cg.load(ty, ka, (t * co * 4) as i64);
                        acc = cg.fma(v, kv, acc);
                    }
                    let da = cg.elem_addr(dst, c);
                    cg.store(acc, da, 0);
                });
            } else {
                cg.for_static(0, ci, 1, &[], |cg, ic, _| {
                    let mut acc = cg.fconst(F32, 0.0);
                    let oc0 = cg.b.ins().imul_imm_s(ic, mult as i64);
                    for m in 0..mult {
                        let oc = cg.b.ins().iadd_imm_s(oc0, m as i64);
                        for (t, &(src, valid)) in srcs.iter().enumerate() {
                            let sa = cg.elem_addr(src, oc);
                            let v = cg.load(F32, sa, 0);
                            let v = mask_value(cg, valid, v, 0.0);
                            let ka = cg.elem_addr(kb, oc);
                            let kv = cg.load(F32, ka, (t * co * 4) as i64);
                            acc = cg.fma(v, kv, acc);
                        }
                    }
                    let da = cg.elem_addr(dst, ic);
                    cg.store(acc, da, 0);
                    vec![]
                });
            }
        });
        Ok(())
    }
}

/// `dk[ky,kx,c] = sum over pixels of dy[b,oy,ox,c] * x[b,iy,ix,c/mult]`, per thread into a
/// partial, then summed by thread 0.
struct DepthwiseGradFilter {
    name: String,
    dy: VtId,
    x: VtId,
    dk: VtId,
    partial: Option<VtId>,
    zeros: VtId,
    g: Geom,
}

impl Kernel for DepthwiseGradFilter {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn ends_on_thread0(&self) -> bool {
        self.partial.is_some()
    }
    fn kind(&self) -> &'static str {
        "depthwise_grad_filter"
    }
    fn reads(&self) -> Vec<VtId> {
        let mut r = vec![self.dy, self.x];
        r.extend(self.partial);
        r
    }
    fn writes(&self) -> Vec<VtId> {
        let mut w = vec![self.dk];
        w.extend(self.partial);
        w
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1
            && self.partial.is_some()
            && self.g.m() * self.g.co * self.g.kh * self.g.kw >= PAR_MIN_WORK
            && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let numel = g.kh * g.kw * g.co;
        let par = cg.par;
        // this thread's accumulator
        let acc = if par {
            let p = cg.ptr(self.partial.unwrap(), 0);
            let tid = cg.tid();
            let off = cg.b.ins().imul_imm_s(tid, (numel * 4) as i64);
            cg.b.ins().iadd(p, off)
        } else {
            cg.ptr(self.dk, 0)
        };
        cg.fill(acc, numel, 0.0);
        let (ay, ax) = g.axes();
        Rows {
            n: g.n,
            ay,
            ax,
            dst: self.dy,
            dst_c: g.co,
            src: self.x,
            src_c: g.ci,
            zeros: self.zeros,
        }
        .emit(
            cg,
            &TapProducts {
                acc,
                co: g.co,
                taps: g.kh * g.kw,
            },
        );
        if par {
            cg.barrier();
            let part = self.partial.unwrap();
            let dk = self.dk;
            let threads = cg.threads;
            cg.on_thread0(|cg| {
                let pb = cg.ptr(part, 0);
                let ob = cg.ptr(dk, 0);
                for_channels(cg, numel, &|cg, ty, j| {
                    let pa = cg.elem_addr(pb, j);
                    let mut acc = cg.load(ty, pa, 0);
                    for t in 1..threads {
                        let v = cg.load(ty, pa, (t * numel * 4) as i64);
                        acc = cg.fadd(acc, v);
                    }
                    let oa = cg.elem_addr(ob, j);
                    cg.store(acc, oa, 0);
                });
            });
        }
        Ok(())
    }
}
