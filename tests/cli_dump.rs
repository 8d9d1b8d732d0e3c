//! `qatc dump` as a user runs it: the real binary, its exit status, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn qatc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // a panic would print its backtrace: make sure there is none to print
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

/// A fresh scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("qatc-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// A failed run: status 1, one `error: ` line on stderr, nothing on stdout, no panic.
#[track_caller]
fn assert_user_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "stdout: {}", stdout(o));
    err
}

fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

#[test]
fn dump_prints_the_canonical_ir_and_exits_0() {
    let o = qatc(&["dump", "examples/mbv2_tiny.qir"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    // the example is canonical, so the dump is the file itself
    assert_eq!(stdout(&o), example("mbv2_tiny.qir"));
}

#[test]
fn dump_of_a_builder_name_prints_its_example() {
    let o = qatc(&["dump", "mnist_cnn"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), example("mnist_cnn.qir"));
}

#[test]
fn a_malformed_file_is_a_file_line_col_error() {
    let dir = scratch("malformed");
    let path = dir.join("bad.qir");
    std::fs::write(
        &path,
        "model \"bad\"\n%0 = input \"x\" : f32[1,4]\n%1 = relu8 \"r\" (%0)\noutput \"y\" = %1\n",
    )
    .unwrap();
    let o = qatc(&["dump", path.to_str().unwrap()]);
    let err = assert_user_error(&o);
    // the culprit at line 3, column 6, what was found and what could be meant
    assert!(
        err.starts_with(&format!("error: {}:3:6: ", path.display())),
        "{err}"
    );
    assert!(err.contains("`relu8`") && err.contains("`relu`"), "{err}");
}

#[test]
fn a_graph_that_does_not_verify_names_the_node() {
    let dir = scratch("verify");
    let path = dir.join("shapes.qir");
    let src = "model \"m\"\nparam @k : f32[8,3,3,3]\n%0 = input \"x\" : f32[1,28,28,1]\n\
               %1 = conv2d \"conv\" (%0, @k) : f32[1,26,26,8]\noutput \"y\" = %1\n";
    std::fs::write(&path, src).unwrap();
    let err = assert_user_error(&qatc(&["dump", path.to_str().unwrap()]));
    assert!(
        err.contains("node `conv` (conv2d)") && err.contains("[8,3,3,3]"),
        "{err}"
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let dir = scratch("missing");
    let path = dir.join("nowhere.qir");
    let err = assert_user_error(&qatc(&["dump", path.to_str().unwrap()]));
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn other_bad_inputs_are_user_errors() {
    // a file type qatc does not read, an unknown model name, bytes that are not text
    let err = assert_user_error(&qatc(&["dump", "model.onnx"]));
    assert!(err.contains("model.onnx") && err.contains(".qir"), "{err}");
    let err = assert_user_error(&qatc(&["dump", "resnet"]));
    assert!(err.contains("resnet") && err.contains("mnist_cnn"), "{err}");
    let dir = scratch("binary");
    let path = dir.join("bytes.qir");
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    let err = assert_user_error(&qatc(&["dump", path.to_str().unwrap()]));
    assert!(err.contains("bytes.qir") && err.contains("UTF-8"), "{err}");
}

#[test]
fn dot_writes_a_graphviz_file() {
    let dir = scratch("dot");
    let dot = dir.join("sub/dir/mnist.dot");
    let o = qatc(&[
        "dump",
        "examples/mnist_cnn.qir",
        "--dot",
        dot.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), example("mnist_cnn.qir"));
    let text = std::fs::read_to_string(&dot).unwrap();
    assert!(text.starts_with("digraph \"mnist_cnn\" {\n") && text.ends_with("}\n"));
    for needle in [
        "conv2d",
        "max_pool2d",
        "@dense.kernel",
        "f32[1,10]",
        "-> out0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    // no temporary file is left beside it
    let left: Vec<_> = std::fs::read_dir(dot.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn dot_writes_nothing_when_the_dump_fails() {
    let dir = scratch("dot-fail");
    let bad = dir.join("bad.qir");
    std::fs::write(&bad, "model \"m\"\n%0 = input \"x\" : f32[1]\n").unwrap();
    let dot = dir.join("bad.dot");
    let err = assert_user_error(&qatc(&[
        "dump",
        bad.to_str().unwrap(),
        "--dot",
        dot.to_str().unwrap(),
    ]));
    assert!(err.contains("no `output"), "{err}");
    assert!(!dot.exists());
    // a DOT path that cannot be written: an error naming it, and no model on stdout
    let blocker = dir.join("file");
    std::fs::write(&blocker, "").unwrap();
    let target = blocker.join("x.dot");
    let o = qatc(&[
        "dump",
        "examples/mnist_cnn.qir",
        "--dot",
        target.to_str().unwrap(),
    ]);
    let err = assert_user_error(&o);
    assert!(err.contains(blocker.to_str().unwrap()), "{err}");
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qatc"))
        .args(["dump", "examples/mbv2_tiny.qir"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn usage_errors_come_from_clap() {
    let o = qatc(&["dump"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("<MODEL>"), "{}", stderr(&o));
    let o = qatc(&["dump", "--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("--dot"));
}

/// A declared shape is only a claim: a param of 1e11 values (or params adding up to more than
/// a TFLite file can hold) is an error naming it, before anything is allocated (it used to
/// abort with `memory allocation of 432000000000 bytes failed`).
#[test]
fn huge_declared_params_are_refused_before_allocation() {
    let s = scratch("huge");
    for (dims, want) in [
        ("12,3000000000,3,1", "more than 2^32 elements"),
        ("12,30000000,3,1", "parameter `k`"),
    ] {
        let path = s.join("big.qir");
        std::fs::write(
            &path,
            format!(
                "model \"big\"\nparam @k : f32[{dims}]\n%0 = input \"x\" : f32[1,28,28,1]\n\
                 %1 = conv2d \"c\" (%0, @k) : f32[1,26,26,12]\noutput \"y\" = %1\n"
            ),
        )
        .unwrap();
        let o = qatc(&["dump", path.to_str().unwrap()]);
        let err = assert_user_error(&o);
        assert!(err.contains(want), "{err}");
    }
}

/// An attribute list nested 40 000 deep used to overflow the stack (exit 134); it is a short
/// error naming the place.
#[test]
fn deeply_nested_attributes_are_a_short_error() {
    let s = scratch("deep");
    let path = s.join("deep.qir");
    let depth = 40_000;
    std::fs::write(
        &path,
        format!(
            "model \"m\"\n%0 = input \"x\" : f32[1,4]\n%1 = relu \"r\" (%0) {{a={}{}}} : f32[1,4]\noutput \"y\" = %1\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    )
    .unwrap();
    let err = assert_user_error(&qatc(&["dump", path.to_str().unwrap()]));
    assert!(
        err.contains("deep.qir:3:") && err.contains("nested more than"),
        "{err}"
    );
    assert!(err.len() < 200, "{} bytes", err.len());
}
