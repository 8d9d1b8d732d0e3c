//! Export: an export-ready graph (graph form 3) and its parameters to an int8 `.tflite`
//! model. What each op becomes is [`crate::tflite::mapping`]'s table; this module walks the
//! graph, quantizes the values, and wires the operators.
//!
//! Every activation value becomes an int8 tensor whose scale and zero point come from the
//! fake-quant that follows it ([`int8_params::activation_quant`]). Ops that requantize
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

pub mod int8_params;
mod operators;

use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::{FakeQuantAttrs, ModelOp, Op, RangeSource};
use crate::ir::params::ParamStore;
use crate::tflite::mapping::{self, Mapping};
use crate::tflite::model::{
    Data, ElemType, FusedActivation, Model, Operator, Options, QuantParams, Signature, Tensor,
};
use crate::tflite::schema::{BuiltinOperator as B, BuiltinOptions};
use crate::tflite::versions::{self, OpSig};
use int8_params::{activation_quant, ActivationQuant};
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
    Float(usize),
    Int8 {
        tensor: usize,
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
    let bytes = crate::tflite::write(&ex.model)?;
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
    model: Model,
    vals: HashMap<NodeId, Val>,
    /// Fake-quants whose quantization their producer took (they alias its tensor).
    claimed: HashSet<NodeId>,
    dynamic_batch: bool,
}

fn unsupported(g: &Graph, id: NodeId, hint: impl std::fmt::Display) -> Error {
    let n = g.node(id);
    Error::Unsupported {
        node: n.name.clone(),
        op: n.op.name().to_string(),
        what: "the TFLite exporter".into(),
        hint: hint.to_string(),
    }
}

impl<'a> Exporter<'a> {
    fn new(g: &'a Graph, params: &'a ParamStore, opts: &'a ExportOptions) -> Result<Exporter<'a>> {
        let order = g.canonical_order();
        let mut dynamic_batch = true;
        for &id in &order {
            let hint = match &g.node(id).op {
                Op::Model(op) => match (mapping::mapping(op), op) {
                    (Mapping::Removed(why), _) => Some(why),
                    (Mapping::Tensor, ModelOp::FakeQuant(q)) if q.range.in_operands() => Some(
                        "range=operands is the train/eval lowering; export the export-ready graph",
                    ),
                    (
                        Mapping::Builtin {
                            code: B::TRANSPOSE_CONV,
                            ..
                        },
                        _,
                    ) => {
                        // its output shape is a constant: the batch cannot be resized
                        dynamic_batch = false;
                        None
                    }
                    (Mapping::Builtin { .. } | Mapping::Tensor, _) => None,
                },
                Op::Pass(_) => Some(
                    "pass helpers exist only inside a pipeline (a `quant` marker is realized by \
                     the `quantize` pass, `fold_bn`'s helpers by `fold_bn`)",
                ),
                Op::Train(_) | Op::Grad(_) | Op::Update(_) => {
                    Some("training ops are not part of an inference model")
                }
            };
            if let Some(h) = hint {
                return Err(unsupported(g, id, h));
            }
        }
        Ok(Exporter {
            g,
            params,
            opts,
            model: Model::default(),
            vals: HashMap::new(),
            claimed: HashSet::new(),
            dynamic_batch,
        })
    }

    // ---- tensors and operators --------------------------------------------------------

    fn shape_of(&self, id: NodeId) -> Vec<usize> {
        self.g.node(id).ty.shape.clone()
    }

    /// An activation tensor (batch-carrying) of node `id`'s shape.
    fn activation_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: ElemType,
        q: Option<(f32, i32)>,
    ) -> usize {
        let signature = (self.dynamic_batch && !shape.is_empty()).then(|| {
            let mut s: Vec<i32> = shape.iter().map(|&d| d as i32).collect();
            s[0] = -1;
            s
        });
        self.push_tensor(Tensor {
            signature,
            quant: q.map(|(s, z)| QuantParams::per_tensor(s, z)),
            ..Tensor::new(name, shape.to_vec(), dtype)
        })
    }

    fn push_tensor(&mut self, t: Tensor) -> usize {
        self.model.tensors.push(t);
        self.model.tensors.len() - 1
    }

    fn const_i32(&mut self, name: String, shape: Vec<usize>, v: &[i32]) -> usize {
        self.push_tensor(Tensor::constant(name, shape, &Data::I32(v.to_vec())))
    }

    fn push_op(&mut self, code: B, sig: OpSig, inputs: &[usize], output: usize, options: Options) {
        let version = versions::version(code, &sig);
        self.model
            .operators
            .push(Operator::new(code, version, inputs, &[output], options));
    }

    fn int8_sig(&self, id: NodeId, inputs: usize, options: &Options) -> OpSig {
        OpSig::new(ElemType::I8, inputs, self.g.node(id).ty.rank(), options)
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
        if let Some(q) = on.op.as_fake_quant() {
            let p = self
                .g
                .operand(o, 0)
                .filter(|&p| self.g.node(p).op.is_param());
            let Some(p) = p else {
                return Err(unsupported(
                    self.g,
                    id,
                    format!("operand {i} is not computed yet"),
                ));
            };
            let v = self.constant_operand(o, p, q)?;
            self.vals.insert(o, v);
            return Ok(v);
        }
        if !on.op.is_param() {
            return Err(unsupported(
                self.g,
                id,
                format!("operand {i} is not computed yet"),
            ));
        }
        // a bare constant operand of an elementwise op is quantized per tensor with its own
        // range, as the TFLite converter quantizes constants
        let elementwise = matches!(
            self.g.node(id).op.as_model(),
            Some(ModelOp::Add { .. } | ModelOp::Sub { .. } | ModelOp::Mul { .. })
        );
        if !elementwise {
            return Err(unsupported(
                self.g,
                id,
                format!(
                    "operand {i} is the parameter `{}` without a fake_quant; int8 export needs \
                     every constant operand quantized",
                    on.name
                ),
            ));
        }
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
            .map_err(|e| unsupported(self.g, fq, e))?;
        let n = *ranges
            .first()
            .ok_or_else(|| unsupported(self.g, fq, "the quantizer has no range"))?;
        let (qmin, _) = q.quant_range();
        let zero_point = n.zero_point + (-128 - qmin);
        let data: Vec<i8> = w
            .data
            .iter()
            .map(|&x| (int8_params::signed_level(x, &n) + zero_point) as i8)
            .collect();
        let (lo, hi) = data.iter().fold((127i32, -128i32), |(lo, hi), &v| {
            (lo.min(v as i32), hi.max(v as i32))
        });
        let t = self.push_tensor(Tensor {
            quant: Some(QuantParams::per_tensor(n.scale, zero_point)),
            ..Tensor::constant(
                self.g.node(p).name.clone(),
                w.shape.clone(),
                &Data::I8(data),
            )
        });
        Ok(Val::Int8 {
            tensor: t,
            scale: n.scale,
            zero_point,
            range: (lo.min(hi), hi.max(lo)),
        })
    }

    fn activation_quant_of(&self, fq: NodeId) -> Result<ActivationQuant> {
        let q = self
            .g
            .node(fq)
            .op
            .as_fake_quant()
            .ok_or_else(|| unsupported(self.g, fq, "expected a fake_quant"))?;
        activation_quant(q, self.params).map_err(|m| unsupported(self.g, fq, m))
    }

    /// The single fake-quant that consumes `id`'s value, if that is its only use.
    fn sole_fake_quant_user(&self, id: NodeId) -> Option<NodeId> {
        let is_output = self.g.outputs().iter().any(|o| o.node == id);
        match self.g.users(id).as_slice() {
            [(u, 0)] if !is_output => self
                .g
                .node(*u)
                .op
                .as_fake_quant()
                .filter(|q| !q.range.in_operands())
                .map(|_| *u),
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
        tensor: usize,
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
            let c = ex.push_tensor(Tensor {
                quant: Some(QuantParams::per_tensor(scale, zero_point)),
                ..Tensor::constant(
                    format!("{name}.{suffix}"),
                    vec![1],
                    &Data::I8(vec![bound as i8]),
                )
            });
            let out = ex.activation_tensor(
                &format!("{name}/{suffix}"),
                &shape,
                ElemType::I8,
                Some((scale, zero_point)),
            );
            let options = Options::Empty(BuiltinOptions::MaximumMinimumOptions);
            let sig = ex.int8_sig(fq, 2, &options);
            ex.push_op(code, sig, &[tensor, c], out, options);
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
            let Some(op) = self.g.node(id).op.as_model().cloned() else {
                continue; // refused in `new`
            };
            if let ModelOp::FakeQuant(q) = &op {
                self.fake_quant(id, q)?;
                continue;
            }
            if self.vals.contains_key(&id) {
                continue;
            }
            match mapping::mapping(&op) {
                Mapping::Builtin {
                    code,
                    output,
                    operands,
                } => self.operator(id, &op, code, output, operands)?,
                // inputs and params are tensors; removed ops were refused in `new`
                Mapping::Tensor | Mapping::Removed(_) => {}
            }
        }
        self.outputs()?;
        let versions: Vec<&str> = self
            .model
            .operators
            .iter()
            .filter_map(|o| versions::min_runtime(o.code, o.version))
            .collect();
        let min_runtime = versions::max_version(versions).unwrap_or("1.5.0");
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
        if self.g.node(x).op.is_param() {
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
        let quantize = Options::Empty(BuiltinOptions::QuantizeOptions);
        let v = match xv {
            Val::Float(t) => {
                let out = self.activation_tensor(&name, &shape, ElemType::I8, Some(aq.params()));
                let sig = OpSig::new(ElemType::F32, 1, shape.len(), &quantize);
                self.push_op(B::QUANTIZE, sig, &[t], out, quantize);
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
                    let sig = self.int8_sig(id, 1, &quantize);
                    self.push_op(B::QUANTIZE, sig, &[tensor], out, quantize);
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
                let dequantize = Options::Empty(BuiltinOptions::DequantizeOptions);
                let sig = self.int8_sig(o.node, 1, &dequantize);
                self.push_op(B::DEQUANTIZE, sig, &[tensor], out, dequantize);
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
        self.model.signatures = vec![Signature {
            key: "serving_default".into(),
            inputs: sig_inputs,
            outputs: sig_outputs,
        }];
        Ok(())
    }

    /// Output tensor named after node `id` with quantization `q`.
    fn out_tensor(&mut self, id: NodeId, q: (f32, i32)) -> usize {
        let name = self.g.node(id).name.clone();
        let shape = self.shape_of(id);
        self.activation_tensor(&name, &shape, ElemType::I8, Some(q))
    }

    /// `(tensor, (scale, zero point), value range)` of an int8 value. [`Self::operand`]
    /// refuses float values, so only a graph input's own float tensor (never an operand)
    /// takes the neutral second arm.
    fn int8_of(v: Val) -> (usize, (f32, i32), (i32, i32)) {
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
        crate::int8::activation_range(a, q.0, q.1).map_err(|e| unsupported(self.g, id, e))
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
