//! `qatc train`, the main job, end to end on a slice of MNIST with the reference
//! interpreter (the full job is too long for a test): every stage runs, every file is
//! written, the report is complete, and the same seed gives the same model bytes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn qatc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qatc"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qatc-cli-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The names of a report's stages, in order.
fn stage_names(report: &serde_json::Value) -> Vec<&str> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

fn quick_job(out: &Path, seed: &str) -> std::process::Output {
    quick_job_on("mnist_cnn", "interpreter", out, seed)
}

fn quick_job_on(model: &str, backend: &str, out: &Path, seed: &str) -> std::process::Output {
    qatc()
        .args([
            "train",
            "--model",
            model,
            "--epochs",
            "1",
            "--qat-epochs",
            "1",
        ])
        .args([
            "--train-samples",
            "192",
            "--test-samples",
            "64",
            "--batch",
            "32",
        ])
        .args(["--backend", backend, "--quiet", "--seed", seed, "--out"])
        .arg(out)
        .output()
        .expect("qatc runs")
}

#[test]
fn the_job_writes_every_artifact_and_a_complete_report() {
    let out = scratch("full");
    let run = quick_job(&out, "7");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("int8 TFLite") && stdout.contains("agrees with QAT"),
        "{stdout}"
    );

    for f in [
        "report.json",
        "training_curve.svg",
        "history.csv",
        "mnist_cnn_float.qir",
        "mnist_cnn_float.safetensors",
        "mnist_cnn_qat.qir",
        "mnist_cnn_qat.safetensors",
        "mnist_cnn_qat.dot",
        "mnist_cnn_int8.tflite",
        "mnist_cnn_ptq_int8.tflite",
        "ir/00_input.qir",
        "ir/03_quantize.qir",
        "ir/07_fold_bn.qir",
        "ir/08_fuse_activation.qir",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(stdout.contains("PTQ int8 (192 samples)"), "{stdout}");
    for key in ["float", "ptq", "qat", "int8"] {
        let acc = report[key]["test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{key}: {acc}");
        assert!(report[key]["bytes"].as_u64().unwrap() > 0, "{key} size");
    }
    // int8 weights are 4x smaller than f32 ones, plus the file's bookkeeping
    assert!(
        report["int8"]["bytes"].as_u64().unwrap() < report["float"]["bytes"].as_u64().unwrap() / 3
    );
    // the int8 model is bit-exact with the fake-quant model up to accumulation order
    assert!(
        report["int8_qat_agreement"].as_f64().unwrap() >= 0.95,
        "{report}"
    );
    let stages = stage_names(&report);
    assert_eq!(
        stages,
        [
            "load data",
            "float training",
            "quantize",
            "post-training quantization",
            "QAT fine-tuning",
            "int8 export",
            "int8 evaluation"
        ]
    );
    // the saved QAT model reloads and verifies
    let dump = qatc()
        .arg("dump")
        .arg(out.join("mnist_cnn_qat.qir"))
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    // the PTQ baseline's file is an int8 model the int8 interpreter runs
    let ptq = std::fs::read(out.join("mnist_cnn_ptq_int8.tflite")).unwrap();
    qatc::int8::Interpreter::new(&ptq).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

/// `qatc ptq`: the job without QAT, on a float model `qatc train` saved; its int8 file is
/// the one `qatc eval` measures, each range method writes its own ranges, and bad settings
/// are refused by flag.
#[test]
fn ptq_quantizes_a_saved_float_model_without_training() {
    let trained = scratch("ptq-float");
    assert!(quick_job_on("mnist_cnn", "jit", &trained, "5")
        .status
        .success());
    let float = trained.join("mnist_cnn_float.qir");
    let ptq = |out: &Path, range: &str| {
        qatc()
            .args(["ptq", "--model"])
            .arg(&float)
            .args(["--calibration-samples", "128", "--train-samples", "192"])
            .args(["--test-samples", "64", "--range", range, "--quiet", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let mut ranges = Vec::new();
    for range in ["minmax", "percentile:99.9", "mse"] {
        let out = scratch(&format!("ptq-{range}"));
        let run = ptq(&out, range);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            stdout.contains("PTQ int8") && !stdout.contains("QAT"),
            "{stdout}"
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        assert!(
            report["qat"].is_null() && report["int8"].is_null(),
            "{report}"
        );
        assert_eq!(report["ptq_range"], range);
        assert_eq!(report["qat_epochs"], 0);
        let stages = stage_names(&report);
        assert_eq!(
            stages,
            [
                "load data",
                "float training",
                "quantize",
                "post-training quantization"
            ]
        );
        assert!(!out.join("mnist_cnn_int8.tflite").exists());
        let file = out.join("mnist_cnn_ptq_int8.tflite");
        // the report's accuracy is the int8 interpreter's on the same test samples
        let eval = qatc()
            .arg("eval")
            .arg(&file)
            .args(["--limit", "64"])
            .output()
            .unwrap();
        let eval_out = String::from_utf8_lossy(&eval.stdout);
        let acc = report["ptq"]["test_accuracy"].as_f64().unwrap();
        assert!(
            eval_out.contains(&format!("{:.2}%", 100.0 * acc)),
            "{eval_out} vs {acc}"
        );
        let it = qatc::int8::Interpreter::new(&std::fs::read(&file).unwrap()).unwrap();
        let scales: Vec<f32> = it
            .model()
            .tensors
            .iter()
            .filter_map(|t| t.quant.as_ref().map(|q| q.scale[0]))
            .collect();
        ranges.push(scales);
        std::fs::remove_dir_all(&out).unwrap();
    }
    // MSE clips the ReLU outputs' long tails: some activation scale shrinks
    assert_ne!(ranges[0], ranges[2]);

    for (flags, culprit) in [
        (&["--calibration-samples", "0"][..], "--calibration-samples"),
        (&["--range", "kl"][..], "calibration range `kl`"),
    ] {
        let run = qatc()
            .args(["ptq", "--model"])
            .arg(&float)
            .args(flags)
            .args(["--out"])
            .arg(scratch("ptq-bad"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && err.contains(culprit), "{err}");
    }
    std::fs::remove_dir_all(&trained).unwrap();
}

/// `qatc train --analyze` adds the sensitivity table to the report; `qatc analyze` measures
/// a saved QAT model with its own ranges, and a float one after calibrating it.
#[test]
fn analyze_measures_every_layer_of_a_trained_model() {
    let out = scratch("analyze-train");
    let run = qatc()
        .args([
            "train",
            "--model",
            "mbv2_tiny",
            "--epochs",
            "1",
            "--qat-epochs",
            "1",
        ])
        .args([
            "--train-samples",
            "192",
            "--test-samples",
            "64",
            "--batch",
            "32",
        ])
        .args(["--ptq-samples", "64", "--analyze", "--quiet", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("depthwise_conv2d_2"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let layers = report["sensitivity"]["layers"].as_array().unwrap();
    // 12 weighted ops, the input, two adds and the pooling
    assert_eq!(layers.len(), 16, "{layers:?}");
    let csv = std::fs::read_to_string(out.join("sensitivity.csv")).unwrap();
    assert_eq!(csv.lines().count(), 17);
    assert!(std::fs::read_to_string(out.join("sensitivity.svg"))
        .unwrap()
        .starts_with("<svg"));

    for (model, extra) in [
        ("mbv2_tiny_qat.qir", &[][..]),
        ("mbv2_tiny_float.qir", &["--scheme", "nbit:4,8"][..]),
    ] {
        let dir = scratch(&format!("analyze-{model}"));
        let run = qatc()
            .args(["analyze", "--model"])
            .arg(out.join(model))
            .args([
                "--train-samples",
                "64",
                "--test-samples",
                "64",
                "--batch",
                "32",
            ])
            .args(extra)
            .args(["--quiet", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let bits = if extra.is_empty() { " 8/8 " } else { " 4/8 " };
        assert!(stdout.contains(bits), "{model}: {stdout}");
        let a: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("sensitivity.json")).unwrap()).unwrap();
        let drops: Vec<f64> = a["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["accuracy_drop"].as_f64().unwrap())
            .collect();
        assert_eq!(drops.len(), 16);
        assert!(drops.windows(2).all(|w| w[0] >= w[1]), "{drops:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn the_same_seed_gives_the_same_model_bytes() {
    let (a, b) = (scratch("seed-a"), scratch("seed-b"));
    assert!(quick_job(&a, "3").status.success());
    assert!(quick_job(&b, "3").status.success());
    let bytes = |d: &Path| std::fs::read(d.join("mnist_cnn_int8.tflite")).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "same seed, different .tflite");
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

/// The JIT splits work over threads; the split is static, so the bytes are still the same.
#[test]
fn the_same_seed_gives_the_same_model_bytes_on_the_jit() {
    let (a, b) = (scratch("jit-seed-a"), scratch("jit-seed-b"));
    for d in [&a, &b] {
        let out = quick_job_on("mbv2_tiny", "jit", d, "5");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bytes = |d: &Path| std::fs::read(d.join("mbv2_tiny_int8.tflite")).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "same seed, different .tflite");
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn a_bad_config_is_named_and_nothing_is_trained() {
    let dir = scratch("config");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("job.toml");
    std::fs::write(&cfg, "model = \"mnist_cnn\"\nepochz = 3\n").unwrap();
    let run = qatc()
        .arg("train")
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("job.toml") && err.contains("epochz"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !dir.join("out").exists(),
        "a failed job must not leave an output directory"
    );

    let run = qatc()
        .args([
            "train",
            "--model",
            "no_such_model",
            "--backend",
            "interpreter",
            "--out",
        ])
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("no_such_model"),
        "{err}"
    );

    // a failure after the checks (here: no data) leaves no empty output directory
    let run = qatc()
        .args(["train", "--quiet", "--data"])
        .arg(dir.join("no-mnist-here"))
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("no-mnist-here"),
        "{err}"
    );
    assert!(
        !dir.join("out").exists(),
        "a failed job left {}",
        dir.join("out").display()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--model` takes a `.qir` without weights (Keras' initial values from the seed: the same
/// model as the builder's) and a float `.tflite` as the TFLite converter writes it; an int8
/// `.tflite` is refused by name.
#[test]
fn models_come_from_qir_and_float_tflite_files() {
    let dir = scratch("model-files");
    std::fs::create_dir_all(&dir).unwrap();
    let qir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_cnn.qir");
    let from_qir = dir.join("from-qir");
    let built = dir.join("built");
    for (model, out) in [(qir.to_str().unwrap(), &from_qir), ("mnist_cnn", &built)] {
        let run = quick_job_on(model, "jit", out, "2");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let bytes = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(
        bytes(&from_qir, "mnist_cnn_int8.tflite"),
        bytes(&built, "mnist_cnn_int8.tflite"),
        "examples/mnist_cnn.qir with seed 2 must train exactly like the builder's mnist_cnn"
    );

    let float = dir.join("keras_mnist.tflite");
    std::fs::write(&float, support::float::keras_mnist()).unwrap();
    let out = dir.join("from-tflite");
    let run = quick_job_on(float.to_str().unwrap(), "jit", &out, "0");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("keras_mnist_int8.tflite").exists());

    let int8 = out.join("keras_mnist_int8.tflite");
    let run = quick_job_on(int8.to_str().unwrap(), "jit", &dir.join("again"), "0");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "an int8 model must be refused");
    assert!(
        err.contains("keras_mnist_int8.tflite") && err.contains("int8 model"),
        "{err}"
    );
    assert!(!dir.join("again").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A saved QAT model (`<stem>_qat.qir` + `.safetensors`) loads and trains on: `--epochs 0`
/// skips float training, the quantization passes leave its fake-quants as they are, and the
/// report says the first row is the given weights (TFMOT #426, #773: reloading QAT models).
#[test]
fn a_saved_qat_model_reloads_and_fine_tunes() {
    let first = scratch("reload-first");
    let run = quick_job_on("mnist_cnn", "jit", &first, "4");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let saved = first.join("mnist_cnn_qat.qir");
    let again = scratch("reload-again");
    let run = qatc()
        .args([
            "train",
            "--epochs",
            "0",
            "--qat-epochs",
            "1",
            "--batch",
            "32",
        ])
        .args([
            "--train-samples",
            "192",
            "--test-samples",
            "64",
            "--quiet",
            "--model",
        ])
        .arg(&saved)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("given weights (not trained)"), "{stdout}");
    assert!(!stdout.contains("-0 samples/s"), "{stdout}");
    let fake_quants = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .matches("fake_quant")
            .count()
    };
    assert_eq!(
        fake_quants(&saved),
        fake_quants(&again.join("mnist_cnn_qat.qir")),
        "reloading must not quantize a QAT graph twice"
    );
    std::fs::remove_dir_all(&first).unwrap();
    std::fs::remove_dir_all(&again).unwrap();
}

/// A BatchNorm that cannot fold exactly into a per-tensor kernel (TFMOT #1131) is reported
/// before any training, with both ways out; `--allow-inexact-fold` takes one of them.
#[test]
fn an_inexact_fold_is_refused_before_training_unless_allowed() {
    let out = scratch("per-tensor");
    let job = |extra: &[&str]| {
        qatc()
            .args(["train", "--model", "mbv2_tiny", "--scheme", "per_tensor"])
            .args(["--epochs", "1", "--qat-epochs", "1", "--batch", "32"])
            .args(["--train-samples", "96", "--test-samples", "32", "--quiet"])
            .args(extra)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let run = job(&[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "per-tensor kernels with BatchNorm must not fold silently"
    );
    assert!(
        err.contains("batch_normalization")
            && err.contains("=per_axis")
            && err.contains("--allow-inexact-fold"),
        "{err}"
    );
    assert!(!out.exists(), "the check runs before anything is written");

    let run = job(&["--allow-inexact-fold"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.join("mbv2_tiny_int8.tflite").exists());
    std::fs::remove_dir_all(&out).unwrap();
}

/// `qatc train --model model.keras|h5 --epochs 0 --qat-epochs 1` on a Keras model trained in
/// TF with `Rescaling(1/255)` inside: with `--input-scale raw` the float accuracy is Keras'
/// own (0.9617 on the 10 000 test images).
#[test]
fn a_keras_model_trains_from_the_command_line_with_keras_accuracy() {
    for ext in ["keras", "h5"] {
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/keras/mnist_cnn.{ext}"));
        let out = scratch(&format!("keras-{ext}"));
        let run = qatc()
            .args(["train", "--model"])
            .arg(&model)
            .args([
                "--epochs",
                "0",
                "--qat-epochs",
                "1",
                "--train-samples",
                "1024",
            ])
            .args(["--input-scale", "raw", "--quiet", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        let float = report["float"]["test_accuracy"].as_f64().unwrap();
        assert!(
            (float - 0.9617).abs() <= 0.0005,
            "{ext}: float accuracy {float}"
        );
        assert!(report["int8"]["test_accuracy"].as_f64().unwrap() > 0.94);
        std::fs::remove_dir_all(&out).unwrap();
    }
    // a bad scale is a usage error, before anything is trained
    let run = qatc()
        .args([
            "train",
            "--model",
            "mnist_cnn",
            "--input-scale",
            "1/0",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("input_scale"));
}

/// Values that used to be accepted silently are refused with the flag named: an endless
/// `--epochs`, `--lr inf`, `eval --limit 0` / `--batch 0`, `bench --steps 0`, an unknown
/// `dump --mode`.
#[test]
fn out_of_range_flags_are_named() {
    for (args, want) in [
        (vec!["train", "--epochs", "18446744073709551615"], "epochs"),
        (vec!["train", "--lr", "inf"], "lr is inf"),
        (vec!["train", "--qat-lr", "NaN"], "qat_lr"),
        (vec!["eval", "x.tflite", "--limit", "0"], "--limit"),
        (vec!["eval", "x.tflite", "--batch", "0"], "--batch"),
        (vec!["bench", "--steps", "0"], "--steps"),
        (vec!["dump", "mnist_cnn", "--mode", "bogus"], "--mode"),
    ] {
        let run = qatc().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} must fail");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("{ "),
            "{args:?}: {err}"
        );
    }
}

/// A run in a reused `--out` that fails leaves the earlier run's files as they were: its
/// outputs are staged in `<out>/.run` and only a finished run replaces the earlier set.
#[test]
fn a_failed_run_leaves_the_earlier_run_as_it_was() {
    let out = scratch("failed-run");
    std::fs::create_dir_all(&out).unwrap();
    let report = "{\"files\": [\"m_int8.tflite\"]}";
    std::fs::write(out.join("report.json"), report).unwrap();
    std::fs::write(out.join("m_int8.tflite"), "earlier").unwrap();
    let run = qatc()
        .args([
            "train",
            "--model",
            "mnist_cnn",
            "--data",
            "/nonexistent/mnist",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("report.json")).unwrap(),
        report
    );
    assert_eq!(
        std::fs::read(out.join("m_int8.tflite")).unwrap(),
        b"earlier"
    );
    assert!(
        !out.join(".run").exists(),
        "nothing to resume is left behind"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// Two runs on one `--out` at once: the second is refused while the first holds the lock; a
/// lock left by a killed run (its process is gone) is taken over.
#[test]
fn a_second_run_on_the_same_out_is_refused() {
    let out = scratch("lock");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(".qatc.lock"), std::process::id().to_string()).unwrap();
    let run = quick_job_on("mnist_cnn", "jit", &out, "0");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(err.contains("another qatc run"), "{err}");
    assert!(!out.join("mnist_cnn_int8.tflite").exists());
    // a stale lock (no such process) does not block
    std::fs::write(out.join(".qatc.lock"), "4000000000").unwrap();
    let run = quick_job_on("mnist_cnn", "jit", &out, "0");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!out.join(".qatc.lock").exists(), "the lock is released");
    std::fs::remove_dir_all(&out).unwrap();
}

/// A model name from a file cannot make qatc write outside `--out`.
#[test]
fn a_model_name_cannot_escape_the_output_directory() {
    let dir = scratch("escape");
    std::fs::create_dir_all(&dir).unwrap();
    let qir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_cnn.qir");
    let text = std::fs::read_to_string(qir)
        .unwrap()
        .replace("model \"mnist_cnn\"", "model \"../escaped\"");
    let model = dir.join("evil.qir");
    std::fs::write(&model, text).unwrap();
    let out = dir.join("out");
    let run = quick_job_on(model.to_str().unwrap(), "jit", &out, "0");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let outside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("escaped"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    assert!(out.join("_escaped_int8.tflite").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--augment crop:4,flip` is seeded: the same seed gives the same model bytes, and the
/// augmented run differs from the plain one; the report says how long data loading took.
#[test]
fn augmentation_is_seeded() {
    let run = |name: &str, augment: Option<&str>| -> Vec<u8> {
        let out = scratch(name);
        let mut c = qatc();
        c.args([
            "train",
            "--model",
            "mnist_cnn",
            "--epochs",
            "1",
            "--qat-epochs",
            "1",
        ])
        .args([
            "--train-samples",
            "256",
            "--test-samples",
            "64",
            "--batch",
            "32",
            "--quiet",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&out);
        if let Some(a) = augment {
            c.args(["--augment", a]);
        }
        let r = c.output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert!(report["data_load_seconds"].as_f64().unwrap() >= 0.0);
        let bytes = std::fs::read(out.join("mnist_cnn_int8.tflite")).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        bytes
    };
    let a = run("aug-a", Some("crop:4,flip"));
    let b = run("aug-b", Some("crop:4,flip"));
    let plain = run("aug-plain", None);
    assert_eq!(a, b);
    assert_ne!(a, plain);
    let r = qatc()
        .args(["train", "--augment", "rotate:5", "--quiet"])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("rotate"));
}

/// NaN in a quantizer's observed range (a diverged run, a damaged file) used to train and
/// export without a word; loading the weights now names the tensor and the element.
#[test]
fn nan_in_observer_state_is_refused_naming_the_tensor() {
    use qatc::pass::{run_pipeline, PipelineOptions};
    let dir = scratch("nan-state");
    std::fs::create_dir_all(&dir).unwrap();
    let mut model = qatc::models::mnist_cnn(1).unwrap();
    let qat = run_pipeline(
        model.graph,
        &mut model.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let state = "conv2d.relu/act.max";
    model.params.get_mut(state).expect("an observer state").data[0] = f32::NAN;
    let qir = dir.join("qat.qir");
    qatc::ir::text::save_model(&qat, &model.params, &qir).unwrap();
    let out = dir.join("out");
    let (qir, out) = (qir.to_str().unwrap(), out.to_str().unwrap());
    for args in [
        vec!["export", qir, "-o", "/dev/null"],
        vec![
            "train", "--model", qir, "--epochs", "0", "--quiet", "--out", out,
        ],
        vec!["ptq", "--model", qir, "--quiet", "--out", out],
    ] {
        let run = qatc().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("tensor `{state}` holds NaN at element 0")),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--bn-samples N` re-estimates the BatchNorm statistics after float training: a stage of
/// its own in the report, the float model saved with the new statistics (its moving
/// statistics differ from a run without it; every weight is the same).
#[test]
fn batch_norm_statistics_are_reestimated_on_request() {
    let run = |out: &Path, extra: &[&str]| {
        let r = qatc()
            .args([
                "train",
                "--model",
                "mbv2_tiny",
                "--epochs",
                "1",
                "--qat-epochs",
                "1",
            ])
            .args([
                "--train-samples",
                "128",
                "--test-samples",
                "64",
                "--batch",
                "32",
            ])
            .args(["--quiet", "--seed", "3", "--out"])
            .arg(out)
            .args(extra)
            .output()
            .expect("qatc runs");
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        qatc::ir::ParamStore::load(out.join("mbv2_tiny_float.safetensors")).unwrap()
    };
    let (plain, bn) = (scratch("bn-plain"), scratch("bn-reestimated"));
    let before = run(&plain, &[]);
    let after = run(&bn, &["--bn-samples", "96"]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bn.join("report.json")).unwrap()).unwrap();
    assert!(
        stage_names(&report).contains(&"BatchNorm re-estimation"),
        "{report}"
    );
    let mut moved = 0;
    for name in before.names() {
        let (a, b) = (
            &before.get(name).unwrap().data,
            &after.get(name).unwrap().data,
        );
        if name.ends_with(".moving_mean") || name.ends_with(".moving_variance") {
            moved += usize::from(a != b);
        } else {
            assert_eq!(a, b, "{name} changed");
        }
    }
    assert!(moved > 0, "no moving statistic was re-estimated");
    for d in [plain, bn] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// `qatc ptq --bn-samples N` re-estimates the statistics of a given float model before
/// calibrating it (a saved model whose moving statistics lag its weights).
#[test]
fn ptq_reestimates_batch_norm_statistics_on_request() {
    let out = scratch("ptq-bn");
    let r = qatc()
        .args(["ptq", "--model", "mbv2_tiny", "--bn-samples", "64"])
        .args([
            "--train-samples",
            "128",
            "--test-samples",
            "64",
            "--batch",
            "32",
        ])
        .args(["--calibration-samples", "64", "--quiet", "--out"])
        .arg(&out)
        .output()
        .expect("qatc runs");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(
        stage_names(&report).contains(&"BatchNorm re-estimation"),
        "{report}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
