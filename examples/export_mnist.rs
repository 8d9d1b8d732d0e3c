//! The whole way to an int8 TFLite model: float training of `mnist_cnn`, QAT fine-tuning of
//! its `default_8bit` graph, the `export` pipeline, `tflite::export`, and the test accuracy
//! of the int8 model in qatc's int8 interpreter next to the QAT graph's own.
//!
//! ```text
//! cargo run --release --example export_mnist -- [--samples N] [--out model.tflite]
//! ```
//!
//! The written file runs in LiteRT (`OpResolverType.BUILTIN_REF` gives the same outputs as
//! the interpreter used here, bit for bit).

use qatc::data::mnist::{self, Split};
use qatc::int8::{Array, Interpreter};
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::tflite::export::{export, ExportOptions};
use qatc::train::{fit, FitConfig, Interpreter as InterpBackend};
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
        &InterpBackend,
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
    let tuned = fit(&qat, &params, &train, Some(&test), &tune, &InterpBackend)?;

    let mut params = tuned.params.clone();
    let ready = run_pipeline(qat, &mut params, "export", &PipelineOptions::eval())?;
    let bytes = export(&ready, &params, &ExportOptions::default())?;
    qatc::error::write_atomic(&out, &bytes)?;

    let it = Interpreter::new(&bytes)?;
    let start = Instant::now();
    let mut correct = 0;
    for (b, chunk) in test.labels.chunks(100).enumerate() {
        let x = Array::f32(
            vec![chunk.len(), 28, 28, 1],
            test.images[b * 100 * 784..(b * 100 + chunk.len()) * 784].to_vec(),
        )
        .expect("sized");
        let y = it.run(&[x])?;
        let y = y[0].as_f32().expect("float output");
        for (k, &label) in chunk.iter().enumerate() {
            let row = &y[k * 10..(k + 1) * 10];
            let pred = (0..10).fold(0, |best, i| if row[i] > row[best] { i } else { best });
            correct += usize::from(pred as i32 == label);
        }
    }
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
