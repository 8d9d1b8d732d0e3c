//! Attribute value types that several ops share: convolution and pooling geometry, fused
//! activations, fake-quant specifications, reductions.

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
    /// No activation.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// The spelling in `.qir` attributes (`activation=relu6`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
        }
    }

    /// The activation applied to one value.
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
    /// `[h, w]` strides.
    pub stride: [usize; 2],
    /// Spatial padding.
    pub padding: Padding,
    /// `[h, w]` dilation of the kernel taps.
    pub dilation: [usize; 2],
    /// The fused activation.
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
    /// `[h, w]` window size.
    pub size: [usize; 2],
    /// `[h, w]` strides.
    pub stride: [usize; 2],
    /// Spatial padding.
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
    Ema {
        /// The quantizer state's name.
        state: String,
        /// The EMA decay (0.999 in TFMOT).
        decay: F32,
    },
    /// Running global min/max (TFMOT's AllValuesQuantizer: the model input).
    AllValues {
        /// The quantizer state's name.
        state: String,
    },
    /// Reads the range of quantizer `state` without observing (concat inputs share the
    /// concat output's scale).
    Tied {
        /// The state of the quantizer whose range this one reads.
        state: String,
    },
    /// A constant range (softmax-style fixed parameters, or a user's `fix_range`).
    Fixed {
        /// The range's lower end.
        min: F32,
        /// The range's upper end.
        max: F32,
    },
    /// A range that training learns: params `<state>.min` and `<state>.max` (per channel
    /// for a per-axis quantizer) are trained by the optimizer with the gradient `method`
    /// gives them, started from a calibration of the model before QAT. Exported as stored.
    Learned {
        /// The quantizer state's name.
        state: String,
        /// How the range's gradient is computed.
        method: RangeLearning,
    },
    /// The range is given as operands 1 and 2 (`fake_quant(x, min, max)`): the explicit
    /// form the train-step and eval lowering produces for the JIT.
    Operands,
    /// The range is given as operands 1 and 2, and they are trained: the train-step form of a
    /// [`RangeSource::Learned`] quantizer, whose backward gives `min` and `max` gradients.
    Trained(RangeLearning),
}

/// How a learned quantizer range gets its gradient. Both pass the input's gradient straight
/// through inside the range; they differ inside it.
///
/// Write `u = (x - min) / s` for an input inside the range, `s` the step and `L` the number of
/// steps (`2^bits - 1`, or `- 2` when narrow). Below the range `dq/dmin = 1`, above it
/// `dq/dmax = 1` (the clipping gradient of TF's `fake_quant_with_min_max_vars`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RangeLearning {
    /// LSQ (Esser et al., 2020, "Learned step size quantization"), on the range ends: inside
    /// the range the rounding error moves them too, `dq/dmax = (round(u) - u) / L` and
    /// `dq/dmin = -dq/dmax`; both gradients are scaled by LSQ's `1 / sqrt(n · L)` (`n` the
    /// elements one range quantizes in one sample), so the steps learn at the rate of
    /// the weights.
    Lsq,
    /// PACT (Choi et al., 2018): only the clipping gradient (nothing inside the range). After
    /// a ReLU nothing lies below `min = 0`, so only the clipping level `max` (PACT's α)
    /// learns.
    Pact,
}

impl RangeLearning {
    /// The spelling in schemes, `.qir` attributes and reports (`lsq`, `pact`).
    pub fn name(self) -> &'static str {
        match self {
            RangeLearning::Lsq => "lsq",
            RangeLearning::Pact => "pact",
        }
    }

    /// Parses [`RangeLearning::name`]'s spelling.
    pub fn parse(s: &str) -> Option<RangeLearning> {
        [RangeLearning::Lsq, RangeLearning::Pact]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// One end of a quantizer range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RangeEnd {
    /// The lower end, `min`.
    Min,
    /// The upper end, `max`.
    Max,
}

/// How `all_reduce` combines the ranks' values of a tensor, element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reduce {
    /// The mean over ranks (gradients, batch statistics and losses of equal shards).
    Mean,
    /// The minimum (observed range lower ends).
    Min,
    /// The maximum (observed range upper ends).
    Max,
    /// A vector of ranges `[lows | highs]`: the minimum of the first half, the maximum of
    /// the second (an observed range's two ends in one exchange).
    Range,
}

impl Reduce {
    /// `mean`, `min` or `max`: its spelling in `.qir`.
    pub fn name(self) -> &'static str {
        match self {
            Reduce::Mean => "mean",
            Reduce::Min => "min",
            Reduce::Max => "max",
            Reduce::Range => "range",
        }
    }

    /// The reduction spelled `s`.
    pub fn from_name(s: &str) -> Option<Reduce> {
        [Reduce::Mean, Reduce::Min, Reduce::Max, Reduce::Range]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

impl RangeEnd {
    /// `min` or `max`.
    pub fn name(self) -> &'static str {
        match self {
            RangeEnd::Min => "min",
            RangeEnd::Max => "max",
        }
    }
}

impl RangeSource {
    /// The name of the state this range reads, if any.
    pub fn state(&self) -> Option<&str> {
        match self {
            RangeSource::Ema { state, .. }
            | RangeSource::AllValues { state }
            | RangeSource::Tied { state }
            | RangeSource::Learned { state, .. } => Some(state),
            RangeSource::LastValue
            | RangeSource::Fixed { .. }
            | RangeSource::Operands
            | RangeSource::Trained(_) => None,
        }
    }

    /// How a trained range (`range=trained`) learns, if it is one.
    pub fn trained(&self) -> Option<RangeLearning> {
        match self {
            RangeSource::Trained(m) => Some(*m),
            RangeSource::LastValue
            | RangeSource::Ema { .. }
            | RangeSource::AllValues { .. }
            | RangeSource::Tied { .. }
            | RangeSource::Fixed { .. }
            | RangeSource::Learned { .. }
            | RangeSource::Operands => None,
        }
    }

    /// Whether the range comes as operands 1 and 2 (`fake_quant(x, min, max)`).
    pub fn in_operands(&self) -> bool {
        match self {
            RangeSource::Operands | RangeSource::Trained(_) => true,
            RangeSource::LastValue
            | RangeSource::Ema { .. }
            | RangeSource::AllValues { .. }
            | RangeSource::Tied { .. }
            | RangeSource::Fixed { .. }
            | RangeSource::Learned { .. } => false,
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
    /// Where the range comes from.
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

/// A reduction over some axes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReduceAttrs {
    /// The reduced axes.
    pub axes: Vec<usize>,
    /// Keep reduced axes with size 1.
    pub keepdims: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

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
