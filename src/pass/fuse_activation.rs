//! `fuse_activation` (rules: `passes/fuse_activation.rules`): a ReLU/ReLU6 becomes the
//! `activation` attribute of the conv2d, depthwise_conv2d, conv2d_transpose, dense, add, sub
//! or mul that produces its input, when that result has no other use (TFLite's
//! `fused_activation_function`). The fake-quant that followed the activation follows the
//! fused op. Export pipeline only: QAT graphs keep activations as nodes.

use super::context::{Pass, PassContext};
use crate::error::Result;
use crate::ir::graph::Graph;

pub struct FuseActivation;

impl Pass for FuseActivation {
    fn name(&self) -> &'static str {
        "fuse_activation"
    }

    fn description(&self) -> &'static str {
        "fuse relu/relu6 into the producing op's activation attribute"
    }

    fn run(&self, g: Graph, cx: &mut PassContext<'_>) -> Result<Graph> {
        cx.saturate(&g, "fuse_activation")
    }
}
