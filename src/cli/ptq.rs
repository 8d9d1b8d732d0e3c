//! `qatc ptq`: post-training quantization of a trained float model. The model's activation
//! ranges are observed on a few training batches (no weight changes), the `export` passes
//! run, and the int8 `.tflite` file is written and evaluated in the int8 interpreter — the
//! main job without QAT ([`crate::workflow::Job`] with `qat_epochs: 0`).

use super::train::{job_from_args, TrainArgs};
use crate::error::Result;
use crate::workflow;
use std::path::PathBuf;

/// Arguments of `qatc ptq`; each overrides the same key of `--config`.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  qatc ptq --model model.keras --data cifar-10-batches-bin --input-scale raw\n  qatc ptq --model out/mnist_cnn_float.qir --calibration-samples 1024 --range mse\n  qatc ptq --model mnist_cnn --epochs 2      # train the float model first"
)]
pub struct PtqArgs {
    /// The trained float model: a .keras/.h5 file, a .qir file with its .safetensors (such
    /// as `qatc train`'s `<model>_float.qir`), a float .tflite file, or a reference model
    /// name (then train it first with --epochs).
    #[arg(long)]
    pub model: String,
    /// Training samples whose activations set the ranges (the converter's
    /// representative dataset) [default: 512].
    #[arg(long)]
    pub calibration_samples: Option<usize>,
    /// How ranges are chosen: minmax (the TFLite converter's), percentile or percentile:P (P % of the
    /// values inside, default 99.99) or mse (least squared quantization error)
    /// [default: minmax].
    #[arg(long)]
    pub range: Option<String>,
    /// Float training epochs before quantization (the config's `epochs` is not read here)
    /// [default: 0].
    #[arg(long, default_value_t = 0)]
    pub epochs: usize,
    /// The data, as for `qatc train` [default: data/mnist].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Batch size of calibration, training and evaluation [default: 64].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate of float training, with --epochs [default: 0.001].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Seed of weights and shuffling [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory [default: out/ptq, out/analyze].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TOML file with the keys of `qatc train --config` (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Quantization scheme: default_8bit, nbit:W,A, per_tensor, or learned ranges lsq:W,A
    /// (LSQ weights and activations), pact:W,A (PACT activations) [default: default_8bit].
    #[arg(long)]
    pub scheme: Option<String>,
    /// Per-layer override, PATTERN=skip or PATTERN=ITEMS (repeatable).
    #[arg(long = "override", value_name = "OVERRIDE")]
    pub overrides: Vec<String>,
    /// Execution backend: jit (default) or interpreter.
    #[arg(long)]
    pub backend: Option<String>,
    /// Use the first N training images only (calibration takes its samples from these).
    #[arg(long)]
    pub train_samples: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Pixels as the model takes them, as for `qatc train` (raw, or a factor like 1/255).
    #[arg(long)]
    pub input_scale: Option<String>,
    /// H,W: resize the images to this size (bilinear), as for `qatc train`.
    #[arg(long)]
    pub image_size: Option<String>,
    /// Re-estimate the model's BatchNorm statistics from this many training samples before
    /// calibrating (a model whose moving statistics lag its weights) [default: 0].
    #[arg(long)]
    pub bn_samples: Option<usize>,
    /// H,W,C: build the reference model for this input shape (`--model resnet8
    /// --input-shape 28,28,1`), as Keras applications take input_shape.
    #[arg(long)]
    pub input_shape: Option<String>,
    /// Build the reference model for this many classes (its default otherwise).
    #[arg(long)]
    pub classes: Option<usize>,
    /// See `qatc train --allow-inexact-fold`.
    #[arg(long)]
    pub allow_inexact_fold: bool,
    /// `qatc ptq` only: per-layer weight widths (8, 4 or 2 bits) chosen under a budget,
    /// size=KiB or accuracy-drop=POINTS, as for `qatc train`.
    #[arg(long, value_name = "BUDGET")]
    pub mixed_precision: Option<String>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl PtqArgs {
    /// The same settings as `qatc train` flags: no QAT epochs, the calibration as the PTQ
    /// stage, `default_out` unless `--out` is given.
    pub fn train_args(&self, default_out: &str) -> TrainArgs {
        TrainArgs {
            model: Some(self.model.clone()),
            epochs: Some(self.epochs),
            qat_epochs: Some(0),
            batch: self.batch,
            lr: self.lr,
            seed: self.seed,
            out: Some(
                self.out
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(default_out)),
            ),
            config: self.config.clone(),
            scheme: self.scheme.clone(),
            overrides: self.overrides.clone(),
            backend: self.backend.clone(),
            data: self.data.clone(),
            train_samples: self.train_samples,
            test_samples: self.test_samples,
            ptq_samples: Some(self.calibration_samples.unwrap_or(512)),
            ptq_range: self.range.clone(),
            bn_samples: self.bn_samples,
            input_scale: self.input_scale.clone(),
            image_size: self.image_size.clone(),
            input_shape: self.input_shape.clone(),
            classes: self.classes,
            allow_inexact_fold: self.allow_inexact_fold,
            mixed_precision: self.mixed_precision.clone(),
            quiet: self.quiet,
            ..TrainArgs::default()
        }
    }
}

/// Runs `qatc ptq`.
pub fn run(args: &PtqArgs) -> Result<()> {
    if args.calibration_samples == Some(0) {
        return Err(crate::Error::Usage(
            "--calibration-samples 0: post-training quantization needs at least one sample".into(),
        ));
    }
    let job = job_from_args(&args.train_args("out/ptq"))?;
    let report = workflow::run(&job)?;
    super::say(&report.summary())?;
    super::say(&format!(
        "  report: {}\n",
        job.out.join("report.json").display()
    ))?;
    Ok(())
}
