//! `qatc eval`: accuracy of a `.tflite` classifier on the MNIST test set, computed by qatc's
//! int8 interpreter (both cores, in batches when the model's batch is resizable).

use super::run::{adapt_input, interpreter_options};
use crate::data::mnist::{self, Split};
use crate::data::Dataset;
use crate::error::{read_file, Error, Result};
use crate::int8::{Array, Data, Interpreter};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `qatc eval`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  qatc eval model.tflite\n  qatc eval model.tflite --limit 1000 --batch 50"
)]
pub struct EvalArgs {
    /// The `.tflite` classifier (input 28x28x1 pixels in [0, 1], output one score per class).
    pub model: PathBuf,
    /// The MNIST directory (default: the copy shipped in data/mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Evaluate only the first N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Images per interpreter run (models with a fixed batch run one at a time).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Requantize FULLY_CONNECTED in fixed point (see `qatc run --help`).
    #[arg(long)]
    pub fixed_point_fc: bool,
}

/// The index of the largest entry of each row.
fn argmax_rows(a: &Array) -> Vec<usize> {
    let classes = *a.shape.last().unwrap_or(&1);
    let rows = a.numel() / classes.max(1);
    let pick = |r: usize| -> usize {
        let better = |i: usize, j: usize| match &a.data {
            Data::F32(v) => v[r * classes + i] > v[r * classes + j],
            Data::I8(v) => v[r * classes + i] > v[r * classes + j],
            Data::I32(v) => v[r * classes + i] > v[r * classes + j],
            Data::I64(v) => v[r * classes + i] > v[r * classes + j],
        };
        (1..classes).fold(0, |best, i| if better(i, best) { i } else { best })
    };
    (0..rows).map(pick).collect()
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let bytes = read_file(&args.model)?;
    let it = Interpreter::with_options(&bytes, interpreter_options(args.fixed_point_fc))
        .map_err(|e| Error::file(&args.model, e.to_string()))?;
    let dir = args.data.clone().unwrap_or_else(mnist::default_dir);
    let mut data = mnist::load(&dir, Split::Test)?;
    if let Some(n) = args.limit {
        data = data.take(n);
    }
    let start = Instant::now();
    let predictions = predict(&it, &data, args.batch)?;
    let n = data.len();
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(&p, &l)| p as i32 == l)
        .count();
    println!(
        "accuracy {:.2}% ({correct}/{n}) on the MNIST test set, {:.1} s (qatc int8 interpreter)",
        100.0 * correct as f64 / n.max(1) as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The predicted class of every sample of `data` under the int8 interpreter `it`: both
/// cores, `batch` images per run when the model's batch dimension is resizable.
pub fn predict(it: &Interpreter, data: &Dataset, batch: usize) -> Result<Vec<usize>> {
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
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
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
