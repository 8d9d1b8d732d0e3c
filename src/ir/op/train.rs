//! Training forward ops: the explicit forms [`crate::autodiff`] lowers a model to before it
//! differentiates it (the loss, BatchNorm on batch statistics, dropout masks, and the
//! reductions over the ranks of a data-parallel step). Train-step graphs (form 4) hold them.

use super::common::*;
use super::kind::OpKind;

/// A training forward op with its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrainOp {
    /// `(logits[n,c], labels i32[n]) -> []`: mean softmax cross-entropy.
    SoftmaxCrossEntropy,
    /// `(x, gamma, beta)`: normalizes with the batch's own mean and (biased) variance. In a
    /// data-parallel step the batch is the global one: the executor's group combines the
    /// ranks' statistics (and the sums of the gradient ops), as do `batch_mean`/`batch_var`.
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
    /// `(x) -> x` combined element by element over the ranks of a data-parallel step
    /// ([`crate::dist`]): gradients before the optimizer, observed ranges before their
    /// moving average, the reported loss. In a single process it is the identity.
    AllReduce {
        /// How the ranks' values combine.
        reduce: Reduce,
    },
    /// `(x*) -> [sum of sizes]`: the operands flattened and laid end to end (a data-parallel
    /// step's gradients, so that one `all_reduce` combines them all).
    Pack,
    /// `(flat) -> shape`: the `shape`-sized run of `flat` starting at element `offset` (one
    /// gradient back out of a packed, combined vector).
    Unpack {
        /// The first element.
        offset: usize,
        /// The output shape.
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
            TrainOp::AllReduce { .. } => OpKind::AllReduce,
            TrainOp::Pack => OpKind::Pack,
            TrainOp::Unpack { .. } => OpKind::Unpack,
        }
    }

    /// The operands the op takes, by name.
    pub fn operands(&self) -> &'static [&'static str] {
        match self {
            TrainOp::SoftmaxCrossEntropy => &["logits", "labels"],
            TrainOp::BatchNormTrain { .. } => &["input", "gamma", "beta"],
            TrainOp::BatchMean | TrainOp::BatchVar { .. } | TrainOp::AllReduce { .. } => &["input"],
            TrainOp::Pack => &["inputs*"],
            TrainOp::Unpack { .. } => &["packed"],
            TrainOp::DropoutMask { .. } => &["step"],
        }
    }
}
