//! qatc's fuzz targets as functions (see `targets.rs`); each file of `fuzz_targets/` calls
//! one of them.

mod targets;
pub use targets::*;
