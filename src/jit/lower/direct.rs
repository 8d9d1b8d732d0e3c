//! The direct lowering of strided convolutions and first layers ([`crate::jit::direct`]):
//! each direction an instruction that calls `qatc_direct` on every thread's share of rows,
//! with no patch matrix.
//!
//! A lowering choice (`JitOptions::direct`, on by default where the CPU has AVX-512).
//! Winograd takes the stride-1 3×3 convolutions it fits first, pointwise ones stay plain
//! GEMMs. Of the other undilated convolutions, those with at least [`MIN_CHANNELS`] on each
//! side compute their forward pass and input gradient here and their filter gradient on
//! im2col and `gemm_tn` (`conv.rs`); those whose filter gradient fits in registers
//! ([`Direct::filter_in_registers`]: first layers on 1–3 channels) compute all three here.

use super::context::Lower;
use super::conv_geom::Geom;
use crate::error::Result;
use crate::jit::cg::Cg;
use crate::jit::direct::{Direct, Stage};
use crate::jit::lir::{Kernel, VtId};
use cranelift_codegen::ir::Value;

/// Channels below which a forward pass alone is not worth taking from im2col and a GEMM
/// (the filter gradient would still need the patch matrix): `mnist_cnn`'s 1-channel stem
/// took 321 µs direct, tap by tap, against 47 µs for its im2col.
const MIN_CHANNELS: usize = 8;

/// The geometry of `g` when the direct kernels compute it.
pub(super) fn geometry(cx: &Lower, g: &Geom) -> Option<Direct> {
    let d = Direct {
        n: g.n,
        h: g.h,
        w: g.w,
        ci: g.ci,
        oh: g.oh,
        ow: g.ow,
        co: g.co,
        kh: g.kh,
        kw: g.kw,
        sy: g.stride[0],
        sx: g.stride[1],
        pt: g.pad[0],
        pl: g.pad[1],
    };
    let fits = cx.direct
        && crate::cpu::Avx512::detect().is_some()
        && g.dilation == [1, 1]
        && !g.pointwise()
        && d.packable()
        && ((g.ci >= MIN_CHANNELS && g.co >= MIN_CHANNELS) || d.filter_in_registers());
    fits.then_some(d)
}

/// One `qatc_direct` call: `stage` over `g`, reading `a` and `b`, writing `c`.
struct Call {
    name: String,
    stage: Stage,
    g: Direct,
    a: VtId,
    b: Option<VtId>,
    c: VtId,
}

impl Call {
    /// Rows the stage splits over threads.
    fn rows(&self) -> usize {
        let g = &self.g;
        match self.stage {
            Stage::Forward | Stage::GradFilterPartial => g.n * g.oh,
            Stage::GradInput => g.n * g.h,
            Stage::GradFilterFinish => 1,
        }
    }

    /// The call on thread `tid` (0 when `None`) of `threads`.
    fn emit_call(&self, cg: &mut Cg, tid: Option<Value>, threads: usize) {
        let tid = tid.unwrap_or_else(|| cg.iconst(0));
        let mut args = vec![cg.iconst(self.stage.code() as i64)];
        for word in self.g.pack() {
            args.push(cg.iconst(word as i64));
        }
        args.push(cg.ptr(self.a, 0));
        args.push(match self.b {
            Some(b) => cg.ptr(b, 0),
            None => cg.iconst(0),
        });
        args.push(cg.ptr(self.c, 0));
        args.push(tid);
        args.push(cg.iconst(threads as i64));
        let f = cg.helpers.direct;
        cg.call(f, &args);
    }
}

/// The forward pass or the input gradient, each thread on its share of rows.
struct Conv(Call);

impl Kernel for Conv {
    fn name(&self) -> String {
        self.0.name.clone()
    }
    fn kind(&self) -> &'static str {
        self.0.stage.kind()
    }
    /// The convolution's multiply-adds (each direction has as many as the forward).
    fn flops(&self) -> usize {
        self.0.g.flops()
    }
    fn reads(&self) -> Vec<VtId> {
        [Some(self.0.a), self.0.b].into_iter().flatten().collect()
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.0.c]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && self.0.rows() >= 2 * threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let (tid, threads) = cg.this_thread();
        self.0.emit_call(cg, tid, threads);
        Ok(())
    }
}

/// The filter gradient: per-thread partials in registers, summed by thread 0.
struct GradFilter {
    partial: Call,
    dk: VtId,
}

impl Kernel for GradFilter {
    fn name(&self) -> String {
        self.partial.name.clone()
    }
    fn kind(&self) -> &'static str {
        self.partial.stage.kind()
    }
    fn flops(&self) -> usize {
        self.partial.g.flops()
    }
    fn reads(&self) -> Vec<VtId> {
        let b = self.partial.b.expect("the filter gradient reads x");
        vec![self.partial.a, b, self.partial.c]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.partial.c, self.dk]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && self.partial.rows() >= 2 * threads
    }
    fn ends_on_thread0(&self) -> bool {
        true
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let finish = Call {
            name: String::new(),
            stage: Stage::GradFilterFinish,
            g: self.partial.g,
            a: self.partial.c,
            b: None,
            c: self.dk,
        };
        // thread 0 sums as many partials as there were threads
        cg.partials_then_thread0(
            |cg, tid, threads| self.partial.emit_call(cg, tid, threads),
            |cg, threads| finish.emit_call(cg, None, threads),
        );
        Ok(())
    }
}

/// `y = conv(x, k)`.
pub(super) fn forward(cx: &mut Lower, x: VtId, k: VtId, y: VtId, g: &Direct) {
    let name = format!("{}.direct", cx.name());
    cx.kernel(Conv(Call {
        name,
        stage: Stage::Forward,
        g: *g,
        a: x,
        b: Some(k),
        c: y,
    }));
}

/// `dx` of `y = conv(x, k)` from `dy`.
pub(super) fn grad_input(cx: &mut Lower, dy: VtId, k: VtId, dx: VtId, g: &Direct) {
    let name = format!("{}.direct", cx.name());
    cx.kernel(Conv(Call {
        name,
        stage: Stage::GradInput,
        g: *g,
        a: dy,
        b: Some(k),
        c: dx,
    }));
}

/// `dk` of `y = conv(x, k)` from `dy` and `x`, when [`Direct::filter_in_registers`].
pub(super) fn grad_filter(cx: &mut Lower, dy: VtId, x: VtId, dk: VtId, g: &Direct) {
    let parts = cx.threads.max(1);
    let partial = cx.temp("direct_partial", parts * g.filter_partial_len());
    let name = format!("{}.direct", cx.name());
    cx.kernel(GradFilter {
        partial: Call {
            name,
            stage: Stage::GradFilterPartial,
            g: *g,
            a: dy,
            b: Some(x),
            c: partial,
        },
        dk,
    });
}
