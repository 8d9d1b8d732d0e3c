//! Runtime values of the reference interpreter, and what one op's evaluation sees.

use crate::ir::op::OpError;
use crate::ir::params::{ParamStore, Tensor};
use crate::ir::types::{DType, Shape, TensorType};

/// A runtime value: f32 tensors, or i32 tensors (class labels).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An f32 tensor: every model value, param and quantizer state.
    F32(Tensor),
    /// An i32 tensor: the `labels` input of a train-step graph.
    I32 {
        /// The static shape (`[batch]` for labels).
        shape: Shape,
        /// The elements, row-major; `shape`'s product of them.
        data: Vec<i32>,
    },
}

impl Value {
    /// The value's shape, whatever its element type.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32(t) => &t.shape,
            Value::I32 { shape, .. } => shape,
        }
    }

    /// The IR type of the value, to compare with the node's inferred type.
    pub fn ty(&self) -> TensorType {
        match self {
            Value::F32(t) => TensorType::f32(t.shape.clone()),
            Value::I32 { shape, .. } => TensorType::new(DType::I32, shape.clone()),
        }
    }

    /// The f32 tensor; `None` for an i32 value.
    pub fn f32(&self) -> Option<&Tensor> {
        match self {
            Value::F32(t) => Some(t),
            _ => None,
        }
    }

    /// The f32 tensor, by value; `None` for an i32 value.
    pub fn into_f32(self) -> Option<Tensor> {
        match self {
            Value::F32(t) => Some(t),
            _ => None,
        }
    }

    /// A `[n]` i32 value of class labels, for a train-step graph's `labels` input.
    pub fn labels(labels: &[i32]) -> Value {
        Value::I32 {
            shape: vec![labels.len()],
            data: labels.to_vec(),
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Value {
        Value::F32(t)
    }
}

/// What a run produces: named outputs, and new values for updated params.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// `(output name, value)` per graph output, in the graph's output order.
    pub outputs: Vec<(String, Value)>,
    /// `(param name, new value)` per update of a train-step graph, in the graph's update order;
    /// the caller writes them back into its [`ParamStore`].
    pub updates: Vec<(String, Tensor)>,
}

impl RunResult {
    /// The value of the output named `name`, if the graph has one.
    pub fn output(&self, name: &str) -> Option<&Value> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// What an op's evaluation sees: its operand values, the params (quantizer states) and the
/// inferred output shape.
pub(super) struct Cx<'a> {
    pub(super) args: &'a [&'a Value],
    pub(super) params: &'a ParamStore,
    pub(super) out_shape: Shape,
}

impl Cx<'_> {
    /// Operand `i` as an f32 tensor (`infer_type` checked the dtypes).
    pub(super) fn f(&self, i: usize) -> &Tensor {
        self.args[i]
            .f32()
            .expect("infer_type checks that operands are f32")
    }

    /// The output value from its elements.
    pub(super) fn t(&self, data: Vec<f32>) -> std::result::Result<Value, OpError> {
        Ok(Value::F32(Tensor::new(self.out_shape.clone(), data)))
    }
}
