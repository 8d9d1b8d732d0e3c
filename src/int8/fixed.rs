//! The fixed-point arithmetic of TFLite's reference kernels, bit for bit.
//!
//! TFLite's default build uses *double rounding* (`TFLITE_SINGLE_ROUNDING` is never set):
//! a real multiplier `m` is stored as `(q, shift)` with `m ≈ q · 2^(shift-31)`, and
//! `x · m` is computed as a saturating rounding doubling high multiply (SRDHM, round half
//! away from zero) followed by a rounding right shift (RDBP, round half away from zero).
//! Softmax uses gemmlowp's fixed-point `exp` and reciprocal, reproduced here with the same
//! constants and the same order of operations.
//!
//! C++'s signed overflow is undefined; LiteRT's builds wrap. Every add and shift that can
//! overflow in the C++ code wraps here too, so no input makes these helpers panic.

/// `frexp`: `x = f · 2^e` with `|f|` in `[0.5, 1)`, for finite non-zero `x` (`(0, 0)` for
/// zero, `(x, 0)` for non-finite values).
pub fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    let bits = x.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    if exp_bits == 0 {
        // subnormal: scale into the normal range first
        let (f, e) = frexp(x * 2f64.powi(64));
        return (f, e - 64);
    }
    let e = exp_bits - 1022;
    let f = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (f, e)
}

/// `QuantizeMultiplier`: `m ≈ q · 2^(shift-31)` with `q` in `[2^30, 2^31)` (or 0). A
/// positive shift is a left shift. Multipliers below `2^-31` flush to `(0, 0)`.
pub fn quantize_multiplier(m: f64) -> (i32, i32) {
    if m == 0.0 {
        return (0, 0);
    }
    let (q, mut shift) = frexp(m);
    let mut q_fixed = (q * (1i64 << 31) as f64).round() as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        shift = 0;
        q_fixed = 0;
    }
    (q_fixed as i32, shift)
}

/// gemmlowp `SaturatingRoundingDoublingHighMul` on i32: `a·b / 2^31` rounded to nearest
/// with ties toward +∞ (the nudge `1 - 2^30` for negative products, then a truncating
/// division), and the one overflowing case `MIN·MIN` saturated.
#[inline]
pub fn srdhm(a: i32, b: i32) -> i32 {
    if a == b && a == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp `RoundingDivideByPOT`: `x / 2^e` rounded to nearest, halves away from zero.
/// `e` must be in `0..=31`.
#[inline]
pub fn rdbp(x: i32, e: i32) -> i32 {
    debug_assert!((0..=31).contains(&e));
    let mask = ((1i64 << e) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> e) + i32::from(remainder > threshold)
}

/// `MultiplyByQuantizedMultiplier` (double rounding): `x · q · 2^(shift-31)`.
/// `shift` must be in `-31..=31` (the kernels' prepare steps check this).
#[inline]
pub fn mul_by_quantized(x: i32, q: i32, shift: i32) -> i32 {
    let left = shift.max(0);
    let right = (-shift).max(0);
    rdbp(
        srdhm(x.wrapping_mul(1i32.wrapping_shl(left as u32)), q),
        right,
    )
}

/// A convolution's int32 accumulator (plus bias) to int8: `MultiplyByQuantizedMultiplier`,
/// the output zero point, the fused activation's clamp.
#[inline]
pub fn requantize(acc: i32, q: i32, shift: i32, out_zp: i32, act: (i32, i32)) -> i8 {
    (mul_by_quantized(acc, q, shift) + out_zp).clamp(act.0, act.1) as i8
}

/// `MultiplyByQuantizedMultiplierSmallerThanOneExp`: `RDBP(SRDHM(x, q), -shift)`, shift <= 0.
#[inline]
pub fn mul_by_quantized_smaller_than_one(x: i32, q: i32, shift: i32) -> i32 {
    rdbp(srdhm(x, q), -shift)
}

/// `MultiplyByQuantizedMultiplierGreaterThanOne`: `SRDHM(x · 2^shift, q)`, shift >= 0.
#[inline]
pub fn mul_by_quantized_greater_than_one(x: i32, q: i32, shift: i32) -> i32 {
    srdhm(x.wrapping_mul(1i32.wrapping_shl(shift as u32)), q)
}

/// gemmlowp's saturating `x · 2^k` for `k` in `1..=31` (`SaturatingRoundingMultiplyByPOT`
/// with a positive exponent).
#[inline]
pub fn saturating_shl(x: i32, k: u32) -> i32 {
    let threshold = ((1i64 << (31 - k)) - 1) as i32;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << k
    }
}

/// gemmlowp `RoundingHalfSum` on i32: `(a + b) / 2`, rounded half away from zero.
#[inline]
pub fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = a as i64 + b as i64;
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// `exp(a)` for `a` in `[-1/4, 0)`, Q0.31 in and out (gemmlowp's Taylor expansion around
/// `-1/8`).
pub fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const EXP_MINUS_ONE_EIGHTH: i32 = 1895147668; // exp(-1/8) in Q0.31
    const ONE_THIRD: i32 = 715827883; // 1/3 in Q0.31
    let x = a.wrapping_add(1 << 28); // a + 1/8
    let x2 = srdhm(x, x);
    let x3 = srdhm(x2, x);
    let x4 = srdhm(x2, x2);
    let x4_over_4 = rdbp(x4, 2);
    let poly = rdbp(
        srdhm(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2),
        1,
    );
    EXP_MINUS_ONE_EIGHTH.wrapping_add(srdhm(EXP_MINUS_ONE_EIGHTH, x.wrapping_add(poly)))
}

/// `exp(a)` for `a <= 0` given in Q5.26, result in Q0.31 (gemmlowp
/// `exp_on_negative_values` with 5 integer bits, as the softmax kernel uses it).
pub fn exp_on_negative_values_q5_26(a: i32) -> i32 {
    const FRACTIONAL_BITS: i32 = 26;
    const ONE_QUARTER: i32 = 1 << (FRACTIONAL_BITS - 2);
    let mask = ONE_QUARTER - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(ONE_QUARTER);
    // Rescale<0> from 5 integer bits: a saturating shift left by 5
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(saturating_shl(
        a_mod_quarter_minus_one_quarter,
        5,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    // exp(-2^k) in Q0.31 for k = -2..=4: the barrel shifter over the integer bits
    const BARREL: [(i32, i32); 7] = [
        (-2, 1672461947),
        (-1, 1302514674),
        (0, 790015084),
        (1, 290630308),
        (2, 39332535),
        (3, 720401),
        (4, 242),
    ];
    for (k, multiplier) in BARREL {
        if remainder & (1 << (FRACTIONAL_BITS + k)) != 0 {
            result = srdhm(result, multiplier);
        }
    }
    if a == 0 {
        result = i32::MAX;
    }
    result
}

/// `1 / (1 + a)` for `a` in `[0, 1)`, Q0.31 in and out (gemmlowp's Newton-Raphson with
/// three iterations in Q2.29).
pub fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    const FORTY_EIGHT_OVER_17: i32 = 1515870810; // Q2.29
    const NEG_THIRTY_TWO_OVER_17: i32 = -1010580540; // Q2.29
    const ONE_Q2_29: i32 = 1 << 29;
    let half_denominator = rounding_half_sum(a, i32::MAX);
    let mut x = FORTY_EIGHT_OVER_17.wrapping_add(srdhm(half_denominator, NEG_THIRTY_TWO_OVER_17));
    for _ in 0..3 {
        let half_denominator_times_x = srdhm(half_denominator, x);
        let one_minus = ONE_Q2_29.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(saturating_shl(srdhm(x, one_minus), 2));
    }
    saturating_shl(x, 1)
}

/// `GetReciprocal`: for a positive Qm.(31-m) value `x` with `m = integer_bits`, returns
/// `(r, num_bits_over_unit)` such that `1/x ≈ r · 2^-num_bits_over_unit` with `r` in Q0.31.
pub fn reciprocal(x: i32, integer_bits: i32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros();
    let num_bits_over_unit = integer_bits - headroom_plus_one as i32;
    let shifted_sum_minus_one = (x as u32)
        .checked_shl(headroom_plus_one)
        .unwrap_or(0)
        .wrapping_sub(1u32 << 31) as i32;
    (
        one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one),
        num_bits_over_unit,
    )
}

// ---- 16-bit variants (HARD_SWISH) --------------------------------------------------------

/// gemmlowp `SaturatingRoundingDoublingHighMul` on i16.
#[inline]
pub fn srdhm16(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    let ab = a as i32 * b as i32;
    let nudge = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((ab + nudge) / (1 << 15)) as i16
}

/// gemmlowp `RoundingDivideByPOT` on i16, `e` in `0..=31`. For `e >= 16` it does what the
/// C++ template does on its int-promoted operands: the mask truncates to all ones and the
/// shift leaves only the sign.
#[inline]
pub fn rdbp16(x: i16, e: i32) -> i16 {
    let mask = ((1i64 << e) - 1) as i16;
    let remainder = x & mask;
    let threshold = (mask >> 1).wrapping_add(i16::from(x < 0));
    (((x as i32) >> e) as i16).wrapping_add(i16::from(remainder > threshold))
}

/// HARD_SWISH's `SaturatingDoublingHighMul`: `a·b / 2^15`, truncated, `MIN·MIN` saturated.
#[inline]
pub fn sdhm16_truncating(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    ((a as i32 * b as i32) / (1 << 15)) as i16
}

/// HARD_SWISH's saturating `value · 2^amount` on i16.
#[inline]
pub fn saturating_shl16(value: i16, amount: i32) -> i16 {
    let r = (value as i64) * (1i64 << amount.clamp(0, 31));
    r.clamp(i16::MIN as i64, i16::MAX as i64) as i16
}

/// `DownScaleInt32ToInt16Multiplier`: rounds a Q0.31 multiplier to Q0.15.
pub fn downscale_multiplier_to_i16(m: i32) -> i16 {
    const ROUNDING: i32 = 1 << 15;
    if m >= i32::MAX - ROUNDING {
        return i16::MAX;
    }
    ((m + ROUNDING) >> 16) as i16
}

// ---- float helpers with TFLite's rounding ------------------------------------------------

/// `zero_point + (int)round(f / scale)`, in float32 (`kernel_util.cc` `Quantize`; the fused
/// activation range and standalone RELU bounds use it). `None` when out of `i32` range.
pub fn quantize_f32(f: f32, scale: f32, zero_point: i32) -> Option<i32> {
    let t = (f / scale).round();
    if !(t >= i32::MIN as f32 && t <= i32::MAX as f32) {
        return None;
    }
    Some(zero_point.wrapping_add(t as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_matches_the_c_library() {
        assert_eq!(frexp(1.0), (0.5, 1));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(-3.0), (-0.75, 2));
        assert_eq!(frexp(0.1), (0.8, -3));
        let tiny = f64::from_bits(1); // the smallest subnormal, 2^-1074
        assert_eq!(frexp(tiny), (0.5, -1073));
    }

    #[test]
    fn quantize_multiplier_by_hand() {
        // 0.5 = 0.5 * 2^0 -> q = 2^30, shift 0
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        // 1.0 = 0.5 * 2^1
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        // 0.75 * 2^-2 = 0.1875: q = 0.75 * 2^31 = 1610612736
        assert_eq!(quantize_multiplier(0.1875), (1610612736, -2));
        // f*2^31 rounding up to 2^31 renormalizes: f = 1 - 2^-40
        assert_eq!(quantize_multiplier(1.0 - 2f64.powi(-40)), (1 << 30, 1));
        // below 2^-31 flushes to zero
        assert_eq!(quantize_multiplier(2f64.powi(-33)), (0, 0));
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        // 0.1: frexp = (0.8, -3); 0.8 * 2^31 = 1717986918.4 -> 1717986918
        assert_eq!(quantize_multiplier(0.1), (1717986918, -3));
    }

    #[test]
    fn srdhm_by_hand() {
        // 2^30 is 0.5 in Q0.31: x * 0.5
        assert_eq!(srdhm(100, 1 << 30), 50);
        // 101 * 0.5 = 50.5 -> 51; ties go toward +inf, so -50.5 -> -50:
        // (-101·2^30 + 1 - 2^30) / 2^31 = -51 + 2^-31, truncated toward zero
        assert_eq!(srdhm(101, 1 << 30), 51);
        assert_eq!(srdhm(-101, 1 << 30), -50);
        assert_eq!(srdhm(-99, 1 << 30), -49);
        // not a tie: -100.75 -> -101
        assert_eq!(srdhm(-403, 1 << 29), -101);
        // the only overflow
        assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(srdhm(i32::MIN, i32::MAX), -2147483647);
    }

    #[test]
    fn rdbp_rounds_half_away_from_zero() {
        assert_eq!(rdbp(5, 1), 3); // 2.5 -> 3
        assert_eq!(rdbp(-5, 1), -3); // -2.5 -> -3
        assert_eq!(rdbp(7, 2), 2); // 1.75 -> 2
        assert_eq!(rdbp(-7, 2), -2);
        assert_eq!(rdbp(6, 2), 2); // 1.5 -> 2
        assert_eq!(rdbp(-6, 2), -2); // -1.5 -> -2
        assert_eq!(rdbp(-5, 2), -1); // -1.25 -> -1
        assert_eq!(rdbp(12345, 0), 12345);
        assert_eq!(rdbp(i32::MAX, 31), 1);
        assert_eq!(rdbp(i32::MIN, 31), -1);
    }

    #[test]
    fn multiply_by_quantized_multiplier_by_hand() {
        // x * 0.1875: (1610612736, -2); 1000 * 0.1875 = 187.5 -> 188
        let (q, s) = quantize_multiplier(0.1875);
        assert_eq!(mul_by_quantized(1000, q, s), 188);
        assert_eq!(mul_by_quantized(-1000, q, s), -188);
        // a multiplier above one: 3.0 = 0.75 * 2^2 -> x*4 then *0.75
        let (q, s) = quantize_multiplier(3.0);
        assert_eq!((q, s), (1610612736, 2));
        assert_eq!(mul_by_quantized(7, q, s), 21);
        // 0.3 = 0.6 * 2^-1: SRDHM(5, round(0.6*2^31)) = round(3.0000000002) = 3, then the
        // rounding shift RDBP(3, 1) = round(1.5) = 2
        let (q, s) = quantize_multiplier(0.3);
        assert_eq!(s, -1);
        assert_eq!(mul_by_quantized(5, q, s), 2);
    }

    #[test]
    fn exp_and_reciprocal_track_the_real_functions() {
        // exp(0) saturates to 1.0 - 2^-31
        assert_eq!(exp_on_negative_values_q5_26(0), i32::MAX);
        for &x in &[-0.01f64, -0.2, -0.25, -0.5, -1.0, -2.0, -3.7, -8.0, -15.9] {
            let raw = (x * (1u64 << 26) as f64).round() as i32;
            let got = exp_on_negative_values_q5_26(raw) as f64 / 2f64.powi(31);
            assert!((got - x.exp()).abs() < 1e-6, "exp({x}) = {got}");
        }
        // 1/(1+x) on [0, 1)
        for &x in &[0.0f64, 0.1, 0.5, 0.9, 0.999] {
            let raw = (x * 2f64.powi(31)).round() as i32;
            let got = one_over_one_plus_x_for_x_in_0_1(raw) as f64 / 2f64.powi(31);
            assert!((got - 1.0 / (1.0 + x)).abs() < 1e-8, "1/(1+{x}) = {got}");
        }
        // reciprocal of 3.0 in Q12.19: 3 = 1.5 * 2^1, so 1/3 = (1/1.5) * 2^-1
        let (r, bits) = reciprocal(3 << 19, 12);
        assert_eq!(bits, 1);
        assert!((r as f64 / 2f64.powi(31) - 2.0 / 3.0).abs() < 1e-8);
    }

    #[test]
    fn sixteen_bit_helpers() {
        assert_eq!(srdhm16(100, 1 << 14), 50);
        assert_eq!(srdhm16(i16::MIN, i16::MIN), i16::MAX);
        assert_eq!(rdbp16(-5, 1), -3);
        assert_eq!(sdhm16_truncating(3, 1 << 14), 1); // 1.5 truncated
        assert_eq!(saturating_shl16(20000, 1), i16::MAX);
        assert_eq!(saturating_shl16(-20000, 1), i16::MIN);
        assert_eq!(downscale_multiplier_to_i16(1 << 30), 1 << 14);
        assert_eq!(downscale_multiplier_to_i16(i32::MAX), i16::MAX);
    }

    #[test]
    fn float_quantize_rounds_half_away() {
        assert_eq!(quantize_f32(6.0, 0.5, -10), Some(2));
        assert_eq!(quantize_f32(0.25, 0.5, 0), Some(1)); // 0.5 -> 1
        assert_eq!(quantize_f32(-0.25, 0.5, 0), Some(-1));
        assert_eq!(quantize_f32(1e30, 1e-10, 0), None);
    }
}
