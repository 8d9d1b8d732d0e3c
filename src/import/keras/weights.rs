//! Where a Keras file keeps its config and weights: a `.keras` zip (`config.json` +
//! `model.weights.h5`, variables by position under class-numbered groups) or a legacy `.h5`
//! (`model_config` attribute, variables by name under `model_weights/<layer>`).

use super::config::LayerCfg;
use crate::ir::params::Tensor;
use hdf5_pure::File;
use std::io::Read;

type R<T> = Result<T, String>;

/// The weights of a Keras file.
pub(super) enum Weights {
    /// `model.weights.h5` of a `.keras` zip.
    Keras3(File),
    /// A legacy `.h5`: `model_weights/…`.
    H5(File),
}

fn h5(bytes: Vec<u8>, what: &str) -> R<File> {
    File::from_bytes(bytes).map_err(|e| format!("{what} is not a readable HDF5 file: {e}"))
}

/// Reads a `.keras` zip: its config JSON and its weights.
pub(super) fn open_keras(bytes: &[u8]) -> R<(String, Weights)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable .keras zip: {e}"))?;
    let mut member = |name: &str| -> R<Vec<u8>> {
        let mut f = zip
            .by_name(name)
            .map_err(|_| format!("the .keras zip has no `{name}`"))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(|e| format!("cannot read `{name}` from the zip: {e}"))?;
        Ok(out)
    };
    let config = String::from_utf8(member("config.json")?)
        .map_err(|_| "config.json is not UTF-8".to_string())?;
    let weights = member("model.weights.h5").map_err(|m| {
        format!("{m} (weights saved as .npz or sharded are not supported; save with the default model.save(\"x.keras\"))")
    })?;
    Ok((config, Weights::Keras3(h5(weights, "model.weights.h5")?)))
}

/// Reads a legacy `.h5`: its `model_config` and its weights.
pub(super) fn open_h5(bytes: &[u8]) -> R<(String, Weights)> {
    let file = h5(bytes.to_vec(), "the file")?;
    let attrs = file
        .root()
        .attrs()
        .map_err(|e| format!("cannot read the root attributes: {e}"))?;
    let config = attrs
        .get("model_config")
        .and_then(|a| a.as_str())
        .ok_or(
            "the .h5 has no `model_config`: it holds weights only (model.save_weights); save \
             the whole model with model.save(\"x.h5\") or as .keras",
        )?
        .trim_end_matches('\0')
        .to_string();
    Ok((config, Weights::H5(file)))
}

fn read(file: &File, path: &str) -> R<Tensor> {
    let ds = file
        .dataset(path)
        .map_err(|e| format!("cannot open weight `{path}`: {e}"))?;
    let shape: Vec<usize> = ds
        .shape()
        .map_err(|e| format!("weight `{path}`: {e}"))?
        .into_iter()
        .map(|d| d as usize)
        .collect();
    let data = ds
        .read_f32()
        .map_err(|e| format!("cannot read weight `{path}`: {e}"))?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(format!(
            "weight `{path}` holds {} values for shape {shape:?}",
            data.len()
        ));
    }
    Ok(Tensor::new(shape, data))
}

/// The strings of an `.h5` string-list attribute (`weight_names`), also when tf_keras split it
/// into `weight_names0`, `weight_names1`, …; an empty (float) array is an empty list.
fn string_list(
    attrs: &std::collections::HashMap<String, hdf5_pure::AttrValue>,
    key: &str,
) -> Vec<String> {
    if let Some(v) = attrs.get(key) {
        return v.as_strings().map(<[String]>::to_vec).unwrap_or_default();
    }
    let mut out = Vec::new();
    for i in 0.. {
        match attrs.get(&format!("{key}{i}")).and_then(|v| v.as_strings()) {
            Some(s) => out.extend(s.iter().cloned()),
            None => break,
        }
    }
    out
}

impl Weights {
    /// The variables `names` of `layer` (Keras' names, in Keras' order), as stored.
    pub fn vars(&self, layer: &LayerCfg, names: &[&str]) -> R<Vec<Tensor>> {
        match self {
            Weights::Keras3(file) => {
                let base = layer
                    .keras3_path
                    .as_deref()
                    .ok_or("an operation has no variables")?;
                let group = format!("{base}/vars");
                let mut present: Vec<usize> = match file.group(&group) {
                    Ok(g) => g
                        .datasets()
                        .map_err(|e| format!("cannot list `{group}`: {e}"))?
                        .iter()
                        .filter_map(|d| d.parse().ok())
                        .collect(),
                    Err(_) if names.is_empty() => Vec::new(),
                    Err(e) => return Err(format!("the weights file has no `{group}` ({e})")),
                };
                present.sort_unstable();
                if present != (0..names.len()).collect::<Vec<_>>() {
                    return Err(format!(
                        "the file stores {} variables for it in `{group}`, its config needs {} ({})",
                        present.len(),
                        names.len(),
                        names.join(", ")
                    ));
                }
                (0..names.len())
                    .map(|i| read(file, &format!("{group}/{i}")))
                    .collect()
            }
            Weights::H5(file) => {
                if names.is_empty() {
                    return Ok(Vec::new());
                }
                let gpath = format!("model_weights/{}", layer.h5_group);
                let g = file
                    .group(&gpath)
                    .map_err(|e| format!("the file has no weight group `{gpath}` ({e})"))?;
                let attrs = g
                    .attrs()
                    .map_err(|e| format!("cannot read `{gpath}`'s attributes: {e}"))?;
                let stored = string_list(&attrs, "weight_names");
                // `owner/var:0` (or `var:0` for a layer whose weights sit in its own group)
                let mut found = Vec::with_capacity(names.len());
                for &want in names {
                    let hit = stored.iter().find(|full| {
                        let plain = full.strip_suffix(":0").unwrap_or(full);
                        let mut parts = plain.rsplit('/');
                        let var = parts.next().unwrap_or("");
                        let owner = parts.next();
                        let owner_ok =
                            owner.map_or(layer.h5_group == layer.name, |o| o == layer.name);
                        let var_ok = var == want
                            || (want == "kernel"
                                && var == "depthwise_kernel"
                                && layer.class == "DepthwiseConv2D");
                        owner_ok && var_ok
                    });
                    let full = hit.ok_or_else(|| {
                        format!(
                            "weight `{want}` is not among the stored weights of `{gpath}` ({})",
                            stored.join(", ")
                        )
                    })?;
                    found.push(read(file, &format!("{gpath}/{full}"))?);
                }
                Ok(found)
            }
        }
    }
}
