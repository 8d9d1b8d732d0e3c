//! The Winograd lowering of stride-1 3×3 convolutions ([`crate::jit::winograd`]): the
//! forward pass, the input gradient and the filter gradient, each an instruction that
//! calls `qatc_winograd` on every thread's share of output tiles (2×2 or 4×4, the
//! [`Variant`] the options chose). The kernel is
//! transformed once per step and direction (`U`, shared by the nodes that use it).
//!
//! A lowering choice (`JitOptions::winograd`, F(4×4, 3×3) by default): the direct lowering
//! (im2col and GEMMs, `conv.rs`) stays for every other geometry and when the option is off.

use super::context::Lower;
use super::conv_geom::Geom;
use crate::error::Result;
use crate::jit::cg::Cg;
use crate::jit::lir::{Kernel, VtId};
use crate::jit::winograd::{pack_pads, transformed_len, Stage, Tiles, Variant};

/// Channels below which the transforms cost more than the multiplications they save
/// (measured on `resnet8`'s first convolution, 3 → 16 channels at 32×32: Winograd 762 µs
/// forward and 893 µs filter gradient, im2col and GEMM 543 and 634 µs).
const MIN_CHANNELS: usize = 8;

/// The tiles of `g` when it is a convolution the chosen Winograd variant computes.
pub(super) fn tiles(cx: &Lower, g: &Geom) -> Option<Tiles> {
    let variant: Variant = cx.winograd?;
    let fits = g.ci >= MIN_CHANNELS
        && g.co >= MIN_CHANNELS
        && g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.dilation == [1, 1]
        && g.pad[0] <= 2
        && g.pad[1] <= 2;
    fits.then_some(Tiles {
        n: g.n,
        h: g.h,
        w: g.w,
        c_in: g.ci,
        oh: g.oh,
        ow: g.ow,
        c_out: g.co,
        pad_t: g.pad[0],
        pad_l: g.pad[1],
        variant,
    })
}

/// The input gradient's convolution: `dy` in, `dx` out, the kernel flipped.
fn transposed(t: &Tiles) -> Tiles {
    Tiles {
        n: t.n,
        h: t.oh,
        w: t.ow,
        c_in: t.c_out,
        oh: t.h,
        ow: t.w,
        c_out: t.c_in,
        pad_t: 2 - t.pad_t,
        pad_l: 2 - t.pad_l,
        variant: t.variant,
    }
}

/// One `qatc_winograd` stage over `t` with operands `a`, `b` (read) and `c` (written).
struct Call {
    name: String,
    stage: Stage,
    t: Tiles,
    a: VtId,
    b: Option<VtId>,
    c: VtId,
}

impl Call {
    fn emit_call(&self, cg: &mut Cg, tid: Option<cranelift_codegen::ir::Value>, threads: usize) {
        let t = &self.t;
        let a = cg.ptr(self.a, 0);
        let b = match self.b {
            Some(b) => cg.ptr(b, 0),
            None => cg.iconst(0),
        };
        let c = cg.ptr(self.c, 0);
        let tid = tid.unwrap_or_else(|| cg.iconst(0));
        let mut args = vec![cg.iconst(self.stage.code() as i64)];
        for v in [t.variant.edge(), t.n, t.h, t.w, t.c_in, t.oh, t.ow, t.c_out] {
            args.push(cg.iconst(v as i64));
        }
        args.push(cg.iconst(pack_pads(t) as i64));
        args.extend([a, b, c, tid]);
        args.push(cg.iconst(threads as i64));
        let f = cg.helpers.winograd;
        cg.call(f, &args);
    }
}

/// `U` from the kernel: each thread transforms a share of the output channels.
struct Filter(Call);

impl Kernel for Filter {
    fn name(&self) -> String {
        self.0.name.clone()
    }
    fn kind(&self) -> &'static str {
        "winograd_filter"
    }
    fn flops(&self) -> usize {
        0
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.0.a]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.0.c]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && self.0.t.c_out >= threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let (tid, threads) = cg.this_thread();
        self.0.emit_call(cg, tid, threads);
        Ok(())
    }
}

/// `y = x ⋆ U` over every thread's share of tiles.
struct Conv(Call);

impl Kernel for Conv {
    fn name(&self) -> String {
        self.0.name.clone()
    }
    fn kind(&self) -> &'static str {
        "winograd"
    }
    /// The direct convolution's arithmetic, so GFLOP/s compare with the direct lowering.
    fn flops(&self) -> usize {
        self.0.t.direct_flops()
    }
    fn reads(&self) -> Vec<VtId> {
        vec![
            self.0.a,
            self.0
                .b
                .expect("a convolution reads its transformed kernel"),
        ]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.0.c]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && self.0.t.count() >= 8 * threads
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let (tid, threads) = cg.this_thread();
        self.0.emit_call(cg, tid, threads);
        Ok(())
    }
}

/// The filter gradient: per-thread partials of the transformed products, summed and
/// transformed back by thread 0.
struct GradFilter {
    partial: Call,
    dk: VtId,
}

impl Kernel for GradFilter {
    fn name(&self) -> String {
        self.partial.name.clone()
    }
    fn kind(&self) -> &'static str {
        "winograd_grad_filter"
    }
    fn flops(&self) -> usize {
        self.partial.t.direct_flops()
    }
    fn reads(&self) -> Vec<VtId> {
        vec![
            self.partial.a,
            self.partial.b.expect("the filter gradient reads dy"),
            self.partial.c,
        ]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.partial.c, self.dk]
    }
    fn parallel(&self, threads: usize) -> bool {
        threads > 1 && self.partial.t.count() >= 8 * threads
    }
    fn ends_on_thread0(&self) -> bool {
        true
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let finish = Call {
            name: String::new(),
            stage: Stage::GradFilterFinish,
            t: self.partial.t,
            a: self.partial.c,
            b: None,
            c: self.dk,
        };
        cg.partials_then_thread0(
            |cg, tid, threads| self.partial.emit_call(cg, tid, threads),
            |cg, threads| finish.emit_call(cg, None, threads),
        );
        Ok(())
    }
}

/// `U` of `k` for the convolution `t` (flipped: the input gradient's), shared by every
/// node that needs the same one.
fn transformed_filter(cx: &mut Lower, k: VtId, t: &Tiles, flipped: bool) -> VtId {
    let key = format!(
        "winograd_u:{k}:{flipped}:{}:{}:{:?}",
        t.c_in, t.c_out, t.variant
    );
    if let Some(v) = cx.memo.get(&key) {
        return v[0];
    }
    let u = cx.temp("winograd_u", transformed_len(t));
    let name = format!("{}.winograd_u", cx.name());
    let stage = if flipped {
        Stage::FilterFlipped
    } else {
        Stage::Filter
    };
    cx.kernel(Filter(Call {
        name,
        stage,
        t: *t,
        a: k,
        b: None,
        c: u,
    }));
    cx.memo.insert(key, vec![u]);
    u
}

/// `y = conv(x, k)`.
pub(super) fn forward(cx: &mut Lower, x: VtId, k: VtId, y: VtId, t: &Tiles) {
    let u = transformed_filter(cx, k, t, false);
    let name = format!("{}.winograd", cx.name());
    cx.kernel(Conv(Call {
        name,
        stage: Stage::Conv,
        t: *t,
        a: x,
        b: Some(u),
        c: y,
    }));
}

/// `dx` of `y = conv(x, k)` from `dy`: the flipped convolution of `dy`.
pub(super) fn grad_input(cx: &mut Lower, dy: VtId, k: VtId, dx: VtId, t: &Tiles) {
    let tt = transposed(t);
    let u = transformed_filter(cx, k, &tt, true);
    let name = format!("{}.winograd", cx.name());
    cx.kernel(Conv(Call {
        name,
        stage: Stage::Conv,
        t: tt,
        a: dy,
        b: Some(u),
        c: dx,
    }));
}

/// `dk` of `y = conv(x, k)` from `dy` and `x`.
pub(super) fn grad_filter(cx: &mut Lower, dy: VtId, x: VtId, dk: VtId, t: &Tiles) {
    let parts = cx.threads.max(1);
    let partial = cx.temp("winograd_partial", parts * transformed_len(t));
    let name = format!("{}.winograd", cx.name());
    cx.kernel(GradFilter {
        partial: Call {
            name,
            stage: Stage::GradFilterPartial,
            t: *t,
            a: x,
            b: Some(dy),
            c: partial,
        },
        dk,
    });
}
