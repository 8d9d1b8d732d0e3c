//! The sliding-window loop shared by depthwise convolutions and pools: a loop over the
//! pixels of a destination tensor `[n, dh, dw, c]`, each seeing a `kh x kw` window of taps
//! into a source tensor `[n, sh, sw, c']`. Rows and columns whose every tap is inside the
//! source run an unchecked body; only the borders test taps (and load from a clamped,
//! always valid address, masking the value). Channels are the vectorized inner loop.
//!
//! Two geometries:
//! - forward: `src = dst * stride + k * dilation - pad` (convolution / pool over `src`);
//! - gather: the transpose, `dst = src * stride + k * dilation - pad`, i.e. a destination
//!   pixel collects the source pixels whose forward window touched it (input gradients
//!   without scatter, so threads never write the same pixel).

use crate::jit::cg::{Cg, LANES};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

#[derive(Clone, Debug)]
pub struct WinGeom {
    pub n: usize,
    pub src_h: usize,
    pub src_w: usize,
    pub dst_h: usize,
    pub dst_w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad: [isize; 2],
    pub gather: bool,
}

/// One axis of the window: (size of src, size of dst, kernel, stride, dilation, pad).
#[derive(Clone, Copy)]
struct Axis {
    src: usize,
    dst: usize,
    k: usize,
    s: usize,
    d: usize,
    p: isize,
    gather: bool,
}

impl Axis {
    /// The destination range whose every tap is valid (no checks needed).
    fn interior(&self) -> (usize, usize) {
        let (s, d, p) = (self.s as isize, self.d as isize, self.p);
        let ext = (self.k as isize - 1) * d;
        let (lo, hi) = if !self.gather {
            // src = o*s + k*d - p in [0, src) for all k
            let lo = if p > 0 { (p + s - 1) / s } else { 0 };
            let top = self.src as isize - 1 + p - ext;
            let hi = if top < 0 { 0 } else { top / s + 1 };
            (lo, hi)
        } else if self.s == 1 {
            // src = o + p - k*d in [0, src) for all k
            (ext - p, self.src as isize - p)
        } else {
            (0, 0)
        };
        let lo = lo.clamp(0, self.dst as isize) as usize;
        let hi = hi.clamp(lo as isize, self.dst as isize) as usize;
        (lo, hi)
    }

    /// The source index of tap `k` at destination `o`, clamped into range, and its validity
    /// (`None` when it is known valid).
    fn tap(&self, cg: &mut Cg, o: Value, k: usize, checked: bool) -> (Value, Option<Value>) {
        let (s, d, p) = (self.s as i64, self.d as i64, self.p as i64);
        if !self.gather {
            let t = cg.b.ins().imul_imm_s(o, s);
            let i = cg.b.ins().iadd_imm_s(t, k as i64 * d - p);
            if !checked {
                return (i, None);
            }
            let ge = cg.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, 0);
            let lt =
                cg.b.ins()
                    .icmp_imm_s(IntCC::SignedLessThan, i, self.src as i64);
            let ok = cg.b.ins().band(ge, lt);
            let zero = cg.iconst(0);
            let ic = cg.b.ins().select(ok, i, zero);
            (ic, Some(ok))
        } else {
            let t = cg.b.ins().iadd_imm_s(o, p - k as i64 * d);
            if !checked {
                return if s == 1 {
                    (t, None)
                } else {
                    (cg.b.ins().udiv_imm_s(t, s), None)
                };
            }
            let ge = cg.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, t, 0);
            let zero = cg.iconst(0);
            let tc = cg.b.ins().select(ge, t, zero);
            let (q, ok) = if s == 1 {
                (tc, ge)
            } else {
                let q = cg.b.ins().udiv_imm_s(tc, s);
                let back = cg.b.ins().imul_imm_s(q, s);
                let exact = cg.b.ins().icmp(IntCC::Equal, back, tc);
                (q, cg.b.ins().band(ge, exact))
            };
            let lt =
                cg.b.ins()
                    .icmp_imm_s(IntCC::SignedLessThan, q, self.src as i64);
            let ok = cg.b.ins().band(ok, lt);
            let qc = cg.b.ins().select(ok, q, zero);
            (qc, Some(ok))
        }
    }
}

/// Taps of one pixel: per ky the source row and validity, per kx the column and validity.
pub struct Taps {
    pub rows: Vec<(Value, Option<Value>)>,
    pub cols: Vec<(Value, Option<Value>)>,
}

impl Taps {
    /// Validity of tap `(ky, kx)`, `None` when known valid.
    pub fn valid(&self, cg: &mut Cg, ky: usize, kx: usize) -> Option<Value> {
        match (self.rows[ky].1, self.cols[kx].1) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a),
            (Some(a), Some(b)) => Some(cg.b.ins().band(a, b)),
        }
    }
}

impl WinGeom {
    fn axes(&self) -> (Axis, Axis) {
        (
            Axis {
                src: self.src_h,
                dst: self.dst_h,
                k: self.kh,
                s: self.stride[0],
                d: self.dilation[0],
                p: self.pad[0],
                gather: self.gather,
            },
            Axis {
                src: self.src_w,
                dst: self.dst_w,
                k: self.kw,
                s: self.stride[1],
                d: self.dilation[1],
                p: self.pad[1],
                gather: self.gather,
            },
        )
    }

    /// Visits every destination pixel `(b, y, x)` of this thread's share of the batch.
    /// `body` is emitted once per (row class, column class), so it must be re-entrant.
    pub fn for_pixels(&self, cg: &mut Cg, body: &dyn Fn(&mut Cg, Value, Value, Value, &Taps)) {
        let (ay, ax) = self.axes();
        let (ylo, yhi) = ay.interior();
        let (xlo, xhi) = ax.interior();
        let (b0, b1) = cg.thread_range(self.n, 1);
        let yranges = [(0, ylo, true), (ylo, yhi, false), (yhi, self.dst_h, true)];
        let xranges = [(0, xlo, true), (xlo, xhi, false), (xhi, self.dst_w, true)];
        cg.for_range(b0, b1, 1, &[], |cg, b, _| {
            for &(y0, y1, ycheck) in &yranges {
                cg.for_static(y0, y1, 1, &[], |cg, y, _| {
                    let rows: Vec<_> = (0..self.kh).map(|k| ay.tap(cg, y, k, ycheck)).collect();
                    for &(x0, x1, xcheck) in &xranges {
                        let rows = rows.clone();
                        cg.for_static(x0, x1, 1, &[], |cg, x, _| {
                            let cols: Vec<_> =
                                (0..self.kw).map(|k| ax.tap(cg, x, k, xcheck)).collect();
                            let taps = Taps {
                                rows: rows.clone(),
                                cols,
                            };
                            body(cg, b, y, x, &taps);
                            vec![]
                        });
                    }
                    vec![]
                });
            }
            vec![]
        });
    }
}

/// Element index of pixel `(b, y, x)` channel 0 in a `[n, h, w, c]` tensor.
pub fn pixel(cg: &mut Cg, b: Value, y: Value, x: Value, h: usize, w: usize, c: usize) -> Value {
    let t = cg.b.ins().imul_imm_s(b, h as i64);
    let t = cg.b.ins().iadd(t, y);
    let t = cg.b.ins().imul_imm_s(t, w as i64);
    let t = cg.b.ins().iadd(t, x);
    cg.b.ins().imul_imm_s(t, c as i64)
}

/// Runs `body(cg, ty, c)` over channels `0..n`: vectors of 4, then scalars.
pub fn for_channels(cg: &mut Cg, n: usize, body: &dyn Fn(&mut Cg, Type, Value)) {
    let nv = n / LANES * LANES;
    cg.for_static(0, nv, LANES, &[], |cg, c, _| {
        body(cg, F32X4, c);
        vec![]
    });
    for c in nv..n {
        let cv = cg.b.ins().iconst(I64, c as i64);
        body(cg, F32, cv);
    }
}

/// `valid ? v : fallback` for a scalar condition on a scalar or vector value.
pub fn mask_value(cg: &mut Cg, valid: Option<Value>, v: Value, fallback: f32) -> Value {
    match valid {
        None => v,
        Some(ok) => {
            let ty = cg.ty(v);
            let f = cg.fconst(ty, fallback);
            cg.b.ins().select(ok, v, f)
        }
    }
}
