//! The `qatc` command line: one module per subcommand, plus model loading shared by all.

pub mod analyze;
pub mod bench;
pub mod dump;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod ptq;
pub mod ranks;
pub mod run;
pub mod train;

pub use crate::workflow::load_model;

/// Writes `text` to stdout. A closed pipe (`qatc inspect m.tflite | head`) ends the output
/// quietly instead of panicking as `print!` does; another write error is reported.
pub fn say(text: &str) -> crate::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::Error::io("<stdout>", e)),
    }
}
