//! One function per fuzz target: each feeds bytes to one of qatc's readers the way a user's
//! file reaches it (through the public API, from a file where the reader takes a path). A
//! function may see the reader accept or refuse the input; it must never panic, abort, or
//! run away in time or memory. The fuzz targets (`fuzz/fuzz_targets/`) and the replay of the
//! committed regression inputs (`tests/fuzz_regressions.rs`) share this file.

use qatc::data::{Pixels, Split};
use std::path::{Path, PathBuf};

/// A target's function: takes any bytes, must return.
pub type Target = fn(&[u8]);

/// Every target: its name (the directory of its seeds and regression inputs) and function.
pub const TARGETS: &[(&str, Target)] = &[
    ("qir", qir),
    ("rules", rules),
    ("tflite_import", tflite_import),
    ("tflite_run", tflite_run),
    ("safetensors", safetensors),
    ("checkpoint", checkpoint),
    ("npy", npy),
    ("npz", npz),
    ("idx", idx),
    ("cifar", cifar),
    ("keras", keras),
    ("h5", keras),
    ("image", image),
    ("config", config),
    ("graph", graph),
];

/// A fresh scratch directory of this process (emptied on every call).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qatc-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("scratch directory");
    }
    std::fs::write(path, data).expect("scratch file");
}

/// `.qir` text: parse, verify, and on success print ∘ parse ∘ print is a fixed point.
pub fn qir(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(g) = qatc::ir::text::parse(src, "fuzz.qir") else {
        return;
    };
    let _ = qatc::ir::verify::verify(&g);
    let text = qatc::ir::text::print(&g);
    let back = qatc::ir::text::parse(&text, "printed.qir")
        .unwrap_or_else(|e| panic!("printed text does not parse: {e}\n{text}"));
    assert_eq!(
        qatc::ir::text::print(&back),
        text,
        "print∘parse changed the text"
    );
}

/// A rule file (`passes/*.rules`, or a user's own under `rules_dir`).
pub fn rules(data: &[u8]) {
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = qatc::pass::check_rule_file(src, "fuzz.rules");
    }
}

/// `.tflite` import (`qatc import`, `--model m.tflite`).
pub fn tflite_import(data: &[u8]) {
    let _ = qatc::import::tflite::import(data);
}

/// `.tflite` loaded by the int8 interpreter and run once on zeros (`qatc run`, `qatc eval`).
pub fn tflite_run(data: &[u8]) {
    use qatc::int8::array::{Array, Data};
    use qatc::tflite::model::ElemType;
    let Ok(it) = qatc::int8::Interpreter::new(data) else {
        return;
    };
    let mut inputs = Vec::new();
    for t in it.inputs() {
        let n: usize = t.shape.iter().product();
        if n > 1 << 16 {
            return;
        }
        let data = match t.dtype {
            ElemType::I8 => Data::I8(vec![0; n]),
            ElemType::F32 => Data::F32(vec![0.0; n]),
            _ => return,
        };
        inputs.push(Array::new(t.shape.clone(), data).expect("sized"));
    }
    let _ = it.run(&inputs);
}

/// `.safetensors` weights (`model.safetensors` beside a `.qir`).
pub fn safetensors(data: &[u8]) {
    let _ = qatc::ir::ParamStore::from_safetensors(data, Path::new("fuzz.safetensors"));
}

/// A training checkpoint.
pub fn checkpoint(data: &[u8]) {
    let path = scratch().join("checkpoint.safetensors");
    write(&path, data);
    let _ = qatc::train::Checkpoint::load(&path);
}

/// `.npy` arrays (`qatc run` inputs).
pub fn npy(data: &[u8]) {
    let _ = qatc::int8::npy::from_bytes(data, Path::new("fuzz.npy"));
}

/// An `.npz` dataset, both splits.
pub fn npz(data: &[u8]) {
    let path = scratch().join("data.npz");
    write(&path, data);
    for split in [Split::Train, Split::Test] {
        let _ = qatc::data::load(&path, split, Pixels::Unit);
    }
}

/// An IDX dataset directory: the first byte chooses plain or gzip file names and where the
/// images end and the labels begin.
pub fn idx(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let cut = (head as usize * rest.len()) / 255;
    let (images, labels) = rest.split_at(cut.min(rest.len()));
    let gz = if head & 1 == 1 { ".gz" } else { "" };
    let dir = scratch();
    write(&dir.join(format!("train-images-idx3-ubyte{gz}")), images);
    write(&dir.join(format!("train-labels-idx1-ubyte{gz}")), labels);
    let _ = qatc::data::load(&dir, Split::Train, Pixels::Unit);
}

/// A CIFAR binary batch directory (CIFAR-10 names, so both the 10- and 100-class layouts
/// are tried by what the records hold), and the same bytes as a `.tar.gz` archive.
pub fn cifar(data: &[u8]) {
    let dir = scratch();
    write(&dir.join("data_batch_1.bin"), data);
    write(&dir.join("test_batch.bin"), data);
    // the same bytes as the downloaded archive (a gzip-compressed tar)
    let archive = dir.join("cifar.tar.gz");
    write(&archive, data);
    for split in [Split::Train, Split::Test] {
        let _ = qatc::data::load(&dir, split, Pixels::Unit);
        let _ = qatc::data::load(&archive, split, Pixels::Unit);
    }
}

/// A Keras model file, `.keras` (zip) or `.h5` (HDF5): told apart by content.
pub fn keras(data: &[u8]) {
    let _ = qatc::import::keras::load_bytes(data);
}

/// An image-folder dataset whose one image holds the input (PNG or JPEG by its name: the
/// decoder is chosen by content either way), resized to 8×8.
pub fn image(data: &[u8]) {
    let dir = scratch();
    let ext = if data.starts_with(b"\x89PNG") {
        "png"
    } else {
        "jpg"
    };
    write(&dir.join(format!("a/one.{ext}")), data);
    write(&dir.join(format!("b/two.{ext}")), data);
    let _ = qatc::data::load_with(&dir, Split::Train, Pixels::Unit, Some([8, 8]), 0);
}

/// A `--config` TOML job file.
pub fn config(data: &[u8]) {
    let path = scratch().join("job.toml");
    write(&path, data);
    if let Ok(job) = qatc::workflow::Job::from_toml_file(&path) {
        let _ = job.check();
    }
}

/// Choices read from the fuzzer's bytes, one byte each (zeros once they run out).
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    /// A number in `0..n`.
    fn pick(&mut self, n: usize) -> usize {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b as usize % n.max(1)
    }

    fn act(&mut self) -> Option<qatc::ir::builder::Act> {
        use qatc::ir::builder::Act;
        [
            None,
            Some(Act::Relu),
            Some(Act::Relu6),
            Some(Act::Sigmoid),
            Some(Act::Tanh),
            Some(Act::Softmax),
            Some(Act::HardSwish),
            Some(Act::LeakyRelu(0.2)),
        ][self.pick(8)]
    }
}

/// Structure-aware: the bytes choose a Keras-style model (input shape, then up to eight
/// layers or merges, each applied to any earlier node) that the builder accepts; it must
/// survive the whole pipeline a user's model goes through. Its printed `.qir` parses back to
/// the same text and verifies; `default_8bit` and `export` either refuse it with an error
/// or produce a graph the float interpreter runs; an exported `.tflite` loads and runs in
/// the int8 interpreter. Any panic, or an export the interpreter refuses, is a finding.
pub fn graph(data: &[u8]) {
    use qatc::ir::builder::{Functional, Layer};
    use qatc::pass::{run_pipeline, PipelineOptions};
    let mut c = Choices(data);
    let mut f = Functional::new("fuzz", 0);
    let shape = [1 + c.pick(8), 1 + c.pick(8), 1 + c.pick(4)];
    let Ok(x) = f.input("input", &shape) else {
        return;
    };
    let mut nodes = vec![x];
    for _ in 0..1 + c.pick(8) {
        let a = nodes[c.pick(nodes.len())];
        let b = nodes[c.pick(nodes.len())];
        let (k, s) = (1 + c.pick(3), 1 + c.pick(2));
        let layer = match c.pick(18) {
            0 => Layer::conv2d(1 + c.pick(4), k).stride(s),
            1 => Layer::conv2d(1 + c.pick(4), k).stride(s).same(),
            2 => Layer::depthwise_conv2d(k).depth_multiplier(1 + c.pick(2)),
            3 => Layer::conv2d_transpose(1 + c.pick(4), k).stride(s),
            4 => Layer::dense(1 + c.pick(4)),
            5 => Layer::batch_norm(),
            6 => Layer::relu(),
            7 => Layer::relu6(),
            8 => Layer::prelu_per_channel(),
            9 => Layer::max_pool(1 + c.pick(2)),
            10 => Layer::avg_pool(1 + c.pick(2)),
            11 => Layer::flatten(),
            12 => Layer::GlobalAvgPool,
            13 => Layer::ZeroPadding([[c.pick(2), c.pick(2)], [c.pick(2), c.pick(2)]]),
            14 => Layer::UpSampling([1 + c.pick(2), 1 + c.pick(2)]),
            15 => {
                if let Ok(y) = f.add(a, b) {
                    nodes.push(y);
                }
                continue;
            }
            16 => {
                if let Ok(y) = f.concat(&[a, b], 3) {
                    nodes.push(y);
                }
                continue;
            }
            _ => match c.act() {
                Some(act) => Layer::Activation(act),
                None => Layer::Dropout(0.5),
            },
        };
        let layer = match c.act() {
            Some(act) if c.pick(2) == 0 => layer.activation(act),
            _ => layer,
        };
        if let Ok(y) = f.layer(a, layer) {
            nodes.push(y);
        }
    }
    f.output("output", *nodes.last().expect("the input"));
    let Ok(mut model) = f.build() else {
        return;
    };
    let text = qatc::ir::text::print(&model.graph);
    let back = qatc::ir::text::parse(&text, "built.qir")
        .unwrap_or_else(|e| panic!("a built model's text does not parse: {e}\n{text}"));
    assert_eq!(
        qatc::ir::text::print(&back),
        text,
        "print∘parse changed the text"
    );
    qatc::ir::verify::verify(&back).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let input = qatc::ir::Tensor::new(
        [1].iter().chain(&shape).copied().collect::<Vec<_>>(),
        (0..shape.iter().product::<usize>())
            .map(|i| (i % 7) as f32 * 0.3 - 1.0)
            .collect(),
    );
    let feed = |g: &qatc::ir::Graph, p: &qatc::ir::ParamStore| {
        let feed = [("input", qatc::ir::interp::Value::F32(input.clone()))];
        if let Err(e) = qatc::ir::interp::run(g, p, &feed) {
            panic!("the interpreter refuses a verified graph: {e}\n{text}");
        }
    };
    // a pipeline may refuse a model (an unsupported layer), but a pass must never break
    // the graph it was given
    let refused = |e: qatc::Error| {
        if let qatc::Error::Rewrite(msg) = e {
            panic!("{msg}\n{text}");
        }
    };
    let Ok(qat) = run_pipeline(
        model.graph,
        &mut model.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .map_err(refused) else {
        return;
    };
    feed(&qat, &model.params);
    let Ok(ready) =
        run_pipeline(qat, &mut model.params, "export", &PipelineOptions::eval()).map_err(refused)
    else {
        return;
    };
    feed(&ready, &model.params);
    let opts = qatc::export::ExportOptions::default();
    let Ok(bytes) = qatc::export::export(&ready, &model.params, &opts) else {
        return;
    };
    let it = qatc::int8::Interpreter::new(&bytes)
        .unwrap_or_else(|e| panic!("an exported file does not load: {e}\n{text}"));
    tflite_run(&bytes);
    drop(it);
}
