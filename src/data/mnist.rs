//! MNIST in its original IDX format, gzip-compressed (`data/mnist/`, see `data/README.md`):
//! the embedded default dataset, read by [`super::idx`].

use super::dataset::Dataset;
pub use super::dataset::Split;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The MNIST directory shipped with qatc (`<crate>/data/mnist`).
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

fn files(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images.idx3-ubyte.gz", "train-labels.idx1-ubyte.gz"),
        Split::Test => ("t10k-images.idx3-ubyte.gz", "t10k-labels.idx1-ubyte.gz"),
    }
}

pub use super::idx::read_idx;

/// Loads one split from `dir`, pixels scaled to [0, 1].
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let (img_name, lbl_name) = files(split);
    let (img_path, lbl_path) = (dir.join(img_name), dir.join(lbl_name));
    for p in [&img_path, &lbl_path] {
        if !p.exists() {
            return Err(Error::file(
                p,
                "missing: the MNIST files belong in data/mnist/ (see data/README.md)",
            ));
        }
    }
    let (idims, pixels) = read_idx(&img_path, 0x0000_0803)?;
    let (ldims, labels) = read_idx(&lbl_path, 0x0000_0801)?;
    if idims.len() != 3 || ldims.len() != 1 || idims[0] != ldims[0] {
        return Err(Error::file(
            &img_path,
            format!("images {idims:?} and labels {ldims:?} do not match"),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l > 9) {
        return Err(Error::file(
            &lbl_path,
            format!("label {bad} is not a digit"),
        ));
    }
    Ok(Dataset {
        sample_shape: vec![idims[1], idims[2], 1],
        images: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
        labels: labels.iter().map(|&l| l as i32).collect(),
        classes: 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_loads() {
        let d = load(&default_dir(), Split::Test).unwrap();
        assert_eq!(d.len(), 10_000);
        assert_eq!(d.sample_shape, vec![28, 28, 1]);
        assert!(d.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
        // the canonical first test digit is a 7
        assert_eq!(d.labels[0], 7);
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let err = load(Path::new("/nonexistent"), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t10k-images") && err.contains("missing"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("qatc-mnist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t10k-images.idx3-ubyte.gz"), b"not gzip").unwrap();
        std::fs::write(dir.join("t10k-labels.idx1-ubyte.gz"), b"not gzip").unwrap();
        let err = load(&dir, Split::Test).unwrap_err().to_string();
        assert!(err.contains("t10k-images") && err.contains("IDX"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
