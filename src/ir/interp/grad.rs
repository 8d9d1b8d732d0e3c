//! Reference semantics of the gradient ops.

use super::kernels::*;
use super::value::{Cx, Value};
use crate::ir::fake_quant::{fake_quant_mask, range_grad, SymmetricRoute};
use crate::ir::op::GradOp;
use crate::ir::op::OpError;
use crate::ir::types::{numel, strides};

pub(super) fn eval(op: &GradOp, cx: &Cx) -> Result<Value, OpError> {
    use GradOp::*;
    match op {
        SoftmaxCrossEntropyGrad => {
            let (logits, labels) = super::train::logits_and_labels(cx)?;
            let (n, c) = (logits.shape[0], logits.shape[1]);
            let mut g = softmax_rows(logits);
            for b in 0..n {
                g[b * c + labels[b] as usize] -= 1.0;
            }
            let inv_n = 1.0 / n as f32;
            cx.t(g.into_iter().map(|v| v * inv_n).collect())
        }
        ReduceSum(r) => cx.t(reduce(cx.f(0), &r.axes, 0.0, |acc, v| acc + v, false)),
        Slice { begin, size } => {
            let x = cx.f(0);
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
            cx.t(out)
        }
        ReluGrad => cx.t(zip(
            cx.f(0),
            cx.f(1),
            |dy, x| if x > 0.0 { dy } else { 0.0 },
        )),
        Relu6Grad => cx.t(zip(cx.f(0), cx.f(1), |dy, x| {
            if x > 0.0 && x < 6.0 {
                dy
            } else {
                0.0
            }
        })),
        PReluGradInput => {
            let slope = broadcast(cx.f(1), cx.f(2), &cx.out_shape, |x, a| {
                if x > 0.0 {
                    1.0
                } else {
                    a
                }
            });
            cx.t(cx
                .f(0)
                .data
                .iter()
                .zip(slope)
                .map(|(&d, s)| s * d)
                .collect())
        }
        PReluGradAlpha => cx.t(zip(cx.f(0), cx.f(1), |dy, x| dy * x.min(0.0))),
        ThresholdedReluGrad { theta } => {
            cx.t(zip(
                cx.f(0),
                cx.f(1),
                |dy, x| {
                    if x > theta.0 {
                        dy
                    } else {
                        0.0
                    }
                },
            ))
        }
        LeakyReluGrad { alpha } => cx.t(zip(cx.f(0), cx.f(1), |dy, x| {
            if x > 0.0 {
                dy
            } else {
                alpha.0 * dy
            }
        })),
        // d/dx x*relu6(x+3)/6 with relu6's own gradient (0 at both kinks, as TF's
        // Relu6Grad): 0 up to -3 inclusive, 1 from 3 inclusive, (2x+3)/6 in between
        HardSwishGrad => cx.t(zip(cx.f(0), cx.f(1), |dy, x| {
            if x <= -3.0 {
                0.0
            } else if x >= 3.0 {
                dy
            } else {
                dy * (2.0 * x + 3.0) / 6.0
            }
        })),
        SigmoidGrad => cx.t(zip(cx.f(0), cx.f(1), |dy, y| dy * y * (1.0 - y))),
        TanhGrad => cx.t(zip(cx.f(0), cx.f(1), |dy, y| dy * (1.0 - y * y))),
        SoftmaxGrad => {
            let (dy, y) = (cx.f(0), cx.f(1));
            let c = *y.shape.last().unwrap();
            let mut out = vec![0.0; y.data.len()];
            for r in 0..y.data.len() / c {
                let s = r * c;
                let dot: f32 = (0..c).map(|k| dy.data[s + k] * y.data[s + k]).sum();
                for k in 0..c {
                    out[s + k] = y.data[s + k] * (dy.data[s + k] - dot);
                }
            }
            cx.t(out)
        }
        FakeQuantGrad(q) => {
            let (dy, x) = (cx.f(0), cx.f(1));
            let ranges = explicit_ranges(q, cx.f(2), cx.f(3));
            let inner = inner_size(&x.shape, q.axis);
            cx.t(dy
                .data
                .iter()
                .zip(&x.data)
                .enumerate()
                .map(|(i, (&g, &v))| g * fake_quant_mask(v, &ranges[(i / inner) % ranges.len()]))
                .collect())
        }
        FakeQuantRangeGrad {
            quant: q,
            end,
            grad_scale,
        } => {
            let method = q
                .range
                .trained()
                .ok_or("fake_quant_range_grad differentiates a range=trained quantizer")?;
            let (dy, x, min, max) = (cx.f(0), cx.f(1), cx.f(2), cx.f(3));
            let ranges = explicit_ranges(q, min, max);
            let routes: Vec<_> = (min.data.iter().zip(&max.data))
                .map(|(&lo, &hi)| SymmetricRoute::of(q, lo, hi))
                .collect();
            let inner = inner_size(&x.shape, q.axis);
            cx.t(dy
                .data
                .iter()
                .zip(&x.data)
                .enumerate()
                .map(|(i, (&g, &v))| {
                    let c = (i / inner) % ranges.len();
                    let d = range_grad(q, &ranges[c], routes[c], v, g, *end, method);
                    d * grad_scale.0
                })
                .collect())
        }
        Conv2dGradInput { conv, .. } => {
            cx.t(conv2d_grad_input(conv, cx.f(0), cx.f(1), &cx.out_shape))
        }
        Conv2dGradFilter { conv, .. } => {
            cx.t(conv2d_grad_filter(conv, cx.f(0), cx.f(1), &cx.out_shape))
        }
        DepthwiseConv2dGradInput { conv, .. } => {
            cx.t(depthwise_grad(conv, cx.f(0), cx.f(1), &cx.out_shape, true))
        }
        DepthwiseConv2dGradFilter { conv, .. } => {
            cx.t(depthwise_grad(conv, cx.f(0), cx.f(1), &cx.out_shape, false))
        }
        Conv2dTransposeGradInput { conv, .. } => cx.t(conv_transpose_grad(
            conv,
            cx.f(0),
            cx.f(1),
            &cx.out_shape,
            true,
        )),
        Conv2dTransposeGradFilter { conv, .. } => cx.t(conv_transpose_grad(
            conv,
            cx.f(0),
            cx.f(1),
            &cx.out_shape,
            false,
        )),
        DenseGradInput => {
            let (dy, w) = (cx.f(0), cx.f(1));
            let (n, o_dim, i_dim) = (dy.shape[0], w.shape[0], w.shape[1]);
            let mut out = vec![0.0; n * i_dim];
            for b in 0..n {
                for i in 0..i_dim {
                    out[b * i_dim + i] = (0..o_dim)
                        .map(|o| dy.data[b * o_dim + o] * w.data[o * i_dim + i])
                        .sum();
                }
            }
            cx.t(out)
        }
        DenseGradWeight => {
            let (dy, x) = (cx.f(0), cx.f(1));
            let (n, o_dim, i_dim) = (dy.shape[0], dy.shape[1], x.shape[1]);
            let mut out = vec![0.0; o_dim * i_dim];
            for o in 0..o_dim {
                for i in 0..i_dim {
                    out[o * i_dim + i] = (0..n)
                        .map(|b| dy.data[b * o_dim + o] * x.data[b * i_dim + i])
                        .sum();
                }
            }
            cx.t(out)
        }
        BatchNormGradInput { epsilon } => {
            let (dy, x, gamma) = (cx.f(0), cx.f(1), cx.f(2));
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
            cx.t(dy
                .data
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
            let (dy, x) = (cx.f(0), cx.f(1));
            let (mean, var) = moments(x);
            let c = mean.len();
            let mut out = vec![0.0f32; c];
            for (i, (&g, &v)) in dy.data.iter().zip(&x.data).enumerate() {
                let k = i % c;
                out[k] += g * (v - mean[k]) / (var[k] + epsilon.0).sqrt();
            }
            cx.t(out)
        }
        MaxPool2dGrad(p) => cx.t(max_pool_grad(p, cx.f(0), cx.f(1))),
        AvgPool2dGrad {
            pool: p,
            input_shape,
        } => cx.t(avg_pool_grad(p, cx.f(0), input_shape)),
        GlobalAvgPoolGrad { input_shape } => {
            let dy = cx.f(0);
            let (h, w, c) = (input_shape[1], input_shape[2], input_shape[3]);
            let inv = 1.0 / (h * w) as f32;
            cx.t((0..numel(input_shape))
                .map(|i| dy.data[(i / (h * w * c)) * c + i % c] * inv)
                .collect())
        }
        GlobalMaxPoolGrad => {
            let (dy, x) = (cx.f(0), cx.f(1));
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
            cx.t(out)
        }
        MeanGrad { axes, input_shape } => {
            let dy = cx.f(0);
            let count: usize = axes.iter().map(|&a| input_shape[a]).product();
            let kept: Vec<usize> = input_shape
                .iter()
                .enumerate()
                .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                .collect();
            let ks = strides(&kept);
            let is = strides(input_shape);
            let inv = 1.0 / count as f32;
            cx.t((0..numel(input_shape))
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
            let dy = cx.f(0);
            let (h, w, c) = (dy.shape[1], dy.shape[2], dy.shape[3]);
            let (oh, ow) = (cx.out_shape[1], cx.out_shape[2]);
            let mut out = vec![0.0; numel(&cx.out_shape)];
            for (i, &g) in dy.data.iter().enumerate() {
                let (n, y, x, ch) = (i / (h * w * c), (i / (w * c)) % h, (i / c) % w, i % c);
                out[((n * oh + y / scale[0]) * ow + x / scale[1]) * c + ch] += g;
            }
            cx.t(out)
        }
    }
}
