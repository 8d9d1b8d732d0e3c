//! The CIFAR-10 and CIFAR-100 binary formats: records of label byte(s) then 3072 pixel bytes,
//! the 32×32 image channel after channel (CHW), stored as NHWC here.
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin` (1 label byte).
//! CIFAR-100: `train.bin`, `test.bin` (coarse then fine label; the fine one, 100 classes, is
//! used).

use super::dataset::{Dataset, Pixels, Split};
use crate::error::{read_file, Error, Result};
use std::path::{Path, PathBuf};

const PIXELS: usize = 32 * 32 * 3;

/// Which CIFAR a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 10 classes, one label byte per record.
    Cifar10,
    /// 100 fine classes, two label bytes per record.
    Cifar100,
}

/// The CIFAR flavour in `dir`, if it holds one.
pub fn detect(dir: &Path) -> Option<Kind> {
    if dir.join("data_batch_1.bin").exists() || dir.join("test_batch.bin").exists() {
        Some(Kind::Cifar10)
    } else if dir.join("train.bin").exists() && dir.join("test.bin").exists() {
        Some(Kind::Cifar100)
    } else {
        None
    }
}

fn files(dir: &Path, kind: Kind, split: Split) -> Vec<PathBuf> {
    match (kind, split) {
        (Kind::Cifar10, Split::Train) => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .filter(|p| p.exists())
            .collect(),
        (Kind::Cifar10, Split::Test) => vec![dir.join("test_batch.bin")],
        (Kind::Cifar100, Split::Train) => vec![dir.join("train.bin")],
        (Kind::Cifar100, Split::Test) => vec![dir.join("test.bin")],
    }
}

/// Loads one split of the CIFAR dataset in `dir`.
pub fn load(dir: &Path, kind: Kind, split: Split, pixels: Pixels) -> Result<Dataset> {
    let (label_bytes, classes) = match kind {
        Kind::Cifar10 => (1, 10),
        Kind::Cifar100 => (2, 100),
    };
    let record = label_bytes + PIXELS;
    let paths = files(dir, kind, split);
    if paths.is_empty() {
        return Err(Error::file(dir, "no CIFAR batch files for this split"));
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let bytes = read_file(&path)?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(Error::file(
                &path,
                format!(
                    "{} bytes is not a whole number of {record}-byte records: the record at byte \
                     {} is incomplete (truncated file?)",
                    bytes.len(),
                    bytes.len() / record * record
                ),
            ));
        }
        for (i, r) in bytes.chunks_exact(record).enumerate() {
            let label = r[label_bytes - 1];
            if label as usize >= classes {
                return Err(Error::file(
                    &path,
                    format!(
                        "record {i} (byte {}): label {label} is not below {classes}",
                        i * record
                    ),
                ));
            }
            labels.push(label as i32);
            let chw = &r[label_bytes..];
            let mut hwc = vec![0u8; PIXELS];
            for c in 0..3 {
                for p in 0..1024 {
                    hwc[p * 3 + c] = chw[c * 1024 + p];
                }
            }
            images.extend(pixels.of_bytes(&hwc));
        }
    }
    Ok(Dataset {
        sample_shape: vec![32, 32, 3],
        images,
        labels,
        classes,
    })
}
