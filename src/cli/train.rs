//! `qatc train`, the main job: float training, QAT fine-tuning with the default 8-bit
//! scheme, int8 TFLite export, int8 evaluation, and a report — on the MNIST files shipped
//! in `data/mnist`. `cargo run --release` with no arguments runs it with the defaults.

use super::report::{training_curve_svg, ModelFigures, Report, Stage};
use crate::data::mnist::{self, Split};
use crate::error::{write_atomic, Error, Result};
use crate::export::{self, ExportOptions};
use crate::int8;
use crate::ir::builder::Model;
use crate::ir::{dot, text, Graph, ParamStore};
use crate::pass::{run_pipeline, DumpHook, PipelineOptions};
use crate::quant::scheme::{LayerOverride, Scheme};
use crate::train::{self, fit, Backend, FitConfig, LrSchedule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `qatc train`; each overrides the same key of `--config`.
#[derive(clap::Args, Debug, Default, Clone)]
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
    /// Quantization scheme: default_8bit, nbit:W,A, per_tensor [default: default_8bit].
    #[arg(long)]
    pub scheme: Option<String>,
    /// Per-layer override, PATTERN=skip or PATTERN=ITEMS (repeatable).
    #[arg(long = "override", value_name = "OVERRIDE")]
    pub overrides: Vec<String>,
    /// Execution backend: jit (default) or interpreter (the slow reference).
    #[arg(long)]
    pub backend: Option<String>,
    /// Directory holding the MNIST IDX files.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train on the first N training images only (quick runs).
    #[arg(long)]
    pub train_samples: Option<usize>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Fold BatchNorm into per-tensor quantized kernels although the folded kernel then
    /// quantizes differently from the trained one (TFMOT #1131; per-axis kernels fold exactly).
    #[arg(long)]
    pub allow_inexact_fold: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The job's settings, as in a `--config` TOML file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    pub model: String,
    pub epochs: usize,
    pub qat_epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub qat_lr: f32,
    /// `constant` or `cosine` (cosine decay to zero over each phase).
    pub lr_schedule: String,
    pub seed: u64,
    pub out: PathBuf,
    pub scheme: String,
    pub overrides: Vec<String>,
    pub backend: String,
    pub data: PathBuf,
    /// Use only the first N training / test images (all when unset).
    pub train_samples: Option<usize>,
    pub test_samples: Option<usize>,
    /// See `--allow-inexact-fold`.
    pub allow_inexact_fold: bool,
    pub progress: bool,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
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
            progress: true,
        }
    }
}

impl JobConfig {
    /// The config file (if any) with the flags applied over it.
    pub fn from_args(args: &TrainArgs) -> Result<JobConfig> {
        let mut c = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                toml::from_str(&text)
                    .map_err(|e| Error::file(path, format!("invalid job config: {e}")))?
            }
            None => JobConfig::default(),
        };
        macro_rules! take {
            ($($field:ident),*) => { $(if let Some(v) = &args.$field { c.$field = v.clone(); })* };
        }
        take!(model, epochs, qat_epochs, batch, lr, qat_lr, seed, out, scheme, backend, data);
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
        if args.allow_inexact_fold {
            c.allow_inexact_fold = true;
        }
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::Usage("batch must be at least 1".into()));
        }
        if !(self.lr > 0.0 && self.qat_lr > 0.0) {
            return Err(Error::Usage("learning rates must be positive".into()));
        }
        if self.qat_epochs == 0 {
            return Err(Error::Usage(
                "qat_epochs must be at least 1: QAT is what calibrates the int8 ranges".into(),
            ));
        }
        self.schedule(1.0)?;
        Ok(())
    }

    /// The options of the `default_8bit` pipeline: scheme and overrides.
    fn quantize_options(&self) -> Result<PipelineOptions> {
        let mut opts = PipelineOptions::train();
        opts.scheme = Scheme::parse(&self.scheme)?;
        for o in &self.overrides {
            opts.overrides.push(LayerOverride::parse(o)?);
        }
        Ok(opts)
    }

    /// The options of the `export` pipeline.
    fn export_options(&self) -> PipelineOptions {
        let mut opts = PipelineOptions::eval();
        opts.allow_inexact_bn_fold = self.allow_inexact_fold;
        opts
    }

    fn schedule(&self, lr: f32) -> Result<LrSchedule> {
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

    fn backend(&self) -> Result<Box<dyn Backend>> {
        match self.backend.as_str() {
            "interpreter" => Ok(Box::new(train::Interpreter)),
            "jit" => Ok(Box::new(crate::jit::Jit::default())),
            other => Err(Error::Usage(format!(
                "backend `{other}`: use jit or interpreter"
            ))),
        }
    }
}

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

/// Renders `dot` to SVG with Graphviz when it is installed.
fn render_svg(dot_path: &Path) -> Option<PathBuf> {
    let svg = dot_path.with_extension("svg");
    let ok = std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg(dot_path)
        .arg("-o")
        .arg(&svg)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(svg)
}

/// Runs the whole job and returns its report (also written to `<out>/report.json`).
pub fn run_job(cfg: &JobConfig) -> Result<Report> {
    // everything that can be checked is checked before anything is written
    let backend = cfg.backend()?;
    let model = super::load_model(&cfg.model, cfg.seed)?;
    check_pipelines(cfg, &model)?;
    let fresh = !cfg.out.exists();
    let result = job(cfg, backend.as_ref(), model);
    if result.is_err() && fresh {
        // a job that fails before writing anything leaves no empty directory behind
        let _ = std::fs::remove_dir(&cfg.out);
    }
    result
}

/// Runs both pipelines on the untrained model, so a layer the scheme cannot quantize or a
/// BatchNorm that cannot fold is reported before any training, not after it.
fn check_pipelines(cfg: &JobConfig, model: &Model) -> Result<()> {
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

fn job(cfg: &JobConfig, backend: &dyn Backend, model: Model) -> Result<Report> {
    let out = &cfg.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut stages = Stages {
        done: Vec::new(),
        progress: cfg.progress,
    };
    let mut report = Report {
        backend: cfg.backend.clone(),
        seed: cfg.seed,
        batch: cfg.batch,
        float_epochs: cfg.epochs,
        qat_epochs: cfg.qat_epochs,
        ..Report::default()
    };
    let mut files = Vec::new();

    let (train_set, test_set) = stages.run("load MNIST", || {
        let limit = |d: crate::data::Dataset, n: Option<usize>| n.map_or(d.clone(), |n| d.take(n));
        Ok((
            limit(mnist::load(&cfg.data, Split::Train)?, cfg.train_samples),
            limit(mnist::load(&cfg.data, Split::Test)?, cfg.test_samples),
        ))
    })?;
    report.model = model.graph.name.clone();
    let stem = model.graph.name.clone();

    // 1. float training
    let fit_cfg = |epochs: usize, lr: f32| -> Result<FitConfig> {
        Ok(FitConfig {
            epochs,
            batch_size: cfg.batch,
            lr: cfg.schedule(lr)?,
            seed: cfg.seed,
            progress: cfg.progress,
            ..FitConfig::default()
        })
    };
    let float = stages.run("float training", || {
        fit(
            &model.graph,
            &model.params,
            &train_set,
            Some(&test_set),
            &fit_cfg(cfg.epochs, cfg.lr)?,
            backend,
        )
    })?;
    report.float = ModelFigures {
        test_accuracy: match float.history.last().and_then(|e| e.test_accuracy) {
            Some(a) => a,
            None => {
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
    let float_path = out.join(format!("{stem}_float.qir"));
    text::save_model(&model.graph, &float.params, &float_path)?;
    files.push(float_path.display().to_string());

    // 2. quantize: the default_8bit pipeline, IR dumped after every pass
    let ir_dir = out.join("ir");
    let mut qat_params = float.params.clone();
    let qat_graph = stages.run("quantize", || {
        let mut opts = cfg.quantize_options()?;
        opts.hooks.push(ir_dump_hook(ir_dir.clone(), 0));
        run_pipeline(model.graph.clone(), &mut qat_params, "default_8bit", &opts)
    })?;
    let dot_path = out.join(format!("{stem}_qat.dot"));
    write_atomic(&dot_path, dot::to_dot(&qat_graph).as_bytes())?;
    files.push(dot_path.display().to_string());
    if let Some(svg) = render_svg(&dot_path) {
        files.push(svg.display().to_string());
    }
    files.push(format!("{}/", ir_dir.display()));

    // 3. QAT fine-tuning
    let qat = stages.run("QAT fine-tuning", || {
        fit(
            &qat_graph,
            &qat_params,
            &train_set,
            Some(&test_set),
            &fit_cfg(cfg.qat_epochs, cfg.qat_lr)?,
            backend,
        )
    })?;
    report.qat = ModelFigures {
        test_accuracy: qat
            .history
            .last()
            .and_then(|e| e.test_accuracy)
            .unwrap_or_default(),
        bytes: weights_bytes(&qat.params, &qat_graph),
    };
    report.qat_train_samples_per_s = mean_throughput(&qat.history);
    let qat_path = out.join(format!("{stem}_qat.qir"));
    text::save_model(&qat_graph, &qat.params, &qat_path)?;
    files.push(qat_path.display().to_string());

    // 4. export: fold BatchNorm, fuse activations, write the int8 TFLite file
    let tflite_path = out.join(format!("{stem}_int8.tflite"));
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
    files.push(tflite_path.display().to_string());

    // 5. int8 accuracy (qatc's bit-exact integer interpreter) and agreement with QAT
    let (int8_preds, qat_preds) = stages.run("int8 evaluation", || {
        let it = int8::Interpreter::new(&tflite)?;
        let int8_preds = int8::predict(&it, &test_set, 100)?;
        let qat_preds =
            train::predict(&qat_graph, &qat.params, &test_set, cfg.batch, None, backend)?;
        Ok((int8_preds, qat_preds))
    })?;
    let n = test_set.len().max(1) as f64;
    let hits = int8_preds
        .iter()
        .zip(&test_set.labels)
        .filter(|(&p, &l)| p as i32 == l)
        .count();
    let same = int8_preds
        .iter()
        .zip(&qat_preds)
        .filter(|(a, b)| a == b)
        .count();
    report.int8 = ModelFigures {
        test_accuracy: hits as f64 / n,
        bytes: tflite.len() as u64,
    };
    report.int8_qat_agreement = same as f64 / n;

    // 6. the training curve and the metrics history
    let curve = out.join("training_curve.svg");
    write_atomic(
        &curve,
        training_curve_svg(&float.history, &qat.history).as_bytes(),
    )?;
    let csv = format!(
        "phase,{}",
        float.history.epochs_csv().lines().next().unwrap_or("")
    ) + "\n"
        + &prefix_rows("float", &float.history.epochs_csv())
        + &prefix_rows("qat", &qat.history.epochs_csv());
    write_atomic(out.join("history.csv"), csv.as_bytes())?;
    files.push(curve.display().to_string());
    files.push(out.join("history.csv").display().to_string());

    report.stages = stages.done;
    report.files = files;
    report.write_json(&out.join("report.json"))?;
    Ok(report)
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

pub fn run(args: &TrainArgs) -> Result<()> {
    let cfg = JobConfig::from_args(args)?;
    let report = run_job(&cfg)?;
    print!("{}", report.summary());
    println!("  report: {}", cfg.out.join("report.json").display());
    Ok(())
}
