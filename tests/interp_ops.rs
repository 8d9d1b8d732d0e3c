//! The reference interpreter, op by op, on tensors small enough to work out by hand. Every
//! expected number is derived in the comment above it; nothing here is "whatever the
//! interpreter printed". The last section checks each linear gradient op against its
//! forward op with the dot-product (adjoint) identity on pseudo-random data.

// Argument lists are written by value (`&[x.clone()]`) so every call reads the same way.
#![allow(clippy::cloned_ref_to_slice_refs)]

use qatc::ir::interp::{self, eval, Value};
use qatc::ir::op::*;
use qatc::ir::{Graph, Op, ParamStore, Tensor, TensorType};

// ---- helpers -------------------------------------------------------------------------------

fn v(shape: &[usize], data: &[f32]) -> Value {
    Value::F32(Tensor::new(shape.to_vec(), data.to_vec()))
}

fn scalar(x: f32) -> Value {
    Value::F32(Tensor::scalar(x))
}

fn ev_with(op: &Op, args: &[Value], params: &ParamStore) -> Result<Tensor, qatc::ir::op::OpError> {
    let refs: Vec<&Value> = args.iter().collect();
    eval(op, &refs, params).map(|v| v.into_f32().expect("an f32 result"))
}

#[track_caller]
fn ev(op: Op, args: &[Value]) -> Tensor {
    ev_with(&op, args, &ParamStore::new()).unwrap_or_else(|e| panic!("{}: {e}", op.name()))
}

/// Same shape, and every element within 1e-5 (relative above 1).
#[track_caller]
fn close(got: &Tensor, shape: &[usize], want: &[f32]) {
    assert_eq!(got.shape, shape, "shape");
    assert_eq!(got.data.len(), want.len(), "element count");
    for (i, (&g, &w)) in got.data.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "element {i}: got {g}, want {w}\n got {:?}\nwant {want:?}",
            got.data
        );
    }
}

fn conv(stride: [usize; 2], padding: Padding, dilation: [usize; 2]) -> ConvAttrs {
    ConvAttrs {
        stride,
        padding,
        dilation,
        activation: Activation::None,
    }
}

fn pool(size: [usize; 2], stride: [usize; 2], padding: Padding) -> PoolAttrs {
    PoolAttrs {
        size,
        stride,
        padding,
    }
}

fn f(x: f32) -> F32 {
    F32(x)
}

/// 1..=n as f32.
fn iota(n: usize) -> Vec<f32> {
    (1..=n).map(|i| i as f32).collect()
}

// ---- graph-level: input, param, outputs, updates -------------------------------------------

#[test]
fn input_and_param_nodes_feed_ops_at_any_batch() {
    // y = x * w + w: a graph built for batch 1 runs at batch 2 (the fed shape wins)
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::f32(vec![1, 2])).unwrap();
    let w = g.param("w", TensorType::f32(vec![2])).unwrap();
    let m = g
        .add(
            Op::Model(ModelOp::Mul {
                activation: Activation::None,
            }),
            "m",
            &[x, w],
        )
        .unwrap();
    let y = g
        .add(
            Op::Model(ModelOp::Add {
                activation: Activation::None,
            }),
            "y",
            &[m, w],
        )
        .unwrap();
    let w2 = g
        .add(
            Op::Model(ModelOp::Add {
                activation: Activation::None,
            }),
            "w2",
            &[w, w],
        )
        .unwrap();
    g.add_output("y", y);
    g.add_update("w", w2);
    let mut params = ParamStore::new();
    params.insert("w", Tensor::new(vec![2], vec![10.0, -1.0]));
    // rows [1,2], [3,4]: x*w = [10,-2], [30,-4]; + w = [20,-3], [40,-5]
    let r = interp::run(&g, &params, &[("x", v(&[2, 2], &[1.0, 2.0, 3.0, 4.0]))]).unwrap();
    close(
        r.output("y").unwrap().f32().unwrap(),
        &[2, 2],
        &[20.0, -3.0, 40.0, -5.0],
    );
    // an update carries the value of its node (w + w); the interpreter does not write it back
    assert_eq!(r.updates[0].0, "w");
    assert_eq!(r.updates[0].1.data, vec![20.0, -2.0]);
    assert_eq!(params.get("w").unwrap().data, vec![10.0, -1.0]);
}

#[test]
fn params_only_written_need_no_value() {
    // update @fresh = x (a param nothing reads, not yet in the store), update @w = @v
    // (a param's value written into another)
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::f32(vec![2])).unwrap();
    let _fresh = g.param("fresh", TensorType::f32(vec![2])).unwrap();
    let _w = g.param("w", TensorType::f32(vec![2])).unwrap();
    let v = g.param("v", TensorType::f32(vec![2])).unwrap();
    g.add_output("x", x);
    g.add_update("fresh", x);
    g.add_update("w", v);
    qatc::ir::verify::verify(&g).unwrap();
    let mut params = ParamStore::new();
    params.insert("v", Tensor::new(vec![2], vec![5., 6.]));
    let r = interp::run(
        &g,
        &params,
        &[("x", Value::F32(Tensor::new(vec![2], vec![1., 2.])))],
    )
    .unwrap();
    assert_eq!(
        r.updates[0],
        ("fresh".to_string(), Tensor::new(vec![2], vec![1., 2.]))
    );
    assert_eq!(
        r.updates[1],
        ("w".to_string(), Tensor::new(vec![2], vec![5., 6.]))
    );
}

#[test]
fn missing_feeds_and_params_are_named() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::f32(vec![1, 2])).unwrap();
    let w = g.param("w", TensorType::f32(vec![2])).unwrap();
    let y = g
        .add(
            Op::Model(ModelOp::Mul {
                activation: Activation::None,
            }),
            "y",
            &[x, w],
        )
        .unwrap();
    g.add_output("y", y);
    let no_x = interp::run(&g, &ParamStore::new(), &[])
        .unwrap_err()
        .to_string();
    assert!(
        no_x.contains("`x`") && no_x.contains("no value was fed"),
        "{no_x}"
    );
    let wrong = interp::run(&g, &ParamStore::new(), &[("x", v(&[1, 3], &[0.0; 3]))])
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("f32[1,3]") && wrong.contains("f32[1,2]"),
        "{wrong}"
    );
    let no_w = interp::run(&g, &ParamStore::new(), &[("x", v(&[1, 2], &[0.0; 2]))])
        .unwrap_err()
        .to_string();
    assert!(no_w.contains("`w`") && no_w.contains("missing"), "{no_w}");
}

#[test]
fn input_and_param_are_not_evaluated_as_ops() {
    let e = ev_with(&Op::Model(ModelOp::Input), &[], &ParamStore::new()).unwrap_err();
    assert!(e.0.contains("operand"), "{e}");
}

// ---- convolutions --------------------------------------------------------------------------

/// The 3x3 image 1..9, one channel.
fn image3() -> Value {
    v(&[1, 3, 3, 1], &iota(9))
}

#[test]
fn conv2d_same_padding_plus_kernel_bias_and_relu() {
    // A "plus" kernel (centre, up, down, left, right) over
    //   1 2 3
    //   4 5 6
    //   7 8 9
    // with SAME padding (one zero pixel on every side) sums each pixel and its in-image
    // neighbours: corner (0,0) 1+2+4 = 7, edge (0,1) 2+1+3+5 = 11, centre 5+2+4+6+8 = 25,
    // … full map [7,11,11; 17,25,23; 19,29,23]. Bias -20 then relu: [0,0,0; 0,5,3; 0,9,3].
    let k = v(&[1, 3, 3, 1], &[0., 1., 0., 1., 1., 1., 0., 1., 0.]);
    let plain = ev(
        Op::Model(ModelOp::Conv2d(conv([1, 1], Padding::Same, [1, 1]))),
        &[image3(), k.clone()],
    );
    close(
        &plain,
        &[1, 3, 3, 1],
        &[7., 11., 11., 17., 25., 23., 19., 29., 23.],
    );
    let mut c = conv([1, 1], Padding::Same, [1, 1]);
    c.activation = Activation::Relu;
    let y = ev(
        Op::Model(ModelOp::Conv2d(c)),
        &[image3(), k.clone(), v(&[1], &[-20.0])],
    );
    close(&y, &[1, 3, 3, 1], &[0., 0., 0., 0., 5., 3., 0., 9., 3.]);
    // valid padding keeps only the centre
    let valid = ev(
        Op::Model(ModelOp::Conv2d(conv([1, 1], Padding::Valid, [1, 1]))),
        &[image3(), k],
    );
    close(&valid, &[1, 1, 1, 1], &[25.0]);
}

#[test]
fn conv2d_same_padding_puts_the_odd_pixel_after() {
    // 4x4 image 1..16, 3x3 kernel of ones, stride 2, SAME: out 2x2, total padding
    // (2-1)*2 + 3 - 4 = 1 per axis, all of it after (TF). Windows start at rows/cols 0 and 2:
    //   (0,0) rows 0-2, cols 0-2: 1+2+3+5+6+7+9+10+11 = 54
    //   (0,1) rows 0-2, cols 2-3: 3+4+7+8+11+12 = 45
    //   (1,0) rows 2-3, cols 0-2: 9+10+11+13+14+15 = 72
    //   (1,1) rows 2-3, cols 2-3: 11+12+15+16 = 54
    // (Padding before would give (0,0) = 1+2+5+6 = 14.)
    let x = v(&[1, 4, 4, 1], &iota(16));
    let k = v(&[1, 3, 3, 1], &[1.0; 9]);
    let y = ev(
        Op::Model(ModelOp::Conv2d(conv([2, 2], Padding::Same, [1, 1]))),
        &[x, k],
    );
    close(&y, &[1, 2, 2, 1], &[54., 45., 72., 54.]);
}

#[test]
fn conv2d_dilation_stride_and_explicit_padding() {
    // One row [1,2,3,4,5], kernel [1,10] with dilation 2 (taps i and i+2), valid:
    // y[i] = x[i] + 10*x[i+2] = 31, 42, 53.
    let x = v(&[1, 1, 5, 1], &iota(5));
    let k = v(&[1, 1, 2, 1], &[1.0, 10.0]);
    let y = ev(
        Op::Model(ModelOp::Conv2d(conv([1, 1], Padding::Valid, [1, 2]))),
        &[x.clone(), k.clone()],
    );
    close(&y, &[1, 1, 3, 1], &[31., 42., 53.]);
    // explicit padding: one zero on the left, stride 2 over [0,1,2,3,4,5]:
    // out (6-3)/2+1 = 2: y0 = 0 + 10*2 = 20, y1 = 2 + 10*4 = 42
    let c = conv([1, 2], Padding::Explicit([0, 0, 1, 0]), [1, 2]);
    close(
        &ev(Op::Model(ModelOp::Conv2d(c)), &[x, k]),
        &[1, 1, 2, 1],
        &[20., 42.],
    );
}

#[test]
fn conv2d_kernel_layout_is_out_kh_kw_in() {
    // one pixel with channels (1,2); kernel [3,1,1,2] rows (1,0), (0,1), (1,1): y = (1,2,3)
    let x = v(&[1, 1, 1, 2], &[1.0, 2.0]);
    let k = v(&[3, 1, 1, 2], &[1., 0., 0., 1., 1., 1.]);
    let y = ev(
        Op::Model(ModelOp::Conv2d(conv([1, 1], Padding::Valid, [1, 1]))),
        &[x, k],
    );
    close(&y, &[1, 1, 1, 3], &[1., 2., 3.]);
}

#[test]
fn depthwise_conv2d_with_multiplier_2() {
    // pixels (1,2) and (3,4): channel 0 is [1,3], channel 1 is [2,4]. Output channel oc
    // reads input channel oc/2. Kernel [1,1,2,4]: tap 0 = (1,2,3,4), tap 1 = (10,20,30,40).
    // y[oc] = x0[oc/2]*k0[oc] + x1[oc/2]*k1[oc] + 1:
    //   oc0 = 1*1 + 3*10 + 1 = 32, oc1 = 1*2 + 3*20 + 1 = 63,
    //   oc2 = 2*3 + 4*30 + 1 = 127, oc3 = 2*4 + 4*40 + 1 = 169
    let x = v(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let k = v(&[1, 1, 2, 4], &[1., 2., 3., 4., 10., 20., 30., 40.]);
    let b = v(&[4], &[1.0; 4]);
    let y = ev(
        Op::Model(ModelOp::DepthwiseConv2d(conv(
            [1, 1],
            Padding::Valid,
            [1, 1],
        ))),
        &[x.clone(), k.clone(), b],
    );
    close(&y, &[1, 1, 1, 4], &[32., 63., 127., 169.]);
    // relu6 fused: bias -100 puts oc0, oc1 below 0, oc2 = 26 and oc3 = 68 above 6
    let mut c = conv([1, 1], Padding::Valid, [1, 1]);
    c.activation = Activation::Relu6;
    let y = ev(
        Op::Model(ModelOp::DepthwiseConv2d(c)),
        &[x, k, v(&[4], &[-100., -100., -100., -163.])],
    );
    close(&y, &[1, 1, 1, 4], &[0., 0., 6., 5.]);
}

#[test]
fn conv2d_transpose_scatters_each_pixel() {
    // stride 2, 2x2 kernel [[1,2],[3,4]], valid: y[2i+ky][2j+kx] = x[i][j] * k[ky][kx]
    //   x = [[1,2],[3,4]] -> rows 1 2 2 4 / 3 4 6 8 / 3 6 4 8 / 9 12 12 16
    let x = v(&[1, 2, 2, 1], &[1., 2., 3., 4.]);
    let k = v(&[1, 2, 2, 1], &[1., 2., 3., 4.]);
    let y = ev(
        Op::Model(ModelOp::Conv2dTranspose(conv(
            [2, 2],
            Padding::Valid,
            [1, 1],
        ))),
        &[x, k],
    );
    close(
        &y,
        &[1, 4, 4, 1],
        &[
            1., 2., 2., 4., 3., 4., 6., 8., 3., 6., 4., 8., 9., 12., 12., 16.,
        ],
    );
}

#[test]
fn conv2d_transpose_same_overlaps_and_crops() {
    // row [1,2], kernel [1,10], stride 1, SAME: the full result [1, 10+2, 20] is cropped to
    // 2 with total padding 1, all after: [1, 12]
    let x = v(&[1, 1, 2, 1], &[1., 2.]);
    let k = v(&[1, 1, 2, 1], &[1., 10.]);
    let y = ev(
        Op::Model(ModelOp::Conv2dTranspose(conv(
            [1, 1],
            Padding::Same,
            [1, 1],
        ))),
        &[x, k],
    );
    close(&y, &[1, 1, 2, 1], &[1., 12.]);
}

#[test]
fn conv2d_transpose_valid_with_kernel_smaller_than_stride() {
    // Keras: width 2*2 + max(1-2, 0) = 4. Pixels land at 0 and 2; 1 and 3 get only the
    // bias: x [1,2], kernel [5], bias 1 -> [6, 1, 11, 1]
    let x = v(&[1, 1, 2, 1], &[1., 2.]);
    let k = v(&[1, 1, 1, 1], &[5.]);
    let y = ev(
        Op::Model(ModelOp::Conv2dTranspose(conv(
            [1, 2],
            Padding::Valid,
            [1, 1],
        ))),
        &[x, k, v(&[1], &[1.])],
    );
    close(&y, &[1, 1, 4, 1], &[6., 1., 11., 1.]);
}

#[test]
fn dense_with_bias_and_relu() {
    // x rows [1,2,3], [4,5,6]; kernel rows (1,0,-1), (0.5,0.5,0.5); bias (0,1):
    //   row 0: 1-3 = -2, 0.5*6+1 = 4; row 1: 4-6 = -2, 0.5*15+1 = 8.5; relu: [0,4, 0,8.5]
    let x = v(&[2, 3], &iota(6));
    let k = v(&[2, 3], &[1., 0., -1., 0.5, 0.5, 0.5]);
    let y = ev(
        Op::Model(ModelOp::Dense {
            activation: Activation::Relu,
        }),
        &[x, k, v(&[2], &[0., 1.])],
    );
    close(&y, &[2, 2], &[0., 4., 0., 8.5]);
}

#[test]
fn batch_norm_with_given_statistics() {
    // channels c0 = [1,3], c1 = [2,4]; epsilon 1: var+eps = 4 and 0.25 -> std 2 and 0.5.
    //   c0: gamma 2, beta 0, mean 2 -> (x-2)/2*2 = x-2: -1, 1
    //   c1: gamma 1, beta 1, mean 3 -> (x-3)/0.5 + 1: -1, 3
    let x = v(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let p = |a: f32, b: f32| v(&[2], &[a, b]);
    let y = ev(
        Op::Model(ModelOp::BatchNorm {
            epsilon: f(1.0),
            momentum: f(0.99),
        }),
        &[x, p(2., 1.), p(0., 1.), p(2., 3.), p(3., -0.75)],
    );
    close(&y, &[1, 1, 2, 2], &[-1., -1., 1., 3.]);
}

// ---- activations ---------------------------------------------------------------------------

#[test]
fn relu_relu6_leaky_relu() {
    let x = v(&[5], &[-1., 0., 3., 6., 7.]);
    close(
        &ev(Op::Model(ModelOp::Relu), &[x.clone()]),
        &[5],
        &[0., 0., 3., 6., 7.],
    );
    close(
        &ev(Op::Model(ModelOp::Relu6), &[x.clone()]),
        &[5],
        &[0., 0., 3., 6., 6.],
    );
    // alpha 0.1: -1 -> -0.1
    close(
        &ev(Op::Model(ModelOp::LeakyRelu { alpha: f(0.1) }), &[x]),
        &[5],
        &[-0.1, 0., 3., 6., 7.],
    );
}

#[test]
fn hard_swish_is_x_relu6_x_plus_3_over_6() {
    // -4 -> 0, -3 -> 0, -1 -> -1*2/6, 0 -> 0, 1 -> 1*4/6, 3 -> 3*6/6, 4 -> 4
    let x = v(&[7], &[-4., -3., -1., 0., 1., 3., 4.]);
    close(
        &ev(Op::Model(ModelOp::HardSwish), &[x]),
        &[7],
        &[0., 0., -1. / 3., 0., 2. / 3., 3., 4.],
    );
}

#[test]
fn sigmoid_and_tanh() {
    // sigmoid(±ln 3) = 1/(1 + 1/3) = 0.75 and 0.25; tanh(ln 2) = (2 - 1/2)/(2 + 1/2) = 0.6
    let l3 = 3f32.ln();
    close(
        &ev(Op::Model(ModelOp::Sigmoid), &[v(&[3], &[0., l3, -l3])]),
        &[3],
        &[0.5, 0.75, 0.25],
    );
    close(
        &ev(Op::Model(ModelOp::Tanh), &[v(&[2], &[0., 2f32.ln()])]),
        &[2],
        &[0., 0.6],
    );
}

#[test]
fn softmax_over_the_last_axis() {
    // [0, ln 2] -> e^0 : e^ln2 = 1 : 2 -> [1/3, 2/3]; [ln 3, 0] -> [3/4, 1/4];
    // [1000, 1000 + ln 2] is the first row shifted: still [1/3, 2/3], no overflow
    let x = v(
        &[3, 1, 2],
        &[0., 2f32.ln(), 3f32.ln(), 0., 1000., 1000. + 2f32.ln()],
    );
    close(
        &ev(Op::Model(ModelOp::Softmax), &[x]),
        &[3, 1, 2],
        &[1. / 3., 2. / 3., 0.75, 0.25, 1. / 3., 2. / 3.],
    );
}

// ---- elementwise binary, concat ------------------------------------------------------------

#[test]
fn add_sub_mul_broadcast() {
    // [2,1] + [3]: rows (1) and (2) plus (10,20,30)
    let a = v(&[2, 1], &[1., 2.]);
    let b = v(&[3], &[10., 20., 30.]);
    let none = Activation::None;
    close(
        &ev(
            Op::Model(ModelOp::Add { activation: none }),
            &[a.clone(), b.clone()],
        ),
        &[2, 3],
        &[11., 21., 31., 12., 22., 32.],
    );
    // b - a the other way round: (10-1, 20-1, 30-1), (10-2, …)
    close(
        &ev(Op::Model(ModelOp::Sub { activation: none }), &[b, a]),
        &[2, 3],
        &[9., 19., 29., 8., 18., 28.],
    );
    // [2,1,2] * [3,1] -> [2,3,2]: out[i,j,k] = a[i,0,k] * b[j,0]
    let a = v(&[2, 1, 2], &[1., 2., 3., 4.]);
    let b = v(&[3, 1], &[1., 10., 100.]);
    close(
        &ev(Op::Model(ModelOp::Mul { activation: none }), &[a, b]),
        &[2, 3, 2],
        &[1., 2., 10., 20., 100., 200., 3., 4., 30., 40., 300., 400.],
    );
    // fused activations: relu on [1,2,3] - 2 = [-1,0,1]; relu6 on [1,2,3] * 3 = [3,6,9]
    let x = v(&[3], &[1., 2., 3.]);
    close(
        &ev(
            Op::Model(ModelOp::Sub {
                activation: Activation::Relu,
            }),
            &[x.clone(), scalar(2.)],
        ),
        &[3],
        &[0., 0., 1.],
    );
    close(
        &ev(
            Op::Model(ModelOp::Mul {
                activation: Activation::Relu6,
            }),
            &[x, scalar(3.)],
        ),
        &[3],
        &[3., 6., 6.],
    );
}

#[test]
fn concat_interleaves_along_the_axis() {
    // axis 1 of [[1],[2]] and [[3,4],[5,6]]: [[1,3,4],[2,5,6]]
    let a = v(&[2, 1], &[1., 2.]);
    let b = v(&[2, 2], &[3., 4., 5., 6.]);
    close(
        &ev(Op::Model(ModelOp::Concat { axis: 1 }), &[a, b]),
        &[2, 3],
        &[1., 3., 4., 2., 5., 6.],
    );
    // axis 0 stacks
    let a = v(&[1, 2], &[1., 2.]);
    let b = v(&[2, 2], &[3., 4., 5., 6.]);
    close(
        &ev(Op::Model(ModelOp::Concat { axis: 0 }), &[a, b]),
        &[3, 2],
        &[1., 2., 3., 4., 5., 6.],
    );
}

// ---- pools and reductions ------------------------------------------------------------------

#[test]
fn max_pool_same_ignores_padding() {
    // the image 1..9 negated, 2x2 windows, stride 2, SAME: out 2, padding 1 after.
    // Windows (0,0) {-1,-2,-4,-5} -> -1; (0,1) {-3,-6} -> -3 (a zero pad would give 0);
    // (1,0) {-7,-8} -> -7; (1,1) {-9} -> -9
    let x = v(
        &[1, 3, 3, 1],
        &iota(9).iter().map(|v| -v).collect::<Vec<_>>(),
    );
    let y = ev(
        Op::Model(ModelOp::MaxPool2d(pool([2, 2], [2, 2], Padding::Same))),
        &[x],
    );
    close(&y, &[1, 2, 2, 1], &[-1., -3., -7., -9.]);
}

#[test]
fn avg_pool_counts_only_in_image_taps() {
    // 1..9, 2x2, stride 2, SAME (padding after): (1+2+4+5)/4 = 3, (3+6)/2 = 4.5,
    // (7+8)/2 = 7.5, 9/1 = 9
    let y = ev(
        Op::Model(ModelOp::AvgPool2d(pool([2, 2], [2, 2], Padding::Same))),
        &[image3()],
    );
    close(&y, &[1, 2, 2, 1], &[3., 4.5, 7.5, 9.]);
    // explicit padding one before each axis: windows rows {-1,0},{1,2} x cols {-1,0},{1,2}:
    // 1/1 = 1, (2+3)/2 = 2.5, (4+7)/2 = 5.5, (5+6+8+9)/4 = 7
    let p = pool([2, 2], [2, 2], Padding::Explicit([1, 0, 1, 0]));
    close(
        &ev(Op::Model(ModelOp::AvgPool2d(p)), &[image3()]),
        &[1, 2, 2, 1],
        &[1., 2.5, 5.5, 7.],
    );
}

#[test]
fn global_pools() {
    // 2x2 pixels with channels (1,10) (2,-20) (3,30) (4,40):
    // avg (2.5, 15), max (4, 40)
    let x = v(&[1, 2, 2, 2], &[1., 10., 2., -20., 3., 30., 4., 40.]);
    close(
        &ev(
            Op::Model(ModelOp::GlobalAvgPool { keepdims: false }),
            &[x.clone()],
        ),
        &[1, 2],
        &[2.5, 15.],
    );
    close(
        &ev(
            Op::Model(ModelOp::GlobalAvgPool { keepdims: true }),
            &[x.clone()],
        ),
        &[1, 1, 1, 2],
        &[2.5, 15.],
    );
    close(
        &ev(Op::Model(ModelOp::GlobalMaxPool { keepdims: false }), &[x]),
        &[1, 2],
        &[4., 40.],
    );
    // max of all-negative values is not clamped at 0
    let neg = v(&[1, 1, 2, 1], &[-3., -2.]);
    close(
        &ev(Op::Model(ModelOp::GlobalMaxPool { keepdims: true }), &[neg]),
        &[1, 1, 1, 1],
        &[-2.],
    );
}

#[test]
fn mean_and_reduce_sum() {
    // [[1,2,3],[4,5,6]]: mean over axis 1 = (2, 5); over axis 0 with keepdims [[2.5,3.5,4.5]]
    let x = v(&[2, 3], &iota(6));
    let r = |axes: Vec<usize>, keepdims| ReduceAttrs { axes, keepdims };
    close(
        &ev(Op::Model(ModelOp::Mean(r(vec![1], false))), &[x.clone()]),
        &[2],
        &[2., 5.],
    );
    close(
        &ev(Op::Model(ModelOp::Mean(r(vec![0], true))), &[x]),
        &[1, 3],
        &[2.5, 3.5, 4.5],
    );
    // [2,2,2] holding 1..8 (x[i,j,k] = 1 + 4i + 2j + k), sum over axes 0 and 2:
    // j=0: 1+2+5+6 = 14, j=1: 3+4+7+8 = 22
    let x = v(&[2, 2, 2], &iota(8));
    close(
        &ev(Op::Grad(GradOp::ReduceSum(r(vec![0, 2], false))), &[x]),
        &[2],
        &[14., 22.],
    );
}

// ---- shape ops -----------------------------------------------------------------------------

#[test]
fn reshape_flatten_dropout_keep_the_data() {
    let x = v(&[1, 2, 3], &iota(6));
    close(
        &ev(
            Op::Model(ModelOp::Reshape { shape: vec![3, -1] }),
            &[x.clone()],
        ),
        &[1, 3, 2],
        &iota(6),
    );
    close(
        &ev(Op::Model(ModelOp::Flatten), &[x.clone()]),
        &[1, 6],
        &iota(6),
    );
    // dropout is the identity in inference
    close(
        &ev(Op::Model(ModelOp::Dropout { rate: f(0.5) }), &[x]),
        &[1, 2, 3],
        &iota(6),
    );
}

#[test]
fn transpose_pad_crop_slice() {
    // [[1,2,3],[4,5,6]] with perm [0,2,1]: [[1,4],[2,5],[3,6]]
    let x = v(&[1, 2, 3], &iota(6));
    close(
        &ev(
            Op::Model(ModelOp::Transpose {
                perm: vec![0, 2, 1],
            }),
            &[x],
        ),
        &[1, 3, 2],
        &[1., 4., 2., 5., 3., 6.],
    );
    // [[1,2]] padded with one row before and two columns after: [[0,0,0,0],[1,2,0,0]]
    let x = v(&[1, 1, 2], &[1., 2.]);
    let pads = vec![[0, 0], [1, 0], [0, 2]];
    close(
        &ev(Op::Model(ModelOp::Pad { pads }), &[x]),
        &[1, 2, 4],
        &[0., 0., 0., 0., 1., 2., 0., 0.],
    );
    // the 3x3 image 1..9, dropping the first row and the last column: [[4,5],[7,8]]
    let x = v(&[1, 3, 3], &iota(9));
    let crops = vec![[0, 0], [1, 0], [0, 1]];
    close(
        &ev(Op::Model(ModelOp::Crop { crops }), &[x]),
        &[1, 2, 2],
        &[4., 5., 7., 8.],
    );
    // [[1,2,3],[4,5,6]] from (1,1), size (1,2): [[5,6]]
    let x = v(&[2, 3], &iota(6));
    let s = Op::Grad(GradOp::Slice {
        begin: vec![1, 1],
        size: vec![1, 2],
    });
    close(&ev(s, &[x]), &[1, 2], &[5., 6.]);
}

#[test]
fn upsample_nearest_repeats_pixels() {
    // [[1,2],[3,4]] at scale [2,2]: each pixel becomes a 2x2 block
    let x = v(&[1, 2, 2, 1], &[1., 2., 3., 4.]);
    close(
        &ev(
            Op::Model(ModelOp::UpsampleNearest { scale: [2, 2] }),
            &[x.clone()],
        ),
        &[1, 4, 4, 1],
        &[
            1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.,
        ],
    );
    // scale [1,3]: columns only
    close(
        &ev(Op::Model(ModelOp::UpsampleNearest { scale: [1, 3] }), &[x]),
        &[1, 2, 6, 1],
        &[1., 1., 1., 2., 2., 2., 3., 3., 3., 4., 4., 4.],
    );
}

// ---- fake quantization ---------------------------------------------------------------------

fn fq(bits: u8, narrow: bool, symmetric: bool, axis: Option<usize>, range: RangeSource) -> Op {
    Op::Model(ModelOp::FakeQuant(FakeQuantAttrs {
        bits,
        narrow,
        symmetric,
        axis,
        range,
    }))
}

#[test]
fn fake_quant_last_value_per_tensor() {
    // observed range [min(0, min x), max x] = [0, 1]: 255 steps of 1/255.
    // 0.3 -> floor(0.3*255 + 0.5) = floor(77.0) = 77 -> 77/255; 0.5 -> floor(128) -> 128/255
    let x = v(&[4], &[0., 0.3, 1., 0.5]);
    let y = ev(fq(8, false, false, None, RangeSource::LastValue), &[x]);
    close(&y, &[4], &[0., 77. / 255., 1., 128. / 255.]);
}

#[test]
fn fake_quant_per_axis_weights_match_tf_nudging() {
    // TFMOT weights: 8 bits, narrow (levels 1..255), symmetric, per row (axis 0).
    // Row 0 [-1, 0.5, 0.25]: range [-1, 0.5] widens to [-1, 1]; scale 2/254 = 1/127;
    //   zero point 1 + 1/(1/127) = 128 (exact) -> nudged [-1, 1].
    //   0.5 -> floor(1.5*127 + 0.5) = 191 -> 191/127 - 1 = 64/127
    //   0.25 -> floor(1.25*127 + 0.5) = floor(159.25) = 159 -> 32/127
    // Row 1 [0, 2, -0.5]: [-0.5, 2] widens to [-2, 2]; scale 4/254 = 2/127, zero point 128.
    //   0 -> 0 exactly; 2 -> 2; -0.5 -> floor(1.5*63.5 + 0.5) = floor(95.75) = 95
    //   -> 95*2/127 - 2 = -64/127
    let x = v(&[2, 3], &[-1., 0.5, 0.25, 0., 2., -0.5]);
    let y = ev(fq(8, true, true, Some(0), RangeSource::LastValue), &[x]);
    close(
        &y,
        &[2, 3],
        &[-1., 64. / 127., 32. / 127., 0., 2., -64. / 127.],
    );
    // the same rows along axis 1 of the transposed tensor give the same values
    let xt = v(&[3, 2], &[-1., 0., 0.5, 2., 0.25, -0.5]);
    let yt = ev(fq(8, true, true, Some(1), RangeSource::LastValue), &[xt]);
    close(
        &yt,
        &[3, 2],
        &[-1., 0., 64. / 127., 2., 32. / 127., -64. / 127.],
    );
}

#[test]
fn fake_quant_fixed_range_is_nudged_so_zero_is_exact() {
    // [-0.1, 1.0], 8 bits: scale 1.1/255; zero point round(0.1/scale) = round(23.18) = 23;
    // nudged range [-23*s, 232*s]. -0.1 clamps to -23*s; 0 stays 0; 1.0 is level
    // floor((1.0 + 23s)/s + 0.5) = floor(254.82 + 0.5) = 255, the nudged max 232*s;
    // 0.5 is level floor(0.5/s + 23 + 0.5) = floor(139.41) = 139 -> (139-23)*s = 116*s
    let s = 1.1f32 / 255.;
    let x = v(&[4], &[-0.1, 0., 1.0, 0.5]);
    let y = ev(
        fq(
            8,
            false,
            false,
            None,
            RangeSource::Fixed {
                min: f(-0.1),
                max: f(1.0),
            },
        ),
        &[x],
    );
    close(&y, &[4], &[-23. * s, 0., 232. * s, 116. * s]);
}

#[test]
fn fake_quant_reads_observed_state() {
    // state params s.min = -1, s.max = 1, 8 bits. In exact arithmetic the zero point
    // would be 1/(2/255) = 127.5 -> 128, but TF computes in f32 as we do: the scale 2/255
    // rounds up to 0.0078431377, -min/scale = 127.49999 rounds to 127, and the nudged
    // range is [-127s, 128s] = [-0.99607843, 1.0039216].
    // 2 and -2 clamp to the ends; 0 stays 0; 0.5 is level floor(0.5/s + 127 + 0.5) =
    // floor(191.25) = 191 -> (191-127)*s = 64s
    let s = 2f32 / 255.;
    let mut params = ParamStore::new();
    params.insert("s.min", Tensor::scalar(-1.));
    params.insert("s.max", Tensor::scalar(1.));
    let x = v(&[4], &[2., -2., 0., 0.5]);
    let op = fq(
        8,
        false,
        false,
        None,
        RangeSource::Ema {
            state: "s".into(),
            decay: f(0.999),
        },
    );
    let y = ev_with(&op, &[x.clone()], &params).unwrap();
    close(&y, &[4], &[128. * s, -127. * s, 0., 64. * s]);
    // tied and all_values read the same state
    let tied = fq(
        8,
        false,
        false,
        None,
        RangeSource::Tied { state: "s".into() },
    );
    assert_eq!(y, ev_with(&tied, &[x.clone()], &params).unwrap());
    let all = fq(
        8,
        false,
        false,
        None,
        RangeSource::AllValues { state: "s".into() },
    );
    assert_eq!(y, ev_with(&all, &[x], &params).unwrap());
}

#[test]
fn fake_quant_state_errors_name_the_state() {
    let op = fq(
        8,
        false,
        false,
        Some(1),
        RangeSource::Ema {
            state: "s".into(),
            decay: f(0.9),
        },
    );
    let x = v(&[1, 3], &[0.; 3]);
    let missing = ev_with(&op, &[x.clone()], &ParamStore::new()).unwrap_err();
    assert!(
        missing.0.contains("`s`") && missing.0.contains("s.min"),
        "{missing}"
    );
    // a per-tensor state for a per-axis quantizer used to be read as one range silently
    let mut params = ParamStore::new();
    params.insert("s.min", Tensor::scalar(-1.));
    params.insert("s.max", Tensor::scalar(1.));
    let shape = ev_with(&op, &[x], &params).unwrap_err();
    assert!(
        shape.0.contains("s.min") && shape.0.contains("[3]"),
        "{shape}"
    );
}

#[test]
fn fake_quant_with_range_operands_per_axis_4_bit() {
    // 4 bits, levels 0..15. Channel 0 [0, 1.5]: scale 0.1, 0.26 -> floor(2.6 + 0.5) = 3 -> 0.3.
    // Channel 1 [-1, 1]: scale 2/15 rounds up in f32 (0.13333334), so -min/scale = 7.4999995
    // rounds to zero point 7 and the nudged range is [-7s, 8s]; 0.5 is level
    // floor(0.5/s + 7 + 0.5) = floor(11.25) = 11 -> (11-7)*s = 4s = 8/15
    let x = v(&[2, 2], &[0.26, 0.5, 0., 5.]);
    let op = fq(4, false, false, Some(1), RangeSource::Operands);
    let y = ev(op, &[x, v(&[2], &[0., -1.]), v(&[2], &[1.5, 1.])]);
    // row 2: 0 -> 0 in channel 0; 5 clamps to the nudged max 8s = 16/15 in channel 1
    close(&y, &[2, 2], &[0.3, 8. / 15., 0., 16. / 15.]);
}

#[test]
fn quant_marker_is_the_identity() {
    let x = v(&[3], &[0.1, -7., 3.3]);
    let y = ev(
        Op::Pass(PassOp::Quant(FakeQuantAttrs::activation("s"))),
        &[x],
    );
    close(&y, &[3], &[0.1, -7., 3.3]);
}

#[test]
fn bn_scale_and_scale_channels() {
    // gamma (4, 3), var (3, 0), epsilon 1: 4/sqrt(4) = 2, 3/sqrt(1) = 3
    let y = ev(
        Op::Pass(PassOp::BnScale { epsilon: f(1.) }),
        &[v(&[2], &[4., 3.]), v(&[2], &[3., 0.])],
    );
    close(&y, &[2], &[2., 3.]);
    // [[1,2],[3,4]] scaled by (10,100) along rows, then along columns
    let w = v(&[2, 2], &[1., 2., 3., 4.]);
    let s = v(&[2], &[10., 100.]);
    close(
        &ev(
            Op::Pass(PassOp::ScaleChannels { axis: 0 }),
            &[w.clone(), s.clone()],
        ),
        &[2, 2],
        &[10., 20., 300., 400.],
    );
    close(
        &ev(Op::Pass(PassOp::ScaleChannels { axis: 1 }), &[w, s]),
        &[2, 2],
        &[10., 200., 30., 400.],
    );
}

// ---- loss and activation gradients ---------------------------------------------------------

#[test]
fn softmax_cross_entropy_and_its_gradient() {
    // row 0 [0, ln 2], label 1: p = (1/3, 2/3), loss -ln(2/3) = ln 1.5
    // row 1 [0, 0], label 0: p = (1/2, 1/2), loss ln 2; the mean is (ln 1.5 + ln 2)/2 = ln(3)/2
    let logits = v(&[2, 2], &[0., 2f32.ln(), 0., 0.]);
    let labels = Value::labels(&[1, 0]);
    let loss = ev(
        Op::Train(TrainOp::SoftmaxCrossEntropy),
        &[logits.clone(), labels.clone()],
    );
    close(&loss, &[], &[3f32.ln() / 2.]);
    // gradient (p - onehot)/n: row 0 (1/3, -1/3)/2, row 1 (-1/2, 1/2)/2
    let g = ev(
        Op::Grad(GradOp::SoftmaxCrossEntropyGrad),
        &[logits.clone(), labels],
    );
    close(&g, &[2, 2], &[1. / 6., -1. / 6., -0.25, 0.25]);
    // a label outside the classes is an error, not a panic
    let e = ev_with(
        &Op::Train(TrainOp::SoftmaxCrossEntropy),
        &[logits, Value::labels(&[2, 0])],
        &ParamStore::new(),
    )
    .unwrap_err();
    assert!(e.0.contains("label 2") && e.0.contains("2 classes"), "{e}");
}

#[test]
fn relu_family_gradients() {
    let dy = v(&[5], &[1., 2., 3., 4., 5.]);
    // relu: x > 0 passes (x = 0 does not, as TF's ReluGrad)
    let x = v(&[5], &[-1., 0., 0.5, 6., 7.]);
    close(
        &ev(Op::Grad(GradOp::ReluGrad), &[dy.clone(), x.clone()]),
        &[5],
        &[0., 0., 3., 4., 5.],
    );
    // relu6: 0 < x < 6 passes
    close(
        &ev(Op::Grad(GradOp::Relu6Grad), &[dy.clone(), x.clone()]),
        &[5],
        &[0., 0., 3., 0., 0.],
    );
    // leaky relu alpha 0.2: x <= 0 scales by alpha: 0.2, 0.4, then 3, 4, 5
    close(
        &ev(Op::Grad(GradOp::LeakyReluGrad { alpha: f(0.2) }), &[dy, x]),
        &[5],
        &[0.2, 0.4, 3., 4., 5.],
    );
}

#[test]
fn hard_swish_gradient_at_and_between_the_kinks() {
    // d/dx x*relu6(x+3)/6 = (2x+3)/6 inside (-3, 3): -1.5 -> 0, 0 -> 0.5, 1.5 -> 1.
    // At the kinks relu6's own gradient is 0 (TF's Relu6Grad wants 0 < x+3 < 6), so
    // x = -3 gives 0*... + 0 = 0 and x = 3 gives relu6(6)/6 + 3*0 = 1 — not (2x+3)/6's
    // -0.5 and 1.5. Outside: 0 below, 1 above.
    let x = v(&[7], &[-4., -3., -1.5, 0., 1.5, 3., 4.]);
    let dy = v(&[7], &[1.; 7]);
    close(
        &ev(Op::Grad(GradOp::HardSwishGrad), &[dy, x]),
        &[7],
        &[0., 0., 0., 0.5, 1., 1., 1.],
    );
}

#[test]
fn sigmoid_tanh_softmax_gradients_take_the_output() {
    // sigmoid: dy*y*(1-y): y 0.5 -> 0.25; y 0.75, dy 2 -> 2*0.1875 = 0.375
    let g = ev(
        Op::Grad(GradOp::SigmoidGrad),
        &[v(&[2], &[1., 2.]), v(&[2], &[0.5, 0.75])],
    );
    close(&g, &[2], &[0.25, 0.375]);
    // tanh: dy*(1-y^2): y 0 -> 1, y 0.6 -> 0.64
    let g = ev(
        Op::Grad(GradOp::TanhGrad),
        &[v(&[2], &[1., 1.]), v(&[2], &[0., 0.6])],
    );
    close(&g, &[2], &[1., 0.64]);
    // softmax: y*(dy - dy.y): y (1/3, 2/3), dy (1, 0): dy.y = 1/3 -> (1/3*2/3, 2/3*-1/3)
    let g = ev(
        Op::Grad(GradOp::SoftmaxGrad),
        &[v(&[1, 2], &[1., 0.]), v(&[1, 2], &[1. / 3., 2. / 3.])],
    );
    close(&g, &[1, 2], &[2. / 9., -2. / 9.]);
}

#[test]
fn fake_quant_gradient_is_straight_through_inside_the_nudged_range() {
    // [-1, 1] at 8 bits nudges to [-0.99607843, 1.0039216] (see
    // fake_quant_reads_observed_state): -1.0 is below the nudged min (0), 0.5 and 1.003 are
    // inside (dy), 1.1 is above (0)
    let x = v(&[4], &[-1., 0.5, 1.003, 1.1]);
    let dy = v(&[4], &[3., 3., 3., 3.]);
    let op = Op::Grad(GradOp::FakeQuantGrad(FakeQuantAttrs {
        bits: 8,
        narrow: false,
        symmetric: false,
        axis: None,
        range: RangeSource::Operands,
    }));
    let g = ev(op, &[dy, x, scalar(-1.), scalar(1.)]);
    close(&g, &[4], &[0., 3., 3., 0.]);
    // per axis: channel ranges [0, 1] and [-1, 0]: 0.5 in / out, -0.5 out / in
    let op = Op::Grad(GradOp::FakeQuantGrad(FakeQuantAttrs {
        bits: 8,
        narrow: false,
        symmetric: false,
        axis: Some(1),
        range: RangeSource::Operands,
    }));
    let x = v(&[2, 2], &[0.5, 0.5, -0.5, -0.5]);
    let g = ev(
        op,
        &[
            v(&[2, 2], &[1.; 4]),
            x,
            v(&[2], &[0., -1.]),
            v(&[2], &[1., 0.]),
        ],
    );
    close(&g, &[2, 2], &[1., 0., 0., 1.]);
}

// ---- convolution gradients -----------------------------------------------------------------

#[test]
fn conv2d_grad_input_and_filter() {
    // forward: row x (width 3), kernel [1,10], valid: y[o] = x[o] + 10 x[o+1]
    // dx[i] = sum_o dy[o] w[i-o]: dy (1,2) -> dx (1*1, 1*10 + 2*1, 2*10) = (1, 12, 20)
    let c = conv([1, 1], Padding::Valid, [1, 1]);
    let dy = v(&[1, 1, 2, 1], &[1., 2.]);
    let k = v(&[1, 1, 2, 1], &[1., 10.]);
    let op = Op::Grad(GradOp::Conv2dGradInput {
        conv: c.clone(),
        input_shape: vec![1, 1, 3, 1],
    });
    close(&ev(op, &[dy.clone(), k]), &[1, 1, 3, 1], &[1., 12., 20.]);
    // dw[k] = sum_o dy[o] x[o+k]: x (1,2,3): dw0 = 1*1 + 2*2 = 5, dw1 = 1*2 + 2*3 = 8
    let x = v(&[1, 1, 3, 1], &[1., 2., 3.]);
    let op = Op::Grad(GradOp::Conv2dGradFilter {
        conv: c,
        filter_shape: vec![1, 1, 2, 1],
    });
    close(&ev(op, &[dy, x]), &[1, 1, 2, 1], &[5., 8.]);
}

#[test]
fn conv2d_grad_input_with_stride_2_same() {
    // width 4, kernel [1,2,3], stride 2, SAME: out 2, padding 1 after; output o reads
    // x[2o .. 2o+2]. dy (1, 10): dx0 = 1*1, dx1 = 1*2, dx2 = 1*3 + 10*1, dx3 = 10*2
    let op = Op::Grad(GradOp::Conv2dGradInput {
        conv: conv([1, 2], Padding::Same, [1, 1]),
        input_shape: vec![1, 1, 4, 1],
    });
    let y = ev(
        op,
        &[
            v(&[1, 1, 2, 1], &[1., 10.]),
            v(&[1, 1, 3, 1], &[1., 2., 3.]),
        ],
    );
    close(&y, &[1, 1, 4, 1], &[1., 2., 13., 20.]);
}

#[test]
fn depthwise_conv2d_gradients() {
    // two channels over width 3: x pixels (1,10) (2,20) (3,30); kernel taps (1,2) and (3,4)
    // forward y[o][c] = x[o][c] k0[c] + x[o+1][c] k1[c]; dy = ones (width 2)
    //   dx[i][c] = sum_o dy[o][c] k[i-o][c]: c0 (1, 3+1, 3) = (1,4,3); c1 (2, 4+2, 4) = (2,6,4)
    //   dk[t][c] = sum_o x[o+t][c]: t0 (1+2, 10+20) = (3,30); t1 (2+3, 20+30) = (5,50)
    let c = conv([1, 1], Padding::Valid, [1, 1]);
    let dy = v(&[1, 1, 2, 2], &[1.; 4]);
    let k = v(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let x = v(&[1, 1, 3, 2], &[1., 10., 2., 20., 3., 30.]);
    let op = Op::Grad(GradOp::DepthwiseConv2dGradInput {
        conv: c.clone(),
        input_shape: vec![1, 1, 3, 2],
    });
    close(
        &ev(op, &[dy.clone(), k]),
        &[1, 1, 3, 2],
        &[1., 2., 4., 6., 3., 4.],
    );
    let op = Op::Grad(GradOp::DepthwiseConv2dGradFilter {
        conv: c.clone(),
        filter_shape: vec![1, 1, 2, 2],
    });
    close(&ev(op, &[dy, x]), &[1, 1, 2, 2], &[3., 30., 5., 50.]);
    // multiplier 2 on one channel, 1x1 kernel (3,4): y[i] = (3 x[i], 4 x[i]).
    // dy (1,0),(0,1): dx = (3, 4); dk[m] = sum_i dy[i][m] x[i] with x (1,2): (1, 2)
    let dy = v(&[1, 1, 2, 2], &[1., 0., 0., 1.]);
    let op = Op::Grad(GradOp::DepthwiseConv2dGradInput {
        conv: c.clone(),
        input_shape: vec![1, 1, 2, 1],
    });
    close(
        &ev(op, &[dy.clone(), v(&[1, 1, 1, 2], &[3., 4.])]),
        &[1, 1, 2, 1],
        &[3., 4.],
    );
    let op = Op::Grad(GradOp::DepthwiseConv2dGradFilter {
        conv: c,
        filter_shape: vec![1, 1, 1, 2],
    });
    close(
        &ev(op, &[dy, v(&[1, 1, 2, 1], &[1., 2.])]),
        &[1, 1, 1, 2],
        &[1., 2.],
    );
}

#[test]
fn conv2d_transpose_gradients() {
    // forward (see conv2d_transpose_same_overlaps_and_crops): y[i - 0 + k] += x[i] w[k],
    // width 2 -> 2 (SAME, stride 1, padding 1 after). w = (1, 10), x = (1, 2), dy = (1, 2):
    //   dx[i] = sum_k dy[i+k] w[k]: dx0 = 1*1 + 2*10 = 21, dx1 = 2*1 (+ dy[2] cropped) = 2
    //   dw[k] = sum_i dy[i+k] x[i]: dw0 = 1*1 + 2*2 = 5, dw1 = 2*1 = 2
    let c = conv([1, 1], Padding::Same, [1, 1]);
    let dy = v(&[1, 1, 2, 1], &[1., 2.]);
    let op = Op::Grad(GradOp::Conv2dTransposeGradInput {
        conv: c.clone(),
        input_shape: vec![1, 1, 2, 1],
    });
    close(
        &ev(op, &[dy.clone(), v(&[1, 1, 2, 1], &[1., 10.])]),
        &[1, 1, 2, 1],
        &[21., 2.],
    );
    let op = Op::Grad(GradOp::Conv2dTransposeGradFilter {
        conv: c,
        filter_shape: vec![1, 1, 2, 1],
    });
    close(
        &ev(op, &[dy, v(&[1, 1, 2, 1], &[1., 2.])]),
        &[1, 1, 2, 1],
        &[5., 2.],
    );
}

#[test]
fn dense_gradients() {
    // dx = dy . W: dy (1,2), W rows (1,0,-1), (0.5,0.5,0.5) -> (1+1, 0+1, -1+1) = (2,1,0)
    let w = v(&[2, 3], &[1., 0., -1., 0.5, 0.5, 0.5]);
    close(
        &ev(
            Op::Grad(GradOp::DenseGradInput),
            &[v(&[1, 2], &[1., 2.]), w],
        ),
        &[1, 3],
        &[2., 1., 0.],
    );
    // dW[o][i] = sum_b dy[b][o] x[b][i]: dy rows (1,0), (0,2), x rows (1,2,3), (4,5,6):
    // o0 = (1,2,3), o1 = 2*(4,5,6)
    let dy = v(&[2, 2], &[1., 0., 0., 2.]);
    let x = v(&[2, 3], &iota(6));
    close(
        &ev(Op::Grad(GradOp::DenseGradWeight), &[dy, x]),
        &[2, 3],
        &[1., 2., 3., 8., 10., 12.],
    );
}

// ---- batch statistics ----------------------------------------------------------------------

#[test]
fn batch_norm_train_mean_and_var() {
    // one channel [-1, 0, 1]: mean 0, biased var 2/3; epsilon 1/3 makes var + eps = 1, so
    // x_hat = x. gamma 2, beta 1: y = 2x + 1 = (-1, 1, 3)
    let x = v(&[3, 1], &[-1., 0., 1.]);
    let y = ev(
        Op::Train(TrainOp::BatchNormTrain {
            epsilon: f(1. / 3.),
        }),
        &[x, v(&[1], &[2.]), v(&[1], &[1.])],
    );
    close(&y, &[3, 1], &[-1., 1., 3.]);
    // two channels over a batch of 2: (1,10), (3,30): mean (2, 20), biased var (1, 100),
    // unbiased (n/(n-1) = 2) (2, 200)
    let x = v(&[2, 2], &[1., 10., 3., 30.]);
    close(
        &ev(Op::Train(TrainOp::BatchMean), &[x.clone()]),
        &[2],
        &[2., 20.],
    );
    close(
        &ev(
            Op::Train(TrainOp::BatchVar { unbiased: false }),
            &[x.clone()],
        ),
        &[2],
        &[1., 100.],
    );
    close(
        &ev(Op::Train(TrainOp::BatchVar { unbiased: true }), &[x]),
        &[2],
        &[2., 200.],
    );
}

#[test]
fn batch_norm_gradients() {
    // x = (-1, 0, 1), epsilon 1/3: mean 0, var + eps = 1, x_hat = x, m = 3, gamma 3.
    // dx = gamma/m (m dy - sum dy - x_hat sum(dy x_hat)).
    // dy = (1, 0, 0): sum dy = 1, sum dy x_hat = -1:
    //   dx = (3/3)(3dy - 1 + x_hat) = (3-1-1, 0-1+0, 0-1+1) = (1, -1, 0)
    let eps = f(1. / 3.);
    let x = v(&[3, 1], &[-1., 0., 1.]);
    let g = v(&[1], &[3.]);
    let dx = ev(
        Op::Grad(GradOp::BatchNormGradInput { epsilon: eps }),
        &[v(&[3, 1], &[1., 0., 0.]), x.clone(), g.clone()],
    );
    close(&dx, &[3, 1], &[1., -1., 0.]);
    // a constant dy moves only the mean, which normalization removes: dx = 0
    let dx = ev(
        Op::Grad(GradOp::BatchNormGradInput { epsilon: eps }),
        &[v(&[3, 1], &[5.; 3]), x.clone(), g],
    );
    close(&dx, &[3, 1], &[0., 0., 0.]);
    // dgamma = sum dy x_hat: dy (1, 2, 4) -> -1 + 0 + 4 = 3
    let dg = ev(
        Op::Grad(GradOp::BatchNormGradGamma { epsilon: eps }),
        &[v(&[3, 1], &[1., 2., 4.]), x],
    );
    close(&dg, &[1], &[3.]);
}

// ---- pool gradients ------------------------------------------------------------------------

#[test]
fn max_pool_gradient_goes_to_the_first_maximum() {
    // 2x2 window over [[1,3],[2,3]]: the max 3 appears twice; the first in window order,
    // (0,1), takes all of dy = 5
    let x = v(&[1, 2, 2, 1], &[1., 3., 2., 3.]);
    let op = Op::Grad(GradOp::MaxPool2dGrad(pool([2, 2], [2, 2], Padding::Valid)));
    close(
        &ev(op, &[v(&[1, 1, 1, 1], &[5.]), x]),
        &[1, 2, 2, 1],
        &[0., 5., 0., 0.],
    );
    // overlapping windows {0,1} and {1,2} of (1,5,2) both pick 5: dx = (0, 1+10, 0)
    let x = v(&[1, 1, 3, 1], &[1., 5., 2.]);
    let op = Op::Grad(GradOp::MaxPool2dGrad(pool([1, 2], [1, 1], Padding::Valid)));
    close(
        &ev(op, &[v(&[1, 1, 2, 1], &[1., 10.]), x]),
        &[1, 1, 3, 1],
        &[0., 11., 0.],
    );
}

#[test]
fn avg_pool_gradient_divides_by_in_image_taps() {
    // the SAME 2x2/2 pool of avg_pool_counts_only_in_image_taps has windows of 4, 2, 2 and 1
    // pixels; dy (4, 2, 2, 1) divided by those counts is 1 everywhere, and every pixel is in
    // exactly one window: dx = ones
    let op = Op::Grad(GradOp::AvgPool2dGrad {
        pool: pool([2, 2], [2, 2], Padding::Same),
        input_shape: vec![1, 3, 3, 1],
    });
    close(
        &ev(op, &[v(&[1, 2, 2, 1], &[4., 2., 2., 1.])]),
        &[1, 3, 3, 1],
        &[1.; 9],
    );
}

#[test]
fn global_pool_and_mean_gradients() {
    // global average over 2x2: each pixel gets dy/4: dy (4, 8) -> (1, 2) per pixel
    let op = Op::Grad(GradOp::GlobalAvgPoolGrad {
        input_shape: vec![1, 2, 2, 2],
    });
    close(
        &ev(op, &[v(&[1, 2], &[4., 8.])]),
        &[1, 2, 2, 2],
        &[1., 2., 1., 2., 1., 2., 1., 2.],
    );
    // global max: x (1,4,4,2) has its max 4 twice; the first, pixel 1, takes dy = 7
    let x = v(&[1, 2, 2, 1], &[1., 4., 4., 2.]);
    close(
        &ev(
            Op::Grad(GradOp::GlobalMaxPoolGrad),
            &[v(&[1, 1], &[7.]), x.clone()],
        ),
        &[1, 2, 2, 1],
        &[0., 7., 0., 0.],
    );
    // with a keepdims dy [n,1,1,c] too
    close(
        &ev(
            Op::Grad(GradOp::GlobalMaxPoolGrad),
            &[v(&[1, 1, 1, 1], &[7.]), x],
        ),
        &[1, 2, 2, 1],
        &[0., 7., 0., 0.],
    );
    // mean over axis 1 of [2,3]: each element gets dy/3: dy (3, 6) -> rows of 1 and 2
    let op = Op::Grad(GradOp::MeanGrad {
        axes: vec![1],
        input_shape: vec![2, 3],
    });
    close(
        &ev(op, &[v(&[2], &[3., 6.])]),
        &[2, 3],
        &[1., 1., 1., 2., 2., 2.],
    );
}

#[test]
fn upsample_nearest_gradient_sums_each_block() {
    // dy [1,2,4,1] = 1..8 at scale [1,2]: (1+2, 3+4), (5+6, 7+8)
    let op = Op::Grad(GradOp::UpsampleNearestGrad { scale: [1, 2] });
    close(
        &ev(op, &[v(&[1, 2, 4, 1], &iota(8))]),
        &[1, 2, 2, 1],
        &[3., 7., 11., 15.],
    );
}

#[test]
fn dropout_mask_is_deterministic_and_scaled() {
    let mask = |rate: f32, seed: u64, step: f32| {
        ev(
            Op::Train(TrainOp::DropoutMask {
                rate: f(rate),
                seed,
                shape: vec![100, 100],
            }),
            &[scalar(step)],
        )
    };
    // rate 0 keeps everything with scale 1/(1-0) = 1
    assert!(mask(0., 1, 0.).data.iter().all(|&m| m == 1.));
    // rate 0.5: every entry is 0 or 1/(1-0.5) = 2, about half each, the same for the same
    // (seed, step) and different for another step
    let a = mask(0.5, 7, 3.);
    assert!(a.data.iter().all(|&m| m == 0. || m == 2.));
    let kept = a.data.iter().filter(|&&m| m == 2.).count() as f32 / 10_000.;
    assert!((kept - 0.5).abs() < 0.02, "kept {kept}");
    assert_eq!(a, mask(0.5, 7, 3.));
    assert_ne!(a, mask(0.5, 7, 4.));
    assert_ne!(a, mask(0.5, 8, 3.));
}

// ---- state updates -------------------------------------------------------------------------

#[test]
fn moving_average_sgd_and_adam() {
    // moving average, momentum 0.75: 0.75*1 + 0.25*3 = 1.5
    let y = ev(
        Op::Update(UpdateOp::MovingAverage { momentum: f(0.75) }),
        &[v(&[1], &[1.]), v(&[1], &[3.])],
    );
    close(&y, &[1], &[1.5]);
    // SGD velocity, momentum 0.9, lr 0.5: 0.9*1 - 0.5*2 = -0.1
    let y = ev(
        Op::Update(UpdateOp::SgdVelocity { momentum: f(0.9) }),
        &[v(&[1], &[1.]), v(&[1], &[2.]), scalar(0.5)],
    );
    close(&y, &[1], &[-0.1]);
    // Adam moments: 0.9*1 + 0.1*3 = 1.2; 0.999*1 + 0.001*2^2 = 1.003
    let m = ev(
        Op::Update(UpdateOp::AdamMoment { beta: f(0.9) }),
        &[v(&[1], &[1.]), v(&[1], &[3.])],
    );
    close(&m, &[1], &[1.2]);
    let s = ev(
        Op::Update(UpdateOp::AdamMomentSq { beta: f(0.999) }),
        &[v(&[1], &[1.]), v(&[1], &[2.])],
    );
    close(&s, &[1], &[1.003]);
    // adam_apply without epsilon: 1 - 0.1 * 0.5/sqrt(4) = 0.975
    let p = ev(
        Op::Update(UpdateOp::AdamApply { epsilon: f(0.) }),
        &[v(&[1], &[1.]), v(&[1], &[0.5]), v(&[1], &[4.]), scalar(0.1)],
    );
    close(&p, &[1], &[0.975]);
}

#[test]
fn first_adam_step_moves_each_weight_by_lr() {
    // Keras Adam, step 1 from zero moments: m = (1-b1) g, v = (1-b2) g^2, and the host's
    // bias-corrected lr_t = lr sqrt(1-b2)/(1-b1). Then lr_t m/sqrt(v) = lr sign(g): every
    // weight moves by lr against its gradient, whatever the gradient's size.
    let (b1, b2, lr) = (0.9f32, 0.999f32, 0.01f32);
    let g = v(&[3], &[3., -0.02, 50.]);
    let zero = v(&[3], &[0.; 3]);
    let m = ev(
        Op::Update(UpdateOp::AdamMoment { beta: f(b1) }),
        &[zero.clone(), g.clone()],
    );
    let s = ev(
        Op::Update(UpdateOp::AdamMomentSq { beta: f(b2) }),
        &[zero, g],
    );
    let lr_t = lr * (1. - b2).sqrt() / (1. - b1);
    let p = ev(
        Op::Update(UpdateOp::AdamApply { epsilon: f(1e-7) }),
        &[
            v(&[3], &[1., 1., 1.]),
            Value::F32(m),
            Value::F32(s),
            scalar(lr_t),
        ],
    );
    assert!(
        p.max_abs_diff(&Tensor::new(vec![3], vec![0.99, 1.01, 0.99])) < 1e-4,
        "{p:?}"
    );
}

#[test]
fn observers() {
    // [[1,-2],[3,4]]: per tensor min -2, max 4; per column (axis 1) the minimum includes 0:
    // min (0, -2), max (3, 4)
    let x = v(&[2, 2], &[1., -2., 3., 4.]);
    close(
        &ev(
            Op::Update(UpdateOp::ObserveMin { axis: None }),
            &[x.clone()],
        ),
        &[],
        &[-2.],
    );
    close(
        &ev(
            Op::Update(UpdateOp::ObserveMax { axis: None }),
            &[x.clone()],
        ),
        &[],
        &[4.],
    );
    close(
        &ev(
            Op::Update(UpdateOp::ObserveMin { axis: Some(1) }),
            &[x.clone()],
        ),
        &[2],
        &[0., -2.],
    );
    close(
        &ev(Op::Update(UpdateOp::ObserveMax { axis: Some(1) }), &[x]),
        &[2],
        &[3., 4.],
    );
    // all positive: the range still includes 0
    close(
        &ev(
            Op::Update(UpdateOp::ObserveMin { axis: None }),
            &[v(&[2], &[1., 2.])],
        ),
        &[],
        &[0.],
    );
}

#[test]
fn ema_and_running_observers_start_from_the_first_batch() {
    let old = v(&[2], &[5., -5.]);
    let value = v(&[2], &[1., 1.]);
    // step 0: the value itself (no ±6 start, no debiasing)
    let ema = |step| {
        ev(
            Op::Update(UpdateOp::EmaUpdate { decay: f(0.9) }),
            &[old.clone(), value.clone(), scalar(step)],
        )
    };
    close(&ema(0.), &[2], &[1., 1.]);
    // later: 0.9*5 + 0.1*1 = 4.6, 0.9*-5 + 0.1*1 = -4.4
    close(&ema(3.), &[2], &[4.6, -4.4]);
    let run = |op: Op, step| ev(op, &[old.clone(), value.clone(), scalar(step)]);
    close(&run(Op::Update(UpdateOp::RunningMin), 0.), &[2], &[1., 1.]);
    close(&run(Op::Update(UpdateOp::RunningMin), 1.), &[2], &[1., -5.]);
    close(&run(Op::Update(UpdateOp::RunningMax), 0.), &[2], &[1., 1.]);
    close(&run(Op::Update(UpdateOp::RunningMax), 1.), &[2], &[5., 1.]);
}

// ---- adjoint identities --------------------------------------------------------------------

/// Deterministic values in [-1, 1).
fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.
        })
        .collect()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape, b.shape);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum()
}

fn rand_t(shape: &[usize], seed: u32) -> Tensor {
    Tensor::new(shape.to_vec(), noise(shape.iter().product(), seed))
}

/// `<forward(x), dy> == <x, backward(dy)>` for a forward op linear in `x`.
#[track_caller]
fn adjoint(
    forward: &dyn Fn(&Tensor) -> Tensor,
    backward: &dyn Fn(&Tensor) -> Tensor,
    x_shape: &[usize],
) {
    let x = rand_t(x_shape, 1);
    let y = forward(&x);
    let dy = rand_t(&y.shape, 2);
    let dx = backward(&dy);
    let (lhs, rhs) = (dot(&y, &dy), dot(&x, &dx));
    assert!(
        (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.),
        "<f(x),dy> = {lhs}, <x,f'(dy)> = {rhs}"
    );
}

fn t(x: &Tensor) -> Value {
    Value::F32(x.clone())
}

#[test]
fn convolution_gradients_are_adjoint_to_their_forward_ops() {
    let cases = [
        conv([1, 1], Padding::Valid, [1, 1]),
        conv([2, 2], Padding::Same, [1, 1]),
        conv([2, 1], Padding::Same, [2, 2]),
        conv([1, 2], Padding::Explicit([1, 0, 2, 1]), [1, 1]),
    ];
    for c in cases {
        let x_shape = [2, 7, 6, 3];
        // conv2d: kernel [4,3,3,3]
        let k = rand_t(&[4, 3, 3, 3], 3);
        let fwd = |x: &Tensor| ev(Op::Model(ModelOp::Conv2d(c.clone())), &[t(x), t(&k)]);
        let bwd = |dy: &Tensor| {
            ev(
                Op::Grad(GradOp::Conv2dGradInput {
                    conv: c.clone(),
                    input_shape: x_shape.to_vec(),
                }),
                &[t(dy), t(&k)],
            )
        };
        adjoint(&fwd, &bwd, &x_shape);
        // ... and linear in the kernel for a fixed input
        let x = rand_t(&x_shape, 4);
        let fwd = |k: &Tensor| ev(Op::Model(ModelOp::Conv2d(c.clone())), &[t(&x), t(k)]);
        let bwd = |dy: &Tensor| {
            ev(
                Op::Grad(GradOp::Conv2dGradFilter {
                    conv: c.clone(),
                    filter_shape: vec![4, 3, 3, 3],
                }),
                &[t(dy), t(&x)],
            )
        };
        adjoint(&fwd, &bwd, &[4, 3, 3, 3]);
        // depthwise, multiplier 2: kernel [1,3,3,6]
        let k = rand_t(&[1, 3, 3, 6], 5);
        let fwd = |x: &Tensor| {
            ev(
                Op::Model(ModelOp::DepthwiseConv2d(c.clone())),
                &[t(x), t(&k)],
            )
        };
        let bwd = |dy: &Tensor| {
            ev(
                Op::Grad(GradOp::DepthwiseConv2dGradInput {
                    conv: c.clone(),
                    input_shape: x_shape.to_vec(),
                }),
                &[t(dy), t(&k)],
            )
        };
        adjoint(&fwd, &bwd, &x_shape);
        let fwd = |k: &Tensor| {
            ev(
                Op::Model(ModelOp::DepthwiseConv2d(c.clone())),
                &[t(&x), t(k)],
            )
        };
        let bwd = |dy: &Tensor| {
            ev(
                Op::Grad(GradOp::DepthwiseConv2dGradFilter {
                    conv: c.clone(),
                    filter_shape: vec![1, 3, 3, 6],
                }),
                &[t(dy), t(&x)],
            )
        };
        adjoint(&fwd, &bwd, &[1, 3, 3, 6]);
    }
    // conv2d_transpose: same, valid (kernel both larger and smaller than the stride), explicit
    let cases = [
        (conv([2, 2], Padding::Same, [1, 1]), [3, 3]),
        (conv([2, 3], Padding::Valid, [1, 1]), [3, 2]),
        (conv([3, 3], Padding::Valid, [1, 1]), [1, 2]),
        (
            conv([1, 2], Padding::Explicit([1, 0, 0, 1]), [2, 1]),
            [3, 3],
        ),
    ];
    for (c, [kh, kw]) in cases {
        let x_shape = [2, 4, 3, 3];
        let k_shape = [2, kh, kw, 3];
        let k = rand_t(&k_shape, 6);
        let fwd = |x: &Tensor| {
            ev(
                Op::Model(ModelOp::Conv2dTranspose(c.clone())),
                &[t(x), t(&k)],
            )
        };
        let bwd = |dy: &Tensor| {
            ev(
                Op::Grad(GradOp::Conv2dTransposeGradInput {
                    conv: c.clone(),
                    input_shape: x_shape.to_vec(),
                }),
                &[t(dy), t(&k)],
            )
        };
        adjoint(&fwd, &bwd, &x_shape);
        let x = rand_t(&x_shape, 7);
        let fwd = |k: &Tensor| {
            ev(
                Op::Model(ModelOp::Conv2dTranspose(c.clone())),
                &[t(&x), t(k)],
            )
        };
        let bwd = |dy: &Tensor| {
            ev(
                Op::Grad(GradOp::Conv2dTransposeGradFilter {
                    conv: c.clone(),
                    filter_shape: k_shape.to_vec(),
                }),
                &[t(dy), t(&x)],
            )
        };
        adjoint(&fwd, &bwd, &k_shape);
    }
}

#[test]
fn linear_gradients_are_adjoint_to_their_forward_ops() {
    let none = Activation::None;
    // dense in the input and in the kernel
    let k = rand_t(&[5, 3], 3);
    adjoint(
        &|x| {
            ev(
                Op::Model(ModelOp::Dense { activation: none }),
                &[t(x), t(&k)],
            )
        },
        &|dy| ev(Op::Grad(GradOp::DenseGradInput), &[t(dy), t(&k)]),
        &[4, 3],
    );
    let x = rand_t(&[4, 3], 4);
    adjoint(
        &|k| {
            ev(
                Op::Model(ModelOp::Dense { activation: none }),
                &[t(&x), t(k)],
            )
        },
        &|dy| ev(Op::Grad(GradOp::DenseGradWeight), &[t(dy), t(&x)]),
        &[5, 3],
    );
    // average pools with SAME and explicit padding
    for p in [
        pool([3, 3], [2, 2], Padding::Same),
        pool([2, 3], [1, 2], Padding::Explicit([1, 0, 2, 1])),
    ] {
        let shape = [2, 7, 6, 3];
        adjoint(
            &|x| ev(Op::Model(ModelOp::AvgPool2d(p.clone())), &[t(x)]),
            &|dy| {
                ev(
                    Op::Grad(GradOp::AvgPool2dGrad {
                        pool: p.clone(),
                        input_shape: shape.to_vec(),
                    }),
                    &[t(dy)],
                )
            },
            &shape,
        );
    }
    let shape = [2, 3, 4, 5];
    adjoint(
        &|x| {
            ev(
                Op::Model(ModelOp::GlobalAvgPool { keepdims: false }),
                &[t(x)],
            )
        },
        &|dy| {
            ev(
                Op::Grad(GradOp::GlobalAvgPoolGrad {
                    input_shape: shape.to_vec(),
                }),
                &[t(dy)],
            )
        },
        &shape,
    );
    let r = ReduceAttrs {
        axes: vec![3, 1],
        keepdims: false,
    };
    adjoint(
        &|x| ev(Op::Model(ModelOp::Mean(r.clone())), &[t(x)]),
        &|dy| {
            ev(
                Op::Grad(GradOp::MeanGrad {
                    axes: vec![3, 1],
                    input_shape: shape.to_vec(),
                }),
                &[t(dy)],
            )
        },
        &shape,
    );
    adjoint(
        &|x| {
            ev(
                Op::Model(ModelOp::UpsampleNearest { scale: [2, 3] }),
                &[t(x)],
            )
        },
        &|dy| {
            ev(
                Op::Grad(GradOp::UpsampleNearestGrad { scale: [2, 3] }),
                &[t(dy)],
            )
        },
        &shape,
    );
}

#[test]
fn labels_must_be_i32() {
    // the interpreter refuses f32 labels through infer, not with a panic
    let e = ev_with(
        &Op::Train(TrainOp::SoftmaxCrossEntropy),
        &[v(&[1, 2], &[0., 0.]), v(&[1], &[0.])],
        &ParamStore::new(),
    )
    .unwrap_err();
    assert!(e.0.contains("i32[1]"), "{e}");
}
