//! The TFLite subcommands end to end: `qatc export` an export-ready `.qir`, `inspect` it,
//! `run` a `.npy` batch (the result equals the library's interpreter), `eval` on MNIST, and
//! clear errors for wrong input.

mod support;

use qatc::data::mnist::{self, Split};
use qatc::int8::{npy, Array, Interpreter};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

fn qatc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args(args)
        .output()
        .expect("run qatc")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qatc-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn export_inspect_run_eval() {
    let dir = temp_dir("tflite");
    // an export-ready mnist_cnn calibrated on real digits
    let model = qatc::models::mnist_cnn(1).unwrap();
    let test = mnist::load(&mnist::default_dir(), Split::Test)
        .unwrap()
        .take(64);
    let calib = qatc::ir::Tensor::new(vec![64, 28, 28, 1], test.images.clone());
    let (g, p) = export_ready(&model.graph, &model.params, &calib, Qat::default());
    let qir = dir.join("mnist_cnn.qir");
    qatc::ir::text::save_model(&g, &p, &qir).unwrap();

    let out = qatc(&["export", s(&qir)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tfl = dir.join("mnist_cnn.tflite");
    assert!(tfl.exists());

    let out = qatc(&["inspect", s(&tfl)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for want in [
        "CONV_2D",
        "v3",
        "FULLY_CONNECTED",
        "v4",
        "per-axis dim 0",
        "min_runtime_version: 1.14.0",
        "serving_default",
        "[?,28,28,1]",
    ] {
        assert!(text.contains(want), "inspect output lacks {want}:\n{text}");
    }

    let x = Array::f32(vec![5, 28, 28, 1], test.images[..5 * 784].to_vec()).unwrap();
    let xin = dir.join("x.npy");
    let yout = dir.join("y.npy");
    npy::write(&xin, &x).unwrap();
    let out = qatc(&["run", s(&tfl), "--input", s(&xin), "--output", s(&yout)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = npy::read(&yout).unwrap();
    let want = Interpreter::new(&std::fs::read(&tfl).unwrap())
        .unwrap()
        .run(&[x])
        .unwrap();
    assert_eq!(y, want[0]);

    // a NaN in the input is named (it used to pass through to an arbitrary int8 value)
    let mut bad = test.images[..5 * 784].to_vec();
    bad[789] = f32::NAN;
    npy::write(&xin, &Array::f32(vec![5, 28, 28, 1], bad).unwrap()).unwrap();
    let out = qatc(&["run", s(&tfl), "--input", s(&xin), "--output", s(&yout)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("x.npy") && err.contains("element 789") && err.contains("NaN"),
        "{err}"
    );

    let out = qatc(&["eval", s(&tfl), "--limit", "200"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("accuracy") && text.contains("/200"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_qat_graph_goes_through_the_export_pipeline() {
    use qatc::pass::{run_pipeline, PipelineOptions};
    let dir = temp_dir("qat");
    let mut model = qatc::models::mbv2_tiny(1).unwrap();
    let qat = run_pipeline(
        model.graph,
        &mut model.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let qir = dir.join("mbv2_qat.qir");
    qatc::ir::text::save_model(&qat, &model.params, &qir).unwrap();
    let out = qatc(&["export", s(&qir), "-o", s(&dir.join("m.tflite"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("running the `export` pipeline"), "{text}");
    let m = qatc::tflite::read(&std::fs::read(dir.join("m.tflite")).unwrap()).unwrap();
    assert!(m.operators.iter().any(|o| o.name() == "DEPTHWISE_CONV_2D"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_name_the_problem() {
    let dir = temp_dir("errors");
    // a float model is not export-ready
    let model = qatc::models::mnist_cnn(1).unwrap();
    let qir = dir.join("float.qir");
    qatc::ir::text::save_model(&model.graph, &model.params, &qir).unwrap();
    let out = qatc(&["export", s(&qir)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no fake_quant"),
        "{err}"
    );
    // garbage is not a TFLite model
    let bad = dir.join("bad.tflite");
    std::fs::write(&bad, b"definitely not a flatbuffer").unwrap();
    for cmd in ["inspect", "eval"] {
        let out = qatc(&[cmd, s(&bad)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("bad.tflite") && err.contains("TFLite"),
            "{cmd}: {err}"
        );
    }
    // every subcommand documents itself with an example
    for cmd in ["export", "inspect", "run", "eval"] {
        let out = qatc(&[cmd, "--help"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Example:"),
            "{cmd} --help"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
