//! AVERAGE_POOL_2D and MAX_POOL_2D on int8 (LiteRT `reference_integer_ops::AveragePool` /
//! `MaxPool`). Both work on raw int8 values and rely on the input and output sharing their
//! quantization (LiteRT only DCHECKs it; qatc checks it).
//!
//! The window covers in-image taps only. Average: `sum > 0 ? (sum + n/2)/n : (sum - n/2)/n`
//! with truncating division (halves away from zero), `n` the number of in-image taps.
//! Both clamp to the fused activation range.

use super::array::Array;
use super::context::{
    activation_range, checked_numel, int8_params, positive, window_geometry, Ctx, KernelError,
    PResult,
};
use crate::tflite::model::{Options, PaddingMode};

#[derive(Clone, Debug)]
pub struct Pool {
    padding: PaddingMode,
    stride: [usize; 2],
    filter: [usize; 2],
    act: (i32, i32),
}

impl Pool {
    pub(crate) fn prepare(cx: &Ctx) -> PResult<Pool> {
        cx.inputs_between(1, 1)?;
        let Options::Pool2d {
            padding,
            stride_h,
            stride_w,
            filter_h,
            filter_w,
            activation,
        } = cx.op.options
        else {
            return Err("has no Pool2DOptions".into());
        };
        let x = int8_params(cx.input(0)?)?;
        let y = int8_params(cx.output()?)?;
        if x != y {
            return Err(format!(
                "input (scale {}, zero point {}) and output (scale {}, zero point {}) must \
                 share their quantization",
                x.0, x.1, y.0, y.1
            )
            .into());
        }
        Ok(Pool {
            padding,
            stride: [
                positive(stride_h, "stride_h")?,
                positive(stride_w, "stride_w")?,
            ],
            filter: [
                positive(filter_h, "filter_height")?,
                positive(filter_w, "filter_width")?,
            ],
            act: activation_range(activation, y.0, y.1)?,
        })
    }

    fn geometry(&self, x: &[usize]) -> PResult<([usize; 4], [usize; 2])> {
        let [n, h, w, c] = <[usize; 4]>::try_from(x)
            .map_err(|_| KernelError(format!("the input must have rank 4, found {x:?}")))?;
        let (oh, ph) = window_geometry(self.padding, h, self.filter[0], self.stride[0], 1)?;
        let (ow, pw) = window_geometry(self.padding, w, self.filter[1], self.stride[1], 1)?;
        Ok(([n, oh, ow, c], [ph, pw]))
    }

    pub(crate) fn out_shape(&self, x: &[usize]) -> PResult<Vec<usize>> {
        let (out, _) = self.geometry(x)?;
        checked_numel(&out)?;
        Ok(out.to_vec())
    }

    pub(crate) fn run(&self, x: &Array, max: bool) -> PResult<Array> {
        let ([n, oh, ow, c], [ph, pw]) = self.geometry(&x.shape)?;
        let (h, w) = (x.shape[1], x.shape[2]);
        let xd = x.as_i8().ok_or("the input is not INT8")?;
        let mut out = Vec::with_capacity(n * oh * ow * c);
        for b in 0..n {
            for oy in 0..oh {
                // in-image window rows: [y0, y1)
                let origin_y = (oy * self.stride[0]) as isize - ph as isize;
                let y0 = origin_y.max(0) as usize;
                let y1 = (origin_y + self.filter[0] as isize).min(h as isize).max(0) as usize;
                for ox in 0..ow {
                    let origin_x = (ox * self.stride[1]) as isize - pw as isize;
                    let x0 = origin_x.max(0) as usize;
                    let x1 = (origin_x + self.filter[1] as isize).min(w as isize).max(0) as usize;
                    let count = (y1.saturating_sub(y0) * x1.saturating_sub(x0)) as i32;
                    if count == 0 && !max {
                        return Err("an averaging window holds no input pixel".into());
                    }
                    for ch in 0..c {
                        let taps = (y0..y1).flat_map(|iy| {
                            (x0..x1).map(move |ix| xd[((b * h + iy) * w + ix) * c + ch] as i32)
                        });
                        let v = if max {
                            taps.fold(-128, i32::max)
                        } else {
                            let sum: i32 = taps.sum();
                            if sum > 0 {
                                (sum + count / 2) / count
                            } else {
                                (sum - count / 2) / count
                            }
                        };
                        out.push(v.clamp(self.act.0, self.act.1) as i8);
                    }
                }
            }
        }
        Ok(Array::i8(vec![n, oh, ow, c], out).expect("sized above"))
    }
}
