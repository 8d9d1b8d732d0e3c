//! Dense row-major arrays of the element types the interpreter computes with.

use crate::tflite::model::ElemType;

/// The elements of an [`Array`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn elem_type(&self) -> ElemType {
        match self {
            Data::F32(_) => ElemType::F32,
            Data::I8(_) => ElemType::I8,
            Data::I32(_) => ElemType::I32,
            Data::I64(_) => ElemType::I64,
        }
    }

    /// Integer elements widened to i64 (index tensors: shapes, axes, paddings).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I64(v) => Some(v.clone()),
            Data::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::F32(_) => None,
        }
    }
}

/// A tensor value: shape and elements (`shape.iter().product() == data.len()`).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Array {
    /// An array from shape and data; `None` if the sizes disagree.
    pub fn new(shape: Vec<usize>, data: Data) -> Option<Array> {
        (shape.iter().product::<usize>() == data.len()).then_some(Array { shape, data })
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Option<Array> {
        Array::new(shape, Data::F32(data))
    }

    pub fn i8(shape: Vec<usize>, data: Vec<i8>) -> Option<Array> {
        Array::new(shape, Data::I8(data))
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn elem_type(&self) -> ElemType {
        self.data.elem_type()
    }

    pub fn as_i8(&self) -> Option<&[i8]> {
        match &self.data {
            Data::I8(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            Data::I32(v) => Some(v),
            _ => None,
        }
    }
}
