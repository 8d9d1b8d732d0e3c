//! `qatc run`: runs a batch through qatc's int8 interpreter, `.npy` in and out.

use crate::error::{read_file, Error, Result};
use crate::int8::{adapt_input, npy, Interpreter};
use std::path::PathBuf;

/// Arguments of `qatc run`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  qatc run model.tflite --input x.npy --output y.npy\n\n\
Give --input once per model input and --output once per model output, in order. The first \
dimension of each input is the batch. A float32 array fed to an int8 input is quantized with \
that input's scale and zero point; outputs are written with the model's output types."
)]
pub struct RunArgs {
    /// The `.tflite` model.
    pub model: PathBuf,
    /// Input arrays (`.npy`), one per model input.
    #[arg(long = "input", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the outputs (`.npy`), one per model output.
    #[arg(long = "output", required = true)]
    pub outputs: Vec<PathBuf>,
    /// Requantize FULLY_CONNECTED in fixed point, like LiteRT's optimized kernels and
    /// older reference kernels (default: double precision, like LiteRT's reference kernels).
    #[arg(long)]
    pub fixed_point_fc: bool,
    /// Run the plain reference loops instead of the fast kernels (same results, slower).
    #[arg(long)]
    pub reference_kernels: bool,
}

/// The interpreter options the flags select.
pub fn interpreter_options(fixed_point_fc: bool, reference_kernels: bool) -> crate::int8::Options {
    crate::int8::Options {
        fc_requant: if fixed_point_fc {
            crate::int8::FcRequant::FixedPoint
        } else {
            crate::int8::FcRequant::Double
        },
        kernels: if reference_kernels {
            crate::int8::Kernels::Reference
        } else {
            crate::int8::Kernels::Fast
        },
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let bytes = read_file(&args.model)?;
    let it = Interpreter::with_options(
        &bytes,
        interpreter_options(args.fixed_point_fc, args.reference_kernels),
    )
    .map_err(|e| Error::file(&args.model, e.to_string()))?;
    let want_in = it.inputs();
    let want_out = it.outputs();
    if args.inputs.len() != want_in.len() || args.outputs.len() != want_out.len() {
        return Err(Error::Usage(format!(
            "the model has {} input(s) and {} output(s); give --input and --output that many times",
            want_in.len(),
            want_out.len()
        )));
    }
    let mut inputs = Vec::new();
    for (path, info) in args.inputs.iter().zip(&want_in) {
        let a = npy::read(path)?;
        if let Some(i) = a
            .as_f32()
            .and_then(|v| v.iter().position(|x| !x.is_finite()))
        {
            let v = a.as_f32().map_or(0.0, |d| d[i]);
            return Err(Error::file(
                path,
                format!("element {i} (flat index) is {v}: inputs must be finite numbers"),
            ));
        }
        inputs.push(adapt_input(a, info)?);
    }
    let outputs = it.run(&inputs)?;
    for (path, a) in args.outputs.iter().zip(&outputs) {
        npy::write(path, a)?;
        super::say(&format!(
            "wrote {} ({} {:?})\n",
            path.display(),
            a.elem_type().name(),
            a.shape
        ))?;
    }
    Ok(())
}
