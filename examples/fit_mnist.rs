//! TFMOT's recipe on `mnist_cnn` with `qatc::train::fit` on the reference interpreter:
//! float training (Adam 1e-3, batch 64, one epoch), then QAT fine-tuning of the
//! default_8bit graph from the float weights (Adam 1e-4, one epoch), test accuracy of both.
//!
//! ```text
//! cargo run --release --example fit_mnist -- [--samples N] [--quiet]
//! ```
//!
//! The QAT graph comes from the `default_8bit` pipeline in train mode.

use qatc::data::mnist::{self, Split};
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::train::{fit, FitConfig, ReferenceBackend};

fn main() -> qatc::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let samples = args
        .iter()
        .position(|a| a == "--samples")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<usize>())
        .transpose()
        .map_err(|e| qatc::Error::Usage(format!("--samples: {e}")))?;
    let progress = !args.iter().any(|a| a == "--quiet");

    let dir = mnist::default_dir();
    let mut train = mnist::load(&dir, Split::Train)?;
    let test = mnist::load(&dir, Split::Test)?;
    if let Some(n) = samples {
        train = train.take(n);
    }
    let model = qatc::models::mnist_cnn(0)?;

    let float_cfg = FitConfig {
        progress,
        ..FitConfig::default()
    };
    let float = fit(
        &model.graph,
        &model.params,
        &train,
        Some(&test),
        &float_cfg,
        &ReferenceBackend,
    )?;
    let f = float.history.last().expect("one epoch");

    let mut params = float.params.clone();
    let qat = run_pipeline(
        model.graph.clone(),
        &mut params,
        "default_8bit",
        &PipelineOptions::train(),
    )?;
    let qat_cfg = FitConfig {
        progress,
        ..FitConfig::qat_fine_tune()
    };
    let tuned = fit(
        &qat,
        &params,
        &train,
        Some(&test),
        &qat_cfg,
        &ReferenceBackend,
    )?;
    let q = tuned.history.last().expect("one epoch");

    println!(
        "mnist_cnn, {} training samples, batch 64, interpreter",
        train.len()
    );
    println!(
        "float: test accuracy {:.4} (loss {:.4}), {:.0} samples/s",
        f.test_accuracy.unwrap_or(0.0),
        f.test_loss.unwrap_or(0.0),
        f.samples_per_s
    );
    println!(
        "QAT:   test accuracy {:.4} (loss {:.4}), {:.0} samples/s",
        q.test_accuracy.unwrap_or(0.0),
        q.test_loss.unwrap_or(0.0),
        q.samples_per_s
    );
    Ok(())
}
