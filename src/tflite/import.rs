//! Import: a `.tflite` model to a qatc graph and its parameters.
//!
//! Float models (what the TFLite converter writes from Keras) become model graphs
//! (graph form 1): one node per operator, fused activations split into separate
//! `relu`/`relu6` nodes, weights as params named after their layer, node names from tensor
//! names. The converter's shape glue (SHAPE → STRIDED_SLICE → PACK feeding a RESHAPE) is
//! folded when the shapes are static.
//!
//! Int8 models (qatc's own exports, and converter output using the same ops) keep their
//! quantization: activations get `fake_quant {range=fixed}` nodes reproducing each tensor's
//! scale and zero point, weights are dequantized and get TFMOT's weight quantizer (narrow,
//! symmetric, per axis as stored, `range=last_value`), biases are dequantized; fused
//! activations stay fused. The result is an export-ready graph (form 3), so
//! `export(import(export(m)))` reproduces `export(m)`.

use super::model::{
    self, ElemType, FusedActivation, ModelInfo, OpInfo, Options, PaddingMode, TensorInfo,
};
use super::ops;
use super::schema::BuiltinOperator as B;
use crate::error::{Error, Result};
use crate::int8::Data;
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::ModelOp;
use crate::ir::op::{
    Activation, ConvAttrs, FakeQuantAttrs, Op, Padding, PoolAttrs, RangeSource, ReduceAttrs, F32,
};
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::types::TensorType;
use std::collections::HashMap;

/// Imports a `.tflite` model.
pub fn import(bytes: &[u8]) -> Result<(Graph, ParamStore)> {
    let m = model::read(bytes)?;
    Importer::new(&m).run()
}

struct Importer<'m> {
    m: &'m ModelInfo,
    g: Graph,
    p: ParamStore,
    /// The IR value of each tensor computed so far.
    vals: HashMap<usize, NodeId>,
    /// Integer tensors computed by shape glue (SHAPE, STRIDED_SLICE, PACK, …).
    ints: HashMap<usize, Vec<i64>>,
}

fn op_error(index: usize, op: &OpInfo, msg: impl std::fmt::Display) -> Error {
    Error::Tflite(format!("operator #{index} {}: {msg}", op.name()))
}

/// A readable node name from a tensor name: the converter joins the names of fused ops
/// with `;` — the first one names the layer.
fn base_name(t: &TensorInfo, fallback: &str) -> String {
    let n = t.name.split(';').next().unwrap_or("").trim();
    if n.is_empty() {
        fallback.to_string()
    } else {
        n.to_string()
    }
}

/// The fixed-range fake-quant that reproduces an int8 tensor's `(scale, zero_point)`: the
/// range `[(-128 - zp)·s, (127 - zp)·s]`, nudged by a few ulps where float rounding would
/// otherwise make the fake-quant's own nudging land one ulp off `s`.
fn fixed_quantizer(scale: f32, zero_point: i32) -> FakeQuantAttrs {
    let with = |min: f32, max: f32| FakeQuantAttrs {
        bits: 8,
        narrow: false,
        symmetric: false,
        axis: None,
        range: RangeSource::Fixed {
            min: F32(min),
            max: F32(max),
        },
    };
    let min = (-128 - zero_point) as f32 * scale;
    let max = (127 - zero_point) as f32 * scale;
    let step = |v: f32, k: i32| -> f32 {
        if k == 0 || v == 0.0 {
            return v;
        }
        let bits = v.to_bits() as i64 + if v > 0.0 { k as i64 } else { -(k as i64) };
        f32::from_bits(bits as u32)
    };
    for dmax in [0, 1, -1, 2, -2, 3, -3] {
        for dmin in [0, 1, -1, 2, -2, 3, -3] {
            let (lo, hi) = (step(min, dmin), step(max, dmax));
            let q = with(lo, hi);
            let n = crate::quant::fake::nudged_for(&q, lo, hi);
            if n.scale == scale && n.zero_point - 128 == zero_point {
                return q;
            }
        }
    }
    with(min, max)
}

/// `(scale, zero_point)` of a per-tensor int8 tensor with a zero point in the int8 range.
fn int8_params(t: &TensorInfo) -> Option<(f32, i32)> {
    (t.dtype == ElemType::I8)
        .then(|| {
            t.quant
                .as_ref()
                .filter(|q| !q.is_per_axis())
                .map(|q| q.first())
        })
        .flatten()
        .filter(|(_, z)| (-128..=127).contains(z))
}

fn padding(p: PaddingMode) -> std::result::Result<Padding, String> {
    match p {
        PaddingMode::Same => Ok(Padding::Same),
        PaddingMode::Valid => Ok(Padding::Valid),
        PaddingMode::Other(v) => Err(format!("unknown padding mode {v}")),
    }
}

fn positive(v: i32, what: &str) -> std::result::Result<usize, String> {
    if v <= 0 || v > i16::MAX as i32 {
        return Err(format!("{what} is {v}"));
    }
    Ok(v as usize)
}

type R<T> = std::result::Result<T, String>;

impl<'m> Importer<'m> {
    fn new(m: &'m ModelInfo) -> Importer<'m> {
        let name = m
            .subgraph_name
            .clone()
            .filter(|n| !n.is_empty() && n != "main")
            .unwrap_or_else(|| "imported".to_string());
        Importer {
            m,
            g: Graph::new(name),
            p: ParamStore::new(),
            vals: HashMap::new(),
            ints: HashMap::new(),
        }
    }

    fn tensor(&self, t: usize) -> &'m TensorInfo {
        &self.m.tensors[t]
    }

    fn unique(&self, base: &str) -> String {
        self.g.unique_name(base)
    }

    fn run(mut self) -> Result<(Graph, ParamStore)> {
        let sig = self.m.signatures.first();
        for (k, &t) in self.m.inputs.iter().enumerate() {
            let info = self.tensor(t);
            let name = sig
                .and_then(|s| {
                    s.inputs
                        .iter()
                        .find(|(_, i)| *i == t)
                        .map(|(n, _)| n.clone())
                })
                .unwrap_or_else(|| base_name(info, &format!("input_{k}")));
            let shape = self.input_shape(info)?;
            let name = self.unique(&name);
            let x = self.g.add_input(&name, TensorType::f32(shape))?;
            let v = match (info.dtype, int8_params(info)) {
                (ElemType::F32, _) => x,
                (ElemType::I8, Some((s, z))) => {
                    let n = self.unique(&format!("{name}/quant"));
                    self.g.add(
                        Op::Model(ModelOp::FakeQuant(fixed_quantizer(s, z))),
                        n,
                        &[x],
                    )?
                }
                (other, _) => {
                    return Err(Error::Tflite(format!(
                        "input `{}` is {}; qatc imports FLOAT32 or per-tensor INT8 inputs",
                        info.name,
                        other.name()
                    )))
                }
            };
            self.vals.insert(t, v);
        }
        for (index, op) in self.m.operators.iter().enumerate() {
            self.operator(index, op)
                .map_err(|msg| op_error(index, op, msg))?;
        }
        for (k, &t) in self.m.outputs.iter().enumerate() {
            let info = self.tensor(t);
            let name = sig
                .and_then(|s| {
                    s.outputs
                        .iter()
                        .find(|(_, i)| *i == t)
                        .map(|(n, _)| n.clone())
                })
                .unwrap_or_else(|| base_name(info, &format!("output_{k}")));
            let v = *self.vals.get(&t).ok_or_else(|| {
                Error::Tflite(format!("graph output `{}` is never computed", info.name))
            })?;
            self.g.add_output(name, v);
        }
        crate::ir::verify::verify_with_params(&self.g, &self.p)?;
        Ok((self.g, self.p))
    }

    fn input_shape(&self, info: &TensorInfo) -> Result<Vec<usize>> {
        let mut s = info.shape.clone();
        match s.first_mut() {
            Some(d) if *d == 0 => *d = 1,
            Some(_) => {}
            None => {
                return Err(Error::Tflite(format!(
                    "input `{}` is a scalar; qatc inputs have a batch dimension",
                    info.name
                )))
            }
        }
        Ok(s)
    }

    // ---- operands ---------------------------------------------------------------------

    fn input_index(&self, op: &OpInfo, i: usize) -> R<usize> {
        op.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} is missing"))
    }

    /// The IR value of operand `i`: a computed value, or a constant as a param (behind a
    /// fixed-range fake-quant when it is int8).
    fn value(&mut self, op: &OpInfo, i: usize) -> R<NodeId> {
        let t = self.input_index(op, i)?;
        if let Some(&v) = self.vals.get(&t) {
            return Ok(v);
        }
        let info = self.tensor(t);
        let Some(c) = &info.constant else {
            return Err(format!(
                "input tensor `{}` is not computed by an earlier operator",
                info.name
            ));
        };
        let name = self.unique(&base_name(info, "constant"));
        let (data, fq) = match (&c.data, int8_params(info)) {
            (Data::F32(v), _) => (v.clone(), None),
            (Data::I8(v), Some((s, z))) => (
                v.iter().map(|&q| (q as i32 - z) as f32 * s).collect(),
                Some(fixed_quantizer(s, z)),
            ),
            _ => {
                return Err(format!(
                    "the constant `{}` ({}) is not a float or int8 value",
                    info.name,
                    info.dtype.name()
                ))
            }
        };
        let mut v = self
            .param(&name, Tensor::new(c.shape.clone(), data))
            .map_err(|e| e.to_string())?;
        if let Some(q) = fq {
            let n = self.unique(&format!("{name}/quant"));
            v = self
                .g
                .add(Op::Model(ModelOp::FakeQuant(q)), n, &[v])
                .map_err(|e| e.to_string())?;
        }
        self.vals.insert(t, v);
        Ok(v)
    }

    fn param(&mut self, name: &str, t: Tensor) -> Result<NodeId> {
        let id = self.g.param(name, TensorType::f32(t.shape.clone()))?;
        self.p.insert(name, t);
        Ok(id)
    }

    /// Integer values of operand `i`: a constant INT32/INT64 tensor or folded shape glue.
    fn ints(&self, op: &OpInfo, i: usize) -> R<Vec<i64>> {
        let t = self.input_index(op, i)?;
        if let Some(v) = self.ints.get(&t) {
            return Ok(v.clone());
        }
        let info = self.tensor(t);
        match &info.constant {
            Some(c) if matches!(c.data, Data::I32(_) | Data::I64(_)) => {
                Ok(c.data.to_i64().unwrap_or_default())
            }
            _ => Err(format!(
                "input `{}` must be a constant integer tensor (qatc imports static graphs)",
                info.name
            )),
        }
    }

    /// A kernel: float weights as a param, int8 weights dequantized behind TFMOT's weight
    /// quantizer (per axis as stored).
    fn kernel(&mut self, op: &OpInfo, layer: &str) -> R<NodeId> {
        let t = self.input_index(op, 1)?;
        let info = self.tensor(t);
        let c = info
            .constant
            .as_ref()
            .ok_or_else(|| format!("the weights `{}` must be constant", info.name))?;
        let name = self.unique(&format!("{layer}.kernel"));
        match (&c.data, &info.quant) {
            (Data::F32(v), _) => self
                .param(&name, Tensor::new(c.shape.clone(), v.clone()))
                .map_err(|e| e.to_string()),
            (Data::I8(v), Some(q)) => {
                if q.zero_point.iter().any(|&z| z != 0) {
                    return Err(format!(
                        "the int8 weights `{}` are not symmetric",
                        info.name
                    ));
                }
                // the reader checked that a per-axis dimension exists and matches the scales
                let (inner, n) = if q.is_per_axis() {
                    (
                        c.shape[q.axis + 1..].iter().product::<usize>(),
                        q.scale.len(),
                    )
                } else {
                    (1, 1)
                };
                let data = v
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| w as f32 * q.scale[(i / inner) % n])
                    .collect();
                let k = self
                    .param(&name, Tensor::new(c.shape.clone(), data))
                    .map_err(|e| e.to_string())?;
                // qatc writes a per-tensor TRANSPOSE_CONV filter as per-axis with one repeated
                // scale (XNNPACK wants per-channel filters): read it back as per tensor
                let repeated =
                    op.code == B::TRANSPOSE_CONV && q.scale.iter().all(|&s| s == q.scale[0]);
                let fq = FakeQuantAttrs::weight((q.is_per_axis() && !repeated).then_some(q.axis));
                let n = self.unique(&format!("{name}/quant"));
                self.g
                    .add(Op::Model(ModelOp::FakeQuant(fq)), n, &[k])
                    .map_err(|e| e.to_string())
            }
            _ => Err(format!(
                "the weights `{}` are {}; expected FLOAT32 or INT8",
                info.name,
                info.dtype.name()
            )),
        }
    }

    /// An optional bias (operand `i`): float as is, int32 dequantized with its scales.
    fn bias(&mut self, op: &OpInfo, i: usize, layer: &str) -> R<Option<NodeId>> {
        let Some(t) = op.inputs.get(i).copied().flatten() else {
            return Ok(None);
        };
        let info = self.tensor(t);
        let c = info
            .constant
            .as_ref()
            .ok_or_else(|| format!("the bias `{}` must be constant", info.name))?;
        let data: Vec<f32> = match (&c.data, &info.quant) {
            (Data::F32(v), _) => v.clone(),
            (Data::I32(v), Some(q)) => v
                .iter()
                .enumerate()
                .map(|(k, &b)| {
                    let scale = q.scale.get(k).or(q.scale.first()).copied().unwrap_or(1.0);
                    (b as f64 * scale as f64) as f32
                })
                .collect(),
            _ => {
                return Err(format!(
                    "the bias `{}` is {} without quantization",
                    info.name,
                    info.dtype.name()
                ))
            }
        };
        let name = self.unique(&format!("{layer}.bias"));
        let n = data.len();
        self.param(&name, Tensor::new(vec![n], data))
            .map(Some)
            .map_err(|e| e.to_string())
    }

    // ---- results ------------------------------------------------------------------------

    /// Maps the operator's output to `node`: an int8 output gets a fixed-range fake-quant
    /// with its quantization, unless the op keeps `keep` (its input's, or its fixed
    /// output params) and the output has exactly those.
    fn finish(&mut self, op: &OpInfo, node: NodeId, keep: Option<(f32, i32)>) -> R<()> {
        let t = op.outputs[0];
        let info = self.tensor(t);
        let v = match info.dtype {
            ElemType::F32 => node,
            ElemType::I8 => {
                let q = int8_params(info).ok_or_else(|| {
                    format!(
                        "the int8 output `{}` has no per-tensor quantization",
                        info.name
                    )
                })?;
                if keep == Some(q) {
                    node
                } else {
                    let n = self.unique(&format!("{}/quant", self.g.node(node).name));
                    self.g
                        .add(
                            Op::Model(ModelOp::FakeQuant(fixed_quantizer(q.0, q.1))),
                            n,
                            &[node],
                        )
                        .map_err(|e| e.to_string())?
                }
            }
            other => return Err(format!("output `{}` is {}", info.name, other.name())),
        };
        self.vals.insert(t, v);
        Ok(())
    }

    /// The quantization of operand `i`'s tensor, if int8.
    fn in_params(&self, op: &OpInfo, i: usize) -> Option<(f32, i32)> {
        op.inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|t| int8_params(self.tensor(t)))
    }

    fn out_is_int8(&self, op: &OpInfo) -> bool {
        self.tensor(op.outputs[0]).dtype == ElemType::I8
    }

    fn layer_name(&self, op: &OpInfo, fallback: &str) -> String {
        self.unique(&base_name(self.tensor(op.outputs[0]), fallback))
    }

    fn add(&mut self, op: Op, name: &str, operands: &[NodeId]) -> R<NodeId> {
        self.g.add(op, name, operands).map_err(|e| e.to_string())
    }

    /// A fused activation: kept on the op for int8 models (form 3), else a separate node.
    fn split_activation(
        &mut self,
        node: NodeId,
        act: FusedActivation,
        fused_into_op: bool,
    ) -> R<NodeId> {
        let a = ops::ir_activation(act)
            .ok_or_else(|| format!("the fused activation {} is not supported", act.name()))?;
        if fused_into_op || a == Activation::None {
            return Ok(node);
        }
        let op = if a == Activation::Relu {
            Op::Model(ModelOp::Relu)
        } else {
            Op::Model(ModelOp::Relu6)
        };
        let name = self.unique(&format!("{}.{}", self.g.node(node).name, op.name()));
        self.add(op, &name, &[node])
    }

    // ---- operators ----------------------------------------------------------------------

    fn operator(&mut self, index: usize, op: &OpInfo) -> R<()> {
        if op.outputs.len() != 1 {
            return Err(format!(
                "has {} outputs; qatc imports single-output operators",
                op.outputs.len()
            ));
        }
        let int8 = self.out_is_int8(op);
        let fallback = format!("op_{index}");
        match op.code {
            B::QUANTIZE => {
                let x = self.value(op, 0)?;
                let q = int8_params(self.tensor(op.outputs[0]))
                    .ok_or("QUANTIZE must produce a per-tensor INT8 tensor")?;
                if self.in_params(op, 0) == Some(q) {
                    self.vals.insert(op.outputs[0], x);
                    return Ok(());
                }
                let name = self.layer_name(op, &fallback);
                let y = self.add(
                    Op::Model(ModelOp::FakeQuant(fixed_quantizer(q.0, q.1))),
                    &name,
                    &[x],
                )?;
                self.vals.insert(op.outputs[0], y);
            }
            B::DEQUANTIZE => {
                let x = self.value(op, 0)?;
                self.vals.insert(op.outputs[0], x);
            }
            B::CONV_2D | B::DEPTHWISE_CONV_2D => {
                let (padding_mode, stride, dilation, act) = match op.options {
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
                        padding,
                        [
                            positive(stride_h, "stride_h")?,
                            positive(stride_w, "stride_w")?,
                        ],
                        [
                            positive(dilation_h, "dilation_h")?,
                            positive(dilation_w, "dilation_w")?,
                        ],
                        activation,
                    ),
                    _ => return Err("has no convolution options".into()),
                };
                let name = self.layer_name(op, &fallback);
                let x = self.value(op, 0)?;
                if op.code == B::CONV_2D {
                    let w = self.tensor(self.input_index(op, 1)?);
                    let xi = self.tensor(self.input_index(op, 0)?);
                    if w.shape.len() == 4 && xi.shape.len() == 4 && w.shape[3] != xi.shape[3] {
                        return Err("grouped convolutions are not supported by qatc's IR".into());
                    }
                }
                let k = self.kernel(op, &name)?;
                let b = self.bias(op, 2, &name)?;
                let activation = if int8 {
                    ops::ir_activation(act).ok_or_else(|| {
                        format!("the fused activation {} is not supported", act.name())
                    })?
                } else {
                    Activation::None
                };
                let conv = ConvAttrs {
                    stride,
                    padding: padding(padding_mode)?,
                    dilation,
                    activation,
                };
                let ir = if op.code == B::CONV_2D {
                    Op::Model(ModelOp::Conv2d(conv))
                } else {
                    Op::Model(ModelOp::DepthwiseConv2d(conv))
                };
                let mut operands = vec![x, k];
                operands.extend(b);
                let y = self.add(ir, &name, &operands)?;
                let y = self.split_activation(y, act, int8)?;
                self.finish(op, y, None)?;
            }
            B::TRANSPOSE_CONV => {
                let Options::TransposeConv {
                    padding: pm,
                    stride_h,
                    stride_w,
                    activation: act,
                } = op.options
                else {
                    return Err("has no TransposeConvOptions".into());
                };
                let out_shape = self.ints(op, 0)?;
                let name = self.layer_name(op, &fallback);
                let x = self.value(op, 2)?;
                // the kernel is operand 1, as for convolutions
                let k = self.kernel(op, &name)?;
                let b = self.bias(op, 3, &name)?;
                let conv = ConvAttrs {
                    stride: [
                        positive(stride_h, "stride_h")?,
                        positive(stride_w, "stride_w")?,
                    ],
                    padding: padding(pm)?,
                    dilation: [1, 1],
                    activation: if int8 {
                        ops::ir_activation(act).ok_or("unsupported fused activation")?
                    } else {
                        Activation::None
                    },
                };
                let mut operands = vec![x, k];
                operands.extend(b);
                let y = self.add(Op::Model(ModelOp::Conv2dTranspose(conv)), &name, &operands)?;
                let got = &self.g.node(y).ty.shape;
                let want: Vec<usize> = out_shape.iter().map(|&d| d.max(0) as usize).collect();
                if got[1..] != want[1..] {
                    return Err(format!(
                        "the output shape {want:?} differs from the {got:?} qatc's conv2d_transpose computes with this padding"
                    ));
                }
                let y = self.split_activation(y, act, int8)?;
                self.finish(op, y, None)?;
            }
            B::FULLY_CONNECTED => {
                let Options::FullyConnected {
                    activation: act,
                    shuffled_weights,
                    keep_num_dims,
                } = op.options
                else {
                    return Err("has no FullyConnectedOptions".into());
                };
                if shuffled_weights {
                    return Err("shuffled weights are not supported".into());
                }
                let name = self.layer_name(op, &fallback);
                let mut x = self.value(op, 0)?;
                let rank = self.g.node(x).ty.rank();
                if keep_num_dims && rank != 2 {
                    return Err(
                        "keep_num_dims on an input of rank other than 2 is not supported".into(),
                    );
                }
                if rank != 2 {
                    let fname = self.unique(&format!("{name}/flatten"));
                    x = self.add(Op::Model(ModelOp::Flatten), &fname, &[x])?;
                }
                let k = self.kernel(op, &name)?;
                let b = self.bias(op, 2, &name)?;
                let activation = if int8 {
                    ops::ir_activation(act).ok_or("unsupported fused activation")?
                } else {
                    Activation::None
                };
                let mut operands = vec![x, k];
                operands.extend(b);
                let y = self.add(Op::Model(ModelOp::Dense { activation }), &name, &operands)?;
                let y = self.split_activation(y, act, int8)?;
                self.finish(op, y, None)?;
            }
            B::ADD | B::SUB | B::MUL => {
                let act = match op.options {
                    Options::Add { activation }
                    | Options::Sub { activation }
                    | Options::Mul { activation } => activation,
                    Options::None => FusedActivation::None,
                    _ => return Err("has options of another op".into()),
                };
                let a = self.value(op, 0)?;
                let b = self.value(op, 1)?;
                let activation = if int8 {
                    ops::ir_activation(act).ok_or("unsupported fused activation")?
                } else {
                    Activation::None
                };
                let ir = match op.code {
                    B::ADD => Op::Model(ModelOp::Add { activation }),
                    B::SUB => Op::Model(ModelOp::Sub { activation }),
                    _ => Op::Model(ModelOp::Mul { activation }),
                };
                let name = self.layer_name(op, &fallback);
                let y = self.add(ir, &name, &[a, b])?;
                let y = self.split_activation(y, act, int8)?;
                self.finish(op, y, None)?;
            }
            B::AVERAGE_POOL_2D | B::MAX_POOL_2D => {
                let Options::Pool2d {
                    padding: pm,
                    stride_h,
                    stride_w,
                    filter_h,
                    filter_w,
                    activation: act,
                } = op.options
                else {
                    return Err("has no Pool2DOptions".into());
                };
                let x = self.value(op, 0)?;
                let pool = PoolAttrs {
                    size: [
                        positive(filter_h, "filter_height")?,
                        positive(filter_w, "filter_width")?,
                    ],
                    stride: [
                        positive(stride_h, "stride_h")?,
                        positive(stride_w, "stride_w")?,
                    ],
                    padding: padding(pm)?,
                };
                let ir = if op.code == B::MAX_POOL_2D {
                    Op::Model(ModelOp::MaxPool2d(pool))
                } else {
                    Op::Model(ModelOp::AvgPool2d(pool))
                };
                let name = self.layer_name(op, &fallback);
                let y = self.add(ir, &name, &[x])?;
                let y = self.split_activation(y, act, false)?;
                let keep = self.in_params(op, 0);
                self.finish(op, y, keep)?;
            }
            B::MEAN | B::REDUCE_MAX => {
                let keepdims = match op.options {
                    Options::Reducer { keep_dims } => keep_dims,
                    Options::None => false,
                    _ => return Err("has options of another op".into()),
                };
                let x = self.value(op, 0)?;
                let rank = self.g.node(x).ty.rank() as i64;
                let mut axes: Vec<usize> = Vec::new();
                for a in self.ints(op, 1)? {
                    let a = if a < 0 { a + rank } else { a };
                    if !(0..rank).contains(&a) {
                        return Err(format!("axis {a} is out of range"));
                    }
                    if !axes.contains(&(a as usize)) {
                        axes.push(a as usize);
                    }
                }
                let mut sorted = axes.clone();
                sorted.sort_unstable();
                let spatial = rank == 4 && sorted == [1, 2];
                let ir = match (op.code, spatial) {
                    (B::MEAN, true) => Op::Model(ModelOp::GlobalAvgPool { keepdims }),
                    (B::MEAN, false) => Op::Model(ModelOp::Mean(ReduceAttrs { axes, keepdims })),
                    (_, true) => Op::Model(ModelOp::GlobalMaxPool { keepdims }),
                    (_, false) => {
                        return Err(
                            "REDUCE_MAX is imported only over the spatial axes [1, 2] of an image"
                                .into(),
                        )
                    }
                };
                let name = self.layer_name(op, &fallback);
                let y = self.add(ir, &name, &[x])?;
                let keep = if op.code == B::REDUCE_MAX {
                    self.in_params(op, 0)
                } else {
                    None
                };
                self.finish(op, y, keep)?;
            }
            B::SOFTMAX
            | B::LOGISTIC
            | B::TANH
            | B::RELU
            | B::RELU6
            | B::LEAKY_RELU
            | B::HARD_SWISH => {
                let x = self.value(op, 0)?;
                let (ir, fixed) = match op.code {
                    B::SOFTMAX => {
                        let beta = match op.options {
                            Options::Softmax { beta } => beta,
                            _ => 0.0,
                        };
                        if beta != 1.0 {
                            return Err(format!("softmax with beta {beta} is not supported (qatc's softmax has beta 1)"));
                        }
                        (Op::Model(ModelOp::Softmax), Some((1.0 / 256.0, -128)))
                    }
                    B::LOGISTIC => (Op::Model(ModelOp::Sigmoid), Some((1.0 / 256.0, -128))),
                    B::TANH => (Op::Model(ModelOp::Tanh), Some((1.0 / 128.0, 0))),
                    B::RELU => (Op::Model(ModelOp::Relu), None),
                    B::RELU6 => (Op::Model(ModelOp::Relu6), None),
                    B::LEAKY_RELU => match op.options {
                        Options::LeakyRelu { alpha } => {
                            (Op::Model(ModelOp::LeakyRelu { alpha: F32(alpha) }), None)
                        }
                        _ => return Err("has no LeakyReluOptions".into()),
                    },
                    _ => (Op::Model(ModelOp::HardSwish), None),
                };
                let name = self.layer_name(op, &fallback);
                let y = self.add(ir, &name, &[x])?;
                self.finish(op, y, fixed)?;
            }
            B::RESHAPE | B::SQUEEZE => {
                let x = self.value(op, 0)?;
                let in_shape = self.g.node(x).ty.shape.clone();
                if op.code == B::RESHAPE && op.inputs.len() >= 2 {
                    // the shape operand must be known (constant or folded glue), though the
                    // declared output shape is what the graph uses
                    self.ints(op, 1)?;
                }
                let out = &self.tensor(op.outputs[0]).shape;
                if out.first() != in_shape.first() || out.is_empty() {
                    return Err(format!(
                        "reshaping {in_shape:?} to {out:?} moves the batch dimension"
                    ));
                }
                let name = self.layer_name(op, &fallback);
                let ir = if out.len() == 2 {
                    Op::Model(ModelOp::Flatten)
                } else {
                    Op::Model(ModelOp::Reshape {
                        shape: out[1..].iter().map(|&d| d as i64).collect(),
                    })
                };
                let y = self.add(ir, &name, &[x])?;
                if self.g.node(y).ty.shape != *out {
                    return Err(format!("cannot reshape {in_shape:?} to {out:?}"));
                }
                let keep = self.in_params(op, 0);
                self.finish(op, y, keep)?;
            }
            B::CONCATENATION if self.integer_output(op) => self.fold_glue(op)?,
            B::CONCATENATION => {
                let Options::Concatenation {
                    axis,
                    activation: act,
                } = op.options
                else {
                    return Err("has no ConcatenationOptions".into());
                };
                let n = op.inputs.len();
                let xs: Vec<NodeId> = (0..n).map(|i| self.value(op, i)).collect::<R<_>>()?;
                let rank = self.g.node(xs[0]).ty.rank() as i64;
                let axis = if axis < 0 {
                    axis as i64 + rank
                } else {
                    axis as i64
                };
                if !(0..rank).contains(&axis) {
                    return Err(format!("axis {axis} is out of range"));
                }
                let name = self.layer_name(op, &fallback);
                let y = self.add(
                    Op::Model(ModelOp::Concat {
                        axis: axis as usize,
                    }),
                    &name,
                    &xs,
                )?;
                let y = self.split_activation(y, act, false)?;
                self.finish(op, y, None)?;
            }
            B::PAD | B::PADV2 => {
                let x = self.value(op, 0)?;
                let raw = self.ints(op, 1)?;
                if op.code == B::PADV2 {
                    if let Some(t) = op.inputs.get(2).copied().flatten() {
                        let c = self.tensor(t);
                        let zero = match (&c.constant, int8_params(c)) {
                            (Some(a), Some((_, z))) => {
                                matches!(&a.data, Data::I8(v) if v.iter().all(|&q| q as i32 == z))
                            }
                            (Some(a), None) => {
                                matches!(&a.data, Data::F32(v) if v.iter().all(|&f| f == 0.0))
                            }
                            _ => false,
                        };
                        if !zero {
                            return Err("PADV2 with a non-zero constant is not supported (qatc pads with zeros)".into());
                        }
                    }
                }
                let pads: Vec<[usize; 2]> = raw
                    .chunks(2)
                    .map(|p| match p {
                        [a, b] if *a >= 0 && *b >= 0 => Ok([*a as usize, *b as usize]),
                        _ => Err(format!("invalid paddings {raw:?}")),
                    })
                    .collect::<R<_>>()?;
                let name = self.layer_name(op, &fallback);
                let y = self.add(Op::Model(ModelOp::Pad { pads }), &name, &[x])?;
                let keep = self.in_params(op, 0);
                self.finish(op, y, keep)?;
            }
            B::TRANSPOSE => {
                let x = self.value(op, 0)?;
                let rank = self.g.node(x).ty.rank() as i64;
                let perm: Vec<usize> = self
                    .ints(op, 1)?
                    .into_iter()
                    .map(|p| if p < 0 { p + rank } else { p })
                    .map(|p| {
                        usize::try_from(p).map_err(|_| "negative permutation entry".to_string())
                    })
                    .collect::<R<_>>()?;
                let name = self.layer_name(op, &fallback);
                let y = self.add(Op::Model(ModelOp::Transpose { perm }), &name, &[x])?;
                let keep = self.in_params(op, 0);
                self.finish(op, y, keep)?;
            }
            B::RESIZE_NEAREST_NEIGHBOR => {
                let x = self.value(op, 0)?;
                let (align_corners, half_pixel_centers) = match op.options {
                    Options::ResizeNearestNeighbor {
                        align_corners,
                        half_pixel_centers,
                    } => (align_corners, half_pixel_centers),
                    _ => (false, false),
                };
                let size = self.ints(op, 1)?;
                let in_shape = self.g.node(x).ty.shape.clone();
                if in_shape.len() != 4 || size.len() != 2 || align_corners {
                    return Err(
                        "only integer nearest-neighbor upsampling of images is supported".into(),
                    );
                }
                let mut scale = [0usize; 2];
                for a in 0..2 {
                    let (n_in, n_out) = (in_shape[1 + a], size[a].max(0) as usize);
                    if n_in == 0 || n_out % n_in != 0 {
                        return Err(format!(
                            "resizing {n_in} to {n_out} is not an integer upsampling"
                        ));
                    }
                    scale[a] = n_out / n_in;
                    let ratio = n_in as f32 / n_out as f32;
                    let offset = if half_pixel_centers { 0.5 } else { 0.0 };
                    let exact = (0..n_out).all(|o| {
                        (((o as f32 + offset) * ratio).floor() as usize).min(n_in - 1)
                            == o / scale[a]
                    });
                    if !exact {
                        return Err(
                            "this resize is not an exact nearest-neighbor upsampling".into()
                        );
                    }
                }
                let name = self.layer_name(op, &fallback);
                let y = self.add(Op::Model(ModelOp::UpsampleNearest { scale }), &name, &[x])?;
                let keep = self.in_params(op, 0);
                self.finish(op, y, keep)?;
            }
            B::STRIDED_SLICE | B::SLICE if self.integer_output(op) => self.fold_glue(op)?,
            B::STRIDED_SLICE | B::SLICE => self.crop(op, &fallback)?,
            B::SHAPE | B::PACK => self.fold_glue(op)?,
            _ => {
                return Err(format!(
                    "{} is not supported by the TFLite importer",
                    op.name()
                ))
            }
        }
        Ok(())
    }

    /// Integer outputs are shape computations (the converter's glue), not activations.
    fn integer_output(&self, op: &OpInfo) -> bool {
        matches!(
            self.tensor(op.outputs[0]).dtype,
            ElemType::I32 | ElemType::I64
        )
    }

    /// STRIDED_SLICE / SLICE on an activation: a crop (unit strides, the batch kept whole).
    fn crop(&mut self, op: &OpInfo, fallback: &str) -> R<()> {
        let x = self.value(op, 0)?;
        let in_shape = self.g.node(x).ty.shape.clone();
        let out = self.tensor(op.outputs[0]).shape.clone();
        let rank = in_shape.len();
        let begin = self.ints(op, 1)?;
        if begin.len() != rank || out.len() != rank {
            return Err("only rank-preserving slices are imported (as crops)".into());
        }
        if op.code == B::STRIDED_SLICE {
            let strides = self.ints(op, 3)?;
            let Options::StridedSlice {
                ellipsis_mask,
                new_axis_mask,
                shrink_axis_mask,
                offset,
                ..
            } = op.options
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
                    "only unit-stride slices without masks other than begin/end are imported"
                        .into(),
                );
            }
        }
        // the crop from the declared output: begin (masked → 0) and the remainder after
        let mut crops = Vec::with_capacity(rank);
        for d in 0..rank {
            let masked = matches!(op.options, Options::StridedSlice { begin_mask, .. } if begin_mask & (1 << d) != 0);
            let b = if masked { 0 } else { begin[d] };
            let b = if b < 0 { b + in_shape[d] as i64 } else { b };
            if b < 0 || b as usize + out[d] > in_shape[d] {
                return Err(format!(
                    "slice begin {b} size {} exceeds dimension {d}",
                    out[d]
                ));
            }
            crops.push([b as usize, in_shape[d] - b as usize - out[d]]);
        }
        if crops[0] != [0, 0] {
            return Err("slicing the batch dimension is not supported".into());
        }
        let name = self.unique(&base_name(self.tensor(op.outputs[0]), fallback));
        let y = self.add(Op::Model(ModelOp::Crop { crops }), &name, &[x])?;
        let keep = self.in_params(op, 0);
        self.finish(op, y, keep)
    }

    /// Folds static shape glue: SHAPE of a static tensor, PACK, STRIDED_SLICE/SLICE and
    /// CONCATENATION of integer vectors.
    fn fold_glue(&mut self, op: &OpInfo) -> R<()> {
        let out_t = op.outputs[0];
        let v: Vec<i64> = match op.code {
            B::SHAPE => {
                let t = self.input_index(op, 0)?;
                let shape = match self.vals.get(&t) {
                    Some(&n) => self.g.node(n).ty.shape.clone(),
                    None => self.tensor(t).shape.clone(),
                };
                shape.iter().map(|&d| d as i64).collect()
            }
            B::PACK => {
                let Options::Pack { axis, .. } = op.options else {
                    return Err("has no PackOptions".into());
                };
                if axis != 0 {
                    return Err("only PACK along axis 0 is folded".into());
                }
                let mut v = Vec::new();
                for i in 0..op.inputs.len() {
                    v.extend(self.ints(op, i)?);
                }
                v
            }
            B::STRIDED_SLICE | B::SLICE => {
                let src = self.ints(op, 0)?;
                let n = src.len() as i64;
                let begin = self.ints(op, 1)?;
                if begin.len() != 1 {
                    return Err("only 1-D integer slices are folded".into());
                }
                let (start, stop, shrink) = if op.code == B::SLICE {
                    let size = self.ints(op, 2)?;
                    let s = size.first().copied().unwrap_or(-1);
                    (begin[0], if s < 0 { n } else { begin[0] + s }, false)
                } else {
                    let end = self.ints(op, 2)?;
                    let strides = self.ints(op, 3)?;
                    let Options::StridedSlice {
                        begin_mask,
                        end_mask,
                        shrink_axis_mask,
                        ..
                    } = op.options
                    else {
                        return Err("has no StridedSliceOptions".into());
                    };
                    let stride = strides.first().copied().unwrap_or(1);
                    if stride != 1 {
                        return Err("only unit-stride integer slices are folded".into());
                    }
                    let b = if begin_mask & 1 != 0 { 0 } else { begin[0] };
                    let e = if end_mask & 1 != 0 {
                        n
                    } else {
                        end.first().copied().unwrap_or(n)
                    };
                    (b, e, shrink_axis_mask & 1 != 0)
                };
                let norm = |v: i64| if v < 0 { v + n } else { v }.clamp(0, n);
                let start = norm(start);
                let stop = if shrink { start + 1 } else { norm(stop) };
                src.get(start as usize..stop.max(start) as usize)
                    .ok_or("slice out of range")?
                    .to_vec()
            }
            B::CONCATENATION => {
                let mut v = Vec::new();
                for i in 0..op.inputs.len() {
                    v.extend(self.ints(op, i)?);
                }
                v
            }
            _ => return Err(format!("{} is not shape glue", op.name())),
        };
        self.ints.insert(out_t, v);
        Ok(())
    }
}
