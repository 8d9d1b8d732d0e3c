//! MEAN and REDUCE_MAX on int8 (LiteRT `reduce.cc`; MEAN follows
//! `reference_ops::QuantizedMeanOrSum`, which the reference resolver uses for every int8
//! mean, including the 4-D spatial means the optimized kernel special-cases).

use super::array::Array;
use super::context::{checked_numel, const_ints, int8_params, multiplier, strides, Ctx, PResult};
use super::fixed::mul_by_quantized;
use crate::tflite::model::Options;

/// The reduced axes (normalized, deduplicated, in first-seen order) and `keep_dims`.
#[derive(Clone, Debug)]
struct Axes {
    axes: Vec<usize>,
    keep_dims: bool,
    rank: usize,
}

impl Axes {
    fn prepare(cx: &Ctx) -> PResult<Axes> {
        cx.inputs_between(2, 2)?;
        let rank = cx.input(0)?.shape.len();
        let raw = const_ints(cx.input(1)?, "axis")?;
        let mut axes = Vec::new();
        for a in raw {
            let r = if a < 0 { a + rank as i64 } else { a };
            if r < 0 || r >= rank as i64 {
                return Err(format!("axis {a} is out of range for rank {rank}").into());
            }
            if !axes.contains(&(r as usize)) {
                axes.push(r as usize);
            }
        }
        let keep_dims = match cx.op.options {
            Options::Reducer { keep_dims } => keep_dims,
            Options::None => false,
            _ => return Err("has options of another op".into()),
        };
        Ok(Axes {
            axes,
            keep_dims,
            rank,
        })
    }

    fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        if x.len() != self.rank {
            return Err(format!("the input {x:?} does not have rank {}", self.rank).into());
        }
        Ok(x.iter()
            .enumerate()
            .filter_map(|(i, &d)| match (self.axes.contains(&i), self.keep_dims) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect())
    }

    /// For every input element, the flat index of the output element it reduces into.
    fn destinations(&self, x: &[usize]) -> Vec<usize> {
        let kept: Vec<usize> = x
            .iter()
            .enumerate()
            .map(|(i, &d)| if self.axes.contains(&i) { 1 } else { d })
            .collect();
        let ks = strides(&kept);
        let n: usize = x.iter().product();
        let mut dst = Vec::with_capacity(n);
        let mut idx = vec![0usize; x.len()];
        let mut at = 0usize;
        for _ in 0..n {
            dst.push(at);
            for d in (0..x.len()).rev() {
                idx[d] += 1;
                if !self.axes.contains(&d) {
                    at += ks[d];
                }
                if idx[d] < x[d] {
                    break;
                }
                if !self.axes.contains(&d) {
                    at -= ks[d] * x[d];
                }
                idx[d] = 0;
            }
        }
        dst
    }
}

/// MEAN: `sum - zp_in·N` requantized by `in_s/out_s / N`, where the division by `N` is
/// folded into the multiplier as LiteRT does (`mult·2^s / N` with `s = floor(log2 N)`
/// capped at 32 and at `31 + shift`). No fused activation; clamps to int8.
#[derive(Clone, Debug)]
pub struct Mean {
    axes: Axes,
    in_zp: i32,
    out_zp: i32,
    mult: i32,
    shift: i32,
}

impl Mean {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Mean> {
        let axes = Axes::prepare(cx)?;
        let (in_s, in_zp) = int8_params(cx.input(0)?)?;
        let (out_s, out_zp) = int8_params(cx.output()?)?;
        let (mult, shift) = multiplier(in_s as f64 / out_s as f64, "mean")?;
        Ok(Mean {
            axes,
            in_zp,
            out_zp,
            mult,
            shift,
        })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        self.axes.out_shape(x)
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let n_out = checked_numel(&out_shape)?;
        let mut sums = vec![0i32; n_out];
        if xd.is_empty() {
            return Ok(Array::i8(out_shape, vec![0; n_out]).expect("sized"));
        }
        match (&x.shape[..], &self.axes.axes[..]) {
            // the global average pool of NHWC: channel rows added into one row per image
            ([n, h, w, c], [1, 2]) => {
                for b in 0..*n {
                    let row = &mut sums[b * c..(b + 1) * c];
                    for px in xd[b * h * w * c..(b + 1) * h * w * c].chunks_exact(*c) {
                        for (s, &v) in row.iter_mut().zip(px) {
                            *s = s.wrapping_add(v as i32);
                        }
                    }
                }
            }
            _ => {
                for (&v, dst) in xd.iter().zip(self.axes.destinations(&x.shape)) {
                    sums[dst] = sums[dst].wrapping_add(v as i32);
                }
            }
        }
        let count: i64 = self.axes.axes.iter().map(|&a| x.shape[a] as i64).product();
        let log2 = 63 - count.leading_zeros() as i32;
        let s = log2.min(32).min(31 + self.shift);
        let mult = (((self.mult as i64) << s) / count) as i32;
        let shift = self.shift - s;
        let out = sums
            .iter()
            .map(|&sum| {
                let shifted = (sum as i64 - self.in_zp as i64 * count) as i32;
                (mul_by_quantized(shifted, mult, shift) + self.out_zp).clamp(-128, 127) as i8
            })
            .collect();
        Ok(Array::i8(out_shape, out).expect("sized"))
    }
}

/// REDUCE_MAX: the largest raw int8 value over the axes; input and output must share
/// their quantization (LiteRT checks both equal).
#[derive(Clone, Debug)]
pub struct ReduceMax {
    axes: Axes,
}

impl ReduceMax {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<ReduceMax> {
        let axes = Axes::prepare(cx)?;
        let x = int8_params(cx.input(0)?)?;
        let y = int8_params(cx.output()?)?;
        if x != y {
            return Err("input and output must share their quantization".into());
        }
        Ok(ReduceMax { axes })
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        self.axes.out_shape(x)
    }

    pub(crate) fn run(&self, x: &Array) -> PResult<Array> {
        let out_shape = self.out_shape(&x.shape)?;
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let mut out = vec![i8::MIN; checked_numel(&out_shape)?];
        for (&v, dst) in xd.iter().zip(self.axes.destinations(&x.shape)) {
            out[dst] = out[dst].max(v);
        }
        Ok(Array::i8(out_shape, out).expect("sized"))
    }
}
