//! The whole way to an int8 TFLite model: float training of `mnist_cnn`, QAT fine-tuning of
//! its `default_8bit` graph, the `export` pipeline, `tflite::export`, and the test accuracy
//! of the int8 model in qatc's int8 interpreter next to the QAT graph's own, trained on the JIT.
//!
//! ```text
//! cargo run --release --example export_mnist -- [--samples N] [--out model.tflite]
//! ```
//!
//! The written file runs in LiteRT (`OpResolverType.BUILTIN_REF` gives the same outputs as
//! the interpreter used here, bit for bit).

use qatc::data::mnist::{self, Split};
use qatc::export::{export, ExportOptions};
use qatc::int8::Interpreter;
use qatc::jit::Jit;
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::train::{fit, FitConfig};
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> qatc::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let samples: Option<usize> = arg(&args, "--samples")
        .map(|s| s.parse())
        .transpose()
        .map_err(|e| qatc::Error::Usage(format!("--samples: {e}")))?;
    let out = arg(&args, "--out").unwrap_or_else(|| "target/mnist_cnn_int8.tflite".into());

    let dir = mnist::default_dir();
    let mut train = mnist::load(&dir, Split::Train)?;
    let test = mnist::load(&dir, Split::Test)?;
    if let Some(n) = samples {
        train = train.take(n);
    }
    let model = qatc::models::mnist_cnn(0)?;
    let quiet = FitConfig {
        progress: false,
        ..FitConfig::default()
    };
    let float = fit(
        &model.graph,
        &model.params,
        &train,
        Some(&test),
        &quiet,
        &Jit::default(),
    )?;

    let mut params = float.params.clone();
    let qat = run_pipeline(
        model.graph.clone(),
        &mut params,
        "default_8bit",
        &PipelineOptions::train(),
    )?;
    let tune = FitConfig {
        progress: false,
        ..FitConfig::qat_fine_tune()
    };
    let tuned = fit(&qat, &params, &train, Some(&test), &tune, &Jit::default())?;

    let mut params = tuned.params.clone();
    let ready = run_pipeline(qat, &mut params, "export", &PipelineOptions::eval())?;
    let bytes = export(&ready, &params, &ExportOptions::default())?;
    qatc::error::write_atomic(&out, &bytes)?;

    let it = Interpreter::new(&bytes)?;
    let start = Instant::now();
    let preds = qatc::int8::predict(&it, &test, 100)?;
    let correct = preds
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| **p as i32 == **l)
        .count();
    let acc = |h: &qatc::train::FitResult| {
        h.history
            .last()
            .and_then(|e| e.test_accuracy)
            .unwrap_or(0.0)
    };
    println!(
        "mnist_cnn, {} training samples, one epoch each",
        train.len()
    );
    println!("float:              test accuracy {:.4}", acc(&float));
    println!("QAT (fake-quant):   test accuracy {:.4}", acc(&tuned));
    println!(
        "int8 TFLite:        test accuracy {:.4} ({} bytes, {out}; 10000 images in {:.2} s)",
        correct as f64 / test.len() as f64,
        bytes.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
