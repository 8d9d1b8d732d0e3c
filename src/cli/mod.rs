//! The `qatc` command line: one module per subcommand, plus model loading shared by all.

pub mod bench;
pub mod dump;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod report;
pub mod run;
pub mod train;

use crate::error::{Error, Result};
use crate::ir::builder::Model;
use crate::ir::text;
use std::path::Path;

/// Loads a model given as a reference-model name (`mnist_cnn`), a `.qir` file (with the
/// `.safetensors` weights beside it, or Keras' default initial values drawn from `seed` when
/// there is none), or a float `.tflite` file (imported with its weights).
pub fn load_model(spec: &str, seed: u64) -> Result<Model> {
    let path = Path::new(spec);
    match path.extension().and_then(|e| e.to_str()) {
        Some("qir") => {
            let (graph, mut params) = text::load_model(path)?;
            if params.is_empty() && !graph.params().is_empty() {
                params = crate::ir::builder::init_params(&graph, seed)?;
            }
            Ok(Model { graph, params })
        }
        Some("tflite") => {
            let bytes = crate::error::read_file(path)?;
            let (mut graph, params) = crate::import::tflite::import(&bytes)
                .map_err(|e| Error::file(path, format!("cannot import: {e}")))?;
            let quantized = graph.canonical_order().into_iter().any(|n| {
                matches!(
                    graph.node(n).op,
                    crate::ir::Op::Model(crate::ir::op::ModelOp::FakeQuant(_))
                )
            });
            if quantized {
                return Err(Error::file(
                    path,
                    "an int8 model; qatc trains float models (convert the Keras model \
                     without `optimizations`, or give its .qir)",
                ));
            }
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                graph.name = stem.to_string();
            }
            Ok(Model { graph, params })
        }
        Some(ext) => Err(Error::Usage(format!(
            "{spec}: unsupported model file type `.{ext}` (use a .qir or float .tflite file, or \
             one of {})",
            crate::models::NAMES.join(", ")
        ))),
        None => crate::models::by_name(spec, seed),
    }
}
