//! Model ops: what users write (builders, `.qir`, importers), what passes rewrite, and what
//! the int8 exporter maps to TFLite — graph forms 1 to 3. A new layer starts here; every
//! exhaustive `match` over [`ModelOp`] (shape rule, reference semantics, quantization
//! policy, gradient rule, JIT lowering, TFLite mapping) then fails to compile until it has
//! an arm for it.

use super::common::*;
use super::kind::OpKind;

/// A model op with its attributes. Operands are graph edges; weights are `param` nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelOp {
    /// A graph input; its type is the node's type.
    Input,
    /// A named tensor of the [`crate::ir::ParamStore`]; the node's name is the param name.
    Param,
    /// `(x, kernel[out,kh,kw,in], bias[out]?)`
    Conv2d(ConvAttrs),
    /// `(x, kernel[1,kh,kw,in*mult], bias[in*mult]?)`; the multiplier follows from shapes.
    DepthwiseConv2d(ConvAttrs),
    /// `(x, kernel[out,kh,kw,in], bias[out]?)`; output `in*stride` (same) or, as Keras,
    /// `in*stride + max(k - stride, 0)` (valid; rows no tap reaches get the bias only).
    Conv2dTranspose(ConvAttrs),
    /// `(x[n,in], kernel[out,in], bias[out]?)`
    Dense {
        /// The fused activation.
        activation: Activation,
    },
    /// `(x, gamma, beta, moving_mean, moving_var)` over the last axis; inference form.
    BatchNorm {
        /// Added to the variance.
        epsilon: F32,
        /// The moving statistics' momentum (Keras' `momentum`).
        momentum: F32,
    },
    /// `max(x, 0)`
    Relu,
    /// `min(max(x, 0), 6)`
    Relu6,
    /// `x` for `x >= 0`, `alpha * x` below.
    LeakyRelu {
        /// The slope below zero.
        alpha: F32,
    },
    /// `x` for `x > theta`, `0` at and below (Keras' `ThresholdedReLU`, and the step of
    /// `ReLU(threshold=theta)`).
    ThresholdedRelu {
        /// The threshold.
        theta: F32,
    },
    /// `(x, alpha)`: `x` for `x >= 0`, `alpha * x` below, with a learned slope `alpha` that
    /// broadcasts against `x` (Keras' `PReLU`: one slope per channel is `alpha[1, 1, c]`).
    PRelu,
    /// `x * relu6(x + 3) / 6`
    HardSwish,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `tanh(x)`
    Tanh,
    /// Over the last axis.
    Softmax,
    /// Numpy broadcasting.
    Add {
        /// The fused activation.
        activation: Activation,
    },
    /// Numpy broadcasting.
    Sub {
        /// The fused activation.
        activation: Activation,
    },
    /// Numpy broadcasting.
    Mul {
        /// The fused activation.
        activation: Activation,
    },
    /// Joins its operands along `axis`.
    Concat {
        /// The joined axis.
        axis: usize,
    },
    /// Windowed maximum.
    MaxPool2d(PoolAttrs),
    /// Windowed mean; padding taps are excluded from the count (TFLite's and Keras' `same`).
    AvgPool2d(PoolAttrs),
    /// Mean over H and W of an NHWC tensor.
    GlobalAvgPool {
        /// Keep H and W with size 1.
        keepdims: bool,
    },
    /// Maximum over H and W of an NHWC tensor.
    GlobalMaxPool {
        /// Keep H and W with size 1.
        keepdims: bool,
    },
    /// Mean over `axes`.
    Mean(ReduceAttrs),
    /// `shape` is the per-sample shape (Keras' Reshape): the batch dimension is kept. One
    /// entry may be -1.
    Reshape {
        /// The per-sample shape.
        shape: Vec<i64>,
    },
    /// `[n, ...] -> [n, prod(...)]`
    Flatten,
    /// A full-rank permutation that keeps axis 0 (the batch) first.
    Transpose {
        /// Output axis `i` is input axis `perm[i]`.
        perm: Vec<usize>,
    },
    /// Zero padding, `[before, after]` per axis.
    Pad {
        /// `[before, after]` per axis.
        pads: Vec<[usize; 2]>,
    },
    /// Removes `[before, after]` per axis.
    Crop {
        /// `[before, after]` per axis.
        crops: Vec<[usize; 2]>,
    },
    /// Nearest-neighbour upsampling of H and W by integer factors.
    UpsampleNearest {
        /// `[h, w]` factors.
        scale: [usize; 2],
    },
    /// Identity in inference; scaled random mask in training.
    Dropout {
        /// The fraction of values dropped while training.
        rate: F32,
    },
    /// `(x)` or, with `range = operands`, `(x, min, max)`.
    FakeQuant(FakeQuantAttrs),
}

impl ModelOp {
    /// The op's kind: its spelling in `.qir`, rule files and dumps.
    pub fn kind(&self) -> OpKind {
        use ModelOp::*;
        match self {
            Input => OpKind::Input,
            Param => OpKind::Param,
            Conv2d(_) => OpKind::Conv2d,
            DepthwiseConv2d(_) => OpKind::DepthwiseConv2d,
            Conv2dTranspose(_) => OpKind::Conv2dTranspose,
            Dense { .. } => OpKind::Dense,
            BatchNorm { .. } => OpKind::BatchNorm,
            Relu => OpKind::Relu,
            Relu6 => OpKind::Relu6,
            LeakyRelu { .. } => OpKind::LeakyRelu,
            ThresholdedRelu { .. } => OpKind::ThresholdedRelu,
            PRelu => OpKind::PRelu,
            HardSwish => OpKind::HardSwish,
            Sigmoid => OpKind::Sigmoid,
            Tanh => OpKind::Tanh,
            Softmax => OpKind::Softmax,
            Add { .. } => OpKind::Add,
            Sub { .. } => OpKind::Sub,
            Mul { .. } => OpKind::Mul,
            Concat { .. } => OpKind::Concat,
            MaxPool2d(_) => OpKind::MaxPool2d,
            AvgPool2d(_) => OpKind::AvgPool2d,
            GlobalAvgPool { .. } => OpKind::GlobalAvgPool,
            GlobalMaxPool { .. } => OpKind::GlobalMaxPool,
            Mean(_) => OpKind::Mean,
            Reshape { .. } => OpKind::Reshape,
            Flatten => OpKind::Flatten,
            Transpose { .. } => OpKind::Transpose,
            Pad { .. } => OpKind::Pad,
            Crop { .. } => OpKind::Crop,
            UpsampleNearest { .. } => OpKind::UpsampleNearest,
            Dropout { .. } => OpKind::Dropout,
            FakeQuant(_) => OpKind::FakeQuant,
        }
    }

    /// The operands the op takes, by name; a trailing `?` marks an optional one and `*` a
    /// variadic list.
    pub fn operands(&self) -> &'static [&'static str] {
        use ModelOp::*;
        match self {
            Input | Param => &[],
            Conv2d(_) | DepthwiseConv2d(_) | Conv2dTranspose(_) | Dense { .. } => {
                &["input", "kernel", "bias?"]
            }
            BatchNorm { .. } => &["input", "gamma", "beta", "moving_mean", "moving_var"],
            Add { .. } | Sub { .. } | Mul { .. } => &["input", "other"],
            PRelu => &["input", "alpha"],
            Concat { .. } => &["inputs*"],
            FakeQuant(q) if q.range.in_operands() => &["input", "min", "max"],
            FakeQuant(_) => &["input"],
            Relu
            | Relu6
            | LeakyRelu { .. }
            | ThresholdedRelu { .. }
            | HardSwish
            | Sigmoid
            | Tanh
            | Softmax
            | MaxPool2d(_)
            | AvgPool2d(_)
            | GlobalAvgPool { .. }
            | GlobalMaxPool { .. }
            | Mean(_)
            | Reshape { .. }
            | Flatten
            | Transpose { .. }
            | Pad { .. }
            | Crop { .. }
            | UpsampleNearest { .. }
            | Dropout { .. } => &["input"],
        }
    }

    /// The fused activation of ops that have one.
    pub fn activation(&self) -> Option<Activation> {
        use ModelOp::*;
        match self {
            Conv2d(c) | DepthwiseConv2d(c) | Conv2dTranspose(c) => Some(c.activation),
            Dense { activation } | Add { activation } | Sub { activation } | Mul { activation } => {
                Some(*activation)
            }
            Input
            | Param
            | BatchNorm { .. }
            | Relu
            | Relu6
            | LeakyRelu { .. }
            | ThresholdedRelu { .. }
            | PRelu
            | HardSwish
            | Sigmoid
            | Tanh
            | Softmax
            | Concat { .. }
            | MaxPool2d(_)
            | AvgPool2d(_)
            | GlobalAvgPool { .. }
            | GlobalMaxPool { .. }
            | Mean(_)
            | Reshape { .. }
            | Flatten
            | Transpose { .. }
            | Pad { .. }
            | Crop { .. }
            | UpsampleNearest { .. }
            | Dropout { .. }
            | FakeQuant(_) => None,
        }
    }

    /// Sets the fused activation (for ops that have one); `false` if the op has none.
    pub fn set_activation(&mut self, act: Activation) -> bool {
        use ModelOp::*;
        match self {
            Conv2d(c) | DepthwiseConv2d(c) | Conv2dTranspose(c) => c.activation = act,
            Dense { activation } | Add { activation } | Sub { activation } | Mul { activation } => {
                *activation = act
            }
            Input
            | Param
            | BatchNorm { .. }
            | Relu
            | Relu6
            | LeakyRelu { .. }
            | ThresholdedRelu { .. }
            | PRelu
            | HardSwish
            | Sigmoid
            | Tanh
            | Softmax
            | Concat { .. }
            | MaxPool2d(_)
            | AvgPool2d(_)
            | GlobalAvgPool { .. }
            | GlobalMaxPool { .. }
            | Mean(_)
            | Reshape { .. }
            | Flatten
            | Transpose { .. }
            | Pad { .. }
            | Crop { .. }
            | UpsampleNearest { .. }
            | Dropout { .. }
            | FakeQuant(_) => return false,
        }
        true
    }

    /// The activation TFLite can fuse into a producing conv/dense/add, if this op is one.
    pub fn as_fusable_activation(&self) -> Option<Activation> {
        use ModelOp::*;
        match self {
            Relu => Some(Activation::Relu),
            Relu6 => Some(Activation::Relu6),
            Input
            | Param
            | Conv2d(_)
            | DepthwiseConv2d(_)
            | Conv2dTranspose(_)
            | Dense { .. }
            | BatchNorm { .. }
            | LeakyRelu { .. }
            | ThresholdedRelu { .. }
            | PRelu
            | HardSwish
            | Sigmoid
            | Tanh
            | Softmax
            | Add { .. }
            | Sub { .. }
            | Mul { .. }
            | Concat { .. }
            | MaxPool2d(_)
            | AvgPool2d(_)
            | GlobalAvgPool { .. }
            | GlobalMaxPool { .. }
            | Mean(_)
            | Reshape { .. }
            | Flatten
            | Transpose { .. }
            | Pad { .. }
            | Crop { .. }
            | UpsampleNearest { .. }
            | Dropout { .. }
            | FakeQuant(_) => None,
        }
    }

    /// The output-channel axis of the op's kernel (operand 1), for ops that have one: per-axis
    /// weights are quantized along it (TFLite's `quantized_dimension`).
    pub fn kernel_channel_axis(&self) -> Option<usize> {
        use ModelOp::*;
        match self {
            Conv2d(_) | Conv2dTranspose(_) | Dense { .. } => Some(0),
            DepthwiseConv2d(_) => Some(3),
            Input
            | Param
            | BatchNorm { .. }
            | Relu
            | Relu6
            | LeakyRelu { .. }
            | ThresholdedRelu { .. }
            | PRelu
            | HardSwish
            | Sigmoid
            | Tanh
            | Softmax
            | Add { .. }
            | Sub { .. }
            | Mul { .. }
            | Concat { .. }
            | MaxPool2d(_)
            | AvgPool2d(_)
            | GlobalAvgPool { .. }
            | GlobalMaxPool { .. }
            | Mean(_)
            | Reshape { .. }
            | Flatten
            | Transpose { .. }
            | Pad { .. }
            | Crop { .. }
            | UpsampleNearest { .. }
            | Dropout { .. }
            | FakeQuant(_) => None,
        }
    }

    /// Whether a `batch_norm` right after this op folds into its kernel and bias (the
    /// kernels of TFLite's CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED; a transposed
    /// convolution's kernel is quantized per tensor, so BatchNorm's per-channel scale does
    /// not fold into it exactly).
    pub fn folds_batch_norm(&self) -> bool {
        use ModelOp::*;
        match self {
            Conv2d(_) | DepthwiseConv2d(_) | Dense { .. } => true,
            Input
            | Param
            | Conv2dTranspose(_)
            | BatchNorm { .. }
            | Relu
            | Relu6
            | LeakyRelu { .. }
            | ThresholdedRelu { .. }
            | PRelu
            | HardSwish
            | Sigmoid
            | Tanh
            | Softmax
            | Add { .. }
            | Sub { .. }
            | Mul { .. }
            | Concat { .. }
            | MaxPool2d(_)
            | AvgPool2d(_)
            | GlobalAvgPool { .. }
            | GlobalMaxPool { .. }
            | Mean(_)
            | Reshape { .. }
            | Flatten
            | Transpose { .. }
            | Pad { .. }
            | Crop { .. }
            | UpsampleNearest { .. }
            | Dropout { .. }
            | FakeQuant(_) => false,
        }
    }
}
