//! Gradient ops: what [`crate::autodiff`]'s rules emit for the backward half of a train step
//! (form 4). Each computes the gradient of one forward op with respect to one operand, or
//! moves a gradient back to an operand's shape (`reduce_sum`, `slice`).

use super::common::*;
use super::kind::OpKind;

/// A gradient op with its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GradOp {
    /// `(logits, labels) -> [n,c]`: `(softmax(logits) - onehot(labels)) / n`.
    SoftmaxCrossEntropyGrad,
    /// `(dy, x)`
    ReluGrad,
    /// `(dy, x)`
    Relu6Grad,
    /// `(dy, x)`
    LeakyReluGrad {
        /// The forward slope below zero.
        alpha: F32,
    },
    /// `(dy, x)`: `dy` where `x > theta`, `0` elsewhere.
    ThresholdedReluGrad {
        /// The forward threshold.
        theta: F32,
    },
    /// `(dy, x, alpha) -> dx`: `dy` for `x > 0`, `alpha * dy` elsewhere (`alpha` broadcasts).
    PReluGradInput,
    /// `(dy, x)`: `dy * min(x, 0)`, the slope's gradient before it is summed to `alpha`'s
    /// shape.
    PReluGradAlpha,
    /// `(dy, x)`; 0 for `x <= -3`, `dy` for `x >= 3` (relu6's gradient is 0 at its kinks).
    HardSwishGrad,
    /// `(dy, y)` with `y` the forward output.
    SigmoidGrad,
    /// `(dy, y)` with `y` the forward output.
    TanhGrad,
    /// `(dy, y)` with `y` the forward output.
    SoftmaxGrad,
    /// `(dy, x, min, max)`: straight-through inside the nudged range, zero outside.
    FakeQuantGrad(FakeQuantAttrs),
    /// `(dy, x, min, max) -> [x's shape]`: each element's contribution to the gradient of
    /// range end `end` of a trained quantizer (`quant` has `range=trained`, whose
    /// [`RangeLearning`] says how), already multiplied by `grad_scale`; a `reduce_sum` to the
    /// range's shape follows. A symmetric quantizer routes it to the end its widened range
    /// comes from.
    FakeQuantRangeGrad {
        /// The forward quantizer.
        quant: FakeQuantAttrs,
        /// Which end's gradient.
        end: RangeEnd,
        /// LSQ's gradient scale (1 for PACT).
        grad_scale: F32,
    },
    /// `(dy, kernel) -> dx` of shape `input_shape`.
    Conv2dGradInput {
        /// The forward convolution.
        conv: ConvAttrs,
        /// The forward input's shape.
        input_shape: Vec<usize>,
    },
    /// `(dy, x) -> dkernel` of shape `filter_shape`.
    Conv2dGradFilter {
        /// The forward convolution.
        conv: ConvAttrs,
        /// The kernel's shape.
        filter_shape: Vec<usize>,
    },
    /// `(dy, kernel) -> dx` of shape `input_shape`.
    DepthwiseConv2dGradInput {
        /// The forward convolution.
        conv: ConvAttrs,
        /// The forward input's shape.
        input_shape: Vec<usize>,
    },
    /// `(dy, x) -> dkernel` of shape `filter_shape`.
    DepthwiseConv2dGradFilter {
        /// The forward convolution.
        conv: ConvAttrs,
        /// The kernel's shape.
        filter_shape: Vec<usize>,
    },
    /// `(dy, kernel) -> dx`: a strided conv2d of dy; shape from `input_shape`.
    Conv2dTransposeGradInput {
        /// The forward convolution.
        conv: ConvAttrs,
        /// The forward input's shape.
        input_shape: Vec<usize>,
    },
    /// `(dy, x) -> dkernel` of shape `filter_shape`.
    Conv2dTransposeGradFilter {
        /// The forward convolution.
        conv: ConvAttrs,
        /// The kernel's shape.
        filter_shape: Vec<usize>,
    },
    /// `(dy[n,out], kernel[out,in]) -> [n,in]`
    DenseGradInput,
    /// `(dy[n,out], x[n,in]) -> [out,in]`
    DenseGradWeight,
    /// Sums over `axes` (broadcast operands' gradients, bias gradients).
    ReduceSum(ReduceAttrs),
    /// `(dy, x, gamma) -> dx` through batch statistics.
    BatchNormGradInput {
        /// BatchNorm's epsilon.
        epsilon: F32,
    },
    /// `(dy, x) -> [c]`: `sum(dy * x_hat)`.
    BatchNormGradGamma {
        /// BatchNorm's epsilon.
        epsilon: F32,
    },
    /// `(dy, x)`: each window's dy goes to its first maximum in window order.
    MaxPool2dGrad(PoolAttrs),
    /// `(dy) -> [input_shape]`
    AvgPool2dGrad {
        /// The forward pool.
        pool: PoolAttrs,
        /// The forward input's shape.
        input_shape: Vec<usize>,
    },
    /// `(dy) -> [input_shape]`
    GlobalAvgPoolGrad {
        /// The forward input's shape.
        input_shape: Vec<usize>,
    },
    /// `(dy[n,c] or [n,1,1,c], x[n,h,w,c]) -> [n,h,w,c]`: each channel's dy goes to the
    /// first maximum of that channel.
    GlobalMaxPoolGrad,
    /// `(dy) -> [input_shape]`
    MeanGrad {
        /// The forward mean's axes.
        axes: Vec<usize>,
        /// The forward input's shape.
        input_shape: Vec<usize>,
    },
    /// `(x) -> x[begin .. begin+size]` per axis.
    Slice {
        /// The first element per axis.
        begin: Vec<usize>,
        /// The number of elements per axis.
        size: Vec<usize>,
    },
    /// `(dy)`: sums each `scale` window back to one pixel.
    UpsampleNearestGrad {
        /// The forward `[h, w]` factors.
        scale: [usize; 2],
    },
}

impl GradOp {
    /// The op's kind: its spelling in `.qir`, rule files and dumps.
    pub fn kind(&self) -> OpKind {
        use GradOp::*;
        match self {
            SoftmaxCrossEntropyGrad => OpKind::SoftmaxCrossEntropyGrad,
            ReluGrad => OpKind::ReluGrad,
            Relu6Grad => OpKind::Relu6Grad,
            LeakyReluGrad { .. } => OpKind::LeakyReluGrad,
            HardSwishGrad => OpKind::HardSwishGrad,
            SigmoidGrad => OpKind::SigmoidGrad,
            TanhGrad => OpKind::TanhGrad,
            SoftmaxGrad => OpKind::SoftmaxGrad,
            FakeQuantGrad(_) => OpKind::FakeQuantGrad,
            FakeQuantRangeGrad { .. } => OpKind::FakeQuantRangeGrad,
            Conv2dGradInput { .. } => OpKind::Conv2dGradInput,
            Conv2dGradFilter { .. } => OpKind::Conv2dGradFilter,
            DepthwiseConv2dGradInput { .. } => OpKind::DepthwiseConv2dGradInput,
            DepthwiseConv2dGradFilter { .. } => OpKind::DepthwiseConv2dGradFilter,
            Conv2dTransposeGradInput { .. } => OpKind::Conv2dTransposeGradInput,
            Conv2dTransposeGradFilter { .. } => OpKind::Conv2dTransposeGradFilter,
            DenseGradInput => OpKind::DenseGradInput,
            DenseGradWeight => OpKind::DenseGradWeight,
            ReduceSum(_) => OpKind::ReduceSum,
            BatchNormGradInput { .. } => OpKind::BatchNormGradInput,
            BatchNormGradGamma { .. } => OpKind::BatchNormGradGamma,
            MaxPool2dGrad(_) => OpKind::MaxPool2dGrad,
            AvgPool2dGrad { .. } => OpKind::AvgPool2dGrad,
            GlobalAvgPoolGrad { .. } => OpKind::GlobalAvgPoolGrad,
            GlobalMaxPoolGrad => OpKind::GlobalMaxPoolGrad,
            MeanGrad { .. } => OpKind::MeanGrad,
            Slice { .. } => OpKind::Slice,
            UpsampleNearestGrad { .. } => OpKind::UpsampleNearestGrad,
            PReluGradInput => OpKind::PReluGradInput,
            PReluGradAlpha => OpKind::PReluGradAlpha,
            ThresholdedReluGrad { .. } => OpKind::ThresholdedReluGrad,
        }
    }

    /// The operands the op takes, by name.
    pub fn operands(&self) -> &'static [&'static str] {
        use GradOp::*;
        match self {
            SoftmaxCrossEntropyGrad => &["logits", "labels"],
            ReluGrad
            | Relu6Grad
            | LeakyReluGrad { .. }
            | ThresholdedReluGrad { .. }
            | HardSwishGrad
            | PReluGradAlpha => &["dy", "input"],
            PReluGradInput => &["dy", "input", "alpha"],
            SigmoidGrad | TanhGrad | SoftmaxGrad => &["dy", "output"],
            FakeQuantGrad(_) | FakeQuantRangeGrad { .. } => &["dy", "input", "min", "max"],
            Conv2dGradInput { .. }
            | DepthwiseConv2dGradInput { .. }
            | Conv2dTransposeGradInput { .. }
            | DenseGradInput => &["dy", "kernel"],
            Conv2dGradFilter { .. }
            | DepthwiseConv2dGradFilter { .. }
            | Conv2dTransposeGradFilter { .. }
            | DenseGradWeight
            | BatchNormGradGamma { .. }
            | MaxPool2dGrad(_)
            | GlobalMaxPoolGrad => &["dy", "input"],
            BatchNormGradInput { .. } => &["dy", "input", "gamma"],
            AvgPool2dGrad { .. }
            | GlobalAvgPoolGrad { .. }
            | MeanGrad { .. }
            | UpsampleNearestGrad { .. } => &["dy"],
            ReduceSum(_) | Slice { .. } => &["input"],
        }
    }
}
