//! `qatc dump --pipeline` as a user runs it: pass pipelines, per-pass printing and DOT files,
//! schemes and overrides, and the errors a user can make.

use std::path::PathBuf;
use std::process::{Command, Output};

fn qatc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("qatc runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A failed run: status 1, an `error: ` line, nothing on stdout, no panic.
#[track_caller]
fn user_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(o));
    err
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("qatc-pipeline-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

#[test]
fn default_8bit_prints_a_qat_graph_that_parses() {
    let o = qatc(&["dump", "mnist_cnn", "--pipeline", "default_8bit"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.matches("= fake_quant ").count(), 5, "{text}");
    assert!(!text.contains("# ----"));
    let g = qatc::ir::text::parse(&text, "stdout").unwrap();
    qatc::ir::verify::verify(&g).unwrap();
}

#[test]
fn print_after_all_shows_every_pass_in_order() {
    let o = qatc(&[
        "dump",
        "mbv2_tiny",
        "--pipeline",
        "default_8bit,export",
        "--print-after-all",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let headers: Vec<String> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("# ---- after"))
        .map(String::from)
        .collect();
    let want = [
        "canonicalize (1)",
        "annotate (2)",
        "quantize (3)",
        "fuse_fake_quant (4)",
        "canonicalize (5)",
        "fold_bn (6)",
        "fuse_activation (7)",
    ];
    assert_eq!(headers.len(), want.len(), "{headers:?}");
    for (h, w) in headers.iter().zip(want) {
        assert_eq!(*h, format!("# ---- after {w} ----"));
    }
    // the graph after annotate still has its markers
    let text = stdout(&o);
    let annotate = text.split("# ---- after").nth(2).unwrap();
    assert!(annotate.contains("= quant "), "{annotate}");
}

#[test]
fn print_after_one_pass_prints_only_it() {
    let o = qatc(&[
        "dump",
        "mnist_cnn",
        "--pipeline",
        "default_8bit",
        "--print-after",
        "annotate",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.matches("# ---- after").count(), 1, "{text}");
    assert!(
        text.starts_with("# ---- after annotate (2) ----\n"),
        "{text}"
    );
    assert!(text.contains("= quant "));
}

#[test]
fn dot_writes_one_file_per_pass() {
    let dir = scratch("dot");
    let d = dir.0.join("dots");
    let o = qatc(&[
        "dump",
        "mnist_cnn",
        "--pipeline",
        "default_8bit",
        "--dot",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut files: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "00-input.dot",
            "01-canonicalize.dot",
            "02-annotate.dot",
            "03-quantize.dot",
            "04-fuse_fake_quant.dot"
        ]
    );
    let dot = std::fs::read_to_string(d.join("03-quantize.dot")).unwrap();
    assert!(
        dot.starts_with("digraph") && dot.contains("fake_quant"),
        "{dot}"
    );
}

#[test]
fn a_saved_qat_model_exports_later() {
    let dir = scratch("save");
    let path = dir.0.join("qat.qir");
    let o = qatc(&[
        "dump",
        "mbv2_tiny",
        "--pipeline",
        "default_8bit",
        "--mode",
        "train",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.0.join("qat.safetensors").exists());
    let o = qatc(&[
        "dump",
        path.to_str().unwrap(),
        "--pipeline",
        "export",
        "--stats",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        !text.contains("= batch_norm ") && text.contains("activation=relu6"),
        "{text}"
    );
    // --stats reports every pass and why its saturation stopped
    let err = stderr(&o);
    assert!(
        err.contains("fold_bn:") && err.contains("saturated"),
        "{err}"
    );
}

#[test]
fn user_mistakes_are_errors_not_panics() {
    let e = user_error(&qatc(&["dump", "mnist_cnn", "--pipeline", "default_9bit"]));
    assert!(e.contains("unknown pipeline or pass `default_9bit`"), "{e}");
    let e = user_error(&qatc(&[
        "dump",
        "mnist_cnn",
        "--pipeline",
        "default_8bit",
        "--print-after",
        "fold_bn",
    ]));
    assert!(e.contains("--print-after fold_bn"), "{e}");
    let e = user_error(&qatc(&[
        "dump",
        "mnist_cnn",
        "--pipeline",
        "default_8bit",
        "--override",
        "dense",
    ]));
    assert!(e.contains("override `dense`"), "{e}");
    let e = user_error(&qatc(&[
        "dump",
        "mnist_cnn",
        "--pipeline",
        "default_8bit",
        "--override",
        "dens=skip",
    ]));
    assert!(e.contains("matches no node"), "{e}");
    let e = user_error(&qatc(&[
        "dump",
        "mnist_cnn",
        "--pipeline",
        "default_8bit",
        "--scheme",
        "nbit:1,8",
    ]));
    assert!(e.contains("2..=8"), "{e}");
    let e = user_error(&qatc(&[
        "dump",
        "mbv2_tiny",
        "--pipeline",
        "default_8bit,export",
        "--mode",
        "train",
    ]));
    assert!(e.contains("eval mode"), "{e}");
    let e = user_error(&qatc(&[
        "dump",
        "mbv2_tiny",
        "--pipeline",
        "default_8bit,export",
        "--scheme",
        "per_tensor",
    ]));
    assert!(
        e.contains("=per_axis") && e.contains("--allow-inexact-fold"),
        "{e}"
    );
}

#[test]
fn inexact_folds_warn_on_stderr() {
    let o = qatc(&[
        "dump",
        "mbv2_tiny",
        "--pipeline",
        "default_8bit,export",
        "--scheme",
        "per_tensor",
        "--allow-inexact-fold",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("warning: folding").count(), 11, "{err}");
}
