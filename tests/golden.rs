//! Golden files: every `tests/golden/<dir>/<case>.qir` is parsed, run through the passes its
//! header names, verified, printed, and compared with `snapshots/<dir>/<case>.snap` (insta).
//! A case whose name starts with `no_` shows what must not happen: without passes it must
//! fail (its snapshot is the diagnostic); with passes its snapshot is the pass manager's
//! error or the graph the passes left alone.
//!
//! Header lines (comments at the top of the case):
//! ```text
//! # what: one sentence saying what the case shows
//! # passes: none            (or a comma-separated list of passes and pipeline names)
//! # mode: eval              (or train; default eval)
//! # scheme: default_8bit    (or per_tensor, nbit:W,A, lsq:W,A, pact:W,A; default default_8bit)
//! # override: conv2d=skip   (a per-layer override; may be repeated)
//! # verify: markers         (optional, without passes: `quant` markers are allowed, as
//!                            between annotate and quantize)
//! # train-step: adam        (optional, after the passes: snapshot autodiff's train step
//!                            with this optimizer, `adam`, `sgd` or `sgd momentum=0.9`, at
//!                            the case's batch size; `eval`: autodiff's inference graph;
//!                            `statistics`: the BatchNorm re-estimation step; a trailing
//!                            `shard=1/2`: the step of rank 1 of 2 in a data-parallel run)
//! # source: examples/resnet8.qir  (optional: the graph is that file's, relative to the crate
//!                            root, so a reference model's case is its example, not a copy)
//! ```
//! Params come from the `.safetensors` file beside the case, else they are synthesized
//! (deterministic values in [0.5, 1.5], so BatchNorm variances are positive). With passes,
//! the snapshot ends with the params the passes added or removed.
//! Add a case, run `cargo insta test --review` (or `INSTA_UPDATE=always cargo test --test
//! golden`), read the new snapshot, commit both.

use std::path::{Path, PathBuf};

struct Header {
    passes: Vec<String>,
    mode: String,
    scheme: String,
    overrides: Vec<String>,
    what: Option<String>,
    allow_markers: bool,
    train_step: Option<String>,
    source: Option<String>,
}

fn header(src: &str) -> Header {
    let mut h = Header {
        passes: Vec::new(),
        mode: "eval".into(),
        scheme: "default_8bit".into(),
        overrides: Vec::new(),
        what: None,
        allow_markers: false,
        train_step: None,
        source: None,
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
        } else if let Some(v) = line.strip_prefix("scheme:") {
            h.scheme = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("override:") {
            h.overrides.push(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("what:") {
            h.what = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("verify:") {
            h.allow_markers = v.trim() == "markers";
        } else if let Some(v) = line.strip_prefix("train-step:") {
            h.train_step = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("source:") {
            h.source = Some(v.trim().to_string());
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
    let graph = match &h.source {
        None => qatc::ir::text::parse(&src, display),
        Some(source) => {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
            let body = std::fs::read_to_string(&file)
                .map_err(|e| format!("{display}: # source: {source}: {e}"))?;
            qatc::ir::text::parse(&body, source)
        }
    }
    .map_err(|e| e.to_string())?;
    if h.passes.is_empty() {
        let opts = qatc::ir::verify::VerifyOptions {
            allow_markers: h.allow_markers,
        };
        qatc::ir::verify::verify_with(&graph, opts).map_err(|e| e.to_string())?;
        let graph = match h.train_step.as_deref() {
            None => graph,
            Some(spec) => autodiff(&graph, spec).map_err(|e| e.to_string())?,
        };
        return Ok(qatc::ir::text::print(&graph));
    }
    run_passes(path, graph, &h).map_err(|e| e.to_string())
}

/// The `# train-step:` header: autodiff's train step (or inference graph) of the case.
fn autodiff(graph: &qatc::ir::Graph, spec: &str) -> qatc::Result<qatc::ir::Graph> {
    use qatc::autodiff::{eval_graph, train_step, Optimizer, TrainSpec};
    let bad = || {
        qatc::Error::Usage(format!(
            "# train-step: {spec} (adam, sgd [momentum=M], eval or statistics; then optionally \
             shard=R/N)"
        ))
    };
    // `… shard=R/N`: the step of rank R of N in a data-parallel run
    let mut words: Vec<&str> = spec.split_whitespace().collect();
    let mut shard = qatc::autodiff::Shard::default();
    if let Some(w) = words.last().and_then(|w| w.strip_prefix("shard=")) {
        let (r, n) = w.split_once('/').ok_or_else(bad)?;
        shard.rank = r.parse().map_err(|_| bad())?;
        shard.ranks = n.parse().map_err(|_| bad())?;
        words.pop();
    }
    let optimizer = match words[..] {
        ["eval"] => return eval_graph(graph),
        ["statistics"] => return Ok(qatc::autodiff::statistics_step(graph)?.graph),
        ["adam"] => Optimizer::adam(),
        ["sgd"] => Optimizer::sgd(0.0),
        ["sgd", m] => Optimizer::sgd(
            m.strip_prefix("momentum=")
                .and_then(|m| m.parse().ok())
                .ok_or_else(bad)?,
        ),
        _ => return Err(bad()),
    };
    let spec = TrainSpec {
        shard,
        ..TrainSpec::new(graph.batch().unwrap_or(1)).optimizer(optimizer)
    };
    Ok(train_step(graph, &spec)?.graph)
}

/// Params for a case: its `.safetensors` file, else deterministic synthetic values.
fn case_params(path: &Path, g: &qatc::ir::Graph) -> qatc::Result<qatc::ir::ParamStore> {
    let wp = qatc::ir::text::weights_path(path);
    if wp.exists() {
        return qatc::ir::ParamStore::load(&wp);
    }
    let mut params = qatc::ir::ParamStore::new();
    for (k, (name, id)) in g.params().into_iter().enumerate() {
        let shape = g.node(id).ty.shape.clone();
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| 0.5 + ((i * 7 + k * 3) % 11) as f32 / 10.0)
            .collect();
        params.insert(name, qatc::ir::Tensor::new(shape, data));
    }
    Ok(params)
}

/// Runs the header's passes; the printed result, then the params they added or removed.
fn run_passes(path: &Path, graph: qatc::ir::Graph, h: &Header) -> qatc::Result<String> {
    use qatc::pass::{Mode, PipelineOptions};
    let mut params = case_params(path, &graph)?;
    let mut opts = PipelineOptions {
        mode: Mode::parse(&h.mode)
            .ok_or_else(|| qatc::Error::Usage(format!("# mode: {} (train or eval)", h.mode)))?,
        scheme: qatc::quant::scheme::Scheme::parse(&h.scheme)?,
        ..PipelineOptions::default()
    };
    for o in &h.overrides {
        opts.overrides
            .push(qatc::quant::scheme::LayerOverride::parse(o)?);
    }
    let before: std::collections::BTreeSet<String> = params.names().cloned().collect();
    let out = qatc::pass::run_pipeline(graph, &mut params, &h.passes.join(","), &opts)?;
    let out = match h.train_step.as_deref() {
        None => out,
        Some(spec) => autodiff(&out, spec)?,
    };
    let mut text = qatc::ir::text::print(&out);
    for name in params.names().filter(|n| !before.contains(*n)) {
        let shape = &params.get(name).expect("listed").shape;
        text.push_str(&format!(
            "# new param @{name} : f32{}\n",
            qatc::ir::types::shape_str(shape)
        ));
    }
    for name in before.iter().filter(|n| !params.contains(n)) {
        text.push_str(&format!("# removed param @{name}\n"));
    }
    Ok(text)
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
        let h = header(&std::fs::read_to_string(path).unwrap_or_default());
        // a `no_` case with passes documents what they must not do: error or not, snapshot it
        let no_with_passes = name.starts_with("no_") && !h.passes.is_empty() && h.what.is_some();
        let expect_error = name.starts_with("no_") && !no_with_passes;
        let text = match (run_case(path, &display), expect_error) {
            (Err(e), false) if no_with_passes => format!("error: {e}\n"),
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
