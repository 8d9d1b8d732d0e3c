//! Elementwise binary ops on int8 with numpy broadcasting: ADD and SUB (LiteRT `add.cc`,
//! `sub.cc`, `reference_integer_ops::AddFunc`, `reference_ops::SubElementwise`), MUL
//! (`mul.cc`, `reference_integer_ops::MulElementwise`), MAXIMUM and MINIMUM
//! (`maximum_minimum.cc`: raw comparisons, no requantization).

use super::array::Array;
use super::context::{
    activation_range, checked_numel, int8_params, multiplier, Ctx, Kernels, PResult,
};
use super::dot8::{AddSubParams, Vnni};
use super::fixed::mul_by_quantized;
use crate::tflite::model::{FusedActivation, Options};
use crate::tflite::schema::BuiltinOperator as B;

/// Numpy broadcasting of two shapes (trailing dimensions aligned).
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> PResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        out.push(match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast").into()),
        });
    }
    checked_numel(&out)?;
    Ok(out)
}

/// Applies `f` elementwise over the broadcast of `a` and `b`.
pub(crate) fn broadcast_map<T: Copy, U>(
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    mut f: impl FnMut(T, T) -> U,
) -> PResult<(Vec<usize>, Vec<U>)> {
    let out = broadcast_shape(a_shape, b_shape)?;
    if a_shape == b_shape {
        return Ok((out, a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()));
    }
    let rank = out.len();
    // per output dimension, the step in `a` and `b` (0 where broadcast)
    let steps = |s: &[usize]| -> Vec<usize> {
        let st = super::context::strides(s);
        (0..rank)
            .map(|d| {
                let off = rank - s.len();
                if d < off || s[d - off] == 1 {
                    0
                } else {
                    st[d - off]
                }
            })
            .collect()
    };
    let (sa, sb) = (steps(a_shape), steps(b_shape));
    let n = checked_numel(&out)?;
    let mut result = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    let (mut ia, mut ib) = (0usize, 0usize);
    for _ in 0..n {
        result.push(f(a[ia], b[ib]));
        // odometer increment over the output index
        for d in (0..rank).rev() {
            idx[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if idx[d] < out[d] {
                break;
            }
            ia -= sa[d] * out[d];
            ib -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
    Ok((out, result))
}

/// `(scale, zero_point)` of the two inputs and the output.
type BinaryParams = ((f32, i32), (f32, i32), (f32, i32));

fn two_int8_inputs(cx: &Ctx) -> PResult<BinaryParams> {
    cx.inputs_between(2, 2)?;
    Ok((
        int8_params(cx.input(0)?)?,
        int8_params(cx.input(1)?)?,
        int8_params(cx.output()?)?,
    ))
}

fn both_i8<'a>(a: &'a Array, b: &'a Array) -> PResult<(&'a [i8], &'a [i8])> {
    match (a.as_i8(), b.as_i8()) {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => Err("both inputs must be INT8".into()),
    }
}

/// ADD and SUB: both inputs are rescaled to a common scale `2·max(s1, s2)` with 20 bits of
/// headroom, added or subtracted, and rescaled to the output.
#[derive(Clone, Debug)]
pub struct AddSub {
    params: AddSubParams,
    /// The vector kernel for same-shape operands, when asked for and the CPU has it.
    fast: Option<Vnni>,
}

const LEFT_SHIFT: i32 = 20;

impl AddSub {
    pub(crate) fn prepare(cx: &Ctx, kernels: Kernels) -> PResult<AddSub> {
        let ((s1, z1), (s2, z2), (so, zo)) = two_int8_inputs(cx)?;
        let subtract = cx.op.code == B::SUB;
        let act = match (subtract, &cx.op.options) {
            (false, Options::Add { activation }) | (true, Options::Sub { activation }) => {
                *activation
            }
            (false, Options::None) | (true, Options::None) => FusedActivation::None,
            _ => return Err("has options of another op".into()),
        };
        // `2 * std::max(float, float)` is a float; the divisions are in double
        let twice_max = (2.0 * s1.max(s2)) as f64;
        let m1 = s1 as f64 / twice_max;
        let m2 = s2 as f64 / twice_max;
        let mo = twice_max / (((1 << LEFT_SHIFT) as f32 * so) as f64);
        if mo >= 1.0 {
            return Err(format!(
                "the output scale {so} is too small for the input scales {s1} and {s2} \
                 (output multiplier {mo} >= 1, which LiteRT's int8 kernel cannot apply)"
            )
            .into());
        }
        let q1 = multiplier(m1, "input 1")?;
        let q2 = multiplier(m2, "input 2")?;
        let qo = multiplier(mo, "output")?;
        let params = AddSubParams {
            subtract,
            left_shift: LEFT_SHIFT,
            zp: [z1, z2, zo],
            mult: [q1.0, q2.0, qo.0],
            shift: [q1.1, q2.1, qo.1],
            act: activation_range(act, so, zo)?,
        };
        if params.shift.iter().any(|&s| s > 0) {
            return Err("a rescaling multiplier is not below one".into());
        }
        let fast = match kernels {
            Kernels::Fast => Vnni::detect(),
            Kernels::Reference => None,
        };
        Ok(AddSub { params, fast })
    }

    pub(crate) fn run(&self, a: &Array, b: &Array) -> PResult<Array> {
        let (x, y) = both_i8(a, b)?;
        if let (Some(cpu), true) = (self.fast, a.shape == b.shape) {
            let mut out = vec![0i8; x.len()];
            cpu.add_sub(x, y, &self.params, &mut out);
            return Ok(Array::i8(a.shape.clone(), out).expect("sized like the inputs"));
        }
        let (shape, out) = broadcast_map(x, &a.shape, y, &b.shape, |p, q| self.params.apply(p, q))?;
        Ok(Array::i8(shape, out).expect("sized by broadcast"))
    }
}

/// MUL: `(x1 - zp1)·(x2 - zp2)` requantized by `s1·s2/s_out` (computed in float32).
#[derive(Clone, Debug)]
pub struct Mul {
    zp: [i32; 3],
    mult: i32,
    shift: i32,
    act: (i32, i32),
}

impl Mul {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Mul> {
        let ((s1, z1), (s2, z2), (so, zo)) = two_int8_inputs(cx)?;
        let act = match &cx.op.options {
            Options::Mul { activation } => *activation,
            Options::None => FusedActivation::None,
            _ => return Err("has options of another op".into()),
        };
        let (mult, shift) = multiplier((s1 * s2 / so) as f64, "output")?;
        Ok(Mul {
            zp: [z1, z2, zo],
            mult,
            shift,
            act: activation_range(act, so, zo)?,
        })
    }

    pub(crate) fn run(&self, a: &Array, b: &Array) -> PResult<Array> {
        let (x, y) = both_i8(a, b)?;
        let (shape, out) = broadcast_map(x, &a.shape, y, &b.shape, |p, q| {
            let prod = (p as i32 - self.zp[0]) * (q as i32 - self.zp[1]);
            (mul_by_quantized(prod, self.mult, self.shift) + self.zp[2])
                .clamp(self.act.0, self.act.1) as i8
        })?;
        Ok(Array::i8(shape, out).expect("sized by broadcast"))
    }
}

/// MAXIMUM / MINIMUM: compares the raw int8 values (the operands and the output are meant to
/// share their quantization; LiteRT does not check it, and neither does qatc).
#[derive(Clone, Debug)]
pub struct MinMax {
    maximum: bool,
}

impl MinMax {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<MinMax> {
        two_int8_inputs(cx)?;
        Ok(MinMax {
            maximum: cx.op.code == B::MAXIMUM,
        })
    }

    pub(crate) fn run(&self, a: &Array, b: &Array) -> PResult<Array> {
        let (x, y) = both_i8(a, b)?;
        let (shape, out) = broadcast_map(x, &a.shape, y, &b.shape, |p, q| {
            if self.maximum {
                p.max(q)
            } else {
                p.min(q)
            }
        })?;
        Ok(Array::i8(shape, out).expect("sized by broadcast"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_walks_both_operands() {
        // [2,3] + [3]: rows plus a vector
        let a = [1, 2, 3, 4, 5, 6];
        let b = [10, 20, 30];
        let (s, v) = broadcast_map(&a, &[2, 3], &b, &[3], |x, y| x + y).unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(v, vec![11, 22, 33, 14, 25, 36]);
        // [2,1] * [1,3]: an outer product
        let (s, v) = broadcast_map(&[1, 2], &[2, 1], &[1, 10, 100], &[1, 3], |x, y| x * y).unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(v, vec![1, 10, 100, 2, 20, 200]);
        assert!(broadcast_shape(&[2, 3], &[4]).is_err());
    }
}
