//! The training loop on the interpreter: loss falls, checkpoints resume bit-identically,
//! NaN/Inf stops the run naming the tensor, and the float -> QAT recipe works. Tiny models
//! and few steps keep this quick in debug builds.

use qatc::autodiff::{eval_graph, Optimizer};
use qatc::data::Dataset;
use qatc::ir::builder::{Act, Layer, Model, Sequential};
use qatc::ir::fake_quant::{fake_quant, nudged_for};
use qatc::ir::text::parse;
use qatc::ir::ParamStore;
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::train::{evaluate, fit, Checkpoint, FitConfig, LrSchedule, ReferenceBackend};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

/// Four classes of 6x6 images: class `c` lights up quadrant `c`, plus noise.
fn quadrants(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 36);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 4) as i32;
        for y in 0..6 {
            for x in 0..6 {
                let q = (y / 3) * 2 + x / 3;
                let base = if q == c as usize { 0.8 } else { 0.1 };
                images.push(base + rng.random_range(-0.1f32..0.1));
            }
        }
        labels.push(c);
    }
    Dataset {
        sample_shape: vec![6, 6, 1],
        images,
        labels,
        classes: 4,
    }
}

fn float_model(seed: u64) -> Model {
    Sequential::new("quad", &[6, 6, 1], seed)
        .add(Layer::conv2d(4, 3).activation(Act::Relu))
        .add(Layer::max_pool(2))
        .add(Layer::flatten())
        .add(Layer::dense(4))
        .build()
        .unwrap()
}

/// A QAT graph with everything that has state: BatchNorm statistics, dropout masks,
/// observers, Adam slots.
const STATEFUL_QAT: &str = r#"
model "stateful"
param @conv.kernel : f32[3,3,3,1]
param @bn.gamma : f32[3]
param @bn.beta : f32[3]
param @bn.moving_mean : f32[3]
param @bn.moving_var : f32[3]
param @dense.kernel : f32[4,12]
param @dense.bias : f32[4]
%0 = input "input" : f32[1,6,6,1]
%1 = fake_quant "input.fq" (%0) {bits=8, range=all_values, state="input.fq"}
%2 = fake_quant "conv.kernel.fq" (@conv.kernel) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = conv2d "conv" (%1, %2) {stride=[2,2], padding=same}
%4 = batch_norm "bn" (%3, @bn.gamma, @bn.beta, @bn.moving_mean, @bn.moving_var) {epsilon=0.001, momentum=0.99}
%5 = relu6 "relu6" (%4)
%6 = fake_quant "relu6.fq" (%5) {bits=8, range=ema, state="relu6.fq", decay=0.999}
%7 = avg_pool2d "pool" (%6) {size=[2,2], stride=[1,1], padding=valid}
%8 = flatten "flatten" (%7)
%9 = dropout "dropout" (%8) {rate=0.25}
%10 = dense "dense" (%9, @dense.kernel, @dense.bias)
output "logits" = %10
"#;

fn stateful_params() -> ParamStore {
    use qatc::ir::Tensor;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut rand = |shape: Vec<usize>, limit: f32| {
        let n = shape.iter().product();
        Tensor::new(
            shape,
            (0..n).map(|_| rng.random_range(-limit..limit)).collect(),
        )
    };
    let mut p = ParamStore::new();
    p.insert("conv.kernel", rand(vec![3, 3, 3, 1], 0.5));
    p.insert("bn.gamma", Tensor::full(vec![3], 1.0));
    p.insert("bn.beta", Tensor::zeros(vec![3]));
    p.insert("bn.moving_mean", Tensor::zeros(vec![3]));
    p.insert("bn.moving_var", Tensor::full(vec![3], 1.0));
    p.insert("dense.kernel", rand(vec![4, 12], 0.5));
    p.insert("dense.bias", Tensor::zeros(vec![4]));
    p
}

fn quiet(batch: usize, epochs: usize) -> FitConfig {
    FitConfig {
        batch_size: batch,
        epochs,
        progress: false,
        ..FitConfig::default()
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qatc-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn loss_falls_on_a_tiny_model() {
    let model = float_model(1);
    let (train, test) = (quadrants(96, 1), quadrants(32, 2));
    let cfg = FitConfig {
        lr: LrSchedule::constant(2e-2),
        ..quiet(16, 8)
    };
    let r = fit(
        &model.graph,
        &model.params,
        &train,
        Some(&test),
        &cfg,
        &ReferenceBackend,
    )
    .unwrap();
    let e = &r.history.epochs;
    assert_eq!(e.len(), 8);
    assert_eq!(r.steps, 48);
    assert_eq!(r.history.step_loss.len(), 48);
    assert!(e[7].loss < 0.25 * e[0].loss, "{}", r.history.epochs_csv());
    assert!(
        e[7].test_accuracy.unwrap() >= 0.95,
        "{}",
        r.history.epochs_csv()
    );
    assert!(e[0].samples_per_s > 0.0);
    // the trained params are the model's, without optimizer slots
    let mut names: Vec<&String> = r.params.names().collect();
    names.sort();
    assert_eq!(
        names,
        ["conv2d.bias", "conv2d.kernel", "dense.bias", "dense.kernel"]
    );
    assert!(r.state.contains("dense.kernel.adam_m"));
    // evaluate() on the result agrees with the last epoch's test metrics
    let m = evaluate(&model.graph, &r.params, &test, 16, None, &ReferenceBackend).unwrap();
    assert_eq!(Some(m.accuracy), e[7].test_accuracy);
    assert_eq!(Some(m.loss), e[7].test_loss);
}

/// Evaluation covers every sample: a last partial batch is padded, not dropped, and gives
/// exactly the per-sample results.
#[test]
fn evaluation_pads_the_last_batch() {
    let model = float_model(3);
    let data = quadrants(10, 3);
    let by4 = evaluate(
        &model.graph,
        &model.params,
        &data,
        4,
        None,
        &ReferenceBackend,
    )
    .unwrap();
    let by1 = evaluate(
        &model.graph,
        &model.params,
        &data,
        1,
        None,
        &ReferenceBackend,
    )
    .unwrap();
    assert_eq!(by4.samples, 10);
    assert_eq!(by4, by1);
}

/// Stopping at step 7 of 2 x 5, checkpointing and resuming gives the uninterrupted run's
/// state bit for bit: params, Adam slots, observer ranges, BatchNorm statistics.
#[test]
fn resume_from_a_checkpoint_is_bit_identical() {
    let qat = parse(STATEFUL_QAT, "stateful.qir").unwrap();
    let params = stateful_params();
    let (train, test) = (quadrants(42, 4), quadrants(8, 5));
    let cfg = FitConfig {
        lr: LrSchedule::cosine(1e-2, 0.1),
        seed: 11,
        ..quiet(8, 2)
    };
    let whole = fit(&qat, &params, &train, Some(&test), &cfg, &ReferenceBackend).unwrap();
    assert_eq!(
        whole.steps, 10,
        "42 samples: 5 full batches of 8 per epoch, 2 dropped"
    );

    let path = temp("resume.safetensors");
    let first = FitConfig {
        checkpoint: Some(path.clone()),
        stop_after: Some(7),
        ..cfg.clone()
    };
    let part = fit(
        &qat,
        &params,
        &train,
        Some(&test),
        &first,
        &ReferenceBackend,
    )
    .unwrap();
    assert!(part.stopped_early);
    assert_eq!(part.steps, 7);
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(
        (ck.position.step, ck.position.epoch, ck.position.batch),
        (7, 1, 2)
    );
    for name in [
        "relu6.fq.min",
        "input.fq.max",
        "bn.moving_var",
        "dense.kernel.adam_v",
    ] {
        assert!(ck.state.contains(name), "checkpoint lacks {name}");
    }

    let second = FitConfig {
        resume: Some(path.clone()),
        ..cfg.clone()
    };
    let resumed = fit(
        &qat,
        &ParamStore::new(),
        &train,
        Some(&test),
        &second,
        &ReferenceBackend,
    )
    .unwrap();
    assert_eq!(resumed.steps, 10);
    assert_eq!(resumed.state.len(), whole.state.len());
    for (name, t) in whole.state.iter() {
        let r = resumed.state.get(name).unwrap();
        let bits = |t: &qatc::ir::Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(t), bits(r), "{name} differs after resuming");
    }
    assert_eq!(whole.history.step_loss, resumed.history.step_loss);
    let strip = |h: &qatc::train::History| {
        h.epochs
            .iter()
            .map(|e| {
                (
                    e.epoch,
                    e.steps,
                    e.loss,
                    e.accuracy,
                    e.test_loss,
                    e.test_accuracy,
                    e.lr,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&whole.history), strip(&resumed.history));

    // a run with another batch size may not resume from it
    let wrong = FitConfig {
        resume: Some(path.clone()),
        ..quiet(4, 2)
    };
    let err = fit(&qat, &params, &train, None, &wrong, &ReferenceBackend)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch size 8"), "{err}");
}

/// Periodic checkpoints are written mid-epoch and at the end of every epoch.
#[test]
fn checkpoints_are_written_periodically() {
    let model = float_model(6);
    let train = quadrants(32, 6);
    let path = temp("periodic.safetensors");
    let cfg = FitConfig {
        checkpoint: Some(path.clone()),
        checkpoint_every: Some(3),
        stop_after: Some(5),
        ..quiet(8, 2)
    };
    fit(
        &model.graph,
        &model.params,
        &train,
        None,
        &cfg,
        &ReferenceBackend,
    )
    .unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.position.step, 5);
    assert_eq!(ck.history.epochs.len(), 1);
    assert_eq!(ck.history.step_loss.len(), 5);
}

/// An exploding update is caught at the step it happens, naming the param.
#[test]
fn nan_stops_the_run_naming_the_tensor() {
    let model = float_model(7);
    let mut train = quadrants(16, 7);
    train.images.iter_mut().for_each(|v| *v *= 100.0);
    let cfg = FitConfig {
        optimizer: Optimizer::sgd(0.0),
        lr: LrSchedule::constant(3e38),
        check_state_every: 1,
        ..quiet(8, 1)
    };
    let err = fit(
        &model.graph,
        &model.params,
        &train,
        None,
        &cfg,
        &ReferenceBackend,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("training step 0:"), "{err}");
    assert!(err.contains("NaN or Inf in updated param `"), "{err}");

    // checking only the outputs, it surfaces one step later, in the loss, and still names
    // the bad params
    let cfg = FitConfig {
        check_state_every: 0,
        ..cfg
    };
    let err = fit(
        &model.graph,
        &model.params,
        &train,
        None,
        &cfg,
        &ReferenceBackend,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("training step 1:"), "{err}");
    assert!(err.contains("NaN or Inf in output `loss`"), "{err}");
    assert!(err.contains("updated param `dense.kernel`"), "{err}");
    assert!(err.contains("one of steps 0..=1"), "{err}");

    // a NaN pixel: the ReLU after the conv maps it to 0 (max(NaN, 0) = 0), so the loss
    // stays finite, but the conv's kernel gradient reads the pixel; the state check at the
    // end of the (one-step) epoch catches it
    let mut bad = quadrants(16, 8);
    bad.images[40] = f32::NAN;
    let path = temp("never_nan.safetensors");
    let cfg = FitConfig {
        checkpoint: Some(path.clone()),
        ..quiet(16, 1)
    };
    let err = fit(
        &model.graph,
        &model.params,
        &bad,
        None,
        &cfg,
        &ReferenceBackend,
    )
    .unwrap_err()
    .to_string();
    assert!(!path.exists(), "a checkpoint with NaN state was written");
    assert!(
        err.starts_with("training step 0: NaN or Inf in updated param `conv2d.kernel`"),
        "{err}"
    );
}

/// TFMOT's recipe with the same machinery: train the float model, then fine-tune its QAT
/// graph from the float weights with Adam 1e-4. The weights stay float (the quantizers act
/// in the forward pass only); the observers start from the first QAT batch.
#[test]
fn float_training_then_qat_fine_tuning() {
    let model = float_model(9);
    let (train, test) = (quadrants(96, 9), quadrants(32, 10));
    let float_cfg = FitConfig {
        lr: LrSchedule::constant(3e-2),
        ..quiet(16, 4)
    };
    let float = fit(
        &model.graph,
        &model.params,
        &train,
        Some(&test),
        &float_cfg,
        &ReferenceBackend,
    )
    .unwrap();
    let float_acc = float.history.last().unwrap().test_accuracy.unwrap();
    assert!(float_acc >= 0.9, "float accuracy {float_acc}");

    let mut qat_params = float.params.clone();
    let qat = run_pipeline(
        model.graph.clone(),
        &mut qat_params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let qat_cfg = FitConfig {
        batch_size: 16,
        progress: false,
        ..FitConfig::qat_fine_tune()
    };
    let tuned = fit(
        &qat,
        &qat_params,
        &train,
        Some(&test),
        &qat_cfg,
        &ReferenceBackend,
    )
    .unwrap();
    let qat_acc = tuned.history.last().unwrap().test_accuracy.unwrap();
    assert!(
        qat_acc >= float_acc - 0.1,
        "QAT accuracy {qat_acc} vs float {float_acc}"
    );
    // every observed range was learned from the data
    let states: Vec<String> = qat
        .node_ids()
        .filter_map(|n| {
            let q = qat.node(n).op.as_fake_quant()?;
            q.range.state().map(str::to_string)
        })
        .collect();
    assert!(states.len() >= 3, "{states:?}");
    for s in &states {
        let (lo, hi) = (
            tuned.params.get(&format!("{s}.min")).unwrap().data[0],
            tuned.params.get(&format!("{s}.max")).unwrap().data[0],
        );
        assert!(lo <= 0.0 && hi > 0.0 && hi < 100.0, "{s}: [{lo}, {hi}]");
    }
    // float weights: not snapped onto the kernel's quantization grid
    let k = tuned.params.get("dense.kernel").unwrap();
    let row = &k.data[..16];
    let m = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let q = qatc::ir::op::FakeQuantAttrs::weight(Some(0));
    let nd = nudged_for(&q, -m, m);
    assert!(row.iter().any(|&v| fake_quant(v, &nd) != v));
    // and the eval graph of the fine-tuned QAT model runs on the result
    let eg = eval_graph(&qat).unwrap();
    assert!(qatc::ir::text::print(&eg).contains("range=operands"));
    let m = evaluate(&qat, &tuned.params, &test, 16, None, &ReferenceBackend).unwrap();
    assert_eq!(
        Some(m.accuracy),
        tuned.history.last().unwrap().test_accuracy
    );
    // the export pipeline (BatchNorm folded, activations fused) keeps the accuracy
    let mut export_params = tuned.params.clone();
    let ready = run_pipeline(qat, &mut export_params, "export", &PipelineOptions::eval()).unwrap();
    let e = evaluate(&ready, &export_params, &test, 16, None, &ReferenceBackend).unwrap();
    assert!(
        (e.accuracy - m.accuracy).abs() <= 1.0 / 32.0,
        "{e:?} vs {m:?}"
    );
}

#[test]
fn bad_datasets_are_refused_clearly() {
    let model = float_model(1);
    let small = quadrants(5, 1);
    let err = fit(
        &model.graph,
        &model.params,
        &small,
        None,
        &quiet(8, 1),
        &ReferenceBackend,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("fewer than one batch"), "{err}");
    let mut wrong = quadrants(16, 1);
    wrong.labels[3] = 9;
    let err = fit(
        &model.graph,
        &model.params,
        &wrong,
        None,
        &quiet(8, 1),
        &ReferenceBackend,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("label 9") && err.contains("4 classes"),
        "{err}"
    );
    let mut shape = quadrants(16, 1);
    shape.sample_shape = vec![36, 1, 1];
    let err = fit(
        &model.graph,
        &model.params,
        &shape,
        None,
        &quiet(8, 1),
        &ReferenceBackend,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[36, 1, 1]"), "{err}");
}

/// The reference models of the benchmark build train steps that run: one step of each at
/// batch 2 on the interpreter (depthwise, BatchNorm, residual adds, dropout, padding), at
/// their default input shapes, with 10 classes.
#[test]
fn reference_models_train_one_step() {
    use qatc::autodiff::{train_step, TrainSpec};
    use qatc::exec::{Executor, Feed, InterpExecutor};
    for name in qatc::models::NAMES {
        let m = qatc::models::build(name, 0, None, Some(10)).unwrap();
        let step = train_step(&m.graph, &TrainSpec::new(2)).unwrap();
        let state = step.initial_state(&m.params).unwrap();
        let mut exec = InterpExecutor::new(step.graph.clone(), state).unwrap();
        let g = &m.graph;
        let sample: usize = g.node(g.inputs()[0]).ty.shape[1..].iter().product();
        let x: Vec<f32> = (0..2 * sample).map(|i| (i % 7) as f32 / 7.0).collect();
        let lr = qatc::autodiff::Optimizer::adam().lr_input(1e-3, 0);
        let outs = exec
            .run(&[
                ("input", Feed::F32(&x)),
                ("labels", Feed::I32(&[3, 7])),
                ("step", Feed::F32(&[0.0])),
                ("lr", Feed::F32(&[lr])),
            ])
            .unwrap();
        let loss = outs[0].data[0];
        assert!(loss.is_finite() && loss > 0.0, "{name}: loss {loss}");
        assert_eq!(outs[1].shape, vec![2, 10]);
        let after = exec.params();
        for p in &step.trained {
            assert_ne!(after.get(p), m.params.get(p), "{name}: {p} did not move");
        }
        for s in &step.statistics {
            assert_ne!(after.get(s), m.params.get(s), "{name}: {s} did not move");
        }
    }
}

/// BatchNorm re-estimation on a BatchNorm straight on the input: the moving statistics, set
/// far off, become the average of the batches' statistics (mean 15.5 of the values 0..31;
/// each batch of four 2x2 images holds 16 consecutive integers, unbiased variance 68/3), on
/// the interpreter and on the JIT; the weights and a model without BatchNorm are untouched.
#[test]
fn batch_norm_reestimation_averages_the_batch_statistics() {
    let g = parse(
        r#"model "bn"
param @bn.gamma : f32[1]
param @bn.beta : f32[1]
param @bn.moving_mean : f32[1]
param @bn.moving_variance : f32[1]
%0 = input "input" : f32[1,2,2,1]
%1 = batch_norm "bn" (%0, @bn.gamma, @bn.beta, @bn.moving_mean, @bn.moving_variance) {epsilon=0.001, momentum=0.999}
%2 = flatten "flatten" (%1)
output "output" = %2
"#,
        "bn.qir",
    )
    .unwrap();
    let mut params = ParamStore::new();
    for (name, v) in [
        ("bn.gamma", 2.0),
        ("bn.beta", 0.5),
        ("bn.moving_mean", -7.0),
        ("bn.moving_variance", 1e3),
    ] {
        params.insert(name, qatc::ir::Tensor::new(vec![1], vec![v]));
    }
    let data = Dataset {
        sample_shape: vec![2, 2, 1],
        images: (0..32).map(|v| v as f32).collect(),
        labels: vec![0; 8],
        classes: 1,
    };
    let jit = qatc::jit::Jit::default();
    let backends: [&dyn qatc::train::Backend; 2] = [&ReferenceBackend, &jit];
    for backend in backends {
        let out = qatc::train::reestimate_batch_norm(&g, &params, &data, 8, 4, backend).unwrap();
        let mean = out.get("bn.moving_mean").unwrap().data[0];
        let var = out.get("bn.moving_variance").unwrap().data[0];
        assert!((mean - 15.5).abs() < 1e-4, "mean {mean}");
        assert!((var - 68.0 / 3.0).abs() < 1e-3, "variance {var}");
        assert_eq!(out.get("bn.gamma").unwrap().data, [2.0]);
        assert_eq!(out.get("bn.beta").unwrap().data, [0.5]);
    }
    // no BatchNorm: nothing to do
    let m = float_model(1);
    let out = qatc::train::reestimate_batch_norm(&m.graph, &m.params, &quadrants(8, 1), 8, 4, &jit)
        .unwrap();
    for name in m.params.names() {
        assert_eq!(
            out.get(name).unwrap().data,
            m.params.get(name).unwrap().data
        );
    }
}
