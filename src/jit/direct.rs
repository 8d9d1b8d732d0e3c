//! Direct convolutions without patch matrices: the forward pass and the input gradient of a
//! strided convolution, and the filter gradient of a first layer, as host kernels the
//! compiled step calls through `qatc_direct`, each thread on its own share of rows.
//!
//! The im2col lowering copies every input pixel `kh·kw/(sy·sx)` times into a patch matrix
//! before its GEMM, and its input gradient writes a patch-sized matrix that `col2im` then
//! scatters back: on `resnet8`'s stride-2 3×3 convolutions the copies cost as much as the
//! GEMMs. Here the patches are never formed:
//!
//! - **Forward** `y[n,oy,ox,:] = Σ_{ky,kx,i} x[n, oy·sy+ky−pt, ox·sx+kx−pl, i] · k[:,ky,kx,i]`.
//!   A block of `P` neighbouring outputs of one row keeps its `P × co` sums in AVX-512
//!   registers; per tap and input channel, `NV` vector loads of the kernel (output channels
//!   contiguous) and `P` broadcasts of input values feed `P·NV` FMAs.
//! - **Input gradient** `dx[n,iy,ix,:] = Σ_{ky,kx,o} dy[n,oy,ox,o] · k[o,ky,kx,:]` over the
//!   taps with `iy = oy·sy+ky−pt` and `ix = ox·sx+kx−pl`. The input pixels of one row with
//!   the same phase `ix mod sx` share their taps, so a block of `P` of them (every `sx`-th
//!   pixel) reads `P` consecutive pixels of `dy` per tap, and sums `P × ci` in registers.
//!
//! - **Filter gradient** of a first layer (1–3 input channels, at most 16 output channels,
//!   [`Direct::filter_in_registers`]): all `kh·kw·ci` sums of each output channel in
//!   registers, one per tap and input channel; each output pixel adds its gradient vector
//!   times the input values under its window. Per-thread partials, summed by thread 0.
//!   Wider convolutions keep `dyᵀ · patches` on `gemm_tn`, which reads the patch matrix in
//!   place.
//!
//! A forward pass whose pixels' window rows are all inside the input reads each row's
//! `kw·ci` values as one run. The forward pass and the input gradient are each one sum in a
//! fixed order per element, whatever the split over threads, so they do not depend on the
//! thread count. The kernel is rearranged once per call into the layout each direction
//! reads (a per-thread scratch; filters are small).

use crate::cpu::Avx512;
use crate::jit::host::share;

/// The geometry of a convolution `x[n,h,w,ci] ⋆ k[co,kh,kw,ci] → y[n,oh,ow,co]` (undilated;
/// input pixel `(oy·sy + ky − pt, ox·sx + kx − pl)` is tap `(ky,kx)` of output `(oy,ox)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Direct {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub ci: usize,
    pub oh: usize,
    pub ow: usize,
    pub co: usize,
    pub kh: usize,
    pub kw: usize,
    pub sy: usize,
    pub sx: usize,
    pub pt: usize,
    pub pl: usize,
}

impl Direct {
    /// Whether every size fits the packed call ([`Direct::pack`]): 16 bits for the batch,
    /// spatial sizes and channels, 8 for the window, strides and pads.
    pub fn packable(&self) -> bool {
        let big = [self.n, self.h, self.w, self.ci, self.oh, self.ow, self.co];
        let small = [self.kh, self.kw, self.sy, self.sx, self.pt, self.pl];
        big.iter().all(|&v| v < 1 << 16) && small.iter().all(|&v| v < 1 << 8)
    }

    /// The three geometry arguments of [`qatc_direct`].
    pub fn pack(&self) -> [u64; 3] {
        let w16 = |v: [usize; 4]| {
            v.iter()
                .enumerate()
                .fold(0u64, |acc, (i, &x)| acc | (x as u64) << (16 * i))
        };
        let w8 = |v: [usize; 6]| {
            v.iter()
                .enumerate()
                .fold(0u64, |acc, (i, &x)| acc | (x as u64) << (8 * i))
        };
        [
            w16([self.n, self.h, self.w, self.ci]),
            w16([self.oh, self.ow, self.co, 0]),
            w8([self.kh, self.kw, self.sy, self.sx, self.pt, self.pl]),
        ]
    }

    /// The geometry [`Direct::pack`] packed.
    pub fn unpack(p: [u64; 3]) -> Direct {
        let f16 = |word: u64, i: usize| ((word >> (16 * i)) & 0xffff) as usize;
        let f8 = |i: usize| ((p[2] >> (8 * i)) & 0xff) as usize;
        Direct {
            n: f16(p[0], 0),
            h: f16(p[0], 1),
            w: f16(p[0], 2),
            ci: f16(p[0], 3),
            oh: f16(p[1], 0),
            ow: f16(p[1], 1),
            co: f16(p[1], 2),
            kh: f8(0),
            kw: f8(1),
            sy: f8(2),
            sx: f8(3),
            pt: f8(4),
            pl: f8(5),
        }
    }

    /// The forward convolution's multiply-adds times 2 (what profiles count).
    pub fn flops(&self) -> usize {
        2 * self.n * self.oh * self.ow * self.co * self.kh * self.kw * self.ci
    }

    /// Whether the filter gradient is computed here too ([`Stage::GradFilterPartial`]):
    /// its whole `kh·kw·ci × co` transpose fits in AVX-512 registers, one per tap and input
    /// channel (at most 3 rows of 9 values, at most 16 output channels): a convolution's
    /// first layer on 1–3 input channels.
    pub fn filter_in_registers(&self) -> bool {
        self.co <= 16 && self.kh <= FILTER_ROWS && self.kw * self.ci <= FILTER_RUN
    }

    /// Floats of one thread's filter-gradient partial: `[kh·kw·ci][16]`.
    pub fn filter_partial_len(&self) -> usize {
        self.kh * self.kw * self.ci * 16
    }
}

/// Window rows the filter-gradient kernel keeps in registers.
const FILTER_ROWS: usize = 3;
/// Values per window row it keeps (`kw·ci`).
const FILTER_RUN: usize = 9;

/// What one `qatc_direct` call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `y = x ⋆ k` (operands `x`, `k`, `y`), split over output rows.
    Forward,
    /// `dx` from `dy` and `k` (operands `dy`, `k`, `dx`), split over input rows.
    GradInput,
    /// This thread's partial `[kh·kw·ci][16]` of the filter gradient (operands `dy`, `x`,
    /// the partials), split over output rows; only where [`Direct::filter_in_registers`].
    GradFilterPartial,
    /// `dk[co][kh][kw][ci]` from the `threads` partials, summed in order (operands the
    /// partials, unused, `dk`; thread 0).
    GradFilterFinish,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 4] = [
        Stage::Forward,
        Stage::GradInput,
        Stage::GradFilterPartial,
        Stage::GradFilterFinish,
    ];
    /// The stage's code in a call.
    pub fn code(self) -> u64 {
        match self {
            Stage::Forward => 0,
            Stage::GradInput => 1,
            Stage::GradFilterPartial => 2,
            Stage::GradFilterFinish => 3,
        }
    }
    fn from_code(c: u64) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.code() == c)
    }
    /// The kind of instruction the stage is in, for profiles (the filter gradient's two
    /// stages are one instruction).
    pub fn kind(self) -> &'static str {
        match self {
            Stage::Forward => "direct_conv",
            Stage::GradInput => "direct_conv_grad_input",
            Stage::GradFilterPartial | Stage::GradFilterFinish => "direct_conv_grad_filter",
        }
    }
}

/// Runs `stage` on thread `tid`'s share of rows: operands `(a, b, c)` as [`Stage`] lists.
///
/// # Safety
/// The pointers must hold the tensors the stage reads and writes for geometry `g`.
pub unsafe fn run(
    cpu: Avx512,
    stage: Stage,
    g: &Direct,
    (a, b, c): (*const f32, *const f32, *mut f32),
    tid: usize,
    threads: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = cpu;
        match stage {
            Stage::Forward => {
                let rows = share(g.n * g.oh, tid, threads);
                x86::forward(g, a, b, c, rows)
            }
            Stage::GradInput => {
                let rows = share(g.n * g.h, tid, threads);
                x86::grad_input(g, a, b, c, rows)
            }
            Stage::GradFilterPartial => {
                let rows = share(g.n * g.oh, tid, threads);
                x86::grad_filter(g, a, b, c.add(tid * g.filter_partial_len()), rows)
            }
            Stage::GradFilterFinish => grad_filter_finish(g, a, c, threads),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (stage, g, a, b, c, tid, threads);
        cpu.never()
    }
}

/// `dk[o][r] = Σ_t part[t][r][o]` (`r` over taps and input channels), `t` in order.
unsafe fn grad_filter_finish(g: &Direct, part: *const f32, dk: *mut f32, parts: usize) {
    let rows = g.kh * g.kw * g.ci;
    let len = g.filter_partial_len();
    for o in 0..g.co {
        for r in 0..rows {
            let mut s = 0.0;
            for t in 0..parts {
                s += *part.add(t * len + r * 16 + o);
            }
            *dk.add(o * rows + r) = s;
        }
    }
}

/// The entry point compiled code calls: `stage` (a [`Stage::code`]) on thread `tid` of
/// `threads` for the packed geometry `geom` ([`Direct::pack`]).
///
/// # Safety
/// As [`run`]; an unknown stage code, or a CPU without AVX-512 (the lowering never emits
/// the call then), does nothing.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn qatc_direct(
    stage: u64,
    g0: u64,
    g1: u64,
    g2: u64,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    tid: u64,
    threads: u64,
) {
    let (Some(s), Some(cpu)) = (Stage::from_code(stage), Avx512::detect()) else {
        return;
    };
    let g = Direct::unpack([g0, g1, g2]);
    run(cpu, s, &g, (a, b, c), tid as usize, threads as usize);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    // the file's own module by its full path (the architecture test reads `super::` in a
    // file as the parent directory's module)
    use crate::jit::direct::Direct;
    use crate::jit::host::{lanes16 as mask, scratch};
    use std::arch::x86_64::*;

    /// Sums of `P` pixels × `NV` vectors of 16 channels, in registers.
    struct Acc<const P: usize, const NV: usize>([[__m512; NV]; P]);

    impl<const P: usize, const NV: usize> Acc<P, NV> {
        #[inline(always)]
        unsafe fn zero() -> Self {
            Acc([[_mm512_setzero_ps(); NV]; P])
        }

        /// `acc[p] += src[p][j] · w[j·w_stride ..][:16·NV]` for `j < depth` (`src[p]` a
        /// pointer to `depth` contiguous floats, `w` rows of `16·NV` floats, `masks` the
        /// lanes of each vector that exist), `U` values of `j` at a time: each pixel's
        /// pointer is read once per `U` broadcasts (the `P` pointers do not all fit in
        /// general registers). Each sum still runs over `j` in order.
        #[inline(always)]
        unsafe fn madd<const U: usize>(
            &mut self,
            src: &[*const f32; P],
            w: *const f32,
            w_stride: usize,
            depth: usize,
            masks: &[__mmask16; NV],
        ) {
            let weights = |j: usize| -> [__m512; NV] {
                let wj = w.add(j * w_stride);
                std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], wj.add(16 * v)))
            };
            let mut j = 0;
            while j + U <= depth {
                let wv: [[__m512; NV]; U] = std::array::from_fn(|u| weights(j + u));
                for (p, row) in self.0.iter_mut().enumerate() {
                    let sp = src[p].add(j);
                    for (u, wu) in wv.iter().enumerate() {
                        let a = _mm512_set1_ps(*sp.add(u));
                        for (v, s) in row.iter_mut().enumerate() {
                            *s = _mm512_fmadd_ps(a, wu[v], *s);
                        }
                    }
                }
                j += U;
            }
            while j < depth {
                let wv = weights(j);
                for (p, row) in self.0.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*src[p].add(j));
                    for (v, s) in row.iter_mut().enumerate() {
                        *s = _mm512_fmadd_ps(a, wv[v], *s);
                    }
                }
                j += 1;
            }
        }

        /// Pixel `p < count`'s sums to `dst(p)`.
        #[inline(always)]
        unsafe fn store(
            &self,
            count: usize,
            dst: impl Fn(usize) -> *mut f32,
            masks: &[__mmask16; NV],
        ) {
            for (p, row) in self.0.iter().enumerate().take(count) {
                let d = dst(p);
                for (v, s) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(d.add(16 * v), masks[v], *s);
                }
            }
        }
    }

    /// Channels one pass of a block keeps in registers, and the lane masks of its vectors.
    #[inline(always)]
    fn lanes<const NV: usize>(c: usize, c0: usize) -> [__mmask16; NV] {
        std::array::from_fn(|v| mask(c.saturating_sub(c0 + 16 * v)))
    }

    /// `y` rows `lo..hi` (of `n·oh`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward(
        g: &Direct,
        x: *const f32,
        k: *const f32,
        y: *mut f32,
        (lo, hi): (usize, usize),
    ) {
        if lo >= hi {
            return;
        }
        // kt[t][i][o] = k[o][t][i]: output channels contiguous per tap and input channel
        let taps = g.kh * g.kw;
        let kt = scratch(taps * g.ci * g.co + g.kw * g.ci);
        for o in 0..g.co {
            for t in 0..taps {
                for i in 0..g.ci {
                    *kt.add((t * g.ci + i) * g.co + o) = *k.add((o * taps + t) * g.ci + i);
                }
            }
        }
        // a window row of zeros for the pixels past the end of a block
        let zeros = kt.add(taps * g.ci * g.co);
        std::slice::from_raw_parts_mut(zeros, g.kw * g.ci).fill(0.0);
        // pixels per block: each block keeps P pixel pointers beside its P·NV sums, and
        // more than 8 of them no longer fit general registers (measured on resnet8: 16
        // pixels took its 16-channel stem 0.62 ms, 8 took 0.41–0.44 ms; 6 or 10 pixels
        // were slower than 8 at 32 channels)
        match g.co.div_ceil(16) {
            1 => forward_rows::<8, 1, 4>(g, x, kt, zeros, y, (lo, hi)),
            2 => forward_rows::<8, 2, 4>(g, x, kt, zeros, y, (lo, hi)),
            3 => forward_rows::<6, 3, 2>(g, x, kt, zeros, y, (lo, hi)),
            _ => forward_rows::<5, 4, 2>(g, x, kt, zeros, y, (lo, hi)),
        }
    }

    #[inline(always)]
    unsafe fn forward_rows<const P: usize, const NV: usize, const U: usize>(
        g: &Direct,
        x: *const f32,
        kt: *const f32,
        zeros: *const f32,
        y: *mut f32,
        (lo, hi): (usize, usize),
    ) {
        for r in lo..hi {
            let (b, oy) = (r / g.oh, r % g.oh);
            let yrow = y.add(r * g.ow * g.co);
            let mut c0 = 0;
            while c0 < g.co {
                let masks = lanes::<NV>(g.co, c0);
                let mut ox0 = 0;
                while ox0 < g.ow {
                    let count = (g.ow - ox0).min(P);
                    let mut acc = Acc::<P, NV>::zero();
                    for ky in 0..g.kh {
                        let iy = (oy * g.sy + ky) as isize - g.pt as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let xrow = x.add((b * g.h + iy as usize) * g.w * g.ci);
                        let first = (ox0 * g.sx) as isize - g.pl as isize;
                        let last = (ox0 + count - 1) * g.sx + g.kw;
                        if first >= 0 && last <= g.w + g.pl {
                            // every pixel's window row is inside: its kw·ci values are
                            // contiguous, one run of taps and channels
                            let src: [*const f32; P] = std::array::from_fn(|p| {
                                if p < count {
                                    xrow.add(((ox0 + p) * g.sx - g.pl) * g.ci)
                                } else {
                                    zeros
                                }
                            });
                            let w = kt.add(ky * g.kw * g.ci * g.co + c0);
                            acc.madd::<U>(&src, w, g.co, g.kw * g.ci, &masks);
                            continue;
                        }
                        for kx in 0..g.kw {
                            let src: [*const f32; P] = std::array::from_fn(|p| {
                                let ix = ((ox0 + p) * g.sx + kx) as isize - g.pl as isize;
                                if p < count && ix >= 0 && ix < g.w as isize {
                                    xrow.add(ix as usize * g.ci)
                                } else {
                                    zeros
                                }
                            });
                            let w = kt.add((ky * g.kw + kx) * g.ci * g.co + c0);
                            acc.madd::<U>(&src, w, g.co, g.ci, &masks);
                        }
                    }
                    acc.store(count, |p| yrow.add((ox0 + p) * g.co + c0), &masks);
                    ox0 += P;
                }
                c0 += 16 * NV;
            }
        }
    }

    /// This thread's filter-gradient partial `part[r][o]` (`r = (ky·kw + kx)·ci + i`)
    /// over output rows `lo..hi`: every `(r, o)` sum in one register, each output pixel
    /// adding its gradient vector times the `kh·kw·ci` input values under its window.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn grad_filter(
        g: &Direct,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        rows: (usize, usize),
    ) {
        use crate::jit::direct::{FILTER_ROWS, FILTER_RUN};
        let run = g.kw * g.ci;
        // the common stems exactly, so their loop bounds are constants
        match (g.kh, run) {
            (3, 3) => grad_filter_rows::<3, 3>(g, dy, x, part, rows, 3, 3),
            (3, 9) => grad_filter_rows::<3, 9>(g, dy, x, part, rows, 3, 9),
            _ => grad_filter_rows::<FILTER_ROWS, FILTER_RUN>(g, dy, x, part, rows, g.kh, run),
        }
    }

    /// [`grad_filter`] with `kh ≤ KH` window rows of `run ≤ RUN` values.
    #[inline(always)]
    unsafe fn grad_filter_rows<const KH: usize, const RUN: usize>(
        g: &Direct,
        dy: *const f32,
        x: *const f32,
        part: *mut f32,
        (lo, hi): (usize, usize),
        kh: usize,
        run: usize,
    ) {
        let mut acc = [_mm512_setzero_ps(); 27];
        let m = mask(g.co);
        for r in lo..hi {
            let (b, oy) = (r / g.oh, r % g.oh);
            let dyrow = dy.add(r * g.ow * g.co);
            for ox in 0..g.ow {
                let d = _mm512_maskz_loadu_ps(m, dyrow.add(ox * g.co));
                let x0 = (ox * g.sx) as isize - g.pl as isize;
                let inside = x0 >= 0 && x0 as usize + g.kw <= g.w;
                for ky in 0..KH {
                    let iy = (oy * g.sy + ky) as isize - g.pt as isize;
                    if ky >= kh || iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let xrow = x.add((b * g.h + iy as usize) * g.w * g.ci);
                    for j in 0..RUN {
                        if j >= run {
                            break;
                        }
                        if !inside {
                            let ix = x0 + (j / g.ci) as isize;
                            if ix < 0 || ix >= g.w as isize {
                                continue;
                            }
                        }
                        let v = _mm512_set1_ps(*xrow.offset(x0 * g.ci as isize + j as isize));
                        let a = &mut acc[ky * RUN + j];
                        *a = _mm512_fmadd_ps(v, d, *a);
                    }
                }
            }
        }
        for ky in 0..kh {
            for j in 0..run {
                _mm512_storeu_ps(part.add((ky * run + j) * 16), acc[ky * RUN + j]);
            }
        }
    }

    /// `dx` rows `lo..hi` (of `n·h`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn grad_input(
        g: &Direct,
        dy: *const f32,
        k: *const f32,
        dx: *mut f32,
        (lo, hi): (usize, usize),
    ) {
        if lo >= hi {
            return;
        }
        // k[o][t][i] read as kt[t][o][i]: input channels contiguous per tap and output channel
        let taps = g.kh * g.kw;
        let kt = scratch(taps * g.ci * g.co + g.co);
        for t in 0..taps {
            for o in 0..g.co {
                let src = k.add((o * taps + t) * g.ci);
                std::ptr::copy_nonoverlapping(src, kt.add((t * g.co + o) * g.ci), g.ci);
            }
        }
        let zeros = kt.add(taps * g.ci * g.co);
        std::slice::from_raw_parts_mut(zeros, g.co).fill(0.0);
        match g.ci.div_ceil(16) {
            1 => grad_input_rows::<16, 1, 4>(g, dy, kt, zeros, dx, (lo, hi)),
            2 => grad_input_rows::<8, 2, 4>(g, dy, kt, zeros, dx, (lo, hi)),
            3 => grad_input_rows::<6, 3, 2>(g, dy, kt, zeros, dx, (lo, hi)),
            _ => grad_input_rows::<5, 4, 2>(g, dy, kt, zeros, dx, (lo, hi)),
        }
    }

    /// The output index `o` with `o·s + k − pad = i`, if there is one in `0..n`.
    #[inline(always)]
    fn source(i: usize, k: usize, s: usize, pad: usize, n: usize) -> Option<usize> {
        let t = (i + pad).checked_sub(k)?;
        (t.is_multiple_of(s) && t / s < n).then_some(t / s)
    }

    #[inline(always)]
    unsafe fn grad_input_rows<const P: usize, const NV: usize, const U: usize>(
        g: &Direct,
        dy: *const f32,
        kt: *const f32,
        zeros: *const f32,
        dx: *mut f32,
        (lo, hi): (usize, usize),
    ) {
        for r in lo..hi {
            let (b, iy) = (r / g.h, r % g.h);
            let dxrow = dx.add(r * g.w * g.ci);
            let mut c0 = 0;
            while c0 < g.ci {
                let masks = lanes::<NV>(g.ci, c0);
                // pixels ix = phase + sx·q share their taps
                for phase in 0..g.sx.min(g.w) {
                    let pixels = (g.w - phase).div_ceil(g.sx);
                    let mut q0 = 0;
                    while q0 < pixels {
                        let count = (pixels - q0).min(P);
                        let mut acc = Acc::<P, NV>::zero();
                        for ky in 0..g.kh {
                            let Some(oy) = source(iy, ky, g.sy, g.pt, g.oh) else {
                                continue;
                            };
                            let dyrow = dy.add((b * g.oh + oy) * g.ow * g.co);
                            for kx in 0..g.kw {
                                let ix0 = phase + g.sx * q0;
                                if !(phase + g.pl + g.sx * g.kw - kx).is_multiple_of(g.sx) {
                                    // no output reaches this phase through tap kx
                                    continue;
                                }
                                let src: [*const f32; P] = std::array::from_fn(|q| {
                                    let ix = ix0 + g.sx * q;
                                    match source(ix, kx, g.sx, g.pl, g.ow) {
                                        Some(ox) if q < count => dyrow.add(ox * g.co),
                                        _ => zeros,
                                    }
                                });
                                let w = kt.add((ky * g.kw + kx) * g.co * g.ci + c0);
                                acc.madd::<U>(&src, w, g.ci, g.co, &masks);
                            }
                        }
                        acc.store(
                            count,
                            |q| dxrow.add((phase + g.sx * (q0 + q)) * g.ci + c0),
                            &masks,
                        );
                        q0 += P;
                    }
                }
                c0 += 16 * NV;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::host::testing::{max_rel, rand};

    fn geom(
        (n, h, w, ci): (usize, usize, usize, usize),
        co: usize,
        (kh, kw): (usize, usize),
        (sy, sx): (usize, usize),
        (pt, pl): (usize, usize),
    ) -> Direct {
        Direct {
            n,
            h,
            w,
            ci,
            oh: (h + 2 * pt - kh) / sy + 1,
            ow: (w + 2 * pl - kw) / sx + 1,
            co,
            kh,
            kw,
            sy,
            sx,
            pt,
            pl,
        }
    }

    /// Stride 1 and 2, 1×1 to 10×4 windows, channel counts on and off 16, edges padded.
    fn shapes() -> Vec<Direct> {
        vec![
            geom((2, 9, 9, 16), 32, (3, 3), (2, 2), (1, 1)),
            geom((1, 16, 16, 32), 64, (3, 3), (2, 2), (0, 0)),
            geom((2, 8, 7, 16), 32, (1, 1), (2, 2), (0, 0)),
            geom((1, 11, 6, 3), 16, (3, 3), (1, 1), (1, 1)),
            geom((1, 13, 10, 1), 20, (10, 4), (2, 2), (4, 1)),
            geom((1, 7, 30, 20), 50, (3, 3), (2, 3), (1, 1)),
            geom((1, 6, 29, 72), 8, (3, 3), (1, 2), (1, 1)),
            // first layers: the filter gradient in registers too
            geom((2, 9, 9, 3), 16, (3, 3), (1, 1), (1, 1)),
            geom((1, 10, 10, 1), 12, (3, 3), (1, 1), (0, 0)),
            geom((2, 9, 8, 3), 8, (3, 3), (2, 2), (1, 1)),
            geom((1, 7, 6, 2), 5, (2, 3), (1, 2), (1, 1)),
        ]
    }

    /// `y` and, for `dy` of y's shape, `dx` and `dk`, in f64.
    fn direct(g: &Direct, x: &[f32], k: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
        let mut y = vec![0.0; g.n * g.oh * g.ow * g.co];
        let mut dx = vec![0.0; g.n * g.h * g.w * g.ci];
        let mut dk = vec![0.0; k.len()];
        for b in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sy + ky) as isize - g.pt as isize;
                            let ix = (ox * g.sx + kx) as isize - g.pl as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let xi = ((b * g.h + iy as usize) * g.w + ix as usize) * g.ci;
                            let yi = ((b * g.oh + oy) * g.ow + ox) * g.co;
                            for o in 0..g.co {
                                for i in 0..g.ci {
                                    let ki = ((o * g.kh + ky) * g.kw + kx) * g.ci + i;
                                    let kv = k[ki] as f64;
                                    y[yi + o] += x[xi + i] as f64 * kv;
                                    dx[xi + i] += dy[yi + o] as f64 * kv;
                                    dk[ki] += dy[yi + o] as f64 * x[xi + i] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dk]
    }

    #[test]
    fn both_directions_match_the_f64_sums_on_any_split() {
        let Some(cpu) = Avx512::detect() else {
            eprintln!("no AVX-512 here: the direct kernels are never lowered to");
            return;
        };
        for (s, g) in shapes().iter().enumerate() {
            let x = rand(g.n * g.h * g.w * g.ci, s as u64);
            let k = rand(g.co * g.kh * g.kw * g.ci, 100 + s as u64);
            let dy = rand(g.n * g.oh * g.ow * g.co, 200 + s as u64);
            let [want_y, want_dx, want_dk] = direct(g, &x, &k, &dy);
            let mut first = None;
            for threads in [1, 2, 3] {
                let mut y = vec![f32::NAN; want_y.len()];
                let mut dx = vec![f32::NAN; want_dx.len()];
                for tid in 0..threads {
                    unsafe {
                        run(
                            cpu,
                            Stage::Forward,
                            g,
                            (x.as_ptr(), k.as_ptr(), y.as_mut_ptr()),
                            tid,
                            threads,
                        );
                        run(
                            cpu,
                            Stage::GradInput,
                            g,
                            (dy.as_ptr(), k.as_ptr(), dx.as_mut_ptr()),
                            tid,
                            threads,
                        );
                    }
                }
                let (ey, edx) = (max_rel(&y, &want_y), max_rel(&dx, &want_dx));
                assert!(ey < 1e-5, "{g:?} forward, {threads} threads: {ey}");
                assert!(edx < 1e-5, "{g:?} input gradient, {threads} threads: {edx}");
                if g.filter_in_registers() {
                    let mut part = vec![f32::NAN; threads * g.filter_partial_len()];
                    let mut dk = vec![f32::NAN; want_dk.len()];
                    unsafe {
                        for tid in 0..threads {
                            run(
                                cpu,
                                Stage::GradFilterPartial,
                                g,
                                (dy.as_ptr(), x.as_ptr(), part.as_mut_ptr()),
                                tid,
                                threads,
                            );
                        }
                        run(
                            cpu,
                            Stage::GradFilterFinish,
                            g,
                            (part.as_ptr(), std::ptr::null(), dk.as_mut_ptr()),
                            0,
                            threads,
                        );
                    }
                    let edk = max_rel(&dk, &want_dk);
                    assert!(
                        edk < 1e-5,
                        "{g:?} filter gradient, {threads} threads: {edk}"
                    );
                }
                // the same bits whatever the split
                match &first {
                    None => first = Some((y, dx)),
                    Some((y1, dx1)) => {
                        assert!(y1.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
                        assert!(dx1.iter().zip(&dx).all(|(a, b)| a.to_bits() == b.to_bits()));
                    }
                }
            }
        }
    }

    #[test]
    fn geometry_and_stage_codes_round_trip() {
        for g in shapes() {
            assert!(g.packable());
            assert_eq!(Direct::unpack(g.pack()), g);
        }
        for s in Stage::ALL {
            assert_eq!(Stage::from_code(s.code()), Some(s));
        }
        assert_eq!(Stage::from_code(7), None);
        // the first layers take the filter-gradient kernel, wider ones do not
        let kernels: Vec<bool> = shapes().iter().map(Direct::filter_in_registers).collect();
        assert_eq!(
            kernels,
            [false, false, false, true, false, false, false, true, true, true, true]
        );
    }
}
