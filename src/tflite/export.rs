//! Export: an export-ready graph (graph form 3) and its parameters to an int8
//! `.tflite` model.
//!
//! Every activation value becomes an int8 tensor whose scale and zero point come from the
//! fake-quant that follows it ([`super::quantize::activation_quant`]). Ops that requantize
//! (conv, dense, add, mean, relu, …) take their output quantization from their single
//! fake-quant user, which then aliases the op's tensor; same-scale ops (pools, reshape,
//! pad, …) keep their input's; softmax, sigmoid and tanh get TFLite's fixed output
//! parameters. Any other fake-quant becomes a requantizing QUANTIZE (or nothing, when the
//! parameters already agree). Kernels become per-axis int8 weights holding exactly their
//! fake-quant levels, biases int32 at `input_scale · weight_scale`.
//!
//! Quantizers narrower than 8 bits are exported exactly: their levels occupy the low end of
//! int8, and a MINIMUM (or MAXIMUM) against a constant clamps any value an op could
//! produce beyond the grid.
//!
//! Float inputs and outputs get QUANTIZE / DEQUANTIZE at the edges (the converter's default)
//! unless `int8_io`. Shapes are static with batch 1; `shape_signature` marks the batch -1
//! so LiteRT can resize it (except in models with TRANSPOSE_CONV, whose output shape is a
//! constant). The result is checked by loading it into qatc's int8 interpreter.

use super::model::{ElemType, FusedActivation, Options, PaddingMode, QuantParams};
use super::ops::{self, OpSig};
use super::quantize::{activation_quant, quantize_bias, quantize_weights, ActivationQuant};
use super::schema::{BuiltinOperator as B, BuiltinOptions};
use super::write::{le_bytes_i32, le_bytes_i8, write, ModelDef, OpDef, TensorDef};
use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::{Activation, FakeQuantAttrs, Op, Padding, RangeSource};
use crate::ir::op::{ModelOp, PassOp};
use crate::ir::params::ParamStore;
use std::collections::{HashMap, HashSet};

/// Export settings.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// int8 model inputs and outputs (no QUANTIZE / DEQUANTIZE at the edges).
    pub int8_io: bool,
    /// The model description; default `qatc <version>: <graph name>`.
    pub description: Option<String>,
}

/// An exported value: a float tensor (a graph input before its quantizer) or an int8 one
/// with its quantization and the range of int8 values it can hold.
#[derive(Clone, Copy, Debug)]
enum Val {
    Float(i32),
    Int8 {
        tensor: i32,
        scale: f32,
        zero_point: i32,
        /// The values the producing op can output (its clamp range).
        range: (i32, i32),
    },
}

/// Exports an export-ready graph to `.tflite` bytes.
pub fn export(graph: &Graph, params: &ParamStore, opts: &ExportOptions) -> Result<Vec<u8>> {
    let mut g = graph.clone();
    g.rebatch(1)?;
    crate::ir::verify::verify(&g)?;
    params.check_graph(&g)?;
    let mut ex = Exporter::new(&g, params, opts)?;
    ex.run()?;
    let bytes = write(&ex.model)?;
    // every model qatc writes must load: the interpreter's prepare checks what LiteRT's does
    crate::int8::Interpreter::new(&bytes).map_err(|e| {
        Error::Tflite(format!(
            "internal error: the exported model does not load in qatc's interpreter: {e}"
        ))
    })?;
    Ok(bytes)
}

struct Exporter<'a> {
    g: &'a Graph,
    params: &'a ParamStore,
    opts: &'a ExportOptions,
    model: ModelDef,
    vals: HashMap<NodeId, Val>,
    /// Fake-quants whose quantization their producer took (they alias its tensor).
    claimed: HashSet<NodeId>,
    dynamic_batch: bool,
}

fn unsupported(g: &Graph, id: NodeId, hint: impl Into<String>) -> Error {
    let n = g.node(id);
    Error::Unsupported {
        node: n.name.clone(),
        op: n.op.name().to_string(),
        what: "the TFLite exporter".into(),
        hint: hint.into(),
    }
}

impl<'a> Exporter<'a> {
    fn new(g: &'a Graph, params: &'a ParamStore, opts: &'a ExportOptions) -> Result<Exporter<'a>> {
        let order = g.canonical_order();
        let mut dynamic_batch = true;
        for &id in &order {
            let node = g.node(id);
            let hint = match &node.op {
                Op::Model(ModelOp::BatchNorm { .. }) => Some(
                    "BatchNorm must be folded into the preceding conv/dense first (the `export` \
                     pipeline's fold_bn)",
                ),
                Op::Model(ModelOp::Dropout { .. }) => {
                    Some("dropout is removed by the `export` pipeline (eval mode)")
                }
                Op::Pass(PassOp::Quant(_)) => {
                    Some("`quant` markers are realized by the `quantize` pass")
                }
                Op::Model(ModelOp::FakeQuant(q)) if q.range == RangeSource::Operands => {
                    Some("range=operands is the train/eval lowering; export the export-ready graph")
                }
                Op::Model(ModelOp::Conv2dTranspose(_)) => {
                    // its output shape is a constant: the batch cannot be resized
                    dynamic_batch = false;
                    None
                }
                Op::Model(ModelOp::Mean(r)) if r.axes.contains(&0) => {
                    Some("a mean over the batch axis has no per-sample TFLite form")
                }
                Op::Train(_) | Op::Grad(_) | Op::Update(_) => {
                    Some("training ops are not part of an inference model")
                }
                _ => None,
            };
            if let Some(h) = hint {
                return Err(unsupported(g, id, h));
            }
        }
        Ok(Exporter {
            g,
            params,
            opts,
            model: ModelDef::default(),
            vals: HashMap::new(),
            claimed: HashSet::new(),
            dynamic_batch,
        })
    }

    // ---- tensors and operators --------------------------------------------------------

    fn shape_of(&self, id: NodeId) -> Vec<i32> {
        self.g.node(id).ty.shape.iter().map(|&d| d as i32).collect()
    }

    /// An activation tensor (batch-carrying) of node `id`'s shape.
    fn activation_tensor(
        &mut self,
        name: &str,
        shape: &[i32],
        dtype: ElemType,
        q: Option<(f32, i32)>,
    ) -> i32 {
        let signature = (self.dynamic_batch && !shape.is_empty()).then(|| {
            let mut s = shape.to_vec();
            s[0] = -1;
            s
        });
        self.push_tensor(TensorDef {
            name: name.to_string(),
            shape: shape.to_vec(),
            signature,
            dtype,
            quant: q.map(|(s, z)| QuantParams::per_tensor(s, z)),
            data: None,
        })
    }

    fn push_tensor(&mut self, t: TensorDef) -> i32 {
        self.model.tensors.push(t);
        self.model.tensors.len() as i32 - 1
    }

    fn const_i32(&mut self, name: String, shape: Vec<i32>, v: &[i32]) -> i32 {
        self.push_tensor(TensorDef {
            name,
            shape,
            signature: None,
            dtype: ElemType::I32,
            quant: None,
            data: Some(le_bytes_i32(v)),
        })
    }

    fn push_op(&mut self, code: B, sig: OpSig, inputs: Vec<i32>, output: i32, options: Options) {
        let version = ops::version(code, &sig);
        self.model.ops.push(OpDef {
            code,
            version,
            inputs,
            outputs: vec![output],
            options,
        });
    }

    fn int8_sig(&self, id: NodeId, inputs: usize) -> OpSig {
        OpSig {
            input_type: Some(ElemType::I8),
            inputs,
            rank: self.g.node(id).ty.rank(),
            ..Default::default()
        }
    }

    // ---- values -----------------------------------------------------------------------

    /// The int8 value of operand `i` of `id`. A fake-quantized parameter becomes an int8
    /// constant; a bare parameter or a float value is refused.
    fn operand(&mut self, id: NodeId, i: usize) -> Result<Val> {
        let o = self
            .g
            .operand(id, i)
            .ok_or_else(|| unsupported(self.g, id, format!("operand {i} is missing")))?;
        if let Some(v) = self.vals.get(&o) {
            if let Val::Float(_) = v {
                return Err(unsupported(
                    self.g,
                    id,
                    format!(
                        "operand {i} `{}` is a float value: a fake_quant must follow the graph \
                         input (the model input quantizer)",
                        self.g.node(o).name
                    ),
                ));
            }
            return Ok(*v);
        }
        let on = self.g.node(o);
        match &on.op {
            Op::Model(ModelOp::FakeQuant(q)) => {
                let p = self
                    .g
                    .operand(o, 0)
                    .filter(|&p| self.g.node(p).op == Op::Model(ModelOp::Param));
                let Some(p) = p else {
                    return Err(unsupported(
                        self.g,
                        id,
                        format!("operand {i} is not computed yet"),
                    ));
                };
                let v = self.constant_operand(o, p, q)?;
                self.vals.insert(o, v);
                Ok(v)
            }
            // a bare constant operand of an elementwise op is quantized per tensor with its
            // own range, as the TFLite converter quantizes constants
            Op::Model(ModelOp::Param)
                if matches!(
                    self.g.node(id).op,
                    Op::Model(ModelOp::Add { .. })
                        | Op::Model(ModelOp::Sub { .. })
                        | Op::Model(ModelOp::Mul { .. })
                ) =>
            {
                let q = FakeQuantAttrs {
                    bits: 8,
                    narrow: false,
                    symmetric: false,
                    axis: None,
                    range: RangeSource::LastValue,
                };
                let v = self.constant_operand(o, o, &q)?;
                self.vals.insert(o, v);
                Ok(v)
            }
            Op::Model(ModelOp::Param) => Err(unsupported(
                self.g,
                id,
                format!(
                    "operand {i} is the parameter `{}` without a fake_quant; int8 export needs \
                     every constant operand quantized",
                    on.name
                ),
            )),
            _ => Err(unsupported(
                self.g,
                id,
                format!("operand {i} is not computed yet"),
            )),
        }
    }

    /// A fake-quantized parameter used as an activation operand (e.g. a constant addend):
    /// a per-tensor int8 constant.
    fn constant_operand(&mut self, fq: NodeId, p: NodeId, q: &FakeQuantAttrs) -> Result<Val> {
        let w = self.params.require(&self.g.node(p).name)?;
        if q.axis.is_some() {
            return Err(unsupported(
                self.g,
                fq,
                "a constant operand must be quantized per tensor",
            ));
        }
        // asymmetric int8: the same mapping as activations
        let ranges = crate::ir::interp::fq_ranges(q, w, &[], self.params)
            .map_err(|m| unsupported(self.g, fq, m))?;
        let n = *ranges
            .first()
            .ok_or_else(|| unsupported(self.g, fq, "the quantizer has no range"))?;
        let (qmin, _) = q.quant_range();
        let zero_point = n.zero_point + (-128 - qmin);
        let data: Vec<i8> = w
            .data
            .iter()
            .map(|&x| (super::quantize::signed_level(x, &n) + zero_point) as i8)
            .collect();
        let t = self.push_tensor(TensorDef {
            name: self.g.node(p).name.clone(),
            shape: w.shape.iter().map(|&d| d as i32).collect(),
            signature: None,
            dtype: ElemType::I8,
            quant: Some(QuantParams::per_tensor(n.scale, zero_point)),
            data: Some(le_bytes_i8(&data)),
        });
        let (lo, hi) = data.iter().fold((127i32, -128i32), |(lo, hi), &v| {
            (lo.min(v as i32), hi.max(v as i32))
        });
        Ok(Val::Int8 {
            tensor: t,
            scale: n.scale,
            zero_point,
            range: (lo.min(hi), hi.max(lo)),
        })
    }

    fn activation_quant_of(&self, fq: NodeId) -> Result<ActivationQuant> {
        let Op::Model(ModelOp::FakeQuant(q)) = &self.g.node(fq).op else {
            return Err(unsupported(self.g, fq, "expected a fake_quant"));
        };
        activation_quant(q, self.params).map_err(|m| unsupported(self.g, fq, m))
    }

    /// The single fake-quant that consumes `id`'s value, if that is its only use.
    fn sole_fake_quant_user(&self, id: NodeId) -> Option<NodeId> {
        let users = self.g.users(id);
        let is_output = self.g.outputs().iter().any(|o| o.node == id);
        match users.as_slice() {
            [(u, 0)] if !is_output => match &self.g.node(*u).op {
                Op::Model(ModelOp::FakeQuant(q)) if q.range != RangeSource::Operands => Some(*u),
                _ => None,
            },
            _ => None,
        }
    }

    /// The output quantization of a requantizing op: its fake-quant user's, which from now
    /// on aliases the op's tensor. `None` when no fake-quant follows.
    fn claim(&mut self, id: NodeId) -> Result<Option<(NodeId, ActivationQuant)>> {
        match self.sole_fake_quant_user(id) {
            Some(fq) => {
                let aq = self.activation_quant_of(fq)?;
                self.claimed.insert(fq);
                Ok(Some((fq, aq)))
            }
            None => Ok(None),
        }
    }

    fn require_claim(&mut self, id: NodeId) -> Result<(NodeId, ActivationQuant)> {
        self.claim(id)?.ok_or_else(|| {
            unsupported(
                self.g,
                id,
                "its output needs a quantization: a single fake_quant must follow it (run the \
                 `default_8bit` and `export` pipelines)",
            )
        })
    }

    /// Records the int8 result of `id` (and of the fake-quant that claimed it), clamping it
    /// to a narrower-than-8-bit grid when the op can produce values outside it.
    fn define(
        &mut self,
        id: NodeId,
        claimed: Option<(NodeId, ActivationQuant)>,
        tensor: i32,
        params: (f32, i32),
        range: (i32, i32),
    ) {
        let mut v = Val::Int8 {
            tensor,
            scale: params.0,
            zero_point: params.1,
            range,
        };
        if let Some((fq, aq)) = claimed {
            self.vals.insert(id, v);
            v = self.clamp_to_grid(fq, v, aq.grid);
            self.vals.insert(fq, v);
        } else {
            self.vals.insert(id, v);
        }
    }

    /// MINIMUM / MAXIMUM against a constant so that `v` stays on the `grid` of int8 values.
    fn clamp_to_grid(&mut self, fq: NodeId, v: Val, grid: (i32, i32)) -> Val {
        let Val::Int8 {
            mut tensor,
            scale,
            zero_point,
            range,
        } = v
        else {
            return v;
        };
        let name = self.g.node(fq).name.clone();
        let shape = self.shape_of(fq);
        let mut clamp = |ex: &mut Self, code: B, bound: i32, suffix: &str| {
            let c = ex.push_tensor(TensorDef {
                name: format!("{name}.{suffix}"),
                shape: vec![1],
                signature: None,
                dtype: ElemType::I8,
                quant: Some(QuantParams::per_tensor(scale, zero_point)),
                data: Some(vec![bound as i8 as u8]),
            });
            let out = ex.activation_tensor(
                &format!("{name}/{suffix}"),
                &shape,
                ElemType::I8,
                Some((scale, zero_point)),
            );
            let sig = ex.int8_sig(fq, 2);
            ex.push_op(
                code,
                sig,
                vec![tensor, c],
                out,
                Options::Empty(BuiltinOptions::MaximumMinimumOptions),
            );
            tensor = out;
        };
        if range.1 > grid.1 {
            clamp(self, B::MINIMUM, grid.1, "grid_max");
        }
        if range.0 < grid.0 {
            clamp(self, B::MAXIMUM, grid.0, "grid_min");
        }
        Val::Int8 {
            tensor,
            scale,
            zero_point,
            range: (range.0.max(grid.0), range.1.min(grid.1)),
        }
    }

    // ---- the walk ---------------------------------------------------------------------

    fn run(&mut self) -> Result<()> {
        for &i in self.g.inputs() {
            self.input(i)?;
        }
        for id in self.g.canonical_order() {
            if self.vals.contains_key(&id)
                && !matches!(self.g.node(id).op, Op::Model(ModelOp::FakeQuant(_)))
            {
                continue;
            }
            match self.g.node(id).op.clone() {
                Op::Model(ModelOp::Input) | Op::Model(ModelOp::Param) => {}
                Op::Model(ModelOp::FakeQuant(q)) => self.fake_quant(id, &q)?,
                op => self.op(id, &op)?,
            }
        }
        self.outputs()?;
        let versions: Vec<&str> = self
            .model
            .ops
            .iter()
            .filter_map(|o| ops::min_runtime(o.code, o.version))
            .collect();
        let min_runtime = ops::max_version(versions).unwrap_or("1.5.0");
        let mut md = min_runtime.as_bytes().to_vec();
        md.resize(16, 0);
        self.model.metadata.push(("min_runtime_version".into(), md));
        self.model.description = self
            .opts
            .description
            .clone()
            .unwrap_or_else(|| format!("qatc {}: {}", env!("CARGO_PKG_VERSION"), self.g.name));
        self.model.subgraph_name = "main".into();
        Ok(())
    }

    fn input(&mut self, id: NodeId) -> Result<()> {
        let name = self.g.node(id).name.clone();
        let shape = self.shape_of(id);
        let fq = self.sole_fake_quant_user(id).ok_or_else(|| {
            unsupported(
                self.g,
                id,
                "a graph input must be followed by exactly one fake_quant (the model input \
                 quantizer)",
            )
        })?;
        let t = if self.opts.int8_io {
            let aq = self.activation_quant_of(fq)?;
            let t = self.activation_tensor(&name, &shape, ElemType::I8, Some(aq.params()));
            self.claimed.insert(fq);
            let v = Val::Int8 {
                tensor: t,
                scale: aq.scale,
                zero_point: aq.zero_point,
                range: (-128, 127),
            };
            self.vals.insert(id, v);
            let v = self.clamp_to_grid(fq, v, aq.grid);
            self.vals.insert(fq, v);
            t
        } else {
            let t = self.activation_tensor(&name, &shape, ElemType::F32, None);
            self.vals.insert(id, Val::Float(t));
            t
        };
        self.model.inputs.push(t);
        Ok(())
    }

    fn fake_quant(&mut self, id: NodeId, q: &FakeQuantAttrs) -> Result<()> {
        if self.claimed.contains(&id) {
            return Ok(());
        }
        let x = self.g.operand(id, 0).expect("verified arity");
        if self.g.node(x).op == Op::Model(ModelOp::Param) {
            // a quantized weight: its consumer writes it
            return Ok(());
        }
        let aq = activation_quant(q, self.params).map_err(|m| unsupported(self.g, id, m))?;
        let name = self.g.node(id).name.clone();
        let shape = self.shape_of(id);
        let xv = *self
            .vals
            .get(&x)
            .ok_or_else(|| unsupported(self.g, id, "its operand has no exported value"))?;
        let v = match xv {
            Val::Float(t) => {
                let out = self.activation_tensor(&name, &shape, ElemType::I8, Some(aq.params()));
                let sig = OpSig {
                    input_type: Some(ElemType::F32),
                    inputs: 1,
                    rank: shape.len(),
                    ..Default::default()
                };
                self.push_op(
                    B::QUANTIZE,
                    sig,
                    vec![t],
                    out,
                    Options::Empty(BuiltinOptions::QuantizeOptions),
                );
                Val::Int8 {
                    tensor: out,
                    scale: aq.scale,
                    zero_point: aq.zero_point,
                    range: (-128, 127),
                }
            }
            Val::Int8 {
                tensor,
                scale,
                zero_point,
                ..
            } => {
                if (scale, zero_point) == aq.params() {
                    xv
                } else {
                    let out =
                        self.activation_tensor(&name, &shape, ElemType::I8, Some(aq.params()));
                    let sig = self.int8_sig(id, 1);
                    self.push_op(
                        B::QUANTIZE,
                        sig,
                        vec![tensor],
                        out,
                        Options::Empty(BuiltinOptions::QuantizeOptions),
                    );
                    Val::Int8 {
                        tensor: out,
                        scale: aq.scale,
                        zero_point: aq.zero_point,
                        range: (-128, 127),
                    }
                }
            }
        };
        let v = self.clamp_to_grid(id, v, aq.grid);
        self.vals.insert(id, v);
        Ok(())
    }

    fn outputs(&mut self) -> Result<()> {
        let mut sig_outputs = Vec::new();
        for o in self.g.outputs().to_vec() {
            let v = *self.vals.get(&o.node).ok_or_else(|| {
                unsupported(self.g, o.node, "the graph output has no exported value")
            })?;
            let Val::Int8 { tensor, .. } = v else {
                return Err(unsupported(
                    self.g,
                    o.node,
                    format!("graph output `{}` is a float input passed through", o.name),
                ));
            };
            let t = if self.opts.int8_io {
                tensor
            } else {
                let shape = self.shape_of(o.node);
                let out = self.activation_tensor(&o.name, &shape, ElemType::F32, None);
                let sig = self.int8_sig(o.node, 1);
                self.push_op(
                    B::DEQUANTIZE,
                    sig,
                    vec![tensor],
                    out,
                    Options::Empty(BuiltinOptions::DequantizeOptions),
                );
                out
            };
            self.model.outputs.push(t);
            sig_outputs.push((o.name.clone(), t));
        }
        let sig_inputs = self
            .g
            .inputs()
            .iter()
            .zip(&self.model.inputs)
            .map(|(&i, &t)| (self.g.node(i).name.clone(), t))
            .collect();
        self.model.signature = Some(("serving_default".into(), sig_inputs, sig_outputs));
        Ok(())
    }

    /// Output tensor named after node `id` with quantization `q`.
    fn out_tensor(&mut self, id: NodeId, q: (f32, i32)) -> i32 {
        let name = self.g.node(id).name.clone();
        let shape = self.shape_of(id);
        self.activation_tensor(&name, &shape, ElemType::I8, Some(q))
    }

    /// `(tensor, (scale, zero point), value range)` of an int8 value. [`Self::operand`]
    /// refuses float values, so only a graph input's own float tensor (never an operand)
    /// takes the neutral second arm.
    fn int8_of(v: Val) -> (i32, (f32, i32), (i32, i32)) {
        match v {
            Val::Int8 {
                tensor,
                scale,
                zero_point,
                range,
            } => (tensor, (scale, zero_point), range),
            Val::Float(t) => (t, (1.0, 0), (-128, 127)),
        }
    }

    /// The clamp range of a fused activation on an int8 output.
    fn act_range(&self, id: NodeId, a: FusedActivation, q: (f32, i32)) -> Result<(i32, i32)> {
        crate::int8::activation_range(a, q.0, q.1).map_err(|m| unsupported(self.g, id, m))
    }

    fn op(&mut self, id: NodeId, op: &Op) -> Result<()> {
        match op {
            Op::Model(ModelOp::Conv2d(_))
            | Op::Model(ModelOp::DepthwiseConv2d(_))
            | Op::Model(ModelOp::Dense { .. }) => self.conv_like(id, op),
            Op::Model(ModelOp::Conv2dTranspose(_)) => self.conv_transpose(id, op),
            Op::Model(ModelOp::Add { activation })
            | Op::Model(ModelOp::Sub { activation })
            | Op::Model(ModelOp::Mul { activation }) => self.binary(id, op, *activation),
            Op::Model(ModelOp::Relu)
            | Op::Model(ModelOp::Relu6)
            | Op::Model(ModelOp::LeakyRelu { .. })
            | Op::Model(ModelOp::HardSwish) => self.activation(id, op),
            Op::Model(ModelOp::Sigmoid)
            | Op::Model(ModelOp::Tanh)
            | Op::Model(ModelOp::Softmax) => self.fixed_output(id, op),
            Op::Model(ModelOp::Mean(_)) | Op::Model(ModelOp::GlobalAvgPool { .. }) => {
                self.mean(id, op)
            }
            Op::Model(ModelOp::Concat { axis }) => self.concat(id, *axis),
            Op::Model(ModelOp::MaxPool2d(_))
            | Op::Model(ModelOp::AvgPool2d(_))
            | Op::Model(ModelOp::GlobalMaxPool { .. })
            | Op::Model(ModelOp::Reshape { .. })
            | Op::Model(ModelOp::Flatten)
            | Op::Model(ModelOp::Transpose { .. })
            | Op::Model(ModelOp::Pad { .. })
            | Op::Model(ModelOp::Crop { .. })
            | Op::Model(ModelOp::UpsampleNearest { .. }) => self.same_scale(id, op),
            other => Err(unsupported(
                self.g,
                id,
                format!("{} has no TFLite int8 mapping", other.name()),
            )),
        }
    }

    /// The int8 kernel of operand 1: `fake_quant(@kernel)` with the axis TFLite wants.
    /// `expand_per_tensor` writes a per-tensor quantization as per-axis with the scale
    /// repeated (the same numbers; XNNPACK's int8 TRANSPOSE_CONV accepts only per-channel
    /// filters).
    fn kernel(
        &mut self,
        id: NodeId,
        axis: usize,
        expand_per_tensor: bool,
    ) -> Result<(i32, Vec<f32>, Vec<usize>)> {
        let fq = self
            .g
            .operand(id, 1)
            .ok_or_else(|| unsupported(self.g, id, "the kernel operand is missing"))?;
        let (q, p) = match &self.g.node(fq).op {
            Op::Model(ModelOp::FakeQuant(q)) => (q.clone(), self.g.operand(fq, 0)),
            _ => return Err(unsupported(
                self.g,
                id,
                "the kernel must be a fake_quant of a parameter (a QAT graph's weight quantizer)",
            )),
        };
        let p = p
            .filter(|&p| self.g.node(p).op == Op::Model(ModelOp::Param))
            .ok_or_else(|| {
                unsupported(self.g, id, "the kernel's fake_quant must read a parameter")
            })?;
        if let Some(a) = q.axis {
            if a != axis {
                return Err(unsupported(
                    self.g,
                    fq,
                    format!("the kernel is quantized along axis {a}; TFLite needs axis {axis}"),
                ));
            }
        }
        let w = self.params.require(&self.g.node(p).name)?;
        let mut qw =
            quantize_weights(w, &q, self.params).map_err(|m| unsupported(self.g, fq, m))?;
        if expand_per_tensor && qw.axis.is_none() {
            qw.scales = vec![qw.scales[0]; w.shape[axis]];
            qw.axis = Some(axis);
        }
        let t = self.push_tensor(TensorDef {
            name: self.g.node(p).name.clone(),
            shape: w.shape.iter().map(|&d| d as i32).collect(),
            signature: None,
            dtype: ElemType::I8,
            quant: Some(QuantParams {
                scale: qw.scales.clone(),
                zero_point: vec![0; qw.scales.len()],
                axis: qw.axis.unwrap_or(0),
            }),
            data: Some(le_bytes_i8(&qw.data)),
        });
        Ok((t, qw.scales, w.shape.clone()))
    }

    /// The int32 bias (operand 2, or zeros) for `channels` outputs.
    fn bias(
        &mut self,
        id: NodeId,
        in_scale: f32,
        w_scales: &[f32],
        channels: usize,
    ) -> Result<i32> {
        let (values, name) = match self.g.operand(id, 2) {
            Some(b) => {
                let bn = self.g.node(b);
                if bn.op != Op::Model(ModelOp::Param) {
                    return Err(unsupported(self.g, id, "the bias must be a parameter"));
                }
                (self.params.require(&bn.name)?.data.clone(), bn.name.clone())
            }
            None => (
                vec![0.0; channels],
                format!("{}.bias", self.g.node(id).name),
            ),
        };
        let (q, scales) =
            quantize_bias(&values, in_scale, w_scales).map_err(|m| unsupported(self.g, id, m))?;
        Ok(self.push_tensor(TensorDef {
            name,
            shape: vec![channels as i32],
            signature: None,
            dtype: ElemType::I32,
            quant: Some(QuantParams {
                zero_point: vec![0; scales.len()],
                scale: scales,
                axis: 0,
            }),
            data: Some(le_bytes_i32(&q)),
        }))
    }

    /// An explicit conv padding that SAME/VALID cannot express becomes a PAD (with the input
    /// zero point, i.e. real 0.0) followed by a VALID conv.
    fn conv_padding(
        &mut self,
        id: NodeId,
        x: Val,
        padding: Padding,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Result<(Val, PaddingMode)> {
        let xs = &self
            .g
            .node(self.g.operand(id, 0).expect("verified"))
            .ty
            .shape;
        let input = [xs[1], xs[2]];
        if let Some(p) = ops::padding_mode(padding, input, kernel, stride, dilation) {
            return Ok((x, p));
        }
        let Padding::Explicit([t, b, l, r]) = padding else {
            unreachable!("SAME and VALID always map")
        };
        let (xt, q, range) = Self::int8_of(x);
        let name = format!("{}/pad", self.g.node(id).name);
        let shape = vec![
            xs[0] as i32,
            (xs[1] + t + b) as i32,
            (xs[2] + l + r) as i32,
            xs[3] as i32,
        ];
        let pads = self.const_i32(
            format!("{name}.paddings"),
            vec![4, 2],
            &[0, 0, t as i32, b as i32, l as i32, r as i32, 0, 0],
        );
        let out = self.activation_tensor(&name, &shape, ElemType::I8, Some(q));
        let mut sig = self.int8_sig(id, 2);
        sig.rank = 4;
        self.push_op(
            B::PAD,
            sig,
            vec![xt, pads],
            out,
            Options::Empty(BuiltinOptions::PadOptions),
        );
        Ok((
            Val::Int8 {
                tensor: out,
                scale: q.0,
                zero_point: q.1,
                range: (range.0.min(q.1), range.1.max(q.1)),
            },
            PaddingMode::Valid,
        ))
    }

    fn conv_like(&mut self, id: NodeId, op: &Op) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (claimed_fq, aq) = self.require_claim(id)?;
        let out_q = aq.params();
        let ty = self.g.node(id).ty.clone();
        let (code, axis) = match op {
            Op::Model(ModelOp::Conv2d(_)) => (B::CONV_2D, 0),
            Op::Model(ModelOp::DepthwiseConv2d(_)) => (B::DEPTHWISE_CONV_2D, 3),
            _ => (B::FULLY_CONNECTED, 0),
        };
        let (w, w_scales, w_shape) = self.kernel(id, axis, false)?;
        let (x, options, act) = match op {
            Op::Model(ModelOp::Conv2d(c)) | Op::Model(ModelOp::DepthwiseConv2d(c)) => {
                let (x, padding) = self.conv_padding(
                    id,
                    x,
                    c.padding,
                    [w_shape[1], w_shape[2]],
                    c.stride,
                    c.dilation,
                )?;
                let act = ops::fused(c.activation);
                let options = if code == B::CONV_2D {
                    Options::Conv2d {
                        padding,
                        stride_h: c.stride[0] as i32,
                        stride_w: c.stride[1] as i32,
                        dilation_h: c.dilation[0] as i32,
                        dilation_w: c.dilation[1] as i32,
                        activation: act,
                    }
                } else {
                    let in_ch = self.g.node(self.g.operand(id, 0).unwrap()).ty.shape[3];
                    Options::DepthwiseConv2d {
                        padding,
                        stride_h: c.stride[0] as i32,
                        stride_w: c.stride[1] as i32,
                        dilation_h: c.dilation[0] as i32,
                        dilation_w: c.dilation[1] as i32,
                        depth_multiplier: (ty.shape[3] / in_ch.max(1)) as i32,
                        activation: act,
                    }
                };
                (x, options, act)
            }
            Op::Model(ModelOp::Dense { activation }) => {
                let act = ops::fused(*activation);
                (
                    x,
                    Options::FullyConnected {
                        activation: act,
                        shuffled_weights: false,
                        keep_num_dims: false,
                    },
                    act,
                )
            }
            _ => unreachable!(),
        };
        let (xt, xq, _) = Self::int8_of(x);
        let channels = *ty.shape.last().expect("rank >= 2");
        let b = self.bias(id, xq.0, &w_scales, channels)?;
        let out = self.out_tensor(id, out_q);
        let sig = self.int8_sig(id, 3);
        self.push_op(code, sig, vec![xt, w, b], out, options);
        let range = self.act_range(id, act, out_q)?;
        self.define(id, Some((claimed_fq, aq)), out, out_q, range);
        Ok(())
    }

    fn conv_transpose(&mut self, id: NodeId, op: &Op) -> Result<()> {
        let Op::Model(ModelOp::Conv2dTranspose(c)) = op else {
            unreachable!()
        };
        let x = self.operand(id, 0)?;
        let (claimed_fq, aq) = self.require_claim(id)?;
        let out_q = aq.params();
        if c.dilation != [1, 1] {
            return Err(unsupported(
                self.g,
                id,
                "TFLite's TRANSPOSE_CONV has no dilation",
            ));
        }
        let padding =
            match c.padding {
                Padding::Same => PaddingMode::Same,
                Padding::Valid => PaddingMode::Valid,
                Padding::Explicit(_) => return Err(unsupported(
                    self.g,
                    id,
                    "explicit padding on conv2d_transpose has no TFLite form; use same or valid",
                )),
            };
        let (w, w_scales, _) = self.kernel(id, 0, true)?;
        let ty = self.g.node(id).ty.clone();
        let (xt, xq, _) = Self::int8_of(x);
        let channels = ty.shape[3];
        let has_bias = self.g.operand(id, 2).is_some();
        let b = if has_bias {
            Some(self.bias(id, xq.0, &w_scales, channels)?)
        } else {
            None
        };
        let name = self.g.node(id).name.clone();
        let out_shape: Vec<i32> = ty.shape.iter().map(|&d| d as i32).collect();
        let shape_t = self.const_i32(format!("{name}.output_shape"), vec![4], &out_shape);
        let mut inputs = vec![shape_t, w, xt];
        if let Some(b) = b {
            inputs.push(b);
        }
        // The fused activation goes into a separate RELU/RELU6: LiteRT's TRANSPOSE_CONV
        // Prepare reads the activation through the CONV_2D options struct (an out-of-bounds
        // read), so a fused one is not reliably applied.
        let conv_name = if c.activation == Activation::None {
            name.clone()
        } else {
            format!("{name}/conv")
        };
        let conv_out = self.activation_tensor(&conv_name, &out_shape, ElemType::I8, Some(out_q));
        let sig = OpSig {
            has_bias,
            ..self.int8_sig(id, inputs.len())
        };
        self.push_op(
            B::TRANSPOSE_CONV,
            sig,
            inputs,
            conv_out,
            Options::TransposeConv {
                padding,
                stride_h: c.stride[0] as i32,
                stride_w: c.stride[1] as i32,
                activation: FusedActivation::None,
            },
        );
        let (out, range) = match c.activation {
            Activation::None => (conv_out, (-128, 127)),
            a => {
                let out = self.out_tensor(id, out_q);
                let code = if a == Activation::Relu {
                    B::RELU
                } else {
                    B::RELU6
                };
                let sig = self.int8_sig(id, 1);
                self.push_op(code, sig, vec![conv_out], out, Options::None);
                (out, self.act_range(id, ops::fused(a), out_q)?)
            }
        };
        self.define(id, Some((claimed_fq, aq)), out, out_q, range);
        Ok(())
    }

    fn binary(&mut self, id: NodeId, op: &Op, activation: Activation) -> Result<()> {
        let a = self.operand(id, 0)?;
        let b = self.operand(id, 1)?;
        let (claimed_fq, aq) = self.require_claim(id)?;
        let out_q = aq.params();
        let (at, aq_in, _) = Self::int8_of(a);
        let (bt, bq_in, _) = Self::int8_of(b);
        let act = ops::fused(activation);
        let (code, options) = match op {
            Op::Model(ModelOp::Add { .. }) => (B::ADD, Options::Add { activation: act }),
            Op::Model(ModelOp::Sub { .. }) => (B::SUB, Options::Sub { activation: act }),
            _ => (B::MUL, Options::Mul { activation: act }),
        };
        let out = self.out_tensor(id, out_q);
        let sig = OpSig {
            mul_multiplier_ge_one: aq_in.0 * bq_in.0 / out_q.0 >= 1.0,
            ..self.int8_sig(id, 2)
        };
        self.push_op(code, sig, vec![at, bt], out, options);
        let range = self.act_range(id, act, out_q)?;
        self.define(id, Some((claimed_fq, aq)), out, out_q, range);
        Ok(())
    }

    fn activation(&mut self, id: NodeId, op: &Op) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (xt, xq, _) = Self::int8_of(x);
        let claimed = self.claim(id)?;
        let out_q = match &claimed {
            Some((_, aq)) => aq.params(),
            None if matches!(op, Op::Model(ModelOp::Relu) | Op::Model(ModelOp::Relu6)) => xq,
            None => {
                return Err(unsupported(
                    self.g,
                    id,
                    "its output needs a quantization: a single fake_quant must follow it",
                ))
            }
        };
        let out = self.out_tensor(id, out_q);
        let sig = self.int8_sig(id, 1);
        let (code, options, range) = match op {
            Op::Model(ModelOp::Relu) => (
                B::RELU,
                Options::None,
                self.act_range(id, FusedActivation::Relu, out_q)?,
            ),
            Op::Model(ModelOp::Relu6) => (
                B::RELU6,
                Options::None,
                self.act_range(id, FusedActivation::Relu6, out_q)?,
            ),
            Op::Model(ModelOp::LeakyRelu { alpha }) => (
                B::LEAKY_RELU,
                Options::LeakyRelu { alpha: alpha.0 },
                (-128, 127),
            ),
            _ => (
                B::HARD_SWISH,
                Options::Empty(BuiltinOptions::HardSwishOptions),
                (-128, 127),
            ),
        };
        self.push_op(code, sig, vec![xt], out, options);
        self.define(id, claimed, out, out_q, range);
        Ok(())
    }

    fn fixed_output(&mut self, id: NodeId, op: &Op) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (xt, _, _) = Self::int8_of(x);
        let (code, q, options) = match op {
            Op::Model(ModelOp::Sigmoid) => (B::LOGISTIC, (1.0 / 256.0, -128), Options::None),
            Op::Model(ModelOp::Tanh) => (B::TANH, (1.0 / 128.0, 0), Options::None),
            _ => (
                B::SOFTMAX,
                (1.0 / 256.0, -128),
                Options::Softmax { beta: 1.0 },
            ),
        };
        let out = self.out_tensor(id, q);
        let sig = self.int8_sig(id, 1);
        self.push_op(code, sig, vec![xt], out, options);
        self.define(id, None, out, q, (-128, 127));
        Ok(())
    }

    fn mean(&mut self, id: NodeId, op: &Op) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (xt, xq, xrange) = Self::int8_of(x);
        let (axes, keep) = match op {
            Op::Model(ModelOp::Mean(r)) => (
                r.axes.iter().map(|&a| a as i32).collect::<Vec<_>>(),
                r.keepdims,
            ),
            Op::Model(ModelOp::GlobalAvgPool { keepdims }) => (vec![1, 2], *keepdims),
            _ => unreachable!(),
        };
        let claimed = self.claim(id)?;
        let (out_q, range) = match &claimed {
            Some((_, aq)) => (aq.params(), (-128, 127)),
            None => (xq, xrange), // a mean stays within its input's range
        };
        let name = self.g.node(id).name.clone();
        let axes_t = self.const_i32(format!("{name}.axes"), vec![axes.len() as i32], &axes);
        let out = self.out_tensor(id, out_q);
        let sig = self.int8_sig(id, 2);
        self.push_op(
            B::MEAN,
            sig,
            vec![xt, axes_t],
            out,
            Options::Reducer { keep_dims: keep },
        );
        self.define(id, claimed, out, out_q, range);
        Ok(())
    }

    fn concat(&mut self, id: NodeId, axis: usize) -> Result<()> {
        let n = self.g.operands(id).len();
        let mut ins = Vec::with_capacity(n);
        for i in 0..n {
            ins.push(self.operand(id, i)?);
        }
        let (claimed_fq, aq) = self.require_claim(id)?;
        let out_q = aq.params();
        let mut tensors = Vec::with_capacity(n);
        let mut range = (127, -128);
        for (i, v) in ins.into_iter().enumerate() {
            let (t, q, r) = Self::int8_of(v);
            // int8 CONCATENATION needs identical quantization: requantize a mismatch
            let t = if q == out_q {
                range = (range.0.min(r.0), range.1.max(r.1));
                t
            } else {
                let o = self.g.operand(id, i).expect("counted");
                let name = format!("{}/requantized", self.g.node(o).name);
                let shape = self.shape_of(o);
                let out = self.activation_tensor(&name, &shape, ElemType::I8, Some(out_q));
                let sig = self.int8_sig(o, 1);
                self.push_op(
                    B::QUANTIZE,
                    sig,
                    vec![t],
                    out,
                    Options::Empty(BuiltinOptions::QuantizeOptions),
                );
                range = (-128, 127);
                out
            };
            tensors.push(t);
        }
        let out = self.out_tensor(id, out_q);
        let sig = self.int8_sig(id, n);
        self.push_op(
            B::CONCATENATION,
            sig,
            tensors,
            out,
            Options::Concatenation {
                axis: axis as i32,
                activation: FusedActivation::None,
            },
        );
        self.define(id, Some((claimed_fq, aq)), out, out_q, range);
        Ok(())
    }

    /// Ops whose output shares the input's quantization.
    fn same_scale(&mut self, id: NodeId, op: &Op) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (xt, q, range) = Self::int8_of(x);
        let xid = self.g.operand(id, 0).expect("verified");
        let in_shape = self.g.node(xid).ty.shape.clone();
        let out_shape = self.g.node(id).ty.shape.clone();
        let name = self.g.node(id).name.clone();
        let out = self.out_tensor(id, q);
        let mut sig = self.int8_sig(id, 1);
        sig.rank = in_shape.len();
        let mut range = range;
        let (code, inputs, options) = match op {
            Op::Model(ModelOp::MaxPool2d(p)) | Op::Model(ModelOp::AvgPool2d(p)) => {
                let padding = ops::padding_mode(p.padding, [in_shape[1], in_shape[2]], p.size, p.stride, [1, 1])
                    .ok_or_else(|| {
                        unsupported(
                            self.g,
                            id,
                            "this explicit pool padding has no TFLite equivalent (TFLite pools pad SAME or VALID)",
                        )
                    })?;
                let code = if matches!(op, Op::Model(ModelOp::MaxPool2d(_))) {
                    B::MAX_POOL_2D
                } else {
                    B::AVERAGE_POOL_2D
                };
                (
                    code,
                    vec![xt],
                    Options::Pool2d {
                        padding,
                        stride_h: p.stride[0] as i32,
                        stride_w: p.stride[1] as i32,
                        filter_h: p.size[0] as i32,
                        filter_w: p.size[1] as i32,
                        activation: FusedActivation::None,
                    },
                )
            }
            Op::Model(ModelOp::GlobalMaxPool { keepdims }) => {
                let axes = self.const_i32(format!("{name}.axes"), vec![2], &[1, 2]);
                (
                    B::REDUCE_MAX,
                    vec![xt, axes],
                    Options::Reducer {
                        keep_dims: *keepdims,
                    },
                )
            }
            Op::Model(ModelOp::Reshape { .. }) | Op::Model(ModelOp::Flatten) => {
                let mut target: Vec<i32> = out_shape.iter().map(|&d| d as i32).collect();
                target[0] = -1;
                let s = self.const_i32(format!("{name}.shape"), vec![target.len() as i32], &target);
                sig.inputs = 2;
                (
                    B::RESHAPE,
                    vec![xt, s],
                    Options::Reshape {
                        new_shape: Some(target),
                    },
                )
            }
            Op::Model(ModelOp::Transpose { perm }) => {
                let p: Vec<i32> = perm.iter().map(|&a| a as i32).collect();
                let t = self.const_i32(format!("{name}.perm"), vec![p.len() as i32], &p);
                sig.inputs = 2;
                (
                    B::TRANSPOSE,
                    vec![xt, t],
                    Options::Empty(BuiltinOptions::TransposeOptions),
                )
            }
            Op::Model(ModelOp::Pad { pads }) => {
                let flat: Vec<i32> = pads
                    .iter()
                    .flat_map(|p| [p[0] as i32, p[1] as i32])
                    .collect();
                let t = self.const_i32(
                    format!("{name}.paddings"),
                    vec![pads.len() as i32, 2],
                    &flat,
                );
                sig.inputs = 2;
                range = (range.0.min(q.1), range.1.max(q.1));
                (
                    B::PAD,
                    vec![xt, t],
                    Options::Empty(BuiltinOptions::PadOptions),
                )
            }
            Op::Model(ModelOp::Crop { crops }) => {
                let rank = in_shape.len();
                let begin: Vec<i32> = crops.iter().map(|c| c[0] as i32).collect();
                let end: Vec<i32> = crops
                    .iter()
                    .zip(&in_shape)
                    .map(|(c, &d)| (d - c[1]) as i32)
                    .collect();
                let bt = self.const_i32(format!("{name}.begin"), vec![rank as i32], &begin);
                let et = self.const_i32(format!("{name}.end"), vec![rank as i32], &end);
                let st =
                    self.const_i32(format!("{name}.strides"), vec![rank as i32], &vec![1; rank]);
                sig.inputs = 4;
                (
                    B::STRIDED_SLICE,
                    vec![xt, bt, et, st],
                    // the batch axis is taken whole (masked), so the batch can be resized
                    Options::StridedSlice {
                        begin_mask: 1,
                        end_mask: 1,
                        ellipsis_mask: 0,
                        new_axis_mask: 0,
                        shrink_axis_mask: 0,
                        offset: false,
                    },
                )
            }
            Op::Model(ModelOp::UpsampleNearest { scale }) => {
                let size = [out_shape[1] as i32, out_shape[2] as i32];
                // check that TFLite's half-pixel nearest index is exactly y / scale
                for (axis, (&n_in, &n_out)) in
                    [in_shape[1], in_shape[2]].iter().zip(&size).enumerate()
                {
                    let ratio = n_in as f32 / n_out as f32;
                    for o in 0..n_out as usize {
                        let src = (((o as f32 + 0.5) * ratio).floor() as usize).min(n_in - 1);
                        if src != o / scale[axis] {
                            return Err(unsupported(self.g, id, "TFLite's nearest-neighbor resize does not reproduce this upsampling exactly"));
                        }
                    }
                }
                let t = self.const_i32(format!("{name}.size"), vec![2], &size);
                sig.inputs = 2;
                sig.resize_flags = true;
                (
                    B::RESIZE_NEAREST_NEIGHBOR,
                    vec![xt, t],
                    Options::ResizeNearestNeighbor {
                        align_corners: false,
                        half_pixel_centers: true,
                    },
                )
            }
            _ => unreachable!(),
        };
        self.push_op(code, sig, inputs, out, options);
        self.define(id, None, out, q, range);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::{Array, Interpreter};
    use crate::ir::interp::{self, Value};
    use crate::ir::params::Tensor;

    const TINY: &str = r#"
model "tiny"
param @conv.kernel : f32[2,3,3,1]
param @conv.bias : f32[2]
%0 = input "x" : f32[1,5,5,1]
%1 = fake_quant "x.q" (%0) {bits=8, range=fixed, min=-1.0, max=1.0}
%2 = fake_quant "conv.kernel.q" (@conv.kernel) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = conv2d "conv" (%1, %2, @conv.bias) {stride=[1,1], padding=same, activation=relu}
%4 = fake_quant "conv.q" (%3) {bits=8, range=ema, state="conv", decay=0.999}
output "y" = %4
"#;

    fn tiny() -> (Graph, ParamStore) {
        let g = crate::ir::text::parse(TINY, "tiny.qir").unwrap();
        let mut p = ParamStore::new();
        let k: Vec<f32> = (0..18).map(|i| ((i * 7 % 11) as f32 - 5.0) / 8.0).collect();
        p.insert("conv.kernel", Tensor::new(vec![2, 3, 3, 1], k));
        p.insert("conv.bias", Tensor::new(vec![2], vec![0.1, -0.2]));
        p.insert("conv.min", Tensor::scalar(0.0));
        p.insert("conv.max", Tensor::scalar(3.0));
        (g, p)
    }

    #[test]
    fn exported_conv_matches_the_fake_quant_graph_within_one_step() {
        let (g, p) = tiny();
        let bytes = export(&g, &p, &ExportOptions::default()).unwrap();
        let it = Interpreter::new(&bytes).unwrap();
        let x: Vec<f32> = (0..25)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let y = it
            .run(&[Array::f32(vec![1, 5, 5, 1], x.clone()).unwrap()])
            .unwrap();
        let want = interp::run(
            &g,
            &p,
            &[("x", Value::F32(Tensor::new(vec![1, 5, 5, 1], x)))],
        )
        .unwrap();
        let want = want.outputs[0].1.f32().unwrap().clone();
        let got = y[0].as_f32().unwrap();
        let step = 3.0 / 255.0;
        for (a, b) in got.iter().zip(&want.data) {
            assert!((a - b).abs() <= step * 1.01, "{a} vs {b}");
        }
        // the model reads back with the structure the exporter wrote
        let m = it.model();
        let names: Vec<String> = m.operators.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["QUANTIZE", "CONV_2D", "DEQUANTIZE"]);
        assert_eq!(m.min_runtime_version().as_deref(), Some("1.14.0"));
        assert_eq!(m.signatures[0].key, "serving_default");
        let w = &m.tensors[m.operators[1].inputs[1].unwrap()];
        assert_eq!(w.quant.as_ref().unwrap().scale.len(), 2);
        assert_eq!(w.signature, None);
        let xin = &m.tensors[m.inputs[0]];
        assert_eq!(xin.signature.as_deref(), Some(&[-1, 5, 5, 1][..]));
    }

    #[test]
    fn int8_io_drops_the_edge_ops() {
        let (g, p) = tiny();
        let opts = ExportOptions {
            int8_io: true,
            ..Default::default()
        };
        let bytes = export(&g, &p, &opts).unwrap();
        let it = Interpreter::new(&bytes).unwrap();
        let names: Vec<String> = it.model().operators.iter().map(|o| o.name()).collect();
        assert_eq!(names, ["CONV_2D"]);
        assert_eq!(it.inputs()[0].dtype, ElemType::I8);
        assert_eq!(it.outputs()[0].dtype, ElemType::I8);
    }

    #[test]
    fn missing_quantizer_is_refused_with_the_node_name() {
        let src = TINY.replace(
            "%4 = fake_quant \"conv.q\" (%3) {bits=8, range=ema, state=\"conv\", decay=0.999}\noutput \"y\" = %4",
            "output \"y\" = %3",
        );
        let g = crate::ir::text::parse(&src, "t.qir").unwrap();
        let (_, p) = tiny();
        let err = export(&g, &p, &ExportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`conv`") && err.contains("fake_quant"),
            "{err}"
        );
    }
}
