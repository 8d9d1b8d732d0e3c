//! Fake-quant arithmetic, exactly as `tf.quantization.fake_quant_with_min_max_vars` and its
//! per-channel twin compute it (all in f32), plus TFMOT's symmetric range widening.
//!
//! 1. The range is widened to be symmetric if asked (TFMOT `quant_ops`: narrow ranges use
//!    the ratio -1, full ranges `-(2^b - 2) / 2^b`).
//! 2. It is *nudged* so that 0.0 falls exactly on an integer level: `scale = (max-min) /
//!    (qmax-qmin)`, `zp = round(qmin - min/scale)` clamped to `[qmin, qmax]`.
//! 3. `q(x) = (floor((clamp(x, nmin, nmax) - nmin) * inv_scale - quant_zero + 0.5)) * scale`
//!    with `quant_zero = floor(-nmin * inv_scale + 0.5)`: current TF's formula, whose result
//!    is always an exact multiple of `scale` — exactly what int8 dequantization gives.
//! 4. The gradient is straight-through inside `[nmin, nmax]` and zero outside.
//! 5. A learned range ([`RangeLearning`]) gets a gradient too: see [`range_grad`].

use crate::ir::op::{FakeQuantAttrs, RangeEnd, RangeLearning};

/// A nudged range: what one fake-quant channel computes with, and what TFLite stores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nudged {
    /// The nudged minimum, `(qmin - zero_point) · scale`: the lowest representable value.
    pub min: f32,
    /// The nudged maximum, `(qmax - zero_point) · scale`: the highest representable value.
    pub max: f32,
    /// The step between levels, `(max - min) / (qmax - qmin)` of the range before nudging.
    pub scale: f32,
    /// `(qmax - qmin) / (max - min)`, computed directly as TF does (not `1 / scale`).
    pub inv_scale: f32,
    /// The integer level of 0.0, in `[qmin, qmax]`.
    pub zero_point: i32,
}

/// The smallest range width qatc accepts; a constant tensor gets `[0, MIN_RANGE]` instead of
/// a zero scale (which TFLite rejects and TF turns into NaN).
pub const MIN_RANGE: f32 = 1e-6;

/// Widens `[min, max]` to the symmetric range TFMOT uses for symmetric quantizers. A range
/// narrower than [`MIN_RANGE`] (an all-zero weight, such as a fresh PReLU slope) becomes
/// `±MIN_RANGE`, so that zero stays the middle level (TFLite's weights need zero point 0).
pub fn symmetric_range(min: f32, max: f32, bits: u8, narrow: bool) -> (f32, f32) {
    let ratio = symmetric_ratio(bits, narrow);
    let (lo, hi) = (min.min(max / ratio), max.max(min / ratio));
    if hi - lo < MIN_RANGE {
        return symmetric_range(-MIN_RANGE, MIN_RANGE, bits, narrow);
    }
    (lo, hi)
}

/// `lo / hi` of a symmetric range: -1 for narrow ranges, `-(2^b - 2) / 2^b` for full ones.
pub fn symmetric_ratio(bits: u8, narrow: bool) -> f32 {
    if narrow {
        -1.0
    } else {
        let levels = (1u32 << bits) as f32;
        -(levels - 2.0) / levels
    }
}

/// TF's `Nudge` with `quant_min = qmin`, `quant_max = qmax`.
pub fn nudge(min: f32, max: f32, qmin: i32, qmax: i32) -> Nudged {
    let (min, max) = if max - min < MIN_RANGE {
        (min.min(0.0), min.min(0.0) + MIN_RANGE)
    } else {
        (min, max)
    };
    let qmin_f = qmin as f32;
    let qmax_f = qmax as f32;
    let scale = (max - min) / (qmax_f - qmin_f);
    let inv_scale = (qmax_f - qmin_f) / (max - min);
    let zp_from_min = qmin_f - min / scale;
    let zero_point = if zp_from_min < qmin_f {
        qmin
    } else if zp_from_min > qmax_f {
        qmax
    } else {
        zp_from_min.round() as i32
    };
    Nudged {
        min: (qmin_f - zero_point as f32) * scale,
        max: (qmax_f - zero_point as f32) * scale,
        scale,
        inv_scale,
        zero_point,
    }
}

/// The nudged range a fake-quant with attributes `q` uses for the raw range `[min, max]`.
pub fn nudged_for(q: &FakeQuantAttrs, min: f32, max: f32) -> Nudged {
    let (min, max) = if q.symmetric {
        symmetric_range(min, max, q.bits, q.narrow)
    } else {
        (min, max)
    };
    let (qmin, qmax) = q.quant_range();
    nudge(min, max, qmin, qmax)
}

/// Fake-quantizes one value.
#[inline]
pub fn fake_quant(x: f32, n: &Nudged) -> f32 {
    let quant_zero = (-n.min * n.inv_scale + 0.5).floor();
    let clamped = x.clamp(n.min, n.max);
    ((clamped - n.min) * n.inv_scale - quant_zero + 0.5).floor() * n.scale
}

/// The straight-through gradient mask of one value: 1 inside the nudged range, else 0.
#[inline]
pub fn fake_quant_mask(x: f32, n: &Nudged) -> f32 {
    if x >= n.min && x <= n.max {
        1.0
    } else {
        0.0
    }
}

/// How a symmetric quantizer's widened range depends on its raw ends: `hi` is `max` (else
/// `min / ratio`), `lo` is `min` (else `max / ratio`), as [`symmetric_range`] widens.
#[derive(Clone, Copy, Debug)]
pub struct SymmetricRoute {
    /// `hi == max`.
    pub hi_is_max: bool,
    /// `lo == min`.
    pub lo_is_min: bool,
    /// [`symmetric_ratio`].
    pub ratio: f32,
}

impl SymmetricRoute {
    /// The route of raw range `[min, max]` under quantizer `q` (`None` when `q` is not
    /// symmetric: the ends are the raw ones).
    pub fn of(q: &FakeQuantAttrs, min: f32, max: f32) -> Option<SymmetricRoute> {
        q.symmetric.then(|| {
            let ratio = symmetric_ratio(q.bits, q.narrow);
            SymmetricRoute {
                hi_is_max: max >= min / ratio,
                lo_is_min: min <= max / ratio,
                ratio,
            }
        })
    }
}

/// One element's contribution to the gradient of range end `end` of a learned quantizer
/// ([`RangeLearning`]), for input `x` with upstream gradient `dy` on nudged range `n`:
/// below the range it goes to `min`, above it to `max`, inside (LSQ only) `±dy · (round(u) -
/// u) / L` with `u` the input's position in steps. A symmetric quantizer's widened ends
/// pass theirs to the raw end they come from (`route`). The rounding is the forward's.
pub fn range_grad(
    q: &FakeQuantAttrs,
    n: &Nudged,
    route: Option<SymmetricRoute>,
    x: f32,
    dy: f32,
    end: RangeEnd,
    method: RangeLearning,
) -> f32 {
    let (qmin, qmax) = q.quant_range();
    let steps = (qmax - qmin) as f32;
    let (d_lo, d_hi) = if x < n.min {
        (dy, 0.0)
    } else if x > n.max {
        (0.0, dy)
    } else {
        match method {
            RangeLearning::Pact => (0.0, 0.0),
            RangeLearning::Lsq => {
                let u = (x - n.min) * n.inv_scale;
                let e = (u + 0.5).floor() - u;
                (-dy * e / steps, dy * e / steps)
            }
        }
    };
    match (route, end) {
        (None, RangeEnd::Min) => d_lo,
        (None, RangeEnd::Max) => d_hi,
        (Some(r), RangeEnd::Min) => {
            let from_lo = if r.lo_is_min { d_lo } else { 0.0 };
            let from_hi = if r.hi_is_max { 0.0 } else { d_hi / r.ratio };
            from_lo + from_hi
        }
        (Some(r), RangeEnd::Max) => {
            let from_hi = if r.hi_is_max { d_hi } else { 0.0 };
            let from_lo = if r.lo_is_min { 0.0 } else { d_lo / r.ratio };
            from_hi + from_lo
        }
    }
}

/// LSQ's gradient scale `1 / sqrt(n · qmax)` for a range that quantizes `n` elements per
/// sample, `qmax` the largest level's distance from zero in steps.
pub fn lsq_grad_scale(q: &FakeQuantAttrs, elements: usize) -> f32 {
    let (qmin, qmax) = q.quant_range();
    let levels = if q.symmetric {
        (qmax - qmin) / 2
    } else {
        qmax - qmin
    };
    1.0 / ((elements.max(1) as f32) * levels.max(1) as f32).sqrt()
}

/// Per-channel raw ranges of `data` (row-major `shape`) along `axis`, or the whole-tensor
/// range: `(min(min(x), 0), max(max(x), 0))`, TFMOT's LastValue / batch statistic.
pub fn observe_range(data: &[f32], shape: &[usize], axis: Option<usize>) -> Vec<(f32, f32)> {
    match axis {
        None => {
            let lo = data.iter().copied().fold(0.0f32, f32::min);
            let hi = data.iter().copied().fold(0.0f32, f32::max);
            vec![(lo, hi)]
        }
        Some(a) => {
            let c = shape[a];
            let inner: usize = shape[a + 1..].iter().product();
            let mut r = vec![(0.0f32, 0.0f32); c];
            for (i, &v) in data.iter().enumerate() {
                let ch = (i / inner) % c;
                r[ch].0 = r[ch].0.min(v);
                r[ch].1 = r[ch].1.max(v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::FakeQuantAttrs;

    fn act8() -> FakeQuantAttrs {
        FakeQuantAttrs::activation("t")
    }

    // Values worked out by hand from TF's formulas.

    #[test]
    fn unit_range_8bit() {
        // [0, 1], 256 levels: scale 1/255, zero point 0.
        let n = nudged_for(&act8(), 0.0, 1.0);
        assert_eq!(n.zero_point, 0);
        assert_eq!(n.scale, 1.0 / 255.0);
        assert_eq!((n.min, n.max), (0.0, 1.0));
        // 0.5 -> level floor(127.5 + 0.5) = 128 -> 128/255
        assert_eq!(fake_quant(0.5, &n), 128.0 * (1.0 / 255.0));
        assert_eq!(fake_quant(2.0, &n), 1.0);
        assert_eq!(fake_quant(-1.0, &n), 0.0);
    }

    #[test]
    fn range_not_containing_an_integer_zero_is_nudged() {
        // [-0.1, 1.0]: scale 1.1/255 = 0.0043137; zp_from_min = 0.1/scale = 23.18 -> 23;
        // nudged min = -23*scale = -0.099215686, nudged max = 232*scale = 1.0007843.
        let n = nudged_for(&act8(), -0.1, 1.0);
        assert_eq!(n.zero_point, 23);
        let s = 1.1f32 / 255.0;
        assert!((n.min - (-23.0 * s)).abs() < 1e-7);
        assert!((n.max - 232.0 * s).abs() < 1e-6);
        // zero is exactly representable
        assert_eq!(fake_quant(0.0, &n), 0.0);
        // -0.1 is outside the nudged range: clamped to nudged min, gradient 0
        assert_eq!(fake_quant(-0.1, &n), n.min);
        assert_eq!(fake_quant_mask(-0.1, &n), 0.0);
        assert_eq!(fake_quant_mask(0.5, &n), 1.0);
    }

    #[test]
    fn narrow_symmetric_weights() {
        // TFMOT weights: [-0.5, 0.25] widens to [-0.5, 0.5]; narrow 8-bit: levels 1..255,
        // zero point 128, scale 1/254 (0.5/127).
        let w = FakeQuantAttrs::weight(None);
        let n = nudged_for(&w, -0.5, 0.25);
        assert_eq!(n.zero_point, 128);
        assert!((n.scale - 0.5 / 127.0).abs() < 1e-9);
        assert!((n.min + 0.5).abs() < 1e-6 && (n.max - 0.5).abs() < 1e-6);
        // 0.3 -> 0.3*254 = 76.2 -> level 76 above zero -> 76/254
        let q = fake_quant(0.3, &n);
        assert!((q - 76.0 * n.scale).abs() < 1e-6, "{q}");
    }

    #[test]
    fn four_bit_activation() {
        // [0, 1.5], 16 levels: scale 0.1; 0.26 -> floor(2.6+0.5)=3 -> 0.3
        let mut a = act8();
        a.bits = 4;
        let n = nudged_for(&a, 0.0, 1.5);
        assert!((n.scale - 0.1).abs() < 1e-7);
        assert!((fake_quant(0.26, &n) - 0.3).abs() < 1e-6);
        // 2-bit: 4 levels over [0, 3]: 1.4 -> 1.0, 1.6 -> 2.0
        a.bits = 2;
        let n = nudged_for(&a, 0.0, 3.0);
        assert_eq!(fake_quant(1.4, &n), 1.0);
        assert_eq!(fake_quant(1.6, &n), 2.0);
    }

    #[test]
    fn full_range_symmetric_uses_tfmot_ratio() {
        // non-narrow 8-bit symmetric: ratio -254/256; [-1, 0.5] -> min(-1, 0.5/-0.9921875),
        // max(0.5, -1/-0.9921875) = [-1, 1.007874]
        let (lo, hi) = symmetric_range(-1.0, 0.5, 8, false);
        assert_eq!(lo, -1.0);
        assert!((hi - 1.0 / (254.0 / 256.0)).abs() < 1e-6);
    }

    #[test]
    fn outputs_equal_int8_dequantization_exactly() {
        // TF's current formula gives (level - zero_point) * scale with no residue from adding
        // nudged_min, so int8 export reproduces fake-quant values bit for bit.
        let n = nudged_for(&act8(), -0.37, 1.91);
        for i in 0..2000 {
            let x = -0.5 + i as f32 * 0.00123;
            let y = fake_quant(x, &n);
            let level = (y / n.scale).round();
            assert_eq!(y, level * n.scale, "x = {x}");
            assert!((-(n.zero_point as f32)..=(255 - n.zero_point) as f32).contains(&level));
        }
    }

    #[test]
    fn degenerate_range_is_widened_not_nan() {
        let n = nudged_for(&act8(), 0.0, 0.0);
        assert!(n.scale > 0.0 && n.scale.is_finite());
        assert_eq!(fake_quant(0.0, &n), 0.0);
    }

    /// A fresh PReLU's slope is all zeros: its symmetric weight grid must stay centred on
    /// zero (zero point 0), or TFLite's weight range check refuses the export.
    #[test]
    fn an_all_zero_weight_keeps_zero_point_zero() {
        let w = FakeQuantAttrs::weight(None);
        let n = nudged_for(&w, 0.0, 0.0);
        // the same zero level as any symmetric weight range, i.e. int8 zero point 0
        assert_eq!(n.zero_point, nudged_for(&w, -1.0, 1.0).zero_point);
        assert_eq!(n.min, -n.max);
        assert!(n.scale > 0.0 && n.scale.is_finite());
        assert_eq!(fake_quant(0.0, &n), 0.0);
    }

    #[test]
    fn per_axis_observation() {
        // shape [2, 3] along axis 0: rows [1,-2,3] and [0.5,0.25,0]
        let r = observe_range(&[1.0, -2.0, 3.0, 0.5, 0.25, 0.0], &[2, 3], Some(0));
        assert_eq!(r, vec![(-2.0, 3.0), (0.0, 0.5)]);
        // along axis 1 (columns)
        let r = observe_range(&[1.0, -2.0, 3.0, 0.5, 0.25, 0.0], &[2, 3], Some(1));
        assert_eq!(r, vec![(0.0, 1.0), (-2.0, 0.25), (0.0, 3.0)]);
        assert_eq!(observe_range(&[2.0, 3.0], &[2], None), vec![(0.0, 3.0)]);
    }

    /// LSQ's surrogate of a fake-quant as a function of its raw range, the rounding error
    /// frozen at `(min0, max0)` (the straight-through estimator): `clamp(x, lo, hi) +
    /// s(lo, hi) · (round(u0) - u0)`, `lo, hi` the (widened) ends. Its finite differences
    /// are what [`range_grad`] must give.
    fn surrogate(
        q: &FakeQuantAttrs,
        x: f32,
        (min0, max0): (f32, f32),
        (min, max): (f64, f64),
    ) -> f64 {
        let n0 = nudged_for(q, min0, max0);
        let u0 = (x.clamp(n0.min, n0.max) - n0.min) * n0.inv_scale;
        let e0 = ((u0 + 0.5).floor() - u0) as f64;
        let (lo, hi) = if q.symmetric {
            let r = symmetric_ratio(q.bits, q.narrow) as f64;
            (min.min(max / r), max.max(min / r))
        } else {
            (min, max)
        };
        let (qmin, qmax) = q.quant_range();
        let step = (hi - lo) / (qmax - qmin) as f64;
        (x as f64).clamp(lo, hi) + step * e0
    }

    #[test]
    fn range_gradients_are_the_derivatives_of_the_lsq_surrogate() {
        // ranges where nudging moves nothing (0 on a level): a ReLU output's [0, max], and
        // narrow symmetric weights, whose widened range comes from either end
        let relu = FakeQuantAttrs { bits: 4, ..act8() };
        let weight = FakeQuantAttrs {
            bits: 4,
            ..FakeQuantAttrs::weight(None)
        };
        let cases = [
            (relu.clone(), 0.0f32, 2.3f32),
            (weight.clone(), -0.7, 1.1),
            (weight.clone(), -1.3, 0.4),
        ];
        let h = 1e-3f64;
        for (q, min, max) in cases {
            let n = nudged_for(&q, min, max);
            assert!((n.min - min.min(-max.max(0.0))).abs() < 1e-6 || !q.symmetric);
            let route = SymmetricRoute::of(&q, min, max);
            for k in 0..60 {
                // inside, below and above the range, never within h of a level's edge
                let x = -2.0 + 4.0 * (k as f32 + 0.37) / 60.0;
                for (end, method) in [
                    (RangeEnd::Min, RangeLearning::Lsq),
                    (RangeEnd::Max, RangeLearning::Lsq),
                    (RangeEnd::Min, RangeLearning::Pact),
                    (RangeEnd::Max, RangeLearning::Pact),
                ] {
                    let got = range_grad(&q, &n, route, x, 1.0, end, method) as f64;
                    let at = |d: f64| {
                        let (a, b) = match end {
                            RangeEnd::Min => (min as f64 + d, max as f64),
                            RangeEnd::Max => (min as f64, max as f64 + d),
                        };
                        surrogate(&q, x, (min, max), (a, b))
                    };
                    let numeric = (at(h) - at(-h)) / (2.0 * h);
                    let inside = x > n.min && x < n.max;
                    let want = match method {
                        RangeLearning::Lsq => numeric,
                        // PACT keeps only the clipping part: nothing for inputs inside
                        RangeLearning::Pact if inside => 0.0,
                        RangeLearning::Pact => numeric,
                    };
                    assert!(
                        (got - want).abs() < 1e-3,
                        "{q:?} [{min}, {max}] x={x} {end:?} {method:?}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn lsq_gradient_scale_is_one_over_sqrt_of_elements_times_levels() {
        let w4 = FakeQuantAttrs {
            bits: 4,
            ..FakeQuantAttrs::weight(Some(0))
        };
        // narrow symmetric 4 bits: levels -7..7, Qp = 7
        assert_eq!(lsq_grad_scale(&w4, 28), 1.0 / 14.0);
        // asymmetric 8 bits: Qp = 255
        assert_eq!(lsq_grad_scale(&act8(), 1), 1.0 / 255f32.sqrt());
    }
}
