//! Every op kind, alone in a graph, on random inputs: JIT vs `ir::interp`, with FMA on and
//! off and on 1 and 2 threads (see `jit_common` for the tolerance). Shapes are chosen to hit
//! the vector body, the scalar tail, borders and interiors of windows, and the thread split.

mod jit_common;

use jit_common::*;
use qatc::ir::interp::Value;
use qatc::ir::op::*;
use qatc::ir::{DType, Graph, ParamStore, TensorType};

/// An operand of a single-op test graph.
#[derive(Clone)]
enum A {
    /// A random f32 input of this shape, uniform in `[lo, hi)`.
    F(&'static [usize], f32, f32),
    /// A dynamic f32 input of this shape.
    Fv(Vec<usize>, f32, f32),
    /// An f32 scalar input with this value.
    S(f32),
    /// i32 labels: `n` of them below `classes`.
    L(usize, usize),
}

fn case(name: &str, op: Op, args: &[A], seed: u64) -> (Graph, ParamStore, Vec<(String, Value)>) {
    let mut r = rng(seed);
    let mut g = Graph::new(name);
    let mut ids = Vec::new();
    let mut inputs = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let n = format!("a{i}");
        let (ty, v) = match a {
            A::F(s, lo, hi) => {
                let t = rand_tensor(&mut r, s, *lo, *hi);
                (TensorType::f32(s.to_vec()), Value::F32(t))
            }
            A::Fv(s, lo, hi) => {
                let t = rand_tensor(&mut r, s, *lo, *hi);
                (TensorType::f32(s.clone()), Value::F32(t))
            }
            A::S(v) => (
                TensorType::f32(vec![]),
                Value::F32(qatc::ir::Tensor::scalar(*v)),
            ),
            A::L(n, classes) => {
                let data: Vec<i32> = (0..*n)
                    .map(|_| r.random_range(0..*classes as i32))
                    .collect();
                (
                    TensorType::new(DType::I32, vec![*n]),
                    Value::I32 {
                        shape: vec![*n],
                        data,
                    },
                )
            }
        };
        ids.push(g.add_input(&n, ty).unwrap());
        inputs.push((n, v));
    }
    let y = g.add(op, "y", &ids).unwrap();
    g.add_output("y", y);
    (g, ParamStore::new(), inputs)
}

fn run(name: &str, op: Op, args: &[A]) {
    let (g, p, inputs) = case(name, op, args, 7);
    check_graph(&g, &p, &inputs, RTOL);
}

fn run_exact(name: &str, op: Op, args: &[A]) {
    let (g, p, inputs) = case(name, op, args, 11);
    check_graph(&g, &p, &inputs, 0.0);
}

use rand::RngExt;
use A::*;

fn conv(stride: usize, padding: Padding, dilation: usize, act: Activation) -> ConvAttrs {
    ConvAttrs {
        stride: [stride, stride],
        padding,
        dilation: [dilation, dilation],
        activation: act,
    }
}

fn pool(size: usize, stride: usize, padding: Padding) -> PoolAttrs {
    PoolAttrs {
        size: [size, size],
        stride: [stride, stride],
        padding,
    }
}

// ---- elementwise --------------------------------------------------------------------------

#[test]
fn activations() {
    let s: &[usize] = &[2, 5, 3, 7];
    run("relu", Op::Model(ModelOp::Relu), &[F(s, -2.0, 2.0)]);
    run("relu6", Op::Model(ModelOp::Relu6), &[F(s, -3.0, 9.0)]);
    run(
        "leaky_relu",
        Op::Model(ModelOp::LeakyRelu { alpha: F32(0.2) }),
        &[F(s, -2.0, 2.0)],
    );
    run(
        "thresholded_relu",
        Op::Model(ModelOp::ThresholdedRelu { theta: F32(0.5) }),
        &[F(s, -2.0, 2.0)],
    );
    run(
        "prelu",
        Op::Model(ModelOp::PRelu),
        &[F(&[2, 3, 3, 4], -2.0, 2.0), F(&[1, 1, 4], -0.5, 0.5)],
    );
    run(
        "hard_swish",
        Op::Model(ModelOp::HardSwish),
        &[F(s, -5.0, 5.0)],
    );
    run("sigmoid", Op::Model(ModelOp::Sigmoid), &[F(s, -9.0, 9.0)]);
    run("tanh", Op::Model(ModelOp::Tanh), &[F(s, -5.0, 5.0)]);
    run(
        "dropout_identity",
        Op::Model(ModelOp::Dropout { rate: F32(0.5) }),
        &[F(s, -1.0, 1.0)],
    );
    // large enough to be split over threads
    run(
        "relu_big",
        Op::Model(ModelOp::Relu),
        &[F(&[4, 33, 33, 8], -2.0, 2.0)],
    );
}

#[test]
fn binary_broadcasting() {
    for act in [Activation::None, Activation::Relu, Activation::Relu6] {
        run(
            "add",
            Op::Model(ModelOp::Add { activation: act }),
            &[F(&[2, 4, 4, 6], -4.0, 8.0), F(&[2, 4, 4, 6], -4.0, 4.0)],
        );
        run(
            "sub_bcast_c",
            Op::Model(ModelOp::Sub { activation: act }),
            &[F(&[2, 4, 4, 6], -4.0, 8.0), F(&[6], -1.0, 1.0)],
        );
        run(
            "mul_bcast_nc",
            Op::Model(ModelOp::Mul { activation: act }),
            &[F(&[2, 4, 4, 6], -4.0, 8.0), F(&[2, 1, 1, 6], -1.0, 1.0)],
        );
        run(
            "add_scalar",
            Op::Model(ModelOp::Add { activation: act }),
            &[F(&[3, 5], -4.0, 8.0), F(&[], -1.0, 1.0)],
        );
        run(
            "mul_bcast_left",
            Op::Model(ModelOp::Mul { activation: act }),
            &[F(&[1, 5], -2.0, 2.0), F(&[3, 1], -1.0, 1.0)],
        );
    }
}

#[test]
fn gradients_of_activations() {
    let s: &[usize] = &[3, 4, 5, 6];
    run(
        "relu_grad",
        Op::Grad(GradOp::ReluGrad),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0)],
    );
    run(
        "relu6_grad",
        Op::Grad(GradOp::Relu6Grad),
        &[F(s, -1.0, 1.0), F(s, -2.0, 8.0)],
    );
    run(
        "leaky_relu_grad",
        Op::Grad(GradOp::LeakyReluGrad { alpha: F32(0.3) }),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0)],
    );
    run(
        "thresholded_relu_grad",
        Op::Grad(GradOp::ThresholdedReluGrad { theta: F32(-0.25) }),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0)],
    );
    run(
        "prelu_grad_input",
        Op::Grad(GradOp::PReluGradInput),
        &[
            F(&[2, 3, 3, 4], -1.0, 1.0),
            F(&[2, 3, 3, 4], -2.0, 2.0),
            F(&[1, 1, 4], -0.5, 0.5),
        ],
    );
    run(
        "prelu_grad_alpha",
        Op::Grad(GradOp::PReluGradAlpha),
        &[F(&[2, 3, 3, 4], -1.0, 1.0), F(&[2, 3, 3, 4], -2.0, 2.0)],
    );
    run(
        "hard_swish_grad",
        Op::Grad(GradOp::HardSwishGrad),
        &[F(s, -1.0, 1.0), F(s, -5.0, 5.0)],
    );
    run(
        "sigmoid_grad",
        Op::Grad(GradOp::SigmoidGrad),
        &[F(s, -1.0, 1.0), F(s, 0.0, 1.0)],
    );
    run(
        "tanh_grad",
        Op::Grad(GradOp::TanhGrad),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0)],
    );
}

#[test]
fn optimizer_and_observer_updates() {
    let s: &[usize] = &[5, 7];
    run(
        "moving_average",
        Op::Update(UpdateOp::MovingAverage {
            momentum: F32(0.99),
        }),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0)],
    );
    run(
        "sgd_velocity",
        Op::Update(UpdateOp::SgdVelocity { momentum: F32(0.9) }),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0), S(0.01)],
    );
    run(
        "adam_moment",
        Op::Update(UpdateOp::AdamMoment { beta: F32(0.9) }),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0)],
    );
    run(
        "adam_moment_sq",
        Op::Update(UpdateOp::AdamMomentSq { beta: F32(0.999) }),
        &[F(s, 0.0, 1.0), F(s, -1.0, 1.0)],
    );
    run(
        "adam_apply",
        Op::Update(UpdateOp::AdamApply { epsilon: F32(1e-7) }),
        &[F(s, -1.0, 1.0), F(s, -1.0, 1.0), F(s, 0.0, 1.0), S(0.001)],
    );
    for step in [0.0, 3.0] {
        run(
            "ema_update",
            Op::Update(UpdateOp::EmaUpdate { decay: F32(0.999) }),
            &[F(&[6], -1.0, 1.0), F(&[6], -1.0, 1.0), S(step)],
        );
        run(
            "ema_update_scalar",
            Op::Update(UpdateOp::EmaUpdate { decay: F32(0.9) }),
            &[F(&[], -1.0, 1.0), F(&[], -1.0, 1.0), S(step)],
        );
        run(
            "running_min",
            Op::Update(UpdateOp::RunningMin),
            &[F(&[], -1.0, 1.0), F(&[], -1.0, 1.0), S(step)],
        );
        run(
            "running_max",
            Op::Update(UpdateOp::RunningMax),
            &[F(&[9], -1.0, 1.0), F(&[9], -1.0, 1.0), S(step)],
        );
    }
}

/// The data-parallel ops in one process: `all_reduce` is the identity, `pack` and `unpack`
/// move elements (the multi-rank behaviour is `tests/data_parallel.rs`'s).
#[test]
fn data_parallel_ops() {
    for reduce in [Reduce::Mean, Reduce::Min, Reduce::Max] {
        run_exact(
            "all_reduce",
            Op::Train(TrainOp::AllReduce { reduce }),
            &[F(&[3, 5], -2.0, 2.0)],
        );
    }
    run_exact(
        "all_reduce_range",
        Op::Train(TrainOp::AllReduce {
            reduce: Reduce::Range,
        }),
        &[F(&[6], -2.0, 2.0)],
    );
    run_exact(
        "pack",
        Op::Train(TrainOp::Pack),
        &[
            F(&[3, 5], -2.0, 2.0),
            F(&[7], -1.0, 1.0),
            F(&[2, 1, 2], 0.0, 1.0),
        ],
    );
    run_exact(
        "unpack",
        Op::Train(TrainOp::Unpack {
            offset: 5,
            shape: vec![2, 3],
        }),
        &[F(&[13], -2.0, 2.0)],
    );
}

#[test]
fn dropout_mask_matches_the_hash() {
    for step in [0.0, 1.0, 17.0] {
        run_exact(
            "dropout_mask",
            Op::Train(TrainOp::DropoutMask {
                rate: F32(0.3),
                seed: 1234,
                shape: vec![4, 7, 3],
            }),
            &[S(step)],
        );
        run_exact(
            "dropout_mask_big",
            Op::Train(TrainOp::DropoutMask {
                rate: F32(0.5),
                seed: 99,
                shape: vec![16, 1031],
            }),
            &[S(step)],
        );
    }
}

#[test]
fn pass_helpers() {
    run(
        "bn_scale",
        Op::Pass(PassOp::BnScale { epsilon: F32(1e-3) }),
        &[F(&[7], 0.5, 2.0), F(&[7], 0.1, 2.0)],
    );
    run(
        "scale_channels_0",
        Op::Pass(PassOp::ScaleChannels { axis: 0 }),
        &[F(&[5, 3, 3, 2], -1.0, 1.0), F(&[5], 0.5, 2.0)],
    );
    run(
        "scale_channels_3",
        Op::Pass(PassOp::ScaleChannels { axis: 3 }),
        &[F(&[1, 3, 3, 6], -1.0, 1.0), F(&[6], 0.5, 2.0)],
    );
}

// ---- fake quantization ----------------------------------------------------------------------

fn fq(
    axis: Option<usize>,
    range: RangeSource,
    narrow: bool,
    symmetric: bool,
    bits: u8,
) -> FakeQuantAttrs {
    FakeQuantAttrs {
        bits,
        narrow,
        symmetric,
        axis,
        range,
    }
}

#[test]
fn fake_quant_is_bit_exact() {
    let x: &[usize] = &[2, 6, 5, 8];
    // range from operands: per tensor and per axis (last and first)
    run_exact(
        "fq_operands",
        Op::Model(ModelOp::FakeQuant(fq(
            None,
            RangeSource::Operands,
            false,
            false,
            8,
        ))),
        &[F(x, -3.0, 5.0), F(&[], -2.0, -0.1), F(&[], 0.5, 4.0)],
    );
    run_exact(
        "fq_operands_4bit",
        Op::Model(ModelOp::FakeQuant(fq(
            None,
            RangeSource::Operands,
            false,
            false,
            4,
        ))),
        &[F(x, -3.0, 5.0), F(&[], -2.0, -0.1), F(&[], 0.5, 4.0)],
    );
    run_exact(
        "fq_operands_axis3",
        Op::Model(ModelOp::FakeQuant(fq(
            Some(3),
            RangeSource::Operands,
            true,
            true,
            8,
        ))),
        &[F(x, -3.0, 3.0), F(&[8], -2.0, 0.0), F(&[8], 0.0, 2.0)],
    );
    run_exact(
        "fq_operands_axis0",
        Op::Model(ModelOp::FakeQuant(fq(
            Some(0),
            RangeSource::Operands,
            false,
            false,
            8,
        ))),
        &[
            F(&[6, 3, 3, 4], -3.0, 3.0),
            F(&[6], -2.0, 0.0),
            F(&[6], 0.0, 2.0),
        ],
    );
    // weights: last value, per output channel
    run_exact(
        "fq_last_value_axis0",
        Op::Model(ModelOp::FakeQuant(fq(
            Some(0),
            RangeSource::LastValue,
            true,
            true,
            8,
        ))),
        &[F(&[12, 3, 3, 5], -0.5, 0.4)],
    );
    run_exact(
        "fq_last_value_axis3",
        Op::Model(ModelOp::FakeQuant(fq(
            Some(3),
            RangeSource::LastValue,
            true,
            true,
            8,
        ))),
        &[F(&[1, 3, 3, 24], -0.5, 0.4)],
    );
    run_exact(
        "fq_last_value_tensor",
        Op::Model(ModelOp::FakeQuant(fq(
            None,
            RangeSource::LastValue,
            false,
            false,
            8,
        ))),
        &[F(&[10, 2028], -0.5, 0.4)],
    );
    run_exact(
        "fq_fixed",
        Op::Model(ModelOp::FakeQuant(fq(
            None,
            RangeSource::Fixed {
                min: F32(0.0),
                max: F32(1.0),
            },
            false,
            false,
            8,
        ))),
        &[F(x, -0.5, 1.5)],
    );
    // large: the thread split
    run_exact(
        "fq_operands_big",
        Op::Model(ModelOp::FakeQuant(fq(
            Some(3),
            RangeSource::Operands,
            false,
            false,
            8,
        ))),
        &[
            F(&[8, 14, 14, 16], -3.0, 5.0),
            F(&[16], -2.0, -0.1),
            F(&[16], 0.5, 4.0),
        ],
    );
}

#[test]
fn fake_quant_grad_is_bit_exact() {
    let x: &[usize] = &[2, 6, 5, 8];
    run_exact(
        "fq_grad",
        Op::Grad(GradOp::FakeQuantGrad(fq(
            None,
            RangeSource::Operands,
            false,
            false,
            8,
        ))),
        &[
            F(x, -1.0, 1.0),
            F(x, -3.0, 5.0),
            F(&[], -2.0, -0.1),
            F(&[], 0.5, 4.0),
        ],
    );
    run_exact(
        "fq_grad_axis3",
        Op::Grad(GradOp::FakeQuantGrad(fq(
            Some(3),
            RangeSource::Operands,
            true,
            true,
            8,
        ))),
        &[
            F(x, -1.0, 1.0),
            F(x, -3.0, 3.0),
            F(&[8], -2.0, 0.0),
            F(&[8], 0.0, 2.0),
        ],
    );
}

#[test]
fn fake_quant_range_grad_is_bit_exact() {
    let x: &[usize] = &[2, 6, 5, 8];
    for (method, end) in [
        (RangeLearning::Lsq, RangeEnd::Min),
        (RangeLearning::Lsq, RangeEnd::Max),
        (RangeLearning::Pact, RangeEnd::Max),
    ] {
        // an activation range per tensor
        run_exact(
            &format!("fq_range_grad_{}_{}", method.name(), end.name()),
            Op::Grad(GradOp::FakeQuantRangeGrad {
                quant: fq(None, RangeSource::Trained(method), false, false, 4),
                end,
                grad_scale: F32(0.3),
            }),
            &[
                F(x, -1.0, 1.0),
                F(x, -3.0, 5.0),
                F(&[], -2.0, -0.1),
                F(&[], 0.5, 4.0),
            ],
        );
        // narrow symmetric weights per axis: some channels widen from min, some from max
        run_exact(
            &format!("fq_range_grad_axis3_{}_{}", method.name(), end.name()),
            Op::Grad(GradOp::FakeQuantRangeGrad {
                quant: fq(Some(3), RangeSource::Trained(method), true, true, 4),
                end,
                grad_scale: F32(0.125),
            }),
            &[
                F(x, -1.0, 1.0),
                F(x, -3.0, 3.0),
                F(&[8], -2.0, 0.0),
                F(&[8], 0.0, 2.0),
            ],
        );
    }
}

#[test]
fn fake_quant_with_state_asks_for_autodiff() {
    let mut g = Graph::new("fq_ema");
    let x = g.add_input("x", TensorType::f32(vec![1, 4])).unwrap();
    let y = g
        .add(
            Op::Model(ModelOp::FakeQuant(FakeQuantAttrs::activation("act"))),
            "act_quant",
            &[x],
        )
        .unwrap();
    g.add_output("y", y);
    let mut p = ParamStore::new();
    p.insert("act.min", qatc::ir::Tensor::scalar(-1.0));
    p.insert("act.max", qatc::ir::Tensor::scalar(1.0));
    let err = qatc::jit::compile(&g, &p, &Default::default())
        .err()
        .expect("ema range is rejected")
        .to_string();
    assert!(
        err.contains("act_quant") && err.contains("autodiff"),
        "{err}"
    );
}

// ---- reductions -------------------------------------------------------------------------------

#[test]
fn reductions() {
    let s: &[usize] = &[3, 5, 4, 6];
    for axis in [None, Some(0), Some(3), Some(1)] {
        run(
            "observe_min",
            Op::Update(UpdateOp::ObserveMin { axis }),
            &[F(s, -1.0, 2.0)],
        );
        run(
            "observe_max",
            Op::Update(UpdateOp::ObserveMax { axis }),
            &[F(s, -2.0, 1.0)],
        );
    }
    run(
        "observe_min_all_positive",
        Op::Update(UpdateOp::ObserveMin { axis: None }),
        &[F(s, 0.5, 2.0)],
    );
    let red = |axes: Vec<usize>, keepdims| ReduceAttrs { axes, keepdims };
    run(
        "reduce_sum_012",
        Op::Grad(GradOp::ReduceSum(red(vec![0, 1, 2], false))),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "reduce_sum_0",
        Op::Grad(GradOp::ReduceSum(red(vec![0], false))),
        &[F(&[9, 10], -1.0, 1.0)],
    );
    run(
        "reduce_sum_13",
        Op::Grad(GradOp::ReduceSum(red(vec![1, 3], true))),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "mean_12",
        Op::Model(ModelOp::Mean(red(vec![1, 2], false))),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "mean_12_keep",
        Op::Model(ModelOp::Mean(red(vec![1, 2], true))),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "global_avg_pool",
        Op::Model(ModelOp::GlobalAvgPool { keepdims: false }),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "global_max_pool",
        Op::Model(ModelOp::GlobalMaxPool { keepdims: true }),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "global_avg_pool_big",
        Op::Model(ModelOp::GlobalAvgPool { keepdims: false }),
        &[F(&[16, 7, 7, 64], -1.0, 1.0)],
    );
    run(
        "observe_big",
        Op::Update(UpdateOp::ObserveMax { axis: None }),
        &[F(&[16, 14, 14, 16], -1.0, 1.0)],
    );
    run(
        "reduce_sum_big",
        Op::Grad(GradOp::ReduceSum(red(vec![0, 1, 2], false))),
        &[F(&[16, 14, 14, 24], -1.0, 1.0)],
    );
    // rows of 33 to 64 channels: unrolled, the per-channel sums carried in registers
    // (spilling), with and without a scalar tail
    for c in [64, 62, 36] {
        run(
            &format!("reduce_sum_rows_of_{c}"),
            Op::Grad(GradOp::ReduceSum(red(vec![0, 1, 2], false))),
            &[Fv(vec![8, 7, 9, c], -1.0, 1.0)],
        );
    }
}

#[test]
fn reduction_gradients() {
    run(
        "global_avg_pool_grad",
        Op::Grad(GradOp::GlobalAvgPoolGrad {
            input_shape: vec![3, 4, 5, 6],
        }),
        &[F(&[3, 6], -1.0, 1.0)],
    );
    run(
        "global_avg_pool_grad_keep",
        Op::Grad(GradOp::GlobalAvgPoolGrad {
            input_shape: vec![3, 4, 5, 6],
        }),
        &[F(&[3, 1, 1, 6], -1.0, 1.0)],
    );
    run(
        "global_max_pool_grad",
        Op::Grad(GradOp::GlobalMaxPoolGrad),
        &[F(&[3, 6], -1.0, 1.0), F(&[3, 4, 5, 6], -1.0, 1.0)],
    );
    run(
        "global_max_pool_grad_keep",
        Op::Grad(GradOp::GlobalMaxPoolGrad),
        &[F(&[3, 1, 1, 6], -1.0, 1.0), F(&[3, 4, 5, 6], -1.0, 1.0)],
    );
    run(
        "mean_grad",
        Op::Grad(GradOp::MeanGrad {
            axes: vec![1, 2],
            input_shape: vec![3, 4, 5, 6],
        }),
        &[F(&[3, 6], -1.0, 1.0)],
    );
    run(
        "mean_grad_0",
        Op::Grad(GradOp::MeanGrad {
            axes: vec![0],
            input_shape: vec![4, 9],
        }),
        &[F(&[9], -1.0, 1.0)],
    );
}

// ---- BatchNorm --------------------------------------------------------------------------------

#[test]
fn batch_norm_family() {
    batch_norm_cases(&[4, 5, 3, 6]);
    // 64 channels: the statistics' four per-channel reductions unrolled over a row
    batch_norm_cases(&[8, 6, 5, 64]);
}

fn batch_norm_cases(x: &'static [usize]) {
    let c: &[usize] = &x[3..];
    run(
        "batch_norm",
        Op::Model(ModelOp::BatchNorm {
            epsilon: F32(1e-3),
            momentum: F32(0.99),
        }),
        &[
            F(x, -2.0, 3.0),
            F(c, 0.5, 2.0),
            F(c, -1.0, 1.0),
            F(c, -1.0, 1.0),
            F(c, 0.1, 2.0),
        ],
    );
    run(
        "batch_norm_train",
        Op::Train(TrainOp::BatchNormTrain { epsilon: F32(1e-3) }),
        &[F(x, -2.0, 3.0), F(c, 0.5, 2.0), F(c, -1.0, 1.0)],
    );
    run(
        "batch_mean",
        Op::Train(TrainOp::BatchMean),
        &[F(x, -2.0, 3.0)],
    );
    run(
        "batch_var",
        Op::Train(TrainOp::BatchVar { unbiased: false }),
        &[F(x, -2.0, 3.0)],
    );
    run(
        "batch_var_unbiased",
        Op::Train(TrainOp::BatchVar { unbiased: true }),
        &[F(x, -2.0, 3.0)],
    );
    run(
        "bn_grad_input",
        Op::Grad(GradOp::BatchNormGradInput { epsilon: F32(1e-3) }),
        &[F(x, -1.0, 1.0), F(x, -2.0, 3.0), F(c, 0.5, 2.0)],
    );
    run(
        "bn_grad_gamma",
        Op::Grad(GradOp::BatchNormGradGamma { epsilon: F32(1e-3) }),
        &[F(x, -1.0, 1.0), F(x, -2.0, 3.0)],
    );
    let big: &[usize] = &[16, 14, 14, 24];
    let cb: &[usize] = &[24];
    run(
        "batch_norm_train_big",
        Op::Train(TrainOp::BatchNormTrain { epsilon: F32(1e-3) }),
        &[F(big, -2.0, 3.0), F(cb, 0.5, 2.0), F(cb, -1.0, 1.0)],
    );
    run(
        "bn_grad_input_big",
        Op::Grad(GradOp::BatchNormGradInput { epsilon: F32(1e-3) }),
        &[F(big, -1.0, 1.0), F(big, -2.0, 3.0), F(cb, 0.5, 2.0)],
    );
}

// ---- contractions -----------------------------------------------------------------------------

#[test]
fn dense_family() {
    for act in [Activation::None, Activation::Relu] {
        run(
            "dense",
            Op::Model(ModelOp::Dense { activation: act }),
            &[
                F(&[5, 23], -1.0, 1.0),
                F(&[7, 23], -1.0, 1.0),
                F(&[7], -1.0, 1.0),
            ],
        );
    }
    run(
        "dense_nobias",
        Op::Model(ModelOp::Dense {
            activation: Activation::None,
        }),
        &[F(&[32, 2028], -1.0, 1.0), F(&[10, 2028], -0.1, 0.1)],
    );
    run(
        "dense_grad_input",
        Op::Grad(GradOp::DenseGradInput),
        &[F(&[32, 10], -1.0, 1.0), F(&[10, 2028], -1.0, 1.0)],
    );
    run(
        "dense_grad_weight",
        Op::Grad(GradOp::DenseGradWeight),
        &[F(&[32, 10], -1.0, 1.0), F(&[32, 2028], -1.0, 1.0)],
    );
    run(
        "dense_grad_weight_small",
        Op::Grad(GradOp::DenseGradWeight),
        &[F(&[3, 4], -1.0, 1.0), F(&[3, 5], -1.0, 1.0)],
    );
}

/// Conv geometries: (input, kernel, attrs).
fn conv_cases() -> Vec<(Vec<usize>, Vec<usize>, ConvAttrs)> {
    vec![
        (
            vec![2, 7, 7, 3],
            vec![5, 3, 3, 3],
            conv(1, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![2, 7, 8, 3],
            vec![5, 3, 3, 3],
            conv(1, Padding::Same, 1, Activation::Relu),
        ),
        (
            vec![2, 9, 9, 4],
            vec![6, 3, 3, 4],
            conv(2, Padding::Same, 1, Activation::None),
        ),
        (
            vec![2, 8, 8, 4],
            vec![6, 3, 3, 4],
            conv(2, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![1, 9, 9, 2],
            vec![4, 3, 3, 2],
            conv(1, Padding::Same, 2, Activation::None),
        ),
        (
            vec![2, 6, 6, 8],
            vec![12, 1, 1, 8],
            conv(1, Padding::Valid, 1, Activation::Relu6),
        ),
        (
            vec![2, 6, 6, 8],
            vec![5, 1, 1, 8],
            conv(2, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![3, 10, 10, 1],
            vec![12, 3, 3, 1],
            conv(1, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![2, 7, 7, 3],
            vec![4, 2, 3, 3],
            conv(1, Padding::Explicit([1, 0, 2, 1]), 1, Activation::None),
        ),
        // the direct kernels (at least 8 channels each side, not Winograd's, not
        // pointwise): stride 2 with odd and even sizes and partial channel vectors, a
        // strided 1×1, uneven windows and pads
        (
            vec![2, 9, 9, 16],
            vec![32, 3, 3, 16],
            conv(2, Padding::Same, 1, Activation::Relu),
        ),
        (
            vec![2, 8, 10, 8],
            vec![20, 3, 3, 8],
            conv(2, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![2, 7, 7, 16],
            vec![24, 1, 1, 16],
            conv(2, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![2, 7, 7, 9],
            vec![10, 2, 3, 9],
            conv(1, Padding::Explicit([1, 0, 2, 1]), 1, Activation::None),
        ),
        (
            vec![1, 8, 8, 8],
            vec![8, 5, 5, 8],
            conv(1, Padding::Same, 1, Activation::None),
        ),
        // Winograd (stride 1, 3×3, at least 8 channels each side): odd and even output
        // sizes, partial channel vectors, every padding it takes
        (
            vec![2, 7, 9, 8],
            vec![12, 3, 3, 8],
            conv(1, Padding::Same, 1, Activation::Relu),
        ),
        (
            vec![3, 8, 6, 16],
            vec![16, 3, 3, 16],
            conv(1, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![1, 6, 7, 20],
            vec![33, 3, 3, 20],
            conv(1, Padding::Explicit([2, 1, 0, 2]), 1, Activation::None),
        ),
    ]
}

#[test]
fn conv2d_forward_and_gradients() {
    for (x, k, c) in conv_cases() {
        let xs = x.clone();
        let (mut g0, _, _) = case(
            "probe",
            Op::Model(ModelOp::Conv2d(c.clone())),
            &[Fv(x.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
            1,
        );
        let y = g0.node(g0.find("y").unwrap()).ty.shape.clone();
        g0.remove_output("y");
        run(
            "conv2d",
            Op::Model(ModelOp::Conv2d(c.clone())),
            &[Fv(x.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
        );
        run(
            "conv2d_bias",
            Op::Model(ModelOp::Conv2d(c.clone())),
            &[
                Fv(x.clone(), -1.0, 1.0),
                Fv(k.clone(), -1.0, 1.0),
                Fv(vec![k[0]], -1.0, 1.0),
            ],
        );
        let mut cg = c.clone();
        cg.activation = Activation::None;
        run(
            "conv2d_grad_input",
            Op::Grad(GradOp::Conv2dGradInput {
                conv: cg.clone(),
                input_shape: xs.clone(),
            }),
            &[Fv(y.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
        );
        run(
            "conv2d_grad_filter",
            Op::Grad(GradOp::Conv2dGradFilter {
                conv: cg.clone(),
                filter_shape: k.clone(),
            }),
            &[Fv(y.clone(), -1.0, 1.0), Fv(xs.clone(), -1.0, 1.0)],
        );
    }
}

/// Winograd (either variant) lowers exactly the stride-1, undilated 3×3 convolutions with
/// at least 8 channels on each side (all three directions), and nothing when it is off.
#[test]
fn winograd_is_a_lowering_choice_for_stride_1_3x3() {
    for v in qatc::jit::Winograd::ALL {
        winograd_lowers_stride_1_3x3(Some(v));
    }
}

fn winograd_lowers_stride_1_3x3(on: Option<qatc::jit::Winograd>) {
    let lowered = |x: &[usize], k: &[usize], c: ConvAttrs, winograd: Option<_>| {
        let (g, p, _) = case(
            "choice",
            Op::Model(ModelOp::Conv2d(c)),
            &[Fv(x.to_vec(), -1.0, 1.0), Fv(k.to_vec(), -1.0, 1.0)],
            1,
        );
        let opts = qatc::jit::JitOptions {
            threads: 1,
            winograd,
            ..Default::default()
        };
        let exe = qatc::jit::compile(&g, &p, &opts).unwrap();
        exe.listing().contains("winograd")
    };
    let same = conv(1, Padding::Same, 1, Activation::None);
    assert!(lowered(&[1, 8, 8, 16], &[16, 3, 3, 16], same.clone(), on));
    assert!(!lowered(
        &[1, 8, 8, 16],
        &[16, 3, 3, 16],
        same.clone(),
        None
    ));
    assert!(!lowered(&[1, 8, 8, 3], &[16, 3, 3, 3], same.clone(), on));
    assert!(!lowered(&[1, 8, 8, 16], &[16, 1, 1, 16], same.clone(), on));
    let strided = conv(2, Padding::Same, 1, Activation::None);
    assert!(!lowered(&[1, 8, 8, 16], &[16, 3, 3, 16], strided, on));
    let dilated = conv(1, Padding::Same, 2, Activation::None);
    assert!(!lowered(&[1, 8, 8, 16], &[16, 3, 3, 16], dilated, on));
}

/// The direct kernels lower the forward pass and input gradient of the undilated,
/// non-pointwise convolutions Winograd does not take, with at least 8 channels on each side,
/// and all three directions of first layers whose filter gradient fits in registers, where
/// the CPU has AVX-512; nothing when they are off.
#[test]
fn direct_kernels_are_a_lowering_choice() {
    // whether the forward pass, the input gradient and the filter gradient are lowered
    // directly, for input x, kernel k, output gradient dy
    let lowered = |x: &[usize], k: &[usize], dy: &[usize], c: ConvAttrs, direct: bool| {
        let listing = |op: Op, args: &[A]| {
            let (g, p, _) = case("choice", op, args, 1);
            let opts = qatc::jit::JitOptions {
                threads: 1,
                direct,
                ..Default::default()
            };
            let exe = qatc::jit::compile(&g, &p, &opts).unwrap();
            exe.listing().contains("direct")
        };
        let (xv, kv, dyv) = (
            Fv(x.to_vec(), -1.0, 1.0),
            Fv(k.to_vec(), -1.0, 1.0),
            Fv(dy.to_vec(), -1.0, 1.0),
        );
        [
            listing(
                Op::Model(ModelOp::Conv2d(c.clone())),
                &[xv.clone(), kv.clone()],
            ),
            listing(
                Op::Grad(GradOp::Conv2dGradInput {
                    conv: c.clone(),
                    input_shape: x.to_vec(),
                }),
                &[dyv.clone(), kv],
            ),
            listing(
                Op::Grad(GradOp::Conv2dGradFilter {
                    conv: c,
                    filter_shape: k.to_vec(),
                }),
                &[dyv, xv],
            ),
        ]
    };
    let on = qatc::cpu::Avx512::detect().is_some();
    let x = [1, 8, 8, 16];
    let strided = conv(2, Padding::Same, 1, Activation::None);
    let dy = [1, 4, 4, 32];
    let wide = [32, 3, 3, 16];
    assert_eq!(
        lowered(&x, &wide, &dy, strided.clone(), true),
        [on, on, false]
    );
    assert_eq!(lowered(&x, &wide, &dy, strided.clone(), false), [false; 3]);
    // a first layer: 3 channels in, 16 out
    let first = [16, 3, 3, 3];
    let (x3, dy16) = ([1, 8, 8, 3], [1, 4, 4, 16]);
    assert_eq!(lowered(&x3, &first, &dy16, strided.clone(), true), [on; 3]);
    // too few input channels for a kernel that does not fit registers, pointwise,
    // dilated, and Winograd's
    assert_eq!(lowered(&x3, &[32, 3, 3, 3], &dy, strided, true), [false; 3]);
    let same = conv(1, Padding::Same, 1, Activation::None);
    let dy = [1, 8, 8, 16];
    assert_eq!(
        lowered(&x, &[16, 1, 1, 16], &dy, same.clone(), true),
        [false; 3]
    );
    let dilated = conv(1, Padding::Same, 2, Activation::None);
    assert_eq!(lowered(&x, &[16, 3, 3, 16], &dy, dilated, true), [false; 3]);
    assert_eq!(lowered(&x, &[16, 3, 3, 16], &dy, same, true), [false; 3]);
}

#[test]
fn conv2d_big_shapes_split_over_threads() {
    // mbv2_tiny's 1x1 expand at batch 8 and mnist_cnn's first conv at batch 8
    let c = conv(1, Padding::Valid, 1, Activation::None);
    run(
        "pw_expand",
        Op::Model(ModelOp::Conv2d(c.clone())),
        &[
            F(&[8, 14, 14, 16], -1.0, 1.0),
            F(&[64, 1, 1, 16], -1.0, 1.0),
        ],
    );
    run(
        "pw_grad_filter",
        Op::Grad(GradOp::Conv2dGradFilter {
            conv: c.clone(),
            filter_shape: vec![64, 1, 1, 16],
        }),
        &[
            F(&[8, 14, 14, 64], -1.0, 1.0),
            F(&[8, 14, 14, 16], -1.0, 1.0),
        ],
    );
    run(
        "pw_grad_input",
        Op::Grad(GradOp::Conv2dGradInput {
            conv: c.clone(),
            input_shape: vec![8, 14, 14, 16],
        }),
        &[
            F(&[8, 14, 14, 64], -1.0, 1.0),
            F(&[64, 1, 1, 16], -1.0, 1.0),
        ],
    );
    run(
        "mnist_conv",
        Op::Model(ModelOp::Conv2d(c.clone())),
        &[F(&[8, 28, 28, 1], 0.0, 1.0), F(&[12, 3, 3, 1], -1.0, 1.0)],
    );
    run(
        "mnist_conv_grad_filter",
        Op::Grad(GradOp::Conv2dGradFilter {
            conv: c,
            filter_shape: vec![12, 3, 3, 1],
        }),
        &[F(&[8, 26, 26, 12], -1.0, 1.0), F(&[8, 28, 28, 1], 0.0, 1.0)],
    );
}

#[test]
fn depthwise_forward_and_gradients() {
    let cases = vec![
        (
            vec![2, 7, 7, 8],
            1,
            conv(1, Padding::Same, 1, Activation::None),
        ),
        (
            vec![2, 8, 8, 6],
            1,
            conv(2, Padding::Same, 1, Activation::Relu6),
        ),
        (
            vec![2, 7, 7, 5],
            1,
            conv(2, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![1, 9, 9, 4],
            1,
            conv(1, Padding::Same, 2, Activation::None),
        ),
        (
            vec![2, 6, 6, 3],
            2,
            conv(1, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![2, 6, 7, 3],
            2,
            conv(2, Padding::Same, 1, Activation::None),
        ),
        (
            vec![4, 14, 14, 64],
            1,
            conv(1, Padding::Same, 1, Activation::None),
        ),
        (
            vec![4, 14, 14, 64],
            1,
            conv(2, Padding::Same, 1, Activation::None),
        ),
    ];
    for (x, mult, c) in cases {
        let k = vec![1, 3, 3, x[3] * mult];
        let (g0, _, _) = case(
            "probe",
            Op::Model(ModelOp::DepthwiseConv2d(c.clone())),
            &[Fv(x.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
            1,
        );
        let y = g0.node(g0.find("y").unwrap()).ty.shape.clone();
        run(
            "depthwise",
            Op::Model(ModelOp::DepthwiseConv2d(c.clone())),
            &[Fv(x.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
        );
        run(
            "depthwise_bias",
            Op::Model(ModelOp::DepthwiseConv2d(c.clone())),
            &[
                Fv(x.clone(), -1.0, 1.0),
                Fv(k.clone(), -1.0, 1.0),
                Fv(vec![k[3]], -1.0, 1.0),
            ],
        );
        let mut cg = c.clone();
        cg.activation = Activation::None;
        run(
            "depthwise_grad_input",
            Op::Grad(GradOp::DepthwiseConv2dGradInput {
                conv: cg.clone(),
                input_shape: x.clone(),
            }),
            &[Fv(y.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
        );
        run(
            "depthwise_grad_filter",
            Op::Grad(GradOp::DepthwiseConv2dGradFilter {
                conv: cg,
                filter_shape: k.clone(),
            }),
            &[Fv(y.clone(), -1.0, 1.0), Fv(x.clone(), -1.0, 1.0)],
        );
    }
}

#[test]
fn conv2d_transpose_forward_and_gradients() {
    let cases = vec![
        (
            vec![2, 4, 4, 3],
            vec![5, 3, 3, 3],
            conv(1, Padding::Valid, 1, Activation::None),
        ),
        (
            vec![2, 4, 5, 3],
            vec![5, 3, 3, 3],
            conv(2, Padding::Same, 1, Activation::Relu),
        ),
        (
            vec![1, 3, 3, 2],
            vec![4, 2, 2, 2],
            conv(2, Padding::Valid, 1, Activation::None),
        ),
    ];
    for (x, k, c) in cases {
        let (g0, _, _) = case(
            "probe",
            Op::Model(ModelOp::Conv2dTranspose(c.clone())),
            &[Fv(x.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
            1,
        );
        let y = g0.node(g0.find("y").unwrap()).ty.shape.clone();
        run(
            "conv2d_transpose",
            Op::Model(ModelOp::Conv2dTranspose(c.clone())),
            &[
                Fv(x.clone(), -1.0, 1.0),
                Fv(k.clone(), -1.0, 1.0),
                Fv(vec![k[0]], -1.0, 1.0),
            ],
        );
        let mut cg = c.clone();
        cg.activation = Activation::None;
        run(
            "conv2d_transpose_grad_input",
            Op::Grad(GradOp::Conv2dTransposeGradInput {
                conv: cg.clone(),
                input_shape: x.clone(),
            }),
            &[Fv(y.clone(), -1.0, 1.0), Fv(k.clone(), -1.0, 1.0)],
        );
        run(
            "conv2d_transpose_grad_filter",
            Op::Grad(GradOp::Conv2dTransposeGradFilter {
                conv: cg,
                filter_shape: k.clone(),
            }),
            &[Fv(y.clone(), -1.0, 1.0), Fv(x.clone(), -1.0, 1.0)],
        );
    }
}

// ---- pools -----------------------------------------------------------------------------------

#[test]
fn pools_and_gradients() {
    let cases = vec![
        (vec![2, 6, 6, 5], pool(2, 2, Padding::Valid)),
        (vec![2, 7, 7, 5], pool(2, 2, Padding::Valid)),
        (vec![2, 7, 7, 4], pool(2, 2, Padding::Same)),
        (vec![2, 7, 7, 6], pool(3, 2, Padding::Same)),
        (vec![1, 6, 6, 3], pool(3, 1, Padding::Valid)),
        (vec![8, 26, 26, 12], pool(2, 2, Padding::Valid)),
    ];
    for (x, p) in cases {
        let (g0, _, _) = case(
            "probe",
            Op::Model(ModelOp::MaxPool2d(p.clone())),
            &[Fv(x.clone(), -1.0, 1.0)],
            1,
        );
        let y = g0.node(g0.find("y").unwrap()).ty.shape.clone();
        run(
            "max_pool2d",
            Op::Model(ModelOp::MaxPool2d(p.clone())),
            &[Fv(x.clone(), -1.0, 1.0)],
        );
        run(
            "avg_pool2d",
            Op::Model(ModelOp::AvgPool2d(p.clone())),
            &[Fv(x.clone(), -1.0, 1.0)],
        );
        run(
            "max_pool2d_grad",
            Op::Grad(GradOp::MaxPool2dGrad(p.clone())),
            &[Fv(y.clone(), -1.0, 1.0), Fv(x.clone(), -1.0, 1.0)],
        );
        run(
            "avg_pool2d_grad",
            Op::Grad(GradOp::AvgPool2dGrad {
                pool: p.clone(),
                input_shape: x.clone(),
            }),
            &[Fv(y.clone(), -1.0, 1.0)],
        );
    }
}

#[test]
fn max_pool_grad_ties_go_to_the_first_maximum() {
    // a window of equal values (after ReLU: zeros) must give the whole gradient to tap 0
    let (g, p, mut inputs) = case(
        "tie",
        Op::Grad(GradOp::MaxPool2dGrad(pool(2, 2, Padding::Valid))),
        &[F(&[1, 1, 1, 4], 1.0, 2.0), F(&[1, 2, 2, 4], 0.0, 1.0)],
        3,
    );
    if let Value::F32(t) = &mut inputs[1].1 {
        t.data.iter_mut().for_each(|v| *v = 0.0);
    }
    check_graph(&g, &p, &inputs, 0.0);
    let (g, p, mut inputs) = case(
        "tie_overlap",
        Op::Grad(GradOp::MaxPool2dGrad(pool(2, 1, Padding::Valid))),
        &[F(&[1, 2, 2, 3], 1.0, 2.0), F(&[1, 3, 3, 3], 0.0, 1.0)],
        3,
    );
    if let Value::F32(t) = &mut inputs[1].1 {
        t.data.iter_mut().for_each(|v| *v = 0.0);
    }
    check_graph(&g, &p, &inputs, 0.0);
}

#[test]
fn upsampling() {
    run(
        "upsample_nearest",
        Op::Model(ModelOp::UpsampleNearest { scale: [2, 3] }),
        &[F(&[2, 3, 4, 5], -1.0, 1.0)],
    );
    run(
        "upsample_nearest_grad",
        Op::Grad(GradOp::UpsampleNearestGrad { scale: [2, 3] }),
        &[F(&[2, 6, 12, 5], -1.0, 1.0)],
    );
}

// ---- rows: softmax and the loss ----------------------------------------------------------------

#[test]
fn softmax_and_loss() {
    run(
        "softmax",
        Op::Model(ModelOp::Softmax),
        &[F(&[5, 10], -5.0, 5.0)],
    );
    run(
        "softmax_3d",
        Op::Model(ModelOp::Softmax),
        &[F(&[2, 3, 7], -5.0, 5.0)],
    );
    run(
        "softmax_big",
        Op::Model(ModelOp::Softmax),
        &[F(&[2048, 10], -5.0, 5.0)],
    );
    run(
        "softmax_grad",
        Op::Grad(GradOp::SoftmaxGrad),
        &[F(&[5, 10], -1.0, 1.0), F(&[5, 10], 0.0, 1.0)],
    );
    run(
        "softmax_cross_entropy",
        Op::Train(TrainOp::SoftmaxCrossEntropy),
        &[F(&[32, 10], -5.0, 5.0), L(32, 10)],
    );
    run(
        "softmax_cross_entropy_grad",
        Op::Grad(GradOp::SoftmaxCrossEntropyGrad),
        &[F(&[32, 10], -5.0, 5.0), L(32, 10)],
    );
    run(
        "softmax_cross_entropy_grad_big",
        Op::Grad(GradOp::SoftmaxCrossEntropyGrad),
        &[F(&[2048, 10], -5.0, 5.0), L(2048, 10)],
    );
}

#[test]
fn bad_labels_are_an_error_naming_the_loss() {
    let (g, p, mut inputs) = case(
        "bad_labels",
        Op::Train(TrainOp::SoftmaxCrossEntropy),
        &[F(&[2, 3], -1.0, 1.0), L(2, 3)],
        1,
    );
    inputs[1].1 = Value::I32 {
        shape: vec![2],
        data: vec![1, 3],
    };
    let mut exe = qatc::jit::compile(&g, &p, &Default::default()).unwrap();
    let err = qatc::exec::Executor::run(&mut exe, &feeds_of(&inputs))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`y`") && err.contains("label 3"), "{err}");
}

// ---- data movement ------------------------------------------------------------------------------

#[test]
fn data_movement() {
    let s: &[usize] = &[2, 3, 4, 5];
    run(
        "reshape",
        Op::Model(ModelOp::Reshape { shape: vec![4, -1] }),
        &[F(s, -1.0, 1.0)],
    );
    run("flatten", Op::Model(ModelOp::Flatten), &[F(s, -1.0, 1.0)]);
    run(
        "transpose",
        Op::Model(ModelOp::Transpose {
            perm: vec![0, 3, 1, 2],
        }),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "pad",
        Op::Model(ModelOp::Pad {
            pads: vec![[0, 0], [1, 2], [0, 1], [2, 0]],
        }),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "crop",
        Op::Model(ModelOp::Crop {
            crops: vec![[0, 0], [1, 0], [1, 2], [0, 3]],
        }),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "slice",
        Op::Grad(GradOp::Slice {
            begin: vec![1, 0, 1, 2],
            size: vec![1, 3, 2, 3],
        }),
        &[F(s, -1.0, 1.0)],
    );
    run(
        "concat_3",
        Op::Model(ModelOp::Concat { axis: 3 }),
        &[F(s, -1.0, 1.0), F(&[2, 3, 4, 2], -1.0, 1.0)],
    );
    run(
        "concat_1",
        Op::Model(ModelOp::Concat { axis: 1 }),
        &[
            F(s, -1.0, 1.0),
            F(&[2, 1, 4, 5], -1.0, 1.0),
            F(s, -1.0, 1.0),
        ],
    );
}

#[test]
fn quant_markers_are_rejected_by_name() {
    let mut g = Graph::new("marker");
    let x = g.add_input("x", TensorType::f32(vec![1, 4])).unwrap();
    let y = g
        .add(
            Op::Pass(PassOp::Quant(FakeQuantAttrs::activation("s"))),
            "the_marker",
            &[x],
        )
        .unwrap();
    g.add_output("y", y);
    let err = qatc::jit::compile(&g, &ParamStore::new(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("the_marker") && err.contains("quant"), "{err}");
}
