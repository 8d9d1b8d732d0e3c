//! Datasets: what `--data` reads (MNIST-format IDX of any image size, `.npz` as
//! `keras.datasets` caches it, CIFAR-10/100 binary batches) into one in-memory [`Dataset`].

pub mod cifar;
pub mod idx;
pub mod mnist;
pub mod npz;

use crate::error::{Error, Result};
use std::path::Path;

pub use mnist::Split;

/// How integer (0..255) pixels are stored in a [`Dataset`]: scaled to `[0, 1]` (the default,
/// the reference models' convention) or raw, for models that scale their input themselves.
/// Float pixels (an `.npz` of floats) are kept as they are either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pixels {
    /// `v / 255`.
    #[default]
    Unit,
    /// `v` as it is.
    Raw,
}

impl Pixels {
    /// Byte pixels as f32.
    pub fn of_bytes(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Pixels::Unit => bytes.iter().map(|&p| p as f32 / 255.0).collect(),
            Pixels::Raw => bytes.iter().map(|&p| p as f32).collect(),
        }
    }
}

/// Loads one split of the dataset at `path`, told apart by what it finds: an `.npz` file, a
/// directory of CIFAR-10 or CIFAR-100 binary batches, or a directory of MNIST-format IDX
/// files (any image size: MNIST, Fashion-MNIST, KMNIST, EMNIST).
pub fn load(path: &Path, split: Split, pixels: Pixels) -> Result<Dataset> {
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("npz") => npz::load(path, split, pixels),
            _ => Err(Error::file(
                path,
                "not a dataset file qatc reads: give an .npz file (x_train, y_train, x_test, \
                 y_test) or a directory of IDX or CIFAR binary files",
            )),
        };
    }
    if !path.is_dir() {
        return Err(Error::file(path, "no such file or directory"));
    }
    if let Some(kind) = cifar::detect(path) {
        return cifar::load(path, kind, split, pixels);
    }
    if idx::split_files(path, split).is_some() {
        return idx::load(path, split, pixels);
    }
    Err(Error::file(
        path,
        "no dataset found: expected MNIST-format IDX files (train-images-idx3-ubyte[.gz], \
         train-labels-idx1-ubyte[.gz], t10k-…), CIFAR-10 (data_batch_1.bin … test_batch.bin) \
         or CIFAR-100 (train.bin, test.bin) binaries, or an .npz file",
    ))
}

/// Images and labels in memory, images as f32 NHWC scaled to [0, 1].
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Per-sample shape, e.g. `[28, 28, 1]`.
    pub sample_shape: Vec<usize>,
    /// All samples' pixels back to back, `len() × sample_len()` values, each sample NHWC
    /// row-major.
    pub images: Vec<f32>,
    /// One class index per sample, in `0..classes`.
    pub labels: Vec<i32>,
    /// The number of classes (10 for MNIST).
    pub classes: usize,
}

impl Dataset {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample: the product of `sample_shape` (784 for MNIST).
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Sample `i`'s pixels.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The first `n` samples (or all).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            sample_shape: self.sample_shape.clone(),
            images: self.images[..n * self.sample_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes,
        }
    }
}
