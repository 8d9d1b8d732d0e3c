//! `qatc eval`: accuracy of a `.tflite` classifier on the MNIST test set, computed by qatc's
//! int8 interpreter (both cores, in batches when the model's batch is resizable).

use super::run::interpreter_options;
use crate::data::mnist::{self, Split};
use crate::error::{read_file, Error, Result};
use crate::int8::{predict_on, Interpreter};
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
    /// Run the plain reference loops instead of the fast kernels (same results, slower).
    #[arg(long)]
    pub reference_kernels: bool,
    /// Threads (default: up to 2); the time per image is reported per thread.
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    if args.limit == Some(0) {
        return Err(Error::Usage("--limit must be at least 1".into()));
    }
    if args.batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".into()));
    }
    let bytes = read_file(&args.model)?;
    let it = Interpreter::with_options(
        &bytes,
        interpreter_options(args.fixed_point_fc, args.reference_kernels),
    )
    .map_err(|e| Error::file(&args.model, e.to_string()))?;
    let dir = args.data.clone().unwrap_or_else(mnist::default_dir);
    let mut data = mnist::load(&dir, Split::Test)?;
    if let Some(n) = args.limit {
        data = data.take(n);
    }
    let start = Instant::now();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(2)
    });
    if threads == 0 {
        return Err(Error::Usage("--threads must be at least 1".into()));
    }
    let predictions = predict_on(&it, &data, args.batch, threads)?;
    let secs = start.elapsed().as_secs_f64();
    let n = data.len();
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(&p, &l)| p as i32 == l)
        .count();
    super::say(&format!(
        "accuracy {:.2}% ({correct}/{n}) on the MNIST test set, {secs:.1} s on {threads} \
         thread(s), {:.3} ms per image per thread (qatc int8 interpreter)\n",
        100.0 * correct as f64 / n.max(1) as f64,
        secs * 1e3 * threads as f64 / n.max(1) as f64
    ))?;
    Ok(())
}
