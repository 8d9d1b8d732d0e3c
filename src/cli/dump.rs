//! `qatc dump`: prints a model's verified canonical IR, optionally as Graphviz DOT.

use crate::error::{write_atomic, Error, Result};
use crate::ir::{dot, text, verify};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `qatc dump`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  qatc dump examples/mbv2_tiny.qir --dot mbv2_tiny.dot")]
pub struct DumpArgs {
    /// A `.qir` file or a reference model name (mnist_cnn, mbv2_tiny).
    pub model: String,
    /// Also write the graph as Graphviz DOT to this file.
    #[arg(long)]
    pub dot: Option<PathBuf>,
}

pub fn run(args: &DumpArgs) -> Result<()> {
    let model = super::load_model(&args.model, 0)?;
    verify::verify(&model.graph)?;
    let ir = text::print(&model.graph);
    // the DOT file first: a failure leaves neither a file nor a printed model behind
    if let Some(path) = &args.dot {
        write_atomic(path, dot::to_dot(&model.graph).as_bytes())?;
    }
    // not print!: a closed pipe (`qatc dump m.qir | head`) is an error, not a panic
    let mut out = std::io::stdout().lock();
    out.write_all(ir.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("<stdout>", e))
}
