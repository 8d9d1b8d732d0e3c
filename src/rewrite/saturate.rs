//! Running a rule set to saturation, within limits, with a report of why it stopped.

use super::analysis::{EGraph, QAnalysis};
use super::convert::{from_egraph, to_egraph, Roots};
use super::lang::QNode;
use super::rules::RuleFile;
use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use egg::{Rewrite, Runner, SimpleScheduler, StopReason};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Bounds on one saturation. Hitting one is not an error: the e-graph holds only equal
/// forms, so the best form found so far is extracted, and the report says which limit
/// stopped it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Most rule-application rounds (egg iterations); default 100.
    pub iterations: usize,
    /// Most e-nodes the e-graph may grow to; default 1,000,000.
    pub nodes: usize,
    /// Most wall time spent saturating; default 10 s.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iterations: 100,
            nodes: 1_000_000,
            time: Duration::from_secs(10),
        }
    }
}

/// Why a saturation stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// No rule application changed the e-graph: every form the rules reach is in it.
    Saturated,
    IterationLimit(usize),
    NodeLimit(usize),
    TimeLimit(Duration),
    Other(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Saturated => f.write_str("saturated"),
            Stop::IterationLimit(n) => write!(f, "iteration limit ({n}) reached"),
            Stop::NodeLimit(n) => write!(f, "e-node limit reached ({n} e-nodes)"),
            Stop::TimeLimit(t) => write!(f, "time limit reached after {:.3} s", t.as_secs_f64()),
            Stop::Other(s) => write!(f, "stopped: {s}"),
        }
    }
}

/// What one saturation did.
#[derive(Clone, Debug)]
pub struct SaturationReport {
    /// The rule file's name (`passes/quantize.rules`).
    pub rule_file: String,
    /// Why saturation stopped; anything but `Stop::Saturated` means a limit cut it short.
    pub stop: Stop,
    /// Rule-application rounds run.
    pub iterations: usize,
    /// E-nodes in the final e-graph.
    pub egraph_nodes: usize,
    /// E-classes (sets of equal forms) in the final e-graph.
    pub egraph_classes: usize,
    /// How often each rule changed the e-graph, by rule name (rules that never fired are
    /// absent).
    pub applied: BTreeMap<String, usize>,
    /// Time to build the e-graph, saturate and extract.
    pub time: Duration,
    /// Time in the rule-application rounds alone (part of `time`).
    pub saturation_time: Duration,
}

impl SaturationReport {
    /// Whether the rules reached a fixpoint rather than a limit.
    pub fn saturated(&self) -> bool {
        self.stop == Stop::Saturated
    }
}

impl fmt::Display for SaturationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} after {} iteration(s), {} e-nodes in {} classes, {:.2} ms",
            self.rule_file,
            self.stop,
            self.iterations,
            self.egraph_nodes,
            self.egraph_classes,
            self.time.as_secs_f64() * 1e3
        )?;
        if !self.applied.is_empty() {
            let parts: Vec<String> = self
                .applied
                .iter()
                .map(|(r, n)| format!("{r} x{n}"))
                .collect();
            write!(f, "; applied {}", parts.join(", "))?;
        }
        Ok(())
    }
}

/// The states that `range=tied` quantizers of `g` read.
fn tied_states(g: &Graph) -> std::collections::BTreeSet<String> {
    use crate::ir::op::{ModelOp, Op, PassOp, RangeSource};
    g.node_ids()
        .filter_map(|id| match &g.node(id).op {
            Op::Model(ModelOp::FakeQuant(q)) | Op::Pass(PassOp::Quant(q)) => match &q.range {
                RangeSource::Tied { state } => Some(state.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The saturated e-graph of one run, before extraction.
pub struct Saturated {
    pub egraph: EGraph,
    pub roots: Roots,
    pub report: SaturationReport,
}

/// Saturates `g` under `rules`.
pub fn saturate_egraph(
    g: &Graph,
    rules: &RuleFile,
    mut analysis: QAnalysis,
    limits: Limits,
) -> Result<Saturated> {
    let start = Instant::now();
    analysis.tied_states = tied_states(g);
    let rewrites: Vec<Rewrite<QNode, QAnalysis>> = rules.rewrites()?;
    let (egraph, roots) = to_egraph(g, analysis)?;
    let sat_start = Instant::now();
    let runner = Runner::default()
        .with_egraph(egraph)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .run(&rewrites);
    let saturation_time = sat_start.elapsed();
    let stop = match runner.stop_reason.clone() {
        Some(StopReason::Saturated) => Stop::Saturated,
        Some(StopReason::IterationLimit(n)) => Stop::IterationLimit(n),
        Some(StopReason::NodeLimit(n)) => Stop::NodeLimit(n),
        Some(StopReason::TimeLimit(t)) => Stop::TimeLimit(Duration::from_secs_f64(t)),
        Some(StopReason::Other(s)) => Stop::Other(s),
        None => Stop::Other("the runner did not report".into()),
    };
    let mut applied = BTreeMap::new();
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            if *n > 0 {
                *applied.entry(rule.to_string()).or_insert(0) += n;
            }
        }
    }
    let egraph = runner.egraph;
    // a type conflict means a rule equated values of different types: a bug in the rule
    for class in egraph.classes() {
        if let Some(e) = &class.data.error {
            if e.starts_with("type conflict") {
                return Err(Error::Rewrite(format!(
                    "{}: a rule equated values of different types ({e}); forms: {}",
                    rules.file,
                    class
                        .nodes
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    let report = SaturationReport {
        rule_file: rules.file.clone(),
        stop,
        iterations: runner.iterations.len(),
        egraph_nodes: egraph.total_size(),
        egraph_classes: egraph.number_of_classes(),
        applied,
        time: start.elapsed(),
        saturation_time,
    };
    Ok(Saturated {
        egraph,
        roots,
        report,
    })
}

/// Saturates `g` under `rules` and extracts the cheapest equal graph.
pub fn saturate(
    g: &Graph,
    rules: &RuleFile,
    analysis: QAnalysis,
    limits: Limits,
) -> Result<(Graph, SaturationReport)> {
    let start = Instant::now();
    let sat = saturate_egraph(g, rules, analysis, limits)?;
    let out = from_egraph(&sat.egraph, &sat.roots)?;
    let mut report = sat.report;
    report.time = start.elapsed();
    Ok((out, report))
}
