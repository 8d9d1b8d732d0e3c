//! Gradient checks: every gradient rule of `autodiff::rules` against central finite
//! differences through the reference interpreter.
//!
//! Each case builds `y = op(operands)` from params, takes `L = sum(y * r)` for a fixed random
//! `r` (so `dL/dy = r` seeds the backward sweep), and compares the gradient the autodiff
//! graph computes with `(L(p + h) - L(p - h)) / 2h` for every element of every operand.
//!
//! Tolerance `|analytic - numeric| <= 1e-3 + 1e-2 * |numeric|`, from the error budget of a
//! central difference evaluated in f32: truncation `h^2/6 * |L'''|` (zero for the piecewise
//! linear ops, about 1e-4 for the curved ones at h = 1e-2), and rounding: the few outputs a
//! perturbed element touches each carry ~6e-8 relative error, divided by 2h — about
//! 36 * 6e-8 * 4 / 2e-2 ~ 4e-4 for the largest convolution here. `L` itself is summed in
//! f64 so untouched outputs cancel exactly. Inputs are kept at least 3h away from every
//! kink (relu at 0, relu6 at 0 and 6, hard_swish at +-3, max-pool ties), and fake_quant
//! inputs sit on quantization levels with h two levels wide, so `x +- h` never crosses a
//! rounding step (the straight-through gradient is then exactly the difference quotient).

use qatc::autodiff::backward;
use qatc::ir::fake_quant::nudged_for;
use qatc::ir::interp::{self, Value};
use qatc::ir::op::*;
use qatc::ir::{Graph, NodeId, Op, ParamStore, Tensor, TensorType};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ATOL: f64 = 1e-3;
const RTOL: f64 = 1e-2;
const H: f32 = 1e-2;

struct Check {
    g: Graph,
    params: ParamStore,
    rng: ChaCha8Rng,
    wrt: Vec<String>,
    /// Extra (non-param) inputs, e.g. i32 labels.
    feeds: Vec<(String, Value)>,
    h: f32,
}

impl Check {
    fn new(name: &str, seed: u64) -> Check {
        Check {
            g: Graph::new(name),
            params: ParamStore::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            wrt: Vec::new(),
            feeds: Vec::new(),
            h: H,
        }
    }

    fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.random_range(lo..hi)).collect()
    }

    /// A param with the given data that is checked.
    fn var(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> NodeId {
        let id = self.constant(name, shape, data);
        self.wrt.push(name.to_string());
        id
    }

    /// A random param in [-1, 1] that is checked.
    fn rand(&mut self, name: &str, shape: &[usize]) -> NodeId {
        let n = shape.iter().product();
        let data = self.uniform(n, -1.0, 1.0);
        self.var(name, shape, data)
    }

    /// A param that is not checked.
    fn constant(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> NodeId {
        self.params.insert(name, Tensor::new(shape.to_vec(), data));
        self.g.param(name, TensorType::f32(shape.to_vec())).unwrap()
    }

    fn op(&mut self, op: Op, name: &str, operands: &[NodeId]) -> NodeId {
        self.g.add(op, name, operands).unwrap()
    }

    /// Sum of `y * r` in f64.
    fn loss(&self, g: &Graph, params: &ParamStore, r: &Tensor) -> f64 {
        let feeds: Vec<(&str, Value)> = self
            .feeds
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let out = interp::run(g, params, &feeds).unwrap();
        let y = out.output("y").unwrap().f32().unwrap();
        y.data
            .iter()
            .zip(&r.data)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    }

    /// Checks `d sum(y*r) / d p` for every checked param `p`.
    fn check(mut self, y: NodeId) {
        let yshape = self.g.node(y).ty.shape.clone();
        let n: usize = yshape.iter().product();
        let r_data = self.uniform(n, -1.0, 1.0);
        let r = self.constant("r", &yshape, r_data);
        let r_t = self.params.get("r").unwrap().clone();
        self.g.add_output("y", y);

        let mut ga = self.g.clone();
        let wrt: Vec<NodeId> = self.wrt.iter().map(|w| ga.find(w).unwrap()).collect();
        let grads = backward(&mut ga, &[(y, r)], &wrt).unwrap();
        for (w, gnode) in self.wrt.iter().zip(&grads) {
            let gnode = gnode.unwrap_or_else(|| panic!("no gradient for {w}"));
            ga.add_output(format!("grad.{w}"), gnode);
        }
        let feeds: Vec<(&str, Value)> = self
            .feeds
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let res = interp::run(&ga, &self.params, &feeds).unwrap();

        let h = self.h;
        let mut largest = 0.0f64;
        for w in &self.wrt {
            let analytic = res
                .output(&format!("grad.{w}"))
                .unwrap()
                .f32()
                .unwrap()
                .clone();
            assert_eq!(analytic.shape, self.params.get(w).unwrap().shape, "{w}");
            let mut p = self.params.clone();
            for j in 0..analytic.data.len() {
                let orig = p.get(w).unwrap().data[j];
                p.get_mut(w).unwrap().data[j] = orig + h;
                let up = self.loss(&self.g, &p, &r_t);
                p.get_mut(w).unwrap().data[j] = orig - h;
                let down = self.loss(&self.g, &p, &r_t);
                p.get_mut(w).unwrap().data[j] = orig;
                // the actual step in f32 (orig +- h is rounded)
                let step = (orig + h) as f64 - (orig - h) as f64;
                let numeric = (up - down) / step;
                let a = analytic.data[j] as f64;
                largest = largest.max(a.abs());
                assert!(
                    (a - numeric).abs() <= ATOL + RTOL * numeric.abs(),
                    "{}: d/d{w}[{j}]: autodiff {a} vs finite difference {numeric}",
                    self.g.name
                );
            }
        }
        assert!(
            largest > 0.05,
            "{}: all gradients are ~0, the check is vacuous",
            self.g.name
        );
    }
}

/// Moves values at least `margin` away from each kink.
fn away(mut v: Vec<f32>, kinks: &[f32], margin: f32) -> Vec<f32> {
    for x in &mut v {
        for &k in kinks {
            if (*x - k).abs() < margin {
                *x = if *x >= k { k + margin } else { k - margin };
            }
        }
    }
    v
}

/// Distinct values (no ties within 4h): a shuffled ladder.
fn distinct(c: &mut Check, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.05).collect();
    for i in (1..n).rev() {
        let j = c.rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

fn conv(stride: usize, padding: Padding, dilation: usize) -> ConvAttrs {
    ConvAttrs {
        stride: [stride, stride],
        padding,
        dilation: [dilation, dilation],
        activation: Activation::None,
    }
}

fn none() -> Activation {
    Activation::None
}

// ---- layers --------------------------------------------------------------------------------

#[test]
fn conv2d_valid_with_bias() {
    let mut c = Check::new("conv2d_valid", 1);
    let x = c.rand("x", &[2, 5, 5, 2]);
    let k = c.rand("k", &[3, 3, 3, 2]);
    let b = c.rand("b", &[3]);
    let y = c.op(
        Op::Model(ModelOp::Conv2d(conv(1, Padding::Valid, 1))),
        "y",
        &[x, k, b],
    );
    c.check(y);
}

#[test]
fn conv2d_same_stride2() {
    let mut c = Check::new("conv2d_same_s2", 2);
    let x = c.rand("x", &[1, 6, 5, 2]);
    let k = c.rand("k", &[2, 3, 3, 2]);
    let y = c.op(
        Op::Model(ModelOp::Conv2d(conv(2, Padding::Same, 1))),
        "y",
        &[x, k],
    );
    c.check(y);
}

#[test]
fn conv2d_dilated_explicit_padding() {
    let mut c = Check::new("conv2d_dilated", 3);
    let x = c.rand("x", &[1, 6, 6, 1]);
    let k = c.rand("k", &[2, 2, 2, 1]);
    let y = c.op(
        Op::Model(ModelOp::Conv2d(conv(1, Padding::Explicit([1, 0, 0, 2]), 2))),
        "y",
        &[x, k],
    );
    c.check(y);
}

/// A fused activation: the rule goes through relu_grad / relu6_grad on the output. Inputs
/// are drawn until no pre-activation is within 3h of a kink.
#[test]
fn conv2d_fused_relu6() {
    for seed in 0..200 {
        let mut c = Check::new("conv2d_relu6", seed);
        let x_data = c.uniform(2 * 4 * 4 * 2, -1.5, 1.5);
        let k_data = c.uniform(3 * 3 * 3 * 2, -1.5, 1.5);
        let b_data = vec![1.0, 2.0, 3.0];
        let mut params = ParamStore::new();
        params.insert("x", Tensor::new(vec![2, 4, 4, 2], x_data.clone()));
        params.insert("k", Tensor::new(vec![3, 3, 3, 2], k_data.clone()));
        params.insert("b", Tensor::new(vec![3], b_data.clone()));
        let pre = interp::eval(
            &Op::Model(ModelOp::Conv2d(conv(1, Padding::Same, 1))),
            &[
                &Value::F32(params.get("x").unwrap().clone()),
                &Value::F32(params.get("k").unwrap().clone()),
                &Value::F32(params.get("b").unwrap().clone()),
            ],
            &params,
        )
        .unwrap();
        let margin = 3.0 * H;
        let ok = pre
            .f32()
            .unwrap()
            .data
            .iter()
            .all(|&v| v.abs() > margin && (v - 6.0).abs() > margin);
        let clipped = pre
            .f32()
            .unwrap()
            .data
            .iter()
            .filter(|&&v| !(0.0..=6.0).contains(&v))
            .count();
        if !ok || clipped == 0 {
            continue;
        }
        let x = c.var("x", &[2, 4, 4, 2], x_data);
        let k = c.var("k", &[3, 3, 3, 2], k_data);
        let b = c.var("b", &[3], b_data);
        let mut a = conv(1, Padding::Same, 1);
        a.activation = Activation::Relu6;
        let y = c.op(Op::Model(ModelOp::Conv2d(a)), "y", &[x, k, b]);
        c.check(y);
        return;
    }
    panic!("no seed gave kink-free pre-activations");
}

#[test]
fn depthwise_conv2d_multiplier2_stride2() {
    let mut c = Check::new("depthwise", 4);
    let x = c.rand("x", &[2, 5, 5, 2]);
    let k = c.rand("k", &[1, 3, 3, 4]);
    let b = c.rand("b", &[4]);
    let y = c.op(
        Op::Model(ModelOp::DepthwiseConv2d(conv(2, Padding::Same, 1))),
        "y",
        &[x, k, b],
    );
    c.check(y);
}

#[test]
fn conv2d_transpose_same_stride2() {
    let mut c = Check::new("conv2d_transpose_same", 5);
    let x = c.rand("x", &[2, 3, 3, 2]);
    let k = c.rand("k", &[3, 3, 3, 2]);
    let b = c.rand("b", &[3]);
    let y = c.op(
        Op::Model(ModelOp::Conv2dTranspose(conv(2, Padding::Same, 1))),
        "y",
        &[x, k, b],
    );
    c.check(y);
}

#[test]
fn conv2d_transpose_valid() {
    let mut c = Check::new("conv2d_transpose_valid", 6);
    let x = c.rand("x", &[1, 3, 2, 2]);
    let k = c.rand("k", &[2, 2, 3, 2]);
    let y = c.op(
        Op::Model(ModelOp::Conv2dTranspose(conv(1, Padding::Valid, 1))),
        "y",
        &[x, k],
    );
    c.check(y);
}

#[test]
fn dense_with_and_without_bias() {
    let mut c = Check::new("dense_bias", 7);
    let x = c.rand("x", &[3, 5]);
    let k = c.rand("k", &[4, 5]);
    let b = c.rand("b", &[4]);
    let y = c.op(
        Op::Model(ModelOp::Dense { activation: none() }),
        "y",
        &[x, k, b],
    );
    c.check(y);

    let mut c = Check::new("dense_no_bias", 8);
    let x = c.rand("x", &[2, 3]);
    let k = c.rand("k", &[5, 3]);
    let y = c.op(
        Op::Model(ModelOp::Dense { activation: none() }),
        "y",
        &[x, k],
    );
    c.check(y);
}

#[test]
fn batch_norm_train_through_batch_statistics() {
    for (shape, name) in [(vec![2, 3, 3, 2], "bn4d"), (vec![6, 3], "bn2d")] {
        let mut c = Check::new(name, 9);
        let x = c.rand("x", &shape);
        let ch = *shape.last().unwrap();
        let gamma_data = c.uniform(ch, 0.5, 1.5);
        let gamma = c.var("gamma", &[ch], gamma_data);
        let beta = c.rand("beta", &[ch]);
        let y = c.op(
            Op::Train(TrainOp::BatchNormTrain { epsilon: F32(1e-3) }),
            "y",
            &[x, gamma, beta],
        );
        c.check(y);
    }
}

/// The inference form, which a train step keeps for a frozen BatchNorm: `dx` only.
#[test]
fn batch_norm_frozen_passes_its_scale_back() {
    let mut c = Check::new("bn_frozen", 19);
    let x = c.rand("x", &[2, 3, 3, 2]);
    let gamma = c.constant("gamma", &[2], vec![1.3, -0.6]);
    let beta = c.constant("beta", &[2], vec![0.2, -0.1]);
    let mean = c.constant("mean", &[2], vec![0.1, -0.4]);
    let var = c.constant("var", &[2], vec![0.8, 2.5]);
    let y = c.op(
        Op::Model(ModelOp::BatchNorm {
            epsilon: F32(1e-3),
            momentum: F32(0.99),
        }),
        "y",
        &[x, gamma, beta, mean, var],
    );
    c.check(y);
}

// ---- activations ---------------------------------------------------------------------------

fn unary(name: &str, op: Op, lo: f32, hi: f32, kinks: &[f32]) {
    let mut c = Check::new(name, 10);
    let data = c.uniform(24, lo, hi);
    let x = c.var("x", &[2, 3, 4], away(data, kinks, 3.0 * H));
    let y = c.op(op, "y", &[x]);
    c.check(y);
}

#[test]
fn relu() {
    unary("relu", Op::Model(ModelOp::Relu), -2.0, 2.0, &[0.0]);
}

#[test]
fn relu6() {
    unary("relu6", Op::Model(ModelOp::Relu6), -2.0, 8.0, &[0.0, 6.0]);
}

#[test]
fn leaky_relu() {
    unary(
        "leaky_relu",
        Op::Model(ModelOp::LeakyRelu { alpha: F32(0.2) }),
        -2.0,
        2.0,
        &[0.0],
    );
}

#[test]
fn thresholded_relu() {
    unary(
        "thresholded_relu",
        Op::Model(ModelOp::ThresholdedRelu { theta: F32(0.4) }),
        -2.0,
        2.0,
        &[0.4],
    );
}

/// PReLU's input and slope gradients; the slope is per channel (summed over batch and space)
/// or one per element of a sample.
#[test]
fn prelu() {
    for (name, alpha_shape) in [
        ("prelu_channels", &[1, 1, 3][..]),
        ("prelu_full", &[2, 2, 3]),
    ] {
        let mut c = Check::new(name, 14);
        let data = c.uniform(24, -2.0, 2.0);
        let x = c.var("x", &[2, 2, 2, 3], away(data, &[0.0], 3.0 * H));
        let alpha = c.rand("alpha", alpha_shape);
        let y = c.op(Op::Model(ModelOp::PRelu), "y", &[x, alpha]);
        c.check(y);
    }
}

#[test]
fn hard_swish() {
    unary(
        "hard_swish",
        Op::Model(ModelOp::HardSwish),
        -5.0,
        5.0,
        &[-3.0, 3.0],
    );
}

#[test]
fn sigmoid() {
    unary("sigmoid", Op::Model(ModelOp::Sigmoid), -4.0, 4.0, &[]);
}

#[test]
fn tanh() {
    unary("tanh", Op::Model(ModelOp::Tanh), -2.0, 2.0, &[]);
}

#[test]
fn softmax() {
    unary("softmax", Op::Model(ModelOp::Softmax), -2.0, 2.0, &[]);
}

// ---- arithmetic with broadcasting ----------------------------------------------------------

fn binary(name: &str, op: Op, a: &[usize], b: &[usize]) {
    let mut c = Check::new(name, 11);
    let x = c.rand("a", a);
    let y = c.rand("b", b);
    let z = c.op(op, "y", &[x, y]);
    c.check(z);
}

#[test]
fn add_broadcasting() {
    let add = || Op::Model(ModelOp::Add { activation: none() });
    binary("add_same", add(), &[2, 3], &[2, 3]);
    binary("add_bias", add(), &[2, 2, 2, 3], &[3]);
    binary("add_both_ways", add(), &[2, 1, 4], &[3, 1]);
    binary("add_scalar", add(), &[2, 3], &[]);
}

#[test]
fn sub_broadcasting() {
    let sub = || Op::Model(ModelOp::Sub { activation: none() });
    binary("sub_same", sub(), &[2, 3], &[2, 3]);
    binary("sub_keepdims", sub(), &[2, 3, 4], &[1, 3, 1]);
}

#[test]
fn mul_broadcasting() {
    let mul = || Op::Model(ModelOp::Mul { activation: none() });
    binary("mul_same", mul(), &[2, 3], &[2, 3]);
    binary("mul_channels", mul(), &[2, 2, 2, 3], &[1, 1, 1, 3]);
    binary("mul_both_ways", mul(), &[3, 1], &[2, 1, 4]);
}

/// A value used several times: `y = x*x + x - w*x`, gradients summed over the users, one
/// of them negative.
#[test]
fn several_users_accumulate() {
    let mut c = Check::new("several_users", 12);
    let x = c.rand("x", &[2, 3]);
    let w = c.rand("w", &[3]);
    let mul = || Op::Model(ModelOp::Mul { activation: none() });
    let xx = c.op(mul(), "xx", &[x, x]);
    let s = c.op(
        Op::Model(ModelOp::Add { activation: none() }),
        "s",
        &[xx, x],
    );
    let wx = c.op(mul(), "wx", &[w, x]);
    let y = c.op(
        Op::Model(ModelOp::Sub { activation: none() }),
        "y",
        &[s, wx],
    );
    c.check(y);
}

/// A gradient that is negative on every path is materialized as `t - (t + t)`.
#[test]
fn purely_negative_gradient() {
    let mut c = Check::new("negative", 13);
    let a = c.constant("a", &[2, 3], vec![0.5; 6]);
    let b = c.rand("b", &[2, 3]);
    let r = c.op(Op::Model(ModelOp::Relu), "relu", &[b]);
    let y = c.op(Op::Model(ModelOp::Sub { activation: none() }), "y", &[a, r]);
    // keep b away from the relu kink
    let data = away(c.params.get("b").unwrap().data.clone(), &[0.0], 3.0 * H);
    c.params.insert("b", Tensor::new(vec![2, 3], data));
    c.check(y);
}

// ---- layout and pooling --------------------------------------------------------------------

#[test]
fn concat_slices_back() {
    let mut c = Check::new("concat_channels", 14);
    let a = c.rand("a", &[2, 2, 2, 1]);
    let b = c.rand("b", &[2, 2, 2, 3]);
    let d = c.rand("d", &[2, 2, 2, 2]);
    let y = c.op(Op::Model(ModelOp::Concat { axis: 3 }), "y", &[a, b, d]);
    c.check(y);

    let mut c = Check::new("concat_rows", 15);
    let a = c.rand("a", &[2, 1, 3]);
    let b = c.rand("b", &[2, 2, 3]);
    let y = c.op(Op::Model(ModelOp::Concat { axis: 1 }), "y", &[a, b]);
    c.check(y);
}

fn pool(size: usize, stride: usize, padding: Padding) -> PoolAttrs {
    PoolAttrs {
        size: [size, size],
        stride: [stride, stride],
        padding,
    }
}

#[test]
fn max_pool2d_away_from_ties() {
    for (name, p) in [
        ("max_pool_valid", pool(2, 2, Padding::Valid)),
        ("max_pool_same_overlap", pool(3, 2, Padding::Same)),
    ] {
        let mut c = Check::new(name, 16);
        let data = distinct(&mut c, 2 * 5 * 5 * 2);
        let x = c.var("x", &[2, 5, 5, 2], data);
        let y = c.op(Op::Model(ModelOp::MaxPool2d(p)), "y", &[x]);
        c.check(y);
    }
}

#[test]
fn avg_pool2d_same_excludes_padding() {
    for (name, p) in [
        ("avg_pool_valid", pool(2, 2, Padding::Valid)),
        ("avg_pool_same", pool(3, 2, Padding::Same)),
    ] {
        let mut c = Check::new(name, 17);
        let x = c.rand("x", &[2, 5, 5, 2]);
        let y = c.op(Op::Model(ModelOp::AvgPool2d(p)), "y", &[x]);
        c.check(y);
    }
}

#[test]
fn global_pools() {
    for keepdims in [false, true] {
        let mut c = Check::new("global_avg_pool", 18);
        let x = c.rand("x", &[2, 3, 3, 2]);
        let y = c.op(Op::Model(ModelOp::GlobalAvgPool { keepdims }), "y", &[x]);
        c.check(y);

        let mut c = Check::new("global_max_pool", 19);
        let data = distinct(&mut c, 2 * 3 * 3 * 2);
        let x = c.var("x", &[2, 3, 3, 2], data);
        let y = c.op(Op::Model(ModelOp::GlobalMaxPool { keepdims }), "y", &[x]);
        c.check(y);
    }
}

#[test]
fn mean_over_axes() {
    for (axes, keepdims) in [(vec![1, 2], true), (vec![1], false), (vec![2, 3], false)] {
        let mut c = Check::new("mean", 20);
        let x = c.rand("x", &[2, 3, 2, 2]);
        let y = c.op(
            Op::Model(ModelOp::Mean(ReduceAttrs { axes, keepdims })),
            "y",
            &[x],
        );
        c.check(y);
    }
}

#[test]
fn reshape_and_flatten() {
    let mut c = Check::new("reshape", 21);
    let x = c.rand("x", &[2, 3, 4]);
    let y = c.op(
        Op::Model(ModelOp::Reshape {
            shape: vec![2, -1, 3],
        }),
        "y",
        &[x],
    );
    c.check(y);

    let mut c = Check::new("flatten", 22);
    let x = c.rand("x", &[2, 2, 2, 3]);
    let y = c.op(Op::Model(ModelOp::Flatten), "y", &[x]);
    c.check(y);
}

#[test]
fn transpose() {
    let mut c = Check::new("transpose", 23);
    let x = c.rand("x", &[2, 3, 4, 5]);
    let y = c.op(
        Op::Model(ModelOp::Transpose {
            perm: vec![0, 3, 1, 2],
        }),
        "y",
        &[x],
    );
    c.check(y);
}

#[test]
fn pad_and_crop() {
    let mut c = Check::new("pad", 24);
    let x = c.rand("x", &[2, 3, 3, 2]);
    let y = c.op(
        Op::Model(ModelOp::Pad {
            pads: vec![[0, 0], [1, 2], [0, 1], [0, 0]],
        }),
        "y",
        &[x],
    );
    c.check(y);

    let mut c = Check::new("crop", 25);
    let x = c.rand("x", &[2, 5, 4, 2]);
    let y = c.op(
        Op::Model(ModelOp::Crop {
            crops: vec![[0, 0], [1, 2], [0, 1], [0, 0]],
        }),
        "y",
        &[x],
    );
    c.check(y);
}

#[test]
fn upsample_nearest() {
    let mut c = Check::new("upsample", 26);
    let x = c.rand("x", &[2, 2, 3, 2]);
    let y = c.op(
        Op::Model(ModelOp::UpsampleNearest { scale: [2, 3] }),
        "y",
        &[x],
    );
    c.check(y);
}

// ---- fake quant and loss -------------------------------------------------------------------

/// Inputs on quantization levels of the nudged range `[min, max]`, some outside it; h is
/// two levels, so `x +- h` stays on levels: the difference quotient is exactly 1 inside and
/// 0 outside, which is what the straight-through estimator claims.
fn levels(c: &mut Check, q: &FakeQuantAttrs, lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let nd = nudged_for(q, lo, hi);
    let (qmin, qmax) = q.quant_range();
    (0..n)
        .map(|i| {
            if i % 5 == 4 {
                // outside, more than h beyond either end
                if c.rng.random_range(0..2) == 0 {
                    nd.max + 0.3
                } else {
                    nd.min - 0.3
                }
            } else {
                let k = c.rng.random_range(3..=(qmax - qmin - 3));
                nd.min + k as f32 * nd.scale
            }
        })
        .collect()
}

#[test]
fn fake_quant_straight_through_per_tensor() {
    let mut c = Check::new("fake_quant", 27);
    let q = FakeQuantAttrs {
        bits: 8,
        narrow: false,
        symmetric: false,
        axis: None,
        range: RangeSource::Operands,
    };
    let scale = nudged_for(&q, -1.0, 2.0).scale;
    c.h = 2.0 * scale;
    let data = levels(&mut c, &q, -1.0, 2.0, 30);
    let x = c.var("x", &[2, 3, 5], data);
    let lo = c.constant("min", &[], vec![-1.0]);
    let hi = c.constant("max", &[], vec![2.0]);
    let y = c.op(Op::Model(ModelOp::FakeQuant(q)), "y", &[x, lo, hi]);
    c.check(y);
}

#[test]
fn fake_quant_straight_through_per_axis() {
    // per output channel of a kernel [2, 1, 2, 3]: channel 0 [-1, 1], channel 1 [-0.5, 0.5]
    let mut c = Check::new("fake_quant_axis", 28);
    let q = FakeQuantAttrs {
        bits: 8,
        narrow: true,
        symmetric: true,
        axis: Some(0),
        range: RangeSource::Operands,
    };
    let s0 = nudged_for(&q, -1.0, 1.0).scale;
    let s1 = nudged_for(&q, -0.5, 0.5).scale;
    // h = 4 levels of channel 1 = 2 levels of channel 0: both stay on their levels
    assert!((2.0 * s0 - 4.0 * s1).abs() < 1e-7);
    c.h = 2.0 * s0;
    let mut data = levels(&mut c, &q, -1.0, 1.0, 6);
    let ch1: Vec<f32> = levels(&mut c, &q, -0.5, 0.5, 6);
    data.extend(ch1);
    let x = c.var("x", &[2, 1, 2, 3], data);
    let lo = c.constant("min", &[2], vec![-1.0, -0.5]);
    let hi = c.constant("max", &[2], vec![1.0, 0.5]);
    let y = c.op(Op::Model(ModelOp::FakeQuant(q)), "y", &[x, lo, hi]);
    c.check(y);
}

#[test]
fn softmax_cross_entropy() {
    let mut c = Check::new("softmax_cross_entropy", 29);
    let logits = c.rand("logits", &[4, 5]);
    let labels =
        c.g.add_input("labels", TensorType::new(qatc::ir::DType::I32, vec![4]))
            .unwrap();
    c.feeds
        .push(("labels".into(), Value::labels(&[0, 3, 4, 1])));
    let y = c.op(
        Op::Train(TrainOp::SoftmaxCrossEntropy),
        "y",
        &[logits, labels],
    );
    c.check(y);
}

// ---- the rule table ------------------------------------------------------------------------

/// Every model op of the golden op cases has a gradient rule (or is a leaf, or the inference
/// BatchNorm that train_step lowers); a test here covers each rule.
#[test]
fn every_model_op_has_a_rule() {
    use qatc::autodiff::rules::{rule, Rule};
    for (path, g) in golden_op_cases() {
        for n in g.node_ids() {
            let op = &g.node(n).op;
            let Some(m) = op.as_model() else { continue };
            if matches!(
                m,
                qatc::ir::op::ModelOp::Input
                    | qatc::ir::op::ModelOp::Param
                    | qatc::ir::op::ModelOp::BatchNorm { .. }
            ) {
                continue;
            }
            assert!(
                matches!(rule(op), Rule::Grad(_)),
                "model op {} ({path}) has no gradient rule",
                op.name()
            );
        }
    }
}

/// Every `tests/golden/ops/*.qir` case, parsed.
fn golden_op_cases() -> Vec<(String, qatc::ir::Graph)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ops");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "qir") {
            let text = std::fs::read_to_string(&path).unwrap();
            let g = qatc::ir::text::parse(&text, &path.display().to_string()).unwrap();
            out.push((path.display().to_string(), g));
        }
    }
    out
}
