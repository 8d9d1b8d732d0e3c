use super::*;
use crate::exec::{Executor, Feed, InterpExecutor};
use crate::ir::op::{FakeQuantAttrs, RangeSource};
use crate::ir::op::{ModelOp, PassOp, TrainOp};
use crate::ir::text::parse;
use crate::ir::{ParamStore, Tensor};

/// A small QAT graph in graph form 2: input quantizer, per-axis kernel quantizer,
/// conv + BN + ReLU with one activation quantizer, dense logits.
const TINY_QAT: &str = r#"
model "tiny_qat"
param @conv.kernel : f32[2,3,3,1]
param @conv.bias : f32[2]
param @bn.gamma : f32[2]
param @bn.beta : f32[2]
param @bn.moving_mean : f32[2]
param @bn.moving_var : f32[2]
param @dense.kernel : f32[3,32]
param @dense.bias : f32[3]
%0 = input "x" : f32[1,4,4,1]
%1 = fake_quant "x.fq" (%0) {bits=8, range=all_values, state="x.fq"}
%2 = fake_quant "conv.kernel.fq" (@conv.kernel) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = conv2d "conv" (%1, %2, @conv.bias) {stride=[1,1], padding=same}
%4 = batch_norm "bn" (%3, @bn.gamma, @bn.beta, @bn.moving_mean, @bn.moving_var) {epsilon=0.001, momentum=0.99}
%5 = relu "relu" (%4)
%6 = fake_quant "relu.fq" (%5) {bits=8, range=ema, state="relu.fq", decay=0.999}
%7 = flatten "flatten" (%6)
%8 = dense "dense" (%7, @dense.kernel, @dense.bias)
output "logits" = %8
"#;

fn ramp(shape: &[usize], scale: f32, offset: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) * scale + offset)
        .collect();
    Tensor::new(shape.to_vec(), data)
}

fn tiny_params() -> ParamStore {
    let mut p = ParamStore::new();
    p.insert("conv.kernel", ramp(&[2, 3, 3, 1], 0.05, 0.0));
    p.insert("conv.bias", Tensor::new(vec![2], vec![0.1, -0.1]));
    p.insert("bn.gamma", Tensor::new(vec![2], vec![1.0, 0.5]));
    p.insert("bn.beta", Tensor::new(vec![2], vec![0.0, 0.2]));
    p.insert("bn.moving_mean", Tensor::zeros(vec![2]));
    p.insert("bn.moving_var", Tensor::full(vec![2], 1.0));
    p.insert("dense.kernel", ramp(&[3, 32], 0.01, 0.0));
    p.insert("dense.bias", Tensor::zeros(vec![3]));
    p
}

struct Run {
    exec: InterpExecutor,
}

impl Run {
    fn new(step: &TrainStep, params: &ParamStore) -> Run {
        let state = step.initial_state(params).unwrap();
        Run {
            exec: InterpExecutor::new(step.graph.clone(), state).unwrap(),
        }
    }

    fn step(&mut self, x: &[f32], labels: &[i32], step: u64, lr: f32) -> Vec<Tensor> {
        self.exec
            .run(&[
                ("input", Feed::F32(x)),
                ("labels", Feed::I32(labels)),
                ("step", Feed::F32(&[step as f32])),
                ("lr", Feed::F32(&[lr])),
            ])
            .unwrap()
    }

    fn param(&self, name: &str) -> Tensor {
        self.exec.params().get(name).unwrap().clone()
    }
}

fn batch(n: usize, offset: f32) -> Vec<f32> {
    (0..n * 16)
        .map(|i| ((i * 7 % 13) as f32) * 0.1 + offset)
        .collect()
}

#[test]
fn qat_train_step_has_the_contracted_form() {
    let model = parse(TINY_QAT, "tiny_qat.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(4)).unwrap();
    let g = &step.graph;
    let inputs: Vec<String> = g.inputs().iter().map(|&i| g.node(i).name.clone()).collect();
    assert_eq!(inputs, ["input", "labels", "step", "lr"]);
    assert_eq!(
        g.node(g.find("input").unwrap()).ty,
        TensorType::f32(vec![4, 4, 4, 1])
    );
    assert_eq!(g.node(g.find("labels").unwrap()).ty.to_string(), "i32[4]");
    let outputs: Vec<&str> = g.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["loss", "logits"]);
    // every quantizer is explicit, BatchNorm uses batch statistics
    for id in g.canonical_order() {
        match &g.node(id).op {
            Op::Model(ModelOp::FakeQuant(q)) => assert_eq!(q.range, RangeSource::Operands),
            Op::Model(ModelOp::BatchNorm { .. }) | Op::Model(ModelOp::Dropout { .. }) => {
                panic!("{} left", g.node(id).name)
            }
            _ => {}
        }
    }
    assert_eq!(
        step.trained,
        [
            "bn.beta",
            "bn.gamma",
            "conv.bias",
            "conv.kernel",
            "dense.bias",
            "dense.kernel"
        ]
    );
    assert_eq!(step.observer_state.len(), 4);
    assert!(step.observer_state.contains(&"x.fq.min".to_string()));
    assert!(step.observer_state.contains(&"relu.fq.max".to_string()));
    assert_eq!(step.statistics, ["bn.moving_mean", "bn.moving_var"]);
    assert_eq!(step.optimizer_state.len(), 12);
    let mut updated: Vec<&str> = g.updates().iter().map(|u| u.param.as_str()).collect();
    updated.sort();
    let mut want: Vec<String> = step
        .trained
        .iter()
        .chain(&step.optimizer_state)
        .chain(&step.observer_state)
        .chain(&step.statistics)
        .cloned()
        .collect();
    want.sort();
    assert_eq!(updated, want);
    // the init covers exactly the state the model lacks
    let mut init: Vec<&String> = step.init.names().collect();
    init.sort();
    let mut new_state: Vec<&String> = step
        .optimizer_state
        .iter()
        .chain(&step.observer_state)
        .collect();
    new_state.sort();
    assert_eq!(init, new_state);
    // the printed form parses back to the same graph
    let text = crate::ir::text::print(g);
    let back = parse(&text, "step.qir").unwrap();
    assert_eq!(crate::ir::text::print(&back), text);
}

#[test]
fn observers_start_from_the_first_batch() {
    let model = parse(TINY_QAT, "tiny_qat.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(2)).unwrap();
    let mut run = Run::new(&step, &tiny_params());
    let x0 = batch(2, 0.5);
    run.step(&x0, &[0, 1], 0, 1e-3);
    // all_values at step 0: the batch's own range (widened to include 0)
    let max0 = x0.iter().copied().fold(0.0f32, f32::max);
    assert_eq!(run.param("x.fq.min").data, [0.0]);
    assert_eq!(run.param("x.fq.max").data, [max0]);
    let relu_max0 = run.param("relu.fq.max").data[0];
    assert!(relu_max0 > 0.0);
    assert_eq!(run.param("relu.fq.min").data, [0.0]);

    // step 1: running max for the input, EMA (decay 0.999) for the activation
    let x1: Vec<f32> = x0.iter().map(|v| v * 2.0 - 1.0).collect();
    let min1 = x1.iter().copied().fold(0.0f32, f32::min);
    let max1 = x1.iter().copied().fold(0.0f32, f32::max);
    // the activation's batch max at step 1, from the eval-free forward: recompute it by
    // running one more step-0 copy of the graph on x1
    let mut probe = Run::new(&step, &run.exec.params());
    probe.step(&x1, &[0, 1], 0, 0.0);
    let batch_relu_max1 = probe.param("relu.fq.max").data[0];
    run.step(&x1, &[0, 1], 1, 1e-3);
    assert_eq!(run.param("x.fq.min").data, [min1]);
    assert_eq!(run.param("x.fq.max").data, [max0.max(max1)]);
    let ema = relu_max0 * 0.999 + batch_relu_max1 * (1.0 - 0.999);
    assert!((run.param("relu.fq.max").data[0] - ema).abs() < 1e-6);
}

/// The forward pass quantizes with the range observed including the current batch: at
/// step 0 with lr 0 the train step's logits equal the eval graph's once the eval graph
/// reads the updated ranges (no BatchNorm here, whose statistics differ between modes).
#[test]
fn forward_quantizes_with_the_range_of_this_batch() {
    let src = r#"
model "qat_dense"
param @w : f32[3,16]
param @b : f32[3]
%0 = input "x" : f32[1,16]
%1 = fake_quant "x.fq" (%0) {bits=8, range=all_values, state="in"}
%2 = fake_quant "w.fq" (@w) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = dense "dense" (%1, %2, @b)
%4 = fake_quant "out.fq" (%3) {bits=8, range=ema, state="out", decay=0.999}
output "logits" = %4
"#;
    let model = parse(src, "qat_dense.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(2)).unwrap();
    let mut params = ParamStore::new();
    params.insert("w", ramp(&[3, 16], 0.03, 0.01));
    params.insert("b", Tensor::new(vec![3], vec![0.1, 0.0, -0.2]));
    let mut run = Run::new(&step, &params);
    let x: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
    let outs = run.step(&x, &[0, 2], 0, 0.0);

    let mut eval = eval_graph(&model).unwrap();
    eval.rebatch(2).unwrap();
    let state = run.exec.params();
    let mut eval_params = ParamStore::new();
    for name in eval.params().keys() {
        eval_params.insert(name.clone(), state.get(name).unwrap().clone());
    }
    let mut ex = InterpExecutor::new(eval, eval_params).unwrap();
    let y = ex.run(&[("x", Feed::F32(&x))]).unwrap();
    assert_eq!(outs[1], y[0]);
}

#[test]
fn tied_concat_inputs_use_the_range_of_the_unquantized_concat() {
    let src = r#"
model "concat"
param @w : f32[2,1,1,1]
%0 = input "x" : f32[1,2,2,1]
%1 = conv2d "a" (%0, @w) {stride=[1,1], padding=valid}
%2 = relu "b" (%0)
%3 = fake_quant "a.fq" (%1) {bits=8, range=tied, state="cat"}
%4 = fake_quant "b.fq" (%2) {bits=8, range=tied, state="cat"}
%5 = concat "cat" (%3, %4) {axis=3}
%6 = fake_quant "cat.fq" (%5) {bits=8, range=ema, state="cat", decay=0.999}
%7 = flatten "flat" (%6)
output "logits" = %7
"#;
    let model = parse(src, "concat.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(2)).unwrap();
    let g = &step.graph;
    let shadow = g
        .find("cat.observed")
        .expect("a shadow concat feeds the observer");
    assert_eq!(g.node(shadow).op.name(), "concat");
    // the shadow reads the raw branch values, the tied quantizers read the new range
    let raw: Vec<&str> = g
        .operands(shadow)
        .iter()
        .map(|&o| g.node(o).name.as_str())
        .collect();
    assert_eq!(raw, ["a", "b"]);
    let fq_a = g.find("a.fq").unwrap();
    assert_eq!(g.node(g.operand(fq_a, 1).unwrap()).name, "cat.min.next");

    let mut params = ParamStore::new();
    params.insert("w", Tensor::new(vec![2, 1, 1, 1], vec![-2.0, 3.0]));
    let mut run = Run::new(&step, &params);
    let x = [0.5, -1.0, 0.25, 1.0, 0.1, 0.2, -0.3, 0.4];
    run.step(&x, &[0, 1], 0, 0.1);
    // a = conv: channels -2x and 3x; b = relu(x): the concat's raw range
    let mut lo = 0.0f32;
    let mut hi = 0.0f32;
    for &v in &x {
        for y in [-2.0 * v, 3.0 * v, v.max(0.0)] {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    }
    assert_eq!(run.param("cat.min").data, [lo]);
    assert_eq!(run.param("cat.max").data, [hi]);
}

#[test]
fn batch_norm_moves_its_statistics_like_keras() {
    let model = parse(TINY_QAT, "tiny_qat.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(2)).unwrap();
    let g = &step.graph;
    assert_eq!(
        g.node(g.find("bn.batch_var").unwrap()).op,
        Op::Train(TrainOp::BatchVar { unbiased: true }),
        "rank-4 BatchNorm: tf_keras' fused kernel feeds the unbiased variance"
    );
    let params = tiny_params();
    let mut run = Run::new(&step, &params);
    let x = batch(2, -0.3);
    run.step(&x, &[1, 2], 0, 0.0);
    // recompute the conv output's per-channel statistics with the interpreter
    let vals = crate::ir::interp::run_all(
        g,
        &step.initial_state(&params).unwrap(),
        &[
            (
                "input",
                crate::ir::interp::Value::F32(Tensor::new(vec![2, 4, 4, 1], x.clone())),
            ),
            ("labels", crate::ir::interp::Value::labels(&[1, 2])),
            ("step", crate::ir::interp::Value::F32(Tensor::scalar(0.0))),
            ("lr", crate::ir::interp::Value::F32(Tensor::scalar(0.0))),
        ],
    )
    .unwrap();
    let conv = vals[&g.find("conv").unwrap()].f32().unwrap().clone();
    let m = (conv.data.len() / 2) as f64;
    for c in 0..2 {
        let xs: Vec<f64> = conv
            .data
            .iter()
            .skip(c)
            .step_by(2)
            .map(|&v| v as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / m;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (m - 1.0);
        let mm = run.param("bn.moving_mean").data[c] as f64;
        let mv = run.param("bn.moving_var").data[c] as f64;
        assert!(
            (mm - 0.01 * mean).abs() < 1e-6,
            "moving mean {mm} vs {}",
            0.01 * mean
        );
        assert!((mv - (0.99 + 0.01 * var)).abs() < 1e-6, "moving var {mv}");
    }
}

/// Keras runs a BatchNormalization layer with `trainable = False` in inference mode, in
/// training too (the frozen base of a transfer-learning model): its moving statistics
/// normalize and stay as they are.
#[test]
fn a_frozen_batch_norm_normalizes_with_its_moving_statistics() {
    let mut model = parse(TINY_QAT, "tiny_qat.qir").unwrap();
    for p in ["bn.gamma", "bn.beta", "bn.moving_mean", "bn.moving_var"] {
        model.freeze(p).unwrap();
    }
    let step = train_step(&model, &TrainSpec::new(2)).unwrap();
    let g = &step.graph;
    assert!(g.find("bn.batch_mean").is_none());
    assert_eq!(
        g.node(g.find("bn").unwrap()).op.kind(),
        crate::ir::op::OpKind::BatchNorm,
        "the inference form"
    );
    assert!(!g.updates().iter().any(|u| u.param.starts_with("bn.")));
    let mut params = tiny_params();
    params.insert("bn.moving_mean", Tensor::new(vec![2], vec![0.3, -0.2]));
    params.insert("bn.moving_var", Tensor::new(vec![2], vec![2.0, 0.5]));
    let mut run = Run::new(&step, &params);
    run.step(&batch(2, -0.3), &[1, 2], 0, 0.01);
    assert_eq!(run.param("bn.moving_mean").data, [0.3, -0.2]);
    assert_eq!(run.param("bn.moving_var").data, [2.0, 0.5]);
    assert_eq!(run.param("bn.gamma").data, [1.0, 0.5]);

    // the same through the spec's frozen list
    let model = parse(TINY_QAT, "tiny_qat.qir").unwrap();
    let mut spec = TrainSpec::new(2);
    spec.frozen = ["bn.gamma", "bn.beta", "bn.moving_mean", "bn.moving_var"]
        .map(String::from)
        .to_vec();
    let step = train_step(&model, &spec).unwrap();
    assert!(step.graph.find("bn.batch_mean").is_none());
    // a frozen scale and offset with moving statistics still learning: training mode
    spec.frozen.truncate(2);
    let step = train_step(&model, &spec).unwrap();
    assert!(step.graph.find("bn.batch_mean").is_some());
}

/// A dense layer with numbers worked out by hand (in f64): one SGD-momentum step, then a
/// second one that uses the velocity.
#[test]
fn sgd_momentum_matches_keras_by_hand() {
    let src = r#"
model "lin"
param @w : f32[2,2]
%0 = input "x" : f32[1,2]
%1 = dense "dense" (%0, @w)
output "logits" = %1
"#;
    let model = parse(src, "lin.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(1).optimizer(Optimizer::sgd(0.9))).unwrap();
    let mut params = ParamStore::new();
    params.insert("w", Tensor::new(vec![2, 2], vec![0.5, -0.25, 0.1, 0.3]));
    let mut run = Run::new(&step, &params);
    let x = [1.0f32, 2.0];
    let grad = |w: &[f32]| -> Vec<f64> {
        // z = W x, p = softmax(z), dz = p - onehot(0), dW = dz x^T
        let z: Vec<f64> = (0..2)
            .map(|o| w[o * 2] as f64 * 1.0 + w[o * 2 + 1] as f64 * 2.0)
            .collect();
        let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        let dz = [e[0] / s - 1.0, e[1] / s];
        (0..4).map(|i| dz[i / 2] * x[i % 2] as f64).collect()
    };
    let w0 = [0.5f32, -0.25, 0.1, 0.3];
    let g0 = grad(&w0);
    let outs = run.step(&x, &[0], 0, 0.1);
    let z0 = [0.5 - 0.5, 0.1 + 0.6];
    let lse = (f64::exp(z0[0]) + f64::exp(z0[1])).ln();
    assert!((outs[0].data[0] as f64 - (lse - z0[0])).abs() < 1e-6);
    let v1: Vec<f64> = g0.iter().map(|g| -0.1 * g).collect();
    let w1: Vec<f64> = (0..4).map(|i| w0[i] as f64 + v1[i]).collect();
    for i in 0..4 {
        assert!((run.param("w").data[i] as f64 - w1[i]).abs() < 1e-6);
        assert!((run.param("w.velocity").data[i] as f64 - v1[i]).abs() < 1e-6);
    }
    let w1f: Vec<f32> = run.param("w").data.clone();
    let g1 = grad(&w1f);
    run.step(&x, &[0], 1, 0.1);
    for i in 0..4 {
        let v2 = 0.9 * v1[i] - 0.1 * g1[i];
        assert!((run.param("w").data[i] as f64 - (w1[i] + v2)).abs() < 1e-6);
    }
}

#[test]
fn adam_first_step_matches_keras_by_hand() {
    let src = r#"
model "lin"
param @w : f32[2,2]
param @b : f32[2]
%0 = input "x" : f32[1,2]
%1 = dense "dense" (%0, @w, @b)
output "logits" = %1
"#;
    let model = parse(src, "lin.qir").unwrap();
    let opt = Optimizer::adam();
    let step = train_step(&model, &TrainSpec::new(1).optimizer(opt)).unwrap();
    let mut params = ParamStore::new();
    params.insert("w", Tensor::new(vec![2, 2], vec![0.5, -0.25, 0.1, 0.3]));
    params.insert("b", Tensor::new(vec![2], vec![0.0, 0.5]));
    let mut run = Run::new(&step, &params);
    let lr_t = opt.lr_input(1e-3, 0);
    run.step(&[1.0, -1.0], &[1], 0, lr_t);
    // z = [0.75, 0.3]; dz = softmax(z) - onehot(1)
    let z = [0.75f64, 0.3];
    let s = z[0].exp() + z[1].exp();
    let db = [z[0].exp() / s, z[1].exp() / s - 1.0];
    for (i, &g) in db.iter().enumerate() {
        let m = 0.1 * g;
        let v = 0.001 * g * g;
        let want = [0.0, 0.5][i] - lr_t as f64 * m / (v.sqrt() + 1e-7);
        let got = run.param("b").data[i] as f64;
        assert!((got - want).abs() < 1e-7, "b[{i}]: {got} vs {want}");
        // f32 betas: 1 - 0.999 is 1e-5 off in relative terms
        assert!((run.param("b.adam_m").data[i] as f64 / m - 1.0).abs() < 1e-5);
        assert!((run.param("b.adam_v").data[i] as f64 / v - 1.0).abs() < 2e-5);
    }
    // the first Adam step moves every param by about lr (|m| / sqrt(v) = 1)
    let moved = (run.param("b").data[0] - 0.0).abs();
    assert!((moved as f64 - 1e-3).abs() < 1e-6, "{moved}");
}

#[test]
fn eval_graph_is_the_inference_form() {
    let src = r#"
model "m"
param @w : f32[3,8]
%0 = input "x" : f32[1,8]
%1 = fake_quant "x.fq" (%0) {bits=8, range=all_values, state="in"}
%2 = fake_quant "w.fq" (@w) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = dense "dense" (%1, %2)
%4 = dropout "drop" (%3) {rate=0.5}
%5 = fake_quant "soft.fq" (%4) {bits=8, range=fixed, min=-1.0, max=1.0}
%6 = softmax "probs" (%5)
output "probs" = %6
"#;
    let model = parse(src, "m.qir").unwrap();
    let g = eval_graph(&model).unwrap();
    let text = crate::ir::text::print(&g);
    assert!(!text.contains("dropout"), "{text}");
    assert!(text.contains("param @in.min : f32[]"), "{text}");
    assert!(text.contains("range=last_value"), "{text}");
    assert!(text.contains("range=fixed"), "{text}");
    let fq = g.find("x.fq").unwrap();
    assert_eq!(g.operands(fq).len(), 3);
    assert_eq!(g.outputs()[0].name, "probs");
    assert_eq!(g.node(g.inputs()[0]).name, "x");
}

#[test]
fn softmax_outputs_are_differentiated_from_their_logits() {
    let src = r#"
model "m"
param @w : f32[3,4]
%0 = input "x" : f32[1,4]
%1 = dense "dense" (%0, @w)
%2 = softmax "probs" (%1)
output "probs" = %2
"#;
    let model = parse(src, "m.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(2)).unwrap();
    let g = &step.graph;
    let logits = g.outputs()[1].node;
    assert_eq!(g.node(logits).name, "dense");
    assert!(
        g.find("probs").is_none(),
        "the softmax is not part of the step"
    );
}

#[test]
fn dropout_masks_depend_on_the_step() {
    let src = r#"
model "m"
param @w : f32[3,64]
%0 = input "x" : f32[1,64]
%1 = dropout "drop" (%0) {rate=0.5}
%2 = dense "dense" (%1, @w)
output "logits" = %2
"#;
    let model = parse(src, "m.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(1).optimizer(Optimizer::sgd(0.0))).unwrap();
    let g = &step.graph;
    let mask = g.find("drop.mask").unwrap();
    assert!(matches!(
        g.node(mask).op,
        Op::Train(TrainOp::DropoutMask { .. })
    ));
    assert_eq!(g.operands(mask), vec![g.find("step").unwrap()]);
    let mut params = ParamStore::new();
    params.insert("w", Tensor::full(vec![3, 64], 0.0));
    let x = vec![1.0f32; 64];
    // with zero weights dL/dW[o,i] = dz[o] * x_dropped[i]: which inputs were dropped
    let kept = |s: u64| -> Vec<bool> {
        let mut run = Run::new(&step, &params);
        run.step(&x, &[0], s, 1.0);
        run.param("w").data[..64]
            .iter()
            .map(|&v| v != 0.0)
            .collect()
    };
    let (k0, k0b, k1) = (kept(0), kept(0), kept(1));
    assert_eq!(k0, k0b);
    assert_ne!(k0, k1);
    let n = k0.iter().filter(|&&k| k).count();
    assert!((16..48).contains(&n), "rate 0.5 kept {n} of 64");
}

#[test]
fn fixed_ranges_become_constant_params() {
    let src = r#"
model "m"
param @w : f32[3,4]
%0 = input "x" : f32[1,4]
%1 = fake_quant "x.fq" (%0) {bits=8, range=fixed, min=-1.0, max=1.0}
%2 = dense "dense" (%1, @w)
output "logits" = %2
"#;
    let model = parse(src, "m.qir").unwrap();
    let step = train_step(&model, &TrainSpec::new(2)).unwrap();
    assert_eq!(step.init.get("x.fq.min").unwrap().data, [-1.0]);
    assert_eq!(step.init.get("x.fq.max").unwrap().data, [1.0]);
    assert!(!step
        .graph
        .updates()
        .iter()
        .any(|u| u.param.starts_with("x.fq")));
}

#[test]
fn frozen_params_keep_their_values() {
    let model = parse(TINY_QAT, "tiny_qat.qir").unwrap();
    let mut spec = TrainSpec::new(2);
    spec.frozen = vec!["conv.kernel".into(), "conv.bias".into()];
    let step = train_step(&model, &spec).unwrap();
    assert!(!step.trained.contains(&"conv.kernel".to_string()));
    assert!(step.init.get("conv.kernel.adam_m").is_none());
    // the gradient still flows through the frozen conv to nothing trainable above it
    assert!(step.graph.find("conv.grad.kernel").is_none());
    spec.frozen = vec!["nope".into()];
    let err = train_step(&model, &spec).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn unsupported_graphs_get_errors_that_say_why() {
    let two_inputs = r#"
model "m"
%0 = input "a" : f32[1,4]
%1 = input "b" : f32[1,4]
%2 = add "sum" (%0, %1)
output "logits" = %2
"#;
    let err = train_step(&parse(two_inputs, "m.qir").unwrap(), &TrainSpec::new(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("one model input"), "{err}");

    let not_2d = r#"
model "m"
param @k : f32[2,1,1,1]
%0 = input "x" : f32[1,3,3,1]
%1 = conv2d "conv" (%0, @k) {stride=[1,1], padding=valid}
output "logits" = %1
"#;
    let err = train_step(&parse(not_2d, "m.qir").unwrap(), &TrainSpec::new(2))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv") && err.contains("[batch, classes]"),
        "{err}"
    );

    let mut marker = parse(TINY_QAT, "tiny_qat.qir").unwrap();
    let relu = marker.find("relu").unwrap();
    let q = marker
        .add(
            Op::Pass(PassOp::Quant(FakeQuantAttrs::activation("m"))),
            "marker",
            &[relu],
        )
        .unwrap();
    let fq = marker.find("relu.fq").unwrap();
    marker.set_operand(fq, 0, q);
    let err = train_step(&marker, &TrainSpec::new(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("quant"), "{err}");
}

/// Gradients match a float model's finite differences end to end: the train step's SGD
/// velocity with momentum 0 and lr 1 is exactly `-grad`.
#[test]
fn whole_train_step_gradients_match_finite_differences() {
    use crate::ir::builder::{Act, Functional, Layer};
    let mut f = Functional::new("float", 3);
    let x = f.input("input", &[4, 4, 2]).unwrap();
    let a = f.layer(x, Layer::conv2d(3, 3).same()).unwrap();
    let a = f.layer(a, Layer::batch_norm()).unwrap();
    let a = f.layer(a, Layer::Activation(Act::Tanh)).unwrap();
    let b = f.layer(x, Layer::conv2d(3, 1)).unwrap();
    let s = f.add(a, b).unwrap();
    let c = f.concat(&[s, x], 3).unwrap();
    let p = f.layer(c, Layer::avg_pool(2)).unwrap();
    let p = f.layer(p, Layer::Dropout(0.25)).unwrap();
    let p = f.layer(p, Layer::flatten()).unwrap();
    let y = f.layer(p, Layer::dense(3)).unwrap();
    f.output("output", y);
    let model = f.build().unwrap();

    let n = 3;
    let step = train_step(
        &model.graph,
        &TrainSpec::new(n).optimizer(Optimizer::sgd(0.0)),
    )
    .unwrap();
    let xs: Vec<f32> = (0..n * 32)
        .map(|i| ((i * 29 % 23) as f32 - 11.0) * 0.08)
        .collect();
    let labels = [0, 2, 1];
    let mut run = Run::new(&step, &model.params);
    run.step(&xs, &labels, 5, 1.0);
    let loss = |params: &ParamStore| -> f64 {
        let mut r = Run::new(&step, params);
        r.step(&xs, &labels, 5, 0.0)[0].data[0] as f64
    };
    let h = 1e-2f32;
    for name in &step.trained {
        let grad: Vec<f32> = run
            .param(&format!("{name}.velocity"))
            .data
            .iter()
            .map(|v| -v)
            .collect();
        let mut p = model.params.clone();
        for (j, &a) in grad.iter().enumerate() {
            let orig = p.get(name).unwrap().data[j];
            p.get_mut(name).unwrap().data[j] = orig + h;
            let up = loss(&p);
            p.get_mut(name).unwrap().data[j] = orig - h;
            let down = loss(&p);
            p.get_mut(name).unwrap().data[j] = orig;
            let numeric = (up - down) / ((orig + h) as f64 - (orig - h) as f64);
            assert!(
                (a as f64 - numeric).abs() <= 1e-3 + 1e-2 * numeric.abs(),
                "d loss / d {name}[{j}]: train step {a} vs finite difference {numeric}"
            );
        }
    }
}

/// A learned range's gradient is its quantizer's element shares ([`range_grad`] times LSQ's
/// gradient scale) summed over the tensor: checked on `logits = fake_quant(x)`, whose
/// upstream gradient is `(softmax(q(x)) - onehot) / n`.
#[test]
fn learned_range_gradients_sum_the_element_shares() {
    use crate::ir::fake_quant::{fake_quant, lsq_grad_scale, nudged_for, range_grad};
    use crate::ir::op::{RangeEnd, RangeLearning};
    let model = parse(
        r#"
model "lsq_logits"
%0 = input "x" : f32[2,3]
%1 = fake_quant "q" (%0) {bits=4, range=learned, method=lsq, state="q"}
output "logits" = %1
"#,
        "lsq_logits.qir",
    )
    .unwrap();
    let (lo, hi) = (-1.0f32, 2.0f32);
    let mut params = ParamStore::new();
    params.insert("q.min", Tensor::scalar(lo));
    params.insert("q.max", Tensor::scalar(hi));
    let step = train_step(&model, &TrainSpec::new(2).optimizer(Optimizer::sgd(0.0))).unwrap();
    assert!(step.trained.contains(&"q.max".to_string()));
    assert!(!step.observer_state.contains(&"q.max".to_string()));
    let x = [-1.7f32, 0.33, 1.21, 2.9, -0.05, 0.71];
    let labels = [2, 0];
    let mut run = Run::new(&step, &params);
    run.step(&x, &labels, 0, 1.0);

    let q = match &model.node(model.node_ids().nth(1).unwrap()).op {
        Op::Model(ModelOp::FakeQuant(q)) => FakeQuantAttrs {
            range: RangeSource::Trained(RangeLearning::Lsq),
            ..q.clone()
        },
        other => panic!("{other:?}"),
    };
    let n = nudged_for(&q, lo, hi);
    let scale = lsq_grad_scale(&q, 3) as f64;
    for (end, name) in [(RangeEnd::Min, "q.min"), (RangeEnd::Max, "q.max")] {
        let mut want = 0.0f64;
        for (row, &label) in labels.iter().enumerate() {
            let qs: Vec<f64> = (0..3)
                .map(|k| fake_quant(x[row * 3 + k], &n) as f64)
                .collect();
            let m = qs.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = qs.iter().map(|v| (v - m).exp()).sum();
            for k in 0..3 {
                let p = (qs[k] - m).exp() / z;
                let dy = (p - if k as i32 == label { 1.0 } else { 0.0 }) / 2.0;
                let share = range_grad(
                    &q,
                    &n,
                    None,
                    x[row * 3 + k],
                    dy as f32,
                    end,
                    RangeLearning::Lsq,
                );
                want += share as f64 * scale;
            }
        }
        let got = -run.param(&format!("{name}.velocity")).data[0] as f64;
        assert!(
            (got - want).abs() < 1e-5,
            "d loss / d {name}: {got} vs {want}"
        );
        assert!(want.abs() > 1e-3, "the case exercises {name}");
    }
}
