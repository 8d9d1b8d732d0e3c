//! Export without LiteRT: every op kind exports, loads in qatc's int8 interpreter, and
//! computes what the fake-quantized float graph computes, to within a few quantization
//! steps of the output.

mod support;

use qatc::export::{export, ExportOptions};
use qatc::int8::Interpreter;
use support::*;

#[test]
fn every_op_kind_exports_and_tracks_the_fake_quant_graph() {
    for case in one_layer_cases() {
        let (g, p) = prepare(&case, 1);
        let bytes = export(&g, &p, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let it = Interpreter::new(&bytes).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let mut shape = input_shape(&case.model);
        shape[0] = if case.name.starts_with("conv2d_transpose") {
            1
        } else {
            3
        };
        let x = uniform(&shape, -1.0, 1.0, 2);
        let got = it
            .run(&input_arrays(&g, &x))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let want = run_float(&g, &p, &x);
        let got = got[0].as_f32().unwrap();
        assert_eq!(got.len(), want.data.len(), "{}", case.name);
        // the output quantization step
        let m = it.model();
        let deq = m.operators.last().unwrap();
        let q = m.tensors[deq.inputs[0].unwrap()].quant.as_ref().unwrap();
        let step = q.scale[0];
        let worst = got
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs() / step)
            .fold(0.0f32, f32::max);
        // one step of rounding per requantization; sigmoid and tanh have no quantizer in the
        // QAT graph, so their float output is compared with TFLite's fixed 8-bit grid
        assert!(worst <= 2.0, "{}: off by {worst} steps", case.name);
    }
}

#[test]
fn constant_buffers_are_16_byte_aligned_and_the_model_verifies() {
    use qatc::tflite::schema as fb;
    let case = one_layer_cases()
        .into_iter()
        .find(|c| c.name == "conv2d_same_relu")
        .unwrap();
    let (g, p) = prepare(&case, 1);
    let bytes = export(&g, &p, &ExportOptions::default()).unwrap();
    let model = fb::root_as_model(&bytes).expect("the flatbuffers verifier accepts the file");
    assert!(fb::model_buffer_has_identifier(&bytes));
    let buffers = model.buffers().unwrap();
    assert!(
        buffers.get(0).data().is_none_or(|d| d.is_empty()),
        "buffer 0 must be empty"
    );
    let mut constants = 0;
    for b in buffers.iter().skip(1) {
        let data = b.data().unwrap().bytes();
        let offset = data.as_ptr() as usize - bytes.as_ptr() as usize;
        assert_eq!(offset % 16, 0, "buffer data at offset {offset}");
        constants += 1;
    }
    assert!(constants >= 3, "weights, bias and metadata buffers");
    let info = qatc::tflite::read(&bytes).unwrap();
    // opcodes: deprecated_builtin_code mirrors the code (< 127) and versions are the converter's
    let conv = model
        .operator_codes()
        .unwrap()
        .iter()
        .find(|c| c.builtin_code() == fb::BuiltinOperator::CONV_2D)
        .unwrap();
    assert_eq!((conv.deprecated_builtin_code(), conv.version()), (3, 3));
    assert_eq!(info.min_runtime_version().as_deref(), Some("1.14.0"));
}

#[test]
fn int8_weights_are_the_fake_quant_levels() {
    use qatc::ir::interp::{self, Value};
    let case = one_layer_cases()
        .into_iter()
        .find(|c| c.name == "depthwise_conv2d")
        .unwrap();
    let (g, p) = prepare(&case, 1);
    let bytes = export(&g, &p, &ExportOptions::default()).unwrap();
    let info = qatc::tflite::read(&bytes).unwrap();
    let op = info
        .operators
        .iter()
        .find(|o| o.name() == "DEPTHWISE_CONV_2D")
        .unwrap();
    let w = &info.tensors[op.inputs[1].unwrap()];
    let q = w.quant.as_ref().unwrap();
    assert_eq!((q.axis, q.scale.len()), (3, w.shape[3]));
    let Some(qatc::tflite::model::Data::I8(values)) = w.values() else {
        panic!("the depthwise kernel is not int8")
    };
    // the fake-quantized kernel, from the f32 reference interpreter
    let fq = g
        .node_ids()
        .find(|&n| g.node(n).name.ends_with(".kernel/quant"))
        .unwrap();
    let x = uniform(&[1, 8, 8, 3], -1.0, 1.0, 1);
    let all = interp::run_all(&g, &p, &[("input", Value::F32(x))]).unwrap();
    let fq_vals = all[&fq].f32().unwrap();
    let c = w.shape[3];
    for (i, (&v, &f)) in values.iter().zip(&fq_vals.data).enumerate() {
        // the fake-quant value is exactly the int8 weight times its scale
        let deq = v as f32 * q.scale[i % c];
        assert_eq!(
            deq.to_bits(),
            f.to_bits(),
            "weight {i}: {deq} vs fake-quant {f}"
        );
        assert!((-127..=127).contains(&v));
    }
}

#[test]
fn n_bit_grids_are_kept_and_unrepresentable_ones_refused() {
    // 4-bit activations: every output value stays on the 16 lowest int8 levels
    let case = one_layer_cases()
        .into_iter()
        .find(|c| c.name == "conv2d_4bit")
        .unwrap();
    let (g, p) = prepare(&case, 1);
    let opts = ExportOptions {
        int8_io: true,
        ..Default::default()
    };
    let bytes = export(&g, &p, &opts).unwrap();
    let it = Interpreter::new(&bytes).unwrap();
    let x = qatc::int8::Array::i8(
        vec![2, 8, 8, 3],
        (0..384).map(|i| (i * 91 % 256) as u8 as i8).collect(),
    )
    .unwrap();
    let y = it.run(&[x]).unwrap();
    assert!(y[0]
        .as_i8()
        .unwrap()
        .iter()
        .all(|&v| (-128..=-113).contains(&v)));
    assert!(it.model().operators.iter().any(|o| o.name() == "MINIMUM"));

    // 8-bit full-range symmetric weights would need the int8 value -128: refused, naming the node
    let mut g2 = g.clone();
    for n in g2.node_ids().collect::<Vec<_>>() {
        if let qatc::ir::op::Op::Model(qatc::ir::op::ModelOp::FakeQuant(q)) = &mut g2.node_mut(n).op
        {
            if q.narrow {
                q.narrow = false;
                q.bits = 8;
            }
        }
    }
    let err = export(&g2, &p, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kernel/quant") && err.contains("[-127, 127]"),
        "{err}"
    );
}

#[test]
fn unsupported_graphs_are_refused_with_the_node_named() {
    // BatchNorm left in (a QAT graph, not export-ready)
    let model = qatc::models::mbv2_tiny(1).unwrap();
    let err = export(&model.graph, &model.params, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_norm") && err.contains("fold"), "{err}");
    // a float model without quantizers
    let model = qatc::models::mnist_cnn(1).unwrap();
    let err = export(&model.graph, &model.params, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fake_quant"), "{err}");
}

#[test]
fn bad_parameters_are_errors_not_panics() {
    let case = one_layer_cases()
        .into_iter()
        .find(|c| c.name == "conv2d_same_relu")
        .unwrap();
    let (g, p) = prepare(&case, 1);
    let state = g
        .node_ids()
        .find_map(|n| match &g.node(n).op {
            qatc::ir::op::Op::Model(qatc::ir::op::ModelOp::FakeQuant(q)) => {
                q.range.state().map(str::to_string)
            }
            _ => None,
        })
        .unwrap();
    // a missing observer range
    let mut p1 = p.clone();
    p1.remove(&format!("{state}.min"));
    let err = export(&g, &p1, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{state}.min")), "{err}");
    // an empty or non-finite observer range
    for bad in [
        qatc::ir::Tensor::new(vec![0], vec![]),
        qatc::ir::Tensor::scalar(f32::NAN),
    ] {
        let mut p2 = p.clone();
        p2.insert(format!("{state}.max"), bad);
        assert!(export(&g, &p2, &ExportOptions::default()).is_err());
    }
    // non-finite weights
    let mut p3 = p.clone();
    let k = p3.names().find(|n| n.ends_with(".kernel")).unwrap().clone();
    p3.get_mut(&k).unwrap().data[0] = f32::INFINITY;
    let err = export(&g, &p3, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("inf"), "{err}");
}

/// A fresh Keras PReLU starts with an all-zero slope; it still exports (its per-tensor
/// weight grid keeps zero point 0) and computes a plain ReLU.
#[test]
fn a_fresh_prelu_exports_as_relu() {
    use qatc::ir::builder::{Layer, Sequential};
    let model = Sequential::new("fresh_prelu", &[4, 4, 3], 0)
        .add(Layer::prelu_per_channel())
        .build()
        .unwrap();
    let x = uniform(&[2, 4, 4, 3], -1.0, 1.0, 5);
    let (g, p) = through_pipelines(&model, &x);
    let bytes = export(&g, &p, &ExportOptions::default()).unwrap();
    let it = Interpreter::new(&bytes).unwrap();
    let got = it.run(&input_arrays(&g, &x)).unwrap();
    let got = got[0].as_f32().unwrap();
    let step = 1.0 / 255.0 * 1.01;
    for (y, &v) in got.iter().zip(&x.data) {
        assert!((y - v.max(0.0)).abs() <= 2.0 * step, "{y} vs relu({v})");
    }
}
