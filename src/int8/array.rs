//! Dense row-major arrays of the element types the interpreter computes with.

pub use crate::tflite::model::Data;
use crate::tflite::model::ElemType;

/// A tensor value: shape and elements (`shape.iter().product() == data.len()`).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The dimensions, outermost first (NHWC for images), as the TFLite tensor declares them.
    pub shape: Vec<usize>,
    /// The elements in row-major order, typed; `numel(shape)` of them.
    pub data: Data,
}

impl Array {
    /// An array from shape and data; `None` if the sizes disagree.
    pub fn new(shape: Vec<usize>, data: Data) -> Option<Array> {
        (shape.iter().product::<usize>() == data.len()).then_some(Array { shape, data })
    }

    /// A `FLOAT32` array; `None` if `data` does not fill `shape`.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Option<Array> {
        Array::new(shape, Data::F32(data))
    }

    /// An `INT8` array (quantized values); `None` if `data` does not fill `shape`.
    pub fn i8(shape: Vec<usize>, data: Vec<i8>) -> Option<Array> {
        Array::new(shape, Data::I8(data))
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The TFLite element type of the data.
    pub fn elem_type(&self) -> ElemType {
        self.data.elem_type()
    }

    /// The elements if the array is `INT8`, else `None`.
    pub fn as_i8(&self) -> Option<&[i8]> {
        match &self.data {
            Data::I8(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if the array is `FLOAT32`, else `None`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if the array is `INT32`, else `None`.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            Data::I32(v) => Some(v),
            _ => None,
        }
    }
}
