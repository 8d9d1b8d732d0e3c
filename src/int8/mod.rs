//! The integer reference interpreter: runs int8 `.tflite` models bit-exactly like LiteRT's
//! reference kernels (`OpResolverType.BUILTIN_REF`).
//!
//! Loading ([`Interpreter::new`]) reads and verifies the flatbuffer ([`crate::tflite::model`]),
//! then *prepares* every operator the way LiteRT's `Prepare` does: it checks types,
//! quantization and constant operands, computes the fixed-point multipliers and clamping
//! ranges, and infers every shape once from the declared input shapes. Running
//! ([`Interpreter::run`]) evaluates the operators in order; shapes are recomputed from the
//! inputs actually fed, so models whose batch dimension is resizable run any batch.
//!
//! One file per kernel family; the fixed-point arithmetic they share is in `fixed.rs`.
//! Every kernel documents the LiteRT source it follows.

mod activation;
pub mod array;
mod binary;
pub mod classify;
mod context;
mod conv;
mod dot8;
mod fixed;
mod fully_connected;
mod interpreter;
pub mod npy;
mod pool;
mod quantize_ops;
mod reduce;
mod select;
mod shape;
#[cfg(test)]
mod tests;

pub use array::{Array, Data};
pub use classify::{accuracy, adapt_input, argmax_rows, predict, predict_on};

pub(crate) use context::activation_range;
pub use context::{FcRequant, KernelError, Kernels, Options};
pub use interpreter::Interpreter;
