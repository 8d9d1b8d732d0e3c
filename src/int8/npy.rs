//! `.npy` files (numpy's array format, through the `npyz` crate) to and from [`Array`]s:
//! how `qatc run` and the LiteRT interop tests exchange tensors.

use super::array::{Array, Data};
use crate::error::{Error, Result};
use npyz::WriterBuilder;
use std::path::Path;

/// Parses `.npy` bytes: float32 (float64 is narrowed), int8, int32, int64 or bool, C order.
pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Array> {
    let bad = |msg: String| Error::file(origin, msg);
    crate::data::npz::check_npy_header(bytes).map_err(bad)?;
    let npy = npyz::NpyFile::new(bytes).map_err(|e| bad(format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(
            "Fortran-ordered arrays are not supported; save it C-ordered".into(),
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= crate::tflite::model::MAX_ELEMENTS)
        .ok_or_else(|| bad(format!("the array shape {shape:?} is too large")))?;
    let dtype = npy.dtype().descr();
    let read_err = |e: std::io::Error| bad(format!("cannot read the array data: {e}"));
    let data = match dtype.as_str() {
        "'<f4'" => Data::F32(npy.into_vec::<f32>().map_err(read_err)?),
        "'<f8'" => Data::F32(
            npy.into_vec::<f64>()
                .map_err(read_err)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        ),
        "'|i1'" => Data::I8(npy.into_vec::<i8>().map_err(read_err)?),
        "'<i4'" => Data::I32(npy.into_vec::<i32>().map_err(read_err)?),
        "'<i8'" => Data::I64(npy.into_vec::<i64>().map_err(read_err)?),
        "'|b1'" => Data::Bool(npy.into_vec::<bool>().map_err(read_err)?),
        other => {
            return Err(bad(format!(
                "dtype {other} is not supported (float32, float64, int8, int32, int64 or bool)"
            )))
        }
    };
    if data.len() != n {
        return Err(bad(format!(
            "the array holds {} values for shape {shape:?}",
            data.len()
        )));
    }
    Ok(Array { shape, data })
}

/// Reads a `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<Array> {
    let path = path.as_ref();
    from_bytes(&crate::error::read_file(path)?, path)
}

/// Serializes an array as `.npy` bytes.
pub fn to_bytes(a: &Array) -> Result<Vec<u8>> {
    let shape: Vec<u64> = a.shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::new();
    let err = |e: std::io::Error| Error::Usage(format!("cannot encode the array as .npy: {e}"));
    macro_rules! write_as {
        ($t:ty, $v:expr) => {{
            let mut w = npyz::WriteOptions::<$t>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()
                .map_err(err)?;
            w.extend($v.iter().copied()).map_err(err)?;
            w.finish().map_err(err)?;
        }};
    }
    match &a.data {
        Data::F32(v) => write_as!(f32, v),
        Data::I8(v) => write_as!(i8, v),
        Data::I32(v) => write_as!(i32, v),
        Data::I64(v) => write_as!(i64, v),
        Data::Bool(v) => write_as!(bool, v),
    }
    Ok(out)
}

/// Writes an array to a `.npy` file atomically.
pub fn write(path: impl AsRef<Path>, a: &Array) -> Result<()> {
    crate::error::write_atomic(path, &to_bytes(a)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_round_trip_through_npy() {
        for a in [
            Array::f32(vec![2, 3], vec![0.5, -1.0, 2.0, 3.5, 0.0, -0.25]).unwrap(),
            Array::i8(vec![4], vec![-128, 0, 1, 127]).unwrap(),
            Array::new(vec![], Data::I32(vec![7])).unwrap(),
        ] {
            let bytes = to_bytes(&a).unwrap();
            assert_eq!(from_bytes(&bytes, Path::new("a.npy")).unwrap(), a);
        }
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let err = from_bytes(b"\x93NUMPY garbage", Path::new("x.npy"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.npy"), "{err}");
    }
}
