//! Classifying a dataset with the int8 interpreter: float images in (quantized with the
//! input's parameters when the model takes int8), the predicted class of each out. Both
//! cores, in batches when the model's batch dimension is resizable.

use super::array::{Array, Data};
use super::interpreter::Interpreter;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::tflite::model::{ElemType, Tensor};

/// Adapts an array to a model input: float data is quantized for an int8 input (TFLite's
/// QUANTIZE arithmetic), anything else must already have the input's type.
pub fn adapt_input(a: Array, info: &Tensor) -> Result<Array> {
    match (&a.data, info.dtype) {
        (Data::F32(v), ElemType::I8) => {
            let (s, z) = info.quant.as_ref().map(|q| q.first()).ok_or_else(|| {
                Error::Usage(format!("input `{}` has no quantization", info.name))
            })?;
            let q = v
                .iter()
                .map(|&x| (((x / s).round() as i32).saturating_add(z)).clamp(-128, 127) as i8)
                .collect();
            Ok(Array {
                shape: a.shape,
                data: Data::I8(q),
            })
        }
        _ => Ok(a),
    }
}

/// The share of `preds` equal to their label (0 for no predictions).
pub fn accuracy(preds: &[usize], labels: &[i32]) -> f64 {
    let hits = preds
        .iter()
        .zip(labels)
        .filter(|(&p, &l)| p as i32 == l)
        .count();
    hits as f64 / preds.len().max(1) as f64
}

/// The index of the largest entry of each row.
pub fn argmax_rows(a: &Array) -> Vec<usize> {
    let classes = *a.shape.last().unwrap_or(&1);
    let rows = a.numel() / classes.max(1);
    let pick = |r: usize| -> usize {
        let better = |i: usize, j: usize| match &a.data {
            Data::F32(v) => v[r * classes + i] > v[r * classes + j],
            Data::I8(v) => v[r * classes + i] > v[r * classes + j],
            Data::I32(v) => v[r * classes + i] > v[r * classes + j],
            Data::I64(v) => v[r * classes + i] > v[r * classes + j],
            Data::Bool(v) => v[r * classes + i] & !v[r * classes + j],
        };
        (1..classes).fold(0, |best, i| if better(i, best) { i } else { best })
    };
    (0..rows).map(pick).collect()
}

/// The predicted class of every sample of `data` under the int8 interpreter `it`: both
/// cores, `batch` images per run when the model's batch dimension is resizable.
pub fn predict(it: &Interpreter, data: &Dataset, batch: usize) -> Result<Vec<usize>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    predict_on(it, data, batch, threads)
}

/// [`predict`] on `threads` threads (at least 1), each taking a contiguous share of `data`.
pub fn predict_on(
    it: &Interpreter,
    data: &Dataset,
    batch: usize,
    threads: usize,
) -> Result<Vec<usize>> {
    let inputs = it.inputs();
    if inputs.len() != 1 {
        return Err(Error::Usage(format!(
            "a classifier needs one input, this model has {}",
            inputs.len()
        )));
    }
    let input = inputs[0].clone();
    let sample = data.sample_len();
    let per_sample: usize = input.shape.iter().skip(1).product();
    if per_sample != sample {
        return Err(Error::Usage(format!(
            "the model input `{}` {:?} does not take a {:?} image",
            input.name, input.shape, data.sample_shape
        )));
    }
    let resizable = input
        .signature
        .as_ref()
        .is_some_and(|s| s.first() == Some(&-1));
    let batch = if resizable { batch.max(1) } else { 1 };
    let threads = threads.max(1);
    let n = data.len();
    let chunk = n.div_ceil(threads);
    let parts: Result<Vec<Vec<usize>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let input = &input;
                s.spawn(move || -> Result<Vec<usize>> {
                    let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(n));
                    let mut preds = Vec::with_capacity(hi.saturating_sub(lo));
                    let mut i = lo;
                    while i < hi {
                        let b = batch.min(hi - i);
                        let mut shape = input.shape.clone();
                        shape[0] = b;
                        let x =
                            Array::f32(shape, data.images[i * sample..(i + b) * sample].to_vec())
                                .expect("sized");
                        let y = it.run(&[adapt_input(x, input)?])?;
                        preds.extend(argmax_rows(&y[0]));
                        i += b;
                    }
                    Ok(preds)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Usage("an evaluation thread panicked".into())))
            })
            .collect()
    });
    Ok(parts?.into_iter().flatten().collect())
}
