//! `qatc dump`: prints a model's verified canonical IR, optionally after a pass pipeline,
//! optionally as Graphviz DOT.

use crate::error::{write_atomic, Error, Result};
use crate::ir::{dot, text, verify};
use crate::pass::{self, DumpHook, Mode, PassEvent, PipelineOptions};
use crate::quant::scheme::{LayerOverride, Scheme};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Arguments of `qatc dump`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  qatc dump examples/mbv2_tiny.qir --dot mbv2_tiny.dot
  qatc dump mnist_cnn --pipeline default_8bit --print-after-all
  qatc dump mbv2_tiny --pipeline default_8bit,export --dot dumps/ --stats
  qatc dump mbv2_tiny --pipeline default_8bit --scheme nbit:4,8 --override 'dense=skip'")]
pub struct DumpArgs {
    /// A `.qir` file or a reference model name (mnist_cnn, mbv2_tiny).
    pub model: String,
    /// Run these pipelines or passes first, comma-separated (default_8bit, export,
    /// canonicalize, annotate, quantize, fuse_fake_quant, fold_bn, fuse_activation).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Print the graph after every pass.
    #[arg(long, requires = "pipeline")]
    pub print_after_all: bool,
    /// Print the graph after this pass (may be repeated).
    #[arg(long, value_name = "PASS", requires = "pipeline")]
    pub print_after: Vec<String>,
    /// train or eval.
    #[arg(long, default_value = "eval", value_parser = ["train", "eval"])]
    pub mode: String,
    /// default_8bit, per_tensor, nbit:W,A, lsq:W,A or pact:W,A (each of the last three also
    /// with `,per_tensor`).
    #[arg(long, default_value = "default_8bit")]
    pub scheme: String,
    /// A per-layer override, PATTERN=skip or PATTERN=ITEMS (weight_bits:N, activation_bits:N,
    /// bits:N, per_axis, per_tensor, output, no_output); the last match wins.
    #[arg(long = "override", value_name = "OVERRIDE")]
    pub overrides: Vec<String>,
    /// Let fold_bn fold BatchNorm into kernels quantized per tensor (inexact).
    #[arg(long)]
    pub allow_inexact_fold: bool,
    /// Print each pass's report (saturation, rules applied, warnings) to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Write Graphviz DOT: a file, or with --pipeline a directory with one file per pass.
    #[arg(long)]
    pub dot: Option<PathBuf>,
    /// Also save the resulting model as PATH (.qir) and its .safetensors.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}

pub fn run(args: &DumpArgs) -> Result<()> {
    let mut model = super::load_model(&args.model, 0)?;
    let Some(pipeline) = &args.pipeline else {
        verify::verify(&model.graph)?;
        let ir = text::print(&model.graph);
        // files first: a failure leaves neither a file nor a printed model behind
        if let Some(path) = &args.dot {
            write_atomic(path, dot::to_dot(&model.graph).as_bytes())?;
        }
        if let Some(path) = &args.output {
            text::save_model(&model.graph, &model.params, path)?;
        }
        return super::say(&ir);
    };
    let passes = pass::expand(pipeline)?;
    for p in &args.print_after {
        if !passes.contains(&p.as_str()) {
            return Err(Error::Usage(format!(
                "--print-after {p}: the pipeline runs {}",
                passes.join(", ")
            )));
        }
    }
    let mut opts = PipelineOptions {
        mode: Mode::parse(&args.mode)
            .ok_or_else(|| Error::Usage(format!("--mode {}: use train or eval", args.mode)))?,
        scheme: Scheme::parse(&args.scheme)?,
        allow_inexact_bn_fold: args.allow_inexact_fold,
        ..PipelineOptions::default()
    };
    for o in &args.overrides {
        opts.overrides.push(LayerOverride::parse(o)?);
    }
    // what the hook prints, in order; printed after the run so errors come first
    let printed: Arc<Mutex<Vec<String>>> = Arc::default();
    let last = passes.len();
    let print_all = args.print_after_all;
    let print_after = args.print_after.clone();
    let stats = args.stats;
    let dot_dir = args.dot.clone();
    let out = printed.clone();
    let hook: DumpHook = Arc::new(move |ev: &PassEvent<'_>| {
        if stats {
            if let Some(r) = ev.report {
                eprintln!("{r}");
            }
        }
        if let Some(dir) = &dot_dir {
            let file = dir.join(format!("{:02}-{}.dot", ev.index, ev.pass));
            write_atomic(&file, dot::to_dot(ev.graph).as_bytes())?;
        }
        let wanted = ev.index > 0
            && (print_all || print_after.iter().any(|p| p == ev.pass) || ev.index == last);
        if wanted {
            let mut s = String::new();
            if print_all || !print_after.is_empty() {
                s.push_str(&format!("# ---- after {} ({}) ----\n", ev.pass, ev.index));
            }
            s.push_str(&text::print(ev.graph));
            out.lock().expect("dump buffer").push(s);
        }
        Ok(())
    });
    opts.hooks.push(hook);
    let (graph, report) =
        pass::run_pipeline_with_report(model.graph, &mut model.params, pipeline, &opts)?;
    for w in report.warnings() {
        eprintln!("warning: {w}");
    }
    let printed = printed.lock().expect("dump buffer");
    // with --print-after, the final graph is printed only if asked for (or with -all)
    let skip_final = !args.print_after.is_empty()
        && !print_all
        && !args.print_after.iter().any(|p| p == passes[last - 1]);
    if let Some(path) = &args.output {
        text::save_model(&graph, &model.params, path)?;
    }
    let keep = printed.len() - usize::from(skip_final);
    super::say(&printed[..keep].concat())
}
