//! The mapping table both ways: for the op of every golden case, `decode(encode(op))` gives
//! the op back (up to the forms TFLite has one spelling for). The file-level round trip
//! (export, import, re-export) of one model per operator is `tests/tflite_roundtrip.rs`.

use qatc::ir::op::{Activation, ModelOp, Op, Padding, ReduceAttrs};
use qatc::tflite::mapping::{self, decode, encode, Mapping, Operands, Shapes};
use qatc::tflite::model::ElemType;
use qatc::tflite::versions::{self, OpSig};
use std::path::Path;

/// What an op looks like after a trip through TFLite: RESHAPE reads back with its static
/// per-sample shape (no -1), and to rank 2 as a flatten, MEAN over H and W of an image as a global average pool, a transposed
/// convolution's activation is an operator of its own, and explicit convolution padding
/// that SAME/VALID cannot express is a PAD before a VALID convolution.
fn tflite_form(op: &ModelOp, out: &[usize], in_rank: usize, pad_first: bool) -> ModelOp {
    match op {
        ModelOp::Reshape { .. } if out.len() == 2 => ModelOp::Flatten,
        ModelOp::Reshape { .. } => ModelOp::Reshape {
            shape: out[1..].iter().map(|&d| d as i64).collect(),
        },
        ModelOp::Mean(ReduceAttrs { axes, keepdims }) if in_rank == 4 => {
            let mut a = axes.clone();
            a.sort_unstable();
            if a == [1, 2] {
                ModelOp::GlobalAvgPool {
                    keepdims: *keepdims,
                }
            } else {
                op.clone()
            }
        }
        ModelOp::Conv2dTranspose(c) => {
            let mut c = c.clone();
            c.activation = Activation::None;
            ModelOp::Conv2dTranspose(c)
        }
        ModelOp::Conv2d(c) | ModelOp::DepthwiseConv2d(c) if pad_first => {
            let mut c = c.clone();
            c.padding = Padding::Valid;
            match op {
                ModelOp::Conv2d(_) => ModelOp::Conv2d(c),
                _ => ModelOp::DepthwiseConv2d(c),
            }
        }
        _ => op.clone(),
    }
}

#[test]
fn decode_inverts_encode_for_every_golden_op() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ops");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "qir") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let g = qatc::ir::text::parse(&text, &path.display().to_string()).unwrap();
        for id in g.node_ids() {
            let Op::Model(op) = &g.node(id).op else {
                continue;
            };
            let Mapping::Builtin { code, operands, .. } = mapping::mapping(op) else {
                continue;
            };
            let shape = |i: usize| g.operand(id, i).map(|o| g.node(o).ty.shape.clone());
            let (input, kernel, output) =
                (shape(0).unwrap(), shape(1), g.node(id).ty.shape.clone());
            let shapes = Shapes {
                input: &input,
                kernel: kernel.as_deref(),
                output: &output,
            };
            let what = format!("{} ({})", g.node(id).name, path.display());
            let enc = match encode(op, &shapes) {
                Ok(e) => e,
                // an attribute TFLite cannot express: the exporter refuses it by name
                Err(why) => {
                    assert!(!why.0.is_empty(), "{what}");
                    continue;
                }
            };
            // the operator's inputs: data operands, then the constants (TRANSPOSE_CONV
            // takes its output shape first)
            let n_data = g.operands(id).len();
            let mut inputs: Vec<(Vec<usize>, Option<Vec<i64>>)> = Vec::new();
            let consts: Vec<(Vec<usize>, Option<Vec<i64>>)> = enc
                .consts
                .iter()
                .map(|c| {
                    (
                        c.shape.clone(),
                        Some(c.values.iter().map(|&v| v as i64).collect()),
                    )
                })
                .collect();
            let data = (0..n_data).map(|i| (shape(i).unwrap(), None));
            match operands {
                Operands::TransposeConv => {
                    inputs.extend(consts);
                    let d: Vec<_> = data.collect();
                    inputs.push(d[1].clone()); // kernel
                    inputs.push(d[0].clone()); // x
                    inputs.extend(d.into_iter().skip(2)); // bias
                }
                Operands::Select => {
                    // the GREATER's condition, the value, its zero point
                    inputs.push((output.clone(), None));
                    inputs.extend(data);
                    inputs.push((vec![1], None));
                }
                Operands::Kernel { .. } | Operands::Slope | Operands::Data => {
                    inputs.extend(data);
                    inputs.extend(consts);
                }
            }
            // the converter's version of the operator, and the runtime that version needs
            let sig = OpSig::new(ElemType::I8, inputs.len(), input.len(), &enc.options);
            let version = versions::version(code, &sig);
            assert!(
                versions::min_runtime(code, version).is_some(),
                "{what}: no minimum runtime for {code:?} version {version} in \
                 src/tflite/versions.rs"
            );
            let input_shape = |i: usize| inputs.get(i).map(|(s, _)| s.clone());
            let ints = |i: usize| {
                inputs
                    .get(i)
                    .and_then(|(_, v)| v.clone())
                    .ok_or_else(|| format!("input {i} is not constant").into())
            };
            let decoded = decode(
                code,
                &mapping::Operator {
                    options: &enc.options,
                    input_shape: &input_shape,
                    ints: &ints,
                    output_shape: &output,
                    output_type: ElemType::I8,
                    greater_than: enc.greater_than,
                },
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let want = tflite_form(op, &output, input.len(), enc.pad_first.is_some());
            assert_eq!(decoded.op, want, "{what}");
            assert_eq!(decoded.then, Activation::None, "{what}");
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} ops checked");
}
