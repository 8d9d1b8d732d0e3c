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

    /// Folds every element of `x` (shape `shape`) into the output element it reduces into.
    /// When the reduced axes are one contiguous run (the global pools' H and W of NHWC), the
    /// input is `[outer, reduced, inner]` and whole inner rows fold at once; other axis
    /// sets go element by element through [`destinations`](Self::destinations).
    fn fold<T: Copy>(&self, x: &[i8], shape: &[usize], out: &mut [T], f: impl Fn(T, i8) -> T) {
        let (first, last) = match (self.axes.iter().min(), self.axes.iter().max()) {
            (Some(&a), Some(&b)) => (a, b),
            _ => (0, 0),
        };
        if !self.axes.is_empty() && last - first + 1 == self.axes.len() {
            let outer: usize = shape[..first].iter().product();
            let reduced: usize = shape[first..=last].iter().product();
            let inner: usize = shape[last + 1..].iter().product();
            for o in 0..outer {
                let dst = &mut out[o * inner..(o + 1) * inner];
                for r in 0..reduced {
                    let src = &x[(o * reduced + r) * inner..][..inner];
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = f(*d, v);
                    }
                }
            }
            return;
        }
        for (&v, dst) in x.iter().zip(self.destinations(shape)) {
            out[dst] = f(out[dst], v);
        }
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
        self.axes
            .fold(xd, &x.shape, &mut sums, |s, v| s.wrapping_add(v as i32));
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
        self.axes.fold(xd, &x.shape, &mut out, i8::max);
        Ok(Array::i8(out_shape, out).expect("sized"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-wise fold of contiguous axes against the element-by-element one, for every
    /// axis set of a rank-4 shape (contiguous or not), summing and taking maxima.
    #[test]
    fn folding_rows_equals_folding_elements() {
        let shape = [2, 3, 4, 5];
        let x: Vec<i8> = (0..120).map(|i| ((i * 37) % 256) as u8 as i8).collect();
        for mask in 1u32..16 {
            let axes = Axes {
                axes: (0..4).filter(|d| mask & (1 << d) != 0).collect(),
                keep_dims: false,
                rank: 4,
            };
            let n = axes.out_shape(&shape).unwrap().iter().product::<usize>();
            let (mut sums, mut want_sums) = (vec![0i32; n], vec![0i32; n]);
            let (mut maxs, mut want_maxs) = (vec![i8::MIN; n], vec![i8::MIN; n]);
            axes.fold(&x, &shape, &mut sums, |s, v| s + v as i32);
            axes.fold(&x, &shape, &mut maxs, i8::max);
            for (&v, d) in x.iter().zip(axes.destinations(&shape)) {
                want_sums[d] += v as i32;
                want_maxs[d] = want_maxs[d].max(v);
            }
            assert_eq!(sums, want_sums, "axes {:?}", axes.axes);
            assert_eq!(maxs, want_maxs, "axes {:?}", axes.axes);
        }
    }
}
