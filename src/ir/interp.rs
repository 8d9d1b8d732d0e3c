//! The f32 reference interpreter: plain, obviously-correct loops for every op. It is the
//! oracle the JIT and the exporter are checked against, so it favours clarity over speed.
//!
//! Shapes come from the values actually fed (any batch size), re-inferred node by node.

use super::graph::{Graph, NodeId};
use super::infer::{conv_axis, conv_transpose_axis, infer_type, range_shape, AxisGeometry};
use super::op::*;
use super::params::{ParamStore, Tensor};
use super::types::{broadcast_shapes, numel, shape_str, strides, DType, Shape, TensorType};
use crate::error::{Error, Result};
use crate::quant::fake::{fake_quant, fake_quant_mask, nudged_for, observe_range, Nudged};
use std::collections::HashMap;

/// A runtime value: f32 tensors, or i32 tensors (class labels).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F32(Tensor),
    I32 { shape: Shape, data: Vec<i32> },
}

impl Value {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32(t) => &t.shape,
            Value::I32 { shape, .. } => shape,
        }
    }

    pub fn ty(&self) -> TensorType {
        match self {
            Value::F32(t) => TensorType::f32(t.shape.clone()),
            Value::I32 { shape, .. } => TensorType::new(DType::I32, shape.clone()),
        }
    }

    pub fn f32(&self) -> Option<&Tensor> {
        match self {
            Value::F32(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_f32(self) -> Option<Tensor> {
        match self {
            Value::F32(t) => Some(t),
            _ => None,
        }
    }

    pub fn labels(labels: &[i32]) -> Value {
        Value::I32 {
            shape: vec![labels.len()],
            data: labels.to_vec(),
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Value {
        Value::F32(t)
    }
}

/// What a run produces: named outputs, and new values for updated params.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub outputs: Vec<(String, Value)>,
    pub updates: Vec<(String, Tensor)>,
}

impl RunResult {
    pub fn output(&self, name: &str) -> Option<&Value> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Runs `g` on `inputs` (by input node name) with weights from `params`.
pub fn run(g: &Graph, params: &ParamStore, inputs: &[(&str, Value)]) -> Result<RunResult> {
    let values = run_all(g, params, inputs)?;
    Ok(RunResult {
        outputs: g
            .outputs()
            .iter()
            .map(|o| (o.name.clone(), values[&o.node].clone()))
            .collect(),
        updates: g
            .updates()
            .iter()
            .map(|u| {
                (
                    u.param.clone(),
                    values[&u.node].f32().cloned().expect("f32 update"),
                )
            })
            .collect(),
    })
}

/// Runs `g` and returns the value of every live node (for comparing intermediates).
pub fn run_all(
    g: &Graph,
    params: &ParamStore,
    inputs: &[(&str, Value)],
) -> Result<HashMap<NodeId, Value>> {
    let mut env: HashMap<NodeId, Value> = HashMap::new();
    for &i in g.inputs() {
        let node = g.node(i);
        let v = inputs
            .iter()
            .find(|(n, _)| *n == node.name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::node(&node.name, "input", "no value was fed for this input"))?;
        let got = v.ty();
        let same_sample = got.shape.len() == node.ty.shape.len()
            && got.shape.iter().skip(1).eq(node.ty.shape.iter().skip(1));
        if got.dtype != node.ty.dtype || !same_sample {
            return Err(Error::node(
                &node.name,
                "input",
                format!("fed {got} but the graph expects {} (any batch)", node.ty),
            ));
        }
        env.insert(i, v);
    }
    for id in g.canonical_order() {
        if env.contains_key(&id) {
            continue;
        }
        let node = g.node(id);
        let v = if node.op == Op::Param {
            // a param that updates only write (nothing reads it) needs no value yet
            if g.use_count(id) == 0 {
                continue;
            }
            Value::F32(params.require(&node.name)?.clone())
        } else {
            let args: Vec<&Value> = g.operands(id).iter().map(|o| &env[o]).collect();
            eval(&node.op, &args, params).map_err(|m| Error::node(&node.name, node.op.name(), m))?
        };
        env.insert(id, v);
    }
    Ok(env)
}

/// Evaluates one op on values. The error is a message; the caller names the node.
pub fn eval(op: &Op, args: &[&Value], params: &ParamStore) -> std::result::Result<Value, String> {
    let tys: Vec<TensorType> = args.iter().map(|a| a.ty()).collect();
    let ty_refs: Vec<&TensorType> = tys.iter().collect();
    let out_ty = infer_type(op, &ty_refs)?;
    let f = |i: usize| -> &Tensor { args[i].f32().expect("f32 operand checked by infer") };
    let out_shape = out_ty.shape.clone();
    let t = |data: Vec<f32>| Ok(Value::F32(Tensor::new(out_shape.clone(), data)));
    use Op::*;
    match op {
        Input | Param => Err("inputs and params are not evaluated".into()),
        Conv2d(c) => t(conv2d(c, f(0), f(1), args.get(2).map(|_| f(2)), &out_shape)),
        DepthwiseConv2d(c) => t(depthwise(
            c,
            f(0),
            f(1),
            args.get(2).map(|_| f(2)),
            &out_shape,
        )),
        Conv2dTranspose(c) => t(conv_transpose(
            c,
            f(0),
            f(1),
            args.get(2).map(|_| f(2)),
            &out_shape,
        )),
        Dense { activation } => {
            let (x, w) = (f(0), f(1));
            let (n, i_dim, o_dim) = (x.shape[0], x.shape[1], w.shape[0]);
            let mut out = vec![0.0; n * o_dim];
            for b in 0..n {
                for o in 0..o_dim {
                    let mut acc = args.get(2).map(|_| f(2).data[o]).unwrap_or(0.0);
                    for i in 0..i_dim {
                        acc += x.data[b * i_dim + i] * w.data[o * i_dim + i];
                    }
                    out[b * o_dim + o] = activation.apply(acc);
                }
            }
            t(out)
        }
        BatchNorm { epsilon, .. } => {
            let x = f(0);
            let (gamma, beta, mean, var) = (f(1), f(2), f(3), f(4));
            let c = gamma.data.len();
            let scale: Vec<f32> = (0..c)
                .map(|k| gamma.data[k] / (var.data[k] + epsilon.0).sqrt())
                .collect();
            let shift: Vec<f32> = (0..c)
                .map(|k| beta.data[k] - mean.data[k] * scale[k])
                .collect();
            t(x.data
                .iter()
                .enumerate()
                .map(|(i, &v)| v * scale[i % c] + shift[i % c])
                .collect())
        }
        Relu => t(map(f(0), |x| x.max(0.0))),
        Relu6 => t(map(f(0), |x| x.clamp(0.0, 6.0))),
        LeakyRelu { alpha } => t(map(f(0), |x| if x >= 0.0 { x } else { alpha.0 * x })),
        HardSwish => t(map(f(0), |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0)),
        Sigmoid => t(map(f(0), sigmoid)),
        Tanh => t(map(f(0), f32::tanh)),
        Softmax => t(softmax_rows(f(0))),
        Add { activation } => t(broadcast(f(0), f(1), &out_shape, |a, b| {
            activation.apply(a + b)
        })),
        Sub { activation } => t(broadcast(f(0), f(1), &out_shape, |a, b| {
            activation.apply(a - b)
        })),
        Mul { activation } => t(broadcast(f(0), f(1), &out_shape, |a, b| {
            activation.apply(a * b)
        })),
        Concat { axis } => {
            let outer: usize = out_shape[..*axis].iter().product();
            let mut out = Vec::with_capacity(numel(&out_shape));
            for o in 0..outer {
                for a in args {
                    let x = a.f32().unwrap();
                    let chunk: usize = x.shape[*axis..].iter().product();
                    out.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
                }
            }
            t(out)
        }
        MaxPool2d(p) => t(pool(p, f(0), &out_shape, true)),
        AvgPool2d(p) => t(pool(p, f(0), &out_shape, false)),
        GlobalAvgPool { .. } => t(reduce(f(0), &[1, 2], 0.0, |acc, v| acc + v, true)),
        GlobalMaxPool { .. } => t(reduce(f(0), &[1, 2], f32::NEG_INFINITY, f32::max, false)),
        Mean(r) => t(reduce(f(0), &r.axes, 0.0, |acc, v| acc + v, true)),
        ReduceSum(r) => t(reduce(f(0), &r.axes, 0.0, |acc, v| acc + v, false)),
        Reshape { .. } | Flatten | Dropout { .. } | Quant(_) => t(f(0).data.clone()),
        Transpose { perm } => {
            let x = f(0);
            let in_strides = strides(&x.shape);
            let out_strides = strides(&out_shape);
            let mut out = vec![0.0; x.data.len()];
            for (o, slot) in out.iter_mut().enumerate() {
                let mut src = 0;
                for (d, &p) in perm.iter().enumerate() {
                    src += (o / out_strides[d]) % out_shape[d] * in_strides[p];
                }
                *slot = x.data[src];
            }
            t(out)
        }
        Pad { pads } => {
            let x = f(0);
            let begin: Vec<usize> = pads.iter().map(|p| p[0]).collect();
            let mut out = vec![0.0; numel(&out_shape)];
            copy_block(
                &x.data,
                &x.shape,
                &mut out,
                &out_shape,
                &vec![0; x.shape.len()],
                &begin,
                &x.shape,
            );
            t(out)
        }
        Crop { crops } => {
            let x = f(0);
            let begin: Vec<usize> = crops.iter().map(|c| c[0]).collect();
            let mut out = vec![0.0; numel(&out_shape)];
            copy_block(
                &x.data,
                &x.shape,
                &mut out,
                &out_shape,
                &begin,
                &vec![0; x.shape.len()],
                &out_shape,
            );
            t(out)
        }
        Slice { begin, size } => {
            let x = f(0);
            let mut out = vec![0.0; numel(size)];
            copy_block(
                &x.data,
                &x.shape,
                &mut out,
                size,
                begin,
                &vec![0; size.len()],
                size,
            );
            t(out)
        }
        UpsampleNearest { scale } => {
            let x = f(0);
            let (h, w, c) = (x.shape[1], x.shape[2], x.shape[3]);
            let (oh, ow) = (out_shape[1], out_shape[2]);
            let mut out = vec![0.0; numel(&out_shape)];
            for (i, slot) in out.iter_mut().enumerate() {
                let (n, y, xx, ch) = (i / (oh * ow * c), (i / (ow * c)) % oh, (i / c) % ow, i % c);
                *slot = x.data[((n * h + y / scale[0]) * w + xx / scale[1]) * c + ch];
            }
            t(out)
        }
        FakeQuant(q) => {
            let x = f(0);
            let ranges = fq_ranges(q, x, args, params)?;
            let inner = inner_size(&x.shape, q.axis);
            t(x.data
                .iter()
                .enumerate()
                .map(|(i, &v)| fake_quant(v, &ranges[(i / inner) % ranges.len()]))
                .collect())
        }
        BnScale { epsilon } => {
            let (gamma, var) = (f(0), f(1));
            t(gamma
                .data
                .iter()
                .zip(&var.data)
                .map(|(g, v)| g / (v + epsilon.0).sqrt())
                .collect())
        }
        ScaleChannels { axis } => {
            let (w, s) = (f(0), f(1));
            let inner: usize = w.shape[axis + 1..].iter().product();
            let c = w.shape[*axis];
            t(w.data
                .iter()
                .enumerate()
                .map(|(i, &v)| v * s.data[(i / inner) % c])
                .collect())
        }
        SoftmaxCrossEntropy | SoftmaxCrossEntropyGrad => {
            let logits = f(0);
            let Value::I32 { data: labels, .. } = args[1] else {
                return Err("labels must be i32".into());
            };
            let (n, c) = (logits.shape[0], logits.shape[1]);
            if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= c) {
                return Err(format!("label {bad} is outside the {c} classes"));
            }
            let probs = softmax_rows(logits);
            if matches!(op, SoftmaxCrossEntropy) {
                let mut loss = 0.0f32;
                for b in 0..n {
                    let row = &logits.data[b * c..(b + 1) * c];
                    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
                    loss += lse - row[labels[b] as usize];
                }
                t(vec![loss / n as f32])
            } else {
                let mut g = probs;
                for b in 0..n {
                    g[b * c + labels[b] as usize] -= 1.0;
                }
                let inv_n = 1.0 / n as f32;
                t(g.into_iter().map(|v| v * inv_n).collect())
            }
        }
        ReluGrad => t(zip(f(0), f(1), |dy, x| if x > 0.0 { dy } else { 0.0 })),
        Relu6Grad => t(zip(
            f(0),
            f(1),
            |dy, x| if x > 0.0 && x < 6.0 { dy } else { 0.0 },
        )),
        LeakyReluGrad { alpha } => t(zip(
            f(0),
            f(1),
            |dy, x| if x > 0.0 { dy } else { alpha.0 * dy },
        )),
        // d/dx x*relu6(x+3)/6 with relu6's own gradient (0 at both kinks, as TF's
        // Relu6Grad): 0 up to -3 inclusive, 1 from 3 inclusive, (2x+3)/6 in between
        HardSwishGrad => t(zip(f(0), f(1), |dy, x| {
            if x <= -3.0 {
                0.0
            } else if x >= 3.0 {
                dy
            } else {
                dy * (2.0 * x + 3.0) / 6.0
            }
        })),
        SigmoidGrad => t(zip(f(0), f(1), |dy, y| dy * y * (1.0 - y))),
        TanhGrad => t(zip(f(0), f(1), |dy, y| dy * (1.0 - y * y))),
        SoftmaxGrad => {
            let (dy, y) = (f(0), f(1));
            let c = *y.shape.last().unwrap();
            let mut out = vec![0.0; y.data.len()];
            for r in 0..y.data.len() / c {
                let s = r * c;
                let dot: f32 = (0..c).map(|k| dy.data[s + k] * y.data[s + k]).sum();
                for k in 0..c {
                    out[s + k] = y.data[s + k] * (dy.data[s + k] - dot);
                }
            }
            t(out)
        }
        FakeQuantGrad(q) => {
            let (dy, x) = (f(0), f(1));
            let ranges = explicit_ranges(q, f(2), f(3));
            let inner = inner_size(&x.shape, q.axis);
            t(dy.data
                .iter()
                .zip(&x.data)
                .enumerate()
                .map(|(i, (&g, &v))| g * fake_quant_mask(v, &ranges[(i / inner) % ranges.len()]))
                .collect())
        }
        Conv2dGradInput { conv, .. } => t(conv2d_grad_input(conv, f(0), f(1), &out_shape)),
        Conv2dGradFilter { conv, .. } => t(conv2d_grad_filter(conv, f(0), f(1), &out_shape)),
        DepthwiseConv2dGradInput { conv, .. } => {
            t(depthwise_grad(conv, f(0), f(1), &out_shape, true))
        }
        DepthwiseConv2dGradFilter { conv, .. } => {
            t(depthwise_grad(conv, f(0), f(1), &out_shape, false))
        }
        Conv2dTransposeGradInput { conv, .. } => {
            t(conv_transpose_grad(conv, f(0), f(1), &out_shape, true))
        }
        Conv2dTransposeGradFilter { conv, .. } => {
            t(conv_transpose_grad(conv, f(0), f(1), &out_shape, false))
        }
        DenseGradInput => {
            let (dy, w) = (f(0), f(1));
            let (n, o_dim, i_dim) = (dy.shape[0], w.shape[0], w.shape[1]);
            let mut out = vec![0.0; n * i_dim];
            for b in 0..n {
                for i in 0..i_dim {
                    out[b * i_dim + i] = (0..o_dim)
                        .map(|o| dy.data[b * o_dim + o] * w.data[o * i_dim + i])
                        .sum();
                }
            }
            t(out)
        }
        DenseGradWeight => {
            let (dy, x) = (f(0), f(1));
            let (n, o_dim, i_dim) = (dy.shape[0], dy.shape[1], x.shape[1]);
            let mut out = vec![0.0; o_dim * i_dim];
            for o in 0..o_dim {
                for i in 0..i_dim {
                    out[o * i_dim + i] = (0..n)
                        .map(|b| dy.data[b * o_dim + o] * x.data[b * i_dim + i])
                        .sum();
                }
            }
            t(out)
        }
        BatchNormTrain { epsilon } => {
            let x = f(0);
            let (mean, var) = moments(x);
            let c = mean.len();
            let (gamma, beta) = (f(1), f(2));
            t(x.data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let k = i % c;
                    (v - mean[k]) / (var[k] + epsilon.0).sqrt() * gamma.data[k] + beta.data[k]
                })
                .collect())
        }
        BatchMean => t(moments(f(0)).0),
        BatchVar { unbiased } => {
            let x = f(0);
            let (_, var) = moments(x);
            let m = (x.data.len() / var.len()) as f32;
            let corr = if *unbiased && m > 1.0 {
                m / (m - 1.0)
            } else {
                1.0
            };
            t(var.into_iter().map(|v| v * corr).collect())
        }
        BatchNormGradInput { epsilon } => {
            let (dy, x, gamma) = (f(0), f(1), f(2));
            let (mean, var) = moments(x);
            let c = mean.len();
            let m = (x.data.len() / c) as f32;
            let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + epsilon.0).sqrt()).collect();
            let mut sum_dy = vec![0.0f32; c];
            let mut sum_dy_xhat = vec![0.0f32; c];
            for (i, (&g, &v)) in dy.data.iter().zip(&x.data).enumerate() {
                let k = i % c;
                sum_dy[k] += g;
                sum_dy_xhat[k] += g * (v - mean[k]) * inv[k];
            }
            t(dy.data
                .iter()
                .zip(&x.data)
                .enumerate()
                .map(|(i, (&g, &v))| {
                    let k = i % c;
                    let xhat = (v - mean[k]) * inv[k];
                    gamma.data[k] * inv[k] / m * (m * g - sum_dy[k] - xhat * sum_dy_xhat[k])
                })
                .collect())
        }
        BatchNormGradGamma { epsilon } => {
            let (dy, x) = (f(0), f(1));
            let (mean, var) = moments(x);
            let c = mean.len();
            let mut out = vec![0.0f32; c];
            for (i, (&g, &v)) in dy.data.iter().zip(&x.data).enumerate() {
                let k = i % c;
                out[k] += g * (v - mean[k]) / (var[k] + epsilon.0).sqrt();
            }
            t(out)
        }
        MaxPool2dGrad(p) => t(max_pool_grad(p, f(0), f(1))),
        AvgPool2dGrad {
            pool: p,
            input_shape,
        } => t(avg_pool_grad(p, f(0), input_shape)),
        GlobalAvgPoolGrad { input_shape } => {
            let dy = f(0);
            let (h, w, c) = (input_shape[1], input_shape[2], input_shape[3]);
            let inv = 1.0 / (h * w) as f32;
            t((0..numel(input_shape))
                .map(|i| dy.data[(i / (h * w * c)) * c + i % c] * inv)
                .collect())
        }
        GlobalMaxPoolGrad => {
            let (dy, x) = (f(0), f(1));
            let (n, hw, c) = (x.shape[0], x.shape[1] * x.shape[2], x.shape[3]);
            let mut out = vec![0.0; x.data.len()];
            for b in 0..n {
                for k in 0..c {
                    let mut best = 0;
                    for p in 1..hw {
                        if x.data[(b * hw + p) * c + k] > x.data[(b * hw + best) * c + k] {
                            best = p;
                        }
                    }
                    out[(b * hw + best) * c + k] = dy.data[b * c + k];
                }
            }
            t(out)
        }
        MeanGrad { axes, input_shape } => {
            let dy = f(0);
            let count: usize = axes.iter().map(|&a| input_shape[a]).product();
            let kept: Vec<usize> = input_shape
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                .collect();
            let ks = strides(&kept);
            let is = strides(input_shape);
            let inv = 1.0 / count as f32;
            t((0..numel(input_shape))
                .map(|i| {
                    let src: usize = (0..input_shape.len())
                        .map(|d| {
                            if axes.contains(&d) {
                                0
                            } else {
                                (i / is[d]) % input_shape[d] * ks[d]
                            }
                        })
                        .sum();
                    dy.data[src] * inv
                })
                .collect())
        }
        UpsampleNearestGrad { scale } => {
            let dy = f(0);
            let (h, w, c) = (dy.shape[1], dy.shape[2], dy.shape[3]);
            let (oh, ow) = (out_shape[1], out_shape[2]);
            let mut out = vec![0.0; numel(&out_shape)];
            for (i, &g) in dy.data.iter().enumerate() {
                let (n, y, x, ch) = (i / (h * w * c), (i / (w * c)) % h, (i / c) % w, i % c);
                out[((n * oh + y / scale[0]) * ow + x / scale[1]) * c + ch] += g;
            }
            t(out)
        }
        DropoutMask { rate, seed, shape } => {
            let step = f(0).data[0];
            t((0..numel(shape))
                .map(|i| dropout_keep(*seed, step, i, rate.0))
                .collect())
        }
        MovingAverage { momentum } => {
            let m = momentum.0;
            t(zip(f(0), f(1), |old, v| old * m + v * (1.0 - m)))
        }
        SgdVelocity { momentum } => {
            let lr = f(2).data[0];
            t(zip(f(0), f(1), |v, g| momentum.0 * v - lr * g))
        }
        AdamMoment { beta } => t(zip(f(0), f(1), |m, g| beta.0 * m + (1.0 - beta.0) * g)),
        AdamMomentSq { beta } => t(zip(f(0), f(1), |v, g| beta.0 * v + (1.0 - beta.0) * g * g)),
        AdamApply { epsilon } => {
            let (p, m, v, lr) = (f(0), f(1), f(2), f(3).data[0]);
            t((0..p.data.len())
                .map(|i| p.data[i] - lr * m.data[i] / (v.data[i].sqrt() + epsilon.0))
                .collect())
        }
        ObserveMin { axis } | ObserveMax { axis } => {
            let x = f(0);
            let r = observe_range(&x.data, &x.shape, *axis);
            let is_min = matches!(op, ObserveMin { .. });
            t(r.into_iter()
                .map(|(lo, hi)| if is_min { lo } else { hi })
                .collect())
        }
        EmaUpdate { decay } => {
            let first = f(2).data[0] == 0.0;
            let d = decay.0;
            t(zip(f(0), f(1), |old, v| {
                if first {
                    v
                } else {
                    old * d + v * (1.0 - d)
                }
            }))
        }
        RunningMin | RunningMax => {
            let first = f(2).data[0] == 0.0;
            let is_min = matches!(op, RunningMin);
            t(zip(f(0), f(1), |old, v| match (first, is_min) {
                (true, _) => v,
                (false, true) => old.min(v),
                (false, false) => old.max(v),
            }))
        }
    }
}

// ---- helpers -------------------------------------------------------------------------------

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Vec<f32> {
    x.data.iter().map(|&v| f(v)).collect()
}

fn zip(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect()
}

/// Elements per channel step along `axis` (1 for per-tensor, so channel index is 0).
fn inner_size(shape: &[usize], axis: Option<usize>) -> usize {
    match axis {
        Some(a) => shape[a + 1..].iter().product(),
        None => usize::MAX,
    }
}

fn explicit_ranges(q: &FakeQuantAttrs, min: &Tensor, max: &Tensor) -> Vec<Nudged> {
    min.data
        .iter()
        .zip(&max.data)
        .map(|(&lo, &hi)| nudged_for(q, lo, hi))
        .collect()
}

/// The nudged ranges a fake-quant node uses, per its range source.
pub fn fq_ranges(
    q: &FakeQuantAttrs,
    x: &Tensor,
    args: &[&Value],
    params: &ParamStore,
) -> std::result::Result<Vec<Nudged>, String> {
    match &q.range {
        RangeSource::LastValue => Ok(observe_range(&x.data, &x.shape, q.axis)
            .into_iter()
            .map(|(lo, hi)| nudged_for(q, lo, hi))
            .collect()),
        RangeSource::Fixed { min, max } => Ok(vec![nudged_for(q, min.0, max.0)]),
        RangeSource::Operands => Ok(explicit_ranges(
            q,
            args[1].f32().unwrap(),
            args[2].f32().unwrap(),
        )),
        RangeSource::Ema { state, .. }
        | RangeSource::AllValues { state }
        | RangeSource::Tied { state } => {
            let (lo, hi) = state_range(params, state)?;
            let want = range_shape(q, &x.shape);
            for (t, which) in [(lo, "min"), (hi, "max")] {
                if t.shape != want && !(want.is_empty() && t.shape == [1]) {
                    let per = match q.axis {
                        Some(a) => format!("one range per channel of axis {a}"),
                        None => "one range for the whole tensor".into(),
                    };
                    return Err(format!(
                        "quantizer state `{state}.{which}` has shape {} but this quantizer \
                         needs {} ({per})",
                        shape_str(&t.shape),
                        shape_str(&want),
                    ));
                }
            }
            Ok(explicit_ranges(q, lo, hi))
        }
    }
}

/// The `(min, max)` state tensors of quantizer `state`.
pub fn state_range<'p>(
    params: &'p ParamStore,
    state: &str,
) -> std::result::Result<(&'p Tensor, &'p Tensor), String> {
    let lo = params.get(&format!("{state}.min"));
    let hi = params.get(&format!("{state}.max"));
    match (lo, hi) {
        (Some(lo), Some(hi)) => Ok((lo, hi)),
        _ => Err(format!(
            "quantizer state `{state}` has no observed range yet (params `{state}.min`/`{state}.max`): \
             train or calibrate the model first"
        )),
    }
}

fn broadcast(a: &Tensor, b: &Tensor, out: &[usize], f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    debug_assert_eq!(broadcast_shapes(&a.shape, &b.shape).as_deref(), Some(out));
    let index = |shape: &[usize], i: usize| -> usize {
        let os = strides(out);
        let s = strides(shape);
        let off = out.len() - shape.len();
        (0..shape.len())
            .map(|d| {
                if shape[d] == 1 {
                    0
                } else {
                    (i / os[d + off]) % out[d + off] * s[d]
                }
            })
            .sum()
    };
    (0..numel(out))
        .map(|i| f(a.data[index(&a.shape, i)], b.data[index(&b.shape, i)]))
        .collect()
}

fn softmax_rows(x: &Tensor) -> Vec<f32> {
    let c = *x.shape.last().unwrap();
    let mut out = vec![0.0; x.data.len()];
    for r in 0..x.data.len() / c {
        let row = &x.data[r * c..(r + 1) * c];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        for k in 0..c {
            out[r * c + k] = e[k] / s;
        }
    }
    out
}

/// Reduces over `axes` with `combine`; `mean` divides by the reduced count.
fn reduce(
    x: &Tensor,
    axes: &[usize],
    init: f32,
    combine: impl Fn(f32, f32) -> f32,
    mean: bool,
) -> Vec<f32> {
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let ks = strides(&kept);
    let xs = strides(&x.shape);
    let mut acc = vec![init; numel(&kept)];
    for (i, &v) in x.data.iter().enumerate() {
        let dst: usize = (0..x.shape.len())
            .map(|d| {
                if axes.contains(&d) {
                    0
                } else {
                    (i / xs[d]) % x.shape[d] * ks[d]
                }
            })
            .sum();
        acc[dst] = combine(acc[dst], v);
    }
    if mean {
        let count = (x.data.len() / acc.len().max(1)) as f32;
        acc.iter_mut().for_each(|v| *v /= count);
    }
    acc
}

/// Copies the block `src[src_begin .. src_begin+size]` to `dst[dst_begin ..]`.
fn copy_block(
    src: &[f32],
    src_shape: &[usize],
    dst: &mut [f32],
    dst_shape: &[usize],
    src_begin: &[usize],
    dst_begin: &[usize],
    size: &[usize],
) {
    let ss = strides(src_shape);
    let ds = strides(dst_shape);
    let zs = strides(size);
    for i in 0..numel(size) {
        let (mut s, mut d) = (0, 0);
        for k in 0..size.len() {
            let idx = (i / zs[k]) % size[k];
            s += (idx + src_begin[k]) * ss[k];
            d += (idx + dst_begin[k]) * ds[k];
        }
        dst[d] = src[s];
    }
}

/// Per-channel (last axis) mean and biased variance.
fn moments(x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let c = *x.shape.last().unwrap();
    let m = (x.data.len() / c) as f32;
    let mut mean = vec![0.0f32; c];
    for (i, &v) in x.data.iter().enumerate() {
        mean[i % c] += v;
    }
    mean.iter_mut().for_each(|v| *v /= m);
    let mut var = vec![0.0f32; c];
    for (i, &v) in x.data.iter().enumerate() {
        let d = v - mean[i % c];
        var[i % c] += d * d;
    }
    var.iter_mut().for_each(|v| *v /= m);
    (mean, var)
}

/// Spatial geometry of a conv-like op on input `[n,h,w,c]` with kernel `[kh,kw]`.
fn geometry(
    c: &ConvAttrs,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
) -> (AxisGeometry, AxisGeometry) {
    (
        conv_axis(h, kh, c.stride[0], c.dilation[0], c.padding, 0).unwrap(),
        conv_axis(w, kw, c.stride[1], c.dilation[1], c.padding, 1).unwrap(),
    )
}

/// The input coordinate of output `o`, tap `k` along one axis, if it is inside the image.
#[inline]
fn tap(o: usize, k: usize, stride: usize, dil: usize, pad: usize, size: usize) -> Option<usize> {
    let i = (o * stride + k * dil) as isize - pad as isize;
    (i >= 0 && (i as usize) < size).then_some(i as usize)
}

fn conv2d(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Vec<f32> {
    let (n, h, wd, ci) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (co, kh, kw) = (w.shape[0], w.shape[1], w.shape[2]);
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let mut acc = b.map(|b| b.data[oc]).unwrap_or(0.0);
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            for ic in 0..ci {
                                acc += x.data[((bi * h + iy) * wd + ix) * ci + ic]
                                    * w.data[((oc * kh + ky) * kw + kx) * ci + ic];
                            }
                        }
                    }
                    out[((bi * oh + oy) * ow + ox) * co + oc] = c.activation.apply(acc);
                }
            }
        }
    }
    out
}

fn conv2d_grad_input(c: &ConvAttrs, dy: &Tensor, w: &Tensor, in_shape: &[usize]) -> Vec<f32> {
    let (n, h, wd, ci) = (in_shape[0], in_shape[1], in_shape[2], in_shape[3]);
    let (co, kh, kw) = (w.shape[0], w.shape[1], w.shape[2]);
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dx = vec![0.0; numel(in_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            for ic in 0..ci {
                                dx[((bi * h + iy) * wd + ix) * ci + ic] +=
                                    g * w.data[((oc * kh + ky) * kw + kx) * ci + ic];
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

fn conv2d_grad_filter(c: &ConvAttrs, dy: &Tensor, x: &Tensor, w_shape: &[usize]) -> Vec<f32> {
    let (n, h, wd, ci) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (co, kh, kw) = (w_shape[0], w_shape[1], w_shape[2]);
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dw = vec![0.0; numel(w_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            for ic in 0..ci {
                                dw[((oc * kh + ky) * kw + kx) * ci + ic] +=
                                    g * x.data[((bi * h + iy) * wd + ix) * ci + ic];
                            }
                        }
                    }
                }
            }
        }
    }
    dw
}

fn depthwise(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Vec<f32> {
    let (n, h, wd, ci) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (kh, kw, co) = (w.shape[1], w.shape[2], w.shape[3]);
    let mult = co / ci;
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let ic = oc / mult;
                    let mut acc = b.map(|b| b.data[oc]).unwrap_or(0.0);
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            acc += x.data[((bi * h + iy) * wd + ix) * ci + ic]
                                * w.data[(ky * kw + kx) * co + oc];
                        }
                    }
                    out[((bi * oh + oy) * ow + ox) * co + oc] = c.activation.apply(acc);
                }
            }
        }
    }
    out
}

/// Depthwise gradient: `wrt_input` gives dx (operands dy, kernel), else dkernel (dy, x).
fn depthwise_grad(
    c: &ConvAttrs,
    dy: &Tensor,
    other: &Tensor,
    out_shape: &[usize],
    wrt_input: bool,
) -> Vec<f32> {
    let (x_shape, w_shape) = if wrt_input {
        (out_shape, &other.shape[..])
    } else {
        (&other.shape[..], out_shape)
    };
    let (n, h, wd, ci) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let (kh, kw, co) = (w_shape[1], w_shape[2], w_shape[3]);
    let mult = co / ci;
    let (gy, gx) = geometry(c, h, wd, kh, kw);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for oc in 0..co {
                    let ic = oc / mult;
                    let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                    for ky in 0..kh {
                        let Some(iy) = tap(oy, ky, c.stride[0], c.dilation[0], gy.pad_before, h)
                        else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ix) =
                                tap(ox, kx, c.stride[1], c.dilation[1], gx.pad_before, wd)
                            else {
                                continue;
                            };
                            let xi = ((bi * h + iy) * wd + ix) * ci + ic;
                            let wi = (ky * kw + kx) * co + oc;
                            if wrt_input {
                                out[xi] += g * other.data[wi];
                            } else {
                                out[wi] += g * other.data[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Visits every (input pixel, kernel tap, output pixel) triple of a transposed conv.
fn for_each_transpose_tap(
    c: &ConvAttrs,
    x_shape: &[usize],
    w_shape: &[usize],
    y_shape: &[usize],
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize),
) {
    let (n, h, wd) = (x_shape[0], x_shape[1], x_shape[2]);
    let (kh, kw) = (w_shape[1], w_shape[2]);
    let gy = conv_transpose_axis(h, kh, c.stride[0], c.dilation[0], c.padding, 0).unwrap();
    let gx = conv_transpose_axis(wd, kw, c.stride[1], c.dilation[1], c.padding, 1).unwrap();
    let (oh, ow) = (y_shape[1], y_shape[2]);
    for bi in 0..n {
        for iy in 0..h {
            for ix in 0..wd {
                for ky in 0..kh {
                    let oy =
                        (iy * c.stride[0] + ky * c.dilation[0]) as isize - gy.pad_before as isize;
                    if oy < 0 || oy as usize >= oh {
                        continue;
                    }
                    for kx in 0..kw {
                        let ox = (ix * c.stride[1] + kx * c.dilation[1]) as isize
                            - gx.pad_before as isize;
                        if ox < 0 || ox as usize >= ow {
                            continue;
                        }
                        f(bi, iy, ix, ky, kx, oy as usize, ox as usize);
                    }
                }
            }
        }
    }
}

fn conv_transpose(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Vec<f32> {
    let (h, wd, ci) = (x.shape[1], x.shape[2], x.shape[3]);
    let (co, kh, kw) = (w.shape[0], w.shape[1], w.shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for_each_transpose_tap(
        c,
        &x.shape,
        &w.shape,
        out_shape,
        |bi, iy, ix, ky, kx, oy, ox| {
            for oc in 0..co {
                for ic in 0..ci {
                    out[((bi * oh + oy) * ow + ox) * co + oc] += x.data
                        [((bi * h + iy) * wd + ix) * ci + ic]
                        * w.data[((oc * kh + ky) * kw + kx) * ci + ic];
                }
            }
        },
    );
    for (i, v) in out.iter_mut().enumerate() {
        *v = c
            .activation
            .apply(*v + b.map(|b| b.data[i % co]).unwrap_or(0.0));
    }
    out
}

fn conv_transpose_grad(
    c: &ConvAttrs,
    dy: &Tensor,
    other: &Tensor,
    out_shape: &[usize],
    wrt_input: bool,
) -> Vec<f32> {
    let (x_shape, w_shape) = if wrt_input {
        (out_shape, &other.shape[..])
    } else {
        (&other.shape[..], out_shape)
    };
    let (h, wd, ci) = (x_shape[1], x_shape[2], x_shape[3]);
    let (co, kh, kw) = (w_shape[0], w_shape[1], w_shape[2]);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for_each_transpose_tap(
        c,
        x_shape,
        w_shape,
        &dy.shape,
        |bi, iy, ix, ky, kx, oy, ox| {
            for oc in 0..co {
                let g = dy.data[((bi * oh + oy) * ow + ox) * co + oc];
                for ic in 0..ci {
                    let xi = ((bi * h + iy) * wd + ix) * ci + ic;
                    let wi = ((oc * kh + ky) * kw + kx) * ci + ic;
                    if wrt_input {
                        out[xi] += g * other.data[wi];
                    } else {
                        out[wi] += g * other.data[xi];
                    }
                }
            }
        },
    );
    out
}

/// In-image taps of pool output `(oy, ox)`: `(iy, ix)` pairs, window order.
fn pool_taps(
    p: &PoolAttrs,
    gy: AxisGeometry,
    gx: AxisGeometry,
    h: usize,
    w: usize,
    oy: usize,
    ox: usize,
) -> Vec<(usize, usize)> {
    let mut taps = Vec::new();
    for ky in 0..p.size[0] {
        let Some(iy) = tap(oy, ky, p.stride[0], 1, gy.pad_before, h) else {
            continue;
        };
        for kx in 0..p.size[1] {
            let Some(ix) = tap(ox, kx, p.stride[1], 1, gx.pad_before, w) else {
                continue;
            };
            taps.push((iy, ix));
        }
    }
    taps
}

fn pool_geometry(p: &PoolAttrs, h: usize, w: usize) -> (AxisGeometry, AxisGeometry) {
    (
        conv_axis(h, p.size[0], p.stride[0], 1, p.padding, 0).unwrap(),
        conv_axis(w, p.size[1], p.stride[1], 1, p.padding, 1).unwrap(),
    )
}

fn pool(p: &PoolAttrs, x: &Tensor, out_shape: &[usize], max: bool) -> Vec<f32> {
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (gy, gx) = pool_geometry(p, h, w);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let mut out = vec![0.0; numel(out_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let taps = pool_taps(p, gy, gx, h, w, oy, ox);
                for k in 0..c {
                    let vals = taps
                        .iter()
                        .map(|&(iy, ix)| x.data[((bi * h + iy) * w + ix) * c + k]);
                    out[((bi * oh + oy) * ow + ox) * c + k] = if max {
                        vals.fold(f32::NEG_INFINITY, f32::max)
                    } else {
                        vals.sum::<f32>() / taps.len() as f32
                    };
                }
            }
        }
    }
    out
}

fn max_pool_grad(p: &PoolAttrs, dy: &Tensor, x: &Tensor) -> Vec<f32> {
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (gy, gx) = pool_geometry(p, h, w);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dx = vec![0.0; x.data.len()];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let taps = pool_taps(p, gy, gx, h, w, oy, ox);
                for k in 0..c {
                    // the first maximum in window order takes the gradient
                    let at = |&(iy, ix): &(usize, usize)| ((bi * h + iy) * w + ix) * c + k;
                    let mut best = at(&taps[0]);
                    for t in &taps[1..] {
                        if x.data[at(t)] > x.data[best] {
                            best = at(t);
                        }
                    }
                    dx[best] += dy.data[((bi * oh + oy) * ow + ox) * c + k];
                }
            }
        }
    }
    dx
}

fn avg_pool_grad(p: &PoolAttrs, dy: &Tensor, in_shape: &[usize]) -> Vec<f32> {
    let (n, h, w, c) = (in_shape[0], in_shape[1], in_shape[2], in_shape[3]);
    let (gy, gx) = pool_geometry(p, h, w);
    let (oh, ow) = (dy.shape[1], dy.shape[2]);
    let mut dx = vec![0.0; numel(in_shape)];
    for bi in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let taps = pool_taps(p, gy, gx, h, w, oy, ox);
                let inv = 1.0 / taps.len() as f32;
                for k in 0..c {
                    let g = dy.data[((bi * oh + oy) * ow + ox) * c + k] * inv;
                    for &(iy, ix) in &taps {
                        dx[((bi * h + iy) * w + ix) * c + k] += g;
                    }
                }
            }
        }
    }
    dx
}

/// The dropout mask value of element `index` at `step`: `1/(1-rate)` kept, `0` dropped.
/// A 32-bit integer hash of `(seed, step, index)`, so the JIT computes the same mask.
pub fn dropout_keep(seed: u64, step: f32, index: usize, rate: f32) -> f32 {
    let mut h = (index as u32)
        .wrapping_mul(0x9E37_79B1)
        .wrapping_add((step as u32).wrapping_mul(0x85EB_CA77))
        .wrapping_add(seed as u32);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    let u = (h >> 8) as f32 * (1.0 / 16_777_216.0);
    if u >= rate {
        1.0 / (1.0 - rate)
    } else {
        0.0
    }
}
