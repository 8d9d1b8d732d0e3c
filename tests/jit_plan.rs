//! The JIT's compiler decisions and its executor API: which loops fuse, which values are
//! recomputed instead of stored, that the algebraic shortcuts are exact with respect to what
//! the JIT computes elementwise, and that bad feeds and params are errors naming the culprit.

mod jit_common;

use jit_common::*;
use qatc::exec::{Executor, Feed};
use qatc::ir::interp::Value;
use qatc::ir::op::*;
use qatc::ir::{Graph, NodeId, ParamStore, Tensor, TensorType};
use qatc::jit::{compile, JitOptions};

fn one_thread() -> JitOptions {
    JitOptions {
        threads: 1,
        ..JitOptions::default()
    }
}

/// Lines of the listing that are loops over `shape`.
fn loops_over(listing: &str, shape: &str) -> usize {
    listing
        .lines()
        .filter(|l| l.contains(&format!("loop {shape}")))
        .count()
}

#[test]
fn an_activation_and_its_observers_are_one_pass() {
    let mut g = Graph::new("observe");
    let x = g
        .add_input("x", TensorType::f32(vec![4, 8, 8, 16]))
        .unwrap();
    let r = g.add(Op::Model(ModelOp::Relu), "relu", &[x]).unwrap();
    let lo = g
        .add(Op::Update(UpdateOp::ObserveMin { axis: None }), "lo", &[r])
        .unwrap();
    let hi = g
        .add(Op::Update(UpdateOp::ObserveMax { axis: None }), "hi", &[r])
        .unwrap();
    g.add_output("lo", lo);
    g.add_output("hi", hi);
    let exe = compile(&g, &ParamStore::new(), &one_thread()).unwrap();
    // relu is recomputed inside the reduction; both reductions share the pass
    assert_eq!(
        loops_over(exe.listing(), "[4, 8, 8, 16]"),
        1,
        "{}",
        exe.listing()
    );
    let inputs = vec![(
        "x".to_string(),
        Value::F32(rand_tensor(&mut rng(1), &[4, 8, 8, 16], -1.0, 1.0)),
    )];
    check_graph(&g, &ParamStore::new(), &inputs, 0.0);
}

#[test]
fn elementwise_chains_are_recomputed_not_stored() {
    // d = relu(x + x) * x: a chain of three maps whose intermediates are never stored, with
    // the middle loop rebuilt by inlining before the last one inlines it in turn
    let mut g = Graph::new("chain");
    let x = g.add_input("x", TensorType::f32(vec![3, 50])).unwrap();
    let a = g
        .add(
            Op::Model(ModelOp::Add {
                activation: Activation::None,
            }),
            "a",
            &[x, x],
        )
        .unwrap();
    let b = g.add(Op::Model(ModelOp::Relu), "b", &[a]).unwrap();
    let d = g
        .add(
            Op::Model(ModelOp::Mul {
                activation: Activation::None,
            }),
            "d",
            &[b, x],
        )
        .unwrap();
    let e = g.add(Op::Model(ModelOp::Relu6), "e", &[b]).unwrap();
    g.add_output("d", d);
    g.add_output("e", e);
    let exe = compile(&g, &ParamStore::new(), &one_thread()).unwrap();
    assert_eq!(loops_over(exe.listing(), "[3, 50]"), 1, "{}", exe.listing());
    let inputs = vec![(
        "x".to_string(),
        Value::F32(rand_tensor(&mut rng(2), &[3, 50], -1.0, 1.0)),
    )];
    check_graph(&g, &ParamStore::new(), &inputs, RTOL);
}

/// `relu6(batch_norm_train(y))`, its observers, and the normalized tensor as an output.
fn bn_observed() -> (Graph, ParamStore) {
    let mut g = Graph::new("bn_observed");
    let mut p = ParamStore::new();
    let y = g
        .add_input("y", TensorType::f32(vec![6, 5, 5, 12]))
        .unwrap();
    let mut param = |g: &mut Graph, name: &str, t: Tensor| -> NodeId {
        let id = g.param(name, TensorType::f32(t.shape.clone())).unwrap();
        p.insert(name, t);
        id
    };
    // a negative gamma: the channel's maximum becomes the normalized minimum
    let mut gamma = rand_tensor(&mut rng(3), &[12], 0.5, 2.0);
    gamma.data[3] = -1.5;
    let gamma = param(&mut g, "gamma", gamma);
    let beta = param(&mut g, "beta", rand_tensor(&mut rng(4), &[12], -1.0, 1.0));
    let z = g
        .add(
            Op::Train(TrainOp::BatchNormTrain { epsilon: F32(1e-3) }),
            "bn",
            &[y, gamma, beta],
        )
        .unwrap();
    let r = g.add(Op::Model(ModelOp::Relu6), "relu6", &[z]).unwrap();
    let lo = g
        .add(Op::Update(UpdateOp::ObserveMin { axis: None }), "lo", &[r])
        .unwrap();
    let hi = g
        .add(Op::Update(UpdateOp::ObserveMax { axis: None }), "hi", &[r])
        .unwrap();
    g.add_output("r", r);
    g.add_output("lo", lo);
    g.add_output("hi", hi);
    (g, p)
}

#[test]
fn observers_of_batch_norm_are_exact_without_a_pass_of_their_own() {
    let (g, p) = bn_observed();
    let y = rand_tensor(&mut rng(5), &[6, 5, 5, 12], -3.0, 4.0);
    for opts in configs() {
        let mut exe = compile(&g, &p, &opts).unwrap();
        let out = exe.run(&[("y", Feed::F32(&y.data))]).unwrap();
        // the observed range is exactly the range of the JIT's own normalized values
        let lo = out[0].data.iter().copied().fold(0.0f32, f32::min);
        let hi = out[0].data.iter().copied().fold(0.0f32, f32::max);
        assert_eq!(out[1].data[0], lo, "{opts:?}");
        assert_eq!(out[2].data[0], hi, "{opts:?}");
    }
    // and close to the oracle
    check_graph(&g, &p, &[("y".to_string(), Value::F32(y))], RTOL);
}

#[test]
fn batch_statistics_are_one_pass() {
    let (g, p) = bn_observed();
    let exe = compile(&g, &p, &one_thread()).unwrap();
    // one pass for the statistics (and the observers' extremes), one for the output
    assert_eq!(
        loops_over(exe.listing(), "[6, 5, 5, 12]"),
        2,
        "{}",
        exe.listing()
    );
}

/// `batch_norm_train(conv2d(x, kernel) + bias)`: a convolution with a bias before its
/// BatchNorm (a GEMM, then the bias added by a loop).
fn biased_bn() -> (Graph, ParamStore) {
    let mut g = Graph::new("biased_bn");
    let mut p = ParamStore::new();
    let x = g.add_input("x", TensorType::f32(vec![6, 5, 5, 8])).unwrap();
    let kernel = g
        .param("kernel", TensorType::f32(vec![12, 1, 1, 8]))
        .unwrap();
    p.insert(
        "kernel",
        rand_tensor(&mut rng(11), &[12, 1, 1, 8], -1.0, 1.0),
    );
    let c = TensorType::f32(vec![12]);
    let bias = g.param("bias", c.clone()).unwrap();
    let gamma = g.param("gamma", c.clone()).unwrap();
    let beta = g.param("beta", c).unwrap();
    // biases far from the spread of x: the statistics' shift must stay accurate
    let mut b = rand_tensor(&mut rng(7), &[12], -1.0, 1.0);
    b.data.iter_mut().for_each(|v| *v *= 300.0);
    p.insert("bias", b);
    p.insert("gamma", rand_tensor(&mut rng(8), &[12], 0.5, 2.0));
    p.insert("beta", rand_tensor(&mut rng(9), &[12], -1.0, 1.0));
    let conv = ConvAttrs {
        stride: [1, 1],
        padding: Padding::Valid,
        dilation: [1, 1],
        activation: Activation::None,
    };
    let y = g
        .add(Op::Model(ModelOp::Conv2d(conv)), "y", &[x, kernel, bias])
        .unwrap();
    let z = g
        .add(
            Op::Train(TrainOp::BatchNormTrain { epsilon: F32(1e-3) }),
            "bn",
            &[y, gamma, beta],
        )
        .unwrap();
    g.add_output("z", z);
    (g, p)
}

#[test]
fn a_bias_add_joins_the_batch_statistics_it_feeds() {
    let (g, p) = biased_bn();
    // the statistics read the batch's first values broadcast per channel (their shift):
    // recomputed from x and the bias, so the bias add fuses into the statistics' pass and
    // the normalization recomputes it: two passes, no stored sum
    let exe = compile(&g, &p, &one_thread()).unwrap();
    assert_eq!(
        loops_over(exe.listing(), "[6, 5, 5, 12]"),
        2,
        "{}",
        exe.listing()
    );
    let x = rand_tensor(&mut rng(10), &[6, 5, 5, 8], -1.0, 1.0);
    check_graph(&g, &p, &[("x".to_string(), Value::F32(x))], RTOL);
}

#[test]
fn batch_statistics_are_accurate_far_from_zero() {
    // a large mean and a small spread: the shifted one-pass variance must not cancel
    let mut g = Graph::new("var");
    let x = g.add_input("x", TensorType::f32(vec![64, 3])).unwrap();
    let v = g
        .add(Op::Train(TrainOp::BatchVar { unbiased: false }), "v", &[x])
        .unwrap();
    g.add_output("v", v);
    let mut t = rand_tensor(&mut rng(6), &[64, 3], -0.01, 0.01);
    t.data.iter_mut().for_each(|v| *v += 1000.0);
    check_graph(
        &g,
        &ParamStore::new(),
        &[("x".to_string(), Value::F32(t))],
        1e-3,
    );
}

#[test]
fn feeds_and_params_are_checked() {
    let mut g = Graph::new("api");
    let x = g.add_input("x", TensorType::f32(vec![2, 3])).unwrap();
    let w = g.param("w", TensorType::f32(vec![3])).unwrap();
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
    let mut p = ParamStore::new();
    p.insert("w", Tensor::new(vec![3], vec![1.0, 2.0, 3.0]));
    let mut exe = compile(&g, &p, &JitOptions::default()).unwrap();

    let e = exe
        .run(&[("x", Feed::F32(&[0.0; 5]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`x`") && e.contains("rebatch"), "{e}");
    let e = exe
        .run(&[("z", Feed::F32(&[0.0; 6]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no input named `z`"), "{e}");
    let e = exe.run(&[]).unwrap_err().to_string();
    assert!(e.contains("`x`") && e.contains("no value"), "{e}");
    let e = exe
        .run(&[("x", Feed::I32(&[0; 6]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("i32"), "{e}");

    let out = exe.run(&[("x", Feed::F32(&[1.0; 6]))]).unwrap();
    assert_eq!(out[0].data, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);

    let mut bad = ParamStore::new();
    bad.insert("w", Tensor::zeros(vec![4]));
    assert!(exe
        .set_params(&bad)
        .unwrap_err()
        .to_string()
        .contains("`w`"));
    let mut unknown = ParamStore::new();
    unknown.insert("v", Tensor::zeros(vec![3]));
    assert!(exe
        .set_params(&unknown)
        .unwrap_err()
        .to_string()
        .contains("`v`"));

    let mut p2 = ParamStore::new();
    p2.insert("w", Tensor::new(vec![3], vec![-1.0, 0.5, 2.0]));
    exe.set_params(&p2).unwrap();
    assert_eq!(exe.params(), p2);
    let out = exe.run(&[("x", Feed::F32(&[2.0; 6]))]).unwrap();
    assert_eq!(out[0].data, vec![-2.0, 1.0, 4.0, -2.0, 1.0, 4.0]);
}

#[test]
fn missing_params_are_an_error_naming_them() {
    let mut g = Graph::new("missing");
    let x = g.add_input("x", TensorType::f32(vec![1, 3])).unwrap();
    let w = g.param("weights", TensorType::f32(vec![3])).unwrap();
    let y = g
        .add(
            Op::Model(ModelOp::Add {
                activation: Activation::None,
            }),
            "y",
            &[x, w],
        )
        .unwrap();
    g.add_output("y", y);
    let e = compile(&g, &ParamStore::new(), &JitOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`weights`"), "{e}");
}

#[test]
fn an_update_read_after_its_write_is_copied_back() {
    // w' = 2w is an update, but the GEMM of `late` reads the old w after w' is computed
    // (through `h`): w' cannot overwrite w in place, so it is copied back at the end
    let mut g = Graph::new("copy_back");
    let x = g.add_input("x", TensorType::f32(vec![1, 4])).unwrap();
    let w = g.param("w", TensorType::f32(vec![4, 4])).unwrap();
    let two = g.param("two", TensorType::f32(vec![])).unwrap();
    let w2 = g
        .add(
            Op::Model(ModelOp::Mul {
                activation: Activation::None,
            }),
            "w_next",
            &[w, two],
        )
        .unwrap();
    let dense = Op::Model(ModelOp::Dense {
        activation: Activation::None,
    });
    let h = g.add(dense.clone(), "h", &[x, w2]).unwrap();
    let late = g.add(dense, "late", &[h, w]).unwrap();
    g.add_output("late", late);
    g.add_update("w", w2);
    let mut p = ParamStore::new();
    p.insert("w", rand_tensor(&mut rng(7), &[4, 4], -1.0, 1.0));
    p.insert("two", Tensor::scalar(2.0));
    let exe = compile(&g, &p, &one_thread()).unwrap();
    assert_eq!(exe.stats().updates_copied, 1, "{}", exe.listing());
    let inputs = vec![(
        "x".to_string(),
        Value::F32(rand_tensor(&mut rng(8), &[1, 4], -1.0, 1.0)),
    )];
    check_steps(&g, &p, &inputs, RTOL, 3);
}

/// `act(z)`, its fake-quant with an operand range and the straight-through gradient through
/// both: the JIT rewrites both compositions into single clamps/masks on `z`, which must
/// match the oracle bit for bit.
fn activation_quant_graph(act: Op, max: f32) -> (Graph, Vec<(String, Value)>) {
    let mut g = Graph::new("act_quant");
    let s = vec![4, 6, 6, 8];
    let z = g.add_input("z", TensorType::f32(s.clone())).unwrap();
    let dq = g.add_input("dq", TensorType::f32(s.clone())).unwrap();
    let lo = g.add_input("lo", TensorType::f32(vec![])).unwrap();
    let hi = g.add_input("hi", TensorType::f32(vec![])).unwrap();
    let r = g.add(act.clone(), "act", &[z]).unwrap();
    let mut q = FakeQuantAttrs::activation("unused");
    q.range = RangeSource::Operands;
    let fq = g
        .add(Op::Model(ModelOp::FakeQuant(q.clone())), "fq", &[r, lo, hi])
        .unwrap();
    let fg = g
        .add(
            Op::Grad(GradOp::FakeQuantGrad(q)),
            "fq_grad",
            &[dq, r, lo, hi],
        )
        .unwrap();
    let grad = if act == Op::Model(ModelOp::Relu) {
        Op::Grad(GradOp::ReluGrad)
    } else {
        Op::Grad(GradOp::Relu6Grad)
    };
    let ag = g.add(grad, "act_grad", &[fg, z]).unwrap();
    g.add_output("fq", fq);
    g.add_output("grad", ag);
    let inputs = vec![
        (
            "z".to_string(),
            Value::F32(rand_tensor(&mut rng(9), &s, -2.0, 9.0)),
        ),
        (
            "dq".to_string(),
            Value::F32(rand_tensor(&mut rng(10), &s, -1.0, 1.0)),
        ),
        ("lo".to_string(), Value::F32(Tensor::scalar(-0.3))),
        ("hi".to_string(), Value::F32(Tensor::scalar(max))),
    ];
    (g, inputs)
}

#[test]
fn activation_and_fake_quant_compose_exactly() {
    for act in [Op::Model(ModelOp::Relu), Op::Model(ModelOp::Relu6)] {
        for max in [3.7, 6.0, 8.5] {
            let (g, inputs) = activation_quant_graph(act.clone(), max);
            check_graph(&g, &ParamStore::new(), &inputs, 0.0);
        }
    }
}
