//! Interop with the real runtime: every exported op kind and both reference models run in
//! LiteRT (`ai-edge-litert`, see scripts/test.sh) on random inputs.
//! - With the reference kernels (`BUILTIN_REF`) the outputs are bit-identical to qatc's int8
//!   interpreter.
//! - With the default resolver (optimized kernels + XNNPACK) they are within one
//!   quantization step of the output.
//!
//! Without `QATC_LITERT_PYTHON` the tests print a note and pass, unless
//! `QATC_REQUIRE_LITERT=1` (set by scripts/test.sh, so CI always runs them).

mod support;

use qatc::export::{export, ExportOptions};
use qatc::int8::{Array, Interpreter};
use qatc::ir::builder::Model;
use qatc::ir::params::Tensor;
use qatc::ir::{Graph, ParamStore};
use rand::RngExt;
use support::*;

struct Exported {
    name: String,
    bytes: Vec<u8>,
    inputs: Vec<Array>,
    /// qatc's outputs on `inputs`.
    ours: Vec<Array>,
    /// The output quantization step (for the XNNPACK tolerance).
    steps: Vec<f32>,
    /// Whether the default resolver (XNNPACK) must come within one step.
    check_default_resolver: bool,
}

/// Exports `g` and runs qatc's interpreter on it. Float I/O models are fed `x` (input `k`
/// scaled by `k + 1`); int8 I/O models every int8 level once (so elementwise lookup tables
/// are compared on all 256 entries), then random int8 values.
fn exported(name: &str, g: &Graph, p: &ParamStore, x: &Tensor, int8_io: bool) -> Exported {
    let opts = ExportOptions {
        int8_io,
        ..Default::default()
    };
    let bytes = export(g, p, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let it = Interpreter::new(&bytes).unwrap();
    let inputs = if int8_io {
        let mut r = rng(x.data.len() as u64);
        (0..g.inputs().len())
            .map(|_| {
                let q = (0..x.data.len())
                    .map(|i| match i {
                        0..256 => (i as i32 - 128) as i8,
                        _ => r.random_range(-128i32..128) as i8,
                    })
                    .collect();
                Array::i8(x.shape.clone(), q).unwrap()
            })
            .collect()
    } else {
        input_arrays(g, x)
    };
    let ours = it.run(&inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let m = it.model();
    let steps = m
        .outputs
        .iter()
        .map(|&t| {
            let producer = m.operators.iter().find(|o| o.outputs == [t]).unwrap();
            let q_tensor = if int8_io {
                t
            } else {
                producer.inputs[0].unwrap()
            };
            m.tensors[q_tensor].quant.as_ref().unwrap().scale[0]
        })
        .collect();
    Exported {
        name: format!("{name}{}", if int8_io { " (int8 I/O)" } else { "" }),
        bytes,
        inputs,
        ours,
        steps,
        check_default_resolver: true,
    }
}

fn same_bits(a: &Array, b: &Array) -> bool {
    a.shape == b.shape
        && match (&a.data, &b.data) {
            (qatc::int8::Data::F32(x), qatc::int8::Data::F32(y)) => {
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
            }
            (x, y) => x == y,
        }
}

/// Largest difference in output steps.
fn steps_apart(a: &Array, b: &Array, step: f32) -> f32 {
    match (&a.data, &b.data) {
        (qatc::int8::Data::F32(x), qatc::int8::Data::F32(y)) => x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs() / step)
            .fold(0.0, f32::max),
        (qatc::int8::Data::I8(x), qatc::int8::Data::I8(y)) => x
            .iter()
            .zip(y)
            .map(|(p, q)| (*p as f32 - *q as f32).abs())
            .fold(0.0, f32::max),
        _ => f32::INFINITY,
    }
}

/// Runs every model under both resolvers and checks the contract.
fn check_against_litert(models: &[Exported]) {
    let Some(rt) = litert() else { return };
    let mut jobs = Vec::new();
    for m in models {
        for resolver in [Resolver::Reference, Resolver::Default] {
            jobs.push(Job {
                name: format!("{} ({resolver:?})", m.name),
                model: &m.bytes,
                inputs: m.inputs.clone(),
                resolver,
                outputs: m.ours.len(),
            });
        }
    }
    let results = rt.run(&jobs);
    let mut failures = Vec::new();
    for (k, m) in models.iter().enumerate() {
        match &results[2 * k] {
            Err(e) => failures.push(format!("{}: LiteRT (reference) failed: {e}", m.name)),
            Ok(outs) => {
                for (i, (theirs, ours)) in outs.iter().zip(&m.ours).enumerate() {
                    if !same_bits(theirs, ours) {
                        failures.push(format!(
                            "{} output {i}: BUILTIN_REF differs from qatc's interpreter by up to {} steps",
                            m.name,
                            steps_apart(theirs, ours, m.steps[i])
                        ));
                    }
                }
            }
        }
        match &results[2 * k + 1] {
            _ if !m.check_default_resolver => {}
            Err(e) => failures.push(format!("{}: LiteRT (default resolver) failed: {e}", m.name)),
            Ok(outs) => {
                for (i, (theirs, ours)) in outs.iter().zip(&m.ours).enumerate() {
                    let d = steps_apart(theirs, ours, m.steps[i]);
                    if d > 1.0 + 1e-3 {
                        failures.push(format!(
                            "{} output {i}: the default resolver (XNNPACK) is {d} steps from qatc",
                            m.name
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every op kind, exported twice: with float I/O (QUANTIZE/DEQUANTIZE edges) and with int8
/// I/O (the op alone, fed random int8 values over the whole range). Both must match
/// BUILTIN_REF bit for bit; the int8 I/O model, where the op's own kernel is all there is,
/// must come within one step under XNNPACK. (Through a float edge, an op whose output
/// step is finer than its input step, like TANH, amplifies XNNPACK's one-step QUANTIZE
/// difference, so the float I/O models are checked against BUILTIN_REF only.)
#[test]
fn every_op_kind_matches_litert() {
    let mut models = Vec::new();
    for case in one_layer_cases() {
        let (g, p) = prepare(&case, 1);
        let mut shape = input_shape(&case.model);
        // TRANSPOSE_CONV's output shape is a constant: batch 1; the rest run a batch of 4
        shape[0] = if case.name.starts_with("conv2d_transpose") {
            1
        } else {
            4
        };
        let x = uniform(&shape, -1.2, 1.2, 3);
        let mut float_io = exported(case.name, &g, &p, &x, false);
        float_io.check_default_resolver = false;
        models.push(float_io);
        models.push(exported(case.name, &g, &p, &x, true));
    }
    check_against_litert(&models);
}

/// A reference model through the real `default_8bit` + `export` pipelines, calibrated on
/// uniform [0, 1) images, with random biases and BatchNorm statistics.
/// The same one-layer models, quantized by the passes branch's real `default_8bit` and
/// `export` pipelines (8-bit only; the stand-in above covers n-bit and fixed ranges).
#[test]
fn every_op_kind_through_the_pipelines_matches_litert() {
    let mut models = Vec::new();
    for case in one_layer_cases() {
        if case.qat.act_bits != 8 || case.qat.weight_bits != 8 || case.qat.fixed_ranges {
            continue;
        }
        let mut shape = input_shape(&case.model);
        shape[0] = 8;
        let (g, p) = through_pipelines(&case.model, &uniform(&shape, -1.0, 1.0, 1));
        shape[0] = if case.name.starts_with("conv2d_transpose") {
            1
        } else {
            4
        };
        let x = uniform(&shape, -1.2, 1.2, 3);
        let name = format!("{} (pipelines)", case.name);
        let mut float_io = exported(&name, &g, &p, &x, false);
        float_io.check_default_resolver = false;
        models.push(float_io);
        models.push(exported(&name, &g, &p, &x, true));
    }
    check_against_litert(&models);
}

fn reference_model(name: &str, model: Model, x: &Tensor) -> Exported {
    let mut model = model;
    randomize_params(&mut model.params, 21);
    let mut calib_shape = x.shape.clone();
    calib_shape[0] = 16;
    let calib = uniform(&calib_shape, 0.0, 1.0, 22);
    let (g, p) = through_pipelines(&model, &calib);
    exported(name, &g, &p, x, false)
}

#[test]
fn reference_models_match_litert() {
    let x = uniform(&[4, 28, 28, 1], 0.0, 1.0, 23);
    let models = vec![
        reference_model("mnist_cnn", qatc::models::mnist_cnn(3).unwrap(), &x),
        reference_model("mbv2_tiny", qatc::models::mbv2_tiny(3).unwrap(), &x),
    ];
    check_against_litert(&models);
}

/// The MLPerf Tiny reference models, each at its own input shape (CIFAR-10 32×32×3, MFCC
/// 49×10×1, visual wake words 96×96×3): random weights through default_8bit and export,
/// LiteRT runs the files bit-exactly like qatc's interpreter.
#[test]
fn mlperf_tiny_models_match_litert() {
    let mut models = Vec::new();
    for (k, name) in ["resnet8", "ds_cnn", "mobilenet_v1_025", "mobilenet_v2_035"]
        .into_iter()
        .enumerate()
    {
        let (input, _) = qatc::models::defaults(name).unwrap();
        let model = qatc::models::build(name, 3, None, None).unwrap();
        let x = uniform(&[2, input[0], input[1], input[2]], 0.0, 1.0, 40 + k as u64);
        models.push(reference_model(name, model, &x));
    }
    check_against_litert(&models);
}

/// Post-training quantization with each range method: the calibrated reference models
/// export to files LiteRT runs bit-exactly like qatc's interpreter.
#[test]
fn post_training_quantized_reference_models_match_litert() {
    use qatc::pass::{run_pipeline, PipelineOptions};
    use qatc::train::{calibrate, RangeMethod};
    let x = uniform(&[4, 28, 28, 1], 0.0, 1.0, 31);
    let calib = qatc::data::Dataset {
        sample_shape: vec![28, 28, 1],
        images: uniform(&[48, 28, 28, 1], 0.0, 1.0, 32).data,
        labels: vec![0; 48],
        classes: 10,
    };
    let mut models = Vec::new();
    for (name, model) in [
        ("mnist_cnn", qatc::models::mnist_cnn(5).unwrap()),
        ("mbv2_tiny", qatc::models::mbv2_tiny(5).unwrap()),
    ] {
        let mut params = model.params.clone();
        randomize_params(&mut params, 33);
        let qat = run_pipeline(
            model.graph.clone(),
            &mut params,
            "default_8bit",
            &PipelineOptions::train(),
        )
        .unwrap();
        for method in [
            RangeMethod::MinMax,
            RangeMethod::Percentile { percent: 99.9 },
            RangeMethod::Mse,
        ] {
            let jit = qatc::jit::Jit::default();
            let mut p = calibrate(&qat, &params, &calib, 48, 16, method, &jit).unwrap();
            let g = run_pipeline(qat.clone(), &mut p, "export", &PipelineOptions::eval()).unwrap();
            models.push(exported(
                &format!("{name} ptq {}", method.name()),
                &g,
                &p,
                &x,
                false,
            ));
        }
    }
    check_against_litert(&models);
}

/// Which FULLY_CONNECTED requantization `ai-edge-litert` 2.3 runs under BUILTIN_REF: qatc's
/// `FcRequant::Double` (the reference kernel's double-precision requantization) matches it
/// bit for bit, and the older fixed-point path demonstrably does not on the same model, so
/// this test tells the two apart.
#[test]
fn fully_connected_requantizes_in_double_precision_like_litert() {
    let Some(rt) = litert() else { return };
    let mut m = qatc::ir::builder::Sequential::new("fc_wide", &[96], 17)
        .add(qatc::ir::builder::Layer::dense(64))
        .build()
        .unwrap();
    randomize_params(&mut m.params, 18);
    let calib = uniform(&[32, 96], -1.0, 1.0, 19);
    let (g, p) = export_ready(&m.graph, &m.params, &calib, Qat::default());
    let bytes = export(
        &g,
        &p,
        &ExportOptions {
            int8_io: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut r = rng(20);
    let x = Array::i8(
        vec![64, 96],
        (0..64 * 96)
            .map(|_| r.random_range(-128i32..128) as i8)
            .collect(),
    )
    .unwrap();
    let theirs = rt
        .run(&[Job {
            name: "fc_wide".into(),
            model: &bytes,
            inputs: vec![x.clone()],
            resolver: Resolver::Reference,
            outputs: 1,
        }])
        .remove(0)
        .unwrap();
    let run = |mode| {
        let opts = qatc::int8::Options {
            fc_requant: mode,
            ..Default::default()
        };
        Interpreter::with_options(&bytes, opts)
            .unwrap()
            .run(std::slice::from_ref(&x))
            .unwrap()
    };
    let double = run(qatc::int8::FcRequant::Double);
    let fixed = run(qatc::int8::FcRequant::FixedPoint);
    assert_eq!(
        theirs[0], double[0],
        "BUILTIN_REF FULLY_CONNECTED is not the double-precision requantization"
    );
    assert_ne!(
        double[0], fixed[0],
        "the model does not tell the two requantizations apart"
    );
}

/// A Keras fixture imported, quantized by `default_8bit`, one QAT step on the JIT (when its
/// output is `[batch, classes]` logits), the `export` pipeline, and the int8 file bit-exact
/// in LiteRT's reference kernels.
fn keras_fixture_matches_litert(file: &str, sample: &[usize], seed: u64) {
    use qatc::data::Dataset;
    use qatc::pass::{run_pipeline, PipelineOptions};
    use qatc::train::{fit, FitConfig};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keras")
        .join(file);
    let model = qatc::import::keras::load(&path).unwrap();
    let mut p = model.params.clone();
    let qat = run_pipeline(
        model.graph.clone(),
        &mut p,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let out = &qat.node(qat.outputs()[0].node).ty.shape;
    let mut p = if out.len() == 2 {
        let classes = out[1];
        let batch = [&[8][..], sample].concat();
        let x = uniform(&batch, 0.0, 1.0, seed);
        let data = Dataset {
            sample_shape: sample.to_vec(),
            images: x.data.clone(),
            labels: (0..8).map(|i| (i % classes) as i32).collect(),
            classes,
        };
        let cfg = FitConfig {
            epochs: 1,
            batch_size: 8,
            progress: false,
            ..FitConfig::qat_fine_tune()
        };
        let trained = fit(&qat, &p, &data, None, &cfg, &qatc::jit::Jit::default()).unwrap();
        assert!(trained.steps == 1 && trained.history.step_loss.iter().all(|l| l.is_finite()));
        trained.params.clone()
    } else {
        p
    };
    let g = run_pipeline(qat, &mut p, "export", &PipelineOptions::eval()).unwrap();
    let x = uniform(&[&[2][..], sample].concat(), 0.0, 1.0, seed + 1);
    let mut m = exported(file, &g, &p, &x, false);
    m.check_default_resolver = false;
    check_against_litert(&[m]);
}

/// `keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3))` from its `.keras`
/// file.
#[test]
fn keras_mobilenet_v2_quantizes_trains_and_matches_litert() {
    keras_fixture_matches_litert("mobilenetv2.keras", &[96, 96, 3], 31);
}

/// Keras' threshold layers (tf_keras `ThresholdedReLU`, `ReLU(threshold=…)` with its
/// `max_value` and `negative_slope`), exported as GREATER + SELECT_V2 and the composed ops.
#[test]
fn keras_threshold_layers_quantize_train_and_match_litert() {
    keras_fixture_matches_litert("thresholded_relu.h5", &[6, 6, 3], 41);
    keras_fixture_matches_litert("thresholded_relu.keras", &[6, 6, 3], 43);
    keras_fixture_matches_litert("relu_variants.keras", &[4, 4, 3], 45);
}

/// Dense on a `(steps, features)` sequence: a 1×1 convolution between two reshapes.
#[test]
fn keras_dense_on_a_sequence_quantizes_trains_and_matches_litert() {
    keras_fixture_matches_litert("dense_sequence.keras", &[5, 6], 47);
    keras_fixture_matches_litert("dense_sequence.h5", &[5, 6], 49);
}

/// Found by the `graph` fuzz target: a concat feeding a concat lost the first concat's
/// output quantizer in `fuse_fake_quant` (its inputs are tied to it), and the pipeline
/// stopped with a verifier error. The first concat now keeps its observer, and the file
/// requantizes between the two scales as LiteRT does.
#[test]
fn a_concat_of_a_concat_quantizes_and_matches_litert() {
    let mut f = qatc::ir::builder::Functional::new("nested_concat", 0);
    let x = f.input("input", &[2, 5, 2]).unwrap();
    let inner = f.concat(&[x, x], 3).unwrap();
    let outer = f.concat(&[x, inner], 3).unwrap();
    f.output("output", outer);
    let model = f.build().unwrap();
    let x = uniform(&[4, 2, 5, 2], 0.0, 1.0, 24);
    check_against_litert(&[reference_model("nested_concat", model, &x)]);
}

/// A mixed-precision choice (4- and 2-bit weights in some layers, 8 in the rest, as
/// `--mixed-precision` writes them as overrides) exports to an int8 file with those kernels
/// packed as INT4, which LiteRT runs bit-exactly like qatc's interpreter.
#[test]
fn mixed_precision_models_match_litert() {
    use qatc::pass::{run_pipeline, PipelineOptions};
    use qatc::quant::scheme::LayerOverride;
    use qatc::train::{calibrate, RangeMethod};
    let x = uniform(&[4, 28, 28, 1], 0.0, 1.0, 41);
    let calib = qatc::data::Dataset {
        sample_shape: vec![28, 28, 1],
        images: uniform(&[32, 28, 28, 1], 0.0, 1.0, 42).data,
        labels: vec![0; 32],
        classes: 10,
    };
    let model = qatc::models::mbv2_tiny(6).unwrap();
    let mut params = model.params.clone();
    randomize_params(&mut params, 43);
    let mut opts = PipelineOptions::train();
    for o in [
        "conv2d_1=weight_bits:4",
        "depthwise_conv2d_1=weight_bits:4",
        "conv2d_3=weight_bits:2",
        "dense=weight_bits:4",
    ] {
        opts.overrides.push(LayerOverride::parse(o).unwrap());
    }
    let qat = run_pipeline(model.graph.clone(), &mut params, "default_8bit", &opts).unwrap();
    let jit = qatc::jit::Jit::default();
    let mut p = calibrate(&qat, &params, &calib, 32, 16, RangeMethod::MinMax, &jit).unwrap();
    let g = run_pipeline(qat, &mut p, "export", &PipelineOptions::eval()).unwrap();
    let mixed = exported("mbv2_tiny mixed 8/4/2", &g, &p, &x, false);
    // the 4- and 2-bit kernels of CONV_2D and FULLY_CONNECTED are stored packed, two weights
    // per byte; LiteRT has no INT4 DEPTHWISE_CONV_2D, whose 4-bit kernel stays INT8
    let m = qatc::tflite::read(&mixed.bytes).unwrap();
    let mut int4: Vec<&str> = m
        .tensors
        .iter()
        .filter(|t| t.dtype == qatc::tflite::model::ElemType::I4)
        .map(|t| t.name.as_str())
        .collect();
    int4.sort();
    assert_eq!(
        int4,
        [
            "conv2d_1.folded_kernel",
            "conv2d_3.folded_kernel",
            "dense.kernel"
        ]
    );
    check_against_litert(&[mixed]);
}

/// Learned ranges (LSQ on weights and activations, PACT on activations) export as trained:
/// after calibration the ranges are moved as training would move them (weight ranges
/// narrowed below the weights' extent, so kernels clip; activation ranges shrunk), the
/// models run bit-exactly in LiteRT, and an exported kernel's scale is its learned range's
/// step (through a BatchNorm fold: scaled per channel with the kernel).
#[test]
fn learned_range_models_match_litert() {
    use qatc::ir::fake_quant::nudged_for;
    use qatc::pass::{run_pipeline, PipelineOptions};
    use qatc::quant::scheme::Scheme;
    use qatc::train::{calibrate, RangeMethod};
    let x = uniform(&[4, 28, 28, 1], 0.0, 1.0, 51);
    let calib = qatc::data::Dataset {
        sample_shape: vec![28, 28, 1],
        images: uniform(&[32, 28, 28, 1], 0.0, 1.0, 52).data,
        labels: vec![0; 32],
        classes: 10,
    };
    let mut models = Vec::new();
    for (name, model, scheme) in [
        ("mnist_cnn", qatc::models::mnist_cnn(7).unwrap(), "lsq:4,8"),
        ("mbv2_tiny", qatc::models::mbv2_tiny(7).unwrap(), "lsq:4,8"),
        ("mbv2_tiny", qatc::models::mbv2_tiny(8).unwrap(), "pact:8,8"),
    ] {
        let mut params = model.params.clone();
        randomize_params(&mut params, 53);
        let opts = PipelineOptions::train().with_scheme(Scheme::parse(scheme).unwrap());
        let qat = run_pipeline(model.graph.clone(), &mut params, "default_8bit", &opts).unwrap();
        let jit = qatc::jit::Jit::default();
        let mut p = calibrate(&qat, &params, &calib, 32, 16, RangeMethod::MinMax, &jit).unwrap();
        let learned: Vec<String> = p
            .names()
            .filter(|n| n.ends_with("/fq.max") || n.ends_with("/act.max"))
            .filter(|n| !n.starts_with("input"))
            .cloned()
            .collect();
        assert!(!learned.is_empty(), "{name} {scheme}: no learned ranges");
        for max in &learned {
            let min = max.replace(".max", ".min");
            for n in [max.as_str(), min.as_str()] {
                let t = p.get_mut(n).unwrap();
                t.data.iter_mut().for_each(|v| *v *= 0.7);
            }
        }
        let dense_range = (
            p.get("dense.kernel/fq.min").cloned(),
            p.get("dense.kernel/fq.max").cloned(),
        );
        let g = run_pipeline(qat.clone(), &mut p, "export", &PipelineOptions::eval()).unwrap();
        let e = exported(&format!("{name} {scheme}"), &g, &p, &x, false);
        if let (Some(lo), Some(hi)) = dense_range {
            // the dense kernel (no BatchNorm): its exported scales are the learned steps
            let m = qatc::tflite::read(&e.bytes).unwrap();
            let t = m.tensors.iter().find(|t| t.name == "dense.kernel").unwrap();
            let q = qatc::ir::op::FakeQuantAttrs {
                bits: 4,
                axis: Some(0),
                ..qatc::ir::op::FakeQuantAttrs::weight(Some(0))
            };
            let want: Vec<f32> = (lo.data.iter().zip(&hi.data))
                .map(|(&a, &b)| nudged_for(&q, a, b).scale)
                .collect();
            assert_eq!(t.quant.as_ref().unwrap().scale, want, "{name} {scheme}");
        }
        models.push(e);
    }
    check_against_litert(&models);
}
