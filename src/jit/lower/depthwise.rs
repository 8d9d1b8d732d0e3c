//! Hand-written depthwise kernels: direct sliding windows vectorized over channels
//! ([`super::rows`]), forward, input gradient (gathering) and filter gradient (per-thread
//! partials).

use super::conv_geom::Geom;
use super::im2col::PAR_MIN_WORK;
use super::rows::{RowBody, Rows, Tap};
use super::window::{for_channels, mask_value, pixel};
use crate::error::Result;
use crate::jit::cg::Cg;
use crate::jit::lir::{Kernel, VtId};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Depthwise convolution `y[b,oy,ox,c] = sum x[b, iy, ix, c / mult] * k[ky, kx, c]`.
pub(super) struct Depthwise {
    pub(super) name: String,
    pub(super) x: VtId,
    pub(super) k: VtId,
    pub(super) y: VtId,
    pub(super) zeros: VtId,
    pub(super) g: Geom,
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
    fn flops(&self) -> usize {
        2 * self.g.m() * self.g.co * self.g.kh * self.g.kw
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
pub(super) struct DepthwiseGradInput {
    pub(super) name: String,
    pub(super) dy: VtId,
    pub(super) k: VtId,
    pub(super) dx: VtId,
    pub(super) zeros: VtId,
    pub(super) g: Geom,
}

impl Kernel for DepthwiseGradInput {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "depthwise_grad_input"
    }
    fn flops(&self) -> usize {
        2 * self.g.m() * self.g.co * self.g.kh * self.g.kw
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
pub(super) struct DepthwiseGradFilter {
    pub(super) name: String,
    pub(super) dy: VtId,
    pub(super) x: VtId,
    pub(super) dk: VtId,
    pub(super) partial: Option<VtId>,
    pub(super) zeros: VtId,
    pub(super) g: Geom,
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
    fn flops(&self) -> usize {
        2 * self.g.m() * self.g.co * self.g.kh * self.g.kw
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
