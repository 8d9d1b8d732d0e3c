//! The IR: a petgraph graph of ops ([`op`]) with static tensor types ([`types`]), weights in
//! a [`ParamStore`], `.qir` text ([`text`]), a verifier, a reference interpreter and builders.

pub mod attrs;
pub mod builder;
pub mod dot;
pub mod fake_quant;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod op;
pub mod params;
pub mod text;
pub mod types;
pub mod verify;

pub use graph::{Graph, Node, NodeId};
pub use op::{Activation, Op, OpKind};
pub use params::{ParamStore, Tensor};
pub use types::{DType, TensorType};
