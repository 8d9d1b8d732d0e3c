//! `qatc inspect`: what a `.tflite` file holds — operators with versions, tensors with
//! shapes, types, quantization (per tensor or per axis) and sizes.

use crate::error::{read_file, Result};
use crate::tflite::model::{Model, Tensor};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Arguments of `qatc inspect`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  qatc inspect model.tflite")]
pub struct InspectArgs {
    /// The `.tflite` model.
    pub model: PathBuf,
}

fn quant_str(t: &Tensor) -> String {
    match &t.quant {
        None => "-".into(),
        Some(q) if !q.is_per_axis() => {
            format!("scale {:e} zero_point {}", q.scale[0], q.zero_point[0])
        }
        Some(q) => {
            let lo = q.scale.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = q.scale.iter().copied().fold(0.0f32, f32::max);
            let zps: Vec<i64> = {
                let mut z = q.zero_point.clone();
                z.dedup();
                z
            };
            let zp = if zps.len() == 1 {
                zps[0].to_string()
            } else {
                "mixed".into()
            };
            format!(
                "per-axis dim {} ({} scales {:e}..{:e}) zero_point {zp}",
                q.axis,
                q.scale.len(),
                lo,
                hi
            )
        }
    }
}

fn shape_str(t: &Tensor) -> String {
    let dims: Vec<String> = match &t.signature {
        Some(sig) => sig
            .iter()
            .map(|&d| if d < 0 { "?".into() } else { d.to_string() })
            .collect(),
        None => t.shape.iter().map(|d| d.to_string()).collect(),
    };
    format!("[{}]", dims.join(","))
}

/// The human-readable report `qatc inspect` prints for a file of `file_bytes` bytes.
pub fn report(m: &Model, file_bytes: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "TFLite model: {file_bytes} bytes, schema version 3");
    if !m.description.is_empty() {
        let _ = writeln!(s, "description: {}", m.description);
    }
    if let Some(v) = m.min_runtime_version() {
        let _ = writeln!(s, "min_runtime_version: {v}");
    }
    for sig in &m.signatures {
        let names = |v: &[(String, usize)]| -> String {
            v.iter()
                .map(|(n, t)| format!("{n}=#{t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "signature {:?}: inputs {} -> outputs {}",
            sig.key,
            names(&sig.inputs),
            names(&sig.outputs)
        );
    }
    let list = |v: &[usize]| {
        v.iter()
            .map(|t| format!("#{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "inputs: {}   outputs: {}",
        list(&m.inputs),
        list(&m.outputs)
    );

    let _ = writeln!(s, "\noperators ({}):", m.operators.len());
    for (k, op) in m.operators.iter().enumerate() {
        let ins: Vec<String> = op
            .inputs
            .iter()
            .map(|t| t.map_or("-".into(), |t| format!("#{t}")))
            .collect();
        let _ = writeln!(
            s,
            "  {k:>3}  {:<24} v{:<2} ({}) -> {}",
            op.name(),
            op.version,
            ins.join(", "),
            list(&op.outputs)
        );
    }

    let _ = writeln!(s, "\ntensors ({}):", m.tensors.len());
    let mut const_bytes = 0;
    for (i, t) in m.tensors.iter().enumerate() {
        let buffer_bytes = t.data.as_ref().map_or(0, Vec::len);
        const_bytes += buffer_bytes;
        let kind = if buffer_bytes > 0 {
            format!("const {buffer_bytes} B")
        } else {
            let bytes = t.dtype.buffer_len(t.numel());
            bytes.map_or("activation".into(), |b| format!("activation {b} B"))
        };
        let _ = writeln!(
            s,
            "  #{i:<4} {:<8} {:<18} {:<20} {}  {}",
            t.dtype.name(),
            shape_str(t),
            kind,
            quant_str(t),
            t.name
        );
    }
    let _ = writeln!(s, "\nconstant data: {const_bytes} bytes");
    s
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let bytes = read_file(&args.model)?;
    let m = crate::tflite::read(&bytes)
        .map_err(|e| crate::error::Error::file(&args.model, e.to_string()))?;
    super::say(&report(&m, bytes.len()))?;
    Ok(())
}
