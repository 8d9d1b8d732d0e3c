//! The code `flatc` generates from `tflite_schema/schema.fbs` (see its README): the
//! flatbuffer tables, enums and verifier the reader and writer use.

/// Included rather than declared as a module file so that `cargo fmt` leaves the committed
/// generator output byte-identical.
#[allow(
    missing_docs,
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

pub use generated::tflite::*;
