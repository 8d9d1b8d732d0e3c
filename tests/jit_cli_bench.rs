//! `qatc bench` from the command line: the model mode (QAT and float), the graph mode on a
//! saved train step, the profile and listing, and errors that name the culprit. Throughput
//! values are not checked (speed is measured, not asserted).

use std::process::Command;

fn qatc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qatc"))
        .arg("bench")
        .args(args)
        .output()
        .expect("qatc runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn benchmarks_a_reference_model() {
    let (ok, out, err) = qatc(&[
        "--model",
        "mnist_cnn",
        "--batch",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("mnist_cnn QAT") && out.contains("samples/s") && out.contains("compile"),
        "{out}"
    );
    let (ok, out, err) = qatc(&[
        "--model",
        "mbv2_tiny",
        "--batch",
        "2",
        "--float",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--profile",
        "--top",
        "3",
        "--listing",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("mbv2_tiny float") && out.contains("x loop") && out.contains("arena"),
        "{out}"
    );
}

/// An MLPerf Tiny model built for another input: the line reports GFLOP/s and peak RSS, the
/// profile achieved GFLOP/s of the GEMMs.
#[test]
fn benchmarks_a_reference_model_at_another_input_shape() {
    let (ok, out, err) = qatc(&[
        "--model",
        "resnet8",
        "--input-shape",
        "16,16,1",
        "--classes",
        "4",
        "--batch",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--profile",
        "--top",
        "2",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("resnet8 QAT") && out.contains("GFLOP/s") && out.contains("peak RSS"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("x gemm") && l.contains("GFLOP/s")),
        "{out}"
    );
    // each listed instruction: its fastest run, and its mean beside it
    assert!(out.lines().any(|l| l.contains("(mean ")), "{out}");
    let (ok, _, err) = qatc(&["--model", "resnet8", "--input-shape", "16,16"]);
    assert!(!ok && err.contains("H,W,C"), "{err}");
}

#[test]
fn benchmarks_a_saved_train_step() {
    let dir = std::env::temp_dir().join(format!("qatc_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (g, p) = qatc::cli::bench::train_step_of("mnist_cnn", 4, false).unwrap();
    let path = dir.join("step.qir");
    qatc::ir::text::save_model(&g, &p, &path).unwrap();
    let (ok, out, err) = qatc(&[
        "--graph",
        path.to_str().unwrap(),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--no-fma",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("step ") && out.contains("batch    4") && out.contains("fma false"),
        "{out}"
    );
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let (ok, _, err) = qatc(&["--model", "resnet9000"]);
    assert!(
        !ok && err.contains("resnet9000") && !err.contains("panicked"),
        "{err}"
    );
    let (ok, _, err) = qatc(&["--graph", "/no/such/step.qir"]);
    assert!(
        !ok && err.contains("/no/such/step.qir") && !err.contains("panicked"),
        "{err}"
    );
    let (ok, _, err) = qatc(&["--batch", "17"]);
    assert!(
        !ok && err.contains("--model") && !err.contains("panicked"),
        "{err}"
    );
}
