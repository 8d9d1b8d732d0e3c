//! Frontends: model files to qatc graphs and their parameters.

pub mod keras;
pub mod tflite;
