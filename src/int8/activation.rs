//! Activations on int8 (LiteRT `activations.cc` and the reference kernels it calls):
//! RELU / RELU6 / RELU_N1_TO_1 (`ReluX`), LEAKY_RELU (`QuantizeLeakyRelu`), PRELU
//! (`reference_ops::BroadcastPrelu4DSlow`), HARD_SWISH
//! (`reference_ops::HardSwish`, 16-bit fixed point), LOGISTIC and TANH (a float lookup
//! table, `LUTPopulateInt8`, in both the reference and the optimized resolver) and SOFTMAX
//! (`reference_ops::Softmax`: gemmlowp fixed-point exp and reciprocal).

use super::array::Array;
use super::binary::broadcast_map;
use super::context::{constant, int8_params, multiplier, unary_int8, Ctx, PResult};
use super::fixed::{
    downscale_multiplier_to_i16, exp_on_negative_values_q5_26, mul_by_quantized,
    mul_by_quantized_greater_than_one, quantize_multiplier, rdbp, rdbp16, reciprocal,
    saturating_shl16, sdhm16_truncating, srdhm, srdhm16,
};
use crate::tflite::model::Options;
use crate::tflite::schema::BuiltinOperator as B;

fn map_i8(x: &Array, f: impl Fn(i8) -> i8) -> PResult<Array> {
    let xd = x.as_i8().ok_or("the input is not INT8")?;
    Ok(Array::i8(x.shape.clone(), xd.iter().map(|&v| f(v)).collect()).expect("same size"))
}

/// RELU, RELU6 and RELU_N1_TO_1: requantize by `in_s/out_s` (a float32 division), then
/// clamp to the quantized bounds `zp + roundf(bound / out_s)`.
#[derive(Clone, Debug)]
pub struct Relu {
    in_zp: i32,
    out_zp: i32,
    mult: i32,
    shift: i32,
    lo: i32,
    hi: i32,
}

impl Relu {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Relu> {
        let ((in_s, in_zp), (out_s, out_zp)) = unary_int8(cx)?;
        let (lo, hi) = match cx.op.code {
            B::RELU => (0.0f32, None),
            B::RELU6 => (0.0, Some(6.0f32)),
            _ => (-1.0, Some(1.0)),
        };
        let bound = |f: f32| out_zp as i64 + (f / out_s).round() as i64;
        let lo = bound(lo).max(-128) as i32;
        let hi = hi.map_or(127, |h| bound(h).min(127) as i32);
        let (mult, shift) = multiplier((in_s / out_s) as f64, "output")?;
        Ok(Relu {
            in_zp,
            out_zp,
            mult,
            shift,
            lo,
            hi,
        })
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        map_i8(x, |v| {
            let y = self.out_zp + mul_by_quantized(v as i32 - self.in_zp, self.mult, self.shift);
            y.max(self.lo).min(self.hi) as i8
        })
    }
}

/// LEAKY_RELU: two multipliers, `in_s/out_s` for non-negative inputs and
/// `in_s·alpha/out_s` for negative ones (both float32 products, as LiteRT computes them).
#[derive(Clone, Debug)]
pub struct LeakyRelu {
    in_zp: i32,
    out_zp: i32,
    identity: (i32, i32),
    alpha: (i32, i32),
}

impl LeakyRelu {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<LeakyRelu> {
        let ((in_s, in_zp), (out_s, out_zp)) = unary_int8(cx)?;
        let Options::LeakyRelu { alpha } = cx.op.options else {
            return Err("has no LeakyReluOptions".into());
        };
        Ok(LeakyRelu {
            in_zp,
            out_zp,
            identity: multiplier((in_s / out_s) as f64, "identity")?,
            alpha: multiplier((in_s * alpha / out_s) as f64, "alpha")?,
        })
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let negative_alpha = self.alpha.0 < 0;
        let alpha_mult = self.alpha.0.wrapping_abs();
        map_i8(x, |v| {
            let input = v as i32 - self.in_zp;
            let delta = if input >= 0 {
                mul_by_quantized(input, self.identity.0, self.identity.1)
            } else {
                let scaled = mul_by_quantized(input, alpha_mult, self.alpha.1);
                if negative_alpha {
                    scaled.wrapping_neg()
                } else {
                    scaled
                }
            };
            self.out_zp.wrapping_add(delta).clamp(-128, 127) as i8
        })
    }
}

/// PRELU `(x, alpha)`: for `x - in_zp >= 0` requantize by `in_s/out_s`, else multiply by
/// `alpha - alpha_zp` and requantize by `in_s·alpha_s/out_s` (float32 products, as LiteRT's
/// `PreluPrepare`); the slope broadcasts against the input.
#[derive(Clone, Debug)]
pub struct Prelu {
    in_zp: i32,
    alpha_zp: i32,
    out_zp: i32,
    positive: (i32, i32),
    negative: (i32, i32),
    /// The constant slope, as stored.
    alpha: Array,
}

impl Prelu {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Prelu> {
        cx.inputs_between(2, 2)?;
        let (in_s, in_zp) = int8_params(cx.input(0)?)?;
        let (out_s, out_zp) = int8_params(cx.output()?)?;
        let alpha_t = cx.input(1)?;
        let (alpha_s, alpha_zp) = int8_params(alpha_t)?;
        let alpha = constant(alpha_t, "alpha")?;
        if alpha.as_i8().is_none() {
            return Err("the alpha tensor is not INT8".into());
        }
        Ok(Prelu {
            in_zp,
            alpha_zp,
            out_zp,
            positive: multiplier((in_s / out_s) as f64, "positive")?,
            negative: multiplier((in_s * alpha_s / out_s) as f64, "negative")?,
            alpha,
        })
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let ad = self.alpha.as_i8().ok_or("the alpha tensor is not INT8")?;
        let (shape, data) = broadcast_map(xd, &x.shape, ad, &self.alpha.shape, |v, a| {
            let input = v as i32 - self.in_zp;
            let y = if input >= 0 {
                mul_by_quantized(input, self.positive.0, self.positive.1)
            } else {
                let slope = a as i32 - self.alpha_zp;
                mul_by_quantized(input * slope, self.negative.0, self.negative.1)
            };
            (y + self.out_zp).clamp(-128, 127) as i8
        })?;
        if shape != x.shape {
            return Err(format!(
                "alpha {:?} does not broadcast to the input {:?}",
                self.alpha.shape, x.shape
            )
            .into());
        }
        Ok(Array::i8(shape, data).expect("one value per element"))
    }
}

/// HARD_SWISH `x·relu6(x+3)/6` in 16-bit fixed point: the input on a "hires" scale
/// `in_s/128`, one multiplier to the output scale and one to the "reluish" scale `3/32768`,
/// both rounded to Q0.15.
#[derive(Clone, Debug)]
pub struct HardSwish {
    in_zp: i32,
    out_zp: i16,
    out_mult: i16,
    out_exp: i32,
    reluish_mult: i16,
    reluish_exp: i32,
}

impl HardSwish {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<HardSwish> {
        let ((in_s, in_zp), (out_s, out_zp)) = unary_int8(cx)?;
        let hires = (1.0f32 / 128.0) * in_s;
        let (om, oe) = quantize_multiplier((hires / out_s) as f64);
        if oe > 0 {
            return Err(format!(
                "the output multiplier {} exceeds 1 (output scale {out_s} is too small for \
                 input scale {in_s})",
                hires / out_s
            )
            .into());
        }
        let (rm, re) = quantize_multiplier((hires / (3.0f32 / 32768.0)) as f64);
        if re > 30 {
            return Err(format!("the input scale {in_s} is too large").into());
        }
        if om < 0 || rm < 0 {
            return Err("negative multipliers".into());
        }
        Ok(HardSwish {
            in_zp,
            out_zp: out_zp as i16,
            out_mult: downscale_multiplier_to_i16(om),
            out_exp: oe,
            reluish_mult: downscale_multiplier_to_i16(rm),
            reluish_exp: re,
        })
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        map_i8(x, |v| {
            let input = (v as i32 - self.in_zp) as i16;
            let hires = (input as i32 * (1 << 7)) as i16;
            let preshift_out = srdhm16(hires, self.out_mult);
            let mut reluish = hires;
            if self.reluish_exp > 0 {
                reluish = saturating_shl16(reluish, self.reluish_exp - 1);
            }
            reluish = srdhm16(reluish, self.reluish_mult);
            if self.reluish_exp > 0 {
                reluish = saturating_shl16(reluish, 1);
            }
            if self.reluish_exp < 0 {
                reluish = rdbp16(reluish, -self.reluish_exp);
            }
            let reluish = ((reluish as i32 + (1 << 15)) >> 1) as i16;
            let preshift = sdhm16_truncating(reluish, preshift_out);
            let out = rdbp16(preshift, -self.out_exp).wrapping_add(self.out_zp);
            out.clamp(-128, 127) as i8
        })
    }
}

/// LOGISTIC and TANH: a 256-entry table computed in float32 (`in_s·(q - in_zp)`, the
/// function, `round(y / out_s) + out_zp`, clamped), as LiteRT's `LUTPopulateInt8`.
/// LOGISTIC requires the output scale to be exactly 1/256.
///
/// Rust's `f32::exp` and `f32::tanh` call the platform libm's `expf` / `tanhf`, as LiteRT's
/// `std::exp` / `std::tanh` on floats do; on x86-64 Linux the tables equal
/// `ai-edge-litert` 2.3's on all 256 levels (`tests/tflite_interop.rs` feeds every level).
/// Another libm could differ in the last bit of a table entry.
#[derive(Clone, Debug)]
pub struct Lut {
    table: Vec<i8>,
}

fn logistic(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

impl Lut {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Lut> {
        let ((in_s, in_zp), (out_s, out_zp)) = unary_int8(cx)?;
        let f: fn(f32) -> f32 = if cx.op.code == B::LOGISTIC {
            if out_s != 1.0 / 256.0 {
                return Err(format!(
                    "the output scale is {out_s}; LOGISTIC's int8 output scale must be 1/256"
                )
                .into());
            }
            logistic
        } else {
            f32::tanh
        };
        let inverse_scale = 1.0f32 / out_s;
        let table = (-128i32..=127)
            .map(|q| {
                let x = in_s * (q - in_zp) as f32;
                let y = (f(x) * inverse_scale).round();
                ((y + out_zp as f32) as i32).clamp(-128, 127) as i8
            })
            .collect();
        Ok(Lut { table })
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        map_i8(x, |v| self.table[(v as i32 + 128) as usize])
    }
}

/// SOFTMAX over the last axis (reference kernel): differences to the row maximum scaled by
/// `beta·in_s` into Q5.26, gemmlowp `exp` into Q0.31, summed in Q12.19, one reciprocal,
/// then `exp · (1/sum)` shifted to 8 bits and offset by -128. Differences below `diff_min`
/// contribute nothing and output -128. The output must be (1/256, -128).
#[derive(Clone, Debug)]
pub struct Softmax {
    mult: i32,
    left_shift: i32,
    diff_min: i32,
}

const SCALED_DIFF_INTEGER_BITS: i32 = 5;
const ACCUMULATION_INTEGER_BITS: i32 = 12;

impl Softmax {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Softmax> {
        let ((in_s, _), (out_s, out_zp)) = unary_int8(cx)?;
        if cx.input(0)?.shape.is_empty() {
            return Err("the input must have at least one dimension".into());
        }
        let beta = match cx.op.options {
            Options::Softmax { beta } => beta,
            Options::None => 0.0,
            _ => return Err("has options of another op".into()),
        };
        if out_zp != -128 || (out_s - 1.0 / 256.0).abs() > 0.001 / 256.0 {
            return Err(format!(
                "the output quantization is (scale {out_s}, zero point {out_zp}); SOFTMAX's \
                 int8 output must be (1/256, -128)"
            )
            .into());
        }
        // PreprocessSoftmaxScaling
        let real = (beta as f64 * in_s as f64 * (1i64 << (31 - SCALED_DIFF_INTEGER_BITS)) as f64)
            .min((1i64 << 31) as f64 - 1.0);
        let (mult, left_shift) = quantize_multiplier(real);
        if !(0..=30).contains(&left_shift) {
            return Err(format!(
                "the input scale {in_s} (beta {beta}) gives a softmax multiplier outside the \
                 kernel's range"
            )
            .into());
        }
        // CalculateInputRadius(5, left_shift, 31)
        let radius = (((1i64 << SCALED_DIFF_INTEGER_BITS) - 1) as f64
            * (1i64 << (31 - SCALED_DIFF_INTEGER_BITS)) as f64
            / (1i64 << left_shift) as f64)
            .floor() as i32;
        Ok(Softmax {
            mult,
            left_shift,
            diff_min: -radius,
        })
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let depth = *x.shape.last().ok_or("the input is a scalar")?;
        let mut out = vec![-128i8; xd.len()];
        if depth == 0 {
            return Ok(Array::i8(x.shape.clone(), out).expect("same size"));
        }
        for (row, dst) in xd.chunks_exact(depth).zip(out.chunks_exact_mut(depth)) {
            let max = row.iter().copied().fold(i8::MIN, i8::max) as i32;
            let exp_of = |v: i8| -> Option<i32> {
                let diff = v as i32 - max;
                (diff >= self.diff_min).then(|| {
                    exp_on_negative_values_q5_26(mul_by_quantized_greater_than_one(
                        diff,
                        self.mult,
                        self.left_shift,
                    ))
                })
            };
            let mut sum: i32 = 0;
            for &v in row {
                if let Some(e) = exp_of(v) {
                    sum = sum.wrapping_add(rdbp(e, ACCUMULATION_INTEGER_BITS));
                }
            }
            let (inv, bits_over_unit) = reciprocal(sum, ACCUMULATION_INTEGER_BITS);
            let exponent = bits_over_unit + 31 - 8;
            if !(0..=31).contains(&exponent) {
                return Err(
                    format!("softmax normalization exponent {exponent} out of range").into(),
                );
            }
            for (&v, o) in row.iter().zip(dst.iter_mut()) {
                if let Some(e) = exp_of(v) {
                    let unsat = rdbp(srdhm(inv, e), exponent);
                    *o = (unsat - 128).clamp(-128, 127) as i8;
                }
            }
        }
        Ok(Array::i8(x.shape.clone(), out).expect("same size"))
    }
}
