//! THE table of how model ops map to TFLite operators, read by both directions: the exporter
//! asks [`mapping`] and [`encode`] what to write for an op, the importer asks [`decode`]
//! which op an operator is. Every row is checked both ways by the round-trip tests
//! (`tests/tflite_mapping.rs`: `decode(encode(op)) == op` for every model op, and a one-op
//! model exported, imported and compared).
//!
//! | qatc op | TFLite operator | output quantization | operands after the data |
//! |---|---|---|---|
//! | `conv2d` | CONV_2D | requantized | kernel int8 (int4, packed, at ≤ 4 bits) per axis 0, bias int32 |
//! | `depthwise_conv2d` | DEPTHWISE_CONV_2D | requantized | kernel int8 per axis 3, bias int32 |
//! | `dense` | FULLY_CONNECTED | requantized | kernel int8 (int4, packed, at ≤ 4 bits) per axis 0, bias int32 |
//! | `conv2d_transpose` | TRANSPOSE_CONV (+ RELU/RELU6) | requantized | output shape, kernel, x, bias |
//! | `add` / `sub` / `mul` | ADD / SUB / MUL | requantized | — |
//! | `leaky_relu` / `hard_swish` | LEAKY_RELU / HARD_SWISH | requantized | — |
//! | `prelu` | PRELU | requantized | alpha int8 per tensor |
//! | `thresholded_relu` | GREATER, then SELECT_V2 | the input's | theta on the input's grid, then x and its zero point |
//! | `concat` | CONCATENATION | one scale for inputs and output | — |
//! | `relu` / `relu6` | RELU / RELU6 | requantized, or the input's | — |
//! | `mean` / `global_avg_pool` | MEAN | requantized, or the input's | axes |
//! | `sigmoid` / `tanh` / `softmax` | LOGISTIC / TANH / SOFTMAX | fixed (1/256, -128), (1/128, 0), (1/256, -128) | — |
//! | `max_pool2d` / `avg_pool2d` | MAX_POOL_2D / AVERAGE_POOL_2D | the input's | — |
//! | `global_max_pool` | REDUCE_MAX | the input's | axes [1, 2] |
//! | `reshape` / `flatten` | RESHAPE | the input's | shape (batch -1) |
//! | `transpose` / `pad` | TRANSPOSE / PAD | the input's | perm / paddings |
//! | `crop` | STRIDED_SLICE (batch masked) | the input's | begin, end, strides |
//! | `upsample_nearest` | RESIZE_NEAREST_NEIGHBOR (half-pixel centers) | the input's | size |
//! | `input`, `param`, `fake_quant` | tensors; QUANTIZE / DEQUANTIZE at float edges and scale changes | | |
//! | `batch_norm`, `dropout` | removed by the `export` pipeline first | | |
//!
//! The importer also reads what the TFLite converter writes around these operators: SHAPE,
//! STRIDED_SLICE, PACK and CONCATENATION computing static shapes, SQUEEZE and PADV2 with a
//! zero constant; those are folded or read as the ops above ([`decode`]).

use super::model::{ElemType, FusedActivation, Options, PaddingMode};
use super::schema::{BuiltinOperator as B, BuiltinOptions};
use crate::ir::op::{Activation, ConvAttrs, ModelOp, Padding, PoolAttrs, ReduceAttrs, F32};

crate::message_error! {
    /// Why an op has no TFLite form with these attributes, or an operator no qatc op.
    MappingError
}

/// How an op's int8 output is quantized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    /// By the fake-quant that must follow the op: TFLite requantizes.
    Requantized,
    /// By the fake-quant that must follow the op, and every input is brought to that same
    /// scale first (int8 CONCATENATION needs identical quantization).
    SharedScale,
    /// By the fake-quant that follows the op if there is one, else the input's.
    RequantizedOrInput,
    /// The input's: the operator moves values without changing their scale.
    SameScale,
    /// TFLite's fixed output parameters.
    Fixed {
        /// The output scale.
        scale: f32,
        /// The output zero point.
        zero_point: i32,
    },
}

/// Where an operator's inputs come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// The op's data operands in order, then [`Encoded::consts`].
    Data,
    /// `(x, kernel, bias?)`: the kernel int8 per axis along `axis` (TFLite's
    /// `quantized_dimension`), the bias int32 at `input_scale · weight_scale`, written as
    /// zeros when the op has none.
    Kernel {
        /// The kernel's output-channel axis.
        axis: usize,
    },
    /// PRELU's `(x, alpha)`: the slope int8 per tensor (LiteRT reads one scale for it).
    Slope,
    /// TRANSPOSE_CONV's `[output_shape, kernel, x, bias?]`, its per-tensor kernel written
    /// per axis with the scale repeated (XNNPACK takes per-channel filters only).
    TransposeConv,
    /// SELECT_V2's `(x > theta, x, zero)`: a GREATER first compares `x` with the int8
    /// constant [`threshold_constant`] of [`Encoded::greater_than`] (the threshold on the
    /// input's grid); the else value is the input's zero point, and the output keeps the
    /// input's quantization.
    Select,
}

/// The TFLite side of one model op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mapping {
    /// One builtin operator.
    Builtin {
        /// The operator.
        code: B,
        /// How its output is quantized.
        output: Output,
        /// Where its inputs come from.
        operands: Operands,
    },
    /// Graph inputs, params and fake-quants become tensors and their quantization (and
    /// QUANTIZE / DEQUANTIZE where a float value meets an int8 one or a scale changes).
    Tensor,
    /// The op has no TFLite form; the `export` pipeline removes it first (the message says
    /// how).
    Removed(&'static str),
}

/// The one table: the TFLite mapping of every model op.
pub fn mapping(op: &ModelOp) -> Mapping {
    use ModelOp::*;
    use Operands::Data;
    use Output::*;
    let builtin = |code, output, operands| Mapping::Builtin {
        code,
        output,
        operands,
    };
    match op {
        Input | Param | FakeQuant(_) => Mapping::Tensor,
        Conv2d(_) => builtin(B::CONV_2D, Requantized, Operands::Kernel { axis: 0 }),
        DepthwiseConv2d(_) => builtin(
            B::DEPTHWISE_CONV_2D,
            Requantized,
            Operands::Kernel { axis: 3 },
        ),
        Dense { .. } => builtin(
            B::FULLY_CONNECTED,
            Requantized,
            Operands::Kernel { axis: 0 },
        ),
        Conv2dTranspose(_) => builtin(B::TRANSPOSE_CONV, Requantized, Operands::TransposeConv),
        BatchNorm { .. } => Mapping::Removed(
            "BatchNorm must be folded into the preceding conv/dense first (the `export` \
             pipeline's fold_bn)",
        ),
        Dropout { .. } => {
            Mapping::Removed("dropout is removed by the `export` pipeline (eval mode)")
        }
        Relu => builtin(B::RELU, RequantizedOrInput, Data),
        Relu6 => builtin(B::RELU6, RequantizedOrInput, Data),
        LeakyRelu { .. } => builtin(B::LEAKY_RELU, Requantized, Data),
        ThresholdedRelu { .. } => builtin(B::SELECT_V2, SameScale, Operands::Select),
        HardSwish => builtin(B::HARD_SWISH, Requantized, Data),
        PRelu => builtin(B::PRELU, Requantized, Operands::Slope),
        Sigmoid => builtin(B::LOGISTIC, FIXED_UNIT, Data),
        Tanh => builtin(
            B::TANH,
            Fixed {
                scale: 1.0 / 128.0,
                zero_point: 0,
            },
            Data,
        ),
        Softmax => builtin(B::SOFTMAX, FIXED_UNIT, Data),
        Add { .. } => builtin(B::ADD, Requantized, Data),
        Sub { .. } => builtin(B::SUB, Requantized, Data),
        Mul { .. } => builtin(B::MUL, Requantized, Data),
        Concat { .. } => builtin(B::CONCATENATION, SharedScale, Data),
        MaxPool2d(_) => builtin(B::MAX_POOL_2D, SameScale, Data),
        AvgPool2d(_) => builtin(B::AVERAGE_POOL_2D, SameScale, Data),
        GlobalAvgPool { .. } | Mean(_) => builtin(B::MEAN, RequantizedOrInput, Data),
        GlobalMaxPool { .. } => builtin(B::REDUCE_MAX, SameScale, Data),
        Reshape { .. } | Flatten => builtin(B::RESHAPE, SameScale, Data),
        Transpose { .. } => builtin(B::TRANSPOSE, SameScale, Data),
        Pad { .. } => builtin(B::PAD, SameScale, Data),
        Crop { .. } => builtin(B::STRIDED_SLICE, SameScale, Data),
        UpsampleNearest { .. } => builtin(B::RESIZE_NEAREST_NEIGHBOR, SameScale, Data),
    }
}

/// Softmax's and logistic's fixed output: `[0, 1)` in 256 steps.
const FIXED_UNIT: Output = Output::Fixed {
    scale: 1.0 / 256.0,
    zero_point: -128,
};

/// The shapes an op's encoding depends on.
#[derive(Clone, Copy, Debug)]
pub struct Shapes<'a> {
    /// The op's first data operand.
    pub input: &'a [usize],
    /// The op's kernel (operand 1), for kernel ops.
    pub kernel: Option<&'a [usize]>,
    /// The op's output.
    pub output: &'a [usize],
}

/// A constant int32 operand an operator takes after its data operands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Const {
    /// What it holds (the tensor is named `<node>.<what>`).
    pub what: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub values: Vec<i32>,
}

/// What [`encode`] gives for one op.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// The operator's options.
    pub options: Options,
    /// Constant operands after the data operands, in input order.
    pub consts: Vec<Const>,
    /// The activation the operator applies to its output (fused, or the op itself for
    /// RELU/RELU6): it bounds the int8 values the operator can produce.
    pub activation: FusedActivation,
    /// Explicit convolution padding SAME/VALID cannot express, `[top, bottom, left, right]`:
    /// the exporter writes a PAD before the (VALID) convolution.
    pub pad_first: Option<[usize; 4]>,
    /// SELECT_V2's threshold: the exporter writes `GREATER(x, theta)` first, whose output is
    /// the condition.
    pub greater_than: Option<f32>,
}

impl Encoded {
    fn new(options: Options) -> Encoded {
        Encoded {
            options,
            consts: Vec::new(),
            activation: FusedActivation::None,
            pad_first: None,
            greater_than: None,
        }
    }

    fn with_const(mut self, what: &'static str, shape: Vec<usize>, values: Vec<i32>) -> Encoded {
        self.consts.push(Const {
            what,
            shape,
            values,
        });
        self
    }

    fn with_activation(mut self, a: FusedActivation) -> Encoded {
        self.activation = a;
        self
    }
}

/// The int8 constant GREATER compares an input quantized with `(scale, zero_point)` against
/// for threshold `theta`: `(q, zero_point_c)`, with the input's scale.
///
/// On the input's grid `x = scale · k` (`k = q_x - zero_point`), `x > theta` holds exactly
/// for `k > kc` with `kc = floor(theta / scale)`, so the constant is the grid value
/// `scale · kc` (its own zero point reaches the `kc` that fall outside int8 around the
/// input's). LiteRT rescales both inputs of an int8 comparison by the same function of the
/// scale, so GREATER then decides as the float model does while `256 · scale >= 1`; below
/// that LiteRT resolves only 1/256 of a real unit and neighbouring values compare equal.
pub fn threshold_constant(theta: f32, scale: f32, zero_point: i32) -> (i8, i32) {
    let k = (theta as f64 / scale as f64).floor();
    // beyond the input's values every decision is the same: stay in reach of int8
    let lo = (-129 - zero_point).max(-255) as f64;
    let hi = (127 - zero_point).min(255) as f64;
    let kc = k.clamp(lo, hi) as i32;
    let q = kc.clamp(-128, 127);
    (q as i8, q - kc)
}

/// TFLite's fused activation of an IR activation.
pub fn fused(a: Activation) -> FusedActivation {
    match a {
        Activation::None => FusedActivation::None,
        Activation::Relu => FusedActivation::Relu,
        Activation::Relu6 => FusedActivation::Relu6,
    }
}

/// The IR activation of a fused TFLite activation, if the IR has it.
pub fn ir_activation(a: FusedActivation) -> Result<Activation, MappingError> {
    match a {
        FusedActivation::None => Ok(Activation::None),
        FusedActivation::Relu => Ok(Activation::Relu),
        FusedActivation::Relu6 => Ok(Activation::Relu6),
        FusedActivation::ReluN1To1
        | FusedActivation::Tanh
        | FusedActivation::SignBit
        | FusedActivation::Other(_) => {
            Err(format!("the fused activation {} is not supported", a.name()).into())
        }
    }
}

/// The operator that applies activation `a` on its own (after TRANSPOSE_CONV).
pub fn activation_operator(a: Activation) -> Option<B> {
    match a {
        Activation::None => None,
        Activation::Relu => Some(B::RELU),
        Activation::Relu6 => Some(B::RELU6),
    }
}

/// TFLite's padding mode for an IR padding, when the geometry is the same. Explicit
/// padding maps only when it equals what SAME or VALID computes; otherwise `None`.
pub fn padding_mode(
    p: Padding,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Option<PaddingMode> {
    match p {
        Padding::Same => Some(PaddingMode::Same),
        Padding::Valid => Some(PaddingMode::Valid),
        Padding::Explicit(e) => {
            if e == [0; 4] {
                return Some(PaddingMode::Valid);
            }
            let same = |axis: usize| -> [usize; 2] {
                let eff = (kernel[axis] - 1) * dilation[axis] + 1;
                let out = input[axis].div_ceil(stride[axis]);
                let total = ((out - 1) * stride[axis] + eff).saturating_sub(input[axis]);
                [total / 2, total - total / 2]
            };
            let s = [same(0), same(1)];
            (e == [s[0][0], s[0][1], s[1][0], s[1][1]]).then_some(PaddingMode::Same)
        }
    }
}

fn ir_padding(p: PaddingMode) -> Result<Padding, MappingError> {
    match p {
        PaddingMode::Same => Ok(Padding::Same),
        PaddingMode::Valid => Ok(Padding::Valid),
        PaddingMode::Other(v) => Err(format!("unknown padding mode {v}").into()),
    }
}

fn i32s(v: &[usize]) -> Vec<i32> {
    v.iter().map(|&d| d as i32).collect()
}

/// A convolution's options and explicit padding.
fn conv_geometry(
    c: &ConvAttrs,
    s: &Shapes,
) -> Result<(PaddingMode, Option<[usize; 4]>), MappingError> {
    let k = s.kernel.ok_or("the kernel shape is missing")?;
    let input = [s.input[1], s.input[2]];
    match padding_mode(c.padding, input, [k[1], k[2]], c.stride, c.dilation) {
        Some(p) => Ok((p, None)),
        None => match c.padding {
            Padding::Explicit(e) => Ok((PaddingMode::Valid, Some(e))),
            // SAME and VALID always map
            Padding::Same | Padding::Valid => Err("unreachable padding".into()),
        },
    }
}

/// The operator options and constant operands of `op` (one whose [`mapping`] is a
/// builtin); an error says why TFLite cannot express these attributes.
pub fn encode(op: &ModelOp, s: &Shapes) -> Result<Encoded, MappingError> {
    use ModelOp::*;
    let empty = |t| Encoded::new(Options::Empty(t));
    Ok(match op {
        Input | Param | FakeQuant(_) | BatchNorm { .. } | Dropout { .. } => {
            return Err(format!("{} is not an operator", op.kind()).into())
        }
        Conv2d(c) => {
            let (padding, pad_first) = conv_geometry(c, s)?;
            let act = fused(c.activation);
            Encoded {
                pad_first,
                ..Encoded::new(Options::Conv2d {
                    padding,
                    stride_h: c.stride[0] as i32,
                    stride_w: c.stride[1] as i32,
                    dilation_h: c.dilation[0] as i32,
                    dilation_w: c.dilation[1] as i32,
                    activation: act,
                })
                .with_activation(act)
            }
        }
        DepthwiseConv2d(c) => {
            let (padding, pad_first) = conv_geometry(c, s)?;
            let act = fused(c.activation);
            let in_ch = s.input[3].max(1);
            Encoded {
                pad_first,
                ..Encoded::new(Options::DepthwiseConv2d {
                    padding,
                    stride_h: c.stride[0] as i32,
                    stride_w: c.stride[1] as i32,
                    dilation_h: c.dilation[0] as i32,
                    dilation_w: c.dilation[1] as i32,
                    depth_multiplier: (s.output[3] / in_ch) as i32,
                    activation: act,
                })
                .with_activation(act)
            }
        }
        Dense { activation } => {
            let act = fused(*activation);
            Encoded::new(Options::FullyConnected {
                activation: act,
                shuffled_weights: false,
                keep_num_dims: false,
            })
            .with_activation(act)
        }
        Conv2dTranspose(c) => {
            if c.dilation != [1, 1] {
                return Err("TFLite's TRANSPOSE_CONV has no dilation".into());
            }
            let padding = match c.padding {
                Padding::Same => PaddingMode::Same,
                Padding::Valid => PaddingMode::Valid,
                Padding::Explicit(_) => {
                    return Err(
                        "explicit padding on conv2d_transpose has no TFLite form; use same or \
                         valid"
                            .into(),
                    )
                }
            };
            // The fused activation goes into a separate RELU/RELU6: LiteRT's TRANSPOSE_CONV
            // Prepare reads the activation through the CONV_2D options struct (an
            // out-of-bounds read), so a fused one is not reliably applied.
            Encoded::new(Options::TransposeConv {
                padding,
                stride_h: c.stride[0] as i32,
                stride_w: c.stride[1] as i32,
                activation: FusedActivation::None,
            })
            .with_const("output_shape", vec![4], i32s(s.output))
            .with_activation(fused(c.activation))
        }
        Relu => Encoded::new(Options::None).with_activation(FusedActivation::Relu),
        Relu6 => Encoded::new(Options::None).with_activation(FusedActivation::Relu6),
        LeakyRelu { alpha } => Encoded::new(Options::LeakyRelu { alpha: alpha.0 }),
        HardSwish => empty(BuiltinOptions::HardSwishOptions),
        PRelu => Encoded::new(Options::None),
        ThresholdedRelu { theta } => {
            if !theta.0.is_finite() {
                return Err(format!("the threshold {} is not a number", theta.0).into());
            }
            Encoded {
                greater_than: Some(theta.0),
                ..empty(BuiltinOptions::SelectV2Options)
            }
        }
        Sigmoid | Tanh => Encoded::new(Options::None),
        Softmax => Encoded::new(Options::Softmax { beta: 1.0 }),
        Add { activation } => Encoded::new(Options::Add {
            activation: fused(*activation),
        })
        .with_activation(fused(*activation)),
        Sub { activation } => Encoded::new(Options::Sub {
            activation: fused(*activation),
        })
        .with_activation(fused(*activation)),
        Mul { activation } => Encoded::new(Options::Mul {
            activation: fused(*activation),
        })
        .with_activation(fused(*activation)),
        Concat { axis } => Encoded::new(Options::Concatenation {
            axis: *axis as i32,
            activation: FusedActivation::None,
        }),
        MaxPool2d(p) | AvgPool2d(p) => {
            let padding = padding_mode(
                p.padding,
                [s.input[1], s.input[2]],
                p.size,
                p.stride,
                [1, 1],
            )
            .ok_or(
                "this explicit pool padding has no TFLite equivalent (TFLite pools pad SAME \
                     or VALID)",
            )?;
            Encoded::new(Options::Pool2d {
                padding,
                stride_h: p.stride[0] as i32,
                stride_w: p.stride[1] as i32,
                filter_h: p.size[0] as i32,
                filter_w: p.size[1] as i32,
                activation: FusedActivation::None,
            })
        }
        GlobalAvgPool { keepdims } => Encoded::new(Options::Reducer {
            keep_dims: *keepdims,
        })
        .with_const("axes", vec![2], vec![1, 2]),
        Mean(r) => {
            if r.axes.contains(&0) {
                return Err("a mean over the batch axis has no per-sample TFLite form".into());
            }
            Encoded::new(Options::Reducer {
                keep_dims: r.keepdims,
            })
            .with_const("axes", vec![r.axes.len()], i32s(&r.axes))
        }
        GlobalMaxPool { keepdims } => Encoded::new(Options::Reducer {
            keep_dims: *keepdims,
        })
        .with_const("axes", vec![2], vec![1, 2]),
        Reshape { .. } | Flatten => {
            let mut target = i32s(s.output);
            target[0] = -1;
            let n = target.len();
            Encoded::new(Options::Reshape {
                new_shape: Some(target.clone()),
            })
            .with_const("shape", vec![n], target)
        }
        Transpose { perm } => {
            empty(BuiltinOptions::TransposeOptions).with_const("perm", vec![perm.len()], i32s(perm))
        }
        Pad { pads } => {
            let flat: Vec<i32> = pads
                .iter()
                .flat_map(|p| [p[0] as i32, p[1] as i32])
                .collect();
            empty(BuiltinOptions::PadOptions).with_const("paddings", vec![pads.len(), 2], flat)
        }
        Crop { crops } => {
            let rank = s.input.len();
            let begin: Vec<i32> = crops.iter().map(|c| c[0] as i32).collect();
            let end: Vec<i32> = crops
                .iter()
                .zip(s.input)
                .map(|(c, &d)| (d - c[1]) as i32)
                .collect();
            // the batch axis is taken whole (masked), so the batch can be resized
            Encoded::new(Options::StridedSlice {
                begin_mask: 1,
                end_mask: 1,
                ellipsis_mask: 0,
                new_axis_mask: 0,
                shrink_axis_mask: 0,
                offset: false,
            })
            .with_const("begin", vec![rank], begin)
            .with_const("end", vec![rank], end)
            .with_const("strides", vec![rank], vec![1; rank])
        }
        UpsampleNearest { scale } => {
            let size = [s.output[1], s.output[2]];
            // TFLite's half-pixel nearest index must be exactly y / scale
            for (axis, (&n_in, &n_out)) in [s.input[1], s.input[2]].iter().zip(&size).enumerate() {
                if !nearest_is_exact(n_in, n_out, scale[axis], true) {
                    return Err(
                        "TFLite's nearest-neighbor resize does not reproduce this upsampling \
                         exactly"
                            .into(),
                    );
                }
            }
            Encoded::new(Options::ResizeNearestNeighbor {
                align_corners: false,
                half_pixel_centers: true,
            })
            .with_const("size", vec![2], i32s(&size))
        }
    })
}

/// Whether TFLite's nearest-neighbor resize of `n_in` to `n_out` pixels picks exactly pixel
/// `o / scale` for every output pixel `o`.
fn nearest_is_exact(n_in: usize, n_out: usize, scale: usize, half_pixel_centers: bool) -> bool {
    if n_in == 0 || scale == 0 {
        return false;
    }
    let ratio = n_in as f32 / n_out as f32;
    let offset = if half_pixel_centers { 0.5 } else { 0.0 };
    (0..n_out).all(|o| (((o as f32 + offset) * ratio).floor() as usize).min(n_in - 1) == o / scale)
}

/// What [`decode`] reads of one operator besides its code and options.
pub struct Operator<'a> {
    /// The operator's options.
    pub options: &'a Options,
    /// Shape of input `i` (`None` when omitted).
    pub input_shape: &'a dyn Fn(usize) -> Option<Vec<usize>>,
    /// Integer values of a constant (or folded) input `i`.
    pub ints: &'a dyn Fn(usize) -> Result<Vec<i64>, MappingError>,
    /// The output's shape.
    pub output_shape: &'a [usize],
    /// The output's element type.
    pub output_type: ElemType,
    /// SELECT_V2: the real threshold of the `GREATER(x, constant)` that writes its condition
    /// (the importer reads the pair as one op), if that is what writes it.
    pub greater_than: Option<f32>,
}

fn positive(v: i32, what: &str) -> Result<usize, MappingError> {
    if v <= 0 || v > i16::MAX as i32 {
        return Err(format!("{what} is {v}").into());
    }
    Ok(v as usize)
}

/// An axis list of a rank-`rank` tensor, negative axes counted from the end.
fn axes(raw: &[i64], rank: usize) -> Result<Vec<usize>, MappingError> {
    let mut out: Vec<usize> = Vec::new();
    for &a in raw {
        let a = if a < 0 { a + rank as i64 } else { a };
        if !(0..rank as i64).contains(&a) {
            return Err(format!("axis {a} is out of range").into());
        }
        if !out.contains(&(a as usize)) {
            out.push(a as usize);
        }
    }
    Ok(out)
}

/// What [`decode`] makes of an operator.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The model op, fused activation included where the op has a slot for one.
    pub op: ModelOp,
    /// A fused activation the op has no slot for (a pool's, a concatenation's): it becomes
    /// a node of its own after the op.
    pub then: Activation,
}

/// The model op an operator is, with its attributes (the inverse of [`encode`]). Operators
/// this table has no row for are named in the error.
pub fn decode(code: B, op: &Operator) -> Result<Decoded, MappingError> {
    let mut then = Activation::None;
    let o = op.options;
    let input = (op.input_shape)(0).unwrap_or_default();
    let model_op = match code {
        B::CONV_2D | B::DEPTHWISE_CONV_2D => {
            let (padding, sh, sw, dh, dw, act) = match *o {
                Options::Conv2d {
                    padding,
                    stride_h,
                    stride_w,
                    dilation_h,
                    dilation_w,
                    activation,
                }
                | Options::DepthwiseConv2d {
                    padding,
                    stride_h,
                    stride_w,
                    dilation_h,
                    dilation_w,
                    activation,
                    ..
                } => (
                    padding, stride_h, stride_w, dilation_h, dilation_w, activation,
                ),
                _ => return Err("has no convolution options".into()),
            };
            let conv = ConvAttrs {
                stride: [positive(sh, "stride_h")?, positive(sw, "stride_w")?],
                padding: ir_padding(padding)?,
                dilation: [positive(dh, "dilation_h")?, positive(dw, "dilation_w")?],
                activation: ir_activation(act)?,
            };
            if code == B::CONV_2D {
                let w = (op.input_shape)(1).unwrap_or_default();
                if w.len() == 4 && input.len() == 4 && w[3] != input[3] {
                    return Err("grouped convolutions are not supported by qatc's IR".into());
                }
                ModelOp::Conv2d(conv)
            } else {
                ModelOp::DepthwiseConv2d(conv)
            }
        }
        B::TRANSPOSE_CONV => {
            let Options::TransposeConv {
                padding,
                stride_h,
                stride_w,
                activation,
            } = *o
            else {
                return Err("has no TransposeConvOptions".into());
            };
            ModelOp::Conv2dTranspose(ConvAttrs {
                stride: [
                    positive(stride_h, "stride_h")?,
                    positive(stride_w, "stride_w")?,
                ],
                padding: ir_padding(padding)?,
                dilation: [1, 1],
                activation: ir_activation(activation)?,
            })
        }
        B::FULLY_CONNECTED => {
            let Options::FullyConnected {
                activation,
                shuffled_weights,
                keep_num_dims,
            } = *o
            else {
                return Err("has no FullyConnectedOptions".into());
            };
            if shuffled_weights {
                return Err("shuffled weights are not supported".into());
            }
            if keep_num_dims && input.len() != 2 {
                return Err(
                    "keep_num_dims on an input of rank other than 2 is not supported".into(),
                );
            }
            ModelOp::Dense {
                activation: ir_activation(activation)?,
            }
        }
        B::ADD | B::SUB | B::MUL => {
            let act = match *o {
                Options::Add { activation }
                | Options::Sub { activation }
                | Options::Mul { activation } => activation,
                Options::None => FusedActivation::None,
                _ => return Err("has options of another op".into()),
            };
            let activation = ir_activation(act)?;
            match code {
                B::ADD => ModelOp::Add { activation },
                B::SUB => ModelOp::Sub { activation },
                _ => ModelOp::Mul { activation },
            }
        }
        B::AVERAGE_POOL_2D | B::MAX_POOL_2D => {
            let Options::Pool2d {
                padding,
                stride_h,
                stride_w,
                filter_h,
                filter_w,
                activation,
            } = *o
            else {
                return Err("has no Pool2DOptions".into());
            };
            then = ir_activation(activation)?;
            let pool = PoolAttrs {
                size: [
                    positive(filter_h, "filter_height")?,
                    positive(filter_w, "filter_width")?,
                ],
                stride: [
                    positive(stride_h, "stride_h")?,
                    positive(stride_w, "stride_w")?,
                ],
                padding: ir_padding(padding)?,
            };
            if code == B::MAX_POOL_2D {
                ModelOp::MaxPool2d(pool)
            } else {
                ModelOp::AvgPool2d(pool)
            }
        }
        B::MEAN | B::REDUCE_MAX => {
            let keepdims = match *o {
                Options::Reducer { keep_dims } => keep_dims,
                Options::None => false,
                _ => return Err("has options of another op".into()),
            };
            let axes = axes(&(op.ints)(1)?, input.len())?;
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            let spatial = input.len() == 4 && sorted == [1, 2];
            match (code, spatial) {
                (B::MEAN, true) => ModelOp::GlobalAvgPool { keepdims },
                (B::MEAN, false) => ModelOp::Mean(ReduceAttrs { axes, keepdims }),
                (_, true) => ModelOp::GlobalMaxPool { keepdims },
                (_, false) => {
                    return Err(
                        "REDUCE_MAX is imported only over the spatial axes [1, 2] of an image"
                            .into(),
                    )
                }
            }
        }
        B::SOFTMAX => {
            let beta = match *o {
                Options::Softmax { beta } => beta,
                _ => 0.0,
            };
            if beta != 1.0 {
                return Err(format!(
                    "softmax with beta {beta} is not supported (qatc's softmax has beta 1)"
                )
                .into());
            }
            ModelOp::Softmax
        }
        B::LOGISTIC => ModelOp::Sigmoid,
        B::TANH => ModelOp::Tanh,
        B::RELU => ModelOp::Relu,
        B::RELU6 => ModelOp::Relu6,
        B::HARD_SWISH => ModelOp::HardSwish,
        B::PRELU => ModelOp::PRelu,
        B::SELECT_V2 => {
            let theta = op.greater_than.ok_or(
                "SELECT_V2 is read only as a thresholded ReLU: its condition must be a GREATER \
                 of its first value against a constant, its else value the zero point",
            )?;
            ModelOp::ThresholdedRelu { theta: F32(theta) }
        }
        B::LEAKY_RELU => match *o {
            Options::LeakyRelu { alpha } => ModelOp::LeakyRelu { alpha: F32(alpha) },
            _ => return Err("has no LeakyReluOptions".into()),
        },
        B::RESHAPE | B::SQUEEZE => {
            if code == B::RESHAPE && (op.input_shape)(1).is_some() {
                // the shape operand must be known (constant or folded glue), though the
                // declared output shape is what the graph uses
                (op.ints)(1)?;
            }
            let out = op.output_shape;
            if out.first() != input.first() || out.is_empty() {
                return Err(
                    format!("reshaping {input:?} to {out:?} moves the batch dimension").into(),
                );
            }
            if out.len() == 2 {
                ModelOp::Flatten
            } else {
                ModelOp::Reshape {
                    shape: out[1..].iter().map(|&d| d as i64).collect(),
                }
            }
        }
        B::CONCATENATION => {
            let Options::Concatenation { axis, activation } = *o else {
                return Err("has no ConcatenationOptions".into());
            };
            then = ir_activation(activation)?;
            let axis = axes(&[axis as i64], input.len())?;
            ModelOp::Concat { axis: axis[0] }
        }
        B::PAD | B::PADV2 => {
            let raw = (op.ints)(1)?;
            let pads = raw
                .chunks(2)
                .map(|p| match p {
                    [a, b] if *a >= 0 && *b >= 0 => Ok([*a as usize, *b as usize]),
                    _ => Err(format!("invalid paddings {raw:?}").into()),
                })
                .collect::<Result<_, MappingError>>()?;
            ModelOp::Pad { pads }
        }
        B::TRANSPOSE => {
            let rank = input.len() as i64;
            let perm = (op.ints)(1)?
                .into_iter()
                .map(|p| if p < 0 { p + rank } else { p })
                .map(|p| {
                    usize::try_from(p).map_err(|_| MappingError::from("negative permutation entry"))
                })
                .collect::<Result<_, MappingError>>()?;
            ModelOp::Transpose { perm }
        }
        B::RESIZE_NEAREST_NEIGHBOR => {
            let (align_corners, half_pixel_centers) = match *o {
                Options::ResizeNearestNeighbor {
                    align_corners,
                    half_pixel_centers,
                } => (align_corners, half_pixel_centers),
                _ => (false, false),
            };
            let size = (op.ints)(1)?;
            if input.len() != 4 || size.len() != 2 || align_corners {
                return Err(
                    "only integer nearest-neighbor upsampling of images is supported".into(),
                );
            }
            let mut scale = [0usize; 2];
            for a in 0..2 {
                let (n_in, n_out) = (input[1 + a], size[a].max(0) as usize);
                if n_in == 0 || n_out % n_in != 0 {
                    return Err(
                        format!("resizing {n_in} to {n_out} is not an integer upsampling").into(),
                    );
                }
                scale[a] = n_out / n_in;
                if !nearest_is_exact(n_in, n_out, scale[a], half_pixel_centers) {
                    return Err("this resize is not an exact nearest-neighbor upsampling".into());
                }
            }
            ModelOp::UpsampleNearest { scale }
        }
        B::STRIDED_SLICE | B::SLICE => decode_crop(code, op, &input)?,
        _ => {
            return Err(format!(
                "{} is not supported by the TFLite importer",
                super::model::op_name(code)
            )
            .into())
        }
    };
    Ok(Decoded { op: model_op, then })
}

/// STRIDED_SLICE / SLICE on an activation: a crop (unit strides, the batch kept whole).
fn decode_crop(code: B, op: &Operator, input: &[usize]) -> Result<ModelOp, MappingError> {
    let out = op.output_shape;
    let rank = input.len();
    let begin = (op.ints)(1)?;
    if begin.len() != rank || out.len() != rank {
        return Err("only rank-preserving slices are imported (as crops)".into());
    }
    let mut begin_mask = 0;
    if code == B::STRIDED_SLICE {
        let strides = (op.ints)(3)?;
        let Options::StridedSlice {
            begin_mask: bm,
            ellipsis_mask,
            new_axis_mask,
            shrink_axis_mask,
            offset,
            ..
        } = *op.options
        else {
            return Err("has no StridedSliceOptions".into());
        };
        if strides.iter().any(|&s| s != 1)
            || ellipsis_mask != 0
            || new_axis_mask != 0
            || shrink_axis_mask != 0
            || offset
        {
            return Err(
                "only unit-stride slices without masks other than begin/end are imported".into(),
            );
        }
        begin_mask = bm;
    }
    // the crop from the declared output: begin (masked → 0) and the remainder after
    let mut crops = Vec::with_capacity(rank);
    for d in 0..rank {
        let b = if begin_mask & (1 << d) != 0 {
            0
        } else {
            begin[d]
        };
        let b = if b < 0 { b + input[d] as i64 } else { b };
        if b < 0 || b as usize + out[d] > input[d] {
            return Err(format!("slice begin {b} size {} exceeds dimension {d}", out[d]).into());
        }
        crops.push([b as usize, input[d] - b as usize - out[d]]);
    }
    if crops[0] != [0, 0] {
        return Err("slicing the batch dimension is not supported".into());
    }
    Ok(ModelOp::Crop { crops })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_padding_maps_when_it_equals_same() {
        // 5x5 input, 3x3 kernel, stride 1: SAME pads 1 on every side
        let g = |p| padding_mode(p, [5, 5], [3, 3], [1, 1], [1, 1]);
        assert_eq!(g(Padding::Explicit([1, 1, 1, 1])), Some(PaddingMode::Same));
        assert_eq!(g(Padding::Explicit([0, 0, 0, 0])), Some(PaddingMode::Valid));
        assert_eq!(g(Padding::Explicit([2, 0, 1, 1])), None);
    }
}
