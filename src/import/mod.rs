//! Frontends: model files to qatc graphs and their parameters.

pub mod tflite;
