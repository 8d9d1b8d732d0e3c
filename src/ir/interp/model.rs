//! Reference semantics of model ops and pass helpers.

use super::kernels::*;
use super::value::{Cx, Value};
use crate::ir::fake_quant::fake_quant;
use crate::ir::op::OpError;
use crate::ir::op::{ModelOp, PassOp};
use crate::ir::types::{numel, strides};

pub(super) fn eval(op: &ModelOp, cx: &Cx) -> Result<Value, OpError> {
    use ModelOp::*;
    match op {
        Input | Param => Err("inputs and params are not evaluated".into()),
        Reshape { .. } | Flatten | Dropout { .. } => cx.t(cx.f(0).data.clone()),
        Conv2d(c) => cx.t(conv2d(
            c,
            cx.f(0),
            cx.f(1),
            cx.args.get(2).map(|_| cx.f(2)),
            &cx.out_shape,
        )),
        DepthwiseConv2d(c) => cx.t(depthwise(
            c,
            cx.f(0),
            cx.f(1),
            cx.args.get(2).map(|_| cx.f(2)),
            &cx.out_shape,
        )),
        Conv2dTranspose(c) => cx.t(conv_transpose(
            c,
            cx.f(0),
            cx.f(1),
            cx.args.get(2).map(|_| cx.f(2)),
            &cx.out_shape,
        )),
        Dense { activation } => {
            let (x, w) = (cx.f(0), cx.f(1));
            let (n, i_dim, o_dim) = (x.shape[0], x.shape[1], w.shape[0]);
            let mut out = vec![0.0; n * o_dim];
            for b in 0..n {
                for o in 0..o_dim {
                    let mut acc = cx.args.get(2).map(|_| cx.f(2).data[o]).unwrap_or(0.0);
                    for i in 0..i_dim {
                        acc += x.data[b * i_dim + i] * w.data[o * i_dim + i];
                    }
                    out[b * o_dim + o] = activation.apply(acc);
                }
            }
            cx.t(out)
        }
        BatchNorm { epsilon, .. } => {
            let x = cx.f(0);
            let (gamma, beta, mean, var) = (cx.f(1), cx.f(2), cx.f(3), cx.f(4));
            let c = gamma.data.len();
            let scale: Vec<f32> = (0..c)
                .map(|k| gamma.data[k] / (var.data[k] + epsilon.0).sqrt())
                .collect();
            let shift: Vec<f32> = (0..c)
                .map(|k| beta.data[k] - mean.data[k] * scale[k])
                .collect();
            cx.t(x
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| v * scale[i % c] + shift[i % c])
                .collect())
        }
        Relu => cx.t(map(cx.f(0), |x| x.max(0.0))),
        Relu6 => cx.t(map(cx.f(0), |x| x.clamp(0.0, 6.0))),
        LeakyRelu { alpha } => cx.t(map(cx.f(0), |x| if x >= 0.0 { x } else { alpha.0 * x })),
        ThresholdedRelu { theta } => cx.t(map(cx.f(0), |x| if x > theta.0 { x } else { 0.0 })),
        PRelu => cx.t(broadcast(cx.f(0), cx.f(1), &cx.out_shape, |x, a| {
            if x >= 0.0 {
                x
            } else {
                a * x
            }
        })),
        HardSwish => cx.t(map(cx.f(0), |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0)),
        Sigmoid => cx.t(map(cx.f(0), sigmoid)),
        Tanh => cx.t(map(cx.f(0), f32::tanh)),
        Softmax => cx.t(softmax_rows(cx.f(0))),
        Add { activation } => cx.t(broadcast(cx.f(0), cx.f(1), &cx.out_shape, |a, b| {
            activation.apply(a + b)
        })),
        Sub { activation } => cx.t(broadcast(cx.f(0), cx.f(1), &cx.out_shape, |a, b| {
            activation.apply(a - b)
        })),
        Mul { activation } => cx.t(broadcast(cx.f(0), cx.f(1), &cx.out_shape, |a, b| {
            activation.apply(a * b)
        })),
        Concat { axis } => {
            let outer: usize = cx.out_shape[..*axis].iter().product();
            let mut out = Vec::with_capacity(numel(&cx.out_shape));
            for o in 0..outer {
                for a in cx.args {
                    let x = a.f32().unwrap();
                    let chunk: usize = x.shape[*axis..].iter().product();
                    out.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
                }
            }
            cx.t(out)
        }
        MaxPool2d(p) => cx.t(pool(p, cx.f(0), &cx.out_shape, true)),
        AvgPool2d(p) => cx.t(pool(p, cx.f(0), &cx.out_shape, false)),
        GlobalAvgPool { .. } => cx.t(reduce(cx.f(0), &[1, 2], 0.0, |acc, v| acc + v, true)),
        GlobalMaxPool { .. } => cx.t(reduce(cx.f(0), &[1, 2], f32::NEG_INFINITY, f32::max, false)),
        Mean(r) => cx.t(reduce(cx.f(0), &r.axes, 0.0, |acc, v| acc + v, true)),
        Transpose { perm } => {
            let x = cx.f(0);
            let in_strides = strides(&x.shape);
            let out_strides = strides(&cx.out_shape);
            let mut out = vec![0.0; x.data.len()];
            for (o, slot) in out.iter_mut().enumerate() {
                let mut src = 0;
                for (d, &p) in perm.iter().enumerate() {
                    src += (o / out_strides[d]) % cx.out_shape[d] * in_strides[p];
                }
                *slot = x.data[src];
            }
            cx.t(out)
        }
        Pad { pads } => {
            let x = cx.f(0);
            let begin: Vec<usize> = pads.iter().map(|p| p[0]).collect();
            let mut out = vec![0.0; numel(&cx.out_shape)];
            copy_block(
                &x.data,
                &x.shape,
                &mut out,
                &cx.out_shape,
                &vec![0; x.shape.len()],
                &begin,
                &x.shape,
            );
            cx.t(out)
        }
        Crop { crops } => {
            let x = cx.f(0);
            let begin: Vec<usize> = crops.iter().map(|c| c[0]).collect();
            let mut out = vec![0.0; numel(&cx.out_shape)];
            copy_block(
                &x.data,
                &x.shape,
                &mut out,
                &cx.out_shape,
                &begin,
                &vec![0; x.shape.len()],
                &cx.out_shape,
            );
            cx.t(out)
        }
        UpsampleNearest { scale } => {
            let x = cx.f(0);
            let (h, w, c) = (x.shape[1], x.shape[2], x.shape[3]);
            let (oh, ow) = (cx.out_shape[1], cx.out_shape[2]);
            let mut out = vec![0.0; numel(&cx.out_shape)];
            for (i, slot) in out.iter_mut().enumerate() {
                let (n, y, xx, ch) = (i / (oh * ow * c), (i / (ow * c)) % oh, (i / c) % ow, i % c);
                *slot = x.data[((n * h + y / scale[0]) * w + xx / scale[1]) * c + ch];
            }
            cx.t(out)
        }
        FakeQuant(q) => {
            let x = cx.f(0);
            let ranges = fq_ranges(q, x, cx.args, cx.params)?;
            let inner = inner_size(&x.shape, q.axis);
            cx.t(x
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| fake_quant(v, &ranges[(i / inner) % ranges.len()]))
                .collect())
        }
    }
}

pub(super) fn eval_pass(op: &PassOp, cx: &Cx) -> Result<Value, OpError> {
    match op {
        PassOp::Quant(_) => cx.t(cx.f(0).data.clone()),
        PassOp::BnScale { epsilon } => {
            let (gamma, var) = (cx.f(0), cx.f(1));
            cx.t(gamma
                .data
                .iter()
                .zip(&var.data)
                .map(|(g, v)| g / (v + epsilon.0).sqrt())
                .collect())
        }
        PassOp::ScaleChannels { axis } => {
            let (w, s) = (cx.f(0), cx.f(1));
            let inner: usize = w.shape[axis + 1..].iter().product();
            let c = w.shape[*axis];
            cx.t(w
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| v * s.data[(i / inner) % c])
                .collect())
        }
    }
}
