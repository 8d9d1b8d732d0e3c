//! The CIFAR-10 and CIFAR-100 binary formats: records of label byte(s) then 3072 pixel bytes,
//! the 32×32 image channel after channel (CHW), stored as NHWC here.
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin` (1 label byte).
//! CIFAR-100: `train.bin`, `test.bin` (coarse then fine label; the fine one, 100 classes, is
//! used).
//!
//! Either as a directory of those files or as the `.tar.gz` archive they come in, read in
//! place. The official CIFAR-10 archive, [`CIFAR10_ARCHIVE`], is recognised by its name and
//! checked (size, then SHA-256) before use, so a truncated or altered download is an error
//! that says so instead of a model trained on part of the data.

use super::dataset::{Dataset, Pixels, Split};
use crate::error::{read_file, Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
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

/// The batch files of a split that `dir` holds, in order.
fn files(dir: &Path, kind: Kind, split: Split) -> Vec<PathBuf> {
    split_names(kind, split)
        .into_iter()
        .map(|name| dir.join(name))
        .filter(|p| p.exists())
        .collect()
}

/// A dataset archive as its authors publish it: where it comes from and what it must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Official {
    /// The file name the download has.
    pub name: &'static str,
    /// Where to download it.
    pub url: &'static str,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: &'static str,
}

/// The CIFAR-10 binary version from the dataset's page,
/// <https://www.cs.toronto.edu/~kriz/cifar.html> (whose MD5 is
/// `c32a1d4ab5d03f1284b67883e8d87530`).
pub const CIFAR10_ARCHIVE: Official = Official {
    name: "cifar-10-binary.tar.gz",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    bytes: 170_052_171,
    sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
};

/// Whether `path` names a gzip-compressed tar archive (`.tar.gz` or `.tgz`).
pub fn is_archive(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// The SHA-256 of a file, lowercase hex, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks a file named like an [`Official`] archive against its size and SHA-256; other
/// names (an archive a user packed) pass unchecked.
pub fn check_official(path: &Path) -> Result<()> {
    let official = CIFAR10_ARCHIVE;
    if path.file_name().and_then(|n| n.to_str()) != Some(official.name) {
        return Ok(());
    }
    let redownload = format!("download it again from {}", official.url);
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size != official.bytes {
        return Err(Error::file(
            path,
            format!(
                "{size} bytes, but the official {} is {} bytes (an interrupted download?): \
                 {redownload}",
                official.name, official.bytes
            ),
        ));
    }
    let sha = sha256_file(path)?;
    if sha != official.sha256 {
        return Err(Error::file(
            path,
            format!(
                "SHA-256 {sha}, but the official {} has {} (a corrupted or altered file): \
                 {redownload}",
                official.name, official.sha256
            ),
        ));
    }
    Ok(())
}

/// The member names a split reads, in order, once the kind is known.
fn split_names(kind: Kind, split: Split) -> Vec<String> {
    match (kind, split) {
        (Kind::Cifar10, Split::Train) => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        (Kind::Cifar10, Split::Test) => vec!["test_batch.bin".into()],
        (Kind::Cifar100, Split::Train) => vec!["train.bin".into()],
        (Kind::Cifar100, Split::Test) => vec!["test.bin".into()],
    }
}

/// Loads one split of a CIFAR-10 or CIFAR-100 `.tar.gz` archive (as downloaded, e.g.
/// `cifar-10-binary.tar.gz` with its `cifar-10-batches-bin/` folder), without unpacking it
/// to disk. The official CIFAR-10 archive is checked first ([`check_official`]).
pub fn load_archive(path: &Path, split: Split, pixels: Pixels) -> Result<Dataset> {
    check_official(path)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let not_tar = |e: std::io::Error| {
        Error::file(
            path,
            format!("not a readable gzip-compressed tar archive: {e}"),
        )
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let wanted: BTreeSet<String> = [Kind::Cifar10, Kind::Cifar100]
        .into_iter()
        .flat_map(|k| split_names(k, split))
        .collect();
    let mut seen = BTreeSet::new();
    let mut members = BTreeMap::new();
    for entry in archive.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(not_tar)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { continue };
        if wanted.contains(&name) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(not_tar)?;
            members.insert(name.clone(), bytes);
        }
        seen.insert(name);
    }
    // tar stops at its end-of-archive blocks; read the gzip stream to its end too, so a cut
    // or corrupted file fails its CRC check here instead of passing unnoticed
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(not_tar)?;
    let kind = if seen
        .iter()
        .any(|n| n.starts_with("data_batch_") || n == "test_batch.bin")
    {
        Kind::Cifar10
    } else if seen.contains("train.bin") || seen.contains("test.bin") {
        Kind::Cifar100
    } else {
        return Err(Error::file(
            path,
            "no CIFAR binary batches in this archive: expected cifar-10-batches-bin/ \
             (data_batch_1.bin … test_batch.bin) or cifar-100-binary/ (train.bin, test.bin), \
             as in the binary versions on https://www.cs.toronto.edu/~kriz/cifar.html",
        ));
    };
    let mut out = Records::new(kind);
    for name in split_names(kind, split) {
        if let Some(bytes) = members.get(&name) {
            out.push(&bytes[..], pixels)
                .map_err(|msg| Error::file(path, format!("member {name}: {msg}")))?;
        }
    }
    out.finish(path, split)
}

/// Loads one split of the CIFAR dataset in `dir`.
pub fn load(dir: &Path, kind: Kind, split: Split, pixels: Pixels) -> Result<Dataset> {
    let mut out = Records::new(kind);
    for path in files(dir, kind, split) {
        let bytes = read_file(&path)?;
        out.push(&bytes, pixels)
            .map_err(|msg| Error::file(&path, msg))?;
    }
    out.finish(dir, split)
}

/// Records decoded so far, from one or more batch files.
struct Records {
    kind: Kind,
    images: Vec<f32>,
    labels: Vec<i32>,
    files: usize,
}

impl Records {
    fn new(kind: Kind) -> Records {
        Records {
            kind,
            images: Vec::new(),
            labels: Vec::new(),
            files: 0,
        }
    }

    fn label_bytes_and_classes(&self) -> (usize, usize) {
        match self.kind {
            Kind::Cifar10 => (1, 10),
            Kind::Cifar100 => (2, 100),
        }
    }

    /// Decodes one batch file's records (label byte(s), then the CHW pixels) into NHWC.
    fn push(&mut self, bytes: &[u8], pixels: Pixels) -> std::result::Result<(), String> {
        let (label_bytes, classes) = self.label_bytes_and_classes();
        let record = label_bytes + PIXELS;
        if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
            return Err(format!(
                "{} bytes is not a whole number of {record}-byte records: the record at byte \
                 {} is incomplete (truncated file?)",
                bytes.len(),
                bytes.len() / record * record
            ));
        }
        for (i, r) in bytes.chunks_exact(record).enumerate() {
            let label = r[label_bytes - 1];
            if label as usize >= classes {
                return Err(format!(
                    "record {i} (byte {}): label {label} is not below {classes}",
                    i * record
                ));
            }
            self.labels.push(label as i32);
            let chw = &r[label_bytes..];
            let mut hwc = vec![0u8; PIXELS];
            for c in 0..3 {
                for p in 0..1024 {
                    hwc[p * 3 + c] = chw[c * 1024 + p];
                }
            }
            self.images.extend(pixels.of_bytes(&hwc));
        }
        self.files += 1;
        Ok(())
    }

    fn finish(self, source: &Path, split: Split) -> Result<Dataset> {
        if self.files == 0 {
            return Err(Error::file(
                source,
                format!("no CIFAR batch files for the {split:?} split"),
            ));
        }
        let (_, classes) = self.label_bytes_and_classes();
        Ok(Dataset {
            sample_shape: vec![32, 32, 3],
            images: self.images,
            labels: self.labels,
            classes,
        })
    }
}
