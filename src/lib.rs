//! qatc: quantization-aware training compiler.
//!
//! A float model (built with [`ir::builder`], written as `.qir`, or imported from `.tflite`)
//! is lowered to a petgraph IR; egg rewrites insert and fuse fake-quant nodes and fold
//! BatchNorm; a Cranelift JIT compiles the whole training step; codegen writes a per-axis
//! int8 TFLite file that LiteRT runs bit-exactly like qatc's own integer interpreter.

#![warn(missing_docs)]

pub mod analyze;
pub mod autodiff;
/// The `qatc` command line (the binary's commands; not a library interface).
#[doc(hidden)]
pub mod cli;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod error;
pub mod exec;
pub mod export;
pub mod import;
pub mod int8;
pub mod ir;
pub mod jit;
pub mod models;
pub mod pass;
pub mod quant;
mod rewrite;
pub mod tflite;
pub mod train;
pub mod workflow;

pub use error::{Error, Result};

/// The README's code blocks run as doctests, so the quickstart never goes stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
