//! NumPy `.npz` archives as `keras.datasets` caches them: `x_train`, `y_train`, `x_test`,
//! `y_test`. Images `(n, h, w)` (one channel) or `(n, h, w, c)`, unsigned bytes or floats;
//! labels of any integer type, `(n,)` or `(n, 1)`. The zip is read with `zip`, each array
//! with `npyz`.

use super::dataset::{Dataset, Pixels, Split};
use crate::error::{read_file, Error, Result};
use std::io::Read;
use std::path::Path;

/// The most bytes one array may decompress to (a zip bomb is refused, not unpacked).
const MAX_BYTES: u64 = 1 << 31;

fn member(
    zip: &mut zip::ZipArchive<std::io::Cursor<Vec<u8>>>,
    name: &str,
    path: &Path,
) -> Result<Vec<u8>> {
    let file = format!("{name}.npy");
    let f = zip.by_name(&file).map_err(|_| {
        Error::file(
            path,
            format!("the archive has no `{file}` (x_train, y_train, x_test, y_test expected)"),
        )
    })?;
    if f.size() > MAX_BYTES {
        return Err(Error::file(
            path,
            format!("`{file}` declares {} bytes: refused", f.size()),
        ));
    }
    let mut out = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::file(path, format!("cannot read `{file}`: {e}")))?;
    Ok(out)
}

/// Checks a `.npy` header before `npyz` parses it: numpy writes a flat dict literal
/// (`{'descr': …, 'fortran_order': …, 'shape': (…), }`), so brackets nest at most twice.
/// `npyz`'s literal parser takes exponential time on deeply nested brackets (found by
/// fuzzing: 100 `{` took over 30 s), so anything deeper is refused here.
pub fn check_npy_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let (len_at, len_size) = match bytes.get(6) {
        Some(1) => (8, 2),
        Some(2 | 3) => (8, 4),
        _ => return Ok(()), // not a .npy header: npyz names the fault
    };
    let Some(raw) = bytes.get(len_at..len_at + len_size) else {
        return Ok(());
    };
    let len = raw.iter().rev().fold(0usize, |n, &b| (n << 8) | b as usize);
    let start = len_at + len_size;
    let header = &bytes[start.min(bytes.len())..(start + len).min(bytes.len())];
    // quotes are not tracked: a header can make a checker and npyz disagree about where a
    // string ends (found by fuzzing: braces hidden in a "string" took over a minute), and
    // numpy never writes brackets inside its strings
    let mut depth = 0usize;
    for &c in header {
        match c {
            b'{' | b'(' | b'[' => {
                depth += 1;
                if depth > 3 {
                    return Err(
                        "the .npy header nests brackets deeper than numpy writes them \
                                (a dict of a shape tuple)"
                            .into(),
                    );
                }
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// One array: its shape and values as f64 (every supported dtype converts exactly), and
/// whether its elements are unsigned bytes.
fn array(bytes: &[u8], what: &str, path: &Path) -> Result<(Vec<usize>, Vec<f64>, bool)> {
    let bad = |m: String| Error::file(path, format!("`{what}`: {m}"));
    check_npy_header(bytes).map_err(bad)?;
    let npy = npyz::NpyFile::new(bytes).map_err(|e| bad(format!("not a valid .npy array: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad("Fortran-ordered arrays are not supported".into()));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n as u64 <= MAX_BYTES)
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    let descr = npy.dtype().descr();
    let e = |e: std::io::Error| bad(format!("cannot read the data (truncated?): {e}"));
    macro_rules! read {
        ($t:ty) => {
            npy.into_vec::<$t>()
                .map_err(e)?
                .into_iter()
                .map(|v| v as f64)
                .collect::<Vec<f64>>()
        };
    }
    let (values, bytes_type) = match descr.trim_matches('\'') {
        "|u1" => (read!(u8), true),
        "|i1" => (read!(i8), false),
        "<u2" => (read!(u16), false),
        "<i2" => (read!(i16), false),
        "<u4" => (read!(u32), false),
        "<i4" => (read!(i32), false),
        "<u8" => (read!(u64), false),
        "<i8" => (read!(i64), false),
        "<f4" => (read!(f32), false),
        "<f8" => (read!(f64), false),
        other => return Err(bad(format!("dtype {other} is not supported"))),
    };
    if values.len() != n {
        return Err(bad(format!("{} values for shape {shape:?}", values.len())));
    }
    Ok((shape, values, bytes_type))
}

/// Loads one split of an `.npz` file.
pub fn load(path: &Path, split: Split, pixels: Pixels) -> Result<Dataset> {
    let bytes = read_file(path)?;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::file(path, format!("not a readable .npz (zip) archive: {e}")))?;
    let (x, y) = match split {
        Split::Train => ("x_train", "y_train"),
        Split::Test => ("x_test", "y_test"),
    };
    let (xs, xv, x_bytes) = array(&member(&mut zip, x, path)?, x, path)?;
    let (ys, yv, _) = array(&member(&mut zip, y, path)?, y, path)?;
    let sample_shape = match xs.as_slice() {
        [_, h, w] => vec![*h, *w, 1],
        [_, h, w, c] => vec![*h, *w, *c],
        other => {
            return Err(Error::file(
                path,
                format!("`{x}` has shape {other:?}: expected (n, h, w) or (n, h, w, c)"),
            ))
        }
    };
    let n = xs[0];
    if !(ys == [n] || ys == [n, 1]) {
        return Err(Error::file(
            path,
            format!("`{y}` has shape {ys:?}, expected ({n},) for {n} images"),
        ));
    }
    let mut labels = Vec::with_capacity(n);
    for (i, &l) in yv.iter().enumerate() {
        if l.fract() != 0.0 || !(0.0..=i32::MAX as f64).contains(&l) {
            return Err(Error::file(
                path,
                format!("`{y}`[{i}] is {l}: labels are class indices 0, 1, 2, …"),
            ));
        }
        labels.push(l as i32);
    }
    if let Some(i) = xv.iter().position(|v| !v.is_finite()) {
        return Err(Error::file(
            path,
            format!("`{x}` element {i} is {}: images must be finite", xv[i]),
        ));
    }
    let images = if x_bytes {
        let raw: Vec<u8> = xv.iter().map(|&v| v as u8).collect();
        pixels.of_bytes(&raw)
    } else {
        xv.iter().map(|&v| v as f32).collect()
    };
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    Ok(Dataset {
        sample_shape,
        images,
        labels,
        classes,
    })
}
