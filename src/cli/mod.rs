//! The `qatc` command line: one module per subcommand, plus model loading shared by all.

pub mod bench;
pub mod dump;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod run;
pub mod train;

pub use crate::workflow::load_model;
