//! Row-tiled sliding-window loops for the depthwise kernels.
//!
//! A destination row `(b, y)` sees `kh` source rows; each is a pointer, or a pointer to the
//! shared read-only zero row when the tap falls outside the source (padding, or a stride
//! residue that misses), so the inner loops never test rows. Columns come in classes: the
//! forward geometry has one (`dst x` reads `src x*stride + kx*dilation - pad`), the gather
//! geometry (input gradients without scatter) has one per stride residue, each a dense
//! stride-1 walk over the source with its own static set of taps. Within a class the
//! interior (every tap inside the source) is a loop without checks; the few border columns
//! are unrolled with their statically valid taps only. Channels are the vector dimension, and
//! the loop order is row → class → channel vector → column, so per-channel-vector state
//! (the weights, or the filter-gradient accumulators) stays in registers along the row.

use crate::jit::cg::{Cg, LANES};
use crate::jit::lir::VtId;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// One spatial axis: destination coordinate `o`, tap `k`.
#[derive(Clone, Copy, Debug)]
pub struct Axis {
    pub src: usize,
    pub dst: usize,
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad: isize,
    /// Forward: `src = o*stride + k*dilation - pad`. Gather: `o = src*stride + k*dilation -
    /// pad`, i.e. `src = (o + pad - k*dilation) / stride` when that divides.
    pub gather: bool,
}

/// Columns `dst0 + dst_step*t` (`t < count`) read tap `kx` at source column
/// `off + src_step*t`.
#[derive(Clone, Debug)]
struct ColClass {
    dst0: usize,
    dst_step: usize,
    count: usize,
    src_step: isize,
    taps: Vec<(usize, isize)>,
}

impl ColClass {
    fn valid(&self, src: usize, off: isize, t: usize) -> bool {
        let c = off + self.src_step * t as isize;
        c >= 0 && c < src as isize
    }

    /// `[lo, hi)`: the `t` whose taps are all inside the source.
    fn interior(&self, src: usize) -> (usize, usize) {
        let mut lo = 0isize;
        let mut hi = self.count as isize;
        for &(_, off) in &self.taps {
            let ss = self.src_step;
            // off + ss*t >= 0  and  off + ss*t <= src-1
            lo = lo.max(if off >= 0 { 0 } else { (-off + ss - 1) / ss });
            let top = src as isize - 1 - off;
            hi = hi.min(if top < 0 { 0 } else { top / ss + 1 });
        }
        let lo = lo.clamp(0, self.count as isize) as usize;
        let hi = hi.clamp(lo as isize, self.count as isize) as usize;
        (lo, hi)
    }
}

fn classes(a: &Axis) -> Vec<ColClass> {
    let (s, d, p) = (a.stride as isize, a.dilation as isize, a.pad);
    if !a.gather {
        return vec![ColClass {
            dst0: 0,
            dst_step: 1,
            count: a.dst,
            src_step: s,
            taps: (0..a.k).map(|k| (k, k as isize * d - p)).collect(),
        }];
    }
    (0..a.stride.min(a.dst))
        .map(|r| ColClass {
            dst0: r,
            dst_step: a.stride,
            count: (a.dst - r).div_ceil(a.stride),
            src_step: 1,
            taps: (0..a.k)
                .filter_map(|k| {
                    let num = r as isize + p - k as isize * d;
                    (num.rem_euclid(s) == 0).then(|| (k, num.div_euclid(s)))
                })
                .collect(),
        })
        .collect()
}

/// The source row of tap `k` at destination row `o`, and whether it exists.
fn row_tap(cg: &mut Cg, a: &Axis, o: Value, k: usize) -> (Value, Value) {
    let (s, d, p) = (a.stride as i64, a.dilation as i64, a.pad as i64);
    let zero = cg.iconst(0);
    if !a.gather {
        let t = cg.b.ins().imul_imm_s(o, s);
        let i = cg.b.ins().iadd_imm_s(t, k as i64 * d - p);
        let ge = cg.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, i, 0);
        let lt =
            cg.b.ins()
                .icmp_imm_s(IntCC::SignedLessThan, i, a.src as i64);
        let ok = cg.b.ins().band(ge, lt);
        (cg.b.ins().select(ok, i, zero), ok)
    } else {
        let t = cg.b.ins().iadd_imm_s(o, p - k as i64 * d);
        let ge = cg.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, t, 0);
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
                .icmp_imm_s(IntCC::SignedLessThan, q, a.src as i64);
        let ok = cg.b.ins().band(ok, lt);
        (cg.b.ins().select(ok, q, zero), ok)
    }
}

/// A tap of the current pixel: `ky*kw + kx`, and its source address (`ptr + off` bytes).
pub struct Tap {
    pub index: usize,
    pub ptr: Value,
    pub off: i64,
}

/// What a kernel does along a row.
pub trait RowBody {
    /// Per channel vector `c` (source channel `xc`): constants for the row (weights) and the
    /// initial state carried along it (accumulators).
    fn start(&self, cg: &mut Cg, ty: Type, c: Value, xc: Value) -> (Vec<Value>, Vec<Value>);
    /// One destination pixel at `dst + dst_off` bytes (channel `c` included), its valid taps.
    #[allow(clippy::too_many_arguments)]
    fn pixel(
        &self,
        cg: &mut Cg,
        ty: Type,
        consts: &[Value],
        state: &[Value],
        taps: &[Tap],
        dst: Value,
        dst_off: i64,
    ) -> Vec<Value>;
    /// After the row.
    fn end(&self, cg: &mut Cg, ty: Type, c: Value, state: &[Value]);
}

/// A row-tiled loop: destination `[n, ay.dst, ax.dst, dst_c]`, source `[n, ay.src, ax.src,
/// src_c]` (`src_c = dst_c / mult`), over this thread's share of the batch.
pub struct Rows {
    pub n: usize,
    pub ay: Axis,
    pub ax: Axis,
    pub dst: VtId,
    pub dst_c: usize,
    pub src: VtId,
    pub src_c: usize,
    pub zeros: VtId,
}

impl Rows {
    /// Floats of the zero row it needs.
    pub fn zero_row(ax: &Axis, src_c: usize) -> usize {
        ax.src * src_c
    }

    pub fn emit(&self, cg: &mut Cg, body: &dyn RowBody) {
        let (ay, ax) = (self.ay, self.ax);
        let classes = classes(&ax);
        let mult = self.dst_c / self.src_c;
        let src_row_bytes = (ax.src * self.src_c * 4) as i64;
        let dst_row_bytes = (ax.dst * self.dst_c * 4) as i64;
        let (b0, b1) = cg.thread_range(self.n, 1);
        let src_base = cg.ptr(self.src, 0);
        let dst_base = cg.ptr(self.dst, 0);
        let zeros = cg.ptr(self.zeros, 0);
        cg.for_range(b0, b1, 1, &[], |cg, b, _| {
            cg.for_static(0, ay.dst, 1, &[], |cg, y, _| {
                // destination row and source rows
                let drow = cg.b.ins().imul_imm_s(b, ay.dst as i64);
                let drow = cg.b.ins().iadd(drow, y);
                let drow = cg.b.ins().imul_imm_s(drow, dst_row_bytes);
                let dst_row = cg.b.ins().iadd(dst_base, drow);
                let rows: Vec<Value> = (0..ay.k)
                    .map(|ky| {
                        let (sy, ok) = row_tap(cg, &ay, y, ky);
                        let r = cg.b.ins().imul_imm_s(b, ay.src as i64);
                        let r = cg.b.ins().iadd(r, sy);
                        let r = cg.b.ins().imul_imm_s(r, src_row_bytes);
                        let p = cg.b.ins().iadd(src_base, r);
                        cg.b.ins().select(ok, p, zeros)
                    })
                    .collect();
                for class in &classes {
                    self.emit_class(cg, body, class, &rows, dst_row, mult);
                }
                vec![]
            });
            vec![]
        });
    }

    fn emit_class(
        &self,
        cg: &mut Cg,
        body: &dyn RowBody,
        class: &ColClass,
        rows: &[Value],
        dst_row: Value,
        mult: usize,
    ) {
        let ax = self.ax;
        let (lo, hi) = class.interior(ax.src);
        let sc = self.src_c as i64;
        let dc = self.dst_c as i64;
        let kw = ax.k;
        let per_chunk = |cg: &mut Cg, ty: Type, c: Value| {
            let xc = if mult == 1 {
                c
            } else {
                cg.b.ins().udiv_imm_s(c, mult as i64)
            };
            let c4 = cg.b.ins().ishl_imm_s(c, 2);
            let xc4 = cg.b.ins().ishl_imm_s(xc, 2);
            let dst_c = cg.b.ins().iadd(dst_row, c4);
            let srcs: Vec<Value> = rows.iter().map(|&r| cg.b.ins().iadd(r, xc4)).collect();
            let (consts, mut state) = body.start(cg, ty, c, xc);
            let static_pixel = |cg: &mut Cg, state: &[Value], t: usize| -> Vec<Value> {
                let mut taps = Vec::new();
                for (ky, &sp) in srcs.iter().enumerate() {
                    for &(kx, off) in &class.taps {
                        if class.valid(ax.src, off, t) {
                            let col = off + class.src_step * t as isize;
                            taps.push(Tap {
                                index: ky * kw + kx,
                                ptr: sp,
                                off: col as i64 * sc * 4,
                            });
                        }
                    }
                }
                let dcol = (class.dst0 + class.dst_step * t) as i64;
                body.pixel(cg, ty, &consts, state, &taps, dst_c, dcol * dc * 4)
            };
            for t in 0..lo {
                state = static_pixel(cg, &state, t);
            }
            if lo < hi {
                state = cg.for_static(lo, hi, 1, &state, |cg, t, st| {
                    let scol = cg.b.ins().imul_imm_s(t, class.src_step as i64 * sc * 4);
                    let dcol = cg.b.ins().imul_imm_s(t, (class.dst_step as i64) * dc * 4);
                    let dst = cg.b.ins().iadd(dst_c, dcol);
                    let ptrs: Vec<Value> = srcs.iter().map(|&s| cg.b.ins().iadd(s, scol)).collect();
                    let mut taps = Vec::new();
                    for (ky, &p) in ptrs.iter().enumerate() {
                        for &(kx, off) in &class.taps {
                            taps.push(Tap {
                                index: ky * kw + kx,
                                ptr: p,
                                off: off as i64 * sc * 4,
                            });
                        }
                    }
                    body.pixel(cg, ty, &consts, st, &taps, dst, class.dst0 as i64 * dc * 4)
                });
            }
            for t in hi.max(lo)..class.count {
                state = static_pixel(cg, &state, t);
            }
            body.end(cg, ty, c, &state);
        };
        if mult == 1 {
            let nv = self.dst_c / LANES * LANES;
            cg.for_static(0, nv, LANES, &[], |cg, c, _| {
                per_chunk(cg, F32X4, c);
                vec![]
            });
            for c in nv..self.dst_c {
                let cv = cg.iconst(c as i64);
                per_chunk(cg, F32, cv);
            }
        } else {
            cg.for_static(0, self.dst_c, 1, &[], |cg, c, _| {
                per_chunk(cg, F32, c);
                vec![]
            });
        }
    }
}
