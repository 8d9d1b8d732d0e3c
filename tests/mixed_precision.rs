//! Mixed precision (`--mixed-precision`, `qatc::analyze::mixed`): the measurements are the
//! same on the JIT and the reference interpreter, the chosen overrides quantize exactly
//! the layers chosen (a snapshot of the graph), and the job's `run.toml` reproduces the run
//! byte for byte.

use qatc::analyze::mixed::{self, Budget};
use qatc::ir::op::{ModelOp, Op};
use qatc::pass::{run_pipeline, PipelineOptions};
use qatc::quant::scheme::LayerOverride;
use std::path::Path;

fn data(n: usize) -> qatc::data::Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    qatc::data::load(&dir, qatc::data::Split::Train, qatc::data::Pixels::Unit)
        .unwrap()
        .take(n)
}

#[test]
fn jit_and_interpreter_measure_the_same() {
    let mut model = qatc::models::mnist_cnn(2).unwrap();
    let qat = run_pipeline(
        model.graph,
        &mut model.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let set = data(96);
    let jit = qatc::jit::Jit::default();
    let calibrated = qatc::train::calibrate(
        &qat,
        &model.params,
        &set,
        64,
        32,
        qatc::train::RangeMethod::MinMax,
        &jit,
    )
    .unwrap();
    let on_jit = mixed::measure(&qat, &calibrated, &set, &[4, 2], 32, &jit).unwrap();
    let on_interp = mixed::measure(
        &qat,
        &calibrated,
        &set,
        &[4, 2],
        32,
        &qatc::train::ReferenceBackend,
    )
    .unwrap();
    assert_eq!(on_jit, on_interp);
    let names: Vec<&str> = on_jit.layers.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(names, ["conv2d", "dense"]);
    assert!(on_jit
        .layers
        .iter()
        .all(|l| l.bits == 8 && l.drops.len() == 2));
    // every budget yields overrides the scheme parses
    for budget in [Budget::SizeKib(6.0), Budget::AccuracyDrop(1.0)] {
        for o in mixed::choose(&on_jit, budget).unwrap().overrides {
            LayerOverride::parse(&o).unwrap();
        }
    }
}

/// The QAT graph of a choice: the lowered layers' weight quantizers at their widths, the
/// rest as the scheme has them.
#[test]
fn a_choice_quantizes_the_chosen_layers() {
    let m = mixed::Measurements {
        accuracy: 0.9,
        samples: 100,
        layers: vec![
            mixed::LayerOptions {
                layer: "conv2d".into(),
                weights: 108,
                bits: 8,
                drops: vec![(4, 1.0), (2, 5.0)],
            },
            mixed::LayerOptions {
                layer: "dense".into(),
                weights: 20280,
                bits: 8,
                drops: vec![(4, 0.0), (2, 0.3)],
            },
        ],
    };
    let choice = mixed::choose(&m, Budget::SizeKib(6.0)).unwrap();
    assert_eq!(choice.overrides, ["dense=weight_bits:2"]);
    let mut model = qatc::models::mnist_cnn(0).unwrap();
    let mut opts = PipelineOptions::train();
    for o in &choice.overrides {
        opts.overrides.push(LayerOverride::parse(o).unwrap());
    }
    let qat = run_pipeline(model.graph, &mut model.params, "default_8bit", &opts).unwrap();
    let bits: Vec<(String, u8)> = qat
        .node_ids()
        .filter_map(|id| match &qat.node(id).op {
            Op::Model(ModelOp::FakeQuant(q)) if q.axis.is_some() => {
                Some((qat.node(id).name.clone(), q.bits))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        bits,
        [
            ("conv2d.kernel/fq".to_string(), 8),
            ("dense.kernel/fq".to_string(), 2)
        ]
    );
    insta::assert_snapshot!(qatc::ir::text::print(&qat));
}

/// `qatc train --mixed-precision` writes its choice into the report and `run.toml`;
/// `qatc train --config run.toml` (no budget, the overrides) makes the same files.
#[test]
fn run_toml_reproduces_a_mixed_precision_run() {
    let root = std::env::temp_dir().join(format!("qatc-mixed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let train = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_qatc"))
            .arg("train")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = root.join("first");
    let summary = train(&[
        "--model",
        "mnist_cnn",
        "--epochs",
        "1",
        "--qat-epochs",
        "1",
        "--train-samples",
        "512",
        "--test-samples",
        "200",
        "--mixed-precision",
        "size=8",
        "--quiet",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(summary.contains("mixed precision (size=8)"), "{summary}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("report.json")).unwrap()).unwrap();
    let choice = &report["mixed_precision"];
    assert!(choice["weight_kib"].as_f64().unwrap() <= 8.0, "{choice}");
    let overrides = choice["overrides"].as_array().unwrap();
    assert!(!overrides.is_empty());
    let run_toml = std::fs::read_to_string(first.join("run.toml")).unwrap();
    assert!(!run_toml.contains("mixed_precision"), "{run_toml}");
    for o in overrides {
        assert!(run_toml.contains(o.as_str().unwrap()), "{run_toml}");
    }
    let again = root.join("again");
    train(&[
        "--config",
        first.join("run.toml").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    for f in ["mnist_cnn_int8.tflite", "mnist_cnn_qat.safetensors"] {
        assert!(
            std::fs::read(first.join(f)).unwrap() == std::fs::read(again.join(f)).unwrap(),
            "{f} differs"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// `qatc ptq --mixed-precision` makes a mixed post-training-quantized file (its 2- and
/// 4-bit kernels packed, so smaller); `qatc analyze` refuses the flag and says why.
#[test]
fn ptq_takes_a_budget_and_analyze_refuses_one() {
    let out = std::env::temp_dir().join(format!("qatc-mixed-ptq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let qatc = |cmd: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_qatc"))
            .args([cmd, "--model", "mnist_cnn", "--epochs", "1"])
            .args(["--train-samples", "512", "--test-samples", "100"])
            .args(["--mixed-precision", "size=8", "--quiet", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let run = qatc("ptq");
    let summary = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(summary.contains("mixed precision (size=8)"), "{summary}");
    let file = std::fs::read(out.join("mnist_cnn_ptq_int8.tflite")).unwrap();
    let m = qatc::tflite::read(&file).unwrap();
    assert!(m
        .tensors
        .iter()
        .any(|t| t.dtype == qatc::tflite::model::ElemType::I4));
    let run = qatc("analyze");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("give --override"),
        "{err}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
