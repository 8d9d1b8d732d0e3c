//! A model trained by qatc and exported keeps its accuracy in the real runtime: `mbv2_tiny`,
//! one float epoch and one QAT epoch on the JIT (TFMOT's recipe), exported to int8 TFLite,
//! then the whole MNIST test set through LiteRT's reference kernels. LiteRT's accuracy is
//! within 0.1 points of the fake-quant graph's, and its outputs are bit for bit those of
//! qatc's int8 interpreter.

mod support;

use qatc::data::mnist::{self, Split};
use qatc::data::Dataset;
use qatc::export::{export, ExportOptions};
use qatc::int8::{argmax_rows, Array, Interpreter};
use qatc::jit::Jit;
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::train::{fit, predict, FitConfig};
use support::{litert, Job, Resolver};

fn images(data: &Dataset, lo: usize, hi: usize) -> Array {
    let n = data.sample_len();
    Array::f32(
        vec![hi - lo, 28, 28, 1],
        data.images[lo * n..hi * n].to_vec(),
    )
    .unwrap()
}

fn accuracy(preds: &[usize], labels: &[i32]) -> f64 {
    let ok = preds
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as i32 == **l)
        .count();
    ok as f64 / labels.len() as f64
}

#[test]
fn a_qat_trained_mbv2_tiny_keeps_its_accuracy_in_litert() {
    let Some(rt) = litert() else { return };
    let dir = mnist::default_dir();
    let train = mnist::load(&dir, Split::Train).unwrap();
    let test = mnist::load(&dir, Split::Test).unwrap();
    let jit = Jit::default();
    let quiet = |c: FitConfig| FitConfig {
        progress: false,
        ..c
    };

    let model = qatc::models::mbv2_tiny(0).unwrap();
    let float = fit(
        &model.graph,
        &model.params,
        &train,
        None,
        &quiet(FitConfig::default()),
        &jit,
    )
    .unwrap();
    let mut params = float.params.clone();
    let qat = run_pipeline(
        model.graph.clone(),
        &mut params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let tuned = fit(
        &qat,
        &params,
        &train,
        None,
        &quiet(FitConfig::qat_fine_tune()),
        &jit,
    )
    .unwrap();
    let qat_preds = predict(&qat, &tuned.params, &test, 500, None, &jit).unwrap();
    let mut params = tuned.params.clone();
    let ready = run_pipeline(qat, &mut params, "export", &PipelineOptions::eval()).unwrap();
    let bytes = export(&ready, &params, &ExportOptions::default()).unwrap();

    let head = 500;
    let jobs = [
        Job {
            name: "mbv2_tiny test set".into(),
            model: &bytes,
            inputs: vec![images(&test, 0, test.len())],
            resolver: Resolver::Reference,
            outputs: 1,
        },
        Job {
            name: "mbv2_tiny head".into(),
            model: &bytes,
            inputs: vec![images(&test, 0, head)],
            resolver: Resolver::Reference,
            outputs: 1,
        },
    ];
    let results = rt.run(&jobs);
    let litert_all = results[0].as_ref().expect("LiteRT runs the exported model");
    let litert_head = results[1].as_ref().expect("LiteRT runs the exported model");

    let ours = Interpreter::new(&bytes)
        .unwrap()
        .run(&[images(&test, 0, head)])
        .unwrap();
    assert_eq!(
        ours[0]
            .as_f32()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        litert_head[0]
            .as_f32()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        "qatc's int8 interpreter and LiteRT's reference kernels differ on the trained model"
    );

    let qat_acc = accuracy(&qat_preds, &test.labels);
    let litert_acc = accuracy(&argmax_rows(&litert_all[0]), &test.labels);
    eprintln!("mbv2_tiny, 1 + 1 epochs: QAT {qat_acc:.4}, LiteRT int8 {litert_acc:.4}");
    assert!(
        qat_acc > 0.97,
        "QAT accuracy {qat_acc} is too low for this recipe"
    );
    assert!(
        (litert_acc - qat_acc).abs() <= 0.001,
        "LiteRT's int8 accuracy {litert_acc} is more than 0.1 points from the QAT graph's {qat_acc}"
    );
}
