//! Writing one model op as TFLite operators, by the row of [`mapping`]'s table: its
//! operands (kernel ops, TRANSPOSE_CONV, plain data) and its output quantization
//! (requantized, shared scale, the input's, fixed).

use super::int8_params::{quantize_bias, quantize_weights};
use super::{unsupported, Exporter, Val};
use crate::error::Result;
use crate::ir::graph::NodeId;
use crate::ir::op::ModelOp;
use crate::tflite::mapping::{self, Encoded, Operands, Output, Shapes};
use crate::tflite::model::{
    pack_int4, Data, ElemType, FusedActivation, Options, QuantParams, Tensor,
};
use crate::tflite::schema::{BuiltinOperator as B, BuiltinOptions};
use crate::tflite::versions::OpSig;

impl Exporter<'_> {
    /// Writes op `id` as the builtin `code` of its mapping.
    pub(super) fn operator(
        &mut self,
        id: NodeId,
        op: &ModelOp,
        code: B,
        output: Output,
        operands: Operands,
    ) -> Result<()> {
        let input = self
            .g
            .operand(id, 0)
            .map(|x| self.shape_of(x))
            .unwrap_or_default();
        let kernel = self.g.operand(id, 1).map(|k| self.shape_of(k));
        let out = self.shape_of(id);
        let shapes = Shapes {
            input: &input,
            kernel: kernel.as_deref(),
            output: &out,
        };
        let enc = mapping::encode(op, &shapes).map_err(|e| unsupported(self.g, id, e))?;
        match (operands, output) {
            (Operands::Kernel { axis }, _) => self.kernel_op(id, code, axis, enc),
            (Operands::TransposeConv, _) => self.transpose_conv(id, enc),
            (Operands::Slope, _) => self.slope_op(id, code, enc),
            (Operands::Select, _) => self.select_op(id, code, enc),
            (Operands::Data, Output::Requantized) => self.requantized(id, code, enc, true),
            (Operands::Data, Output::RequantizedOrInput) => self.requantized(id, code, enc, false),
            (Operands::Data, Output::SharedScale) => self.shared_scale(id, code, enc),
            (Operands::Data, Output::SameScale) => self.same_scale(id, code, enc),
            (Operands::Data, Output::Fixed { scale, zero_point }) => {
                self.fixed(id, code, enc, (scale, zero_point))
            }
        }
    }

    /// The int8 kernel of operand 1: `fake_quant(@kernel)` with the axis TFLite wants.
    /// `expand_per_tensor` writes a per-tensor quantization as per-axis with the scale
    /// repeated (the same numbers; XNNPACK's int8 TRANSPOSE_CONV accepts only per-channel
    /// filters).
    /// The quantized kernel (operand 1) as a constant tensor: its index, scales, shape and
    /// element type. With `int4`, weights on a grid of at most 4 bits are stored packed as
    /// `INT4` (where the operator reads them so).
    fn kernel(
        &mut self,
        id: NodeId,
        axis: usize,
        expand_per_tensor: bool,
        int4: bool,
    ) -> Result<(usize, Vec<f32>, ElemType)> {
        let fq = self
            .g
            .operand(id, 1)
            .ok_or_else(|| unsupported(self.g, id, "the kernel operand is missing"))?;
        let q = self.g.node(fq).op.as_fake_quant().cloned().ok_or_else(|| {
            unsupported(
                self.g,
                id,
                "the kernel must be a fake_quant of a parameter (a QAT graph's weight quantizer)",
            )
        })?;
        let p = self
            .g
            .operand(fq, 0)
            .filter(|&p| self.g.node(p).op.is_param())
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
        let packed = int4 && q.bits <= 4 && qw.data.iter().all(|v| (-8..=7).contains(v));
        let mut tensor = Tensor {
            quant: Some(QuantParams {
                scale: qw.scales.clone(),
                zero_point: vec![0; qw.scales.len()],
                axis: qw.axis.unwrap_or(0),
            }),
            ..Tensor::constant(
                self.g.node(p).name.clone(),
                w.shape.clone(),
                &Data::I8(qw.data.clone()),
            )
        };
        if packed {
            tensor.dtype = ElemType::I4;
            tensor.data = Some(pack_int4(&qw.data));
        }
        let dtype = tensor.dtype;
        let t = self.push_tensor(tensor);
        Ok((t, qw.scales, dtype))
    }

    /// The int32 bias (operand 2, or zeros) for `channels` outputs.
    fn bias(
        &mut self,
        id: NodeId,
        in_scale: f32,
        w_scales: &[f32],
        channels: usize,
    ) -> Result<usize> {
        let (values, name) = match self.g.operand(id, 2) {
            Some(b) => {
                let bn = self.g.node(b);
                if !bn.op.is_param() {
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
        Ok(self.push_tensor(Tensor {
            quant: Some(QuantParams {
                zero_point: vec![0; scales.len()],
                scale: scales,
                axis: 0,
            }),
            ..Tensor::constant(name, vec![channels], &Data::I32(q))
        }))
    }

    /// An explicit conv padding that SAME/VALID cannot express: a PAD (with the input zero
    /// point, i.e. real 0.0) before the VALID conv.
    fn pad_before(&mut self, id: NodeId, x: Val, [t, b, l, r]: [usize; 4]) -> Val {
        let xs = self.shape_of(self.g.operand(id, 0).expect("verified"));
        let (xt, q, range) = Self::int8_of(x);
        let name = format!("{}/pad", self.g.node(id).name);
        let shape = vec![xs[0], xs[1] + t + b, xs[2] + l + r, xs[3]];
        let pads = [0, 0, t, b, l, r, 0, 0].map(|p| p as i32);
        let pads = self.const_i32(format!("{name}.paddings"), vec![4, 2], &pads);
        let out = self.activation_tensor(&name, &shape, ElemType::I8, Some(q));
        let options = Options::Empty(BuiltinOptions::PadOptions);
        let sig = OpSig::new(ElemType::I8, 2, 4, &options);
        self.push_op(B::PAD, sig, &[xt, pads], out, options);
        Val::Int8 {
            tensor: out,
            scale: q.0,
            zero_point: q.1,
            range: (range.0.min(q.1), range.1.max(q.1)),
        }
    }

    /// CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: `[x, kernel, bias]`.
    fn kernel_op(&mut self, id: NodeId, code: B, axis: usize, enc: Encoded) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (claimed_fq, aq) = self.require_claim(id)?;
        let out_q = aq.params();
        // LiteRT 2.3 registers INT4 filters for CONV_2D (version 7) and FULLY_CONNECTED
        // (version 10), not DEPTHWISE_CONV_2D version 7: those stay INT8 on the coarser grid
        let int4 = matches!(code, B::CONV_2D | B::FULLY_CONNECTED);
        let (w, w_scales, w_type) = self.kernel(id, axis, false, int4)?;
        let x = match enc.pad_first {
            Some(pads) => self.pad_before(id, x, pads),
            None => x,
        };
        let (xt, xq, _) = Self::int8_of(x);
        let channels = *self.g.node(id).ty.shape.last().expect("rank >= 2");
        let b = self.bias(id, xq.0, &w_scales, channels)?;
        let out = self.out_tensor(id, out_q);
        let sig = OpSig {
            weight_type: (w_type != ElemType::I8).then_some(w_type),
            ..self.int8_sig(id, 3, &enc.options)
        };
        self.push_op(code, sig, &[xt, w, b], out, enc.options);
        let range = self.act_range(id, enc.activation, out_q)?;
        self.define(id, Some((claimed_fq, aq)), out, out_q, range);
        Ok(())
    }

    /// PRELU `[x, alpha]`: the slope is the weight of operand 1, quantized per tensor.
    fn slope_op(&mut self, id: NodeId, code: B, enc: Encoded) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (claimed_fq, aq) = self.require_claim(id)?;
        let out_q = aq.params();
        let (alpha, scales, _) = self.kernel(id, 0, false, false)?;
        if scales.len() != 1 {
            return Err(unsupported(
                self.g,
                id,
                "TFLite's PRELU reads one scale for its slope: quantize alpha per tensor",
            ));
        }
        let (xt, _, _) = Self::int8_of(x);
        let out = self.out_tensor(id, out_q);
        let sig = self.int8_sig(id, 2, &enc.options);
        self.push_op(code, sig, &[xt, alpha], out, enc.options);
        self.define(id, Some((claimed_fq, aq)), out, out_q, (-128, 127));
        Ok(())
    }

    /// TRANSPOSE_CONV `[output_shape, kernel, x, bias?]`, then its activation as an
    /// operator of its own.
    fn transpose_conv(&mut self, id: NodeId, enc: Encoded) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (claimed_fq, aq) = self.require_claim(id)?;
        let out_q = aq.params();
        let (w, w_scales, _) = self.kernel(id, 0, true, false)?;
        let (xt, xq, _) = Self::int8_of(x);
        let out_shape = self.shape_of(id);
        let has_bias = self.g.operand(id, 2).is_some();
        let b = if has_bias {
            Some(self.bias(id, xq.0, &w_scales, out_shape[3])?)
        } else {
            None
        };
        let name = self.g.node(id).name.clone();
        let mut inputs = Vec::with_capacity(4);
        for c in &enc.consts {
            inputs.push(self.const_i32(format!("{name}.{}", c.what), c.shape.clone(), &c.values));
        }
        inputs.extend([w, xt]);
        inputs.extend(b);
        let act = self.g.node(id).op.activation().unwrap_or_default();
        let separate = mapping::activation_operator(act);
        let conv_name = match separate {
            None => name.clone(),
            Some(_) => format!("{name}/conv"),
        };
        let conv_out = self.activation_tensor(&conv_name, &out_shape, ElemType::I8, Some(out_q));
        let sig = OpSig {
            has_bias,
            ..self.int8_sig(id, inputs.len(), &enc.options)
        };
        self.push_op(B::TRANSPOSE_CONV, sig, &inputs, conv_out, enc.options);
        let (out, range) = match separate {
            None => (conv_out, (-128, 127)),
            Some(code) => {
                let out = self.out_tensor(id, out_q);
                let sig = self.int8_sig(id, 1, &Options::None);
                self.push_op(code, sig, &[conv_out], out, Options::None);
                (out, self.act_range(id, enc.activation, out_q)?)
            }
        };
        self.define(id, Some((claimed_fq, aq)), out, out_q, range);
        Ok(())
    }

    /// An operator that requantizes its output to the fake-quant after it (`required`), or
    /// keeps its input's quantization when none follows: the data operands, then the
    /// constants.
    fn requantized(&mut self, id: NodeId, code: B, enc: Encoded, required: bool) -> Result<()> {
        let n = self.g.operands(id).len();
        let mut data = Vec::with_capacity(n);
        for i in 0..n {
            data.push(Self::int8_of(self.operand(id, i)?));
        }
        let claimed = if required {
            Some(self.require_claim(id)?)
        } else {
            self.claim(id)?
        };
        let (_, xq, xrange) = data[0];
        let out_q = claimed.map_or(xq, |(_, aq)| aq.params());
        let name = self.g.node(id).name.clone();
        let mut inputs: Vec<usize> = data.iter().map(|d| d.0).collect();
        for c in &enc.consts {
            inputs.push(self.const_i32(format!("{name}.{}", c.what), c.shape.clone(), &c.values));
        }
        let out = self.out_tensor(id, out_q);
        let mut sig = self.int8_sig(id, inputs.len(), &enc.options);
        if let [(_, a, _), (_, b, _)] = data.as_slice() {
            sig.mul_multiplier_ge_one = a.0 * b.0 / out_q.0 >= 1.0;
        }
        // the values the operator can produce: its activation's clamp, else all of int8 once
        // requantized, else (a mean keeping its input's scale) its input's range
        let range = match (enc.activation, claimed) {
            (FusedActivation::None, Some(_)) => (-128, 127),
            (FusedActivation::None, None) => xrange,
            (a, _) => self.act_range(id, a, out_q)?,
        };
        self.push_op(code, sig, &inputs, out, enc.options);
        self.define(id, claimed, out, out_q, range);
        Ok(())
    }

    /// CONCATENATION: int8 needs one quantization for every input and the output, so an
    /// input with another one is requantized first.
    fn shared_scale(&mut self, id: NodeId, code: B, enc: Encoded) -> Result<()> {
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
            let t = if q == out_q {
                range = (range.0.min(r.0), range.1.max(r.1));
                t
            } else {
                let o = self.g.operand(id, i).expect("counted");
                let name = format!("{}/requantized", self.g.node(o).name);
                let shape = self.shape_of(o);
                let out = self.activation_tensor(&name, &shape, ElemType::I8, Some(out_q));
                let quantize = Options::Empty(BuiltinOptions::QuantizeOptions);
                let sig = self.int8_sig(o, 1, &quantize);
                self.push_op(B::QUANTIZE, sig, &[t], out, quantize);
                range = (-128, 127);
                out
            };
            tensors.push(t);
        }
        let out = self.out_tensor(id, out_q);
        let sig = self.int8_sig(id, n, &enc.options);
        self.push_op(code, sig, &tensors, out, enc.options);
        self.define(id, Some((claimed_fq, aq)), out, out_q, range);
        Ok(())
    }

    /// An operator whose output shares its input's quantization.
    fn same_scale(&mut self, id: NodeId, code: B, enc: Encoded) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (xt, q, mut range) = Self::int8_of(x);
        let in_rank = self
            .shape_of(self.g.operand(id, 0).expect("verified"))
            .len();
        let name = self.g.node(id).name.clone();
        let out = self.out_tensor(id, q);
        let mut inputs = vec![xt];
        for c in &enc.consts {
            inputs.push(self.const_i32(format!("{name}.{}", c.what), c.shape.clone(), &c.values));
        }
        if code == B::PAD {
            // the padding holds the zero point
            range = (range.0.min(q.1), range.1.max(q.1));
        }
        let sig = OpSig::new(ElemType::I8, inputs.len(), in_rank, &enc.options);
        self.push_op(code, sig, &inputs, out, enc.options);
        self.define(id, None, out, q, range);
        Ok(())
    }

    /// `thresholded_relu`: `GREATER(x, theta)` writes the condition, then
    /// `SELECT_V2(condition, x, zero point)` keeps `x` above the threshold and zero
    /// elsewhere, in the input's quantization.
    fn select_op(&mut self, id: NodeId, code: B, enc: Encoded) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (xt, q, range) = Self::int8_of(x);
        let name = self.g.node(id).name.clone();
        let shape = self.shape_of(id);
        let theta = enc
            .greater_than
            .ok_or_else(|| unsupported(self.g, id, "the threshold is missing"))?;
        let (tq, tzp) = mapping::threshold_constant(theta, q.0, q.1);
        let theta = self.push_tensor(Tensor {
            quant: Some(QuantParams::per_tensor(q.0, tzp)),
            ..Tensor::constant(format!("{name}.theta"), vec![1], &Data::I8(vec![tq]))
        });
        let cond = self.activation_tensor(&format!("{name}/greater"), &shape, ElemType::Bool, None);
        let greater = Options::Empty(BuiltinOptions::GreaterOptions);
        let sig = OpSig::new(ElemType::I8, 2, shape.len(), &greater);
        self.push_op(B::GREATER, sig, &[xt, theta], cond, greater);
        let zero = self.push_tensor(Tensor {
            quant: Some(QuantParams::per_tensor(q.0, q.1)),
            ..Tensor::constant(format!("{name}.zero"), vec![1], &Data::I8(vec![q.1 as i8]))
        });
        let out = self.out_tensor(id, q);
        let sig = OpSig::new(ElemType::Bool, 3, shape.len(), &enc.options);
        self.push_op(code, sig, &[cond, xt, zero], out, enc.options);
        self.define(id, None, out, q, (range.0.min(q.1), range.1.max(q.1)));
        Ok(())
    }

    /// An operator with TFLite's fixed output quantization `q`.
    fn fixed(&mut self, id: NodeId, code: B, enc: Encoded, q: (f32, i32)) -> Result<()> {
        let x = self.operand(id, 0)?;
        let (xt, _, _) = Self::int8_of(x);
        let out = self.out_tensor(id, q);
        let sig = self.int8_sig(id, 1, &enc.options);
        self.push_op(code, sig, &[xt], out, enc.options);
        self.define(id, None, out, q, (-128, 127));
        Ok(())
    }
}
