//! The main job as a library call: float training, the `default_8bit` passes, the
//! post-training-quantization baseline, QAT fine-tuning, the `export` passes, the int8
//! `.tflite` file, its accuracy in the int8 interpreter, and a [`Report`] — `qatc train` is
//! [`run`] with settings from flags. `qatc ptq` is the same job with `qat_epochs: 0`: it ends
//! after the PTQ export.
//!
//! ```no_run
//! let job = qatc::workflow::Job {
//!     model: "mnist_cnn".into(),
//!     epochs: 1,
//!     qat_epochs: 1,
//!     out: "out/cnn".into(),
//!     ..Default::default()
//! };
//! let report = qatc::workflow::run(&job)?;
//! if let Some(int8) = &report.int8 {
//!     println!("int8 accuracy {:.2}%", 100.0 * int8.test_accuracy);
//! }
//! # Ok::<(), qatc::Error>(())
//! ```

mod report;
pub mod rundir;

pub use report::{training_curve_svg, ModelFigures, Report, Stage};
use rundir::{OutLock, RunDir};

use crate::analyze::mixed;
use crate::data::{self, mnist, Pixels, Split};
use crate::dist::GroupHandle;
use crate::error::{write_atomic, Error, Result};
use crate::export::{self, ExportOptions};
use crate::int8;
use crate::ir::builder::Model;
use crate::ir::op::{ModelOp, RangeSource};
use crate::ir::{dot, text, Graph, Op, ParamStore};
use crate::pass::{run_pipeline, DumpHook, PipelineOptions};
use crate::quant::scheme::{LayerOverride, Scheme};
use crate::train::{self, fit, Backend, FitConfig, LrSchedule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The job's settings, as in a `--config` TOML file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Job {
    /// The model: a reference-model name (`mnist_cnn`, `mbv2_tiny`), a Keras `.keras`/`.h5` file, a `.qir` file or a float
    /// `.tflite` file (see [`load_model`]).
    pub model: String,
    /// Float training epochs; 0 keeps the given weights untrained.
    pub epochs: usize,
    /// QAT fine-tuning epochs; 0 makes a post-training-quantization job (`qatc ptq`: the
    /// PTQ export is the result, and `ptq_samples` must be at least 1).
    pub qat_epochs: usize,
    /// Batch size of training and evaluation (at least 1).
    pub batch: usize,
    /// Initial learning rate of float training (Adam).
    pub lr: f32,
    /// Initial learning rate of QAT fine-tuning, usually 10× below `lr`.
    pub qat_lr: f32,
    /// `constant` or `cosine` (cosine decay to zero over each phase).
    pub lr_schedule: String,
    /// Seeds the initial weights and the batch shuffling, so a job is reproducible.
    pub seed: u64,
    /// The output directory (created if missing): `.qir` models, `ir/` pass dumps, the
    /// `.tflite`, `report.json`, `history.csv` and the training curve.
    pub out: PathBuf,
    /// The quantization scheme, as [`Scheme::parse`] reads it (`default_8bit`, `nbit:4,8`, …).
    pub scheme: String,
    /// Per-layer overrides as [`LayerOverride::parse`] reads them (`conv2d_1=skip`); the last
    /// match wins.
    pub overrides: Vec<String>,
    /// The training backend: `jit` (compiled, the default) or `interpreter` (the reference
    /// interpreter, alias `reference`).
    pub backend: String,
    /// The dataset ([`crate::data::load`]): a directory of MNIST-format IDX files, of CIFAR
    /// binary batches or of class folders of images, a CIFAR `.tar.gz` archive, or an `.npz`
    /// file (default: the MNIST copy in `<crate>/data/mnist`).
    pub data: PathBuf,
    /// Use only the first N training / test images (all when unset).
    pub train_samples: Option<usize>,
    /// Use only the first N test images (all when unset).
    pub test_samples: Option<usize>,
    /// See `--allow-inexact-fold`.
    pub allow_inexact_fold: bool,
    /// How pixels reach the model. Unset: scaled to `[0, 1]` by the loader (the reference
    /// models' convention). `raw`: the raw 0..255 values, for models that scale themselves
    /// (a Keras `Rescaling` layer). A number or fraction (`1/255`): raw values, and a `mul`
    /// by that factor is added as the model's first op, so the int8 file takes raw pixels.
    pub input_scale: Option<String>,
    /// Augmentation of the training batches: `crop:4,flip` (random crop after 4 pixels of
    /// zero padding, horizontal flip), seeded by `seed`; none when unset.
    pub augment: Option<String>,
    /// `H,W`: the size images are resized to (bilinear): needed for an image folder whose
    /// images differ in size, and how MNIST reaches a model built for a larger input
    /// (`mobilenet_v2_035` at 64×64).
    pub image_size: Option<String>,
    /// `H,W,C`: the input shape a reference model is built for (`resnet8` on MNIST:
    /// `28,28,1`), as Keras applications take `input_shape`; the model's default when unset.
    pub input_shape: Option<String>,
    /// The classes a reference model is built for (its default when unset: 10 for the
    /// MNIST and CIFAR models, 12 for `ds_cnn`, 2 for the visual-wake-words models).
    pub classes: Option<usize>,
    /// Training samples (the first ones, in batches of `batch`) that calibrate the
    /// post-training-quantization baseline: the float model quantized with min/max ranges,
    /// exported and evaluated beside the QAT result; 0 skips it.
    pub ptq_samples: usize,
    /// Re-estimate every BatchNorm's moving statistics after float training, from the batch
    /// statistics of this many training samples with the weights fixed
    /// ([`train::reestimate_batch_norm`]); 0 keeps the moving averages training left.
    pub bn_samples: usize,
    /// How the PTQ baseline turns the calibration activations into ranges, as
    /// [`train::RangeMethod::parse`] reads it: `minmax` (the TFLite converter's),
    /// `percentile[:P]` or `mse`.
    pub ptq_range: String,
    /// Run the per-layer sensitivity analysis ([`crate::analyze`]) on the QAT result and
    /// add it to the report (`sensitivity.csv`, `sensitivity.svg`).
    pub analyze: bool,
    /// Per-layer weight widths (8, 4 or 2 bits) chosen under a budget, as
    /// [`crate::analyze::mixed::Budget::parse`] reads it: `size=KiB` (the weights at their
    /// widths) or `accuracy-drop=POINTS`. Measured on the calibrated model with the first
    /// [`MIXED_PRECISION_SAMPLES`] training samples; the choice becomes overrides, written
    /// into the report and `run.toml`.
    pub mixed_precision: Option<String>,
    /// Also checkpoint the training state every this many steps (besides every epoch's
    /// end), so `qatc train --resume` loses at most that much work; 0: epoch ends only.
    pub checkpoint_every: u64,
    /// Progress bars and stage headers on stderr; `false` is quiet.
    pub progress: bool,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            model: "mbv2_tiny".into(),
            epochs: 5,
            qat_epochs: 2,
            batch: 64,
            lr: 1e-3,
            qat_lr: 1e-4,
            lr_schedule: "cosine".into(),
            seed: 0,
            out: PathBuf::from("out"),
            scheme: "default_8bit".into(),
            overrides: Vec::new(),
            backend: "jit".into(),
            data: mnist::default_dir(),
            train_samples: None,
            test_samples: None,
            allow_inexact_fold: false,
            input_scale: None,
            augment: None,
            image_size: None,
            input_shape: None,
            classes: None,
            ptq_samples: 512,
            bn_samples: 0,
            ptq_range: "minmax".into(),
            analyze: false,
            checkpoint_every: 200,
            mixed_precision: None,
            progress: true,
        }
    }
}

impl Job {
    /// The job of a `--config` TOML file (unknown keys are named in the error).
    pub fn from_toml_file(path: &Path) -> Result<Job> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::file(path, format!("invalid job config: {e}")))
    }

    /// Checks the settings that do not need the model or the data.
    pub fn check(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::Usage("batch must be at least 1".into()));
        }
        for (flag, lr) in [("lr", self.lr), ("qat_lr", self.qat_lr)] {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(Error::Usage(format!(
                    "{flag} is {lr}: a learning rate must be a finite positive number"
                )));
            }
        }
        for (flag, n) in [("epochs", self.epochs), ("qat_epochs", self.qat_epochs)] {
            if n > MAX_EPOCHS {
                return Err(Error::Usage(format!(
                    "{flag} is {n}: at most {MAX_EPOCHS} (a run must end)"
                )));
            }
        }
        if self.qat_epochs == 0 && self.ptq_samples == 0 {
            return Err(Error::Usage(
                "qat_epochs and ptq_samples are both 0: either QAT or post-training \
                 calibration has to set the int8 ranges"
                    .into(),
            ));
        }
        self.ptq_range()?;
        self.mixed_precision()?;
        self.schedule(1.0)?;
        self.input_scale()?;
        crate::train::Augment::parse(self.augment.as_deref().unwrap_or("none"))?;
        self.image_size()?;
        self.input_shape()?;
        Ok(())
    }

    /// The parsed `input_shape` (`H,W,C`), if given.
    pub fn input_shape(&self) -> Result<Option<[usize; 3]>> {
        let Some(s) = self.input_shape.as_deref() else {
            return Ok(None);
        };
        let bad = || Error::Usage(format!("input_shape `{s}`: expected H,W,C such as 28,28,1"));
        let dims: Vec<usize> = s
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&d| (1..=4096).contains(&d))
                    .ok_or_else(bad)
            })
            .collect::<Result<_>>()?;
        match dims.as_slice() {
            [h, w, c] => Ok(Some([*h, *w, *c])),
            _ => Err(bad()),
        }
    }

    /// The job's model: [`load_model`], a reference model built for `input_shape` and
    /// `classes` when they are given.
    pub fn load_model(&self) -> Result<Model> {
        let shape = self.input_shape()?;
        if shape.is_none() && self.classes.is_none() {
            return load_model(&self.model, self.seed);
        }
        if crate::models::defaults(&self.model).is_none() {
            return Err(Error::Usage(format!(
                "--input-shape and --classes build a reference model ({}); `{}` is not one \
                 (a model file has its own shape)",
                crate::models::NAMES.join(", "),
                self.model
            )));
        }
        crate::models::build(
            &self.model,
            self.seed,
            shape.as_ref().map(|s| &s[..]),
            self.classes,
        )
    }

    /// The parsed `mixed_precision` budget, if given.
    pub fn mixed_precision(&self) -> Result<Option<crate::analyze::mixed::Budget>> {
        self.mixed_precision
            .as_deref()
            .map(crate::analyze::mixed::Budget::parse)
            .transpose()
    }

    /// The parsed `image_size` (`H,W`), if given.
    pub fn image_size(&self) -> Result<Option<[usize; 2]>> {
        let Some(s) = self.image_size.as_deref() else {
            return Ok(None);
        };
        let bad = || Error::Usage(format!("image_size `{s}`: expected H,W such as 32,32"));
        let (h, w) = s.split_once(',').ok_or_else(bad)?;
        let dim = |v: &str| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|&d| (1..=4096).contains(&d))
                .ok_or_else(bad)
        };
        Ok(Some([dim(h)?, dim(w)?]))
    }

    /// The parsed `input_scale`: `None` for the loader's `[0, 1]` pixels, `Some(None)` for raw
    /// pixels, `Some(Some(s))` for raw pixels scaled by `s` inside the model.
    pub fn input_scale(&self) -> Result<Option<Option<f32>>> {
        let Some(s) = self.input_scale.as_deref() else {
            return Ok(None);
        };
        if s == "raw" {
            return Ok(Some(None));
        }
        let bad = || {
            Error::Usage(format!(
                "input_scale `{s}`: expected `raw`, a number or a fraction such as 1/255"
            ))
        };
        let v = match s.split_once('/') {
            Some((a, b)) => {
                let (a, b): (f32, f32) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                a / b
            }
            None => s.trim().parse().map_err(|_| bad())?,
        };
        if !(v.is_finite() && v != 0.0) {
            return Err(bad());
        }
        Ok(Some(Some(v)))
    }

    /// The parsed `ptq_range`.
    pub fn ptq_range(&self) -> Result<train::RangeMethod> {
        train::RangeMethod::parse(&self.ptq_range)
    }

    /// The options of the `default_8bit` pipeline: scheme and overrides.
    pub fn quantize_options(&self) -> Result<PipelineOptions> {
        let mut opts = PipelineOptions::train();
        opts.scheme = Scheme::parse(&self.scheme)?;
        for o in &self.overrides {
            opts.overrides.push(LayerOverride::parse(o)?);
        }
        Ok(opts)
    }

    /// The sensitivity analysis' settings: SQNRs on `ptq_samples` training samples (at least
    /// one batch).
    pub fn analyze_options(&self) -> crate::analyze::Options {
        crate::analyze::Options {
            calibration_samples: self.ptq_samples.max(self.batch),
            batch: self.batch,
            export: self.export_options(),
        }
    }

    /// The options of the `export` pipeline.
    pub fn export_options(&self) -> PipelineOptions {
        let mut opts = PipelineOptions::eval();
        opts.allow_inexact_bn_fold = self.allow_inexact_fold;
        opts
    }

    /// The training settings of one phase: `epochs` at learning rate `lr` (with the job's
    /// schedule), the job's batch, seed, augmentation and progress bars.
    pub fn fit_config(&self, epochs: usize, lr: f32) -> Result<FitConfig> {
        Ok(FitConfig {
            epochs,
            batch_size: self.batch,
            lr: self.schedule(lr)?,
            seed: self.seed,
            progress: self.progress,
            augment: crate::train::Augment::parse(self.augment.as_deref().unwrap_or("none"))?,
            ..FitConfig::default()
        })
    }

    /// The learning-rate schedule of one phase starting at `lr`, from `lr_schedule`; an error
    /// names an unknown schedule.
    pub fn schedule(&self, lr: f32) -> Result<LrSchedule> {
        match self.lr_schedule.as_str() {
            "constant" => Ok(LrSchedule::Constant { lr }),
            "cosine" => Ok(LrSchedule::Cosine {
                initial: lr,
                alpha: 0.0,
                decay_steps: None,
            }),
            other => Err(Error::Usage(format!(
                "lr_schedule `{other}`: use constant or cosine"
            ))),
        }
    }

    /// The training backend named by `backend`; an error names an unknown one.
    pub fn backend(&self) -> Result<Box<dyn Backend>> {
        self.backend_with(None)
    }

    /// [`Job::backend`] with the JIT on `threads` threads (default: all cores).
    pub fn backend_with(&self, threads: Option<usize>) -> Result<Box<dyn Backend>> {
        match self.backend.as_str() {
            "interpreter" | "reference" => Ok(Box::new(train::ReferenceBackend)),
            "jit" => {
                let mut opts = crate::jit::JitOptions::default();
                if let Some(t) = threads {
                    opts.threads = t.max(1);
                }
                Ok(Box::new(crate::jit::Jit(opts)))
            }
            other => Err(Error::Usage(format!(
                "backend `{other}`: use jit or interpreter"
            ))),
        }
    }
}

/// Training samples (the first ones) that measure the mixed-precision candidates: training
/// data, so the test set stays out of the choice it reports on.
pub const MIXED_PRECISION_SAMPLES: usize = 1000;

/// Dump files the `default_8bit` pipeline writes (its input and four passes); the export
/// pipeline's dumps are numbered after them.
const DEFAULT_8BIT_EVENTS: usize = 5;

/// Times the job's stages.
struct Stages {
    done: Vec<Stage>,
    progress: bool,
}

impl Stages {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.progress {
            eprintln!("== {name}");
        }
        let t = Instant::now();
        let r = f()?;
        self.done.push(Stage {
            name: name.to_string(),
            seconds: t.elapsed().as_secs_f64(),
        });
        Ok(r)
    }
}

/// Writes the IR after every pass into `dir` as `NN_<pass>.qir`, numbering on from `first`.
fn ir_dump_hook(dir: PathBuf, first: usize) -> DumpHook {
    Arc::new(move |ev| {
        let name = format!("{:02}_{}.qir", first + ev.index, ev.pass);
        write_atomic(dir.join(name), text::print(ev.graph).as_bytes())
    })
}

fn weights_bytes(params: &ParamStore, graph: &Graph) -> u64 {
    graph
        .params()
        .keys()
        .filter_map(|n| params.get(n))
        .map(|t| 4 * t.numel() as u64)
        .sum()
}

/// Renders `dot` to SVG beside it with Graphviz when it is installed; whether it did.
fn render_svg(dot_path: &Path) -> bool {
    let svg = dot_path.with_extension("svg");
    std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg(dot_path)
        .arg("-o")
        .arg(&svg)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the whole job and returns its report (also written to `<out>/report.json`). The
/// outputs reach `<out>` together at the end ([`rundir`]): a run that fails or is killed
/// leaves the previous run's files as they were.
pub fn run(cfg: &Job) -> Result<Report> {
    run_job(cfg, false, &Ranks::default())
}

/// How a job runs: alone (the default), or as one rank of a data-parallel run
/// ([`crate::dist`]; `mpirun -np N qatc train`).
#[derive(Clone, Debug, Default)]
pub struct Ranks {
    /// The ranks training together. Each runs the whole job on its shard of every batch;
    /// rank 0 alone writes `out` (the others work in a scratch directory they remove).
    pub group: GroupHandle,
    /// JIT threads of this rank (default: all cores).
    pub threads: Option<usize>,
}

/// [`run`] as one rank of `ranks`.
pub fn run_in(cfg: &Job, ranks: &Ranks) -> Result<Report> {
    run_job(cfg, false, ranks)
}

/// [`resume`] as one rank of `ranks`: every rank continues from rank 0's checkpoints.
pub fn resume_in(out: &Path, progress: bool, ranks: &Ranks) -> Result<Report> {
    let mut job = Job::from_toml_file(&rundir::pending_job(out)?)?;
    job.out = out.to_path_buf();
    job.progress = progress;
    run_job(&job, true, ranks)
}

/// Continues the run that was killed (or failed) in `out` from its last checkpoints, with
/// the job it was started with; it ends with the same files as a run never interrupted.
/// `progress` as in [`Job::progress`].
pub fn resume(out: &Path, progress: bool) -> Result<Report> {
    let mut job = Job::from_toml_file(&rundir::pending_job(out)?)?;
    job.out = out.to_path_buf();
    job.progress = progress;
    run_job(&job, true, &Ranks::default())
}

fn run_job(cfg: &Job, resume: bool, ranks: &Ranks) -> Result<Report> {
    // everything that can be checked is checked before anything is written
    let backend = cfg.backend_with(ranks.threads)?;
    let mut model = cfg.load_model()?;
    if let Some(Some(s)) = cfg.input_scale()? {
        scale_input(&mut model, s)?;
    }
    check_pipelines(cfg, &model)?;
    let fresh = !cfg.out.exists();
    let kept = toml::to_string(&job_to_keep(cfg))
        .map_err(|e| Error::Usage(format!("the job does not serialize: {e}")))?;
    if !ranks.group.is_root() {
        return other_rank(cfg, &kept, backend.as_ref(), model, resume, ranks);
    }
    let dir = RunDir::open(&cfg.out, &kept, resume, cfg.progress)?;
    let from = resume.then(|| cfg.out.clone());
    match job(cfg, backend.as_ref(), model, &dir, from.as_deref(), ranks) {
        Ok(report) => {
            dir.commit(report.to_json().as_bytes())?;
            Ok(report)
        }
        Err(e) => {
            let resumable = dir.abandon();
            if fresh && !resumable {
                // a job that fails before training anything leaves no empty directory behind
                let _ = std::fs::remove_dir(&cfg.out);
            }
            Err(e)
        }
    }
}

/// A rank other than 0: the same job (it must take part in every collective step), its
/// files written to a scratch directory that is removed at the end; resuming reads rank
/// 0's checkpoints.
fn other_rank(
    cfg: &Job,
    kept: &str,
    backend: &dyn Backend,
    model: Model,
    resume: bool,
    ranks: &Ranks,
) -> Result<Report> {
    // named by the rank and the run's `out`, so what a killed run left is replaced by the
    // next run into the same `out`
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    std::path::absolute(&cfg.out)
        .unwrap_or_else(|_| cfg.out.clone())
        .hash(&mut h);
    let hash = h.finish();
    let scratch = std::env::temp_dir().join(format!("qatc-rank{}-{hash:016x}", ranks.group.rank()));
    let _ = std::fs::remove_dir_all(&scratch);
    let local = Job {
        out: scratch.clone(),
        progress: false,
        ..cfg.clone()
    };
    let dir = RunDir::open(&scratch, kept, false, false)?;
    let from = resume.then(|| cfg.out.clone());
    let result = job(&local, backend, model, &dir, from.as_deref(), ranks);
    drop(dir);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The job as `--resume` reads it back: paths made absolute, so a resumed run finds the
/// model and the data from any working directory.
/// Whether some quantizer of `g` learns its range in training (`lsq`, `pact` schemes).
fn learns_ranges(g: &Graph) -> bool {
    g.node_ids().any(|n| {
        matches!(
            &g.node(n).op,
            Op::Model(ModelOp::FakeQuant(q)) if matches!(q.range, RangeSource::Learned { .. })
        )
    })
}

fn job_to_keep(cfg: &Job) -> Job {
    let absolute = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut job = cfg.clone();
    if Path::new(&job.model).exists() {
        job.model = absolute(Path::new(&job.model)).display().to_string();
    }
    job.data = absolute(&job.data);
    job
}

/// The job's training and test sets, limited to `train_samples` / `test_samples`.
fn load_data(cfg: &Job) -> Result<(crate::data::Dataset, crate::data::Dataset)> {
    let size = cfg.image_size()?;
    let pixels = if cfg.input_scale()?.is_some() {
        Pixels::Raw
    } else {
        Pixels::Unit
    };
    // image folders are resized as they are decoded; any other dataset here
    let limit = |d: crate::data::Dataset, n: Option<usize>| {
        let d = match n {
            Some(n) => d.take(n),
            None => d,
        };
        match size {
            Some([h, w]) => d.resized(h, w),
            None => d,
        }
    };
    Ok((
        limit(
            data::load_with(&cfg.data, Split::Train, pixels, size, cfg.seed)?,
            cfg.train_samples,
        ),
        limit(
            data::load_with(&cfg.data, Split::Test, pixels, size, cfg.seed)?,
            cfg.test_samples,
        ),
    ))
}

/// The data fits the model: the same per-sample input shape, and no label beyond the model's
/// classes.
fn check_data(model: &Model, data: &crate::data::Dataset, path: &Path) -> Result<()> {
    let g = &model.graph;
    let input = g
        .inputs()
        .first()
        .map(|&x| g.node(x).ty.shape[1..].to_vec())
        .unwrap_or_default();
    if input != data.sample_shape {
        return Err(Error::file(
            path,
            format!(
                "the data's images are {:?} but model `{}` takes {:?} per sample",
                data.sample_shape, g.name, input
            ),
        ));
    }
    if let Some(o) = g.outputs().first() {
        let classes = g.node(o.node).ty.shape.last().copied().unwrap_or(0);
        if let Some(i) = data
            .labels
            .iter()
            .position(|&l| l < 0 || l as usize >= classes)
        {
            return Err(Error::file(
                path,
                format!(
                    "training sample {i} has label {} but model `{}` outputs {classes} classes",
                    data.labels[i], g.name
                ),
            ));
        }
    }
    Ok(())
}

/// A model name made safe as the start of a file name in `--out`: a name read from a model
/// file (`model "../../x"` in a `.qir`) never makes qatc write outside the output directory.
pub fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        "model".to_string()
    } else {
        s.chars().take(100).collect()
    }
}

/// The most epochs a job accepts per phase.
pub const MAX_EPOCHS: usize = 10_000;

/// The param `--input-scale` adds (frozen: training leaves it as it is).
const INPUT_SCALE: &str = "input_scale";

/// Adds `input * scale` (a scalar param `input_scale`) as the model's first op.
fn scale_input(model: &mut Model, scale: f32) -> Result<()> {
    use crate::ir::op::{Activation, ModelOp};
    let g = &mut model.graph;
    let [x] = g.inputs()[..] else {
        return Err(Error::Usage(
            "input_scale needs a model with exactly one input".into(),
        ));
    };
    if g.outputs().iter().any(|o| o.node == x) {
        return Err(Error::Usage(
            "input_scale on a model whose output is its input".into(),
        ));
    }
    let users = g.users(x);
    if g.find(INPUT_SCALE).is_some() {
        return Err(Error::Usage(format!(
            "the model already has a node `{INPUT_SCALE}`"
        )));
    }
    let name = INPUT_SCALE.to_string();
    let s = g.param(name.clone(), crate::ir::TensorType::f32(vec![]))?;
    model.params.insert(name, crate::ir::Tensor::scalar(scale));
    let y = g.add(
        crate::ir::Op::Model(ModelOp::Mul {
            activation: Activation::None,
        }),
        g.unique_name("input_scale.mul"),
        &[x, s],
    )?;
    for (u, i) in users {
        g.set_operand(u, i, y);
    }
    g.freeze(INPUT_SCALE)?;
    Ok(())
}

/// Runs both pipelines on the untrained model, so a layer the scheme cannot quantize or a
/// BatchNorm that cannot fold is reported before any training, not after it.
fn check_pipelines(cfg: &Job, model: &Model) -> Result<()> {
    let mut params = model.params.clone();
    let qat = run_pipeline(
        model.graph.clone(),
        &mut params,
        "default_8bit",
        &cfg.quantize_options()?,
    )?;
    run_pipeline(qat, &mut params, "export", &cfg.export_options())?;
    Ok(())
}

fn job(
    cfg: &Job,
    backend: &dyn Backend,
    model: Model,
    dir: &RunDir,
    resume_from: Option<&Path>,
    ranks: &Ranks,
) -> Result<Report> {
    // the checkpoint of a phase, and the one to continue from when resuming (the run in
    // `resume_from`: this one, or rank 0's)
    let phase = |name: &str, epochs: usize, lr: f32| -> Result<FitConfig> {
        let ckpt = dir.checkpoint(name);
        let from = resume_from.map(|out| rundir::checkpoint_in(out, name));
        Ok(FitConfig {
            resume: from.filter(|p| p.exists()),
            checkpoint: Some(ckpt),
            checkpoint_every: (cfg.checkpoint_every > 0).then_some(cfg.checkpoint_every),
            group: ranks.group.clone(),
            ..cfg.fit_config(epochs, lr)?
        })
    };
    let mut stages = Stages {
        done: Vec::new(),
        progress: cfg.progress,
    };
    let mut report = Report {
        backend: cfg.backend.clone(),
        data: cfg.data.file_name().map_or_else(
            || cfg.data.display().to_string(),
            |n| n.to_string_lossy().into(),
        ),
        seed: cfg.seed,
        batch: cfg.batch,
        float_epochs: cfg.epochs,
        qat_epochs: cfg.qat_epochs,
        ranks: ranks.group.size(),
        ..Report::default()
    };
    // the outputs, by their names in `out`
    let mut files: Vec<String> = Vec::new();

    let (train_set, test_set) = stages.run("load data", || load_data(cfg))?;
    check_data(&model, &train_set, &cfg.data)?;
    report.model = model.graph.name.clone();
    let stem = file_stem(&model.graph.name);

    // 1. float training
    let mut float = stages.run("float training", || {
        fit(
            &model.graph,
            &model.params,
            &train_set,
            Some(&test_set),
            &phase("float", cfg.epochs, cfg.lr)?,
            backend,
        )
    })?;
    let reestimated = cfg.bn_samples > 0;
    if reestimated {
        float.params = stages.run("BatchNorm re-estimation", || {
            train::reestimate_batch_norm(
                &model.graph,
                &float.params,
                &train_set,
                cfg.bn_samples,
                cfg.batch,
                backend,
            )
        })?;
    }
    report.float = ModelFigures {
        test_accuracy: match float.history.last().and_then(|e| e.test_accuracy) {
            Some(a) if !reestimated => a,
            _ => {
                train::evaluate(
                    &model.graph,
                    &float.params,
                    &test_set,
                    cfg.batch,
                    None,
                    backend,
                )?
                .accuracy
            }
        },
        bytes: weights_bytes(&float.params, &model.graph),
    };
    report.float_train_samples_per_s = mean_throughput(&float.history);
    let float_name = format!("{stem}_float.qir");
    text::save_model(&model.graph, &float.params, dir.path(&float_name))?;
    files.extend([float_name, format!("{stem}_float.safetensors")]);

    // 2. quantize: the default_8bit pipeline, IR dumped after every pass
    let ir_dir = dir.path("ir");
    let mut qat_params = float.params.clone();
    let mut qat_graph = stages.run("quantize", || {
        let mut opts = cfg.quantize_options()?;
        opts.hooks.push(ir_dump_hook(ir_dir.clone(), 0));
        run_pipeline(model.graph.clone(), &mut qat_params, "default_8bit", &opts)
    })?;
    // the job as it runs; with mixed precision, its chosen overrides added (`qatc train
    // --config run.toml` runs it again)
    let mut as_run = cfg.clone();

    // 2b. mixed precision: each layer's weights at lower widths, measured on the model
    //     calibrated like the PTQ baseline; the choice is quantized again as overrides
    if let Some(budget) = cfg.mixed_precision()? {
        let choice = stages.run("mixed precision", || {
            let calibrated = train::calibrate(
                &qat_graph,
                &qat_params,
                &train_set,
                cfg.ptq_samples.max(1),
                cfg.batch,
                cfg.ptq_range()?,
                backend,
            )?;
            let validation = train_set.take(MIXED_PRECISION_SAMPLES);
            let m = mixed::measure(
                &qat_graph,
                &calibrated,
                &validation,
                &[4, 2],
                cfg.batch,
                backend,
            )?;
            mixed::choose(&m, budget)
        })?;
        as_run.overrides.extend(choice.overrides.iter().cloned());
        as_run.mixed_precision = None;
        let mut opts = as_run.quantize_options()?;
        opts.hooks.push(ir_dump_hook(ir_dir.clone(), 0));
        qat_params = float.params.clone();
        qat_graph = run_pipeline(model.graph.clone(), &mut qat_params, "default_8bit", &opts)?;
        report.mixed_precision = Some(choice);
    }
    let run_toml = toml::to_string(&job_to_keep(&as_run))
        .map_err(|e| Error::Usage(format!("the job does not serialize: {e}")))?;
    write_atomic(dir.path("run.toml"), run_toml.as_bytes())?;
    files.push("run.toml".into());
    let dot_name = format!("{stem}_qat.dot");
    let dot_path = dir.path(&dot_name);
    write_atomic(&dot_path, dot::to_dot(&qat_graph).as_bytes())?;
    files.push(dot_name);
    if render_svg(&dot_path) {
        files.push(format!("{stem}_qat.svg"));
    }
    files.push("ir/".into());

    // 3. post-training quantization, the baseline QAT has to beat: the float model's
    //    activation ranges observed (min/max) on calibration samples, no weight updates
    if cfg.ptq_samples > 0 {
        let ptq_name = format!("{stem}_ptq_int8.tflite");
        let ptq_path = dir.path(&ptq_name);
        let figures = stages.run("post-training quantization", || {
            let mut params = train::calibrate(
                &qat_graph,
                &qat_params,
                &train_set,
                cfg.ptq_samples,
                cfg.batch,
                cfg.ptq_range()?,
                backend,
            )?;
            let ready = run_pipeline(
                qat_graph.clone(),
                &mut params,
                "export",
                &cfg.export_options(),
            )?;
            let bytes = export::export(&ready, &params, &ExportOptions::default())?;
            write_atomic(&ptq_path, &bytes)?;
            let it = int8::Interpreter::new(&bytes)?;
            let preds = int8::predict(&it, &test_set, 100)?;
            Ok(ModelFigures {
                test_accuracy: int8::accuracy(&preds, &test_set.labels),
                bytes: bytes.len() as u64,
            })
        })?;
        report.ptq = Some(figures);
        report.ptq_samples = cfg.ptq_samples.min(train_set.len());
        report.ptq_range = cfg.ptq_range()?.name();
        files.push(ptq_name);
    }
    if cfg.qat_epochs == 0 {
        // a post-training-quantization job ends with its int8 file
        finish(dir, &float.history, &Default::default(), &mut files)?;
        report.stages = stages.done;
        report.files = files.iter().map(|f| dir.listed(f)).collect();
        return Ok(report);
    }

    // 4. QAT fine-tuning; learned ranges start from a calibration (as the PTQ baseline's)
    let qat = stages.run("QAT fine-tuning", || {
        let start = if learns_ranges(&qat_graph) {
            train::calibrate(
                &qat_graph,
                &qat_params,
                &train_set,
                cfg.ptq_samples.max(cfg.batch),
                cfg.batch,
                cfg.ptq_range()?,
                backend,
            )?
        } else {
            qat_params.clone()
        };
        fit(
            &qat_graph,
            &start,
            &train_set,
            Some(&test_set),
            &phase("qat", cfg.qat_epochs, cfg.qat_lr)?,
            backend,
        )
    })?;
    report.qat = Some(ModelFigures {
        test_accuracy: qat
            .history
            .last()
            .and_then(|e| e.test_accuracy)
            .unwrap_or_default(),
        bytes: weights_bytes(&qat.params, &qat_graph),
    });
    report.qat_train_samples_per_s = mean_throughput(&qat.history);
    for e in float.history.epochs.iter().chain(&qat.history.epochs) {
        report.data_load_seconds += e.data_load_seconds;
        report.data_wait_seconds += e.data_wait_seconds;
    }
    let qat_name = format!("{stem}_qat.qir");
    text::save_model(&qat_graph, &qat.params, dir.path(&qat_name))?;
    files.extend([qat_name, format!("{stem}_qat.safetensors")]);

    // 5. export: fold BatchNorm, fuse activations, write the int8 TFLite file
    let tflite_name = format!("{stem}_int8.tflite");
    let tflite_path = dir.path(&tflite_name);
    let tflite = stages.run("int8 export", || {
        let mut params = qat.params.clone();
        let mut opts = cfg.export_options();
        opts.hooks
            .push(ir_dump_hook(ir_dir.clone(), DEFAULT_8BIT_EVENTS));
        let ready = run_pipeline(qat_graph.clone(), &mut params, "export", &opts)?;
        let bytes = export::export(&ready, &params, &ExportOptions::default())?;
        write_atomic(&tflite_path, &bytes)?;
        Ok(bytes)
    })?;
    files.push(tflite_name);

    // 6. int8 accuracy (qatc's bit-exact integer interpreter) and agreement with QAT
    let (int8_preds, qat_preds) = stages.run("int8 evaluation", || {
        let it = int8::Interpreter::new(&tflite)?;
        let int8_preds = int8::predict(&it, &test_set, 100)?;
        let qat_preds =
            train::predict(&qat_graph, &qat.params, &test_set, cfg.batch, None, backend)?;
        Ok((int8_preds, qat_preds))
    })?;
    let n = test_set.len().max(1) as f64;
    let same = int8_preds
        .iter()
        .zip(&qat_preds)
        .filter(|(a, b)| a == b)
        .count();
    report.int8 = Some(ModelFigures {
        test_accuracy: int8::accuracy(&int8_preds, &test_set.labels),
        bytes: tflite.len() as u64,
    });
    report.int8_qat_agreement = same as f64 / n;
    if cfg.analyze {
        let analysis = stages.run("sensitivity analysis", || {
            crate::analyze::analyze(
                &qat_graph,
                &qat.params,
                &train_set,
                &test_set,
                &cfg.analyze_options(),
                backend,
            )
        })?;
        files.extend(write_analysis(&|name| dir.path(name), &analysis)?);
        report.sensitivity = Some(analysis);
    }

    // 7. the training curve and the metrics history
    finish(dir, &float.history, &qat.history, &mut files)?;
    report.stages = stages.done;
    report.files = files.iter().map(|f| dir.listed(f)).collect();
    Ok(report)
}

/// Writes an analysis as `sensitivity.csv`, `.svg` and `.json` at `path(name)`; returns the
/// names.
fn write_analysis(
    path: &dyn Fn(&str) -> PathBuf,
    a: &crate::analyze::Analysis,
) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for (name, text) in [
        ("sensitivity.csv", a.csv()),
        ("sensitivity.svg", a.svg()),
        (
            "sensitivity.json",
            serde_json::to_string_pretty(a).expect("an analysis serializes"),
        ),
    ] {
        write_atomic(path(name), text.as_bytes())?;
        files.push(name.to_string());
    }
    Ok(files)
}

/// `qatc analyze`: the sensitivity of every layer of `cfg.model`. A model that is already
/// quantized (a QAT `.qir` with its ranges) is analyzed as it is; a float model is first
/// trained for `epochs` (if any), quantized with the job's scheme and calibrated like the
/// PTQ baseline (`ptq_samples`, `ptq_range`). Writes `sensitivity.{csv,svg,json}` into
/// `cfg.out`.
pub fn analyze(cfg: &Job) -> Result<crate::analyze::Analysis> {
    let backend = cfg.backend()?;
    let mut model = cfg.load_model()?;
    if let Some(Some(s)) = cfg.input_scale()? {
        scale_input(&mut model, s)?;
    }
    let (train_set, test_set) = load_data(cfg)?;
    check_data(&model, &train_set, &cfg.data)?;
    let quantized = model.graph.node_ids().any(|n| {
        matches!(
            model.graph.node(n).op,
            crate::ir::Op::Model(crate::ir::op::ModelOp::FakeQuant(_))
        )
    });
    let (qat, params) = if quantized {
        (model.graph, model.params)
    } else {
        check_pipelines(cfg, &model)?;
        let mut params = if cfg.epochs > 0 {
            let fit_cfg = cfg.fit_config(cfg.epochs, cfg.lr)?;
            fit(
                &model.graph,
                &model.params,
                &train_set,
                None,
                &fit_cfg,
                backend.as_ref(),
            )?
            .params
        } else {
            model.params
        };
        let qat = run_pipeline(
            model.graph,
            &mut params,
            "default_8bit",
            &cfg.quantize_options()?,
        )?;
        let params = train::calibrate(
            &qat,
            &params,
            &train_set,
            cfg.ptq_samples.max(1),
            cfg.batch,
            cfg.ptq_range()?,
            backend.as_ref(),
        )?;
        (qat, params)
    };
    let analysis = crate::analyze::analyze(
        &qat,
        &params,
        &train_set,
        &test_set,
        &cfg.analyze_options(),
        backend.as_ref(),
    )?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let _lock = OutLock::take(&cfg.out)?;
    write_analysis(&|name| cfg.out.join(name), &analysis)?;
    Ok(analysis)
}

/// Writes the training curve and the metrics history of both phases (an empty QAT history
/// for a post-training-quantization job).
fn finish(
    dir: &RunDir,
    float: &train::metrics::History,
    qat: &train::metrics::History,
    files: &mut Vec<String>,
) -> Result<()> {
    write_atomic(
        dir.path("training_curve.svg"),
        training_curve_svg(float, qat).as_bytes(),
    )?;
    let csv = format!("phase,{}", float.epochs_csv().lines().next().unwrap_or(""))
        + "\n"
        + &prefix_rows("float", &float.epochs_csv())
        + &prefix_rows("qat", &qat.epochs_csv());
    write_atomic(dir.path("history.csv"), csv.as_bytes())?;
    files.extend(["training_curve.svg".into(), "history.csv".into()]);
    Ok(())
}

fn prefix_rows(phase: &str, csv: &str) -> String {
    csv.lines()
        .skip(1)
        .map(|l| format!("{phase},{l}\n"))
        .collect()
}

fn mean_throughput(h: &train::metrics::History) -> f64 {
    if h.epochs.is_empty() {
        return 0.0;
    }
    h.epochs.iter().map(|e| e.samples_per_s).sum::<f64>() / h.epochs.len() as f64
}

/// Loads a model given as a reference-model name (`mnist_cnn`), a `.qir` file (with the
/// `.safetensors` weights beside it, or Keras' default initial values drawn from `seed` when
/// there is none), or a float `.tflite` file (imported with its weights).
pub fn load_model(spec: &str, seed: u64) -> Result<Model> {
    let path = Path::new(spec);
    match path.extension().and_then(|e| e.to_str()) {
        Some("qir") => {
            let (graph, mut params) = text::load_model(path)?;
            if params.is_empty() && !graph.params().is_empty() {
                params = crate::ir::builder::init_params(&graph, seed)?;
            }
            Ok(Model { graph, params })
        }
        Some("tflite") => {
            let bytes = crate::error::read_file(path)?;
            let (mut graph, params) = crate::import::tflite::import(&bytes)
                .map_err(|e| Error::file(path, format!("cannot import: {e}")))?;
            let quantized = graph.canonical_order().into_iter().any(|n| {
                matches!(
                    graph.node(n).op,
                    crate::ir::Op::Model(crate::ir::op::ModelOp::FakeQuant(_))
                )
            });
            if quantized {
                return Err(Error::file(
                    path,
                    "an int8 model; qatc trains float models (convert the Keras model \
                     without `optimizations`, or give its .qir)",
                ));
            }
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                graph.name = stem.to_string();
            }
            Ok(Model { graph, params })
        }
        Some("keras" | "h5") => {
            let mut m = crate::import::keras::load(path)?;
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                m.graph.name = stem.to_string();
            }
            Ok(m)
        }
        Some(ext) => Err(Error::Usage(format!(
            "{spec}: unsupported model file type `.{ext}` (use a .keras, .h5, .qir or float \
             .tflite file, or one of {})",
            crate::models::NAMES.join(", ")
        ))),
        None => crate::models::by_name(spec, seed),
    }
}
