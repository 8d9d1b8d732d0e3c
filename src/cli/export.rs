//! `qatc export`: an export-ready `.qir` model (and its `.safetensors`) to an int8 `.tflite`.

use crate::error::{write_atomic, Error, Result};
use crate::export::{export, ExportOptions};
use crate::ir::graph::Graph;
use crate::ir::op::Op;
use crate::ir::op::{ModelOp, PassOp};
use crate::ir::text;
use crate::pass::{run_pipeline, PipelineOptions};
use std::path::PathBuf;

/// Arguments of `qatc export`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  qatc export model.qir -o model.tflite\n  qatc export model.qir --int8-io\n\n\
The model is a QAT graph (the `default_8bit` pipeline's output, with its observer ranges in \
model.safetensors), which goes through the `export` pipeline (BatchNorm folded, activations \
fused) first, or an already export-ready graph."
)]
pub struct ExportArgs {
    /// The export-ready model (`.qir`; its weights are read from the `.safetensors` beside it).
    pub model: PathBuf,
    /// Where to write the `.tflite` (default: the model path with `.tflite`).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// int8 inputs and outputs (no QUANTIZE / DEQUANTIZE at the edges).
    #[arg(long)]
    pub int8_io: bool,
}

/// Why a graph is not export-ready, if it is not.
fn not_export_ready(g: &Graph) -> Option<String> {
    let mut fake_quants = 0;
    for id in g.node_ids() {
        match &g.node(id).op {
            Op::Model(ModelOp::FakeQuant(q)) if q.range.in_operands() => {
                return Some(
                    "it is a train-step or eval lowering (fake_quant range=operands)".into(),
                )
            }
            Op::Model(ModelOp::FakeQuant(_)) => fake_quants += 1,
            Op::Model(ModelOp::BatchNorm { .. })
            | Op::Model(ModelOp::Dropout { .. })
            | Op::Pass(PassOp::Quant(_)) => {
                return Some(format!(
                    "node `{}` ({}) is still in it, yet it is not a QAT graph the `export` \
                     pipeline takes",
                    g.node(id).name,
                    g.node(id).op.name()
                ))
            }
            _ => {}
        }
    }
    (fake_quants == 0).then(|| {
        "it has no fake_quant nodes: a float model must be quantized (the `default_8bit` and \
         `export` pipelines) before int8 export"
            .into()
    })
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let (mut graph, mut params) = text::load_model(&args.model)?;
    if crate::pass::forms::check_qat_graph(&graph, &params).is_ok() {
        // a QAT graph (graph form 2): fold BatchNorm and fuse activations first
        super::say(&format!(
            "{}: a QAT graph; running the `export` pipeline\n",
            args.model.display()
        ))?;
        graph = run_pipeline(graph, &mut params, "export", &PipelineOptions::eval())?;
    } else if let Some(why) = not_export_ready(&graph) {
        return Err(Error::Usage(format!(
            "{}: cannot export: {why}",
            args.model.display()
        )));
    }
    let opts = ExportOptions {
        int8_io: args.int8_io,
        ..Default::default()
    };
    let bytes = export(&graph, &params, &opts)?;
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.model.with_extension("tflite"));
    write_atomic(&out, &bytes)?;
    let info = crate::tflite::read(&bytes)?;
    super::say(&format!(
        "wrote {} ({} bytes, {} operators, min runtime {})\n",
        out.display(),
        bytes.len(),
        info.operators.len(),
        info.min_runtime_version().unwrap_or_default()
    ))?;
    Ok(())
}
