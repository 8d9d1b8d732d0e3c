//! Equality saturation with egg: the thin glue between the IR and the rule files.
//!
//! - [`lang`]: the e-graph language, same op spellings as `.qir`; attributes (with the node
//!   name) are the first child of every op node, params and inputs are named leaves;
//! - [`convert`]: petgraph -> e-graph (multi-output, shared subgraphs stay shared) and the
//!   extraction back into a graph with stable names;
//! - [`analysis`]: per class type, use count, constness, attributes; the train/eval mode;
//! - [`cost`]: the cost model (markers infinite; TFLite kernels and fake-quants counted);
//! - [`rules`]: the `passes/*.rules` parser and the egg rewrites built from it;
//! - [`conditions`], [`attr_fns`]: the named Rust hooks rules call;
//! - [`saturate`](mod@saturate): limits, the run, and the report of why it stopped.
//!
//! The rules themselves are data in `passes/`; a pass is `src/pass/<stem>.rs` plus
//! `passes/<stem>.rules`.

pub mod analysis;
pub mod attr_fns;
pub mod attr_leaf;
pub mod conditions;
pub mod convert;
pub mod cost;
pub mod lang;
pub mod rules;
pub mod saturate;

pub use analysis::{Mode, QAnalysis};
pub use saturate::{saturate, Limits, SaturationReport};
