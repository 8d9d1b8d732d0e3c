//! The TFLite file format: the schema code generated from `tflite_schema/schema.fbs`, the
//! in-memory [`Model`] with its verified reader ([`read()`]) and writer ([`write()`]), the
//! one table of how model ops map to TFLite operators ([`mapping`]), and the operator
//! versions the converter writes ([`versions`]). [`crate::export`] and
//! [`crate::import::tflite`] translate between graphs and models; [`crate::int8`] runs them.

/// The code `flatc` generates from `tflite_schema/schema.fbs` (see its README). Included
/// rather than declared as a module file so that `cargo fmt` leaves the committed
/// generator output byte-identical.
#[allow(
    clippy::all,
    clippy::pedantic,
    dead_code,
    deprecated,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unsafe_op_in_unsafe_fn,
    unused_imports,
    mismatched_lifetime_syntaxes
)]
mod generated {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tflite_schema/schema_generated.rs"
    ));
}

pub use generated::tflite as schema;

pub mod mapping;
pub mod model;
pub mod read;
pub mod versions;
pub mod write;

pub use model::Model;
pub use read::read;
pub use write::write;
