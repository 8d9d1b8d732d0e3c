//! QUANTIZE (float32 → int8, and int8 → int8 requantization) and DEQUANTIZE (int8 →
//! float32): LiteRT `quantize.cc` / `reference_ops::AffineQuantize`, `Requantize`,
//! `dequantize.cc` / `reference_ops::Dequantize`.

use super::array::Array;
use super::context::{int8_params, multiplier, Ctx, PResult};
use super::fixed::mul_by_quantized;
use crate::tflite::model::ElemType;

/// A prepared QUANTIZE: from float, or between two int8 quantizations.
pub(crate) enum QuantizeKernel {
    Quantize(Quantize),
    Requantize(Requantize),
}

/// Prepares QUANTIZE: a float input quantizes, an int8 input requantizes.
pub(crate) fn prepare_quantize(cx: &Ctx) -> PResult<QuantizeKernel> {
    cx.inputs_between(1, 1)?;
    let x = cx.input(0)?;
    let (out_s, out_zp) = int8_params(cx.output()?)?;
    match x.dtype {
        ElemType::F32 => Ok(QuantizeKernel::Quantize(Quantize {
            scale: out_s,
            zero_point: out_zp,
        })),
        ElemType::I8 => {
            let (in_s, in_zp) = int8_params(x)?;
            let (mult, shift) = multiplier(in_s as f64 / out_s as f64, "requantization")?;
            Ok(QuantizeKernel::Requantize(Requantize {
                in_zp,
                out_zp,
                mult,
                shift,
            }))
        }
        other => Err(format!(
            "quantizing from {} is not supported (FLOAT32 or INT8 inputs only)",
            other.name()
        )
        .into()),
    }
}

/// float32 → int8: `clamp((int)roundf(x / scale) + zp)`, the division in float32.
#[derive(Clone, Debug)]
pub struct Quantize {
    scale: f32,
    zero_point: i32,
}

impl Quantize {
    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let xd = x.as_f32().ok_or("the input is not FLOAT32")?;
        let out = xd
            .iter()
            .map(|&v| {
                let r = (v / self.scale).round();
                // x86's float-to-int conversion: NaN and out-of-range values become i32::MIN
                let q = if r >= i32::MIN as f32 && r < 2147483648.0 {
                    r as i32
                } else {
                    i32::MIN
                };
                q.wrapping_add(self.zero_point).clamp(-128, 127) as i8
            })
            .collect();
        Ok(Array::i8(x.shape.clone(), out).expect("same size"))
    }
}

/// int8 → int8 with another scale: `clamp(MBQM(x - in_zp, in_s/out_s) + out_zp)`.
#[derive(Clone, Debug)]
pub struct Requantize {
    in_zp: i32,
    out_zp: i32,
    mult: i32,
    shift: i32,
}

impl Requantize {
    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let out = xd
            .iter()
            .map(|&v| {
                (mul_by_quantized(v as i32 - self.in_zp, self.mult, self.shift) + self.out_zp)
                    .clamp(-128, 127) as i8
            })
            .collect();
        Ok(Array::i8(x.shape.clone(), out).expect("same size"))
    }
}

/// int8 → float32: `(float)((double)scale · (q - zp))`.
#[derive(Clone, Debug)]
pub struct Dequantize {
    scale: f64,
    zero_point: i32,
}

impl Dequantize {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Dequantize> {
        cx.inputs_between(1, 1)?;
        let (scale, zero_point) = int8_params(cx.input(0)?)?;
        let y = cx.output()?;
        if y.dtype != ElemType::F32 {
            return Err(format!("dequantizing to {} is not supported", y.dtype.name()).into());
        }
        Ok(Dequantize {
            scale: scale as f64,
            zero_point,
        })
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let out = xd
            .iter()
            .map(|&q| (self.scale * (q as i32 - self.zero_point) as f64) as f32)
            .collect();
        Ok(Array::f32(x.shape.clone(), out).expect("same size"))
    }
}
