//! Keras models in: a `.keras` file (Keras 3) or an `.h5` file (tf_keras / Keras 2, and the
//! legacy `.h5` Keras 3 writes) to a model graph (form 1) with its weights, Keras' kernel
//! layouts converted to qatc's. Sequential and Functional models, nested models (a
//! `keras.applications` base under a new head), shared layers, and tensor arithmetic by
//! constants are read; a layer qatc cannot take is refused with its name, class and what to
//! use instead.
//!
//! ```no_run
//! let model = qatc::import::keras::load(std::path::Path::new("model.keras"))?;
//! println!("{}", qatc::ir::text::print(&model.graph));
//! # Ok::<(), qatc::Error>(())
//! ```

mod config;
mod layers;
mod weights;

use crate::error::{Error, Result};
use crate::ir::builder::Model;
use crate::ir::types::TensorType;
use serde_json::Value;
use std::path::Path;

/// Reads a `.keras` or `.h5` model file (told apart by its first bytes, not its name).
pub fn load(path: &Path) -> Result<Model> {
    let bytes = crate::error::read_file(path)?;
    load_bytes(&bytes).map_err(|m| Error::file(path, m))
}

/// Reads a `.keras` (zip) or `.h5` (HDF5) model from memory; the error says what is wrong
/// and where (layer, class, weight).
pub fn load_bytes(bytes: &[u8]) -> std::result::Result<Model, String> {
    let (config, weights) = if bytes.starts_with(b"PK\x03\x04") {
        weights::open_keras(bytes)?
    } else if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        weights::open_h5(bytes)?
    } else {
        return Err("neither a .keras zip nor an HDF5 .h5 file".into());
    };
    let json: Value =
        serde_json::from_str(&config).map_err(|e| format!("the model config is not JSON: {e}"))?;
    let mut cfg = config::model(&json, "", None)?;
    let keras2 = cfg.any_keras2();
    cfg.set_keras2(keras2);
    let mut em = layers::Emitter::new(&cfg.name, &weights, keras2);
    let inputs = input_nodes(&cfg, &mut em)?;
    let outputs = em.call_model(&cfg, &inputs, "")?;
    let names: Vec<String> = if cfg.sequential {
        vec!["output".to_string()]
    } else {
        cfg.outputs.iter().map(|r| r.layer.clone()).collect()
    };
    for (name, y) in names.into_iter().zip(outputs) {
        em.g.add_output(name, y);
    }
    crate::ir::verify::verify_with_params(&em.g, &em.params).map_err(|e| e.to_string())?;
    Ok(Model {
        graph: em.g,
        params: em.params,
    })
}

/// The graph inputs of the top-level model, from its InputLayers (batch 1).
fn input_nodes(
    cfg: &config::ModelCfg,
    em: &mut layers::Emitter,
) -> std::result::Result<Vec<crate::ir::NodeId>, String> {
    let shape_of = |l: &config::LayerCfg| -> Option<Vec<Option<usize>>> {
        let c = &l.config;
        let s = c
            .get("batch_shape")
            .or_else(|| c.get("batch_input_shape"))?;
        let v: Vec<Option<usize>> = s
            .as_array()?
            .iter()
            .map(|d| d.as_u64().map(|n| n as usize))
            .collect();
        Some(v.into_iter().skip(1).collect())
    };
    let mut specs: Vec<(String, Vec<Option<usize>>)> = Vec::new();
    if cfg.sequential {
        let first = cfg.layers.first().ok_or("an empty Sequential model")?;
        let shape = if first.class == "InputLayer" {
            shape_of(first)
        } else {
            shape_of(first).or_else(|| cfg.build_shape.clone())
        }
        .ok_or("the Sequential model has no input shape (build it or give it an InputLayer)")?;
        let name = if first.class == "InputLayer" {
            first.name.clone()
        } else {
            "input".into()
        };
        specs.push((name, shape));
    } else {
        for r in &cfg.inputs {
            let l = cfg
                .layers
                .iter()
                .find(|l| l.name == r.layer)
                .ok_or_else(|| format!("input layer `{}` is not in the model", r.layer))?;
            specs.push((
                l.name.clone(),
                shape_of(l).ok_or_else(|| format!("input `{}` has no shape", l.name))?,
            ));
        }
    }
    specs
        .into_iter()
        .map(|(name, dims)| {
            let dims: Option<Vec<usize>> = dims.into_iter().collect();
            let dims = dims.ok_or_else(|| {
                format!("input `{name}` has an unknown (None) dimension besides the batch: give the InputLayer a full shape")
            })?;
            let mut shape = vec![1];
            shape.extend(dims);
            em.g
                .add_input(name, TensorType::f32(shape))
                .map_err(|e| e.to_string())
        })
        .collect()
}
