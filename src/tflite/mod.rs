//! TFLite flatbuffers: the schema code generated from `tflite_schema/schema.fbs`, a verified
//! reader ([`model`]), export of export-ready graphs to int8 models ([`export`]), import of
//! float (and qatc's own int8) models ([`import`]), and the one table of how each op maps
//! to a TFLite builtin ([`ops`]).

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

pub mod export;
pub mod import;
pub mod model;
pub mod ops;
pub mod quantize;
pub mod write;
