//! Side by side with TFMOT on one Keras model: `conv_bn_relu_dense.h5` quantized by TFMOT
//! (`quantize_model` + the TFLite converter, recorded by `scripts/tfmot_keras_export.py` in
//! `tests/fixtures/keras/conv_bn_relu_dense.tfmot.json`) and by qatc (import, `default_8bit`,
//! `export`) give the same operators in the same order, with the same weight layouts and the
//! same per-axis quantization of the convolutions. The one intended difference: qatc
//! quantizes FULLY_CONNECTED weights per output channel, TFMOT per tensor.

mod support;

use qatc::export::{export, ExportOptions};
use qatc::tflite::model::op_name;
use serde_json::Value;
use support::*;

#[test]
fn qatc_and_tfmot_write_the_same_operators_and_layouts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras");
    let model = qatc::import::keras::load(&dir.join("conv_bn_relu_dense.h5")).unwrap();
    let (g, p) = through_pipelines(&model, &uniform(&[8, 8, 8, 3], -1.0, 1.0, 3));
    let ours = qatc::tflite::read(&export(&g, &p, &ExportOptions::default()).unwrap()).unwrap();
    let tfmot: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("conv_bn_relu_dense.tfmot.json")).unwrap(),
    )
    .unwrap();
    let their_ops: Vec<&str> = tfmot["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["op"].as_str().unwrap())
        .collect();
    let our_ops: Vec<String> = ours.operators.iter().map(|o| op_name(o.code)).collect();
    assert_eq!(our_ops, their_ops);
    for (k, (op, theirs)) in ours
        .operators
        .iter()
        .zip(tfmot["ops"].as_array().unwrap())
        .enumerate()
    {
        // the weight operand (input 1) of the kernel operators
        if !matches!(
            our_ops[k].as_str(),
            "CONV_2D" | "DEPTHWISE_CONV_2D" | "FULLY_CONNECTED"
        ) {
            continue;
        }
        let w = &ours.tensors[op.inputs[1].unwrap()];
        let tw = &tfmot["tensors"][theirs["inputs"][1].as_u64().unwrap().to_string()];
        let their_shape: Vec<usize> = tw["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(w.shape, their_shape, "{}: weight shape", our_ops[k]);
        let q = w.quant.as_ref().unwrap();
        let their_scales = tw["num_scales"].as_u64().unwrap() as usize;
        if our_ops[k] == "FULLY_CONNECTED" {
            assert_eq!(their_scales, 1, "TFMOT's dense weights are per tensor");
            assert_eq!(
                q.scale.len(),
                w.shape[0],
                "qatc's dense weights are per axis"
            );
        } else {
            assert_eq!(q.scale.len(), their_scales, "{}: scales", our_ops[k]);
            assert_eq!(
                q.axis as u64,
                tw["quantized_dimension"].as_u64().unwrap(),
                "{}: quantized dimension",
                our_ops[k]
            );
        }
        assert!(q.zero_point.iter().all(|&z| z == 0));
    }
}
