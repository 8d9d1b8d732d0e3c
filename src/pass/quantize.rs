//! `quantize` (rules: `passes/quantize.rules`): realizes every `quant` marker `annotate`
//! placed as a `fake_quant`, except where TFLite fuses: no fake-quant between a
//! conv2d / depthwise_conv2d / conv2d_transpose / dense / add / sub / mul and the ReLU or
//! ReLU6 after it, none between a conv2d / depthwise_conv2d / dense and its BatchNorm, nor
//! between that BatchNorm and its ReLU — when the intermediate value has a single use. The
//! quantizer states (`S.min`, `S.max`) of the new observers are added to the ParamStore.

use super::context::{Markers, Pass, PassContext};
use crate::error::{Error, Result};
use crate::ir::graph::Graph;
use crate::ir::op::Op;
use crate::ir::op::PassOp;

pub struct Quantize;

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn description(&self) -> &'static str {
        "realize the markers as fake_quant nodes, none inside fused TFLite kernels"
    }

    fn markers(&self) -> Markers {
        Markers::Remove
    }

    fn run(&self, g: Graph, cx: &mut PassContext<'_>) -> Result<Graph> {
        let out = cx.saturate(&g, "quantize")?;
        if let Some(m) = out
            .node_ids()
            .find(|&n| matches!(out.node(n).op, Op::Pass(PassOp::Quant(_))))
        {
            let report = cx
                .report
                .saturation
                .as_ref()
                .map(|r| r.stop.to_string())
                .unwrap_or_default();
            return Err(Error::Rewrite(format!(
                "marker `{}` could not be realized ({report}); raise the saturation limits",
                out.node(m).name
            )));
        }
        Ok(out)
    }
}
