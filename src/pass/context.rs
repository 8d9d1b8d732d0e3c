//! What a pass is and sees: the [`Pass`] trait, the [`PassContext`] (params, options,
//! rule files, saturation), the options a pipeline runs with, and the reports passes and
//! pipelines give.

use crate::error::Result;
use crate::ir::graph::Graph;
use crate::ir::params::ParamStore;
use crate::quant::scheme::{LayerOverride, Scheme};
use crate::rewrite::rules::{self, RuleFile};
use crate::rewrite::{Limits, Mode, QAnalysis, SaturationReport};
use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The graph after one pass, as dump hooks see it.
pub struct PassEvent<'a> {
    /// 0 for the pipeline's input, then 1, 2, … after each pass.
    pub index: usize,
    /// The pass that just ran (`input` for the pipeline's input).
    pub pass: &'a str,
    /// The graph after the pass (verified when [`PipelineOptions::verify`] is on).
    pub graph: &'a Graph,
    /// The pass's report; `None` for the pipeline's input (index 0).
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
    /// Check the forms that take a walk over the graph's structure (QAT, export-ready)
    /// after every pipeline step also in release builds (debug builds always do).
    pub check_forms: bool,
    /// Let `fold_bn` fold a BatchNorm into a kernel with a per-tensor weight quantizer
    /// (not exact; a warning says so) instead of refusing.
    pub allow_inexact_bn_fold: bool,
    /// Read `<dir>/<pass>.rules` instead of the rule files compiled into qatc.
    pub rules_dir: Option<PathBuf>,
    /// Callbacks run on the input and after every pass (`qatc dump`'s per-pass files); a hook's
    /// error aborts the pipeline.
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
            check_forms: false,
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
            .field("check_forms", &self.check_forms)
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

    /// The same options with `scheme` for `annotate`.
    pub fn with_scheme(mut self, scheme: Scheme) -> PipelineOptions {
        self.scheme = scheme;
        self
    }

    /// The same options with `o` appended to the overrides (so it wins over earlier matches).
    pub fn with_override(mut self, o: LayerOverride) -> PipelineOptions {
        self.overrides.push(o);
        self
    }

    /// The same options with `hook` appended to the dump hooks.
    pub fn with_hook(mut self, hook: DumpHook) -> PipelineOptions {
        self.hooks.push(hook);
        self
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    /// The pass's name.
    pub pass: String,
    /// The saturation of a rewriting pass.
    pub saturation: Option<SaturationReport>,
    /// Things the user should know (an inexact fold, a BatchNorm left unfolded).
    pub warnings: Vec<String>,
    /// [`Graph::node_count`] before the pass ran.
    pub nodes_before: usize,
    /// [`Graph::node_count`] after the pass and its checks.
    pub nodes_after: usize,
    /// Wall time of the pass, including the verification and form check after it.
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
    /// One report per pass, in pipeline order.
    pub passes: Vec<PassReport>,
}

impl PipelineReport {
    /// Every pass's warnings, in pipeline order.
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
    /// The weights and quantizer states; passes that fold or create params edit them here.
    pub params: &'a mut ParamStore,
    /// The options the pipeline runs with (mode, scheme, overrides, limits, rules dir).
    pub opts: &'a PipelineOptions,
    /// The running pass's report, for saturation results and warnings.
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
            ..QAnalysis::default()
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

    /// Records a warning in the pass's report (`qatc dump` prints them).
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
    /// What the pass does to `quant` markers, so the verifier knows whether the next graph may
    /// hold them; by default it leaves them as they are.
    fn markers(&self) -> Markers {
        Markers::Keep
    }
    /// Rewrites `graph` into the pass's output; the pipeline verifies it and keeps quantizer
    /// states in `cx.params` in step afterwards.
    fn run(&self, graph: Graph, cx: &mut PassContext<'_>) -> Result<Graph>;
}
