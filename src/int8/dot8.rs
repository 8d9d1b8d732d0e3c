//! The int8 evaluator's fast kernels, with the reference loops of `conv.rs` and `binary.rs`
//! as their oracle: CONV_2D on 8-bit dot products, requantization and ADD/SUB on 16 lanes.
//!
//! AVX-512 VNNI's `vpdpbusd` multiplies 64 unsigned by 64 signed bytes and adds each group of
//! four products into one of 16 int32 lanes. The int8 input is made unsigned by flipping its
//! sign bit (`x ^ 0x80 = x + 128`), so for output channel `c`
//!
//! ```text
//! Σ w[c,k]·(x[k] − zp) = Σ w[c,k]·(x[k] + 128) − (zp + 128)·Σ w[c,k]
//! ```
//!
//! where the second term is a per-channel constant. A tap in the padding reads `zp + 128`,
//! so it adds `w·(zp + 128)`, which the constant takes away again: padding contributes 0, as
//! in the reference kernel. Every product is exact and `vpdpbusd` wraps like the
//! reference's `wrapping_add`, and integer sums do not depend on their order, so the
//! accumulators, and after the shared requantization the outputs, are bit for bit the
//! reference kernel's.
//!
//! Work is blocked as 4 output pixels × 16 output channels: per 4 bytes of the reduction,
//! one 64-byte load of packed weights feeds four `vpdpbusd` (one per pixel, the pixel's 4
//! input bytes broadcast).

use super::fixed;
use crate::cpu::Avx512;

/// Output pixels computed together (each packed weight vector is reused this many times):
/// the most [`Packed::accumulate`] takes at once.
pub(crate) const PIXELS: usize = 4;
/// Output channels per vector of int32 accumulators.
const LANES: usize = 16;

/// Proof that this CPU has AVX-512 (F, BW, DQ, VL) with VNNI: the only way to call the
/// vector code.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vnni(Avx512);

impl Vnni {
    /// The token, if the CPU has the instructions.
    pub(crate) fn detect() -> Option<Vnni> {
        Avx512::detect().filter(|a| a.has_vnni()).map(Vnni)
    }

    /// Runs `f` compiled for AVX-512 ([`Avx512::vectorized`]).
    #[inline]
    pub(crate) fn vectorized<R>(self, f: impl FnOnce() -> R) -> R {
        self.0.vectorized(f)
    }

    /// `out[r·C + c] = clamp(MultiplyByQuantizedMultiplier(acc[r·C + c] + bias[c], mult[c],
    /// shift[c]) + zp)` for every row `r` of `C = bias.len()` channels (the requantization of
    /// convolutions), 16 channels per vector; the same integers as
    /// [`fixed::mul_by_quantized`] lane by lane.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn requantize(
        self,
        acc: &[i32],
        bias: &[i32],
        mult: &[i32],
        shift: &[i32],
        zp: i32,
        act: (i32, i32),
        out: &mut [i8],
    ) {
        let ch = bias.len();
        assert!(
            ch > 0
                && mult.len() == ch
                && shift.len() == ch
                && out.len().is_multiple_of(ch)
                && acc.len() >= out.len(),
            "dot8: requantizing {} values in rows of {ch}",
            out.len()
        );
        #[cfg(target_arch = "x86_64")]
        {
            let _ = self;
            // SAFETY: the token proves the features; the lengths are checked above.
            unsafe { x86::requantize(acc, bias, mult, shift, zp, act, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.0.never()
        }
    }

    /// One output pixel of a depthwise convolution with depth multiplier 1: `acc[c] =
    /// Σ_t (x[t.0 + c] − zp) · w[t.1 + c]` over the pixel's valid taps `t` (offsets of the
    /// tap's input pixel and filter row), for the `acc.len()` channels. The channel's sum
    /// stays in a register across the taps, 16 channels at a time.
    pub(crate) fn depthwise_pixel(
        self,
        x: &[i8],
        w: &[i8],
        taps: &[(usize, usize)],
        zp: i32,
        acc: &mut [i32],
    ) {
        let ch = acc.len();
        assert!(
            taps.iter()
                .all(|&(xo, wo)| xo + ch <= x.len() && wo + ch <= w.len()),
            "dot8: a depthwise tap reads past its input or filter"
        );
        #[cfg(target_arch = "x86_64")]
        {
            let _ = self;
            // SAFETY: the token proves the features; every tap's `ch` bytes are in bounds.
            unsafe { x86::depthwise_pixel(x, w, taps, zp, acc) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.0.never()
        }
    }

    /// ADD or SUB of two int8 vectors of the same shape, 16 lanes at a time: each input
    /// `(v − zp) · 2^left_shift` rescaled by `MultiplyByQuantizedMultiplierSmallerThanOneExp`,
    /// added or subtracted, rescaled to the output (the same integers as `binary::AddSub`).
    pub(crate) fn add_sub(self, x: &[i8], y: &[i8], p: &AddSubParams, out: &mut [i8]) {
        let n = out.len();
        assert!(x.len() == n && y.len() == n);
        let whole = n / LANES * LANES;
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: the token proves the features; all three slices hold `whole` lanes.
            unsafe { x86::add_sub(&x[..whole], &y[..whole], p, &mut out[..whole]) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.0.never()
        }
        for i in whole..n {
            out[i] = p.apply(x[i], y[i]);
        }
    }
}

/// The parameters of an int8 ADD or SUB (`binary::AddSub` prepares them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddSubParams {
    pub subtract: bool,
    pub left_shift: i32,
    /// Zero points of the two inputs and the output.
    pub zp: [i32; 3],
    /// Multipliers and shifts (all `<= 0`) of the two inputs and the output.
    pub mult: [i32; 3],
    pub shift: [i32; 3],
    pub act: (i32, i32),
}

impl AddSubParams {
    /// One element, the reference arithmetic.
    #[inline]
    pub(crate) fn apply(&self, x: i8, y: i8) -> i8 {
        use fixed::mul_by_quantized_smaller_than_one as rescale;
        let a = (x as i32 - self.zp[0]) << self.left_shift;
        let b = (y as i32 - self.zp[1]) << self.left_shift;
        let a = rescale(a, self.mult[0], self.shift[0]);
        let b = rescale(b, self.mult[1], self.shift[1]);
        let raw = if self.subtract {
            a.wrapping_sub(b)
        } else {
            a.wrapping_add(b)
        };
        let out = rescale(raw, self.mult[2], self.shift[2]) + self.zp[2];
        out.clamp(self.act.0, self.act.1) as i8
    }
}

/// A filter `[oc, k]` (k = kh·kw·ic, the reference's order) packed for [`Vnni`]: blocks of 16
/// output channels, each `[k/4][16][4]` bytes, zero-padded in both directions, and per
/// channel `(zp + 128)·Σw`.
pub(crate) struct Packed {
    oc: usize,
    k4: usize,
    data: Vec<i8>,
    correction: Vec<i32>,
}

impl Packed {
    pub(crate) fn new(w: &[i8], oc: usize, k: usize, in_zp: i32) -> Packed {
        let k4 = k.div_ceil(4);
        let blocks = oc.div_ceil(LANES);
        let mut data = vec![0i8; blocks * k4 * LANES * 4];
        for c in 0..oc {
            let (b, lane) = (c / LANES, c % LANES);
            for (kk, &v) in w[c * k..(c + 1) * k].iter().enumerate() {
                data[((b * k4 + kk / 4) * LANES + lane) * 4 + kk % 4] = v;
            }
        }
        let correction = (0..oc)
            .map(|c| {
                let sum = w[c * k..(c + 1) * k]
                    .iter()
                    .fold(0i32, |s, &v| s.wrapping_add(v as i32));
                sum.wrapping_mul(in_zp + 128)
            })
            .collect();
        Packed {
            oc,
            k4,
            data,
            correction,
        }
    }

    /// Bytes of one pixel's patch: the reduction depth rounded up to a multiple of 4.
    pub(crate) fn patch_len(&self) -> usize {
        self.k4 * 4
    }

    /// `bias[c] − (zp + 128)·Σw[c]`: the bias with the unsigned input's offset taken away,
    /// so the sums [`accumulate`](Self::accumulate) leaves plus this are the reference
    /// kernel's accumulators plus bias (wrapping, as there).
    pub(crate) fn fold_into_bias(&self, bias: &[i32]) -> Vec<i32> {
        bias.iter()
            .zip(&self.correction)
            .map(|(&b, &c)| b.wrapping_sub(c))
            .collect()
    }

    /// The sums `Σ w[c,k]·(x[k] + 128)` of up to 4 pixels, each patch
    /// [`patch_len`](Self::patch_len) bytes of `x + 128` (padding taps `zp + 128`, the
    /// rounding-up tail anything), into `acc[p·oc + c]`.
    pub(crate) fn accumulate(&self, cpu: Vnni, patches: &[u8], pixels: usize, acc: &mut [i32]) {
        let len = self.patch_len();
        assert!(
            pixels <= PIXELS && patches.len() >= PIXELS * len && acc.len() >= pixels * self.oc,
            "dot8: {pixels} pixels, {} patch bytes, {} accumulators",
            patches.len(),
            acc.len()
        );
        let mut lanes = [[0i32; LANES]; PIXELS];
        for b in 0..self.oc.div_ceil(LANES) {
            let w = &self.data[b * self.k4 * LANES * 4..(b + 1) * self.k4 * LANES * 4];
            block(cpu, w, patches, len, self.k4, &mut lanes);
            let c0 = b * LANES;
            let n = LANES.min(self.oc - c0);
            for (p, l) in lanes.iter().enumerate().take(pixels) {
                acc[p * self.oc + c0..p * self.oc + c0 + n].copy_from_slice(&l[..n]);
            }
        }
    }
}

/// One block: 16 channels' weights `w` (`k4` groups of 64 bytes) against 4 patches.
#[inline]
fn block(
    cpu: Vnni,
    w: &[i8],
    patches: &[u8],
    len: usize,
    k4: usize,
    out: &mut [[i32; LANES]; PIXELS],
) {
    debug_assert!(w.len() == k4 * 64 && patches.len() >= PIXELS * len && len == k4 * 4);
    #[cfg(target_arch = "x86_64")]
    {
        let _ = cpu;
        // SAFETY: the `Vnni` token exists only if the CPU has AVX-512 F/BW and VNNI, and the
        // slices hold what the loads read (checked by `accumulate` and above).
        unsafe { x86::block(w, patches, len, k4, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        cpu.0.never()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    // the file's own module by its full path (the architecture test reads `super::` in a
    // file as the parent directory's module)
    use crate::int8::dot8::{AddSubParams, LANES, PIXELS};
    use std::arch::x86_64::*;

    /// The mask of the first `min(left, 16)` lanes: a whole vector, or the last block's
    /// remaining channels.
    #[inline]
    fn first_lanes(left: usize) -> __mmask16 {
        if left >= LANES {
            0xFFFF
        } else {
            (1u16 << left) - 1
        }
    }

    /// gemmlowp `SaturatingRoundingDoublingHighMul` on 16 lanes: `a·b / 2^31` rounded half
    /// up, `MIN·MIN` saturated to `MAX` (as `fixed::srdhm`). The reference nudges by `2^30`
    /// (or `1 − 2^30` below zero) and truncates toward zero; both cases equal
    /// `floor((a·b + 2^30) / 2^31)`, one arithmetic shift (for `a·b < 0`,
    /// `trunc((p + 1 − 2^30) / 2^31) = ceil(…) = floor((p + 2^30) / 2^31)`).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    #[inline]
    fn srdhm(a: __m512i, b: __m512i) -> __m512i {
        let high =
            |p: __m512i| _mm512_srai_epi64(_mm512_add_epi64(p, _mm512_set1_epi64(1 << 30)), 31);
        // 64-bit products of the even lanes, then of the odd lanes moved down
        let even = high(_mm512_mul_epi32(a, b));
        let odd = high(_mm512_mul_epi32(
            _mm512_srli_epi64(a, 32),
            _mm512_srli_epi64(b, 32),
        ));
        let r = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
        let min = _mm512_set1_epi32(i32::MIN);
        let both_min = _mm512_cmpeq_epi32_mask(a, min) & _mm512_cmpeq_epi32_mask(b, min);
        _mm512_mask_blend_epi32(both_min, r, _mm512_set1_epi32(i32::MAX))
    }

    /// gemmlowp `RoundingDivideByPOT` on 16 lanes, exponents `e` in `0..=31` (as
    /// `fixed::rdbp`).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    #[inline]
    fn rdbp(x: __m512i, e: __m512i) -> __m512i {
        let one = _mm512_set1_epi32(1);
        let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, e), one);
        let remainder = _mm512_and_si512(x, mask);
        let negative = _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512());
        let threshold = _mm512_mask_add_epi32(
            _mm512_srai_epi32(mask, 1),
            negative,
            _mm512_srai_epi32(mask, 1),
            one,
        );
        let up = _mm512_cmpgt_epi32_mask(remainder, threshold);
        _mm512_mask_add_epi32(_mm512_srav_epi32(x, e), up, _mm512_srav_epi32(x, e), one)
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW, DQ and VL; `x`, `y` and `out` have the same
    /// length, a multiple of 16.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    pub(super) unsafe fn add_sub(x: &[i8], y: &[i8], p: &AddSubParams, out: &mut [i8]) {
        let splat = _mm512_set1_epi32;
        let zero = _mm512_setzero_si512();
        let rescale = |v: __m512i, k: usize| {
            // shifts are <= 0: a right shift by -shift
            rdbp(
                srdhm(v, splat(p.mult[k])),
                _mm512_sub_epi32(zero, splat(p.shift[k])),
            )
        };
        let widen = |v: &[i8], i: usize| {
            // SAFETY: i + 16 <= v.len()
            _mm512_cvtepi8_epi32(unsafe { _mm_loadu_si128(v.as_ptr().add(i) as *const _) })
        };
        let left = _mm512_set1_epi32(p.left_shift);
        let (lo, hi) = (splat(p.act.0), splat(p.act.1));
        for i in (0..out.len()).step_by(LANES) {
            let a = _mm512_sllv_epi32(_mm512_sub_epi32(widen(x, i), splat(p.zp[0])), left);
            let b = _mm512_sllv_epi32(_mm512_sub_epi32(widen(y, i), splat(p.zp[1])), left);
            let (a, b) = (rescale(a, 0), rescale(b, 1));
            let raw = if p.subtract {
                _mm512_sub_epi32(a, b)
            } else {
                _mm512_add_epi32(a, b)
            };
            let v = _mm512_add_epi32(rescale(raw, 2), splat(p.zp[2]));
            let v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
            // SAFETY: 16 bytes at i lie in `out`.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut _, _mm512_cvtepi32_epi8(v)) };
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW, DQ and VL; `bias`, `mult` and `shift` hold the
    /// `ch` values of a row, `out` whole rows of them and `acc` at least as many.
    ///
    /// Channels go 16 at a time in the outer loop (the last block masked), so each block's
    /// per-channel constants are computed once for all rows: the multiplier's odd lanes
    /// moved down, the shifts split into left and right, the rounding divide's mask and
    /// half. `SaturatingRoundingDoublingHighMul` saturates only for `MIN·MIN`; a block
    /// whose multipliers are not `MIN` (every one a quantizer makes) skips that check.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) unsafe fn requantize(
        acc: &[i32],
        bias: &[i32],
        mult: &[i32],
        shift: &[i32],
        zp: i32,
        act: (i32, i32),
        out: &mut [i8],
    ) {
        let ch = bias.len();
        let rows = out.len() / ch;
        let splat = _mm512_set1_epi32;
        let (zero, one) = (_mm512_setzero_si512(), splat(1));
        let (lo, hi, zp) = (splat(act.0), splat(act.1), splat(zp));
        let round = _mm512_set1_epi64(1 << 30);
        for c in (0..ch).step_by(LANES) {
            let lanes = first_lanes(ch - c);
            // SAFETY: the masked lanes of the 16 at c lie in the channel vectors (the
            // masked-off ones are not read).
            let load = |v: &[i32]| unsafe {
                _mm512_maskz_loadu_epi32(lanes, v.as_ptr().add(c) as *const _)
            };
            let (b, q, s) = (load(bias), load(mult), load(shift));
            let q_odd = _mm512_srli_epi64(q, 32);
            let left = _mm512_max_epi32(s, zero);
            let right = _mm512_max_epi32(_mm512_sub_epi32(zero, s), zero);
            let mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
            let half = _mm512_srai_epi32(mask, 1);
            let q_min = _mm512_cmpeq_epi32_mask(q, splat(i32::MIN));
            for row in 0..rows {
                let at = row * ch + c;
                // SAFETY: as above, in row `row` of `acc` (at least `out.len()` long).
                let a =
                    unsafe { _mm512_maskz_loadu_epi32(lanes, acc.as_ptr().add(at) as *const _) };
                let x = _mm512_sllv_epi32(_mm512_add_epi32(a, b), left);
                // SaturatingRoundingDoublingHighMul (see `srdhm`)
                let high = |p: __m512i| _mm512_srai_epi64(_mm512_add_epi64(p, round), 31);
                let even = high(_mm512_mul_epi32(x, q));
                let odd = high(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), q_odd));
                let mut y = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
                if q_min != 0 {
                    let both = q_min & _mm512_cmpeq_epi32_mask(x, splat(i32::MIN));
                    y = _mm512_mask_blend_epi32(both, y, splat(i32::MAX));
                }
                // RoundingDivideByPOT (see `rdbp`)
                let negative = _mm512_cmplt_epi32_mask(y, zero);
                let threshold = _mm512_mask_add_epi32(half, negative, half, one);
                let up = _mm512_cmpgt_epi32_mask(_mm512_and_si512(y, mask), threshold);
                let shifted = _mm512_srav_epi32(y, right);
                let y = _mm512_mask_add_epi32(shifted, up, shifted, one);
                let y = _mm512_add_epi32(y, zp);
                let y = _mm512_min_epi32(_mm512_max_epi32(y, lo), hi);
                // SAFETY: the masked bytes at `at` lie in `out`.
                unsafe {
                    _mm_mask_storeu_epi8(
                        out.as_mut_ptr().add(at) as *mut _,
                        lanes,
                        _mm512_cvtepi32_epi8(y),
                    )
                };
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F, BW, DQ and VL; each tap's `acc.len()` bytes lie in `x`
    /// and `w`.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    #[inline]
    pub(super) unsafe fn depthwise_pixel(
        x: &[i8],
        w: &[i8],
        taps: &[(usize, usize)],
        zp: i32,
        acc: &mut [i32],
    ) {
        let ch = acc.len();
        let zp = _mm512_set1_epi32(zp);
        for c in (0..ch).step_by(LANES) {
            let lanes = first_lanes(ch - c);
            // SAFETY: the masked lanes at `at + c` lie in `v` (checked by the caller).
            let widen = |v: &[i8], at: usize| unsafe {
                _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(
                    lanes,
                    v.as_ptr().add(at + c) as *const _,
                ))
            };
            let mut sum = _mm512_setzero_si512();
            for &(xo, wo) in taps {
                let xv = _mm512_sub_epi32(widen(x, xo), zp);
                sum = _mm512_add_epi32(sum, _mm512_mullo_epi32(xv, widen(w, wo)));
            }
            // SAFETY: the masked lanes at c lie in `acc`.
            unsafe { _mm512_mask_storeu_epi32(acc.as_mut_ptr().add(c) as *mut _, lanes, sum) };
        }
    }

    /// # Safety
    /// The CPU must have AVX-512 F/BW and VNNI; `w` holds `k4 · 64` bytes and `patches`
    /// `PIXELS` patches of `len = k4 · 4` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn block(
        w: &[i8],
        patches: &[u8],
        len: usize,
        k4: usize,
        out: &mut [[i32; LANES]; PIXELS],
    ) {
        let mut a0 = _mm512_setzero_si512();
        let mut a1 = _mm512_setzero_si512();
        let mut a2 = _mm512_setzero_si512();
        let mut a3 = _mm512_setzero_si512();
        let wp = w.as_ptr();
        let pp = patches.as_ptr();
        for g in 0..k4 {
            // SAFETY (all loads): g < k4, so 64 bytes at g·64 lie in `w` and 4 bytes at
            // p·len + g·4 in patch p.
            let wv = unsafe { _mm512_loadu_si512(wp.add(g * 64) as *const _) };
            let x = |p: usize| unsafe {
                _mm512_set1_epi32((pp.add(p * len + g * 4) as *const i32).read_unaligned())
            };
            a0 = _mm512_dpbusd_epi32(a0, x(0), wv);
            a1 = _mm512_dpbusd_epi32(a1, x(1), wv);
            a2 = _mm512_dpbusd_epi32(a2, x(2), wv);
            a3 = _mm512_dpbusd_epi32(a3, x(3), wv);
        }
        for (o, a) in out.iter_mut().zip([a0, a1, a2, a3]) {
            // SAFETY: `o` is 16 i32s, one unaligned 64-byte store.
            unsafe { _mm512_storeu_si512(o.as_mut_ptr() as *mut _, a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// The vector requantization against `fixed::mul_by_quantized`, lane by lane, on
    /// random and extreme accumulators, multipliers (including `MIN`, for the saturation)
    /// and every shift from -31 to 31, for rows of whole and partly filled 16-lane blocks.
    #[test]
    fn vector_requantization_is_the_scalar_one() {
        let Some(cpu) = Vnni::detect() else {
            eprintln!("no AVX-512 VNNI here: nothing to compare");
            return;
        };
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let edges = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30),
            -1,
            0,
            1,
            1 << 30,
            i32::MAX,
        ];
        for (shift, ch) in (-31..=31).flat_map(|s| [(s, 48), (s, 40), (s, 7)]) {
            let mult: Vec<i32> = (0..ch)
                .map(|c| match c % 6 {
                    0 => i32::MIN,
                    1 => i32::MAX,
                    _ => r.random_range(1 << 30..=i32::MAX),
                })
                .collect();
            let shifts = vec![shift; ch];
            let bias = vec![0; ch];
            let acc: Vec<i32> = (0..ch * 3)
                .map(|i| match i % 4 {
                    0 => edges[i / 4 % edges.len()],
                    _ => r.random_range(i32::MIN..=i32::MAX) >> r.random_range(0..31u32),
                })
                .collect();
            let mut out = vec![0i8; ch * 3];
            cpu.requantize(&acc, &bias, &mult, &shifts, 3, (-128, 127), &mut out);
            for (i, (&a, &o)) in acc.iter().zip(&out).enumerate() {
                let c = i % ch;
                let want = fixed::mul_by_quantized(a, mult[c], shift)
                    .wrapping_add(3)
                    .clamp(-128, 127);
                assert_eq!(
                    o as i32, want,
                    "acc {a}, multiplier {}, shift {shift}",
                    mult[c]
                );
            }
        }
    }
}
