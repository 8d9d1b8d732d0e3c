//! Keras layers to model ops: one arm per supported class, with Keras' kernel layouts
//! converted to qatc's (TFLite's) and every refusal naming the layer, its class and what to
//! use instead.

use super::config::{Arg, LayerCfg, ModelCfg, TensorRef};
use super::weights::Weights;
use crate::ir::op::*;
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::types::TensorType;
use crate::ir::{Graph, NodeId, Op};
use serde_json::Value;
use std::collections::HashMap;

type R<T> = Result<T, String>;

/// A value flowing into a call: a graph node, or a constant of a tensor operation.
#[derive(Clone, Copy, Debug)]
enum Val {
    Node(NodeId),
    Const(f64),
}

/// Builds the graph of a Keras model, layer by layer.
pub(super) struct Emitter<'a> {
    pub g: Graph,
    pub params: ParamStore,
    weights: &'a Weights,
    /// The converted weights of each layer already emitted (shared layers reuse them).
    made: HashMap<String, Vec<NodeId>>,
    /// A Keras 2 (tf_keras) model: its `hard_sigmoid` is another formula.
    keras2: bool,
    /// Inside a nested model marked `trainable: false` (a frozen base): its weights are frozen.
    frozen_scope: bool,
}

fn num(cfg: &Value, key: &str) -> Option<f64> {
    cfg.get(key).and_then(Value::as_f64)
}

fn pair(cfg: &Value, key: &str, default: usize) -> R<[usize; 2]> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok([default, default]),
        Some(Value::Number(n)) => {
            let v = n
                .as_u64()
                .ok_or(format!("`{key}` is not a positive integer"))? as usize;
            Ok([v, v])
        }
        Some(Value::Array(a)) if a.len() == 2 => {
            let get = |i: usize| {
                a[i].as_u64()
                    .map(|v| v as usize)
                    .ok_or(format!("`{key}` is not a pair of positive integers"))
            };
            Ok([get(0)?, get(1)?])
        }
        Some(other) => Err(format!("`{key}` is {other}, expected a pair of integers")),
    }
}

/// `[[top, bottom], [left, right]]` (also `n` or `[h, w]`, as Keras accepts them).
fn pads2(cfg: &Value, key: &str) -> R<[[usize; 2]; 2]> {
    let v = cfg.get(key).ok_or(format!("`{key}` is missing"))?;
    let int = |v: &Value| v.as_u64().map(|n| n as usize);
    match v {
        Value::Number(_) => {
            let n = int(v).ok_or(format!("`{key}` is not a non-negative integer"))?;
            Ok([[n, n], [n, n]])
        }
        Value::Array(a) if a.len() == 2 && a.iter().all(Value::is_number) => {
            let h = int(&a[0]).ok_or(format!("bad `{key}`"))?;
            let w = int(&a[1]).ok_or(format!("bad `{key}`"))?;
            Ok([[h, h], [w, w]])
        }
        Value::Array(a) if a.len() == 2 => {
            let row = |r: &Value| -> R<[usize; 2]> {
                let r = r
                    .as_array()
                    .filter(|r| r.len() == 2)
                    .ok_or(format!("bad `{key}`"))?;
                Ok([
                    int(&r[0]).ok_or(format!("bad `{key}`"))?,
                    int(&r[1]).ok_or(format!("bad `{key}`"))?,
                ])
            };
            Ok([row(&a[0])?, row(&a[1])?])
        }
        other => Err(format!("`{key}` is {other}")),
    }
}

fn padding(cfg: &Value) -> R<Padding> {
    match cfg
        .get("padding")
        .and_then(Value::as_str)
        .unwrap_or("valid")
    {
        "valid" => Ok(Padding::Valid),
        "same" => Ok(Padding::Same),
        other => Err(format!(
            "padding `{other}` is not supported (use valid or same)"
        )),
    }
}

fn channels_last(cfg: &Value) -> R<()> {
    match cfg.get("data_format").and_then(Value::as_str) {
        None | Some("channels_last") => Ok(()),
        Some(f) => Err(format!(
            "data_format `{f}` is not supported: qatc is NHWC (save the model with \
             data_format=\"channels_last\")"
        )),
    }
}

fn flag(cfg: &Value, key: &str, default: bool) -> bool {
    cfg.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// The activation of a layer's `activation` argument, as ops to append (`linear`: none).
fn activation_ops(v: Option<&Value>) -> R<Vec<Op>> {
    let name = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => o
            .get("config")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .or_else(|| o.get("class_name").and_then(Value::as_str))
            .unwrap_or("?"),
        Some(other) => return Err(format!("activation {other} is not supported")),
    };
    let m = |op: ModelOp| Ok(vec![Op::Model(op)]);
    match name {
        "linear" | "identity" => Ok(Vec::new()),
        "relu" => m(ModelOp::Relu),
        "relu6" => m(ModelOp::Relu6),
        "sigmoid" => m(ModelOp::Sigmoid),
        "tanh" => m(ModelOp::Tanh),
        "softmax" => m(ModelOp::Softmax),
        "hard_silu" | "hard_swish" => m(ModelOp::HardSwish),
        "leaky_relu" => m(ModelOp::LeakyRelu { alpha: F32(0.2) }),
        other => Err(format!(
            "activation `{other}` is not supported (supported: linear, relu, relu6, sigmoid, \
             tanh, softmax, hard_silu/hard_swish, leaky_relu)"
        )),
    }
}

/// What to use instead of a class qatc does not import.
fn nearest(class: &str) -> &'static str {
    match class {
        "Lambda" => "its Python code cannot be imported: rebuild it from built-in layers",
        "Conv1D" | "Conv3D" | "MaxPooling1D" | "AveragePooling1D" => {
            "qatc's IR is 2-D (NHWC): reshape to images and use the 2D layer"
        }
        "ELU" | "Softplus" | "Swish" | "Silu" => "ReLU, LeakyReLU or hard_silu",
        "LayerNormalization" | "GroupNormalization" => "BatchNormalization",
        "Resizing" => "UpSampling2D (nearest, integer factors)",
        "Permute" => "Reshape, or a channels-last layout",
        "Average" | "Maximum" | "Minimum" => "Add followed by a Rescaling",
        "GlobalAveragePooling1D" | "GlobalMaxPooling1D" => "GlobalAveragePooling2D",
        _ => {
            "one of the supported classes: InputLayer, Conv2D, DepthwiseConv2D, \
              SeparableConv2D, Conv2DTranspose, Dense, BatchNormalization, Activation, ReLU, \
              ThresholdedReLU, LeakyReLU, PReLU, Add, Subtract, Multiply, Concatenate, MaxPooling2D, \
              AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Reshape, \
              ZeroPadding2D, Cropping2D, UpSampling2D, Dropout, Rescaling, Normalization"
        }
    }
}

/// Keras `[kh, kw, in, out]` to `[out, kh, kw, in]` (also `[kh, kw, out, in]` of a transposed
/// convolution to `[out, kh, kw, in]`: the same permutation of the last axis to the front).
fn last_axis_first(t: &Tensor) -> Tensor {
    let s = &t.shape;
    let (kh, kw, a, b) = (s[0], s[1], s[2], s[3]);
    let mut out = vec![0.0; t.data.len()];
    for o in 0..b {
        for h in 0..kh {
            for w in 0..kw {
                for i in 0..a {
                    out[((o * kh + h) * kw + w) * a + i] = t.data[((h * kw + w) * a + i) * b + o];
                }
            }
        }
    }
    Tensor::new(vec![b, kh, kw, a], out)
}

/// Keras' transposed-conv kernel `[kh, kw, out, in]` to `[out, kh, kw, in]`.
fn transpose_conv_kernel(t: &Tensor) -> Tensor {
    let s = &t.shape;
    let (kh, kw, o_n, i_n) = (s[0], s[1], s[2], s[3]);
    let mut out = vec![0.0; t.data.len()];
    for o in 0..o_n {
        for h in 0..kh {
            for w in 0..kw {
                for i in 0..i_n {
                    out[((o * kh + h) * kw + w) * i_n + i] =
                        t.data[((h * kw + w) * o_n + o) * i_n + i];
                }
            }
        }
    }
    Tensor::new(vec![o_n, kh, kw, i_n], out)
}

/// Dense `[in, out]` to `[out, in]`.
fn transpose2(t: &Tensor) -> Tensor {
    let (i_n, o_n) = (t.shape[0], t.shape[1]);
    let mut out = vec![0.0; t.data.len()];
    for i in 0..i_n {
        for o in 0..o_n {
            out[o * i_n + i] = t.data[i * o_n + o];
        }
    }
    Tensor::new(vec![o_n, i_n], out)
}

fn want_rank(t: &Tensor, rank: usize, what: &str) -> R<()> {
    if t.shape.len() != rank {
        return Err(format!(
            "{what} has shape {:?}, expected rank {rank}",
            t.shape
        ));
    }
    Ok(())
}

impl<'a> Emitter<'a> {
    pub fn new(name: &str, weights: &'a Weights, keras2: bool) -> Emitter<'a> {
        Emitter {
            g: Graph::new(name),
            params: ParamStore::new(),
            weights,
            made: HashMap::new(),
            keras2,
            frozen_scope: false,
        }
    }

    fn shape(&self, x: NodeId) -> Vec<usize> {
        self.g.node(x).ty.shape.clone()
    }

    fn op(&mut self, op: ModelOp, name: &str, operands: &[NodeId]) -> R<NodeId> {
        let name = self.g.unique_name(name);
        self.g
            .add(Op::Model(op), name, operands)
            .map_err(|e| e.to_string())
    }

    fn param(&mut self, name: &str, t: Tensor) -> R<NodeId> {
        let name = self.g.unique_name(name);
        let ty = TensorType::f32(t.shape.clone());
        self.params.insert(name.clone(), t);
        self.g.param(name, ty).map_err(|e| e.to_string())
    }

    /// The layer's weights as params (created once per layer, reused by its later calls).
    fn weights(
        &mut self,
        layer: &LayerCfg,
        base: &str,
        names: &[&str],
        convert: impl Fn(usize, Tensor) -> R<Tensor>,
    ) -> R<Vec<NodeId>> {
        let key = format!(
            "{}|{}|{}",
            layer.keras3_path.as_deref().unwrap_or(""),
            layer.h5_group,
            layer.name
        );
        if let Some(ids) = self.made.get(&key) {
            return Ok(ids.clone());
        }
        let raw = self.weights.vars(layer, names)?;
        let frozen = self.frozen_scope || !flag(&layer.config, "trainable", true);
        let mut ids = Vec::with_capacity(raw.len());
        for (i, (t, n)) in raw.into_iter().zip(names).enumerate() {
            let t = convert(i, t).map_err(|m| format!("weight `{n}`: {m}"))?;
            let id = if frozen {
                self.constant(&format!("{base}.{n}"), t)?
            } else {
                self.param(&format!("{base}.{n}"), t)?
            };
            ids.push(id);
        }
        self.made.insert(key, ids.clone());
        Ok(ids)
    }

    fn then_activation(&mut self, x: NodeId, base: &str, act: Option<&Value>) -> R<NodeId> {
        if act.and_then(Value::as_str) == Some("hard_sigmoid") {
            return self.hard_sigmoid(x, base);
        }
        let mut y = x;
        for op in activation_ops(act)? {
            let name = format!("{base}.{}", op.name());
            let name = self.g.unique_name(&name);
            y = self.g.add(op, name, &[y]).map_err(|e| e.to_string())?;
        }
        Ok(y)
    }

    /// Keras 3's `hard_sigmoid`, `relu6(x + 3) / 6`; tf_keras' is `relu6(1.2·x + 3) / 6`
    /// (`clip(0.2·x + 0.5, 0, 1)`).
    fn hard_sigmoid(&mut self, x: NodeId, base: &str) -> R<NodeId> {
        let none = Activation::None;
        let x = if self.keras2 {
            let k = self.scalar(&format!("{base}.slope"), 1.2)?;
            self.op(
                ModelOp::Mul { activation: none },
                &format!("{base}.scaled"),
                &[x, k],
            )?
        } else {
            x
        };
        let three = self.scalar(&format!("{base}.shift"), 3.0)?;
        let r = self.op(
            ModelOp::Add {
                activation: Activation::Relu6,
            },
            &format!("{base}.relu6"),
            &[x, three],
        )?;
        let sixth = self.scalar(&format!("{base}.sixth"), 1.0 / 6.0)?;
        self.op(ModelOp::Mul { activation: none }, base, &[r, sixth])
    }

    /// A constant of the model (a preprocessing factor, an operand of tensor arithmetic):
    /// a frozen param, so training leaves it as Keras does.
    fn constant(&mut self, name: &str, t: Tensor) -> R<NodeId> {
        let id = self.param(name, t)?;
        let name = self.g.node(id).name.clone();
        self.g.freeze(&name).map_err(|e| e.to_string())?;
        Ok(id)
    }

    fn scalar(&mut self, name: &str, v: f64) -> R<NodeId> {
        self.constant(name, Tensor::scalar(v as f32))
    }

    /// Keras' `ReLU(max_value=m, negative_slope=s, threshold=t)` with `t != 0`, as Keras
    /// computes it: `y = x * (x > t)`, then `clip(y, 0, m)`, then `y - s * relu(t - x)`.
    fn relu_with_threshold(
        &mut self,
        x: NodeId,
        base: &str,
        t: f64,
        max: Option<f64>,
        slope: f64,
    ) -> R<NodeId> {
        let none = Activation::None;
        // the last op gets the layer's name
        let last_is = |step: &str| match (max, slope != 0.0) {
            (_, true) => step == "negative",
            (Some(_), false) => step == "clip",
            (None, false) => step == "step",
        };
        let name = |step: &str| {
            if last_is(step) {
                base.to_string()
            } else {
                format!("{base}.{step}")
            }
        };
        let theta = F32(t as f32);
        let mut y = self.op(ModelOp::ThresholdedRelu { theta }, &name("step"), &[x])?;
        if let Some(m) = max {
            if t < 0.0 {
                // values between t and 0 pass the step; the clip takes them to 0
                y = self.op(ModelOp::Relu, &format!("{base}.clip_low"), &[y])?;
            }
            // min(y, m) = y - relu(y - m)
            let mc = self.scalar(&format!("{base}.max_value"), m)?;
            let over = ModelOp::Sub {
                activation: Activation::Relu,
            };
            let over = self.op(over, &format!("{base}.over"), &[y, mc])?;
            y = self.op(ModelOp::Sub { activation: none }, &name("clip"), &[y, over])?;
        }
        if slope != 0.0 {
            let tc = self.scalar(&format!("{base}.threshold"), t)?;
            let below = ModelOp::Sub {
                activation: Activation::Relu,
            };
            let below = self.op(below, &format!("{base}.below"), &[tc, x])?;
            let sc = self.scalar(&format!("{base}.negative_slope"), slope)?;
            let mul = ModelOp::Mul { activation: none };
            let scaled = self.op(mul, &format!("{base}.scaled"), &[below, sc])?;
            y = self.op(
                ModelOp::Sub { activation: none },
                &name("negative"),
                &[y, scaled],
            )?;
        }
        Ok(y)
    }

    /// Calls a model on `inputs` (graph nodes); returns its outputs. `prefix` names its nodes.
    pub fn call_model(&mut self, m: &ModelCfg, inputs: &[NodeId], prefix: &str) -> R<Vec<NodeId>> {
        if m.sequential {
            let mut x = *inputs
                .first()
                .ok_or("a Sequential model called without input")?;
            for l in m.layers.iter().filter(|l| l.class != "InputLayer") {
                x = self
                    .layer(l, &[Val::Node(x)], prefix, m)
                    .map_err(|e| format!("layer `{}` ({}): {e}", l.name, l.class))?;
            }
            return Ok(vec![x]);
        }
        let mut vals: HashMap<TensorRef, NodeId> = HashMap::new();
        if m.inputs.len() != inputs.len() {
            return Err(format!(
                "model `{}` takes {} inputs, called with {}",
                m.name,
                m.inputs.len(),
                inputs.len()
            ));
        }
        for (r, &x) in m.inputs.iter().zip(inputs) {
            vals.insert(
                TensorRef {
                    node: 0,
                    ..r.clone()
                },
                x,
            );
        }
        let resolve = |vals: &HashMap<TensorRef, NodeId>, r: &TensorRef| -> Option<NodeId> {
            let offset = if m.keras2 {
                m.layers
                    .iter()
                    .find(|l| l.name == r.layer)
                    .and_then(|l| l.nested.as_ref())
                    .map_or(0, |n| n.keras2_offset())
            } else {
                0
            };
            vals.get(&TensorRef {
                layer: r.layer.clone(),
                node: r.node.checked_sub(offset)?,
                tensor: r.tensor,
            })
            .copied()
        };
        let mut done: Vec<Vec<bool>> = m
            .layers
            .iter()
            .map(|l| vec![false; l.calls.len()])
            .collect();
        loop {
            let mut progress = false;
            for (li, l) in m.layers.iter().enumerate() {
                for (ci, call) in l.calls.iter().enumerate() {
                    if done[li][ci] || l.class == "InputLayer" {
                        continue;
                    }
                    let args: Option<Vec<Val>> = call
                        .iter()
                        .map(|a| match a {
                            Arg::Tensor(r) => resolve(&vals, r).map(Val::Node),
                            Arg::Const(c) => Some(Val::Const(*c)),
                        })
                        .collect();
                    let Some(args) = args else { continue };
                    let y = self
                        .layer(l, &args, prefix, m)
                        .map_err(|e| format!("layer `{}` ({}): {e}", l.name, l.class))?;
                    vals.insert(
                        TensorRef {
                            layer: l.name.clone(),
                            node: ci,
                            tensor: 0,
                        },
                        y,
                    );
                    done[li][ci] = true;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        m.outputs
            .iter()
            .map(|r| {
                resolve(&vals, r).ok_or_else(|| {
                    format!(
                        "model `{}`: output `{}` (node {}) is not computed from the inputs",
                        m.name, r.layer, r.node
                    )
                })
            })
            .collect()
    }

    /// Emits one call of a layer.
    fn layer(&mut self, l: &LayerCfg, args: &[Val], prefix: &str, _m: &ModelCfg) -> R<NodeId> {
        let cfg = &l.config;
        let base = format!("{prefix}{}", l.name);
        let nodes: Vec<NodeId> = args
            .iter()
            .filter_map(|a| match a {
                Val::Node(n) => Some(*n),
                Val::Const(_) => None,
            })
            .collect();
        let x = || {
            nodes
                .first()
                .copied()
                .ok_or("the layer has no input tensor".to_string())
        };
        if l.module.starts_with("keras.src.ops") || l.class == "TFOpLambda" {
            return self.tensor_op(l, args, &base);
        }
        match l.class.as_str() {
            "Functional" | "Sequential" | "Model" => {
                let inner = l
                    .nested
                    .as_ref()
                    .ok_or("a nested model without its config")?;
                let outer = self.frozen_scope;
                self.frozen_scope |= !flag(cfg, "trainable", true);
                let outs = self.call_model(inner, &nodes, &format!("{base}/"));
                self.frozen_scope = outer;
                let outs = outs?;
                match outs.as_slice() {
                    [y] => Ok(*y),
                    _ => Err("nested models with several outputs are not supported".into()),
                }
            }
            "Conv2D" => {
                channels_last(cfg)?;
                let x = x()?;
                let groups = num(cfg, "groups").unwrap_or(1.0) as usize;
                let use_bias = flag(cfg, "use_bias", true);
                let names: &[&str] = if use_bias {
                    &["kernel", "bias"]
                } else {
                    &["kernel"]
                };
                let conv = ConvAttrs {
                    stride: pair(cfg, "strides", 1)?,
                    padding: padding(cfg)?,
                    dilation: pair(cfg, "dilation_rate", 1)?,
                    activation: Activation::None,
                };
                let y = if groups <= 1 {
                    let w = self.weights(l, &base, names, |i, t| {
                        if i == 0 {
                            want_rank(&t, 4, "the kernel")?;
                            Ok(last_axis_first(&t))
                        } else {
                            Ok(t)
                        }
                    })?;
                    let ops: Vec<NodeId> = [x].into_iter().chain(w).collect();
                    self.op(ModelOp::Conv2d(conv), &base, &ops)?
                } else {
                    self.grouped_conv(l, x, names, groups, conv, &base)?
                };
                self.then_activation(y, &base, cfg.get("activation"))
            }
            "DepthwiseConv2D" => {
                channels_last(cfg)?;
                let use_bias = flag(cfg, "use_bias", true);
                let names: &[&str] = if use_bias {
                    &["kernel", "bias"]
                } else {
                    &["kernel"]
                };
                let w = self.weights(l, &base, names, |i, t| {
                    if i == 0 {
                        want_rank(&t, 4, "the kernel")?;
                        let s = &t.shape;
                        Ok(Tensor::new(vec![1, s[0], s[1], s[2] * s[3]], t.data))
                    } else {
                        Ok(t)
                    }
                })?;
                let conv = ConvAttrs {
                    stride: pair(cfg, "strides", 1)?,
                    padding: padding(cfg)?,
                    dilation: pair(cfg, "dilation_rate", 1)?,
                    activation: Activation::None,
                };
                let ops: Vec<NodeId> = [x()?].into_iter().chain(w).collect();
                let y = self.op(ModelOp::DepthwiseConv2d(conv), &base, &ops)?;
                self.then_activation(y, &base, cfg.get("activation"))
            }
            "SeparableConv2D" => {
                channels_last(cfg)?;
                let use_bias = flag(cfg, "use_bias", true);
                let names: &[&str] = if use_bias {
                    &["depthwise_kernel", "pointwise_kernel", "bias"]
                } else {
                    &["depthwise_kernel", "pointwise_kernel"]
                };
                let w = self.weights(l, &base, names, |i, t| match i {
                    0 => {
                        want_rank(&t, 4, "the depthwise kernel")?;
                        let s = &t.shape;
                        Ok(Tensor::new(vec![1, s[0], s[1], s[2] * s[3]], t.data))
                    }
                    1 => {
                        want_rank(&t, 4, "the pointwise kernel")?;
                        Ok(last_axis_first(&t))
                    }
                    _ => Ok(t),
                })?;
                let dw = ConvAttrs {
                    stride: pair(cfg, "strides", 1)?,
                    padding: padding(cfg)?,
                    dilation: pair(cfg, "dilation_rate", 1)?,
                    activation: Activation::None,
                };
                let d = self.op(
                    ModelOp::DepthwiseConv2d(dw),
                    &format!("{base}/depthwise"),
                    &[x()?, w[0]],
                )?;
                let mut ops = vec![d, w[1]];
                ops.extend(w.get(2));
                let y = self.op(ModelOp::Conv2d(ConvAttrs::default()), &base, &ops)?;
                self.then_activation(y, &base, cfg.get("activation"))
            }
            "Conv2DTranspose" => {
                channels_last(cfg)?;
                if !matches!(cfg.get("output_padding"), None | Some(Value::Null)) {
                    return Err("output_padding is not supported (leave it None)".into());
                }
                if pair(cfg, "dilation_rate", 1)? != [1, 1] {
                    return Err("a dilated Conv2DTranspose has no TFLite form".into());
                }
                let use_bias = flag(cfg, "use_bias", true);
                let names: &[&str] = if use_bias {
                    &["kernel", "bias"]
                } else {
                    &["kernel"]
                };
                let w = self.weights(l, &base, names, |i, t| {
                    if i == 0 {
                        want_rank(&t, 4, "the kernel")?;
                        Ok(transpose_conv_kernel(&t))
                    } else {
                        Ok(t)
                    }
                })?;
                let conv = ConvAttrs {
                    stride: pair(cfg, "strides", 1)?,
                    padding: padding(cfg)?,
                    dilation: [1, 1],
                    activation: Activation::None,
                };
                let ops: Vec<NodeId> = [x()?].into_iter().chain(w).collect();
                let y = self.op(ModelOp::Conv2dTranspose(conv), &base, &ops)?;
                self.then_activation(y, &base, cfg.get("activation"))
            }
            "Dense" => {
                let mut x = x()?;
                let rank = self.shape(x).len();
                if !(2..=4).contains(&rank) {
                    return Err(format!(
                        "Dense on a rank-{rank} input (it acts on the last axis only) is not \
                         supported: flatten or pool first"
                    ));
                }
                // on a sequence [n, t, c], Dense is a 1x1 convolution of the image [n, 1, t, c]
                let sequence = self.shape(x)[1..].to_vec();
                if rank == 3 {
                    let shape = [1, sequence[0] as i64, sequence[1] as i64].to_vec();
                    let op = ModelOp::Reshape { shape };
                    x = self.op(op, &format!("{base}.to_image"), &[x])?;
                }
                let use_bias = flag(cfg, "use_bias", true);
                let names: &[&str] = if use_bias {
                    &["kernel", "bias"]
                } else {
                    &["kernel"]
                };
                // on an image, Dense is a 1x1 convolution over the channels
                let w = self.weights(l, &base, names, |i, t| {
                    if i == 0 {
                        want_rank(&t, 2, "the kernel")?;
                        let k = transpose2(&t);
                        Ok(if rank >= 3 {
                            Tensor::new(vec![k.shape[0], 1, 1, k.shape[1]], k.data)
                        } else {
                            k
                        })
                    } else {
                        Ok(t)
                    }
                })?;
                let ops: Vec<NodeId> = [x].into_iter().chain(w).collect();
                let op = if rank >= 3 {
                    ModelOp::Conv2d(ConvAttrs::default())
                } else {
                    ModelOp::Dense {
                        activation: Activation::None,
                    }
                };
                let mut y = self.op(op, &base, &ops)?;
                if rank == 3 {
                    let units = *self.shape(y).last().ok_or("the Dense output has no axes")?;
                    let shape = [sequence[0] as i64, units as i64].to_vec();
                    let op = ModelOp::Reshape { shape };
                    y = self.op(op, &format!("{base}.to_sequence"), &[y])?;
                }
                self.then_activation(y, &base, cfg.get("activation"))
            }
            "BatchNormalization" => {
                let x = x()?;
                let rank = self.shape(x).len();
                let axis_ok = match cfg.get("axis") {
                    None => true,
                    Some(Value::Number(n)) => {
                        let a = n.as_i64().unwrap_or(0);
                        a == -1 || a == rank as i64 - 1
                    }
                    Some(Value::Array(a)) => {
                        a.len() == 1
                            && a[0]
                                .as_i64()
                                .is_some_and(|v| v == -1 || v == rank as i64 - 1)
                    }
                    Some(_) => false,
                };
                if !axis_ok {
                    return Err(
                        "BatchNormalization is supported over the last (channel) axis only".into(),
                    );
                }
                let (scale, center) = (flag(cfg, "scale", true), flag(cfg, "center", true));
                let mut names = Vec::new();
                if scale {
                    names.push("gamma");
                }
                if center {
                    names.push("beta");
                }
                names.extend(["moving_mean", "moving_variance"]);
                let w = self.weights(l, &base, &names, |_, t| Ok(t))?;
                let c = *self.shape(x).last().unwrap_or(&0);
                let mut it = w.into_iter();
                let gamma = if scale {
                    it.next().ok_or("gamma missing")?
                } else {
                    self.param(&format!("{base}.gamma"), Tensor::full(vec![c], 1.0))?
                };
                let beta = if center {
                    it.next().ok_or("beta missing")?
                } else {
                    self.param(&format!("{base}.beta"), Tensor::zeros(vec![c]))?
                };
                let mean = it.next().ok_or("moving_mean missing")?;
                let var = it.next().ok_or("moving_variance missing")?;
                let op = ModelOp::BatchNorm {
                    epsilon: F32(num(cfg, "epsilon").unwrap_or(1e-3) as f32),
                    momentum: F32(num(cfg, "momentum").unwrap_or(0.99) as f32),
                };
                self.op(op, &base, &[x, gamma, beta, mean, var])
            }
            "Activation" => {
                if cfg.get("activation").and_then(Value::as_str) == Some("hard_sigmoid") {
                    return self.hard_sigmoid(x()?, &base);
                }
                let ops = activation_ops(cfg.get("activation"))?;
                let mut y = x()?;
                for op in ops {
                    let name = self.g.unique_name(&base);
                    y = self.g.add(op, name, &[y]).map_err(|e| e.to_string())?;
                }
                Ok(y)
            }
            "ReLU" => {
                let max = num(cfg, "max_value");
                let slope = num(cfg, "negative_slope").unwrap_or(0.0);
                let threshold = num(cfg, "threshold").unwrap_or(0.0);
                let x = x()?;
                if threshold != 0.0 {
                    return self.relu_with_threshold(x, &base, threshold, max, slope);
                }
                match (max, slope) {
                    (Some(m), s) if m == 6.0 && s == 0.0 => self.op(ModelOp::Relu6, &base, &[x]),
                    (max, s) => {
                        let op = if s == 0.0 {
                            ModelOp::Relu
                        } else {
                            ModelOp::LeakyRelu {
                                alpha: F32(s as f32),
                            }
                        };
                        let Some(m) = max else {
                            return self.op(op, &base, &[x]);
                        };
                        // min(y, m) = y - relu(y - m)
                        let y = self.op(op, &format!("{base}.relu"), &[x])?;
                        let mc = self.scalar(&format!("{base}.max_value"), m)?;
                        let none = Activation::None;
                        let over = self.op(
                            ModelOp::Sub {
                                activation: Activation::Relu,
                            },
                            &format!("{base}.over"),
                            &[y, mc],
                        )?;
                        self.op(ModelOp::Sub { activation: none }, &base, &[y, over])
                    }
                }
            }
            // tf_keras' `ThresholdedReLU(theta)`: `x * (x > theta)`
            "ThresholdedReLU" => {
                let theta = num(cfg, "theta").unwrap_or(1.0);
                let op = ModelOp::ThresholdedRelu {
                    theta: F32(theta as f32),
                };
                self.op(op, &base, &[x()?])
            }
            "LeakyReLU" => {
                let a = num(cfg, "negative_slope")
                    .or_else(|| num(cfg, "alpha"))
                    .unwrap_or(0.3);
                self.op(
                    ModelOp::LeakyRelu {
                        alpha: F32(a as f32),
                    },
                    &base,
                    &[x()?],
                )
            }
            "PReLU" => {
                let x = x()?;
                let per_sample = self.shape(x)[1..].to_vec();
                let w = self.weights(l, &base, &["alpha"], |_, t| {
                    if t.shape.len() > per_sample.len() {
                        return Err(format!(
                            "alpha {:?} does not fit one sample {per_sample:?}",
                            t.shape
                        ));
                    }
                    Ok(t)
                })?;
                self.op(ModelOp::PRelu, &base, &[x, w[0]])
            }
            "Add" | "Subtract" | "Multiply" => {
                if nodes.len() < 2 {
                    return Err("a merge layer needs at least two inputs".into());
                }
                if l.class == "Subtract" && nodes.len() != 2 {
                    return Err("Subtract takes exactly two inputs".into());
                }
                let make = |a| match l.class.as_str() {
                    "Add" => ModelOp::Add { activation: a },
                    "Subtract" => ModelOp::Sub { activation: a },
                    _ => ModelOp::Mul { activation: a },
                };
                let mut y = nodes[0];
                for (i, &n) in nodes.iter().enumerate().skip(1) {
                    let name = if i + 1 == nodes.len() {
                        base.clone()
                    } else {
                        format!("{base}.{i}")
                    };
                    y = self.op(make(Activation::None), &name, &[y, n])?;
                }
                Ok(y)
            }
            "Concatenate" => {
                let rank = self.shape(x()?).len() as i64;
                let a = cfg.get("axis").and_then(Value::as_i64).unwrap_or(-1);
                let axis = if a < 0 { a + rank } else { a };
                if !(1..rank).contains(&axis) {
                    return Err(format!(
                        "axis {a} is not a non-batch axis of a rank-{rank} tensor"
                    ));
                }
                self.op(
                    ModelOp::Concat {
                        axis: axis as usize,
                    },
                    &base,
                    &nodes,
                )
            }
            "MaxPooling2D" | "AveragePooling2D" => {
                channels_last(cfg)?;
                let size = pair(cfg, "pool_size", 2)?;
                let stride = match cfg.get("strides") {
                    None | Some(Value::Null) => size,
                    _ => pair(cfg, "strides", 1)?,
                };
                let p = PoolAttrs {
                    size,
                    stride,
                    padding: padding(cfg)?,
                };
                let op = if l.class == "MaxPooling2D" {
                    ModelOp::MaxPool2d(p)
                } else {
                    ModelOp::AvgPool2d(p)
                };
                self.op(op, &base, &[x()?])
            }
            "GlobalAveragePooling2D" | "GlobalMaxPooling2D" => {
                channels_last(cfg)?;
                let keepdims = flag(cfg, "keepdims", false);
                let op = if l.class == "GlobalAveragePooling2D" {
                    ModelOp::GlobalAvgPool { keepdims }
                } else {
                    ModelOp::GlobalMaxPool { keepdims }
                };
                self.op(op, &base, &[x()?])
            }
            "Flatten" => self.op(ModelOp::Flatten, &base, &[x()?]),
            "Reshape" => {
                let shape: Vec<i64> = cfg
                    .get("target_shape")
                    .and_then(Value::as_array)
                    .ok_or("`target_shape` is missing")?
                    .iter()
                    .map(|d| d.as_i64().ok_or("`target_shape` holds a non-integer"))
                    .collect::<Result<_, _>>()?;
                self.op(ModelOp::Reshape { shape }, &base, &[x()?])
            }
            "ZeroPadding2D" => {
                channels_last(cfg)?;
                let p = pads2(cfg, "padding")?;
                self.op(
                    ModelOp::Pad {
                        pads: vec![[0, 0], p[0], p[1], [0, 0]],
                    },
                    &base,
                    &[x()?],
                )
            }
            "Cropping2D" => {
                channels_last(cfg)?;
                let c = pads2(cfg, "cropping")?;
                self.op(
                    ModelOp::Crop {
                        crops: vec![[0, 0], c[0], c[1], [0, 0]],
                    },
                    &base,
                    &[x()?],
                )
            }
            "UpSampling2D" => {
                channels_last(cfg)?;
                match cfg
                    .get("interpolation")
                    .and_then(Value::as_str)
                    .unwrap_or("nearest")
                {
                    "nearest" => {}
                    other => {
                        return Err(format!(
                            "interpolation `{other}` is not supported (use nearest)"
                        ))
                    }
                }
                let scale = pair(cfg, "size", 2)?;
                self.op(ModelOp::UpsampleNearest { scale }, &base, &[x()?])
            }
            "Dropout" => {
                let rate = num(cfg, "rate").unwrap_or(0.0) as f32;
                self.op(ModelOp::Dropout { rate: F32(rate) }, &base, &[x()?])
            }
            "Rescaling" => {
                let x = x()?;
                let scale =
                    self.broadcast_param(cfg.get("scale"), 1.0, &format!("{base}.scale"))?;
                let y = match scale {
                    Some(s) => self.op(
                        ModelOp::Mul {
                            activation: Activation::None,
                        },
                        &base,
                        &[x, s],
                    )?,
                    None => x,
                };
                match self.broadcast_param(cfg.get("offset"), 0.0, &format!("{base}.offset"))? {
                    Some(o) => self.op(
                        ModelOp::Add {
                            activation: Activation::None,
                        },
                        &format!("{base}.add"),
                        &[y, o],
                    ),
                    None => Ok(y),
                }
            }
            "Normalization" => self.normalization(l, x()?, &base),
            "InputLayer" => Err("an InputLayer cannot be called".into()),
            other => Err(format!(
                "class `{other}` is not supported; {}",
                nearest(other)
            )),
        }
    }

    /// A Rescaling factor: a scalar or per-channel param, `None` when it is the identity.
    fn broadcast_param(
        &mut self,
        v: Option<&Value>,
        identity: f64,
        name: &str,
    ) -> R<Option<NodeId>> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(identity);
                if f == identity {
                    Ok(None)
                } else {
                    Ok(Some(self.scalar(name, f)?))
                }
            }
            Some(Value::Array(a)) => {
                let vals: Vec<f32> = a
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32).ok_or("a non-number"))
                    .collect::<Result<_, _>>()?;
                Ok(Some(
                    self.constant(name, Tensor::new(vec![vals.len()], vals))?,
                ))
            }
            Some(other) => Err(format!("{other} is not a number or a list of numbers")),
        }
    }

    /// Keras' Normalization: `(x - mean) / max(sqrt(variance), 1e-7)` over the last axis.
    fn normalization(&mut self, l: &LayerCfg, x: NodeId, base: &str) -> R<NodeId> {
        let cfg = &l.config;
        if flag(cfg, "invert", false) {
            return Err("an inverting Normalization is not supported".into());
        }
        let c = *self.shape(x).last().unwrap_or(&0);
        let flat = |v: &Value| -> Vec<f32> {
            fn walk(v: &Value, out: &mut Vec<f32>) {
                match v {
                    Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                    Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN) as f32),
                    _ => {}
                }
            }
            let mut out = Vec::new();
            walk(v, &mut out);
            out
        };
        let (mean, var) = match (cfg.get("mean"), cfg.get("variance")) {
            (Some(m), Some(v)) if !m.is_null() && !v.is_null() => (flat(m), flat(v)),
            _ => {
                let raw = self.weights.vars(l, &["mean", "variance", "count"])?;
                (raw[0].data.clone(), raw[1].data.clone())
            }
        };
        let widen = |v: Vec<f32>| -> R<Vec<f32>> {
            match v.len() {
                1 => Ok(vec![v[0]; c]),
                n if n == c => Ok(v),
                n => Err(format!("{n} statistics for {c} channels")),
            }
        };
        let (mean, var) = (widen(mean)?, widen(var)?);
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / v.sqrt().max(1e-7)).collect();
        let m = self.constant(&format!("{base}.mean"), Tensor::new(vec![c], mean))?;
        let s = self.constant(&format!("{base}.inv_std"), Tensor::new(vec![c], inv))?;
        let centered = self.op(
            ModelOp::Sub {
                activation: Activation::None,
            },
            &format!("{base}.center"),
            &[x, m],
        )?;
        self.op(
            ModelOp::Mul {
                activation: Activation::None,
            },
            base,
            &[centered, s],
        )
    }

    /// Tensor arithmetic recorded as a Keras 3 operation or a tf_keras `TFOpLambda`:
    /// `+ - * /` of two tensors or of a tensor and a constant.
    fn tensor_op(&mut self, l: &LayerCfg, args: &[Val], base: &str) -> R<NodeId> {
        let f = if l.class == "TFOpLambda" {
            l.config
                .get("function")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        } else {
            l.class.clone()
        };
        let kind = match f.as_str() {
            "Add" | "__operators__.add" | "math.add" => "add",
            "Subtract" | "math.subtract" | "__operators__.sub" => "sub",
            "Multiply" | "math.multiply" | "__operators__.mul" => "mul",
            "TrueDivide" | "Divide" | "math.truediv" | "math.divide" | "__operators__.truediv" => {
                "div"
            }
            other => {
                return Err(format!(
                    "the tensor operation `{other}` is not supported (supported: + - * / with a \
                     tensor or a constant); use a layer instead"
                ))
            }
        };
        let [a, b] = args else {
            return Err(format!(
                "`{f}` with {} operands is not supported",
                args.len()
            ));
        };
        let none = Activation::None;
        let operand = |v: &Val, this: &mut Self, div: bool| -> R<NodeId> {
            match *v {
                Val::Node(n) => Ok(n),
                Val::Const(c) => {
                    this.scalar(&format!("{base}.const"), if div { 1.0 / c } else { c })
                }
            }
        };
        match kind {
            "div" => {
                let Val::Const(_) = b else {
                    return Err("division by a tensor is not supported".into());
                };
                let x = operand(a, self, false)?;
                let y = operand(b, self, true)?;
                self.op(ModelOp::Mul { activation: none }, base, &[x, y])
            }
            _ => {
                let x = operand(a, self, false)?;
                let y = operand(b, self, false)?;
                let op = match kind {
                    "add" => ModelOp::Add { activation: none },
                    "sub" => ModelOp::Sub { activation: none },
                    _ => ModelOp::Mul { activation: none },
                };
                self.op(op, base, &[x, y])
            }
        }
    }

    /// A grouped convolution as one convolution per group: slice the input channels, convolve,
    /// concatenate (exact, and every piece is a plain CONV_2D that every TFLite runtime has).
    fn grouped_conv(
        &mut self,
        l: &LayerCfg,
        x: NodeId,
        names: &[&str],
        groups: usize,
        conv: ConvAttrs,
        base: &str,
    ) -> R<NodeId> {
        let cin = *self.shape(x).last().unwrap_or(&0);
        let key = format!(
            "{}|{}|{}|grouped",
            l.keras3_path.as_deref().unwrap_or(""),
            l.h5_group,
            l.name
        );
        let ids = match self.made.get(&key) {
            Some(ids) => ids.clone(),
            None => {
                let raw = self.weights.vars(l, names)?;
                want_rank(&raw[0], 4, "the kernel")?;
                let k = last_axis_first(&raw[0]);
                let cout = k.shape[0];
                if !cin.is_multiple_of(groups)
                    || !cout.is_multiple_of(groups)
                    || k.shape[3] * groups != cin
                {
                    return Err(format!(
                        "groups={groups} does not divide {cin} input and {cout} output channels"
                    ));
                }
                let go = cout / groups;
                let per_out: usize = k.shape[1..].iter().product();
                let mut ids = Vec::new();
                for gidx in 0..groups {
                    let kg = Tensor::new(
                        vec![go, k.shape[1], k.shape[2], k.shape[3]],
                        k.data[gidx * go * per_out..(gidx + 1) * go * per_out].to_vec(),
                    );
                    ids.push(self.param(&format!("{base}/group{gidx}.kernel"), kg)?);
                    if let Some(b) = raw.get(1) {
                        let bg = Tensor::new(vec![go], b.data[gidx * go..(gidx + 1) * go].to_vec());
                        ids.push(self.param(&format!("{base}/group{gidx}.bias"), bg)?);
                    }
                }
                self.made.insert(key, ids.clone());
                ids
            }
        };
        let per_group = ids.len() / groups;
        let gi = cin / groups;
        let mut outs = Vec::with_capacity(groups);
        for gidx in 0..groups {
            let xs = self.op(
                ModelOp::Crop {
                    crops: vec![[0, 0], [0, 0], [0, 0], [gidx * gi, cin - (gidx + 1) * gi]],
                },
                &format!("{base}/group{gidx}/input"),
                &[x],
            )?;
            let mut ops = vec![xs];
            ops.extend_from_slice(&ids[gidx * per_group..(gidx + 1) * per_group]);
            outs.push(self.op(
                ModelOp::Conv2d(conv.clone()),
                &format!("{base}/group{gidx}"),
                &ops,
            )?);
        }
        self.op(ModelOp::Concat { axis: 3 }, base, &outs)
    }
}
