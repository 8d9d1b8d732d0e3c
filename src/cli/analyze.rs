//! `qatc analyze`: per-layer quantization sensitivity of a model ([`crate::analyze`]): the
//! SQNR of every layer's weights and activations against their fake-quant and int8
//! counterparts, and the test accuracy with only that layer quantized; a sorted table, and
//! `sensitivity.csv`, `.svg`, `.json` in the output directory.

use super::ptq::PtqArgs;
use super::train::job_from_args;
use crate::error::Result;
use crate::workflow;

/// Arguments of `qatc analyze`: those of `qatc ptq` (a float model is quantized and
/// calibrated as `qatc ptq` does; a QAT `.qir` is analyzed with its trained ranges).
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  qatc analyze --model out/mbv2_tiny_qat.qir          # a QAT result, its own ranges\n  qatc analyze --model model.keras --calibration-samples 256\n  qatc analyze --model out/mbv2_tiny_float.qir --scheme nbit:4,8"
)]
pub struct AnalyzeArgs {
    /// The model and the settings, as for `qatc ptq`.
    #[command(flatten)]
    pub common: PtqArgs,
}

/// Runs `qatc analyze`.
pub fn run(args: &AnalyzeArgs) -> Result<()> {
    if args.common.mixed_precision.is_some() {
        return Err(crate::Error::Usage(
            "--mixed-precision chooses widths in `qatc ptq` and `qatc train`; `qatc analyze` \
             measures a model as it is quantized (give --override for a mixed one)"
                .into(),
        ));
    }
    let job = job_from_args(&args.common.train_args("out/analyze"))?;
    let analysis = workflow::analyze(&job)?;
    super::say(&analysis.table())?;
    super::say(&format!(
        "  files: {}\n",
        job.out.join("sensitivity.{csv,svg,json}").display()
    ))?;
    Ok(())
}
