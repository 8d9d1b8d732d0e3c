//! The `qatc` binary: parses the command line and reports errors without panicking.

use clap::{Parser, Subcommand};
use qatc::cli;

#[derive(Parser)]
#[command(
    name = "qatc",
    version,
    about = "Quantization-aware training compiler: train, quantize and export int8 TFLite models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's verified canonical IR (.qir).
    Dump(cli::dump::DumpArgs),
    /// Measure JIT training throughput (samples/s) and compile time.
    Bench(cli::bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Dump(a) => cli::dump::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
