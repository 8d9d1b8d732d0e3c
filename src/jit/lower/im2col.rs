//! Hand-written kernels around the host GEMM: `im2col` (receptive-field patches as the
//! rows of a matrix) and the gathering `col2im` of the input gradient.

use super::conv_geom::Geom;
use super::window::{for_channels, mask_value, pixel};
use crate::error::Result;
use crate::jit::cg::Cg;
use crate::jit::lir::{Kernel, VtId};
use cranelift_codegen::ir::InstBuilder;

/// Work (multiply-adds) above which a kernel is split over threads.
pub(super) const PAR_MIN_WORK: usize = 16 * 1024;

/// `cols[(b,oy,ox), (ky,kx,c)] = x[b, oy*sy+ky*dy-pt, ox*sx+kx*dx-pl, c]` (0 outside).
pub(super) struct Im2col {
    pub(super) name: String,
    pub(super) x: VtId,
    pub(super) cols: VtId,
    pub(super) g: Geom,
}

impl Kernel for Im2col {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "im2col"
    }
    fn flops(&self) -> usize {
        0
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
pub(super) struct Col2im {
    pub(super) name: String,
    pub(super) dcols: VtId,
    pub(super) dx: VtId,
    pub(super) g: Geom,
}

impl Kernel for Col2im {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "col2im"
    }
    fn flops(&self) -> usize {
        0
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
