//! Dense row-major arrays of the element types the interpreter computes with.

pub use crate::tflite::model::Data;
use crate::tflite::model::ElemType;

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
