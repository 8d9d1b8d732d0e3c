//! The pass manager and the passes.
//!
//! A pass takes a graph and returns a new one; a pipeline is a named list of passes:
//!
//! | pipeline | passes | result |
//! |---|---|---|
//! | `default_8bit` | canonicalize, annotate, quantize, fuse_fake_quant | QAT graph (graph form 2) |
//! | `export` | canonicalize, fold_bn, fuse_activation | export-ready graph (form 3) |
//!
//! `export` starts with `canonicalize` so that a QAT graph made in train mode loses its
//! dropout in the eval-mode export. Every pass has its own file here; a rewriting pass
//! also has its rule file `passes/<pass>.rules` with the same stem. The verifier runs after
//! every pass (`quant` markers are allowed only between `annotate` and `quantize`), and
//! dump hooks see the graph after every pass (`qatc dump --print-after-all`, `--dot`).
//!
//! ```
//! use qatc::pass::{run_pipeline, PipelineOptions};
//! let mut model = qatc::models::mnist_cnn(0).unwrap();
//! let qat = run_pipeline(model.graph, &mut model.params, "default_8bit", &PipelineOptions::train()).unwrap();
//! let export = run_pipeline(qat, &mut model.params, "export", &PipelineOptions::eval()).unwrap();
//! assert!(qatc::pass::forms::check_export_ready(&export).is_ok());
//! ```

pub mod annotate;
pub mod canonicalize;
pub mod fold_bn;
pub mod forms;
pub mod fuse_activation;
pub mod fuse_fake_quant;
#[cfg(test)]
mod model_tests;
pub mod quantize;
#[cfg(test)]
mod rule_tests;

pub use crate::rewrite::{Limits, Mode, SaturationReport};

use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use crate::ir::op::{ModelOp, PassOp};
use crate::ir::op::{Op, RangeSource};
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::verify::{verify_with, VerifyOptions};
use crate::quant::scheme::{state_params, LayerOverride, Scheme, STATE_INIT};
use crate::rewrite::rules::{self, RuleFile};
use crate::rewrite::QAnalysis;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The graph after one pass, as dump hooks see it.
pub struct PassEvent<'a> {
    /// 0 for the pipeline's input, then 1, 2, … after each pass.
    pub index: usize,
    /// The pass that just ran (`input` for the pipeline's input).
    pub pass: &'a str,
    pub graph: &'a Graph,
    pub report: Option<&'a PassReport>,
}

/// A callback that sees the graph after every pass (dumps, DOT files, statistics).
pub type DumpHook = Arc<dyn Fn(&PassEvent<'_>) -> Result<()> + Send + Sync>;

/// How a pipeline runs.
#[derive(Clone)]
pub struct PipelineOptions {
    /// Train (QAT graphs for training) or eval (inference and export).
    pub mode: Mode,
    /// What `annotate` quantizes how.
    pub scheme: Scheme,
    /// Per-layer overrides by node name or glob (the last match wins).
    pub overrides: Vec<LayerOverride>,
    /// Bounds of every saturation.
    pub limits: Limits,
    /// Verify the graph after every pass (on by default).
    pub verify: bool,
    /// Let `fold_bn` fold a BatchNorm into a kernel with a per-tensor weight quantizer
    /// (not exact; a warning says so) instead of refusing.
    pub allow_inexact_bn_fold: bool,
    /// Read `<dir>/<pass>.rules` instead of the rule files compiled into qatc.
    pub rules_dir: Option<PathBuf>,
    pub hooks: Vec<DumpHook>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            mode: Mode::Eval,
            scheme: Scheme::default_8bit(),
            overrides: Vec::new(),
            limits: Limits::default(),
            verify: true,
            allow_inexact_bn_fold: false,
            rules_dir: None,
            hooks: Vec::new(),
        }
    }
}

impl fmt::Debug for PipelineOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineOptions")
            .field("mode", &self.mode)
            .field("scheme", &self.scheme)
            .field("overrides", &self.overrides)
            .field("limits", &self.limits)
            .field("verify", &self.verify)
            .field("allow_inexact_bn_fold", &self.allow_inexact_bn_fold)
            .field("rules_dir", &self.rules_dir)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl PipelineOptions {
    /// Options for a graph that trains (QAT).
    pub fn train() -> PipelineOptions {
        PipelineOptions {
            mode: Mode::Train,
            ..PipelineOptions::default()
        }
    }

    /// Options for inference and export.
    pub fn eval() -> PipelineOptions {
        PipelineOptions::default()
    }

    pub fn with_scheme(mut self, scheme: Scheme) -> PipelineOptions {
        self.scheme = scheme;
        self
    }

    pub fn with_override(mut self, o: LayerOverride) -> PipelineOptions {
        self.overrides.push(o);
        self
    }

    pub fn with_hook(mut self, hook: DumpHook) -> PipelineOptions {
        self.hooks.push(hook);
        self
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub pass: String,
    /// The saturation of a rewriting pass.
    pub saturation: Option<SaturationReport>,
    /// Things the user should know (an inexact fold, a BatchNorm left unfolded).
    pub warnings: Vec<String>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub time: Duration,
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} -> {} nodes, {:.2} ms",
            self.pass,
            self.nodes_before,
            self.nodes_after,
            self.time.as_secs_f64() * 1e3
        )?;
        if let Some(s) = &self.saturation {
            write!(f, "\n  {s}")?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// What a pipeline did, pass by pass.
#[derive(Clone, Debug, Default)]
pub struct PipelineReport {
    pub passes: Vec<PassReport>,
}

impl PipelineReport {
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.passes.iter().flat_map(|p| &p.warnings)
    }
}

/// What a pass does to `quant` markers (for the verifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Markers {
    /// Leaves them as they are.
    Keep,
    /// Adds them (`annotate`).
    Introduce,
    /// Realizes them all (`quantize`).
    Remove,
}

/// What a pass sees besides its graph.
pub struct PassContext<'a> {
    pub params: &'a mut ParamStore,
    pub opts: &'a PipelineOptions,
    pub report: &'a mut PassReport,
}

impl PassContext<'_> {
    /// The rule file of pass `stem` (built in, or from `opts.rules_dir`).
    pub fn rules(&self, stem: &str) -> Result<Cow<'static, RuleFile>> {
        match &self.opts.rules_dir {
            Some(dir) => Ok(Cow::Owned(rules::load(dir, stem)?)),
            None => Ok(Cow::Borrowed(rules::builtin(stem)?)),
        }
    }

    /// The analysis the rules see.
    pub fn analysis(&self) -> QAnalysis {
        QAnalysis {
            mode: self.opts.mode,
            allow_inexact_fold: self.opts.allow_inexact_bn_fold,
        }
    }

    /// Saturates `g` under `passes/<stem>.rules` and extracts the best graph.
    pub fn saturate(&mut self, g: &Graph, stem: &str) -> Result<Graph> {
        let rules = self.rules(stem)?;
        let (out, report) = crate::rewrite::saturate(g, &rules, self.analysis(), self.opts.limits)?;
        if !report.saturated() {
            self.warn(format!(
                "{} did not saturate ({}); the result is the best form found so far",
                report.rule_file, report.stop
            ));
        }
        self.report.saturation = Some(report);
        Ok(out)
    }

    pub fn warn(&mut self, msg: impl Into<String>) {
        self.report.warnings.push(msg.into());
    }
}

/// A pass.
pub trait Pass: Send + Sync {
    /// Its name in pipelines, dumps and `passes/<name>.rules`.
    fn name(&self) -> &'static str;
    /// One line for `--help` and the docs.
    fn description(&self) -> &'static str;
    fn markers(&self) -> Markers {
        Markers::Keep
    }
    fn run(&self, graph: Graph, cx: &mut PassContext<'_>) -> Result<Graph>;
}

/// Every pass by name.
pub const PASSES: &[&str] = &[
    "canonicalize",
    "annotate",
    "quantize",
    "fuse_fake_quant",
    "fold_bn",
    "fuse_activation",
];

/// The named pipelines.
pub const PIPELINES: &[(&str, &[&str])] = &[
    (
        "default_8bit",
        &["canonicalize", "annotate", "quantize", "fuse_fake_quant"],
    ),
    ("export", &["canonicalize", "fold_bn", "fuse_activation"]),
];

/// The pass named `name`.
pub fn pass(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "canonicalize" => Box::new(canonicalize::Canonicalize),
        "annotate" => Box::new(annotate::Annotate),
        "quantize" => Box::new(quantize::Quantize),
        "fuse_fake_quant" => Box::new(fuse_fake_quant::FuseFakeQuant),
        "fold_bn" => Box::new(fold_bn::FoldBn),
        "fuse_activation" => Box::new(fuse_activation::FuseActivation),
        _ => return None,
    })
}

/// The passes of `spec`: a comma-separated list of pipeline and pass names
/// (`default_8bit,export`, `annotate,quantize`).
pub fn expand(spec: &str) -> Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((_, passes)) = PIPELINES.iter().find(|(n, _)| *n == item) {
            out.extend_from_slice(passes);
        } else if let Some(p) = PASSES.iter().find(|p| **p == item) {
            out.push(*p);
        } else {
            let pipelines: Vec<&str> = PIPELINES.iter().map(|(n, _)| *n).collect();
            return Err(Error::Usage(format!(
                "unknown pipeline or pass `{item}`: pipelines are {}, passes are {}",
                pipelines.join(", "),
                PASSES.join(", ")
            )));
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(format!("pipeline `{spec}` names no pass")));
    }
    Ok(out)
}

/// Runs pipeline `pipeline` (see [`expand`]) on `graph`. Passes read and write `params`:
/// `quantize` adds the quantizer states, `fold_bn` the folded kernels and biases.
pub fn run_pipeline(
    graph: Graph,
    params: &mut ParamStore,
    pipeline: &str,
    opts: &PipelineOptions,
) -> Result<Graph> {
    run_pipeline_with_report(graph, params, pipeline, opts).map(|(g, _)| g)
}

fn has_markers(g: &Graph) -> bool {
    g.node_ids()
        .any(|n| matches!(g.node(n).op, Op::Pass(PassOp::Quant(_))))
}

/// [`run_pipeline`], also returning what every pass did.
pub fn run_pipeline_with_report(
    mut graph: Graph,
    params: &mut ParamStore,
    pipeline: &str,
    opts: &PipelineOptions,
) -> Result<(Graph, PipelineReport)> {
    let names = expand(pipeline)?;
    let mut allow_markers = has_markers(&graph);
    if opts.verify {
        verify_with(&graph, VerifyOptions { allow_markers })?;
    }
    for hook in &opts.hooks {
        hook(&PassEvent {
            index: 0,
            pass: "input",
            graph: &graph,
            report: None,
        })?;
    }
    let mut report = PipelineReport::default();
    for (i, name) in names.iter().enumerate() {
        let p = pass(name).expect("expand returns known passes");
        let start = Instant::now();
        let mut pr = PassReport {
            pass: name.to_string(),
            nodes_before: graph.node_count(),
            ..PassReport::default()
        };
        let before = graph.clone();
        let mut cx = PassContext {
            params,
            opts,
            report: &mut pr,
        };
        graph = p.run(graph, &mut cx)?;
        sync_states(&before, &graph, cx.params);
        allow_markers = match p.markers() {
            Markers::Keep => allow_markers,
            Markers::Introduce => true,
            Markers::Remove => false,
        };
        if opts.verify {
            verify_with(&graph, VerifyOptions { allow_markers }).map_err(|e| {
                Error::Rewrite(format!(
                    "the graph after pass `{name}` does not verify: {e}"
                ))
            })?;
        }
        pr.nodes_after = graph.node_count();
        pr.time = start.elapsed();
        for hook in &opts.hooks {
            hook(&PassEvent {
                index: i + 1,
                pass: name,
                graph: &graph,
                report: Some(&pr),
            })?;
        }
        report.passes.push(pr);
    }
    Ok((graph, report))
}

/// The states quantizers of `g` observe (`ema`, `all_values`), and every state they name.
fn states(g: &Graph) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut observed = BTreeSet::new();
    let mut named = BTreeSet::new();
    for n in g.node_ids() {
        match &g.node(n).op {
            Op::Model(ModelOp::FakeQuant(q)) | Op::Pass(PassOp::Quant(q)) => {
                if let Some(s) = q.range.state() {
                    named.insert(s.to_string());
                    let observes = matches!(
                        q.range,
                        RangeSource::Ema { .. } | RangeSource::AllValues { .. }
                    );
                    if observes && matches!(g.node(n).op, Op::Model(ModelOp::FakeQuant(_))) {
                        observed.insert(s.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    (observed, named)
}

/// Keeps the quantizer states in `params` in step with the graph: a new observer gets its
/// `S.min`/`S.max` (initialized to [`STATE_INIT`]), a quantizer a pass removed loses them.
fn sync_states(before: &Graph, after: &Graph, params: &mut ParamStore) {
    let (observed, named) = states(after);
    for s in &observed {
        let (lo, hi) = state_params(s);
        if !params.contains(&lo) || !params.contains(&hi) {
            params.insert(lo, Tensor::scalar(STATE_INIT.0));
            params.insert(hi, Tensor::scalar(STATE_INIT.1));
        }
    }
    let (_, named_before) = states(before);
    for s in named_before.difference(&named) {
        let (lo, hi) = state_params(s);
        params.remove(&lo);
        params.remove(&hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_expand() {
        assert_eq!(
            expand("default_8bit").unwrap(),
            ["canonicalize", "annotate", "quantize", "fuse_fake_quant"]
        );
        assert_eq!(
            expand("annotate, quantize").unwrap(),
            ["annotate", "quantize"]
        );
        assert_eq!(expand("default_8bit,export").unwrap().len(), 7);
        let e = expand("default_8bit,frobnicate").unwrap_err().to_string();
        assert!(e.contains("frobnicate") && e.contains("fold_bn"), "{e}");
        for p in PASSES {
            assert_eq!(pass(p).unwrap().name(), *p);
        }
    }
}
