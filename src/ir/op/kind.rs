//! The spelling table: every op's kind, its name in `.qir`, rule files and dumps, and its
//! family.

use std::fmt;

/// The family of an op: which of the five enums under [`Op`](super::Op) it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// [`ModelOp`](super::ModelOp): what users write.
    Model,
    /// [`PassOp`](super::PassOp): helpers that only passes create.
    Pass,
    /// [`TrainOp`](super::TrainOp): forward ops of train-step graphs.
    Train,
    /// [`GradOp`](super::GradOp): gradient ops autodiff emits.
    Grad,
    /// [`UpdateOp`](super::UpdateOp): state updates (optimizers, observers, statistics).
    Update,
}

impl Family {
    /// What the family is called in diagnostics.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Model => "a model op",
            Family::Pass => "a pass helper",
            Family::Train => "a training forward op",
            Family::Grad => "a gradient op",
            Family::Update => "a state update op",
        }
    }
}

macro_rules! op_kinds {
    ($($family:ident: $($kind:ident = $name:literal,)*;)*) => {
        /// The kind of an op, without its attributes: the operator symbol of the egg
        /// language and the word in `.qir` text.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind {
            $($(
                #[doc = concat!("`", $name, "`")]
                $kind,
            )*)*
        }

        impl OpKind {
            /// Every kind, in table order.
            pub const ALL: &'static [OpKind] = &[$($(OpKind::$kind,)*)*];

            /// The op's spelling.
            pub fn name(self) -> &'static str {
                match self { $($(OpKind::$kind => $name,)*)* }
            }

            /// The kind spelled `s`.
            pub fn from_name(s: &str) -> Option<OpKind> {
                match s { $($($name => Some(OpKind::$kind),)*)* _ => None }
            }

            /// The family the kind belongs to.
            pub fn family(self) -> Family {
                match self { $($(OpKind::$kind => Family::$family,)*)* }
            }
        }
    };
}

// The rows are in a fixed order: e-graph nodes sort by it. Append new kinds to their family.
op_kinds! {
    Model:
    Input = "input",
    Param = "param",
    Conv2d = "conv2d",
    DepthwiseConv2d = "depthwise_conv2d",
    Conv2dTranspose = "conv2d_transpose",
    Dense = "dense",
    BatchNorm = "batch_norm",
    Relu = "relu",
    Relu6 = "relu6",
    LeakyRelu = "leaky_relu",
    HardSwish = "hard_swish",
    Sigmoid = "sigmoid",
    Tanh = "tanh",
    Softmax = "softmax",
    Add = "add",
    Sub = "sub",
    Mul = "mul",
    Concat = "concat",
    MaxPool2d = "max_pool2d",
    AvgPool2d = "avg_pool2d",
    GlobalAvgPool = "global_avg_pool",
    GlobalMaxPool = "global_max_pool",
    Mean = "mean",
    Reshape = "reshape",
    Flatten = "flatten",
    Transpose = "transpose",
    Pad = "pad",
    Crop = "crop",
    UpsampleNearest = "upsample_nearest",
    Dropout = "dropout",
    FakeQuant = "fake_quant",
    PRelu = "prelu",
    ThresholdedRelu = "thresholded_relu",
    ;
    Pass:
    Quant = "quant",
    BnScale = "bn_scale",
    ScaleChannels = "scale_channels",
    ;
    Train:
    SoftmaxCrossEntropy = "softmax_cross_entropy",
    ;
    Grad:
    SoftmaxCrossEntropyGrad = "softmax_cross_entropy_grad",
    ReluGrad = "relu_grad",
    Relu6Grad = "relu6_grad",
    LeakyReluGrad = "leaky_relu_grad",
    HardSwishGrad = "hard_swish_grad",
    SigmoidGrad = "sigmoid_grad",
    TanhGrad = "tanh_grad",
    SoftmaxGrad = "softmax_grad",
    FakeQuantGrad = "fake_quant_grad",
    FakeQuantRangeGrad = "fake_quant_range_grad",
    Conv2dGradInput = "conv2d_grad_input",
    Conv2dGradFilter = "conv2d_grad_filter",
    DepthwiseConv2dGradInput = "depthwise_conv2d_grad_input",
    DepthwiseConv2dGradFilter = "depthwise_conv2d_grad_filter",
    Conv2dTransposeGradInput = "conv2d_transpose_grad_input",
    Conv2dTransposeGradFilter = "conv2d_transpose_grad_filter",
    DenseGradInput = "dense_grad_input",
    DenseGradWeight = "dense_grad_weight",
    ReduceSum = "reduce_sum",
    ;
    Train:
    BatchNormTrain = "batch_norm_train",
    BatchMean = "batch_mean",
    BatchVar = "batch_var",
    ;
    Grad:
    BatchNormGradInput = "batch_norm_grad_input",
    BatchNormGradGamma = "batch_norm_grad_gamma",
    MaxPool2dGrad = "max_pool2d_grad",
    AvgPool2dGrad = "avg_pool2d_grad",
    GlobalAvgPoolGrad = "global_avg_pool_grad",
    GlobalMaxPoolGrad = "global_max_pool_grad",
    MeanGrad = "mean_grad",
    Slice = "slice",
    UpsampleNearestGrad = "upsample_nearest_grad",
    PReluGradInput = "prelu_grad_input",
    PReluGradAlpha = "prelu_grad_alpha",
    ThresholdedReluGrad = "thresholded_relu_grad",
    ;
    Train:
    DropoutMask = "dropout_mask",
    ;
    Update:
    MovingAverage = "moving_average",
    SgdVelocity = "sgd_velocity",
    AdamMoment = "adam_moment",
    AdamMomentSq = "adam_moment_sq",
    AdamApply = "adam_apply",
    ObserveMin = "observe_min",
    ObserveMax = "observe_max",
    EmaUpdate = "ema_update",
    RunningMin = "running_min",
    RunningMax = "running_max",
    ;
    Train:
    AllReduce = "all_reduce",
    Pack = "pack",
    Unpack = "unpack",
    ;
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
