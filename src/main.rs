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
    /// Export an export-ready .qir model to an int8 .tflite file.
    Export(cli::export::ExportArgs),
    /// Show a .tflite model's operators, tensors and quantization.
    Inspect(cli::inspect::InspectArgs),
    /// Run .npy inputs through a .tflite model with qatc's int8 interpreter.
    Run(cli::run::RunArgs),
    /// Accuracy of a .tflite classifier on the MNIST test set (int8 interpreter).
    Eval(cli::eval::EvalArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Dump(a) => cli::dump::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Eval(a) => cli::eval::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
