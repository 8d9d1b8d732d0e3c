//! `canonicalize` (rules: `passes/canonicalize.rules`): dropout removal in eval mode,
//! reshape∘reshape, flatten/reshape compositions and identities, identity transposes, pads
//! and crops.

use super::context::{Pass, PassContext};
use crate::error::Result;
use crate::ir::graph::Graph;

pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn description(&self) -> &'static str {
        "remove dropout in eval mode and redundant reshapes, flattens, transposes, pads, crops"
    }

    fn run(&self, g: Graph, cx: &mut PassContext<'_>) -> Result<Graph> {
        cx.saturate(&g, "canonicalize")
    }
}
