//! The integer reference interpreter: runs int8 `.tflite` models bit-exactly like LiteRT's
//! reference kernels (`OpResolverType.BUILTIN_REF`).
//!
//! Loading ([`Interpreter::new`]) reads and verifies the flatbuffer ([`crate::tflite::model`]),
//! then *prepares* every operator the way LiteRT's `Prepare` does: it checks types,
//! quantization and constant operands, computes the fixed-point multipliers and clamping
//! ranges, and infers every shape once from the declared input shapes. Running
//! ([`Interpreter::run`]) evaluates the operators in order; shapes are recomputed from the
//! inputs actually fed, so models whose batch dimension is resizable run any batch.
//!
//! One file per kernel family; the fixed-point arithmetic they share is in [`fixed`].
//! Every kernel documents the LiteRT source it follows.

pub mod activation;
pub mod array;
pub mod binary;
pub mod classify;
pub mod conv;
pub mod fixed;
pub mod fully_connected;
pub mod npy;
pub mod pool;
pub mod quantize;
pub mod reduce;
pub mod shape;
#[cfg(test)]
mod tests;

pub use array::{Array, Data};
pub use classify::{adapt_input, argmax_rows, predict};

use crate::error::{Error, Result};
use crate::tflite::model::{ElemType, FusedActivation, Model, Operator, Tensor};
use crate::tflite::schema::BuiltinOperator as B;

/// How FULLY_CONNECTED requantizes its int32 accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FcRequant {
    /// `round(acc · (double)in_s·w_s/out_s)` in double precision: LiteRT's reference kernel
    /// since April 2025, and what `ai-edge-litert` 2.3 runs under `BUILTIN_REF` (checked
    /// against it by `tests/tflite_interop.rs`).
    #[default]
    Double,
    /// The fixed-point `MultiplyByQuantizedMultiplier` path: older reference kernels
    /// (e.g. `tflite-runtime` 2.14) and LiteRT's optimized kernels.
    FixedPoint,
}

/// Interpreter settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub fc_requant: FcRequant,
}

/// A prepared operator: the kernel with its precomputed parameters and its tensors.
struct Step {
    op_index: usize,
    kernel: Kernel,
    inputs: Vec<Option<usize>>,
    output: usize,
}

/// Every kernel the interpreter has, with its prepared parameters.
#[derive(Clone, Debug)]
pub(crate) enum Kernel {
    Conv(conv::Conv),
    DepthwiseConv(conv::DepthwiseConv),
    TransposeConv(conv::TransposeConv),
    FullyConnected(fully_connected::FullyConnected),
    AveragePool(pool::Pool),
    MaxPool(pool::Pool),
    AddSub(binary::AddSub),
    Mul(binary::Mul),
    MinMax(binary::MinMax),
    Mean(reduce::Mean),
    ReduceMax(reduce::ReduceMax),
    Softmax(activation::Softmax),
    Lut(activation::Lut),
    Relu(activation::Relu),
    LeakyRelu(activation::LeakyRelu),
    HardSwish(activation::HardSwish),
    Quantize(quantize::Quantize),
    Requantize(quantize::Requantize),
    Dequantize(quantize::Dequantize),
    Reshape(shape::Reshape),
    Concat(shape::Concat),
    Pad(shape::Pad),
    Transpose(shape::Transpose),
    Slice(shape::Slice),
    StridedSlice(shape::StridedSlice),
    ResizeNearest(shape::ResizeNearest),
}

impl Kernel {
    /// The output shape for the given input shapes (the op's operands in order; `None` for
    /// omitted optional inputs).
    fn out_shape(&self, ins: &[Option<&[usize]>]) -> std::result::Result<Vec<usize>, String> {
        let x = |i: usize| -> std::result::Result<&[usize], String> {
            ins.get(i)
                .copied()
                .flatten()
                .ok_or_else(|| format!("input {i} is missing"))
        };
        match self {
            Kernel::Conv(k) => k.out_shape(x(0)?),
            Kernel::DepthwiseConv(k) => k.out_shape(x(0)?),
            Kernel::TransposeConv(k) => k.out_shape(x(2)?),
            Kernel::FullyConnected(k) => k.out_shape(x(0)?),
            Kernel::AveragePool(k) | Kernel::MaxPool(k) => k.out_shape(x(0)?),
            Kernel::AddSub(_) | Kernel::Mul(_) | Kernel::MinMax(_) => {
                binary::broadcast_shape(x(0)?, x(1)?)
            }
            Kernel::Mean(k) => k.out_shape(x(0)?),
            Kernel::ReduceMax(k) => k.out_shape(x(0)?),
            Kernel::Softmax(_)
            | Kernel::Lut(_)
            | Kernel::Relu(_)
            | Kernel::LeakyRelu(_)
            | Kernel::HardSwish(_)
            | Kernel::Quantize(_)
            | Kernel::Requantize(_)
            | Kernel::Dequantize(_) => Ok(x(0)?.to_vec()),
            Kernel::Reshape(k) => k.out_shape(x(0)?),
            Kernel::Concat(k) => {
                let shapes: Vec<&[usize]> = (0..ins.len())
                    .map(x)
                    .collect::<std::result::Result<_, _>>()?;
                k.out_shape(&shapes)
            }
            Kernel::Pad(k) => k.out_shape(x(0)?),
            Kernel::Transpose(k) => k.out_shape(x(0)?),
            Kernel::Slice(k) => k.out_shape(x(0)?),
            Kernel::StridedSlice(k) => k.out_shape(x(0)?),
            Kernel::ResizeNearest(k) => k.out_shape(x(0)?),
        }
    }

    fn run(&self, ins: &[Option<&Array>]) -> std::result::Result<Array, String> {
        let x = |i: usize| -> std::result::Result<&Array, String> {
            ins.get(i)
                .copied()
                .flatten()
                .ok_or_else(|| format!("input {i} is missing"))
        };
        let opt = |i: usize| ins.get(i).copied().flatten();
        match self {
            Kernel::Conv(k) => k.run(x(0)?, x(1)?, opt(2)),
            Kernel::DepthwiseConv(k) => k.run(x(0)?, x(1)?, opt(2)),
            Kernel::TransposeConv(k) => k.run(x(2)?, x(1)?, opt(3)),
            Kernel::FullyConnected(k) => k.run(x(0)?, x(1)?, opt(2)),
            Kernel::AveragePool(k) => k.run(x(0)?, false),
            Kernel::MaxPool(k) => k.run(x(0)?, true),
            Kernel::AddSub(k) => k.run(x(0)?, x(1)?),
            Kernel::Mul(k) => k.run(x(0)?, x(1)?),
            Kernel::MinMax(k) => k.run(x(0)?, x(1)?),
            Kernel::Mean(k) => k.run(x(0)?),
            Kernel::ReduceMax(k) => k.run(x(0)?),
            Kernel::Softmax(k) => k.run(x(0)?),
            Kernel::Lut(k) => k.run(x(0)?),
            Kernel::Relu(k) => k.run(x(0)?),
            Kernel::LeakyRelu(k) => k.run(x(0)?),
            Kernel::HardSwish(k) => k.run(x(0)?),
            Kernel::Quantize(k) => k.run(x(0)?),
            Kernel::Requantize(k) => k.run(x(0)?),
            Kernel::Dequantize(k) => k.run(x(0)?),
            Kernel::Reshape(k) => k.run(x(0)?),
            Kernel::Concat(k) => {
                let arrays: Vec<&Array> = (0..ins.len())
                    .map(x)
                    .collect::<std::result::Result<_, _>>()?;
                k.run(&arrays)
            }
            Kernel::Pad(k) => k.run(x(0)?),
            Kernel::Transpose(k) => k.run(x(0)?),
            Kernel::Slice(k) => k.run(x(0)?),
            Kernel::StridedSlice(k) => k.run(x(0)?),
            Kernel::ResizeNearest(k) => k.run(x(0)?),
        }
    }
}

/// The operator being prepared, with helpers that check its tensors and name it in errors.
pub(crate) struct Ctx<'m> {
    pub model: &'m Model,
    pub op: &'m Operator,
    pub index: usize,
}

pub(crate) type PResult<T> = std::result::Result<T, String>;

impl<'m> Ctx<'m> {
    /// The error for this operator: `operator #3 CONV_2D (output `name`): msg`.
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        let out = self
            .op
            .outputs
            .first()
            .map(|&t| format!(" (output `{}`)", self.model.tensors[t].name))
            .unwrap_or_default();
        Error::Tflite(format!(
            "operator #{} {}{out}: {msg}",
            self.index,
            self.op.name()
        ))
    }

    pub fn input(&self, i: usize) -> PResult<&'m Tensor> {
        match self.op.inputs.get(i) {
            Some(Some(t)) => Ok(&self.model.tensors[*t]),
            Some(None) => Err(format!("input {i} is omitted but required")),
            None => Err(format!(
                "has {} inputs, input {i} is required",
                self.op.inputs.len()
            )),
        }
    }

    pub fn opt_input(&self, i: usize) -> Option<&'m Tensor> {
        self.op
            .inputs
            .get(i)
            .copied()
            .flatten()
            .map(|t| &self.model.tensors[t])
    }

    pub fn output(&self) -> PResult<&'m Tensor> {
        match self.op.outputs.as_slice() {
            [t] => Ok(&self.model.tensors[*t]),
            other => Err(format!("has {} outputs, expected 1", other.len())),
        }
    }

    pub fn inputs_between(&self, lo: usize, hi: usize) -> PResult<()> {
        let n = self.op.inputs.len();
        if n < lo || n > hi {
            return Err(if lo == hi {
                format!("has {n} inputs, expected {lo}")
            } else {
                format!("has {n} inputs, expected {lo} to {hi}")
            });
        }
        Ok(())
    }
}

/// `(scale, zero_point)` of a per-tensor int8 tensor, checked.
pub(crate) fn int8_params(t: &Tensor) -> PResult<(f32, i32)> {
    if t.dtype != ElemType::I8 {
        return Err(format!(
            "tensor `{}` is {}; this kernel computes on INT8",
            t.name,
            t.dtype.name()
        ));
    }
    let q = t
        .quant
        .as_ref()
        .ok_or_else(|| format!("INT8 tensor `{}` has no quantization parameters", t.name))?;
    if q.is_per_axis() {
        return Err(format!(
            "tensor `{}` is quantized per axis; this kernel needs per-tensor quantization",
            t.name
        ));
    }
    let (s, zp) = q.first();
    if !(-128..=127).contains(&zp) {
        return Err(format!(
            "INT8 tensor `{}` has zero point {zp} outside [-128, 127]",
            t.name
        ));
    }
    Ok((s, zp))
}

/// A constant operand (weights, bias, shape, axes), checked and decoded.
pub(crate) fn constant(t: &Tensor, what: &str) -> PResult<Array> {
    if t.is_sparse {
        return Err(format!(
            "the {what} `{}` is sparse; qatc reads dense tensors only",
            t.name
        ));
    }
    let data = t.values().ok_or_else(|| {
        if t.dtype.size().is_none() {
            format!(
                "the {what} `{}` has unsupported type {}",
                t.name,
                t.dtype.name()
            )
        } else {
            format!(
                "the {what} `{}` must be a constant tensor (qatc runs static graphs)",
                t.name
            )
        }
    })?;
    Ok(Array {
        shape: t.shape.clone(),
        data,
    })
}

/// Integer values of a constant index tensor (INT32 or INT64).
pub(crate) fn const_ints(t: &Tensor, what: &str) -> PResult<Vec<i64>> {
    let a = constant(t, what)?;
    match a.elem_type() {
        ElemType::I32 | ElemType::I64 => Ok(a.data.to_i64().unwrap_or_default()),
        other => Err(format!(
            "the {what} `{}` is {}; expected INT32 or INT64",
            t.name,
            other.name()
        )),
    }
}

/// A real multiplier as `(q, shift)`, refusing ones the fixed-point kernels cannot apply.
pub(crate) fn multiplier(m: f64, what: &str) -> PResult<(i32, i32)> {
    if !m.is_finite() {
        return Err(format!("the {what} multiplier is {m}"));
    }
    let (q, shift) = fixed::quantize_multiplier(m);
    if shift > 30 {
        return Err(format!(
            "the {what} multiplier {m:e} is too large for fixed-point requantization \
             (check the quantization scales)"
        ));
    }
    Ok((q, shift))
}

/// TFLite's `CalculateActivationRangeQuantized` for an int8 output: the clamp range of a
/// fused activation. Like LiteRT, activations other than RELU, RELU6 and RELU_N1_TO_1 do not
/// clamp (TANH and SIGN_BIT are ignored by the quantized kernels).
pub(crate) fn activation_range(act: FusedActivation, scale: f32, zp: i32) -> PResult<(i32, i32)> {
    let q = |f: f32| {
        fixed::quantize_f32(f, scale, zp)
            .ok_or_else(|| format!("the activation bound {f} overflows with scale {scale}"))
    };
    Ok(match act {
        FusedActivation::Relu => (q(0.0)?.max(-128), 127),
        FusedActivation::Relu6 => (q(0.0)?.max(-128), q(6.0)?.min(127)),
        FusedActivation::ReluN1To1 => (q(-1.0)?.max(-128), q(1.0)?.min(127)),
        _ => (-128, 127),
    })
}

/// TFLite's padding rule along one axis (`padding.h`): the output size and the padding
/// before. Errors when the output would be empty.
pub(crate) fn window_geometry(
    padding: crate::tflite::model::PaddingMode,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> PResult<(usize, usize)> {
    if kernel == 0 {
        return Err("the window is empty".into());
    }
    let eff = (kernel - 1) * dilation + 1;
    let out = match padding {
        crate::tflite::model::PaddingMode::Same => input.div_ceil(stride),
        crate::tflite::model::PaddingMode::Valid => (input + stride).saturating_sub(eff) / stride,
        crate::tflite::model::PaddingMode::Other(v) => {
            return Err(format!("unknown padding mode {v}"))
        }
    };
    if out == 0 {
        return Err(format!(
            "a window of {eff} (kernel {kernel}, dilation {dilation}) leaves no output for an input of {input}"
        ));
    }
    let total = ((out - 1) * stride + eff).saturating_sub(input);
    Ok((out, total / 2))
}

/// A positive option value (stride, dilation, filter size) bounded like LiteRT bounds them.
pub(crate) fn positive(v: i32, what: &str) -> PResult<usize> {
    if v <= 0 || v > i16::MAX as i32 {
        return Err(format!("{what} is {v}; it must be in 1..={}", i16::MAX));
    }
    Ok(v as usize)
}

/// The loaded, prepared model.
pub struct Interpreter {
    model: Model,
    /// Every tensor's constant value, decoded once.
    constants: Vec<Option<Array>>,
    steps: Vec<Step>,
    options: Options,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter")
            .field("operators", &self.steps.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Interpreter {
    /// Reads, verifies and prepares a `.tflite` model with default options.
    pub fn new(bytes: &[u8]) -> Result<Interpreter> {
        Interpreter::with_options(bytes, Options::default())
    }

    pub fn with_options(bytes: &[u8], options: Options) -> Result<Interpreter> {
        Interpreter::from_model(crate::tflite::read(bytes)?, options)
    }

    /// Prepares an already-read model.
    pub fn from_model(model: Model, options: Options) -> Result<Interpreter> {
        let mut steps = Vec::with_capacity(model.operators.len());
        for (index, op) in model.operators.iter().enumerate() {
            let cx = Ctx {
                model: &model,
                op,
                index,
            };
            let kernel = prepare(&cx, options).map_err(|m| cx.error(m))?;
            let output = op.outputs[0];
            steps.push(Step {
                op_index: index,
                kernel,
                inputs: op.inputs.clone(),
                output,
            });
        }
        let constants = model
            .tensors
            .iter()
            .map(|t| {
                t.values().map(|data| Array {
                    shape: t.shape.clone(),
                    data,
                })
            })
            .collect();
        let interp = Interpreter {
            model,
            constants,
            steps,
            options,
        };
        interp.check_shapes()?;
        Ok(interp)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The graph inputs, in order.
    pub fn inputs(&self) -> Vec<&Tensor> {
        self.model
            .inputs
            .iter()
            .map(|&i| &self.model.tensors[i])
            .collect()
    }

    /// The graph outputs, in order.
    pub fn outputs(&self) -> Vec<&Tensor> {
        self.model
            .outputs
            .iter()
            .map(|&i| &self.model.tensors[i])
            .collect()
    }

    /// Infers every shape from the declared inputs and checks it against the declared
    /// output shapes: a model whose shapes do not add up is refused at load time.
    fn check_shapes(&self) -> Result<()> {
        for step in &self.steps {
            let op = &self.model.operators[step.op_index];
            let cx = Ctx {
                model: &self.model,
                op,
                index: step.op_index,
            };
            let shapes: Vec<Option<&[usize]>> = step
                .inputs
                .iter()
                .map(|t| t.map(|t| self.model.tensors[t].shape.as_slice()))
                .collect();
            let got = step.kernel.out_shape(&shapes).map_err(|m| cx.error(m))?;
            let declared = &self.model.tensors[step.output].shape;
            if &got != declared {
                return Err(cx.error(format!(
                    "computes output shape {got:?} but the model declares {declared:?}"
                )));
            }
        }
        Ok(())
    }

    /// Runs the model on one array per graph input and returns one array per graph output.
    /// Each input must have its declared type and shape, except that the first (batch)
    /// dimension may differ.
    pub fn run(&self, inputs: &[Array]) -> Result<Vec<Array>> {
        let mut env = self.evaluate(inputs)?;
        self.model
            .outputs
            .iter()
            .map(|&t| {
                env[t]
                    .take()
                    .or_else(|| self.constants[t].clone())
                    .ok_or_else(|| {
                        Error::Tflite(format!(
                            "graph output `{}` is never computed",
                            self.model.tensors[t].name
                        ))
                    })
            })
            .collect()
    }

    /// Runs the model and returns the value of every tensor (constants excluded), indexed
    /// like [`Model::tensors`]: for comparing intermediate results.
    pub fn run_all(&self, inputs: &[Array]) -> Result<Vec<Option<Array>>> {
        self.evaluate(inputs)
    }

    fn evaluate(&self, inputs: &[Array]) -> Result<Vec<Option<Array>>> {
        let n_in = self.model.inputs.len();
        if inputs.len() != n_in {
            return Err(Error::Usage(format!(
                "the model has {n_in} input(s), {} were given",
                inputs.len()
            )));
        }
        let mut env: Vec<Option<Array>> = vec![None; self.model.tensors.len()];
        for (&t, a) in self.model.inputs.iter().zip(inputs) {
            let info = &self.model.tensors[t];
            let same_sample = a.shape.len() == info.shape.len()
                && a.shape.iter().skip(1).eq(info.shape.iter().skip(1));
            if a.shape.iter().product::<usize>() != a.data.len() {
                return Err(Error::Usage(format!(
                    "input `{}`: the array holds {} values for shape {:?}",
                    info.name,
                    a.data.len(),
                    a.shape
                )));
            }
            if a.elem_type() != info.dtype || !same_sample {
                return Err(Error::Usage(format!(
                    "input `{}` expects {} {:?} (any batch), got {} {:?}",
                    info.name,
                    info.dtype.name(),
                    info.shape,
                    a.elem_type().name(),
                    a.shape
                )));
            }
            if a.shape.first() == Some(&0) {
                return Err(Error::Usage(format!(
                    "input `{}` has an empty batch",
                    info.name
                )));
            }
            env[t] = Some(a.clone());
        }
        for step in &self.steps {
            let op = &self.model.operators[step.op_index];
            let cx = Ctx {
                model: &self.model,
                op,
                index: step.op_index,
            };
            let out = {
                let mut args: Vec<Option<&Array>> = Vec::with_capacity(step.inputs.len());
                for t in &step.inputs {
                    args.push(match t {
                        None => None,
                        Some(t) => Some(
                            env[*t]
                                .as_ref()
                                .or(self.constants[*t].as_ref())
                                .ok_or_else(|| {
                                    cx.error(format!(
                                        "input tensor `{}` has no value: it is neither a graph \
                                         input, a constant nor computed by an earlier operator",
                                        self.model.tensors[*t].name
                                    ))
                                })?,
                        ),
                    });
                }
                step.kernel.run(&args).map_err(|m| cx.error(m))?
            };
            env[step.output] = Some(out);
        }
        Ok(env)
    }
}

/// Prepares one operator: checks it and builds its kernel.
fn prepare(cx: &Ctx, options: Options) -> PResult<Kernel> {
    let op = cx.op;
    let code = op.code;
    if op.outputs.len() != 1 {
        return Err(format!("has {} outputs, expected 1", op.outputs.len()));
    }
    Ok(match code {
        B::CONV_2D => Kernel::Conv(conv::Conv::prepare(cx)?),
        B::DEPTHWISE_CONV_2D => Kernel::DepthwiseConv(conv::DepthwiseConv::prepare(cx)?),
        B::TRANSPOSE_CONV => Kernel::TransposeConv(conv::TransposeConv::prepare(cx)?),
        B::FULLY_CONNECTED => Kernel::FullyConnected(fully_connected::FullyConnected::prepare(
            cx,
            options.fc_requant,
        )?),
        B::AVERAGE_POOL_2D => Kernel::AveragePool(pool::Pool::prepare(cx)?),
        B::MAX_POOL_2D => Kernel::MaxPool(pool::Pool::prepare(cx)?),
        B::ADD | B::SUB => Kernel::AddSub(binary::AddSub::prepare(cx)?),
        B::MUL => Kernel::Mul(binary::Mul::prepare(cx)?),
        B::MAXIMUM | B::MINIMUM => Kernel::MinMax(binary::MinMax::prepare(cx)?),
        B::MEAN => Kernel::Mean(reduce::Mean::prepare(cx)?),
        B::REDUCE_MAX => Kernel::ReduceMax(reduce::ReduceMax::prepare(cx)?),
        B::SOFTMAX => Kernel::Softmax(activation::Softmax::prepare(cx)?),
        B::LOGISTIC | B::TANH => Kernel::Lut(activation::Lut::prepare(cx)?),
        B::RELU | B::RELU6 | B::RELU_N1_TO_1 => Kernel::Relu(activation::Relu::prepare(cx)?),
        B::LEAKY_RELU => Kernel::LeakyRelu(activation::LeakyRelu::prepare(cx)?),
        B::HARD_SWISH => Kernel::HardSwish(activation::HardSwish::prepare(cx)?),
        B::QUANTIZE => quantize::prepare_quantize(cx)?,
        B::DEQUANTIZE => Kernel::Dequantize(quantize::Dequantize::prepare(cx)?),
        B::RESHAPE | B::SQUEEZE => Kernel::Reshape(shape::Reshape::prepare(cx)?),
        B::CONCATENATION => Kernel::Concat(shape::Concat::prepare(cx)?),
        B::PAD | B::PADV2 => Kernel::Pad(shape::Pad::prepare(cx)?),
        B::TRANSPOSE => Kernel::Transpose(shape::Transpose::prepare(cx)?),
        B::SLICE => Kernel::Slice(shape::Slice::prepare(cx)?),
        B::STRIDED_SLICE => Kernel::StridedSlice(shape::StridedSlice::prepare(cx)?),
        B::RESIZE_NEAREST_NEIGHBOR => Kernel::ResizeNearest(shape::ResizeNearest::prepare(cx)?),
        _ => {
            return Err(format!(
                "{} is not supported by qatc's int8 interpreter (supported: CONV_2D, \
                 DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED, AVERAGE_POOL_2D, \
                 MAX_POOL_2D, ADD, SUB, MUL, MAXIMUM, MINIMUM, MEAN, REDUCE_MAX, SOFTMAX, \
                 LOGISTIC, TANH, RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, HARD_SWISH, QUANTIZE, \
                 DEQUANTIZE, RESHAPE, SQUEEZE, CONCATENATION, PAD, PADV2, TRANSPOSE, SLICE, \
                 STRIDED_SLICE, RESIZE_NEAREST_NEIGHBOR)",
                op.name()
            ))
        }
    })
}

/// Checks that an int8 activation output has the same type as its input (the common case
/// of unary kernels) and returns both tensors' params.
pub(crate) fn unary_int8(cx: &Ctx) -> PResult<((f32, i32), (f32, i32))> {
    cx.inputs_between(1, 1)?;
    let x = cx.input(0)?;
    let y = cx.output()?;
    Ok((int8_params(x)?, int8_params(y)?))
}

/// Row-major strides of a shape.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The element count of a shape, bounded by [`model::MAX_ELEMENTS`].
pub(crate) fn checked_numel(shape: &[usize]) -> PResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= crate::tflite::model::MAX_ELEMENTS)
        .ok_or_else(|| format!("shape {shape:?} has too many elements"))
}
