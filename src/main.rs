//! The `qatc` binary: parses the command line and reports errors without panicking.

use clap::{Parser, Subcommand};
use qatc::cli;

#[derive(Parser)]
#[command(
    name = "qatc",
    version,
    about = "Quantization-aware training compiler: train, quantize and export int8 TFLite models",
    after_help = "Without a command, qatc runs the main job (`qatc train` with its defaults: \
                  mbv2_tiny on MNIST, float training, QAT, int8 .tflite and a report in out/).\n\n\
                  Examples:\n  qatc                              # the main job\n  \
                  qatc train --model mnist_cnn --out out/cnn\n  \
                  qatc dump mbv2_tiny --pipeline default_8bit --print-after-all\n  \
                  qatc eval out/mbv2_tiny_int8.tflite"
)]
struct Cli {
    /// Without a subcommand, qatc runs the main job: `qatc train` with its defaults.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: float training, QAT fine-tuning, int8 TFLite export and a report.
    Train(cli::train::TrainArgs),
    /// Post-training quantization: calibrate a trained float model, export and evaluate int8.
    Ptq(cli::ptq::PtqArgs),
    /// Per-layer quantization sensitivity: SQNR and accuracy drop per layer, CSV and SVG.
    Analyze(cli::analyze::AnalyzeArgs),
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
    /// Measure JIT QAT training throughput (samples/s) and train-step compile time.
    Bench(cli::bench::BenchArgs),
}

fn main() {
    // A write past the file-size limit (`ulimit -f`) then fails with EFBIG, an error that
    // names the file and lets the temporary files be removed, instead of SIGXFSZ killing
    // the process mid-write.
    #[cfg(unix)]
    // SAFETY: sets a signal's disposition to "ignore" before any thread starts; no handler
    // code runs.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    let alone = |name: &str| cli::ranks::alone(name);
    let result = match &cli.command {
        None => cli::train::run(&cli::train::TrainArgs::default()),
        Some(Command::Train(a)) => cli::train::run(a),
        Some(Command::Ptq(a)) => alone("ptq").and_then(|()| cli::ptq::run(a)),
        Some(Command::Analyze(a)) => alone("analyze").and_then(|()| cli::analyze::run(a)),
        Some(Command::Dump(a)) => alone("dump").and_then(|()| cli::dump::run(a)),
        Some(Command::Export(a)) => alone("export").and_then(|()| cli::export::run(a)),
        Some(Command::Inspect(a)) => alone("inspect").and_then(|()| cli::inspect::run(a)),
        Some(Command::Run(a)) => alone("run").and_then(|()| cli::run::run(a)),
        Some(Command::Eval(a)) => alone("eval").and_then(|()| cli::eval::run(a)),
        Some(Command::Bench(a)) => cli::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
