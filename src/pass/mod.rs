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

mod annotate;
mod canonicalize;
mod context;
mod fold_bn;
pub mod forms;
mod fuse_activation;
mod fuse_fake_quant;
#[cfg(test)]
mod model_tests;
mod pipeline;
mod quantize;
#[cfg(test)]
mod rule_tests;

pub use crate::rewrite::{Limits, Mode, SaturationReport};
pub use context::{
    DumpHook, Markers, Pass, PassContext, PassEvent, PassReport, PipelineOptions, PipelineReport,
};
pub use forms::Form;
pub use pipeline::{
    expand, pass, run_pipeline, run_pipeline_with_report, steps, Step, PASSES, PIPELINES,
};

/// Parses and checks the text of a rule file as the passes load it from
/// [`PipelineOptions::rules_dir`] (`file` names it in errors): for users writing their own
/// rules, and for the fuzzer.
pub fn check_rule_file(src: &str, file: &str) -> crate::Result<()> {
    crate::rewrite::rules::parse_rules(src, file).map(|_| ())
}
