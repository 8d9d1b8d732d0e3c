//! Training forward ops: the explicit forms [`crate::autodiff`] lowers a model to before it
//! differentiates it (the loss, BatchNorm on batch statistics, dropout masks). Train-step
//! graphs (form 4) hold them.

use super::common::*;
use super::kind::OpKind;

/// A training forward op with its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrainOp {
    /// `(logits[n,c], labels i32[n]) -> []`: mean softmax cross-entropy.
    SoftmaxCrossEntropy,
    /// `(x, gamma, beta)`: normalizes with the batch's own mean and (biased) variance.
    BatchNormTrain {
        /// Added to the variance.
        epsilon: F32,
    },
    /// `(x) -> [c]`: mean over all axes but the last.
    BatchMean,
    /// `(x) -> [c]`: variance over all axes but the last (`unbiased`: n/(n-1) corrected).
    BatchVar {
        /// Bessel-corrected.
        unbiased: bool,
    },
    /// `(step[]) -> [shape]`: 0 or `1/(1-rate)` per element, from a hash of
    /// `(seed, step, index)`.
    DropoutMask {
        /// The fraction of zeros.
        rate: F32,
        /// The mask's seed.
        seed: u64,
        /// The mask's shape.
        shape: Vec<usize>,
    },
}

impl TrainOp {
    /// The op's kind: its spelling in `.qir`, rule files and dumps.
    pub fn kind(&self) -> OpKind {
        match self {
            TrainOp::SoftmaxCrossEntropy => OpKind::SoftmaxCrossEntropy,
            TrainOp::BatchNormTrain { .. } => OpKind::BatchNormTrain,
            TrainOp::BatchMean => OpKind::BatchMean,
            TrainOp::BatchVar { .. } => OpKind::BatchVar,
            TrainOp::DropoutMask { .. } => OpKind::DropoutMask,
        }
    }

    /// The operands the op takes, by name.
    pub fn operands(&self) -> &'static [&'static str] {
        match self {
            TrainOp::SoftmaxCrossEntropy => &["logits", "labels"],
            TrainOp::BatchNormTrain { .. } => &["input", "gamma", "beta"],
            TrainOp::BatchMean | TrainOp::BatchVar { .. } => &["input"],
            TrainOp::DropoutMask { .. } => &["step"],
        }
    }
}
