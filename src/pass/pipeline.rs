//! The pass manager: the passes by name, the named pipelines with the graph form each step
//! must leave, and [`run_pipeline`], which runs the passes, verifies and checks the form
//! after each one, keeps the quantizer states in step, and calls the dump hooks.

use super::context::{
    Markers, Pass, PassContext, PassEvent, PassReport, PipelineOptions, PipelineReport,
};
use super::forms::Form;
use super::{annotate, canonicalize, fold_bn, fuse_activation, fuse_fake_quant, quantize};
use crate::error::{Error, Result};
use crate::ir::fake_quant::observe_range;
use crate::ir::graph::{Graph, NodeId};
use crate::ir::infer::range_shape;
use crate::ir::op::{ModelOp, Op, PassOp, RangeSource};
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::verify::{verify_with, VerifyOptions};
use crate::quant::scheme::{state_params, STATE_INIT};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Every pass by name.
pub const PASSES: &[&str] = &[
    "canonicalize",
    "annotate",
    "quantize",
    "fuse_fake_quant",
    "fold_bn",
    "fuse_activation",
];

/// One step of a pipeline: a pass and the graph form it must leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The pass's name.
    pub pass: &'static str,
    /// The form the graph must have after it (`None` for a pass run on its own, which
    /// promises only a graph that verifies).
    pub form: Option<Form>,
}

const fn step(pass: &'static str, form: Form) -> Step {
    Step {
        pass,
        form: Some(form),
    }
}

/// The named pipelines, each step with the form it leaves.
pub const PIPELINES: &[(&str, &[Step])] = &[
    (
        "default_8bit",
        &[
            step("canonicalize", Form::Model),
            step("annotate", Form::Annotated),
            step("quantize", Form::Model),
            step("fuse_fake_quant", Form::Qat),
        ],
    ),
    (
        "export",
        &[
            step("canonicalize", Form::Model),
            step("fold_bn", Form::Model),
            step("fuse_activation", Form::ExportReady),
        ],
    ),
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

/// The steps of `spec`: a comma-separated list of pipeline and pass names
/// (`default_8bit,export`, `annotate,quantize`).
pub fn steps(spec: &str) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((_, steps)) = PIPELINES.iter().find(|(n, _)| *n == item) {
            out.extend_from_slice(steps);
        } else if let Some(p) = PASSES.iter().find(|p| **p == item) {
            out.push(Step {
                pass: p,
                form: None,
            });
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

/// The pass names of `spec` (see [`steps`]).
pub fn expand(spec: &str) -> Result<Vec<&'static str>> {
    Ok(steps(spec)?.into_iter().map(|s| s.pass).collect())
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
    let steps = steps(pipeline)?;
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
    for (i, Step { pass: name, form }) in steps.into_iter().enumerate() {
        let p = pass(name).expect("steps names known passes");
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
        check_form(&graph, cx.params, name, form, opts)?;
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

/// Checks the form a step promises: cheap forms always, costly ones in debug builds and
/// tests or when [`PipelineOptions::check_forms`] asks. Per-layer overrides may leave layers
/// float, so with overrides the QAT form is checked as a model graph.
fn check_form(
    g: &Graph,
    params: &ParamStore,
    pass: &'static str,
    form: Option<Form>,
    opts: &PipelineOptions,
) -> Result<()> {
    let form = match form {
        None => return Ok(()),
        Some(Form::Qat) if !opts.overrides.is_empty() => Form::Model,
        Some(f) => f,
    };
    if form.is_costly() && !(cfg!(debug_assertions) || opts.check_forms) {
        return Ok(());
    }
    form.check(g, params).map_err(|e| Error::Form {
        pass: pass.to_string(),
        form: form.describe(),
        source: Box::new(e),
    })
}

/// The states quantizers of `g` own (`ema`, `all_values`, `learned`) with the quantizer
/// owning each, and every state they name.
fn states(g: &Graph) -> (BTreeMap<String, NodeId>, BTreeSet<String>) {
    let mut observed = BTreeMap::new();
    let mut named = BTreeSet::new();
    for n in g.node_ids() {
        match &g.node(n).op {
            Op::Model(ModelOp::FakeQuant(q)) | Op::Pass(PassOp::Quant(q)) => {
                if let Some(s) = q.range.state() {
                    named.insert(s.to_string());
                    let observes = matches!(
                        q.range,
                        RangeSource::Ema { .. }
                            | RangeSource::AllValues { .. }
                            | RangeSource::Learned { .. }
                    );
                    if observes && matches!(g.node(n).op, Op::Model(ModelOp::FakeQuant(_))) {
                        observed.insert(s.to_string(), n);
                    }
                }
            }
            _ => {}
        }
    }
    (observed, named)
}

/// The starting range of a new quantizer state: a learned weight quantizer starts from its
/// weights' range (per channel, as `last_value` sees them), every other from
/// [`STATE_INIT`] (replaced by the first batch, or by calibration).
fn initial_state(g: &Graph, fq: NodeId, params: &ParamStore) -> (Tensor, Tensor) {
    let init = (Tensor::scalar(STATE_INIT.0), Tensor::scalar(STATE_INIT.1));
    let Op::Model(ModelOp::FakeQuant(q)) = &g.node(fq).op else {
        return init;
    };
    let weights = g
        .operand(fq, 0)
        .filter(|&x| g.node(x).op.is_param())
        .and_then(|x| params.get(&g.node(x).name));
    match (&q.range, weights) {
        (RangeSource::Learned { .. }, Some(w)) => {
            let ranges = observe_range(&w.data, &w.shape, q.axis);
            let shape = range_shape(q, &w.shape);
            let lo = ranges.iter().map(|r| r.0).collect();
            let hi = ranges.iter().map(|r| r.1).collect();
            (Tensor::new(shape.clone(), lo), Tensor::new(shape, hi))
        }
        _ => init,
    }
}

/// Keeps the quantizer states in `params` in step with the graph: a new observer gets its
/// `S.min`/`S.max` ([`initial_state`]), a quantizer a pass removed loses them.
fn sync_states(before: &Graph, after: &Graph, params: &mut ParamStore) {
    let (observed, named) = states(after);
    for (s, &fq) in &observed {
        let (lo, hi) = state_params(s);
        if !params.contains(&lo) || !params.contains(&hi) {
            let (lo_init, hi_init) = initial_state(after, fq, params);
            params.insert(lo, lo_init);
            params.insert(hi, hi_init);
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
