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

/// Loads a model given as a reference-model name (`mnist_cnn`) or a `.qir` file (with its
/// `.safetensors` weights when present).
pub fn load_model(spec: &str, seed: u64) -> Result<Model> {
    let path = Path::new(spec);
    match path.extension().and_then(|e| e.to_str()) {
        Some("qir") => {
            let (graph, params) = text::load_model(path)?;
            Ok(Model { graph, params })
        }
        Some(ext) => Err(Error::Usage(format!(
            "{spec}: unsupported model file type `.{ext}` (use a .qir file or one of {})",
            crate::models::NAMES.join(", ")
        ))),
        None => crate::models::by_name(spec, seed),
    }
}
