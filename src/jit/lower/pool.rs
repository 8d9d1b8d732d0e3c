//! Pools and resampling: `max_pool2d`, `avg_pool2d` and their gradients,
//! `global_max_pool_grad`, `upsample_nearest` and its gradient.
//!
//! Pools are sliding-window kernels vectorized over channels (padding taps are excluded, as
//! in TFLite). The max-pool gradient of non-overlapping windows writes each window's
//! pixels directly (the first maximum in window order takes the gradient, the rest get 0);
//! overlapping windows scatter per batch sample, so threads never share a pixel. Upsampling
//! and its gradient are plain loops over a 6-d view `[n, h, sy, w, sx, c]` of the large side.

use super::context::{Lower, Val};
use super::window::{for_channels, mask_value, pixel, WinGeom};
use crate::error::Result;
use crate::ir::infer::conv_axis;
use crate::ir::op::PoolAttrs;
use crate::jit::cg::Cg;
use crate::jit::lir::{Access, Inst, Kernel, RedKind, VtId};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

const PAR_MIN_WORK: usize = 16 * 1024;

fn geom(p: &PoolAttrs, x: &[usize]) -> WinGeom {
    let gy = conv_axis(x[1], p.size[0], p.stride[0], 1, p.padding, 0).unwrap();
    let gx = conv_axis(x[2], p.size[1], p.stride[1], 1, p.padding, 1).unwrap();
    WinGeom {
        n: x[0],
        src_h: x[1],
        src_w: x[2],
        dst_h: gy.out,
        dst_w: gx.out,
        kh: p.size[0],
        kw: p.size[1],
        stride: p.stride,
        dilation: [1, 1],
        pad: [gy.pad_before as isize, gx.pad_before as isize],
        gather: false,
    }
}

/// Each input pixel lies in at most one window.
fn disjoint(g: &WinGeom) -> bool {
    g.stride[0] >= g.kh && g.stride[1] >= g.kw
}

/// Windows cover every input pixel exactly once (no zero fill needed for the gradient).
fn tiles_exactly(g: &WinGeom) -> bool {
    g.stride == [g.kh, g.kw]
        && g.pad == [0, 0]
        && g.dst_h * g.kh == g.src_h
        && g.dst_w * g.kw == g.src_w
}

/// `max_pool2d` / `avg_pool2d`: a window kernel.
pub fn pool2d(cx: &mut Lower, p: &PoolAttrs, max: bool) -> Result<Val> {
    let out = cx.out_shape();
    let numel: usize = out.iter().product();
    let name = cx.name().to_string();
    let v = {
        let x = cx.arg(0);
        let y = cx.temp("", numel);
        cx.kernel(Pool {
            name,
            x: x.vt,
            y,
            c: x.shape[3],
            g: geom(p, &x.shape),
            max,
        });
        y
    };
    Ok(Val { vt: v, shape: out })
}

/// `max_pool2d_grad`: each window's dy to its first maximum.
pub fn max_pool2d_grad(cx: &mut Lower, p: &PoolAttrs) -> Result<Val> {
    let out = cx.out_shape();
    let numel: usize = out.iter().product();
    let name = cx.name().to_string();
    let v = {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        let dx = cx.temp("", numel);
        cx.kernel(MaxPoolGrad {
            name,
            dy: dy.vt,
            x: x.vt,
            dx,
            c: x.shape[3],
            g: geom(p, &x.shape),
        });
        dx
    };
    Ok(Val { vt: v, shape: out })
}

/// `avg_pool2d_grad`: each window's dy spread over its taps.
pub fn avg_pool2d_grad(cx: &mut Lower, pool: &PoolAttrs, input_shape: &[usize]) -> Result<Val> {
    let out = cx.out_shape();
    let numel: usize = out.iter().product();
    let name = cx.name().to_string();
    let v = {
        let dy = cx.arg(0);
        let dx = cx.temp("", numel);
        cx.kernel(AvgPoolGrad {
            name,
            dy: dy.vt,
            dx,
            c: input_shape[3],
            g: geom(pool, input_shape),
        });
        dx
    };
    Ok(Val { vt: v, shape: out })
}

/// `global_max_pool_grad`: each channel's dy to its first maximum.
pub fn global_max_pool_grad(cx: &mut Lower) -> Result<Val> {
    let out = cx.out_shape();
    let numel: usize = out.iter().product();
    let name = cx.name().to_string();
    let v = {
        let (dy, x) = (cx.arg(0), cx.arg(1));
        let dx = cx.temp("", numel);
        cx.kernel(GlobalMaxPoolGrad {
            name,
            dy: dy.vt,
            x: x.vt,
            dx,
            shape: x.shape.clone(),
        });
        dx
    };
    Ok(Val { vt: v, shape: out })
}

/// `upsample_nearest`: a loop reading each pixel `scale` times.
pub fn upsample_nearest(cx: &mut Lower, scale: &[usize; 2]) -> Result<Val> {
    let out = cx.out_shape();
    let numel: usize = out.iter().product();
    let _name = cx.name().to_string();
    let v = {
        let x = cx.arg(0);
        let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let (sy, sx) = (scale[0], scale[1]);
        let six = [n, h, sy, w, sx, c];
        let y = cx.temp("", numel);
        let mut l = cx.new_loop("", &six);
        let src = Access {
            vt: x.vt,
            offset: 0,
            strides: vec![(h * w * c) as isize, (w * c) as isize, 0, c as isize, 0, 1],
        };
        let v = l.leaf(src);
        l.store(v, Access::identity(y, &six));
        cx.push(Inst::Loop(l));
        y
    };
    Ok(Val { vt: v, shape: out })
}

/// `upsample_nearest_grad`: each `scale` window summed back to one pixel.
pub fn upsample_nearest_grad(cx: &mut Lower, scale: &[usize; 2]) -> Result<Val> {
    let out = cx.out_shape();
    let numel: usize = out.iter().product();
    let _name = cx.name().to_string();
    let v = {
        let dy = cx.arg(0);
        let (n, h, w, c) = (out[0], out[1], out[2], out[3]);
        let (sy, sx) = (scale[0], scale[1]);
        let six = [n, h, sy, w, sx, c];
        let dx = cx.temp("", numel);
        let mut l = cx.new_loop("", &six);
        let v = l.leaf(Access::identity(dy.vt, &six));
        let dst = Access {
            vt: dx,
            offset: 0,
            strides: vec![(h * w * c) as isize, (w * c) as isize, 0, c as isize, 0, 1],
        };
        l.reduce(v, RedKind::Sum, 0.0, 1.0, dst);
        cx.push(Inst::Loop(l));
        dx
    };
    Ok(Val { vt: v, shape: out })
}

fn pool_work(g: &WinGeom, c: usize) -> usize {
    g.n * g.dst_h * g.dst_w * c * g.kh * g.kw
}

struct Pool {
    name: String,
    x: VtId,
    y: VtId,
    c: usize,
    g: WinGeom,
    max: bool,
}

impl Kernel for Pool {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "pool"
    }
    fn flops(&self) -> usize {
        0
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.x]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.y]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && pool_work(&self.g, self.c) >= PAR_MIN_WORK && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let c = self.c;
        let xb = cg.ptr(self.x, 0);
        let yb = cg.ptr(self.y, 0);
        let max = self.max;
        g.for_pixels(cg, &|cg, b, y, x, taps| {
            let dst = pixel(cg, b, y, x, g.dst_h, g.dst_w, c);
            let dst = cg.elem_addr(yb, dst);
            let mut srcs = Vec::new();
            let mut count: Option<Value> = None; // dynamic count of valid taps (avg, border)
            let mut all_valid = true;
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let valid = taps.valid(cg, ky, kx);
                    let p = pixel(cg, b, taps.rows[ky].0, taps.cols[kx].0, g.src_h, g.src_w, c);
                    srcs.push((cg.elem_addr(xb, p), valid));
                    if !max {
                        let one = match valid {
                            Some(v) => cg.b.ins().uextend(I64, v),
                            None => cg.iconst(1),
                        };
                        all_valid &= valid.is_none();
                        count = Some(match count {
                            Some(c) => cg.b.ins().iadd(c, one),
                            None => one,
                        });
                    }
                }
            }
            let inv = if max {
                None
            } else if all_valid {
                Some(None)
            } else {
                let n = cg.b.ins().fcvt_from_sint(F32, count.unwrap());
                Some(Some(n))
            };
            for_channels(cg, c, &|cg, ty, ch| {
                let fill = if max { f32::NEG_INFINITY } else { 0.0 };
                let mut acc = cg.fconst(ty, fill);
                for &(src, valid) in &srcs {
                    let a = cg.elem_addr(src, ch);
                    let v = cg.load(ty, a, 0);
                    let v = mask_value(cg, valid, v, fill);
                    acc = if max {
                        cg.fmax(acc, v)
                    } else {
                        cg.fadd(acc, v)
                    };
                }
                if let Some(cnt) = inv {
                    let n = match cnt {
                        Some(n) => cg.splat(ty, n),
                        None => cg.fconst(ty, (g.kh * g.kw) as f32),
                    };
                    acc = cg.fdiv(acc, n);
                }
                let a = cg.elem_addr(dst, ch);
                cg.store(acc, a, 0);
            });
        });
        Ok(())
    }
}

/// Zeroes this thread's share (batch range) of a `[n, ...]` tensor of `per_sample` floats.
fn zero_batch_share(cg: &mut Cg, vt: VtId, n: usize, per_sample: usize) {
    let (b0, b1) = cg.thread_range(n, 1);
    let base = cg.ptr(vt, 0);
    cg.for_range(b0, b1, 1, &[], |cg, b, _| {
        let off = cg.b.ins().imul_imm_s(b, (per_sample * 4) as i64);
        let p = cg.b.ins().iadd(base, off);
        cg.fill(p, per_sample, 0.0);
        vec![]
    });
}

struct MaxPoolGrad {
    name: String,
    dy: VtId,
    x: VtId,
    dx: VtId,
    c: usize,
    g: WinGeom,
}

impl Kernel for MaxPoolGrad {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "max_pool_grad"
    }
    fn flops(&self) -> usize {
        0
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.dy, self.x]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.dx]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && pool_work(&self.g, self.c) >= PAR_MIN_WORK && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let c = self.c;
        if !tiles_exactly(g) {
            zero_batch_share(cg, self.dx, g.n, g.src_h * g.src_w * c);
        }
        let xb = cg.ptr(self.x, 0);
        let db = cg.ptr(self.dy, 0);
        let gb = cg.ptr(self.dx, 0);
        let disjoint = disjoint(g);
        g.for_pixels(cg, &|cg, b, y, x, taps| {
            let src = pixel(cg, b, y, x, g.dst_h, g.dst_w, c);
            let dya = cg.elem_addr(db, src);
            let mut tp = Vec::new();
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let valid = taps.valid(cg, ky, kx);
                    let p = pixel(cg, b, taps.rows[ky].0, taps.cols[kx].0, g.src_h, g.src_w, c);
                    let xa = cg.elem_addr(xb, p);
                    let ga = cg.elem_addr(gb, p);
                    tp.push((xa, ga, valid));
                }
            }
            if disjoint {
                // max, then the first tap equal to it takes dy; the others get 0
                for_channels(cg, c, &|cg, ty, ch| {
                    let ninf = f32::NEG_INFINITY;
                    let mut m = cg.fconst(ty, ninf);
                    let mut vals = Vec::new();
                    for &(xa, _, valid) in &tp {
                        let a = cg.elem_addr(xa, ch);
                        let v = cg.load(ty, a, 0);
                        let v = mask_value(cg, valid, v, ninf);
                        m = cg.fmax(m, v);
                        vals.push(v);
                    }
                    let da = cg.elem_addr(dya, ch);
                    let d = cg.load(ty, da, 0);
                    let zero = cg.fconst(ty, 0.0);
                    let mut found: Option<Value> = None;
                    for (&(_, ga, valid), &v) in tp.iter().zip(&vals) {
                        let hit = cg.fcmp(FloatCC::Equal, v, m);
                        let first = match found {
                            None => hit,
                            Some(f) => {
                                let nf = cg.mask_not(f);
                                cg.mask_and(hit, nf)
                            }
                        };
                        found = Some(match found {
                            None => hit,
                            Some(f) => cg.mask_or(f, hit),
                        });
                        let out = cg.select(first, d, zero);
                        let a = cg.elem_addr(ga, ch);
                        store_if(cg, valid, out, a);
                    }
                });
            } else {
                // overlapping windows: scalar argmax and accumulate
                cg.for_static(0, c, 1, &[], |cg, ch, _| {
                    let mut best_v = cg.fconst(F32, f32::NEG_INFINITY);
                    let mut best_a = cg.iconst(0);
                    let mut any: Option<Value> = None;
                    for &(xa, ga, valid) in &tp {
                        let a = cg.elem_addr(xa, ch);
                        let v = cg.load(F32, a, 0);
                        // strictly greater keeps the first maximum; the first valid tap
                        // is taken unconditionally
                        let gt = cg.fcmp(FloatCC::GreaterThan, v, best_v);
                        let take = match any {
                            None => cg.b.ins().iconst(I8, 1),
                            Some(seen) => {
                                let ns = cg.mask_not(seen);
                                cg.b.ins().bor(gt, ns)
                            }
                        };
                        let take = match valid {
                            Some(ok) => cg.b.ins().band(take, ok),
                            None => take,
                        };
                        let ga_ch = cg.elem_addr(ga, ch);
                        best_v = cg.b.ins().select(take, v, best_v);
                        best_a = cg.b.ins().select(take, ga_ch, best_a);
                        let v_ok = valid.unwrap_or_else(|| cg.b.ins().iconst(I8, 1));
                        any = Some(match any {
                            None => v_ok,
                            Some(s) => cg.b.ins().bor(s, v_ok),
                        });
                    }
                    let d = cg.elem_addr(dya, ch);
                    let d = cg.load(F32, d, 0);
                    let old = cg.load(F32, best_a, 0);
                    let new = cg.fadd(old, d);
                    cg.store(new, best_a, 0);
                    vec![]
                });
            }
        });
        Ok(())
    }
}

/// Stores `v` at `a` when `valid` (a scalar i8) holds.
fn store_if(cg: &mut Cg, valid: Option<Value>, v: Value, a: Value) {
    match valid {
        None => cg.store(v, a, 0),
        Some(ok) => cg.if_then(ok, |cg| cg.store(v, a, 0)),
    }
}

struct AvgPoolGrad {
    name: String,
    dy: VtId,
    dx: VtId,
    c: usize,
    g: WinGeom,
}

impl Kernel for AvgPoolGrad {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "avg_pool_grad"
    }
    fn flops(&self) -> usize {
        0
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.dy]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.dx]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && pool_work(&self.g, self.c) >= PAR_MIN_WORK && self.g.n >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let g = &self.g;
        let c = self.c;
        zero_batch_share(cg, self.dx, g.n, g.src_h * g.src_w * c);
        let db = cg.ptr(self.dy, 0);
        let gb = cg.ptr(self.dx, 0);
        g.for_pixels(cg, &|cg, b, y, x, taps| {
            let src = pixel(cg, b, y, x, g.dst_h, g.dst_w, c);
            let dya = cg.elem_addr(db, src);
            let mut tp = Vec::new();
            let mut count: Option<Value> = None;
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let valid = taps.valid(cg, ky, kx);
                    let p = pixel(cg, b, taps.rows[ky].0, taps.cols[kx].0, g.src_h, g.src_w, c);
                    tp.push((cg.elem_addr(gb, p), valid));
                    let one = match valid {
                        Some(v) => cg.b.ins().uextend(I64, v),
                        None => cg.iconst(1),
                    };
                    count = Some(match count {
                        Some(c) => cg.b.ins().iadd(c, one),
                        None => one,
                    });
                }
            }
            let cnt = cg.b.ins().fcvt_from_sint(F32, count.unwrap());
            let one = cg.fconst(F32, 1.0);
            let inv = cg.fdiv(one, cnt);
            for_channels(cg, c, &|cg, ty, ch| {
                let da = cg.elem_addr(dya, ch);
                let d = cg.load(ty, da, 0);
                let iv = cg.splat(ty, inv);
                let gv = cg.fmul(d, iv);
                for &(ga, valid) in &tp {
                    let a = cg.elem_addr(ga, ch);
                    let old = cg.load(ty, a, 0);
                    let new = cg.fadd(old, gv);
                    store_if(cg, valid, new, a);
                }
            });
        });
        Ok(())
    }
}

/// `dx` is 0 except at the first maximum of each (sample, channel), which takes `dy`.
struct GlobalMaxPoolGrad {
    name: String,
    dy: VtId,
    x: VtId,
    dx: VtId,
    shape: Vec<usize>,
}

impl Kernel for GlobalMaxPoolGrad {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "global_max_pool_grad"
    }
    fn flops(&self) -> usize {
        0
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.dy, self.x]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.dx]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1
            && self.shape.iter().product::<usize>() >= PAR_MIN_WORK
            && self.shape[0] >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let (n, hw, c) = (self.shape[0], self.shape[1] * self.shape[2], self.shape[3]);
        let (b0, b1) = cg.thread_range(n, 1);
        let xb = cg.ptr(self.x, 0);
        let db = cg.ptr(self.dy, 0);
        let gb = cg.ptr(self.dx, 0);
        cg.for_range(b0, b1, 1, &[], |cg, b, _| {
            let base = cg.b.ins().imul_imm_s(b, (hw * c) as i64);
            let xs = cg.elem_addr(xb, base);
            let gs = cg.elem_addr(gb, base);
            let dcol = cg.b.ins().imul_imm_s(b, c as i64);
            let ds = cg.elem_addr(db, dcol);
            for_channels(cg, c, &|cg, ty, ch| {
                let ninf = cg.fconst(ty, f32::NEG_INFINITY);
                let m = cg.for_static(0, hw, 1, &[ninf], |cg, p, acc| {
                    let idx = cg.b.ins().imul_imm_s(p, c as i64);
                    let idx = cg.b.ins().iadd(idx, ch);
                    let a = cg.elem_addr(xs, idx);
                    let v = cg.load(ty, a, 0);
                    vec![cg.fmax(acc[0], v)]
                })[0];
                let da = cg.elem_addr(ds, ch);
                let d = cg.load(ty, da, 0);
                let zero = cg.fconst(ty, 0.0);
                let none = mask_zero(cg, ty);
                cg.for_static(0, hw, 1, &[none], |cg, p, found| {
                    let idx = cg.b.ins().imul_imm_s(p, c as i64);
                    let idx = cg.b.ins().iadd(idx, ch);
                    let a = cg.elem_addr(xs, idx);
                    let v = cg.load(ty, a, 0);
                    let hit = cg.fcmp(FloatCC::Equal, v, m);
                    let nf = cg.mask_not(found[0]);
                    let first = cg.mask_and(hit, nf);
                    let out = cg.select(first, d, zero);
                    let ga = cg.elem_addr(gs, idx);
                    cg.store(out, ga, 0);
                    vec![cg.b.ins().bor(found[0], hit)]
                });
            });
            vec![]
        });
        Ok(())
    }
}

/// A loop-carriable "no lane found yet" mask: i32x4 zeros for vectors, an i8 0 for scalars.
fn mask_zero(cg: &mut Cg, ty: Type) -> Value {
    if ty.is_vector() {
        cg.i32x4_const([0; 4])
    } else {
        cg.b.ins().iconst(I8, 0)
    }
}
