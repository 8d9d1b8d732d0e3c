//! Keras import against Keras itself: every fixture of `tests/fixtures/keras/` (made by
//! `scripts/keras_fixtures.py` with Keras 3 and tf_keras, see its README) is imported from
//! each of its files and run in the reference interpreter on the recorded input; the output
//! must match Keras' recorded output to 1e-5 of the output's range. Models qatc cannot take
//! are refused with the layer and class named.

use qatc::int8::npy;
use qatc::ir::interp::{self, Value};
use qatc::ir::params::Tensor;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras")
}

fn load_npy(path: &Path) -> Tensor {
    let a = npy::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tensor::new(a.shape.clone(), a.as_f32().expect("f32 npy").to_vec())
}

/// Imports `file`, runs it on `input`, returns the largest error relative to the range of
/// `want`.
fn relative_error(file: &Path, input: &Tensor, want: &Tensor) -> f32 {
    let mut m = qatc::import::keras::load(file).unwrap_or_else(|e| panic!("{e}"));
    m.graph.rebatch(input.shape[0]).unwrap();
    let name = m.graph.node(m.graph.inputs()[0]).name.clone();
    let out = interp::run(
        &m.graph,
        &m.params,
        &[(name.as_str(), Value::F32(input.clone()))],
    )
    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let got = out.outputs[0].1.f32().expect("f32 output").clone();
    assert_eq!(got.shape, want.shape, "{}: output shape", file.display());
    let lo = want.data.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = want.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = (hi - lo).max(1e-6);
    got.data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs() / range)
        .fold(0.0, f32::max)
}

/// Fixtures qatc refuses on purpose, and what the error must name.
const REFUSED: &[(&str, &str)] = &[("lambda_layer", "(Lambda)")];

#[test]
fn every_fixture_matches_keras() {
    let manifest: Json =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap())
            .unwrap();
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for (name, entry) in manifest.as_object().unwrap() {
        if name.starts_with('_') {
            continue;
        }
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| n == name) {
            for fmt in entry["formats"].as_array().unwrap() {
                let file = dir().join(format!("{name}.{}", fmt.as_str().unwrap()));
                let err = qatc::import::keras::load(&file)
                    .err()
                    .map(|e| e.to_string());
                assert!(
                    err.as_deref().is_some_and(|e| e.contains(why)),
                    "{}: expected a refusal naming {why}, got {err:?}",
                    file.display()
                );
            }
            continue;
        }
        let input = load_npy(&dir().join(format!("{name}.input.npy")));
        for fmt in entry["formats"].as_array().unwrap() {
            let fmt = fmt.as_str().unwrap();
            let file = dir().join(format!("{name}.{fmt}"));
            let out = entry["outputs"][fmt].as_str().unwrap();
            let want = load_npy(&dir().join(out));
            let result = std::panic::catch_unwind(|| relative_error(&file, &input, &want));
            match result {
                Ok(err) if err <= 1e-5 => checked.push(format!("{name}.{fmt}")),
                Ok(err) => failures.push(format!("{name}.{fmt}: relative error {err:e}")),
                Err(e) => failures.push(format!(
                    "{name}.{fmt}: {}",
                    e.downcast_ref::<String>().cloned().unwrap_or_default()
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} ok; failures:\n{}",
        checked.len(),
        failures.join("\n")
    );
    assert!(checked.len() >= 46, "only {} files checked", checked.len());
}

#[test]
fn a_lambda_layer_is_refused_by_name() {
    for ext in ["keras", "h5"] {
        let err = qatc::import::keras::load(&dir().join(format!("lambda_layer.{ext}")))
            .expect_err("a Lambda layer must be refused")
            .to_string();
        assert!(
            err.contains("Lambda") && err.contains("Python"),
            "{ext}: {err}"
        );
    }
}

#[test]
fn garbage_and_truncated_files_are_errors() {
    let good = std::fs::read(dir().join("sequential.keras")).unwrap();
    for cut in [0, 3, 100, good.len() / 2, good.len() - 1] {
        let r = std::panic::catch_unwind(|| qatc::import::keras::load_bytes(&good[..cut]));
        assert!(matches!(r, Ok(Err(_))), "cut at {cut}: not a clean error");
    }
    let good = std::fs::read(dir().join("sequential.h5")).unwrap();
    for cut in [8, 512, good.len() / 2] {
        let r = std::panic::catch_unwind(|| qatc::import::keras::load_bytes(&good[..cut]));
        assert!(
            matches!(r, Ok(Err(_))),
            "h5 cut at {cut}: not a clean error"
        );
    }
    // the last bytes of an HDF5 file may be padding: losing them is not an error, but never
    // a panic
    let r = std::panic::catch_unwind(|| qatc::import::keras::load_bytes(&good[..good.len() - 1]));
    assert!(r.is_ok());
}

/// Preprocessing constants (Rescaling, Normalization, tensor arithmetic by constants) are
/// frozen params; trainable weights are not. The `frozen` mark survives `.qir` text.
#[test]
fn preprocessing_constants_are_frozen() {
    let m = qatc::import::keras::load(&dir().join("preprocessing.keras")).unwrap();
    let frozen: Vec<&str> = m.graph.frozen().collect();
    assert!(!frozen.is_empty());
    for (name, _) in m.graph.params() {
        let weight = name.ends_with(".kernel") || name.ends_with(".bias");
        assert_eq!(m.graph.is_frozen(&name), !weight, "{name}");
    }
    let text = qatc::ir::text::print(&m.graph);
    assert!(text.contains(" frozen\n"), "{text}");
    let back = qatc::ir::text::parse(&text, "preprocessing.qir").unwrap();
    assert_eq!(back.frozen().collect::<Vec<_>>(), frozen);
    assert_eq!(qatc::ir::text::print(&back), text);
}

/// A frozen backbone (`base.trainable = False`, the usual transfer-learning shape) keeps its
/// weights frozen in qatc; the new head trains.
#[test]
fn a_frozen_base_stays_frozen() {
    for ext in ["keras", "h5"] {
        let m = qatc::import::keras::load(&dir().join(format!("frozen_base.{ext}"))).unwrap();
        for (name, _) in m.graph.params() {
            let head = name.starts_with("head.");
            assert_eq!(m.graph.is_frozen(&name), !head, "{ext}: {name}");
        }
        // Keras runs the frozen base's BatchNormalization in inference mode while the head
        // trains: the train step normalizes with the moving statistics and updates none
        let step =
            qatc::autodiff::train_step(&m.graph, &qatc::autodiff::TrainSpec::new(2)).unwrap();
        let g = &step.graph;
        let bns = g
            .node_ids()
            .filter(|&n| g.node(n).op.kind() == qatc::ir::op::OpKind::BatchNorm)
            .count();
        assert!(
            bns > 0,
            "{ext}: the base's BatchNormalization is in inference form"
        );
        assert!(
            g.updates().iter().all(|u| u.param.starts_with("head.")),
            "{ext}: only the head is updated"
        );
    }
}
