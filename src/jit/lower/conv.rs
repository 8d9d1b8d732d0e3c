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
use super::conv_geom::{forward_geom, transpose_geom, Geom};
use super::depthwise::{Depthwise, DepthwiseGradFilter, DepthwiseGradInput};
use super::elementwise::activation;
use super::im2col::{Col2im, Im2col};
use super::rows::Rows;
use super::{direct, winograd};
use crate::error::Result;
use crate::ir::op::{Activation, ConvAttrs};
use crate::jit::lir::{Access, Gemm, GemmSplit, Inst, Mat, VtId};

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
        match (winograd::tiles(cx, &g), direct::geometry(cx, &g)) {
            (Some(t), _) => winograd::forward(cx, x.vt, k.vt, raw, &t),
            (None, Some(d)) => direct::forward(cx, x.vt, k.vt, raw, &d),
            (None, None) => conv_forward(cx, x.vt, k.vt, raw, &g),
        }
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
        match (winograd::tiles(cx, &g), direct::geometry(cx, &g)) {
            (Some(t), _) => winograd::grad_input(cx, dy.vt, k.vt, dx, &t),
            (None, Some(d)) => direct::grad_input(cx, dy.vt, k.vt, dx, &d),
            (None, None) => conv_grad_input(cx, dy.vt, k.vt, dx, &g),
        }
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
        let direct = direct::geometry(cx, &g).filter(|d| d.filter_in_registers());
        match (winograd::tiles(cx, &g), direct) {
            (Some(t), _) => winograd::grad_filter(cx, dy.vt, x.vt, dk, &t),
            (None, Some(d)) => direct::grad_filter(cx, dy.vt, x.vt, dk, &d),
            (None, None) => conv_grad_filter(cx, dy.vt, x.vt, dk, &g),
        }
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
