//! Named f32 tensors: weights, optimizer moments, observer ranges, BatchNorm statistics.
//! Graphs reference them by name through `param` nodes. Stored beside a `.qir` file as a
//! `.safetensors` file (the Hugging Face format: a JSON header and little-endian data), so a
//! trained model is one file pair that other tools can read too.

use super::graph::Graph;
use super::types::{numel, shape_str, Shape, TensorType};
use crate::error::{read_file, write_atomic, Error, Result};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A dense row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions, outermost first (`[]` for a scalar).
    pub shape: Shape,
    /// The elements in row-major order; exactly `numel(shape)` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from shape and data; the lengths must agree.
    pub fn new(shape: impl Into<Shape>, data: Vec<f32>) -> Tensor {
        let shape = shape.into();
        assert_eq!(
            numel(&shape),
            data.len(),
            "tensor data does not fill shape {shape:?}"
        );
        Tensor { shape, data }
    }

    /// A tensor of shape `shape` filled with 0 (Keras' default bias).
    pub fn zeros(shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        let n = numel(&shape);
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    /// A tensor of shape `shape` with every element `v`.
    pub fn full(shape: impl Into<Shape>, v: f32) -> Tensor {
        let shape = shape.into();
        let n = numel(&shape);
        Tensor {
            shape,
            data: vec![v; n],
        }
    }

    /// A rank-0 tensor holding `v` (a quantizer's `min` or `max`, say).
    pub fn scalar(v: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: vec![v],
        }
    }

    /// The number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Largest absolute elementwise difference (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(self.shape, other.shape);
        self.data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}

impl safetensors::View for &Tensor {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// All named tensors of a model (and, during training, of its optimizer and observers).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamStore {
    map: BTreeMap<String, Tensor>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> ParamStore {
        ParamStore::default()
    }

    /// Stores `t` as `name`, replacing any tensor of that name.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.map.insert(name.into(), t);
    }

    /// The tensor `name`, if stored (see [`ParamStore::require`] for an error instead).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    /// The tensor `name`, mutably, if stored.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.map.get_mut(name)
    }

    /// The tensor `name`, or an error saying it is missing.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.map.get(name).ok_or_else(|| {
            Error::param(name, "missing from the parameter store (load the model's .safetensors file, or initialize the model with a builder)")
        })
    }

    /// Removes the tensor `name` and returns it, if stored.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.map.remove(name)
    }

    /// Whether a tensor named `name` is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Every `(name, tensor)`, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.map.iter()
    }

    /// Every name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    /// The number of tensors (not elements; see [`ParamStore::total_elements`]).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no tensor is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total number of scalars.
    pub fn total_elements(&self) -> usize {
        self.map.values().map(|t| t.numel()).sum()
    }

    /// Checks that every param node of `graph` has a tensor of the node's shape.
    pub fn check_graph(&self, graph: &Graph) -> Result<()> {
        for (name, id) in graph.params() {
            let want: &TensorType = &graph.node(id).ty;
            let t = self.require(&name)?;
            if t.shape != want.shape {
                return Err(Error::param(
                    &name,
                    format!(
                        "the store holds shape {} but the graph declares {}",
                        shape_str(&t.shape),
                        want
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Serializes to safetensors bytes (names sorted, so the bytes are deterministic).
    pub fn to_safetensors(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
        safetensors::serialize(self.map.iter().map(|(k, v)| (k.as_str(), v)), metadata)
            .map_err(|e| Error::Usage(format!("cannot serialize parameters: {e}")))
    }

    /// Parses safetensors bytes; `origin` names the source in errors.
    pub fn from_safetensors(bytes: &[u8], origin: &Path) -> Result<ParamStore> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::file(origin, format!("not a valid .safetensors file: {e}")))?;
        let mut store = ParamStore::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(Error::file(
                    origin,
                    format!(
                        "tensor `{name}` is {:?}; qatc parameters are F32",
                        view.dtype()
                    ),
                ));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            // a NaN or Inf weight or quantizer range (a diverged run, a corrupt file) would
            // train and export silently wrong numbers: refused here, named
            if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::file(
                    origin,
                    format!(
                        "tensor `{name}` holds {v} at element {i} of {}: the weights come from a \
                         run that diverged or the file is damaged; retrain or restore them",
                        data.len()
                    ),
                ));
            }
            store.insert(name, Tensor::new(view.shape().to_vec(), data));
        }
        Ok(store)
    }

    /// Reads a `.safetensors` file.
    pub fn load(path: impl AsRef<Path>) -> Result<ParamStore> {
        let path = path.as_ref();
        ParamStore::from_safetensors(&read_file(path)?, path)
    }

    /// Writes a `.safetensors` file atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path, &self.to_safetensors(None)?)
    }

    /// The metadata map of a safetensors file (checkpoints keep their step there).
    pub fn read_metadata(bytes: &[u8], origin: &Path) -> Result<HashMap<String, String>> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::file(origin, format!("not a valid .safetensors file: {e}")))?;
        Ok(meta.metadata().clone().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip() {
        let mut p = ParamStore::new();
        p.insert(
            "conv.kernel",
            Tensor::new(vec![2, 1, 1, 3], (0..6).map(|i| i as f32 * 0.5).collect()),
        );
        p.insert("conv.bias", Tensor::zeros(vec![2]));
        let bytes = p.to_safetensors(None).unwrap();
        let q = ParamStore::from_safetensors(&bytes, Path::new("mem")).unwrap();
        assert_eq!(p, q);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = ParamStore::from_safetensors(b"\x05\0\0\0\0\0\0\0{}", Path::new("w.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("w.safetensors"), "{err}");
    }
}
