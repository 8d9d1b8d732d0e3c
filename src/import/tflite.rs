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

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::{Activation, FakeQuantAttrs, ModelOp, Op, RangeSource, F32};
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::types::TensorType;
use crate::tflite::mapping::{self, Mapping, MappingError, Operands, Output};
use crate::tflite::model::{Data, ElemType, Model, Operator, Options, Tensor as TfTensor};
use crate::tflite::schema::BuiltinOperator as B;
use std::collections::HashMap;

/// Imports a `.tflite` model.
pub fn import(bytes: &[u8]) -> Result<(Graph, ParamStore)> {
    let m = crate::tflite::read(bytes)?;
    Importer::new(&m).run()
}

struct Importer<'m> {
    m: &'m Model,
    g: Graph,
    p: ParamStore,
    /// The IR value of each tensor computed so far.
    vals: HashMap<usize, NodeId>,
    /// Integer tensors computed by shape glue (SHAPE, STRIDED_SLICE, PACK, …).
    ints: HashMap<usize, Vec<i64>>,
    /// BOOL tensors written by `GREATER(x, constant)`: `x`'s tensor and the real threshold.
    conditions: HashMap<usize, (usize, f32)>,
}

fn op_error(index: usize, op: &Operator, e: MappingError) -> Error {
    Error::Operator {
        index,
        op: op.name(),
        output: String::new(),
        source: Box::new(e),
    }
}

/// A readable node name from a tensor name: the converter joins the names of fused ops
/// with `;` — the first one names the layer.
fn base_name(t: &TfTensor, fallback: &str) -> String {
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
            let n = crate::ir::fake_quant::nudged_for(&q, lo, hi);
            if n.scale == scale && n.zero_point - 128 == zero_point {
                return q;
            }
        }
    }
    with(min, max)
}

/// `(scale, zero_point)` of a per-tensor int8 tensor with a zero point in the int8 range.
fn int8_params(t: &TfTensor) -> Option<(f32, i32)> {
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

type R<T> = std::result::Result<T, MappingError>;

impl<'m> Importer<'m> {
    fn new(m: &'m Model) -> Importer<'m> {
        let name = match m.subgraph_name.as_str() {
            "" | "main" => "imported".to_string(),
            n => n.to_string(),
        };
        Importer {
            m,
            g: Graph::new(name),
            p: ParamStore::new(),
            vals: HashMap::new(),
            ints: HashMap::new(),
            conditions: HashMap::new(),
        }
    }

    fn tensor(&self, t: usize) -> &'m TfTensor {
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

    fn input_shape(&self, info: &TfTensor) -> Result<Vec<usize>> {
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

    fn input_index(&self, op: &Operator, i: usize) -> R<usize> {
        op.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| MappingError(format!("input {i} is missing")))
    }

    /// The IR value of operand `i`: a computed value, or a constant as a param (behind a
    /// fixed-range fake-quant when it is int8).
    fn value(&mut self, op: &Operator, i: usize) -> R<NodeId> {
        let t = self.input_index(op, i)?;
        if let Some(&v) = self.vals.get(&t) {
            return Ok(v);
        }
        let info = self.tensor(t);
        let Some(c) = info.values() else {
            return Err(format!(
                "input tensor `{}` is not computed by an earlier operator",
                info.name
            )
            .into());
        };
        let name = self.unique(&base_name(info, "constant"));
        let (data, fq) = match (&c, int8_params(info)) {
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
                )
                .into())
            }
        };
        let mut v = self
            .param(&name, Tensor::new(info.shape.clone(), data))
            .map_err(|e| MappingError(e.to_string()))?;
        if let Some(q) = fq {
            let n = self.unique(&format!("{name}/quant"));
            v = self
                .g
                .add(Op::Model(ModelOp::FakeQuant(q)), n, &[v])
                .map_err(|e| MappingError(e.to_string()))?;
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
    fn ints(&self, op: &Operator, i: usize) -> R<Vec<i64>> {
        let t = self.input_index(op, i)?;
        if let Some(v) = self.ints.get(&t) {
            return Ok(v.clone());
        }
        let info = self.tensor(t);
        match info.values() {
            Some(c @ (Data::I32(_) | Data::I64(_))) => Ok(c.to_i64().unwrap_or_default()),
            _ => Err(format!(
                "input `{}` must be a constant integer tensor (qatc imports static graphs)",
                info.name
            )
            .into()),
        }
    }

    /// Operand 1, a constant weight (a kernel, PRELU's slope), as the param
    /// `<layer>.<what>`: float weights as they are, int8 weights dequantized behind TFMOT's
    /// weight quantizer (per axis as stored).
    fn weight(&mut self, op: &Operator, layer: &str, what: &str) -> R<NodeId> {
        let t = self.input_index(op, 1)?;
        let info = self.tensor(t);
        let c = info
            .values()
            .ok_or_else(|| MappingError(format!("the weights `{}` must be constant", info.name)))?;
        let shape = info.shape.clone();
        let name = self.unique(&format!("{layer}.{what}"));
        match (&c, &info.quant) {
            (Data::F32(v), _) => self
                .param(&name, Tensor::new(shape, v.clone()))
                .map_err(|e| MappingError(e.to_string())),
            (Data::I8(v), Some(q)) => {
                if q.zero_point.iter().any(|&z| z != 0) {
                    return Err(
                        format!("the int8 weights `{}` are not symmetric", info.name).into(),
                    );
                }
                // the reader checked that a per-axis dimension exists and matches the scales
                let (inner, n) = if q.is_per_axis() {
                    (shape[q.axis + 1..].iter().product::<usize>(), q.scale.len())
                } else {
                    (1, 1)
                };
                let data = v
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| w as f32 * q.scale[(i / inner) % n])
                    .collect();
                let k = self
                    .param(&name, Tensor::new(shape, data))
                    .map_err(|e| MappingError(e.to_string()))?;
                // qatc writes a per-tensor TRANSPOSE_CONV filter as per-axis with one repeated
                // scale (XNNPACK wants per-channel filters): read it back as per tensor
                let repeated =
                    op.code == B::TRANSPOSE_CONV && q.scale.iter().all(|&s| s == q.scale[0]);
                let fq = FakeQuantAttrs::weight((q.is_per_axis() && !repeated).then_some(q.axis));
                let n = self.unique(&format!("{name}/quant"));
                self.g
                    .add(Op::Model(ModelOp::FakeQuant(fq)), n, &[k])
                    .map_err(|e| MappingError(e.to_string()))
            }
            _ => Err(format!(
                "the weights `{}` are {}; expected FLOAT32 or INT8",
                info.name,
                info.dtype.name()
            )
            .into()),
        }
    }

    /// An optional bias (operand `i`): float as is, int32 dequantized with its scales.
    fn bias(&mut self, op: &Operator, i: usize, layer: &str) -> R<Option<NodeId>> {
        let Some(t) = op.inputs.get(i).copied().flatten() else {
            return Ok(None);
        };
        let info = self.tensor(t);
        let c = info
            .values()
            .ok_or_else(|| MappingError(format!("the bias `{}` must be constant", info.name)))?;
        let data: Vec<f32> = match (&c, &info.quant) {
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
                )
                .into())
            }
        };
        let name = self.unique(&format!("{layer}.bias"));
        let n = data.len();
        self.param(&name, Tensor::new(vec![n], data))
            .map(Some)
            .map_err(|e| MappingError(e.to_string()))
    }

    // ---- results ------------------------------------------------------------------------

    /// Maps the operator's output to `node`: an int8 output gets a fixed-range fake-quant
    /// with its quantization, unless the op keeps `keep` (its input's, or its fixed
    /// output params) and the output has exactly those.
    fn finish(&mut self, op: &Operator, node: NodeId, keep: Option<(f32, i32)>) -> R<()> {
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
                        .map_err(|e| MappingError(e.to_string()))?
                }
            }
            other => return Err(format!("output `{}` is {}", info.name, other.name()).into()),
        };
        self.vals.insert(t, v);
        Ok(())
    }

    /// The quantization of operand `i`'s tensor, if int8.
    fn in_params(&self, op: &Operator, i: usize) -> Option<(f32, i32)> {
        op.inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|t| int8_params(self.tensor(t)))
    }

    fn out_is_int8(&self, op: &Operator) -> bool {
        self.tensor(op.outputs[0]).dtype == ElemType::I8
    }

    fn layer_name(&self, op: &Operator, fallback: &str) -> String {
        self.unique(&base_name(self.tensor(op.outputs[0]), fallback))
    }

    fn add(&mut self, op: Op, name: &str, operands: &[NodeId]) -> R<NodeId> {
        self.g
            .add(op, name, operands)
            .map_err(|e| MappingError(e.to_string()))
    }

    /// A separate `relu`/`relu6` node for activation `a` after `node` (none for
    /// [`Activation::None`]).
    fn split_activation(&mut self, node: NodeId, a: Activation) -> R<NodeId> {
        let op = match a {
            Activation::None => return Ok(node),
            Activation::Relu => ModelOp::Relu,
            Activation::Relu6 => ModelOp::Relu6,
        };
        let name = self.unique(&format!("{}.{}", self.g.node(node).name, op.kind()));
        self.add(op.into(), &name, &[node])
    }

    // ---- operators ----------------------------------------------------------------------

    fn operator(&mut self, index: usize, op: &Operator) -> R<()> {
        if op.outputs.len() != 1 {
            return Err(format!(
                "has {} outputs; qatc imports single-output operators",
                op.outputs.len()
            )
            .into());
        }
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
                let fq = ModelOp::FakeQuant(fixed_quantizer(q.0, q.1));
                let y = self.add(fq.into(), &name, &[x])?;
                self.vals.insert(op.outputs[0], y);
                Ok(())
            }
            B::DEQUANTIZE => {
                let x = self.value(op, 0)?;
                self.vals.insert(op.outputs[0], x);
                Ok(())
            }
            // the converter's static shape computations
            B::SHAPE | B::PACK => self.fold_glue(op),
            B::CONCATENATION | B::STRIDED_SLICE | B::SLICE if self.integer_output(op) => {
                self.fold_glue(op)
            }
            B::PADV2 => {
                self.check_zero_padding(op)?;
                self.model_op(op, &fallback)
            }
            B::GREATER => self.greater(op),
            _ => self.model_op(op, &fallback),
        }
    }

    /// GREATER of a value against a one-element constant: the condition of a thresholded
    /// ReLU's SELECT_V2, recorded rather than made a node.
    fn greater(&mut self, op: &Operator) -> R<()> {
        let x = self.input_index(op, 0)?;
        let c = self.tensor(self.input_index(op, 1)?);
        let theta = match (c.values(), int8_params(c)) {
            (Some(Data::F32(v)), _) if v.len() == 1 => v[0],
            // halfway to the next grid value: the same decisions on the grid, and robust
            // to rounding when the threshold is put back on it
            (Some(Data::I8(v)), Some((s, z))) if v.len() == 1 => {
                ((v[0] as i32 - z) as f32 + 0.5) * s
            }
            _ => {
                return Err(
                    "GREATER is read only against a one-element constant (the condition \
                            of a thresholded ReLU)"
                        .into(),
                )
            }
        };
        self.conditions.insert(op.outputs[0], (x, theta));
        Ok(())
    }

    /// SELECT_V2's threshold, if it is a thresholded ReLU: `(x > theta, x, zero)`.
    fn select_threshold(&self, op: &Operator) -> R<f32> {
        let cond = self.input_index(op, 0)?;
        let x = self.input_index(op, 1)?;
        let zero = self.tensor(self.input_index(op, 2)?);
        let is_zero = match (zero.values(), int8_params(zero)) {
            (Some(Data::F32(v)), _) => v.iter().all(|&z| z == 0.0),
            (Some(Data::I8(v)), Some((_, z))) => v.iter().all(|&q| q as i32 == z),
            _ => false,
        };
        match self.conditions.get(&cond) {
            Some(&(gx, theta)) if gx == x && is_zero => Ok(theta),
            _ => Err(
                "SELECT_V2 is read only as a thresholded ReLU: `(GREATER(x, theta), x, \
                      zero)`"
                    .into(),
            ),
        }
    }

    /// PADV2's constant must be (real) zero: qatc pads with zeros.
    fn check_zero_padding(&self, op: &Operator) -> R<()> {
        let Some(t) = op.inputs.get(2).copied().flatten() else {
            return Ok(());
        };
        let c = self.tensor(t);
        let zero = match (c.values(), int8_params(c)) {
            (Some(Data::I8(v)), Some((_, z))) => v.iter().all(|&q| q as i32 == z),
            (Some(Data::F32(v)), None) => v.iter().all(|&f| f == 0.0),
            _ => false,
        };
        if zero {
            Ok(())
        } else {
            Err("PADV2 with a non-zero constant is not supported (qatc pads with zeros)".into())
        }
    }

    /// An operator of the mapping table: decoded into its model op, its operands wired as
    /// the table's row says.
    fn model_op(&mut self, op: &Operator, fallback: &str) -> R<()> {
        let int8 = self.out_is_int8(op);
        let decoded = {
            let input_shape = |i: usize| -> Option<Vec<usize>> {
                let t = op.inputs.get(i).copied().flatten()?;
                Some(match self.vals.get(&t) {
                    Some(&n) => self.g.node(n).ty.shape.clone(),
                    None => self.tensor(t).shape.clone(),
                })
            };
            let ints = |i: usize| self.ints(op, i);
            let out = self.tensor(op.outputs[0]);
            let greater_than = match op.code {
                B::SELECT_V2 => Some(self.select_threshold(op)?),
                _ => None,
            };
            mapping::decode(
                op.code,
                &mapping::Operator {
                    options: &op.options,
                    input_shape: &input_shape,
                    ints: &ints,
                    output_shape: &out.shape,
                    output_type: out.dtype,
                    greater_than,
                },
            )?
        };
        let mut model_op = decoded.op;
        let Mapping::Builtin {
            output, operands, ..
        } = mapping::mapping(&model_op)
        else {
            return Err(format!("{} is not an operator", model_op.kind()).into());
        };
        // float models keep activations as nodes of their own (graph form 1)
        let mut then = decoded.then;
        if !int8 {
            if let Some(a) = model_op.activation() {
                model_op.set_activation(Activation::None);
                then = a;
            }
        }
        let name = self.layer_name(op, fallback);
        let operand_ids = match operands {
            Operands::Kernel { .. } => {
                let mut x = self.value(op, 0)?;
                let rank = self.g.node(x).ty.rank();
                if matches!(model_op, ModelOp::Dense { .. }) && rank != 2 {
                    let fname = self.unique(&format!("{name}/flatten"));
                    x = self.add(ModelOp::Flatten.into(), &fname, &[x])?;
                }
                let k = self.weight(op, &name, "kernel")?;
                let b = self.bias(op, 2, &name)?;
                [x, k].into_iter().chain(b).collect()
            }
            Operands::TransposeConv => {
                let x = self.value(op, 2)?;
                let k = self.weight(op, &name, "kernel")?;
                let b = self.bias(op, 3, &name)?;
                [x, k].into_iter().chain(b).collect()
            }
            Operands::Slope => {
                let x = self.value(op, 0)?;
                let alpha = self.weight(op, &name, "alpha")?;
                vec![x, alpha]
            }
            Operands::Select => vec![self.value(op, 1)?],
            Operands::Data => {
                let n = match Op::Model(model_op.clone()).arity() {
                    (_, usize::MAX) => op.inputs.len(),
                    (_, max) => max,
                };
                (0..n).map(|i| self.value(op, i)).collect::<R<Vec<_>>>()?
            }
        };
        let y = self.add(model_op.clone().into(), &name, &operand_ids)?;
        if operands == Operands::TransposeConv {
            let got = &self.g.node(y).ty.shape;
            let want: Vec<usize> = self
                .ints(op, 0)?
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            if got[1..] != want[1..] {
                return Err(format!(
                    "the output shape {want:?} differs from the {got:?} qatc's conv2d_transpose \
                     computes with this padding"
                )
                .into());
            }
        }
        let y = self.split_activation(y, then)?;
        let keep = match output {
            Output::SameScale if operands == Operands::Select => self.in_params(op, 1),
            Output::SameScale => self.in_params(op, 0),
            Output::Fixed { scale, zero_point } => Some((scale, zero_point)),
            Output::Requantized | Output::SharedScale | Output::RequantizedOrInput => None,
        };
        self.finish(op, y, keep)
    }

    /// Integer outputs are shape computations (the converter's glue), not activations.
    fn integer_output(&self, op: &Operator) -> bool {
        matches!(
            self.tensor(op.outputs[0]).dtype,
            ElemType::I32 | ElemType::I64
        )
    }

    /// Folds static shape glue: SHAPE of a static tensor, PACK, STRIDED_SLICE/SLICE and
    /// CONCATENATION of integer vectors.
    fn fold_glue(&mut self, op: &Operator) -> R<()> {
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
            _ => return Err(format!("{} is not shape glue", op.name()).into()),
        };
        self.ints.insert(out_t, v);
        Ok(())
    }
}
