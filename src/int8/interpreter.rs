//! The interpreter: loading (read, verify, prepare every operator, infer every shape) and
//! running a model.

use super::array::Array;
use super::context::{Ctx, KernelError, Options, PResult};
use super::{activation, binary, conv, fully_connected, pool, quantize_ops, reduce, select, shape};
use crate::error::{Error, Result};
use crate::tflite::model::{Model, Tensor};
use crate::tflite::schema::BuiltinOperator as B;

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
    Prelu(activation::Prelu),
    HardSwish(activation::HardSwish),
    Quantize(quantize_ops::Quantize),
    Requantize(quantize_ops::Requantize),
    Dequantize(quantize_ops::Dequantize),
    Reshape(shape::Reshape),
    Concat(shape::Concat),
    Pad(shape::Pad),
    Transpose(shape::Transpose),
    Slice(shape::Slice),
    StridedSlice(shape::StridedSlice),
    ResizeNearest(shape::ResizeNearest),
    Greater(select::Greater),
    SelectV2(select::SelectV2),
}

impl Kernel {
    /// The output shape for the given input shapes (the op's operands in order; `None` for
    /// omitted optional inputs).
    fn out_shape(&self, ins: &[Option<&[usize]>]) -> std::result::Result<Vec<usize>, KernelError> {
        let x = |i: usize| -> std::result::Result<&[usize], KernelError> {
            ins.get(i)
                .copied()
                .flatten()
                .ok_or_else(|| KernelError(format!("input {i} is missing")))
        };
        match self {
            Kernel::Conv(k) => k.out_shape(x(0)?),
            Kernel::DepthwiseConv(k) => k.out_shape(x(0)?),
            Kernel::TransposeConv(k) => k.out_shape(x(2)?),
            Kernel::FullyConnected(k) => k.out_shape(x(0)?),
            Kernel::AveragePool(k) | Kernel::MaxPool(k) => k.out_shape(x(0)?),
            Kernel::SelectV2(_) => select::SelectV2::out_shape(x(0)?, x(1)?, x(2)?),
            Kernel::AddSub(_) | Kernel::Mul(_) | Kernel::MinMax(_) | Kernel::Greater(_) => {
                binary::broadcast_shape(x(0)?, x(1)?)
            }
            Kernel::Mean(k) => k.out_shape(x(0)?),
            Kernel::ReduceMax(k) => k.out_shape(x(0)?),
            Kernel::Softmax(_)
            | Kernel::Lut(_)
            | Kernel::Relu(_)
            | Kernel::LeakyRelu(_)
            | Kernel::Prelu(_)
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

    fn run(&self, ins: &[Option<&Array>]) -> std::result::Result<Array, KernelError> {
        let x = |i: usize| -> std::result::Result<&Array, KernelError> {
            ins.get(i)
                .copied()
                .flatten()
                .ok_or_else(|| KernelError(format!("input {i} is missing")))
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
            Kernel::Greater(k) => k.run(x(0)?, x(1)?),
            Kernel::SelectV2(k) => k.run(x(0)?, x(1)?, x(2)?),
            Kernel::Mean(k) => k.run(x(0)?),
            Kernel::ReduceMax(k) => k.run(x(0)?),
            Kernel::Softmax(k) => k.run(x(0)?),
            Kernel::Lut(k) => k.run(x(0)?),
            Kernel::Relu(k) => k.run(x(0)?),
            Kernel::LeakyRelu(k) => k.run(x(0)?),
            Kernel::Prelu(k) => k.run(x(0)?),
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

    /// Reads, verifies and prepares a `.tflite` model with `options`.
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

    /// The model the interpreter runs, as read from the file.
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
        return Err(format!("has {} outputs, expected 1", op.outputs.len()).into());
    }
    Ok(match code {
        B::CONV_2D => Kernel::Conv(conv::Conv::prepare(cx, options.kernels)?),
        B::DEPTHWISE_CONV_2D => {
            Kernel::DepthwiseConv(conv::DepthwiseConv::prepare(cx, options.kernels)?)
        }
        B::TRANSPOSE_CONV => Kernel::TransposeConv(conv::TransposeConv::prepare(cx)?),
        B::FULLY_CONNECTED => Kernel::FullyConnected(fully_connected::FullyConnected::prepare(
            cx,
            options.fc_requant,
        )?),
        B::AVERAGE_POOL_2D => Kernel::AveragePool(pool::Pool::prepare(cx)?),
        B::MAX_POOL_2D => Kernel::MaxPool(pool::Pool::prepare(cx)?),
        B::ADD | B::SUB => Kernel::AddSub(binary::AddSub::prepare(cx, options.kernels)?),
        B::MUL => Kernel::Mul(binary::Mul::prepare(cx)?),
        B::MAXIMUM | B::MINIMUM => Kernel::MinMax(binary::MinMax::prepare(cx)?),
        B::GREATER => Kernel::Greater(select::Greater::prepare(cx)?),
        B::SELECT_V2 => Kernel::SelectV2(select::SelectV2::prepare(cx)?),
        B::MEAN => Kernel::Mean(reduce::Mean::prepare(cx)?),
        B::REDUCE_MAX => Kernel::ReduceMax(reduce::ReduceMax::prepare(cx)?),
        B::SOFTMAX => Kernel::Softmax(activation::Softmax::prepare(cx)?),
        B::LOGISTIC | B::TANH => Kernel::Lut(activation::Lut::prepare(cx)?),
        B::RELU | B::RELU6 | B::RELU_N1_TO_1 => Kernel::Relu(activation::Relu::prepare(cx)?),
        B::LEAKY_RELU => Kernel::LeakyRelu(activation::LeakyRelu::prepare(cx)?),
        B::PRELU => Kernel::Prelu(activation::Prelu::prepare(cx)?),
        B::HARD_SWISH => Kernel::HardSwish(activation::HardSwish::prepare(cx)?),
        B::QUANTIZE => match quantize_ops::prepare_quantize(cx)? {
            quantize_ops::QuantizeKernel::Quantize(k) => Kernel::Quantize(k),
            quantize_ops::QuantizeKernel::Requantize(k) => Kernel::Requantize(k),
        },
        B::DEQUANTIZE => Kernel::Dequantize(quantize_ops::Dequantize::prepare(cx)?),
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
                 LOGISTIC, TANH, RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, PRELU, HARD_SWISH, QUANTIZE, \
                 DEQUANTIZE, RESHAPE, SQUEEZE, CONCATENATION, PAD, PADV2, TRANSPOSE, SLICE, \
                 STRIDED_SLICE, RESIZE_NEAREST_NEIGHBOR)",
                op.name()
            )
            .into())
        }
    })
}
