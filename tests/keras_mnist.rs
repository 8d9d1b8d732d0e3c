//! A Keras model trained in TF, end to end: `mnist_cnn.keras` and `mnist_cnn.h5` (trained
//! one epoch by `scripts/keras_fixtures.py`, `Rescaling(1/255)` inside, so they take raw
//! pixels) keep Keras' accuracy on the MNIST test set in qatc (0.9617, ±0.05 points), and
//! after one QAT epoch the int8 file runs bit-exactly in LiteRT's reference kernels.

mod support;

use qatc::data::mnist::{self, Split};
use qatc::data::Dataset;
use qatc::export::{export, ExportOptions};
use qatc::jit::Jit;
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::train::{evaluate, fit, FitConfig};
use std::path::Path;
use support::*;

/// MNIST as the Keras model reads it: raw 0..255 pixels (qatc's loader scales to [0, 1]).
fn raw(d: Dataset) -> Dataset {
    Dataset {
        images: d.images.iter().map(|v| (v * 255.0).round()).collect(),
        ..d
    }
}

#[test]
fn a_trained_keras_model_keeps_its_accuracy_and_exports_bit_exact() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras");
    let test = raw(mnist::load(&mnist::default_dir(), Split::Test).unwrap());
    let train = raw(mnist::load(&mnist::default_dir(), Split::Train)
        .unwrap()
        .take(4096));
    for file in ["mnist_cnn.keras", "mnist_cnn.h5"] {
        let model = qatc::import::keras::load(&dir.join(file)).unwrap();
        let float = evaluate(
            &model.graph,
            &model.params,
            &test,
            500,
            None,
            &Jit::default(),
        )
        .unwrap()
        .accuracy;
        assert!(
            (float - 0.9617).abs() <= 0.0005,
            "{file}: float accuracy {float} in qatc, 0.9617 in Keras"
        );
        let mut p = model.params.clone();
        let qat = run_pipeline(
            model.graph.clone(),
            &mut p,
            "default_8bit",
            &PipelineOptions::train(),
        )
        .unwrap();
        let cfg = FitConfig {
            epochs: 1,
            progress: false,
            ..FitConfig::qat_fine_tune()
        };
        // Rescaling's factor is a constant in Keras: frozen through the passes and training
        assert!(model.graph.is_frozen("scale.scale") && qat.is_frozen("scale.scale"));
        let tuned = fit(&qat, &p, &train, None, &cfg, &Jit::default()).unwrap();
        assert_eq!(
            tuned.params.get("scale.scale"),
            model.params.get("scale.scale"),
            "{file}: the frozen Rescaling factor moved"
        );
        assert_ne!(
            tuned.params.get("conv1.kernel"),
            model.params.get("conv1.kernel"),
            "{file}: the kernels must train"
        );
        let mut p = tuned.params.clone();
        let ready = run_pipeline(qat, &mut p, "export", &PipelineOptions::eval()).unwrap();
        let bytes = export(&ready, &p, &ExportOptions::default()).unwrap();
        let int8 = qatc::int8::Interpreter::new(&bytes).unwrap();
        let preds = qatc::int8::predict(&int8, &test.take(2000), 500).unwrap();
        let correct = preds
            .iter()
            .zip(&test.labels)
            .filter(|(p, &l)| **p as i32 == l)
            .count();
        assert!(
            correct as f64 / 2000.0 > 0.94,
            "{file}: int8 accuracy {}",
            correct as f64 / 2000.0
        );
        // LiteRT's reference kernels give the same bits as qatc's interpreter
        if let Some(rt) = litert() {
            let x = qatc::ir::params::Tensor::new(
                vec![16, 28, 28, 1],
                test.images[..16 * 784].to_vec(),
            );
            let inputs = input_arrays(&ready, &x);
            let ours = int8.run(&inputs).unwrap();
            let jobs = [Job {
                name: file.to_string(),
                model: &bytes,
                inputs: inputs.clone(),
                resolver: Resolver::Reference,
                outputs: 1,
            }];
            let theirs = rt.run(&jobs).remove(0).unwrap();
            assert_eq!(
                theirs[0].as_f32().unwrap(),
                ours[0].as_f32().unwrap(),
                "{file}: LiteRT BUILTIN_REF differs"
            );
        }
    }
}
