//! Importing float models written the way the TFLite converter writes Keras models (fused
//! activations, SHAPE → STRIDED_SLICE → PACK glue before a RESHAPE, float weights): the
//! imported graph has the expected structure, and qatc's f32 interpreter on it computes
//! what LiteRT computes on the file.

mod support;

use qatc::import::tflite::import;
use qatc::int8::Array;
use qatc::ir::interp::{self, Value};
use qatc::ir::op::ModelOp;
use qatc::ir::op::Op;
use qatc::ir::Tensor;
use qatc::tflite::model::Options;
use qatc::tflite::schema::BuiltinOperator as B;
use support::float::{keras_mixed, keras_mnist, Asm};
use support::*;

fn run_imported(bytes: &[u8], x: &Tensor) -> Tensor {
    let (mut g, p) = import(bytes).unwrap();
    g.rebatch(x.shape[0]).unwrap();
    let name = g.node(g.inputs()[0]).name.clone();
    let r = interp::run(&g, &p, &[(&name, Value::F32(x.clone()))]).unwrap();
    r.outputs[0].1.f32().unwrap().clone()
}

#[test]
fn converter_style_float_models_import_with_the_expected_structure() {
    let (g, p) = import(&keras_mnist()).unwrap();
    let kinds: Vec<&str> = g
        .canonical_order()
        .iter()
        .map(|&n| g.node(n).op.name())
        .filter(|k| *k != "param")
        .collect();
    assert_eq!(
        kinds,
        [
            "input",
            "conv2d",
            "relu",
            "max_pool2d",
            "flatten",
            "dense",
            "softmax"
        ]
    );
    // names come from tensor names, weights from the layer
    assert!(g.find("sequential/conv2d/Relu").is_some());
    assert!(
        p.contains("sequential/conv2d/Relu.kernel") && p.contains("sequential/dense/BiasAdd.bias")
    );
    assert_eq!(g.node(g.inputs()[0]).name, "input_1");
    assert_eq!(g.outputs()[0].name, "output_0");
    // a float model has no quantizers
    assert!(g
        .node_ids()
        .all(|n| !matches!(g.node(n).op, Op::Model(ModelOp::FakeQuant(_)))));

    let (g, _) = import(&keras_mixed()).unwrap();
    let count = |k: &str| g.node_ids().filter(|&n| g.node(n).op.name() == k).count();
    assert_eq!(count("relu6"), 1);
    assert_eq!(count("relu"), 3); // depthwise's and add's fused ReLU, and the RELU op
    assert_eq!(count("crop"), 1);
    assert_eq!(count("upsample_nearest"), 1);
    assert_eq!(count("global_avg_pool"), 1);
    assert_eq!(count("conv2d_transpose"), 1);
}

#[test]
fn imported_float_models_compute_what_litert_computes() {
    let Some(rt) = litert() else { return };
    let models = [
        ("keras_mnist", keras_mnist(), vec![3, 28, 28, 1]),
        ("keras_mixed", keras_mixed(), vec![1, 8, 8, 3]),
    ];
    let mut jobs = Vec::new();
    let mut ours = Vec::new();
    for (name, bytes, shape) in &models {
        let x = uniform(shape, -1.0, 1.0, 9);
        ours.push(run_imported(bytes, &x));
        jobs.push(Job {
            name: name.to_string(),
            model: bytes,
            inputs: vec![Array::f32(x.shape.clone(), x.data.clone()).unwrap()],
            resolver: Resolver::Reference,
            outputs: 1,
        });
    }
    for ((name, ..), (theirs, ours)) in models.iter().zip(rt.run(&jobs).into_iter().zip(ours)) {
        let theirs = theirs.unwrap_or_else(|e| panic!("{e}"));
        let t = theirs[0].as_f32().unwrap();
        assert_eq!(theirs[0].shape, ours.shape, "{name}");
        let scale = t.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        let worst = t
            .iter()
            .zip(&ours.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{name}: qatc differs from LiteRT by {worst} (output scale {scale})"
        );
    }
}

#[test]
fn unsupported_ops_are_named() {
    let mut a = Asm::new();
    let x = a.act("input", &[1, 4]);
    let y = a.act("floor", &[1, 4]);
    a.op(B::FLOOR, &[x], y, Options::None);
    let err = import(&a.finish(x, y)).unwrap_err().to_string();
    assert!(
        err.contains("FLOOR") && err.contains("not supported"),
        "{err}"
    );
    let err = qatc::int8::Interpreter::new(&{
        let mut a = Asm::new();
        let x = a.act("input", &[1, 4]);
        let y = a.act("exp", &[1, 4]);
        a.op(B::EXP, &[x], y, Options::None);
        a.finish(x, y)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("EXP") && err.contains("not supported"),
        "{err}"
    );
}
