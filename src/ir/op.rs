//! THE op table: every operation qatc knows, spelled the same way in `ir::Op`, the egg
//! language, the rule files, `.qir` text, IR dumps and snapshots.
//!
//! Ops come in three groups:
//! - **model ops** (`conv2d`, `relu`, `fake_quant`, …): what users write and passes rewrite;
//! - **pass helpers** (`quant` markers from `annotate`, `bn_scale`/`scale_channels` from
//!   `fold_bn`), gone by the end of their pipeline;
//! - **training ops** (`*_grad`, optimizer and observer updates): what `autodiff` emits
//!   into a train-step graph for the JIT.
//!
//! Shape rules live in [`crate::ir::infer`], reference semantics in [`crate::ir::interp`].
//! To add an op: a variant here (kind, name, attributes), its shape rule, its interpreter
//! arm, its gradient rule, its JIT lowering, its TFLite mapping — README's checklist.

use std::fmt;

/// An `f32` attribute with total equality and hashing (by bits), so ops can key e-graphs.
#[derive(Clone, Copy, Default)]
pub struct F32(pub f32);

impl PartialEq for F32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for F32 {}
impl std::hash::Hash for F32 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}
impl PartialOrd for F32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl fmt::Debug for F32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl From<f32> for F32 {
    fn from(v: f32) -> F32 {
        F32(v)
    }
}

/// Spatial padding of convolutions and pools (TFLite's two modes, plus explicit pads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Padding {
    /// Output size `ceil(in / stride)`; the odd extra pixel of padding goes after.
    Same,
    /// No padding.
    #[default]
    Valid,
    /// `[top, bottom, left, right]` zero padding.
    Explicit([usize; 4]),
}

/// Activation fused into a producing op (TFLite's `fused_activation_function`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    Relu6,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
        }
    }

    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}

/// Attributes shared by `conv2d`, `depthwise_conv2d`, `conv2d_transpose` and their gradients.
/// Kernel layouts are TFLite's: conv2d `[out, kh, kw, in]`, depthwise `[1, kh, kw, in*mult]`,
/// conv2d_transpose `[out, kh, kw, in]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvAttrs {
    pub stride: [usize; 2],
    pub padding: Padding,
    pub dilation: [usize; 2],
    pub activation: Activation,
}

impl Default for ConvAttrs {
    fn default() -> Self {
        ConvAttrs {
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            activation: Activation::None,
        }
    }
}

/// Attributes of `max_pool2d` / `avg_pool2d` and their gradients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolAttrs {
    pub size: [usize; 2],
    pub stride: [usize; 2],
    pub padding: Padding,
}

/// Where a fake-quant node takes its `[min, max]` range from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RangeSource {
    /// Min/max of the input tensor itself, per axis when `axis` is set (TFMOT's
    /// LastValueQuantizer: weights). No state.
    LastValue,
    /// Exponential moving average of batch min/max, initialized from the first batch
    /// (TFMOT's MovingAverageQuantizer without its ±6 start). State: params
    /// `<state>.min` and `<state>.max`.
    Ema { state: String, decay: F32 },
    /// Running global min/max (TFMOT's AllValuesQuantizer: the model input).
    AllValues { state: String },
    /// Reads the range of quantizer `state` without observing (concat inputs share the
    /// concat output's scale).
    Tied { state: String },
    /// A constant range (softmax-style fixed parameters, or a user's `fix_range`).
    Fixed { min: F32, max: F32 },
    /// The range is given as operands 1 and 2 (`fake_quant(x, min, max)`): the explicit
    /// form the train-step and eval lowering produces for the JIT.
    Operands,
}

impl RangeSource {
    /// The name of the state this range reads, if any.
    pub fn state(&self) -> Option<&str> {
        match self {
            RangeSource::Ema { state, .. }
            | RangeSource::AllValues { state }
            | RangeSource::Tied { state } => Some(state),
            _ => None,
        }
    }
}

/// A fake quantizer (`tf.quantization.fake_quant_with_min_max_vars[_per_channel]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FakeQuantAttrs {
    /// 2..=8.
    pub bits: u8,
    /// Integer range `[1, 2^bits-1]` instead of `[0, 2^bits-1]` (int8 `[-127, 127]`).
    pub narrow: bool,
    /// The range is widened to `[-m, m]`, `m = max(|min|, |max|)` (weights).
    pub symmetric: bool,
    /// Per-axis (per-channel) quantization along this axis; per-tensor when `None`.
    pub axis: Option<usize>,
    pub range: RangeSource,
}

impl FakeQuantAttrs {
    /// TFMOT default_8bit weights: 8 bits, narrow, symmetric, per-axis.
    pub fn weight(axis: Option<usize>) -> FakeQuantAttrs {
        FakeQuantAttrs {
            bits: 8,
            narrow: true,
            symmetric: true,
            axis,
            range: RangeSource::LastValue,
        }
    }

    /// TFMOT default_8bit activations: 8 bits, asymmetric, EMA-observed, per-tensor.
    pub fn activation(state: impl Into<String>) -> FakeQuantAttrs {
        FakeQuantAttrs {
            bits: 8,
            narrow: false,
            symmetric: false,
            axis: None,
            range: RangeSource::Ema {
                state: state.into(),
                decay: F32(0.999),
            },
        }
    }

    /// The smallest and largest integer level: `[0 or 1, 2^bits - 1]`.
    pub fn quant_range(&self) -> (i32, i32) {
        (if self.narrow { 1 } else { 0 }, (1i32 << self.bits) - 1)
    }
}

/// Optimizer-free description of a reduction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReduceAttrs {
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

macro_rules! op_kinds {
    ($($kind:ident = $name:literal,)*) => {
        /// The kind of an op, without its attributes: the operator symbol of the egg
        /// language and the word in `.qir` text.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind { $($kind,)* }

        impl OpKind {
            pub const ALL: &'static [OpKind] = &[$(OpKind::$kind,)*];

            pub fn name(self) -> &'static str {
                match self { $(OpKind::$kind => $name,)* }
            }

            pub fn from_name(s: &str) -> Option<OpKind> {
                match s { $($name => Some(OpKind::$kind),)* _ => None }
            }
        }
    };
}

op_kinds! {
    // model ops
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
    // pass helpers
    Quant = "quant",
    BnScale = "bn_scale",
    ScaleChannels = "scale_channels",
    // training ops: loss and gradients
    SoftmaxCrossEntropy = "softmax_cross_entropy",
    SoftmaxCrossEntropyGrad = "softmax_cross_entropy_grad",
    ReluGrad = "relu_grad",
    Relu6Grad = "relu6_grad",
    LeakyReluGrad = "leaky_relu_grad",
    HardSwishGrad = "hard_swish_grad",
    SigmoidGrad = "sigmoid_grad",
    TanhGrad = "tanh_grad",
    SoftmaxGrad = "softmax_grad",
    FakeQuantGrad = "fake_quant_grad",
    Conv2dGradInput = "conv2d_grad_input",
    Conv2dGradFilter = "conv2d_grad_filter",
    DepthwiseConv2dGradInput = "depthwise_conv2d_grad_input",
    DepthwiseConv2dGradFilter = "depthwise_conv2d_grad_filter",
    Conv2dTransposeGradInput = "conv2d_transpose_grad_input",
    Conv2dTransposeGradFilter = "conv2d_transpose_grad_filter",
    DenseGradInput = "dense_grad_input",
    DenseGradWeight = "dense_grad_weight",
    ReduceSum = "reduce_sum",
    BatchNormTrain = "batch_norm_train",
    BatchMean = "batch_mean",
    BatchVar = "batch_var",
    BatchNormGradInput = "batch_norm_grad_input",
    BatchNormGradGamma = "batch_norm_grad_gamma",
    MaxPool2dGrad = "max_pool2d_grad",
    AvgPool2dGrad = "avg_pool2d_grad",
    GlobalAvgPoolGrad = "global_avg_pool_grad",
    GlobalMaxPoolGrad = "global_max_pool_grad",
    MeanGrad = "mean_grad",
    Slice = "slice",
    UpsampleNearestGrad = "upsample_nearest_grad",
    DropoutMask = "dropout_mask",
    // training ops: state updates
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
}

/// An op with its attributes. Operands are graph edges; weights are `param` nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
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
        activation: Activation,
    },
    /// `(x, gamma, beta, moving_mean, moving_var)` over the last axis; inference form.
    BatchNorm {
        epsilon: F32,
        momentum: F32,
    },
    Relu,
    Relu6,
    LeakyRelu {
        alpha: F32,
    },
    HardSwish,
    Sigmoid,
    Tanh,
    /// Over the last axis.
    Softmax,
    /// Numpy broadcasting.
    Add {
        activation: Activation,
    },
    Sub {
        activation: Activation,
    },
    Mul {
        activation: Activation,
    },
    Concat {
        axis: usize,
    },
    MaxPool2d(PoolAttrs),
    /// Padding taps are excluded from the count (TFLite's and Keras' `same`).
    AvgPool2d(PoolAttrs),
    GlobalAvgPool {
        keepdims: bool,
    },
    GlobalMaxPool {
        keepdims: bool,
    },
    Mean(ReduceAttrs),
    /// `shape` is the per-sample shape (Keras' Reshape): the batch dimension is kept. One
    /// entry may be -1.
    Reshape {
        shape: Vec<i64>,
    },
    /// `[n, ...] -> [n, prod(...)]`
    Flatten,
    /// A full-rank permutation that keeps axis 0 (the batch) first.
    Transpose {
        perm: Vec<usize>,
    },
    /// Zero padding, `[before, after]` per axis.
    Pad {
        pads: Vec<[usize; 2]>,
    },
    /// Removes `[before, after]` per axis.
    Crop {
        crops: Vec<[usize; 2]>,
    },
    UpsampleNearest {
        scale: [usize; 2],
    },
    /// Identity in inference; scaled random mask in training.
    Dropout {
        rate: F32,
    },
    /// `(x)` or, with `range = operands`, `(x, min, max)`.
    FakeQuant(FakeQuantAttrs),

    /// `annotate`'s marker: "the value inside is to be quantized with this spec"; the
    /// `quantize` rules realize it. Never survives the `quantize` pass.
    Quant(FakeQuantAttrs),
    /// `(gamma, var) -> gamma / sqrt(var + epsilon)`: the per-channel BatchNorm scale.
    BnScale {
        epsilon: F32,
    },
    /// `(w, s) -> w * s` with `s` broadcast along `axis` of `w` (per-output-channel scaling).
    ScaleChannels {
        axis: usize,
    },

    /// `(logits[n,c], labels i32[n]) -> []`: mean softmax cross-entropy.
    SoftmaxCrossEntropy,
    /// `(logits, labels) -> [n,c]`: `(softmax(logits) - onehot(labels)) / n`.
    SoftmaxCrossEntropyGrad,
    /// `(dy, x)`
    ReluGrad,
    /// `(dy, x)`
    Relu6Grad,
    /// `(dy, x)`
    LeakyReluGrad {
        alpha: F32,
    },
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
    /// `(dy, kernel) -> dx` of shape `input_shape`.
    Conv2dGradInput {
        conv: ConvAttrs,
        input_shape: Vec<usize>,
    },
    /// `(dy, x) -> dkernel` of shape `filter_shape`.
    Conv2dGradFilter {
        conv: ConvAttrs,
        filter_shape: Vec<usize>,
    },
    DepthwiseConv2dGradInput {
        conv: ConvAttrs,
        input_shape: Vec<usize>,
    },
    DepthwiseConv2dGradFilter {
        conv: ConvAttrs,
        filter_shape: Vec<usize>,
    },
    /// `(dy, kernel) -> dx`: a strided conv2d of dy; shape from `input_shape`.
    Conv2dTransposeGradInput {
        conv: ConvAttrs,
        input_shape: Vec<usize>,
    },
    Conv2dTransposeGradFilter {
        conv: ConvAttrs,
        filter_shape: Vec<usize>,
    },
    /// `(dy[n,out], kernel[out,in]) -> [n,in]`
    DenseGradInput,
    /// `(dy[n,out], x[n,in]) -> [out,in]`
    DenseGradWeight,
    ReduceSum(ReduceAttrs),
    /// `(x, gamma, beta)`: normalizes with the batch's own mean and (biased) variance.
    BatchNormTrain {
        epsilon: F32,
    },
    /// `(x) -> [c]`: mean over all axes but the last.
    BatchMean,
    /// `(x) -> [c]`: variance over all axes but the last (`unbiased`: n/(n-1) corrected).
    BatchVar {
        unbiased: bool,
    },
    /// `(dy, x, gamma) -> dx` through batch statistics.
    BatchNormGradInput {
        epsilon: F32,
    },
    /// `(dy, x) -> [c]`: `sum(dy * x_hat)`.
    BatchNormGradGamma {
        epsilon: F32,
    },
    /// `(dy, x)`: each window's dy goes to its first maximum in window order.
    MaxPool2dGrad(PoolAttrs),
    /// `(dy) -> [input_shape]`
    AvgPool2dGrad {
        pool: PoolAttrs,
        input_shape: Vec<usize>,
    },
    /// `(dy) -> [input_shape]`
    GlobalAvgPoolGrad {
        input_shape: Vec<usize>,
    },
    /// `(dy[n,c] or [n,1,1,c], x[n,h,w,c]) -> [n,h,w,c]`: each channel's dy goes to the
    /// first maximum of that channel.
    GlobalMaxPoolGrad,
    /// `(dy) -> [input_shape]`
    MeanGrad {
        axes: Vec<usize>,
        input_shape: Vec<usize>,
    },
    /// `(x) -> x[begin .. begin+size]` per axis.
    Slice {
        begin: Vec<usize>,
        size: Vec<usize>,
    },
    /// `(dy)`: sums each `scale` window back to one pixel.
    UpsampleNearestGrad {
        scale: [usize; 2],
    },
    /// `(step[]) -> [shape]`: 0 or `1/(1-rate)` per element, from a hash of
    /// `(seed, step, index)`.
    DropoutMask {
        rate: F32,
        seed: u64,
        shape: Vec<usize>,
    },

    /// `(old, value) -> momentum*old + (1-momentum)*value` (BatchNorm moving statistics).
    MovingAverage {
        momentum: F32,
    },
    /// `(v, g, lr[]) -> momentum*v - lr*g` (Keras SGD); the param update is `add(p, v')`.
    SgdVelocity {
        momentum: F32,
    },
    /// `(m, g) -> beta*m + (1-beta)*g`
    AdamMoment {
        beta: F32,
    },
    /// `(v, g) -> beta*v + (1-beta)*g^2`
    AdamMomentSq {
        beta: F32,
    },
    /// `(p, m, v, lr_t[]) -> p - lr_t*m/(sqrt(v)+epsilon)`; the host folds bias correction
    /// into `lr_t`.
    AdamApply {
        epsilon: F32,
    },
    /// `(x) -> min(min(x), 0)`, per `axis` when set.
    ObserveMin {
        axis: Option<usize>,
    },
    /// `(x) -> max(max(x), 0)`, per `axis` when set.
    ObserveMax {
        axis: Option<usize>,
    },
    /// `(old, value, step[]) -> value` at step 0, else `decay*old + (1-decay)*value`.
    EmaUpdate {
        decay: F32,
    },
    /// `(old, value, step[]) -> value` at step 0, else `min(old, value)`.
    RunningMin,
    /// `(old, value, step[]) -> value` at step 0, else `max(old, value)`.
    RunningMax,
}

impl Op {
    pub fn kind(&self) -> OpKind {
        use Op::*;
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
            Quant(_) => OpKind::Quant,
            BnScale { .. } => OpKind::BnScale,
            ScaleChannels { .. } => OpKind::ScaleChannels,
            SoftmaxCrossEntropy => OpKind::SoftmaxCrossEntropy,
            SoftmaxCrossEntropyGrad => OpKind::SoftmaxCrossEntropyGrad,
            ReluGrad => OpKind::ReluGrad,
            Relu6Grad => OpKind::Relu6Grad,
            LeakyReluGrad { .. } => OpKind::LeakyReluGrad,
            HardSwishGrad => OpKind::HardSwishGrad,
            SigmoidGrad => OpKind::SigmoidGrad,
            TanhGrad => OpKind::TanhGrad,
            SoftmaxGrad => OpKind::SoftmaxGrad,
            FakeQuantGrad(_) => OpKind::FakeQuantGrad,
            Conv2dGradInput { .. } => OpKind::Conv2dGradInput,
            Conv2dGradFilter { .. } => OpKind::Conv2dGradFilter,
            DepthwiseConv2dGradInput { .. } => OpKind::DepthwiseConv2dGradInput,
            DepthwiseConv2dGradFilter { .. } => OpKind::DepthwiseConv2dGradFilter,
            Conv2dTransposeGradInput { .. } => OpKind::Conv2dTransposeGradInput,
            Conv2dTransposeGradFilter { .. } => OpKind::Conv2dTransposeGradFilter,
            DenseGradInput => OpKind::DenseGradInput,
            DenseGradWeight => OpKind::DenseGradWeight,
            ReduceSum(_) => OpKind::ReduceSum,
            BatchNormTrain { .. } => OpKind::BatchNormTrain,
            BatchMean => OpKind::BatchMean,
            BatchVar { .. } => OpKind::BatchVar,
            BatchNormGradInput { .. } => OpKind::BatchNormGradInput,
            BatchNormGradGamma { .. } => OpKind::BatchNormGradGamma,
            MaxPool2dGrad(_) => OpKind::MaxPool2dGrad,
            AvgPool2dGrad { .. } => OpKind::AvgPool2dGrad,
            GlobalAvgPoolGrad { .. } => OpKind::GlobalAvgPoolGrad,
            GlobalMaxPoolGrad => OpKind::GlobalMaxPoolGrad,
            MeanGrad { .. } => OpKind::MeanGrad,
            Slice { .. } => OpKind::Slice,
            UpsampleNearestGrad { .. } => OpKind::UpsampleNearestGrad,
            DropoutMask { .. } => OpKind::DropoutMask,
            MovingAverage { .. } => OpKind::MovingAverage,
            SgdVelocity { .. } => OpKind::SgdVelocity,
            AdamMoment { .. } => OpKind::AdamMoment,
            AdamMomentSq { .. } => OpKind::AdamMomentSq,
            AdamApply { .. } => OpKind::AdamApply,
            ObserveMin { .. } => OpKind::ObserveMin,
            ObserveMax { .. } => OpKind::ObserveMax,
            EmaUpdate { .. } => OpKind::EmaUpdate,
            RunningMin => OpKind::RunningMin,
            RunningMax => OpKind::RunningMax,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The number of operands the op takes: `(min, max)`; `max == usize::MAX` is variadic.
    pub fn arity(&self) -> (usize, usize) {
        use Op::*;
        match self {
            Input | Param => (0, 0),
            Conv2d(_) | DepthwiseConv2d(_) | Conv2dTranspose(_) | Dense { .. } => (2, 3),
            BatchNorm { .. } => (5, 5),
            Concat { .. } => (1, usize::MAX),
            FakeQuant(a) if a.range == RangeSource::Operands => (3, 3),
            FakeQuant(_) => (1, 1),
            FakeQuantGrad(_) => (4, 4),
            DropoutMask { .. } => (1, 1),
            SoftmaxCrossEntropy | SoftmaxCrossEntropyGrad => (2, 2),
            Add { .. } | Sub { .. } | Mul { .. } => (2, 2),
            BnScale { .. } | ScaleChannels { .. } => (2, 2),
            ReluGrad
            | Relu6Grad
            | LeakyReluGrad { .. }
            | HardSwishGrad
            | SigmoidGrad
            | TanhGrad
            | SoftmaxGrad => (2, 2),
            Conv2dGradInput { .. }
            | Conv2dGradFilter { .. }
            | DepthwiseConv2dGradInput { .. }
            | DepthwiseConv2dGradFilter { .. }
            | Conv2dTransposeGradInput { .. }
            | Conv2dTransposeGradFilter { .. }
            | DenseGradInput
            | DenseGradWeight => (2, 2),
            BatchNormTrain { .. } | BatchNormGradInput { .. } => (3, 3),
            BatchNormGradGamma { .. } => (2, 2),
            MaxPool2dGrad(_) | GlobalMaxPoolGrad => (2, 2),
            MovingAverage { .. } | AdamMoment { .. } | AdamMomentSq { .. } => (2, 2),
            SgdVelocity { .. } => (3, 3),
            AdamApply { .. } => (4, 4),
            EmaUpdate { .. } | RunningMin | RunningMax => (3, 3),
            _ => (1, 1),
        }
    }

    /// A short name for operand `i`, for diagnostics ("conv2d operand 1 (kernel)").
    pub fn operand_name(&self, i: usize) -> &'static str {
        use Op::*;
        let names: &[&str] = match self {
            Conv2d(_) | DepthwiseConv2d(_) | Conv2dTranspose(_) | Dense { .. } => {
                &["input", "kernel", "bias"]
            }
            BatchNorm { .. } => &["input", "gamma", "beta", "moving_mean", "moving_var"],
            BatchNormTrain { .. } => &["input", "gamma", "beta"],
            FakeQuant(_) => &["input", "min", "max"],
            FakeQuantGrad(_) => &["dy", "input", "min", "max"],
            SoftmaxCrossEntropy | SoftmaxCrossEntropyGrad => &["logits", "labels"],
            BnScale { .. } => &["gamma", "moving_var"],
            ScaleChannels { .. } => &["tensor", "scale"],
            AdamApply { .. } => &["param", "m", "v", "lr"],
            SgdVelocity { .. } => &["velocity", "grad", "lr"],
            EmaUpdate { .. } | RunningMin | RunningMax => &["old", "value", "step"],
            Conv2dGradInput { .. }
            | DepthwiseConv2dGradInput { .. }
            | Conv2dTransposeGradInput { .. }
            | DenseGradInput => &["dy", "kernel"],
            _ if self.name().ends_with("_grad") || self.name().ends_with("_grad_filter") => {
                &["dy", "input"]
            }
            _ => &["input", "other"],
        };
        names.get(i).copied().unwrap_or("operand")
    }

    /// The fused activation of ops that have one.
    pub fn activation(&self) -> Option<Activation> {
        match self {
            Op::Conv2d(c) | Op::DepthwiseConv2d(c) | Op::Conv2dTranspose(c) => Some(c.activation),
            Op::Dense { activation } | Op::Add { activation } | Op::Sub { activation } => {
                Some(*activation)
            }
            Op::Mul { activation } => Some(*activation),
            _ => None,
        }
    }

    /// Sets the fused activation (for ops that have one); `false` if the op has none.
    pub fn set_activation(&mut self, act: Activation) -> bool {
        match self {
            Op::Conv2d(c) | Op::DepthwiseConv2d(c) | Op::Conv2dTranspose(c) => c.activation = act,
            Op::Dense { activation }
            | Op::Add { activation }
            | Op::Sub { activation }
            | Op::Mul { activation } => *activation = act,
            _ => return false,
        }
        true
    }

    /// Training ops are produced by `autodiff` only; model graphs never hold them.
    pub fn is_training_op(&self) -> bool {
        (self.kind() as usize) >= (OpKind::SoftmaxCrossEntropy as usize)
    }

    /// Elementwise activations that TFLite can fuse into a producing conv/dense/add.
    pub fn as_fusable_activation(&self) -> Option<Activation> {
        match self {
            Op::Relu => Some(Activation::Relu),
            Op::Relu6 => Some(Activation::Relu6),
            _ => None,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_name_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for &k in OpKind::ALL {
            assert_eq!(OpKind::from_name(k.name()), Some(k));
            assert!(seen.insert(k.name()), "duplicate op name {}", k.name());
            assert!(k
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }

    #[test]
    fn fake_quant_levels() {
        let w = FakeQuantAttrs::weight(Some(0));
        assert_eq!(w.quant_range(), (1, 255));
        let mut a = FakeQuantAttrs::activation("x");
        assert_eq!(a.quant_range(), (0, 255));
        a.bits = 4;
        assert_eq!(a.quant_range(), (0, 15));
    }
}
