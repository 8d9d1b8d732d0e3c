//! Import round trip: importing an exported model gives back an export-ready graph whose
//! export has the same operators and versions, shapes, quantization (scales bit for bit)
//! and constant data, and computes the same outputs.

mod support;

use qatc::export::{export, ExportOptions};
use qatc::import::tflite::import;
use qatc::int8::Interpreter;
use qatc::tflite::{read, Model as ModelInfo};
use support::*;

fn same_structure(name: &str, a: &ModelInfo, b: &ModelInfo) {
    let ops = |m: &ModelInfo| -> Vec<(String, i32)> {
        m.operators.iter().map(|o| (o.name(), o.version)).collect()
    };
    assert_eq!(ops(a), ops(b), "{name}: operators differ");
    for (k, (oa, ob)) in a.operators.iter().zip(&b.operators).enumerate() {
        assert_eq!(oa.inputs.len(), ob.inputs.len(), "{name} op #{k}");
        let mut pairs: Vec<(Option<usize>, Option<usize>)> = oa
            .inputs
            .iter()
            .copied()
            .zip(ob.inputs.iter().copied())
            .collect();
        pairs.extend(
            oa.outputs
                .iter()
                .zip(&ob.outputs)
                .map(|(x, y)| (Some(*x), Some(*y))),
        );
        for (ta, tb) in pairs {
            let (Some(ta), Some(tb)) = (ta, tb) else {
                assert_eq!(ta.is_none(), tb.is_none(), "{name} op #{k}: optional input");
                continue;
            };
            let (ta, tb) = (&a.tensors[ta], &b.tensors[tb]);
            let what = format!(
                "{name} op #{k} {} tensor `{}`",
                a.operators[k].name(),
                ta.name
            );
            assert_eq!(ta.shape, tb.shape, "{what}: shape");
            assert_eq!(ta.dtype, tb.dtype, "{what}: type");
            match (&ta.quant, &tb.quant) {
                (None, None) => {}
                (Some(qa), Some(qb)) => {
                    assert_eq!(qa.zero_point, qb.zero_point, "{what}: zero points");
                    assert_eq!(qa.axis, qb.axis, "{what}: axis");
                    assert_eq!(qa.scale.len(), qb.scale.len(), "{what}: scales");
                    for (sa, sb) in qa.scale.iter().zip(&qb.scale) {
                        assert_eq!(sa.to_bits(), sb.to_bits(), "{what}: scale {sa} vs {sb}");
                    }
                }
                _ => panic!("{what}: quantization present in one model only"),
            }
            assert_eq!(ta.data, tb.data, "{what}: constant data");
        }
    }
}

#[test]
fn import_of_an_export_reexports_the_same_model() {
    let mut cases: Vec<(String, qatc::ir::Graph, qatc::ir::ParamStore)> = Vec::new();
    for case in one_layer_cases() {
        if case.qat.act_bits < 8 || case.qat.weight_bits < 8 {
            continue; // n-bit grid clamps (MINIMUM) are not imported
        }
        let (g, p) = prepare(&case, 1);
        cases.push((case.name.to_string(), g, p));
    }
    for (name, model) in [
        ("mnist_cnn", qatc::models::mnist_cnn(3).unwrap()),
        ("mbv2_tiny", qatc::models::mbv2_tiny(3).unwrap()),
    ] {
        let mut model = model;
        randomize_params(&mut model.params, 21);
        let calib = uniform(&[16, 28, 28, 1], 0.0, 1.0, 22);
        let (g, p) = through_pipelines(&model, &calib);
        cases.push((name.to_string(), g, p));
    }
    for (name, g, p) in cases {
        let first =
            export(&g, &p, &ExportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (g2, p2) = import(&first).unwrap_or_else(|e| panic!("{name}: import: {e}"));
        let second = export(&g2, &p2, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{name}: re-export: {e}"));
        let (a, b) = (read(&first).unwrap(), read(&second).unwrap());
        same_structure(&name, &a, &b);
        // and the two compute the same
        let shape: Vec<usize> = a.tensors[a.inputs[0]].shape.clone();
        let x = uniform(&shape, -1.0, 1.0, 5);
        let inputs: Vec<_> = a
            .inputs
            .iter()
            .enumerate()
            .map(|(k, _)| {
                let t = qatc::ir::Tensor::new(
                    x.shape.clone(),
                    x.data.iter().map(|v| v * (k + 1) as f32).collect(),
                );
                to_array(&t)
            })
            .collect();
        let ya = Interpreter::new(&first).unwrap().run(&inputs).unwrap();
        let yb = Interpreter::new(&second).unwrap().run(&inputs).unwrap();
        assert_eq!(ya, yb, "{name}: outputs differ");
    }
}
