//! FULLY_CONNECTED on int8 (LiteRT `fully_connected.cc`, `reference_integer_ops::
//! FullyConnected` / `FullyConnectedPerChannel`).
//!
//! The input is flattened to `[batch, depth]` (`depth` = the weights' second dimension)
//! unless `keep_num_dims`. `acc = Σ (w + w_offset)·(x - in_zp) + bias` in int32, then
//! requantized one of two ways ([`FcRequant`]):
//! - `Double` — LiteRT's reference kernel since April 2025 requantizes in double precision:
//!   `(int)round((double)acc · (double)in_s·(double)w_s / (double)out_s)`. The multiplier
//!   is recomputed per element from the float scales exactly like that.
//! - `FixedPoint` — `MultiplyByQuantizedMultiplier` with the multiplier from `Prepare`: per
//!   tensor `QuantizeMultiplier((double)(in_s·w_s as float) / out_s)`, per channel
//!   `QuantizeMultiplier((double)in_s·w_s[c]/out_s)`.

use super::array::Array;
use super::context::{
    activation_range, checked_numel, constant, int8_params, multiplier, Ctx, FcRequant,
    KernelError, PResult,
};
use super::conv::check_bias;
use super::fixed::mul_by_quantized;
use crate::tflite::model::{ElemType, Options};

#[derive(Clone, Debug)]
pub struct FullyConnected {
    units: usize,
    depth: usize,
    keep_num_dims: bool,
    in_zp: i32,
    out_zp: i32,
    /// `-w_zp` (0 for symmetric weights; per-channel weights are always symmetric).
    w_offset: i32,
    act: (i32, i32),
    in_s: f32,
    out_s: f32,
    /// One scale per unit (a per-tensor scale repeated).
    w_s: Vec<f32>,
    requant: FcRequant,
    mult: Vec<i32>,
    shift: Vec<i32>,
}

impl FullyConnected {
    pub(crate) fn prepare(cx: &Ctx, requant: FcRequant) -> PResult<FullyConnected> {
        cx.inputs_between(2, 3)?;
        let Options::FullyConnected {
            activation,
            shuffled_weights,
            keep_num_dims,
        } = cx.op.options
        else {
            return Err("has no FullyConnectedOptions".into());
        };
        if shuffled_weights {
            return Err("shuffled weights (SHUFFLED4x16INT8) are not supported".into());
        }
        let x = cx.input(0)?;
        let w = cx.input(1)?;
        let y = cx.output()?;
        let (in_s, in_zp) = int8_params(x)?;
        let (out_s, out_zp) = int8_params(y)?;
        constant(w, "weights")?;
        if !matches!(w.dtype, ElemType::I8 | ElemType::I4) {
            return Err(format!(
                "the weights `{}` are {}; qatc runs int8 FULLY_CONNECTED only (no hybrid models)",
                w.name,
                w.dtype.name()
            )
            .into());
        }
        let [units, depth] = <[usize; 2]>::try_from(w.shape.as_slice()).map_err(|_| {
            KernelError(format!("the weights must have rank 2, found {:?}", w.shape))
        })?;
        if depth == 0 || units == 0 {
            return Err(format!("the weights {:?} are empty", w.shape).into());
        }
        let bias = cx.opt_input(2);
        check_bias(bias, units)?;
        let q = w.quant.as_ref().ok_or_else(|| {
            KernelError(format!(
                "the weights `{}` have no quantization parameters",
                w.name
            ))
        })?;
        let (w_s, w_offset, mult, shift) = if q.is_per_axis() {
            if q.axis != 0 || q.scale.len() != units {
                return Err(format!(
                    "the weights `{}` are quantized along dimension {}; FULLY_CONNECTED needs 0",
                    w.name, q.axis
                )
                .into());
            }
            if q.zero_point.iter().any(|&z| z != 0) {
                return Err(
                    format!("the per-channel weights `{}` must be symmetric", w.name).into(),
                );
            }
            let mut mult = Vec::with_capacity(units);
            let mut shift = Vec::with_capacity(units);
            for &ws in &q.scale {
                let (m, s) = multiplier(in_s as f64 * ws as f64 / out_s as f64, "output")?;
                mult.push(m);
                shift.push(s);
            }
            (q.scale.clone(), 0, mult, shift)
        } else {
            let (ws, wzp) = q.first();
            if !(-128..=127).contains(&wzp) {
                return Err(format!("the weights `{}` have zero point {wzp}", w.name).into());
            }
            // `GetQuantizedConvolutionMultipler`: the input·filter scale is a float product
            let product = (in_s * ws) as f64;
            if let Some(b) = bias {
                if let Some(bq) = &b.quant {
                    let diff = (in_s as f64 * ws as f64 - bq.scale[0] as f64).abs();
                    if diff / out_s as f64 > 0.02 {
                        return Err(format!(
                            "the bias scale {} does not match input scale × weight scale {}",
                            bq.scale[0],
                            in_s as f64 * ws as f64
                        )
                        .into());
                    }
                }
            }
            let (m, s) = multiplier(product / out_s as f64, "output")?;
            (vec![ws; units], -wzp, vec![m; units], vec![s; units])
        };
        Ok(FullyConnected {
            units,
            depth,
            keep_num_dims,
            in_zp,
            out_zp,
            w_offset,
            act: activation_range(activation, out_s, out_zp)?,
            in_s,
            out_s,
            w_s,
            requant,
            mult,
            shift,
        })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        let numel = checked_numel(x)?;
        if self.keep_num_dims {
            if x.last() != Some(&self.depth) {
                return Err(format!(
                    "with keep_num_dims the input's last dimension must be {}, found {x:?}",
                    self.depth
                )
                .into());
            }
            let mut out = x.to_vec();
            *out.last_mut().expect("non-empty") = self.units;
            Ok(out)
        } else {
            if numel % self.depth != 0 {
                return Err(format!(
                    "the input {x:?} does not flatten into rows of {}",
                    self.depth
                )
                .into());
            }
            Ok(vec![numel / self.depth, self.units])
        }
    }

    pub(crate) fn run(&self, x: &Array, w: &Array, b: Option<&Array>) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        if w.shape != [self.units, self.depth] {
            return Err(format!("the weights have shape {:?}", w.shape).into());
        }
        let wd = w.as_i8().ok_or("the weights are not INT8")?;
        let bias: Option<&[i32]> = match b {
            Some(b) => Some(
                b.as_i32()
                    .filter(|v| v.len() == self.units)
                    .ok_or("the bias must be INT32 with one entry per unit")?,
            ),
            None => None,
        };
        let rows = xd.len() / self.depth;
        let mut out = Vec::with_capacity(rows * self.units);
        for r in 0..rows {
            let xrow = &xd[r * self.depth..(r + 1) * self.depth];
            for u in 0..self.units {
                let wrow = &wd[u * self.depth..(u + 1) * self.depth];
                let mut acc: i32 = 0;
                for (&wv, &xv) in wrow.iter().zip(xrow) {
                    acc = acc.wrapping_add((wv as i32 + self.w_offset) * (xv as i32 - self.in_zp));
                }
                if let Some(bias) = bias {
                    acc = acc.wrapping_add(bias[u]);
                }
                let scaled = match self.requant {
                    FcRequant::Double => {
                        let eff = self.in_s as f64 * self.w_s[u] as f64 / self.out_s as f64;
                        (acc as f64 * eff).round() as i32
                    }
                    FcRequant::FixedPoint => mul_by_quantized(acc, self.mult[u], self.shift[u]),
                };
                out.push((scaled.wrapping_add(self.out_zp)).clamp(self.act.0, self.act.1) as i8);
            }
        }
        Ok(Array::i8(out_shape, out).expect("sized above"))
    }
}
