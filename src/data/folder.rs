//! An image folder as `keras.utils.image_dataset_from_directory` reads it: one subfolder per
//! class (class index = position of its name in sorted order), PNG or JPEG files inside.
//! `train/` and `test/` subfolders, if present, are the splits; otherwise a seeded fifth of
//! each class is the test split. Images are resized (bilinear) to `size` when one is given,
//! and must all have the first image's size otherwise; grayscale stays one channel if every
//! image is grayscale, else all are read as RGB.

use super::dataset::{Dataset, Pixels, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The most pixels one image may declare (width × height: 16 Mpixel, 4096 × 4096), checked
/// before decoding. Training images are resized to a few hundred pixels a side; a larger
/// declaration is usually a decompression bomb (a 406-byte JPEG declaring 1040 × 62991
/// took 18 s to decode in the fuzzer, and over 6 GB and a minute in an optimized build).
const MAX_PIXELS: u64 = 1 << 24;

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

/// Whether `dir` looks like an image folder (class subfolders holding images).
pub fn detect(dir: &Path) -> bool {
    let root = if dir.join("train").is_dir() {
        dir.join("train")
    } else {
        dir.to_path_buf()
    };
    subdirs(&root).is_ok_and(|classes| {
        classes.iter().any(|c| {
            std::fs::read_dir(c)
                .is_ok_and(|mut it| it.any(|e| e.is_ok_and(|e| is_image(&e.path()))))
        })
    })
}

/// `(file, class)` of every image under `root`'s class folders, sorted.
fn listing(root: &Path) -> Result<(Vec<(PathBuf, usize)>, usize)> {
    let classes = subdirs(root)?;
    let mut files = Vec::new();
    for (k, c) in classes.iter().enumerate() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(c)
            .map_err(|e| Error::io(c, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        f.sort();
        files.extend(f.into_iter().map(|p| (p, k)));
    }
    Ok((files, classes.len()))
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::file(path, format!("not a readable PNG/JPEG image: {e}")))?;
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(Error::file(
            path,
            format!(
                "{w}x{h} pixels: over the limit of {MAX_PIXELS} (4096x4096), refused before \
                 decoding; downscale the images first"
            ),
        ));
    }
    image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::file(path, format!("not a readable PNG/JPEG image: {e}")))
}

/// Loads one split of the image folder `dir`; `size` is `[h, w]` to resize to.
pub fn load(
    dir: &Path,
    split: Split,
    pixels: Pixels,
    size: Option<[usize; 2]>,
    seed: u64,
) -> Result<Dataset> {
    let (files, classes) = if dir.join("train").is_dir() && dir.join("test").is_dir() {
        listing(&dir.join(match split {
            Split::Train => "train",
            Split::Test => "test",
        }))?
    } else {
        let (all, classes) = listing(dir)?;
        // a seeded fifth of the files, chosen by a hash of (seed, name): stable and split-
        // independent
        let test = |p: &Path| {
            let name = p.to_string_lossy();
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
            for b in name.bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
            h.is_multiple_of(5)
        };
        let keep = |p: &Path| test(p) == (split == Split::Test);
        (all.into_iter().filter(|(p, _)| keep(p)).collect(), classes)
    };
    if files.is_empty() {
        return Err(Error::file(
            dir,
            "no PNG or JPEG images in the class folders for this split",
        ));
    }
    let decoded: Vec<image::DynamicImage> = files
        .iter()
        .map(|(p, _)| decode(p))
        .collect::<Result<_>>()?;
    let gray = decoded.iter().all(|i| i.color().channel_count() <= 2);
    let channels = if gray { 1 } else { 3 };
    let [h, w] = size.unwrap_or([decoded[0].height() as usize, decoded[0].width() as usize]);
    let mut images = Vec::with_capacity(files.len() * h * w * channels);
    for (img, (path, _)) in decoded.into_iter().zip(&files) {
        let img = if (img.height() as usize, img.width() as usize) != (h, w) {
            if size.is_none() {
                return Err(Error::file(
                    path,
                    format!(
                        "{}x{} differs from the first image's {w}x{h}: give --image-size H,W",
                        img.width(),
                        img.height()
                    ),
                ));
            }
            img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
        } else {
            img
        };
        let bytes = if gray {
            img.to_luma8().into_raw()
        } else {
            img.to_rgb8().into_raw()
        };
        images.extend(pixels.of_bytes(&bytes));
    }
    Ok(Dataset {
        sample_shape: vec![h, w, channels],
        images,
        labels: files.iter().map(|(_, k)| *k as i32).collect(),
        classes,
    })
}
