//! Quantization schemes: what gets quantized how, as a policy table per op, plus per-layer
//! overrides. This is qatc's equivalent of TFMOT's `Default8BitQuantizeScheme` registry
//! (and `DefaultNBitQuantizeScheme`, `quantize_annotate_layer` + `QuantizeConfig`), with
//! what TFMOT gets wrong done right:
//! - depthwise kernels are quantized per axis over **all** output channels (axis 3 of
//!   `[1, kh, kw, c * multiplier]`; TFMOT keeps `multiplier` ranges, #808);
//! - dense kernels are per axis too (TFMOT: per tensor), as TFLite's FULLY_CONNECTED allows;
//! - concat shares **one** scale between its inputs and its output (`range=tied`; TFMOT
//!   leaves them independent and the converter fails, #1053);
//! - the EMA observers start from the first batch instead of ±6 (the train-step lowering's
//!   `ema_update` takes the first value as is).
//!
//! ## Quantizer names (the convention every branch relies on)
//! - `<node>/act`: the activation quantizer of node `<node>`'s output; it is also the
//!   quantizer's **state** name, so its observed range lives in params `<node>/act.min` and
//!   `<node>/act.max` (f32[], created by `quantize` with TFMOT's initial range [-6, 6]).
//!   The model input's quantizer is `<input>/act` (range `all_values`).
//! - `<kernel param>/fq`: the weight quantizer of a kernel (`conv2d.kernel/fq`), stateless
//!   (`last_value`).
//! - `<concat>/in<i>`: the quantizer of concat operand `i`, `tied` to state `<concat>/act`.

use crate::error::{Error, Result};
use crate::ir::op::{FakeQuantAttrs, ModelOp, RangeLearning, RangeSource, F32};

/// Weights per output channel or per tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// One scale per output channel, on the op's kernel channel axis (axis 0 of OHWI conv and
    /// dense kernels, axis 3 of depthwise kernels).
    PerAxis,
    /// One scale for the whole kernel.
    PerTensor,
}

/// What the scheme does with an op (one row of the policy table).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// A kernel op: its kernel (operand 1) gets a weight quantizer on its output-channel
    /// axis ([`ModelOp::kernel_channel_axis`]; per axis when `per_axis` and the scheme is
    /// per-axis), its output an activation quantizer (after the fused activation /
    /// BatchNorm, by `quantize`).
    Kernel {
        /// Quantize the kernel per output channel (else per tensor).
        per_axis: bool,
    },
    /// The output gets an activation quantizer: TFLite requantizes it.
    Output,
    /// TFLite gives the output its input's scale: no quantizer.
    SameScale,
    /// TFLite's fixed output parameters: no quantizer in training (TFMOT does the same).
    Fixed {
        /// The output scale (1/256 for softmax and sigmoid, 1/128 for tanh).
        scale: f32,
        /// The output zero point (-128 for softmax and sigmoid, 0 for tanh).
        zero_point: i32,
    },
    /// Inputs and output share one scale: the output observes, the inputs are `tied` to it.
    SharedScale,
    /// Only after a conv2d / depthwise_conv2d / dense, whose quantization it joins (folded at
    /// export); a standalone BatchNorm cannot be quantized.
    FoldedBatchNorm,
    /// Already an explicit quantizer: left as is.
    Explicit,
    /// The scheme has no int8 mapping for the op.
    Unsupported {
        /// Why, as a clause for the error message (`it is a training op, …`).
        why: &'static str,
    },
}

/// The policy table: one row per model op, with the TFMOT registry entry it corresponds to.
pub fn policy(op: &ModelOp) -> Policy {
    use ModelOp as M;
    use Policy::*;
    match op {
        // Conv2D: kernel per axis (output channel, axis 0), fused activation quantized
        M::Conv2d(_) => Kernel { per_axis: true },
        // DepthwiseConv2D: per axis over all c * multiplier output channels (axis 3)
        M::DepthwiseConv2d(_) => Kernel { per_axis: true },
        // Conv2DTranspose: kernel per tensor (as TFMOT)
        M::Conv2dTranspose(_) => Kernel { per_axis: false },
        // Dense: per axis (TFMOT: per tensor)
        M::Dense { .. } => Kernel { per_axis: true },
        // PReLU: the slope is a weight; TFLite's PRELU reads one scale for it
        M::PRelu => Kernel { per_axis: false },
        // BatchNormalization after Conv2D / DepthwiseConv2D / Dense
        M::BatchNorm { .. } => FoldedBatchNorm,
        // ReLU, Activation(relu/relu6), LeakyReLU, hard swish: output quantized
        M::Relu | M::Relu6 | M::LeakyRelu { .. } | M::HardSwish => Output,
        // Add / Subtract / Multiply, pooling that averages, UpSampling2D: output quantized
        M::Add { .. } | M::Sub { .. } | M::Mul { .. } => Output,
        M::AvgPool2d(_) | M::GlobalAvgPool { .. } | M::Mean(_) => Output,
        M::UpsampleNearest { .. } => Output,
        // Softmax, sigmoid: fixed 1/256, -128; tanh: 1/128, 0 (set at conversion)
        M::Softmax | M::Sigmoid => Fixed {
            scale: 1.0 / 256.0,
            zero_point: -128,
        },
        M::Tanh => Fixed {
            scale: 1.0 / 128.0,
            zero_point: 0,
        },
        // Concatenate: one scale for all inputs and the output
        M::Concat { .. } => SharedScale,
        // MaxPooling, GlobalMaxPooling, Reshape, Flatten, Permute, ZeroPadding, Cropping,
        // Dropout: pass-through; ThresholdedReLU (not in TFMOT's registry) keeps its input's
        // values or zero, so its input's scale (GREATER + SELECT_V2 in TFLite)
        M::ThresholdedRelu { .. }
        | M::MaxPool2d(_)
        | M::GlobalMaxPool { .. }
        | M::Reshape { .. }
        | M::Flatten
        | M::Transpose { .. }
        | M::Pad { .. }
        | M::Crop { .. }
        | M::Dropout { .. } => SameScale,
        M::FakeQuant(_) => Explicit,
        M::Input | M::Param => SameScale,
    }
}

/// TFLite's fixed output `(scale, zero_point)` of an int8 op, if it has one.
pub fn fixed_output_params(op: &ModelOp) -> Option<(f32, i32)> {
    match policy(op) {
        Policy::Fixed { scale, zero_point } => Some((scale, zero_point)),
        Policy::Kernel { .. }
        | Policy::Output
        | Policy::SameScale
        | Policy::SharedScale
        | Policy::FoldedBatchNorm
        | Policy::Explicit
        | Policy::Unsupported { .. } => None,
    }
}

/// The initial `[min, max]` of an observer's state (TFMOT's MovingAverageQuantizer start;
/// the train step replaces it with the first batch's range).
pub const STATE_INIT: (f32, f32) = (-6.0, 6.0);

/// The activation quantizer (and state) name of node `node`'s output.
pub fn activation_state(node: &str) -> String {
    format!("{node}/act")
}

/// The weight quantizer name of kernel `kernel`.
pub fn weight_quantizer_name(kernel: &str) -> String {
    format!("{kernel}/fq")
}

/// The name of the tied quantizer of concat `concat`'s operand `i`.
pub fn tied_input_name(concat: &str, i: usize) -> String {
    format!("{concat}/in{i}")
}

/// The params holding a state's observed range: `(S.min, S.max)`.
pub fn state_params(state: &str) -> (String, String) {
    (format!("{state}.min"), format!("{state}.max"))
}

/// A quantization scheme: bits, granularity and observers, applied by the policy table.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheme {
    /// The spelling [`Scheme::parse`] accepts for this scheme (`default_8bit`, `nbit:4,8`, …);
    /// error messages name the scheme by it.
    pub name: String,
    /// Bits of weight quantizers, in `2..=8` (narrow symmetric range).
    pub weight_bits: u8,
    /// Bits of activation quantizers, in `2..=8` (asymmetric range).
    pub activation_bits: u8,
    /// Kernel granularity for ops whose policy allows per-axis; per-tensor forces every kernel
    /// per tensor.
    pub granularity: Granularity,
    /// Decay of the EMA activation observers (0.999): each batch moves the range by
    /// `1 - ema_decay` of the way towards the batch's min/max.
    pub ema_decay: f32,
    /// Ranges learned in training instead of observed: LSQ learns the weight and activation
    /// ranges, PACT the activation ranges (weights keep `last_value`). The model input keeps
    /// its observed range either way.
    pub learned: Option<RangeLearning>,
}

impl Default for Scheme {
    fn default() -> Self {
        Scheme::default_8bit()
    }
}

fn check_bits(what: &str, bits: u8) -> Result<u8> {
    if (2..=8).contains(&bits) {
        Ok(bits)
    } else {
        Err(Error::Usage(format!(
            "{what} bits must be in 2..=8, found {bits}"
        )))
    }
}

impl Scheme {
    /// TFMOT's default 8-bit scheme, with qatc's per-axis dense and depthwise.
    pub fn default_8bit() -> Scheme {
        Scheme {
            name: "default_8bit".into(),
            weight_bits: 8,
            activation_bits: 8,
            granularity: Granularity::PerAxis,
            ema_decay: 0.999,
            learned: None,
        }
    }

    /// `n_bit` with ranges learned by `method` (`lsq:W,A`, `pact:W,A`).
    pub fn learned(method: RangeLearning, weight_bits: u8, activation_bits: u8) -> Result<Scheme> {
        Ok(Scheme {
            name: format!("{}:{weight_bits},{activation_bits}", method.name()),
            learned: Some(method),
            ..Scheme::n_bit(weight_bits, activation_bits)?
        })
    }

    /// TFMOT's `DefaultNBitQuantizeScheme`: 2..=8-bit weights and activations.
    pub fn n_bit(weight_bits: u8, activation_bits: u8) -> Result<Scheme> {
        Ok(Scheme {
            name: format!("nbit:{weight_bits},{activation_bits}"),
            weight_bits: check_bits("weight", weight_bits)?,
            activation_bits: check_bits("activation", activation_bits)?,
            ..Scheme::default_8bit()
        })
    }

    /// The same scheme with every weight quantized per tensor.
    pub fn per_tensor(mut self) -> Scheme {
        self.granularity = Granularity::PerTensor;
        if !self.name.ends_with("per_tensor") {
            self.name = if self.name == "default_8bit" {
                "per_tensor".into()
            } else {
                format!("{},per_tensor", self.name)
            };
        }
        self
    }

    /// Parses `default_8bit`, `per_tensor`, `nbit:W,A`, `lsq:W,A` or `pact:W,A` (learned
    /// ranges), each of the last three optionally with `,per_tensor`; `lsq` and `pact` alone
    /// are 8-bit.
    pub fn parse(s: &str) -> Result<Scheme> {
        let bad = || {
            Error::Usage(format!(
                "unknown scheme `{s}`: use default_8bit, per_tensor, nbit:W,A, lsq:W,A or pact:W,A \
                 (W, A: weight and activation bits in 2..=8; add `,per_tensor` for per-tensor \
                 weights)"
            ))
        };
        match s {
            "default_8bit" => return Ok(Scheme::default_8bit()),
            "per_tensor" => return Ok(Scheme::default_8bit().per_tensor()),
            _ => {}
        }
        if let Some(m) = RangeLearning::parse(s) {
            return Scheme::learned(m, 8, 8);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let make = |w: u8, a: u8| match kind {
            "nbit" => Scheme::n_bit(w, a),
            other => match RangeLearning::parse(other) {
                Some(m) => Scheme::learned(m, w, a),
                None => Err(bad()),
            },
        };
        let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
        let bits = |p: &str| p.parse::<u8>().map_err(|_| bad());
        match parts.as_slice() {
            [w, a] => make(bits(w)?, bits(a)?),
            [w, a, "per_tensor"] => Ok(make(bits(w)?, bits(a)?)?.per_tensor()),
            _ => Err(bad()),
        }
    }

    /// The weight quantizer named `name`: narrow symmetric, per axis `axis` or per tensor,
    /// `last_value` (or learned by LSQ, with state `name`).
    pub fn weight_spec(&self, bits: u8, axis: Option<usize>, name: &str) -> FakeQuantAttrs {
        let range = match self.learned {
            Some(RangeLearning::Lsq) => RangeSource::Learned {
                state: name.to_string(),
                method: RangeLearning::Lsq,
            },
            Some(RangeLearning::Pact) | None => RangeSource::LastValue,
        };
        FakeQuantAttrs {
            bits,
            range,
            ..FakeQuantAttrs::weight(axis)
        }
    }

    /// The activation quantizer with state `state`: asymmetric, per tensor, EMA-observed (or
    /// learned).
    pub fn activation_spec(&self, bits: u8, state: &str) -> FakeQuantAttrs {
        let range = match self.learned {
            Some(method) => RangeSource::Learned {
                state: state.to_string(),
                method,
            },
            None => RangeSource::Ema {
                state: state.to_string(),
                decay: F32(self.ema_decay),
            },
        };
        FakeQuantAttrs {
            bits,
            range,
            ..FakeQuantAttrs::activation(state)
        }
    }

    /// The model input's quantizer: running global min/max (TFMOT's AllValuesQuantizer).
    pub fn input_spec(&self, bits: u8, state: &str) -> FakeQuantAttrs {
        FakeQuantAttrs {
            bits,
            range: RangeSource::AllValues {
                state: state.to_string(),
            },
            ..FakeQuantAttrs::activation(state)
        }
    }

    /// A quantizer that reads state `state` without observing (shared scales).
    pub fn tied_spec(&self, bits: u8, state: &str) -> FakeQuantAttrs {
        FakeQuantAttrs {
            bits,
            range: RangeSource::Tied {
                state: state.to_string(),
            },
            ..FakeQuantAttrs::activation(state)
        }
    }
}

/// One layer's quantize config (TFMOT's `QuantizeConfig`): `None` fields keep the scheme's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantConfig {
    /// Bits of the layer's weight quantizer (`2..=8`).
    pub weight_bits: Option<u8>,
    /// Bits of the layer's output quantizer (`2..=8`).
    pub activation_bits: Option<u8>,
    /// Kernel granularity; unlike the scheme's, `PerAxis` here also makes a Conv2DTranspose
    /// kernel per axis (its policy default is per tensor).
    pub granularity: Option<Granularity>,
    /// Quantize the output (true) or not (false) whatever the scheme says; `true` makes an
    /// op the scheme does not know quantizable.
    pub output: Option<bool>,
}

/// What an override does to the layers it matches.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerConfig {
    /// Leave the layer float: no weight or output quantizer (TFMOT: not annotated).
    Skip,
    /// Quantize it with this config.
    Quantize(QuantConfig),
}

/// A per-layer override: layers whose node name matches `pattern` (a glob: `*` any run of
/// characters, `?` one character) get `config`. When several match, the last one wins.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerOverride {
    /// A glob over node names (`conv2d*`, `dense_?`).
    pub pattern: String,
    /// What matching layers get.
    pub config: LayerConfig,
}

impl LayerOverride {
    /// Leaves the layers matching `pattern` float (`PATTERN=skip`).
    pub fn skip(pattern: impl Into<String>) -> LayerOverride {
        LayerOverride {
            pattern: pattern.into(),
            config: LayerConfig::Skip,
        }
    }

    /// Quantizes the layers matching `pattern` with `config` over the scheme's defaults.
    pub fn quantize(pattern: impl Into<String>, config: QuantConfig) -> LayerOverride {
        LayerOverride {
            pattern: pattern.into(),
            config: LayerConfig::Quantize(config),
        }
    }

    /// Parses `PATTERN=skip` or `PATTERN=item,item,...` with items `weight_bits:N`,
    /// `activation_bits:N`, `bits:N` (both), `per_axis`, `per_tensor`, `output`,
    /// `no_output`.
    pub fn parse(s: &str) -> Result<LayerOverride> {
        let usage = |msg: String| {
            Error::Usage(format!(
                "override `{s}`: {msg} (write PATTERN=skip or PATTERN=ITEMS with items \
                 weight_bits:N, activation_bits:N, bits:N, per_axis, per_tensor, output, no_output)"
            ))
        };
        let (pattern, spec) = s
            .split_once('=')
            .ok_or_else(|| usage("missing `=`".into()))?;
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(usage("the layer pattern is empty".into()));
        }
        if spec.trim() == "skip" {
            return Ok(LayerOverride::skip(pattern));
        }
        let mut c = QuantConfig::default();
        for item in spec.split(',').map(str::trim) {
            let bits = |v: &str| -> Result<u8> {
                let b = v
                    .parse::<u8>()
                    .map_err(|_| usage(format!("`{v}` is not a bit width")))?;
                check_bits("override", b).map_err(|e| usage(e.to_string()))
            };
            match item.split_once(':') {
                Some(("weight_bits", v)) => c.weight_bits = Some(bits(v)?),
                Some(("activation_bits", v)) => c.activation_bits = Some(bits(v)?),
                Some(("bits", v)) => {
                    let b = bits(v)?;
                    c.weight_bits = Some(b);
                    c.activation_bits = Some(b);
                }
                None if item == "per_axis" => c.granularity = Some(Granularity::PerAxis),
                None if item == "per_tensor" => c.granularity = Some(Granularity::PerTensor),
                None if item == "output" => c.output = Some(true),
                None if item == "no_output" => c.output = Some(false),
                _ => return Err(usage(format!("unknown item `{item}`"))),
            }
        }
        Ok(LayerOverride::quantize(pattern, c))
    }

    /// Whether node name `name` matches the pattern (see [`glob_match`]).
    pub fn matches(&self, name: &str) -> bool {
        glob_match(&self.pattern, name)
    }
}

/// The override that applies to node `name` (the last match), if any.
pub fn override_for<'a>(overrides: &'a [LayerOverride], name: &str) -> Option<&'a LayerConfig> {
    overrides
        .iter()
        .rev()
        .find(|o| o.matches(name))
        .map(|o| &o.config)
}

/// Glob matching: `*` matches any run of characters (also none), `?` exactly one.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // classic two-pointer matcher with backtracking to the last `*`
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_tfmot_with_qatc_fixes() {
        use crate::ir::op::{ConvAttrs, PoolAttrs, ReduceAttrs};
        let conv = ConvAttrs::default();
        let pool = PoolAttrs {
            size: [2, 2],
            stride: [2, 2],
            padding: Default::default(),
        };
        let act = crate::ir::op::Activation::None;
        let kernel = |per_axis| Policy::Kernel { per_axis };
        assert_eq!(policy(&ModelOp::Conv2d(conv.clone())), kernel(true));
        assert_eq!(
            policy(&ModelOp::DepthwiseConv2d(conv.clone())),
            kernel(true)
        );
        assert_eq!(policy(&ModelOp::Dense { activation: act }), kernel(true));
        assert_eq!(policy(&ModelOp::Conv2dTranspose(conv)), kernel(false));
        assert_eq!(policy(&ModelOp::Concat { axis: 3 }), Policy::SharedScale);
        for op in [
            ModelOp::MaxPool2d(pool.clone()),
            ModelOp::Reshape { shape: vec![-1] },
            ModelOp::Flatten,
            ModelOp::Pad { pads: vec![] },
            ModelOp::Crop { crops: vec![] },
            ModelOp::Transpose { perm: vec![] },
            ModelOp::Dropout { rate: F32(0.5) },
            ModelOp::GlobalMaxPool { keepdims: false },
        ] {
            assert_eq!(policy(&op), Policy::SameScale, "{op:?}");
        }
        for op in [
            ModelOp::Add { activation: act },
            ModelOp::Sub { activation: act },
            ModelOp::Mul { activation: act },
            ModelOp::Mean(ReduceAttrs {
                axes: vec![1],
                keepdims: false,
            }),
            ModelOp::AvgPool2d(pool),
            ModelOp::GlobalAvgPool { keepdims: false },
            ModelOp::UpsampleNearest { scale: [2, 2] },
            ModelOp::LeakyRelu { alpha: F32(0.2) },
            ModelOp::HardSwish,
            ModelOp::Relu,
            ModelOp::Relu6,
        ] {
            assert_eq!(policy(&op), Policy::Output, "{op:?}");
        }
        assert_eq!(
            fixed_output_params(&ModelOp::Softmax),
            Some((1.0 / 256.0, -128))
        );
        assert_eq!(
            fixed_output_params(&ModelOp::Sigmoid),
            Some((1.0 / 256.0, -128))
        );
        assert_eq!(fixed_output_params(&ModelOp::Tanh), Some((1.0 / 128.0, 0)));
    }

    #[test]
    fn specs_follow_the_contract() {
        let s = Scheme::default_8bit();
        let w = s.weight_spec(8, Some(3), "k/fq");
        assert_eq!(w, FakeQuantAttrs::weight(Some(3)));
        let a = s.activation_spec(8, "conv/act");
        assert_eq!(a, FakeQuantAttrs::activation("conv/act"));
        assert_eq!(
            s.input_spec(8, "input/act").range,
            RangeSource::AllValues {
                state: "input/act".into()
            }
        );
        assert_eq!(s.tied_spec(4, "c/act").bits, 4);
    }

    #[test]
    fn schemes_parse() {
        assert_eq!(
            Scheme::parse("default_8bit").unwrap(),
            Scheme::default_8bit()
        );
        let p = Scheme::parse("per_tensor").unwrap();
        assert_eq!(p.granularity, Granularity::PerTensor);
        let n = Scheme::parse("nbit:4,8").unwrap();
        assert_eq!((n.weight_bits, n.activation_bits), (4, 8));
        let n = Scheme::parse("nbit:2,3,per_tensor").unwrap();
        assert_eq!(n.granularity, Granularity::PerTensor);
        assert!(Scheme::parse("nbit:9,8")
            .unwrap_err()
            .to_string()
            .contains("2..=8"));
        assert!(Scheme::parse("int4").is_err());
    }

    #[test]
    fn overrides_parse_and_the_last_match_wins() {
        let o = vec![
            LayerOverride::parse("conv2d*=weight_bits:4,per_tensor").unwrap(),
            LayerOverride::parse("conv2d_2=skip").unwrap(),
        ];
        assert_eq!(override_for(&o, "conv2d_2"), Some(&LayerConfig::Skip));
        match override_for(&o, "conv2d_1") {
            Some(LayerConfig::Quantize(c)) => {
                assert_eq!(c.weight_bits, Some(4));
                assert_eq!(c.granularity, Some(Granularity::PerTensor));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(override_for(&o, "dense"), None);
        assert!(LayerOverride::parse("x=bits:12").is_err());
        assert!(LayerOverride::parse("x").is_err());
        assert!(LayerOverride::parse("x=frobnicate")
            .unwrap_err()
            .to_string()
            .contains("frobnicate"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("conv*", "conv2d_1"));
        assert!(glob_match("*relu", "conv2d.relu"));
        assert!(glob_match("c?nv*_1", "conv2d_1"));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(!glob_match("conv*", "dense"));
        assert!(!glob_match("conv", "conv2d"));
        assert!(!glob_match("a*b", "aXc"));
    }
}
