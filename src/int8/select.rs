//! GREATER on int8 (LiteRT `comparisons.cc`, `reference_ops::ComparisonWithScaling`) and
//! SELECT_V2 (`select.cc`): together they are qatc's `thresholded_relu`.
//!
//! GREATER does not compare the raw int8 values: each input is shifted left by 8 bits and
//! multiplied by its own scale in fixed point, so both sides are in units of 1/256 of a
//! real value before the comparison. Two int8 values closer than that compare equal, and
//! this kernel computes exactly that, as LiteRT does.

use super::array::{Array, Data};
use super::binary::{broadcast_map, broadcast_shape};
use super::context::{int8_params, Ctx, PResult};
use super::fixed::{mul_by_quantized_smaller_than_one, quantize_multiplier};
use crate::tflite::model::ElemType;

const LEFT_SHIFT: i32 = 8;

/// GREATER: `x1 > x2` after rescaling both to a common real unit; a BOOL output.
#[derive(Clone, Debug)]
pub struct Greater {
    zp: [i32; 2],
    mult: [i32; 2],
    shift: [i32; 2],
}

/// `QuantizeMultiplierSmallerThanOneExp` of a tensor's scale (which must be below 1).
fn scale_multiplier(scale: f32, which: &str) -> PResult<(i32, i32)> {
    let (q, shift) = quantize_multiplier(scale as f64);
    if scale.is_nan() || scale <= 0.0 || shift > 0 {
        return Err(format!(
            "the scale {scale} of input {which} must be in (0, 1) for an int8 comparison"
        )
        .into());
    }
    Ok((q, shift))
}

impl Greater {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Greater> {
        cx.inputs_between(2, 2)?;
        let (s1, z1) = int8_params(cx.input(0)?)?;
        let (s2, z2) = int8_params(cx.input(1)?)?;
        let out = cx.output()?;
        if out.dtype != ElemType::Bool {
            return Err(format!("the output is {}, expected BOOL", out.dtype.name()).into());
        }
        let (m1, e1) = scale_multiplier(s1, "1")?;
        let (m2, e2) = scale_multiplier(s2, "2")?;
        Ok(Greater {
            zp: [z1, z2],
            mult: [m1, m2],
            shift: [e1, e2],
        })
    }

    #[inline]
    fn scaled(&self, i: usize, v: i8) -> i32 {
        let shifted = (v as i32 - self.zp[i]) * (1 << LEFT_SHIFT);
        mul_by_quantized_smaller_than_one(shifted, self.mult[i], self.shift[i])
    }

    pub(crate) fn run(&self, a: &Array, b: &Array) -> PResult<Array> {
        let (Some(x), Some(y)) = (a.as_i8(), b.as_i8()) else {
            return Err("both inputs must be INT8".into());
        };
        let (shape, out) = broadcast_map(x, &a.shape, y, &b.shape, |p, q| {
            self.scaled(0, p) > self.scaled(1, q)
        })?;
        Ok(Array::new(shape, Data::Bool(out)).expect("sized by broadcast"))
    }
}

/// SELECT_V2: `condition ? x : y` elementwise with broadcasting of all three; values are
/// copied, so `x`, `y` and the output share one quantization.
#[derive(Clone, Debug)]
pub struct SelectV2;

impl SelectV2 {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<SelectV2> {
        cx.inputs_between(3, 3)?;
        let c = cx.input(0)?;
        if c.dtype != ElemType::Bool {
            return Err(format!("the condition is {}, expected BOOL", c.dtype.name()).into());
        }
        let out = int8_params(cx.output()?)?;
        for i in [1, 2] {
            if int8_params(cx.input(i)?)? != out {
                return Err(format!(
                    "input {i} and the output must share their quantization (SELECT_V2 copies \
                     int8 values)"
                )
                .into());
            }
        }
        Ok(SelectV2)
    }

    pub(crate) fn out_shape(c: &[usize], x: &[usize], y: &[usize]) -> PResult<Vec<usize>> {
        broadcast_shape(&broadcast_shape(c, x)?, y)
    }

    pub(crate) fn run(&self, c: &Array, x: &Array, y: &Array) -> PResult<Array> {
        let Data::Bool(cond) = &c.data else {
            return Err("the condition must be BOOL".into());
        };
        let (Some(xs), Some(ys)) = (x.as_i8(), y.as_i8()) else {
            return Err("both values must be INT8".into());
        };
        // `Some(x)` where the condition holds, then `y` fills the rest
        let picked: Vec<(bool, i8)> = {
            let (_, v) = broadcast_map(
                &cond.iter().map(|&b| (b, 0i8)).collect::<Vec<_>>(),
                &c.shape,
                &xs.iter().map(|&v| (false, v)).collect::<Vec<_>>(),
                &x.shape,
                |(b, _), (_, v)| (b, v),
            )?;
            v
        };
        let cx_shape = broadcast_shape(&c.shape, &x.shape)?;
        let (shape, out) = broadcast_map(
            &picked,
            &cx_shape,
            &ys.iter().map(|&v| (false, v)).collect::<Vec<_>>(),
            &y.shape,
            |(b, v), (_, w)| if b { v } else { w },
        )?;
        Ok(Array::i8(shape, out).expect("sized by broadcast"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greater_compares_in_units_of_a_256th() {
        // scales 0.5 and 0.001: 0.001 · 256 < 1, so neighbouring values of input 2 collide
        let (m1, e1) = quantize_multiplier(0.5);
        let (m2, e2) = quantize_multiplier(0.001);
        let k = Greater {
            zp: [-10, 0],
            mult: [m1, m2],
            shift: [e1, e2],
        };
        assert_eq!(k.scaled(0, -8), 256); // (−8 + 10)·256·0.5
        assert_eq!(
            k.scaled(1, 3),
            k.scaled(1, 2),
            "0.768 and 0.512 both round to 1"
        );
        let a = Array::i8(vec![3], vec![-10, -9, 20]).unwrap();
        let b = Array::i8(vec![1], vec![2]).unwrap(); // 0.002 → 0.512 → 1
        let out = k.run(&a, &b).unwrap();
        assert_eq!(out.data, Data::Bool(vec![false, true, true]));
    }

    #[test]
    fn select_broadcasts_the_else_value() {
        let c = Array::new(vec![2, 2], Data::Bool(vec![true, false, false, true])).unwrap();
        let x = Array::i8(vec![2, 2], vec![1, 2, 3, 4]).unwrap();
        let y = Array::i8(vec![1], vec![-7]).unwrap();
        let out = SelectV2.run(&c, &x, &y).unwrap();
        assert_eq!(out.data, Data::I8(vec![1, -7, -7, 4]));
        assert_eq!(out.shape, [2, 2]);
    }
}
