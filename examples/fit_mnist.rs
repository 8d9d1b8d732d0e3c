//! TFMOT's recipe on `mnist_cnn` with `qatc::train::fit` on the reference interpreter:
//! float training (Adam 1e-3, batch 64, one epoch), then QAT fine-tuning of the
//! default_8bit graph from the float weights (Adam 1e-4, one epoch), test accuracy of both.
//!
//! ```text
//! cargo run --release --example fit_mnist -- [--samples N] [--quiet]
//! ```
//!
//! The QAT graph is written out here by hand, in the placement `default_8bit` produces
//! (CONTRACTS form 2), so this runs before the passes pipeline is on main.

use qatc::data::mnist::{self, Split};
use qatc::ir::text::parse;
use qatc::train::{fit, FitConfig, Interpreter};

const MNIST_CNN_QAT: &str = r#"
model "mnist_cnn"
param @conv2d.kernel : f32[12,3,3,1]
param @conv2d.bias : f32[12]
param @dense.kernel : f32[10,2028]
param @dense.bias : f32[10]
%0 = input "input" : f32[1,28,28,1]
%1 = fake_quant "input.fq" (%0) {bits=8, range=all_values, state="input.fq"}
%2 = fake_quant "conv2d.kernel.fq" (@conv2d.kernel) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = conv2d "conv2d" (%1, %2, @conv2d.bias) {stride=[1,1], padding=valid}
%4 = relu "conv2d.relu" (%3)
%5 = fake_quant "conv2d.relu.fq" (%4) {bits=8, range=ema, state="conv2d.relu.fq", decay=0.999}
%6 = max_pool2d "max_pooling2d" (%5) {size=[2,2], stride=[2,2], padding=valid}
%7 = flatten "flatten" (%6)
%8 = fake_quant "dense.kernel.fq" (@dense.kernel) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%9 = dense "dense" (%7, %8, @dense.bias)
%10 = fake_quant "dense.fq" (%9) {bits=8, range=ema, state="dense.fq", decay=0.999}
output "output" = %10
"#;

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
        &Interpreter,
    )?;
    let f = float.history.last().expect("one epoch");

    let qat = parse(MNIST_CNN_QAT, "mnist_cnn_qat.qir")?;
    let qat_cfg = FitConfig {
        progress,
        ..FitConfig::qat_fine_tune()
    };
    let tuned = fit(
        &qat,
        &float.params,
        &train,
        Some(&test),
        &qat_cfg,
        &Interpreter,
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
