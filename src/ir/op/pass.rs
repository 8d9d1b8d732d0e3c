//! Pass helpers: ops that exist only inside a pipeline, between the pass that makes them and
//! the pass that consumes them. No finished graph form (1 to 5) holds them.

use super::common::*;
use super::kind::OpKind;

/// A pass helper with its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PassOp {
    /// `annotate`'s marker: "the value inside is to be quantized with this spec"; the
    /// `quantize` rules realize it. Never survives the `quantize` pass.
    Quant(FakeQuantAttrs),
    /// `(gamma, var) -> gamma / sqrt(var + epsilon)`: the per-channel BatchNorm scale.
    BnScale {
        /// BatchNorm's epsilon.
        epsilon: F32,
    },
    /// `(w, s) -> w * s` with `s` broadcast along `axis` of `w` (per-output-channel scaling).
    ScaleChannels {
        /// The axis of `w` that `s` scales.
        axis: usize,
    },
}

impl PassOp {
    /// The op's kind: its spelling in `.qir`, rule files and dumps.
    pub fn kind(&self) -> OpKind {
        match self {
            PassOp::Quant(_) => OpKind::Quant,
            PassOp::BnScale { .. } => OpKind::BnScale,
            PassOp::ScaleChannels { .. } => OpKind::ScaleChannels,
        }
    }

    /// The operands the op takes, by name.
    pub fn operands(&self) -> &'static [&'static str] {
        match self {
            PassOp::Quant(_) => &["input"],
            PassOp::BnScale { .. } => &["gamma", "moving_var"],
            PassOp::ScaleChannels { .. } => &["tensor", "scale"],
        }
    }
}
