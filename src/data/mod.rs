//! Datasets: what `--data` reads (MNIST-format IDX of any image size, `.npz` as
//! `keras.datasets` caches it, CIFAR-10/100 binary batches or their `.tar.gz` archive, image
//! folders) into one in-memory [`Dataset`].

pub mod cifar;
mod dataset;
pub mod folder;
pub mod idx;
pub mod mnist;
pub mod npz;

use crate::error::{Error, Result};
use std::path::Path;

pub use dataset::{Dataset, Pixels, Split};

/// Loads one split of the dataset at `path`, told apart by what it finds: an `.npz` file, a
/// CIFAR-10 or CIFAR-100 binary archive as downloaded (`cifar-10-binary.tar.gz`, the
/// official one checked by size and SHA-256), a directory of CIFAR binary batches, or a directory of MNIST-format IDX
/// files (any image size: MNIST, Fashion-MNIST, KMNIST, EMNIST).
pub fn load(path: &Path, split: Split, pixels: Pixels) -> Result<Dataset> {
    load_with(path, split, pixels, None, 0)
}

/// [`load`], and for an image folder the `[h, w]` to resize to and the seed of its
/// train/test split.
pub fn load_with(
    path: &Path,
    split: Split,
    pixels: Pixels,
    image_size: Option<[usize; 2]>,
    seed: u64,
) -> Result<Dataset> {
    if path.is_file() {
        if cifar::is_archive(path) {
            return cifar::load_archive(path, split, pixels);
        }
        return match path.extension().and_then(|e| e.to_str()) {
            Some("npz") => npz::load(path, split, pixels),
            _ => Err(Error::file(
                path,
                "not a dataset file qatc reads: give an .npz file (x_train, y_train, x_test, \
                 y_test), a CIFAR binary archive (cifar-10-binary.tar.gz) or a directory of \
                 IDX or CIFAR binary files",
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
    if folder::detect(path) {
        return folder::load(path, split, pixels, image_size, seed);
    }
    Err(Error::file(
        path,
        "no dataset found: expected MNIST-format IDX files (train-images-idx3-ubyte[.gz], \
         train-labels-idx1-ubyte[.gz], t10k-…), CIFAR-10 (data_batch_1.bin … test_batch.bin) \
         or CIFAR-100 (train.bin, test.bin) binaries, an image folder (one subfolder of PNG or \
         JPEG files per class), or an .npz file",
    ))
}
