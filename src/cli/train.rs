//! `qatc train`, the main job: float training, QAT fine-tuning with the default 8-bit
//! scheme, int8 TFLite export, int8 evaluation, and a report — on the MNIST files shipped
//! in `data/mnist`. `cargo run --release` with no arguments runs it with the defaults.

use crate::error::Result;
use crate::workflow::{self, Job};
use std::path::PathBuf;

/// Arguments of `qatc train`; each overrides the same key of `--config`.
#[derive(clap::Args, Debug, Default, Clone, PartialEq)]
#[command(
    after_help = "Examples:\n  qatc train                                   # mbv2_tiny: float, QAT, int8 export into out/\n  qatc train --model mnist_cnn --epochs 1 --qat-epochs 1 --out out/cnn\n  qatc train --config job.toml --seed 3"
)]
pub struct TrainArgs {
    /// A reference model (mnist_cnn, mbv2_tiny), a .qir file (with the .safetensors beside
    /// it, or Keras' initial values from --seed), or a float .tflite file [default: mbv2_tiny].
    #[arg(long)]
    pub model: Option<String>,
    /// Float training epochs, 0 to start QAT from the given weights [default: 5].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// QAT fine-tuning epochs [default: 2].
    #[arg(long)]
    pub qat_epochs: Option<usize>,
    /// Batch size of both phases [default: 64].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate of float training (Adam, cosine decay) [default: 0.001].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning rate of QAT fine-tuning (Adam, cosine decay) [default: 0.0001].
    #[arg(long)]
    pub qat_lr: Option<f32>,
    /// Seed of weights, shuffling and dropout: the same seed gives the same model bytes
    /// [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory [default: out].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TOML file with the same keys as these flags (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Quantization scheme: default_8bit, nbit:W,A, per_tensor, or learned ranges lsq:W,A
    /// (LSQ weights and activations), pact:W,A (PACT activations) [default: default_8bit].
    #[arg(long)]
    pub scheme: Option<String>,
    /// Per-layer override, PATTERN=skip or PATTERN=ITEMS (repeatable).
    #[arg(long = "override", value_name = "OVERRIDE")]
    pub overrides: Vec<String>,
    /// Execution backend: jit (default) or interpreter (the slow reference).
    #[arg(long)]
    pub backend: Option<String>,
    /// The data: a directory of MNIST-format IDX files (any image size), of CIFAR-10/100
    /// binary batches, the CIFAR archive as downloaded (cifar-10-binary.tar.gz), or an .npz
    /// with x_train, y_train, x_test, y_test [default: data/mnist].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train on the first N training images only (quick runs).
    #[arg(long)]
    pub train_samples: Option<usize>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Training samples that calibrate the post-training-quantization baseline (the float
    /// model's ranges, no weight updates), 0 to skip it [default: 512].
    #[arg(long)]
    pub ptq_samples: Option<usize>,
    /// Re-estimate the BatchNorm statistics after float training from this many training
    /// samples, weights fixed (models trained with a slow BatchNorm momentum, such as 0.999
    /// in MobileNetV2) [default: 0, keep the moving averages].
    #[arg(long)]
    pub bn_samples: Option<usize>,
    /// How the PTQ baseline chooses ranges: minmax (the TFLite converter's), percentile:P
    /// (P % of the values inside, default 99.99) or mse (least squared error) [default: minmax].
    #[arg(long)]
    pub ptq_range: Option<String>,
    /// Pixels as the model takes them: `raw` (0..255, for a model with its own Rescaling), or
    /// a factor such as `1/255` added to the model as its first op (so the int8 file takes
    /// raw pixels); unset: scaled to [0, 1] by the loader.
    #[arg(long)]
    pub input_scale: Option<String>,
    /// Augment the training images: crop:N (random crop after N pixels of zero padding)
    /// and/or flip (horizontal), e.g. crop:4,flip; seeded by --seed.
    #[arg(long)]
    pub augment: Option<String>,
    /// H,W: resize the images to this size (bilinear): image folders of mixed sizes, or
    /// MNIST for a model built for a larger input.
    #[arg(long)]
    pub image_size: Option<String>,
    /// H,W,C: build the reference model for this input shape (`--model resnet8
    /// --input-shape 28,28,1`), as Keras applications take input_shape.
    #[arg(long)]
    pub input_shape: Option<String>,
    /// Build the reference model for this many classes (its default otherwise).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Fold BatchNorm into per-tensor quantized kernels although the folded kernel then
    /// quantizes differently from the trained one (TFMOT #1131; per-axis kernels fold exactly).
    #[arg(long)]
    pub allow_inexact_fold: bool,
    /// Also measure every layer's quantization sensitivity on the QAT result (a table in the
    /// summary, sensitivity.csv/.svg/.json in --out).
    #[arg(long)]
    pub analyze: bool,
    /// Per-layer weight widths (8, 4 or 2 bits) chosen from measurements under a budget:
    /// size=KiB (the weights at their widths) or accuracy-drop=POINTS; the choice is written
    /// as overrides into the report and run.toml.
    #[arg(long, value_name = "BUDGET")]
    pub mixed_precision: Option<String>,
    /// Checkpoint the training state every N steps, besides every epoch's end (0: epoch
    /// ends only) [default: 200].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue the run that was killed (or failed) in output directory OUT from its last
    /// checkpoint, with the settings it was started with (no other flag but --quiet); it
    /// ends with the same files as a run never interrupted.
    #[arg(long, value_name = "OUT")]
    pub resume: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// JIT threads (default: all cores; under mpirun, the cores shared among the ranks on
    /// each machine).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Under mpirun: how long a rank waits for a peer in a reduction before it stops the
    /// whole job with an error naming the silent rank [default: 600].
    #[arg(long, value_name = "SECS")]
    pub mpi_timeout: Option<f64>,
}

/// The job of `--config` (if any) with the flags applied over it.
pub fn job_from_args(args: &TrainArgs) -> Result<Job> {
    let mut c = match &args.config {
        Some(path) => Job::from_toml_file(path)?,
        None => Job::default(),
    };
    macro_rules! take {
        ($($field:ident),*) => { $(if let Some(v) = &args.$field { c.$field = v.clone(); })* };
    }
    take!(
        model,
        epochs,
        qat_epochs,
        batch,
        lr,
        qat_lr,
        seed,
        out,
        scheme,
        backend,
        data,
        ptq_samples,
        bn_samples,
        ptq_range,
        checkpoint_every
    );
    if args.train_samples.is_some() {
        c.train_samples = args.train_samples;
    }
    if args.test_samples.is_some() {
        c.test_samples = args.test_samples;
    }
    c.overrides.extend(args.overrides.iter().cloned());
    if args.quiet {
        c.progress = false;
    }
    if args.input_scale.is_some() {
        c.input_scale = args.input_scale.clone();
    }
    if args.augment.is_some() {
        c.augment = args.augment.clone();
    }
    if args.image_size.is_some() {
        c.image_size = args.image_size.clone();
    }
    if args.input_shape.is_some() {
        c.input_shape = args.input_shape.clone();
    }
    if args.classes.is_some() {
        c.classes = args.classes;
    }
    if args.allow_inexact_fold {
        c.allow_inexact_fold = true;
    }
    if args.analyze {
        c.analyze = true;
    }
    if args.mixed_precision.is_some() {
        c.mixed_precision = args.mixed_precision.clone();
    }
    c.check()?;
    Ok(c)
}

/// Runs `qatc train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let launch = super::ranks::Launch::join(args.mpi_timeout.unwrap_or(600.0), args.threads)?;
    run_as(args, &launch).map_err(|e| launch.fail(e))
}

fn run_as(args: &TrainArgs, launch: &super::ranks::Launch) -> Result<()> {
    let ranks = &launch.ranks;
    let (result, out) = match &args.resume {
        Some(out) => {
            let only_resume = TrainArgs {
                resume: args.resume.clone(),
                quiet: args.quiet,
                threads: args.threads,
                mpi_timeout: args.mpi_timeout,
                ..TrainArgs::default()
            };
            if *args != only_resume {
                return Err(crate::Error::Usage(format!(
                    "--resume continues the run in {} with the settings it was started with: \
                     give no other flag but --quiet, --threads and --mpi-timeout",
                    out.display()
                )));
            }
            (workflow::resume_in(out, !args.quiet, ranks), out.clone())
        }
        None => {
            let job = job_from_args(args)?;
            (workflow::run_in(&job, ranks), job.out)
        }
    };
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if ranks.group.is_root() && workflow::rundir::resumable(&out) {
                eprintln!(
                    "note: the run's checkpoints are kept in {}: `qatc train --resume {}` \
                     continues it",
                    out.join(workflow::rundir::STAGE).display(),
                    out.display()
                );
            }
            return Err(e);
        }
    };
    if !ranks.group.is_root() {
        return Ok(());
    }
    super::say(&report.summary())?;
    super::say(&format!(
        "  report: {}\n",
        out.join("report.json").display()
    ))?;
    Ok(())
}
