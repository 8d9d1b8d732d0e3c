//! Golden files: every `tests/golden/<dir>/<case>.qir` is parsed, run through the passes its
//! header names, verified, printed, and compared with `snapshots/<dir>/<case>.snap` (insta).
//! A case whose name starts with `no_` must fail; its snapshot is the diagnostic.
//!
//! Header lines (comments at the top of the case):
//! ```text
//! # what: one sentence saying what the case shows
//! # passes: none            (or a comma-separated list, or a pipeline name)
//! # mode: eval              (or train; default eval)
//! # verify: markers         (optional: `quant` markers are allowed, as between annotate
//!                            and quantize)
//! ```
//! Add a case, run `cargo insta test --review` (or `INSTA_UPDATE=always cargo test --test
//! golden`), read the new snapshot, commit both.

use std::path::{Path, PathBuf};

struct Header {
    passes: Vec<String>,
    mode: String,
    what: Option<String>,
    allow_markers: bool,
}

fn header(src: &str) -> Header {
    let mut h = Header {
        passes: Vec::new(),
        mode: "eval".into(),
        what: None,
        allow_markers: false,
    };
    for line in src
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
    {
        let line = line.trim_start_matches('#').trim();
        if let Some(v) = line.strip_prefix("passes:") {
            h.passes = v
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty() && p != "none")
                .collect();
        } else if let Some(v) = line.strip_prefix("mode:") {
            h.mode = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("what:") {
            h.what = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("verify:") {
            h.allow_markers = v.trim() == "markers";
        }
    }
    h
}

/// Runs one case: the printed IR, or the error it produced.
fn run_case(path: &Path, display: &str) -> Result<String, String> {
    let src = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let h = header(&src);
    if h.what.is_none() {
        return Err(format!("{display}: the header needs a `# what:` line"));
    }
    let graph = qatc::ir::text::parse(&src, display).map_err(|e| e.to_string())?;
    if !h.passes.is_empty() {
        return Err(format!(
            "{display}: passes {:?} (mode {}) requested but no pass manager is built yet",
            h.passes, h.mode
        ));
    }
    let opts = qatc::ir::verify::VerifyOptions {
        allow_markers: h.allow_markers,
    };
    qatc::ir::verify::verify_with(&graph, opts).map_err(|e| e.to_string())?;
    Ok(qatc::ir::text::print(&graph))
}

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            cases(&p, out);
        } else if p.extension().is_some_and(|e| e == "qir") {
            out.push(p);
        }
    }
}

#[test]
fn golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("tests/golden");
    let mut files = Vec::new();
    cases(&golden, &mut files);
    assert!(!files.is_empty(), "no golden cases found");
    let mut failures = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&golden).unwrap();
        let display = format!("tests/golden/{}", rel.display());
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let expect_error = name.starts_with("no_");
        let text = match (run_case(path, &display), expect_error) {
            (Ok(ir), false) => ir,
            (Err(e), true) => format!("error: {e}\n"),
            (Ok(_), true) => {
                failures.push(format!("{display}: a no_ case must fail, but it passed"));
                continue;
            }
            (Err(e), false) => {
                failures.push(format!("{display}: {e}"));
                continue;
            }
        };
        let snap_dir = root.join("snapshots").join(rel.parent().unwrap());
        let result = std::panic::catch_unwind(|| {
            insta::with_settings!({
                snapshot_path => snap_dir.clone(),
                prepend_module_to_snapshot => false,
                omit_expression => true,
                input_file => path.clone(),
            }, {
                insta::assert_snapshot!(name.clone(), text);
            });
        });
        if result.is_err() {
            failures.push(format!("{display}: snapshot differs (cargo insta review)"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
