//! The TFLite file format: the schema code generated from `tflite_schema/schema.fbs`, the
//! in-memory [`Model`] with its verified reader ([`read()`]) and writer ([`write()`]), the
//! one table of how model ops map to TFLite operators ([`mapping`]), and the operator
//! versions the converter writes ([`versions`]). [`crate::export`] and
//! [`crate::import::tflite`] translate between graphs and models; [`crate::int8`] runs them.

pub mod schema;

pub mod mapping;
pub mod model;
pub mod read;
pub mod versions;
pub mod write;

pub use model::Model;
pub use read::read;
pub use write::write;
