//! Tensor types: element type and static NHWC shape.
//!
//! Every IR value has one static [`TensorType`]. The first dimension of a graph input is its
//! batch; [`crate::ir::Graph::rebatch`] re-infers every shape for another batch size, so a
//! model written for batch 1 serves training at batch 256 unchanged.

use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit float: activations, weights and quantizer states.
    F32,
    /// Signed 8-bit integer: a `.qir` type no IR op computes with (int8 inference runs on
    /// TFLite models, in [`crate::int8`]).
    I8,
    /// 32-bit signed integer: the class labels of train-step graphs.
    I32,
}

impl DType {
    /// The `.qir` spelling: `f32`, `i8`, `i32`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I8 => "i8",
            DType::I32 => "i32",
        }
    }

    /// Parses the `.qir` spelling; `None` for anything else.
    pub fn from_name(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "i8" => Some(DType::I8),
            "i32" => Some(DType::I32),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I8 => 1,
        }
    }
}

/// A static shape, outermost dimension first (NHWC for images).
pub type Shape = Vec<usize>;

/// Number of elements of a shape (1 for a scalar).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Formats a shape as `[1,28,28,1]`.
pub fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(","))
}

/// The type of one IR value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorType {
    /// The element type (f32 for every model value).
    pub dtype: DType,
    /// The static shape, outermost first (NHWC for images, `[]` for a scalar).
    pub shape: Shape,
}

impl TensorType {
    /// A type of `dtype` elements with shape `shape`.
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> TensorType {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    /// An f32 tensor of shape `shape` (what every model value is).
    pub fn f32(shape: impl Into<Shape>) -> TensorType {
        TensorType::new(DType::F32, shape)
    }

    /// A rank-0 type (one element), e.g. a quantizer's `min` state.
    pub fn scalar(dtype: DType) -> TensorType {
        TensorType::new(dtype, Vec::new())
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Bytes of a dense buffer of this type.
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype.size_bytes()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype.name(), shape_str(&self.shape))
    }
}

/// Row-major strides of a shape, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Numpy-style broadcast of two shapes (trailing dimensions aligned), or `None`.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Shape> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_aligns_trailing_dimensions() {
        assert_eq!(broadcast_shapes(&[2, 3, 4], &[4]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[2, 3], &[4]), None);
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn types_print_like_qir() {
        assert_eq!(
            TensorType::f32(vec![1, 28, 28, 1]).to_string(),
            "f32[1,28,28,1]"
        );
        assert_eq!(TensorType::scalar(DType::I32).to_string(), "i32[]");
    }
}
