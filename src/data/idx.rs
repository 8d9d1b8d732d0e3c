//! IDX files (MNIST's format, also Fashion-MNIST, KMNIST and EMNIST): a big-endian u32 magic
//! (`0x0000_08NN`: unsigned bytes, `NN` dimensions), one big-endian u32 per dimension, then
//! the bytes row-major; plain or gzip-compressed.

use super::dataset::{Dataset, Pixels, Split};
use crate::error::{read_file, Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most bytes one decompressed IDX file may hold (a gzip bomb is refused, not unpacked).
const MAX_BYTES: u64 = 1 << 31;

/// Reads one IDX file (gzip or not): its dimensions and raw bytes, checked against the
/// length the header declares.
pub fn read_idx(path: &Path, want_magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = read_file(path)?;
    let raw = if file.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        GzDecoder::new(&file[..])
            .take(MAX_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| Error::file(path, format!("not a valid gzip file ({e})")))?;
        if raw.len() as u64 > MAX_BYTES {
            return Err(Error::file(
                path,
                "decompresses to more than 2 GiB: refused",
            ));
        }
        raw
    } else {
        file
    };
    let be32 = |at: usize| -> Result<u32> {
        raw.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| Error::file(path, format!("truncated IDX header at byte {at}")))
    };
    let magic = be32(0)?;
    if magic & 0xffff_ff00 != want_magic & 0xffff_ff00 {
        return Err(Error::file(
            path,
            format!("IDX magic is 0x{magic:08x}, expected 0x{want_magic:08x} (unsigned bytes)"),
        ));
    }
    let ndim = (magic & 0xff) as usize;
    let dims: Vec<usize> = (0..ndim)
        .map(|i| be32(4 + 4 * i).map(|d| d as usize))
        .collect::<Result<_>>()?;
    let start = 4 + 4 * ndim;
    let want = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::file(path, format!("IDX dimensions {dims:?} overflow")))?;
    if raw.len() != start + want {
        return Err(Error::file(
            path,
            format!(
                "IDX dimensions {dims:?} need {want} bytes of data after the header (byte {start}), \
                 the file has {}",
                raw.len().saturating_sub(start)
            ),
        ));
    }
    let mut raw = raw;
    Ok((dims, raw.split_off(start)))
}

/// The images and labels file of a split in `dir`, by the names MNIST-format datasets use
/// (`train-images-idx3-ubyte`, `train-images.idx3-ubyte`, each optionally `.gz`).
pub fn split_files(dir: &Path, split: Split) -> Option<(PathBuf, PathBuf)> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let find = |kind: &str, nd: u8| -> Option<PathBuf> {
        [".", "-"].iter().find_map(|sep| {
            ["", ".gz"].iter().find_map(|ext| {
                let p = dir.join(format!("{prefix}-{kind}{sep}idx{nd}-ubyte{ext}"));
                p.exists().then_some(p)
            })
        })
    };
    Some((find("images", 3)?, find("labels", 1)?))
}

/// Loads one split of an IDX dataset from `dir`: images `(n, h, w)` as `[h, w, 1]`.
pub fn load(dir: &Path, split: Split, pixels: Pixels) -> Result<Dataset> {
    let (img_path, lbl_path) = split_files(dir, split).ok_or_else(|| {
        Error::file(
            dir,
            "no IDX images and labels for this split (train-images-idx3-ubyte[.gz] and \
             train-labels-idx1-ubyte[.gz], t10k-… for the test split)",
        )
    })?;
    let (idims, px) = read_idx(&img_path, 0x0000_0803)?;
    let (ldims, labels) = read_idx(&lbl_path, 0x0000_0801)?;
    if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
        return Err(Error::file(
            &img_path,
            format!("images {idims:?} and labels {ldims:?} do not match"),
        ));
    }
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    Ok(Dataset {
        sample_shape: vec![idims[1], idims[2], 1],
        images: pixels.of_bytes(&px),
        labels: labels.iter().map(|&l| l as i32).collect(),
        classes,
    })
}
