//! `fuse_fake_quant` (rules: `passes/fuse_fake_quant.rules`): fq∘fq with the same
//! parameters, a single-use fake-quant requantized by the next one (concat inputs taking the
//! concat's shared scale), and shared parameters through same-scale ops (max pool, reshape,
//! flatten, transpose, pad, crop). The quantizer states of dropped observers leave the
//! ParamStore with them.

use super::context::{Pass, PassContext};
use crate::error::Result;
use crate::ir::graph::Graph;

pub struct FuseFakeQuant;

impl Pass for FuseFakeQuant {
    fn name(&self) -> &'static str {
        "fuse_fake_quant"
    }

    fn description(&self) -> &'static str {
        "merge fake-quants TFLite does not need separately (shared scales, fq∘fq)"
    }

    fn run(&self, g: Graph, cx: &mut PassContext<'_>) -> Result<Graph> {
        cx.saturate(&g, "fuse_fake_quant")
    }
}
