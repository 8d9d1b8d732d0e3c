//! The direct lowering of strided and small-channel convolutions
//! ([`crate::jit::direct`]): the forward pass and the input gradient, each an instruction
//! that calls `qatc_direct` on every thread's share of rows, with no patch matrix. The
//! filter gradient stays on im2col and `gemm_tn` (`conv.rs`).
//!
//! A lowering choice (`JitOptions::direct`, on by default where the CPU has AVX-512):
//! Winograd takes the stride-1 3×3 convolutions it fits first, pointwise ones stay plain
//! GEMMs, and every other undilated convolution with at least [`MIN_CHANNELS`] on each side
//! goes here.

use super::context::Lower;
use super::conv_geom::Geom;
use crate::error::Result;
use crate::jit::cg::Cg;
use crate::jit::direct::{Direct, Stage};
use crate::jit::lir::{Kernel, VtId};

/// Channels below which im2col and a GEMM are faster: with one to three input channels a
/// tap is one to three multiply-adds per output vector, too few to pay for gathering its
/// pixels (`mnist_cnn`'s 1-channel stem took 321 µs direct against 47 µs of im2col and a
/// GEMM; `ds_cnn`'s and the MobileNets' stems are no faster direct).
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
        && g.ci >= MIN_CHANNELS
        && g.co >= MIN_CHANNELS
        && !g.pointwise()
        && d.packable();
    fits.then_some(d)
}

/// One `qatc_direct` call: `stage` over `g`, reading `a` and `b`, writing `c`.
struct Call {
    name: String,
    stage: Stage,
    g: Direct,
    a: VtId,
    b: VtId,
    c: VtId,
}

impl Kernel for Call {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        match self.stage {
            Stage::Forward => "direct_conv",
            Stage::GradInput => "direct_conv_grad_input",
        }
    }
    /// The convolution's multiply-adds (the input gradient has as many as the forward).
    fn flops(&self) -> usize {
        self.g.flops()
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.a, self.b]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.c]
    }
    fn parallel(&self, threads: usize) -> bool {
        let rows = match self.stage {
            Stage::Forward => self.g.n * self.g.oh,
            Stage::GradInput => self.g.n * self.g.h,
        };
        threads > 1 && rows >= 2 * threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let (tid, threads) = if cg.par {
            (cg.tid(), cg.threads)
        } else {
            (cg.iconst(0), 1)
        };
        let mut args = vec![cg.iconst(self.stage.code() as i64)];
        for word in self.g.pack() {
            args.push(cg.iconst(word as i64));
        }
        for vt in [self.a, self.b, self.c] {
            let p = cg.ptr(vt, 0);
            args.push(p);
        }
        args.push(tid);
        args.push(cg.iconst(threads as i64));
        let f = cg.helpers.direct;
        cg.call(f, &args);
        Ok(())
    }
}

/// `y = conv(x, k)`.
pub(super) fn forward(cx: &mut Lower, x: VtId, k: VtId, y: VtId, g: &Direct) {
    let name = format!("{}.direct", cx.name());
    cx.kernel(Call {
        name,
        stage: Stage::Forward,
        g: *g,
        a: x,
        b: k,
        c: y,
    });
}

/// `dx` of `y = conv(x, k)` from `dy`.
pub(super) fn grad_input(cx: &mut Lower, dy: VtId, k: VtId, dx: VtId, g: &Direct) {
    let name = format!("{}.direct", cx.name());
    cx.kernel(Call {
        name,
        stage: Stage::GradInput,
        g: *g,
        a: dy,
        b: k,
        c: dx,
    });
}
