//! Reading `.tflite` files into a [`Model`]: the flatbuffer is checked by the flatbuffers
//! verifier first, then copied into the owned model and validated. After [`read`] returns,
//! every tensor index is in range, every shape is bounded, every constant buffer holds the
//! bytes its type and shape need, and every quantization table is consistent; malformed
//! input is an error naming the culprit, never a panic.

use super::model::*;
use super::schema as fb;
use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::Tflite(msg.into())
}

/// The builtin code of an `OperatorCode`: `max(builtin_code, deprecated_builtin_code)`.
fn builtin_code(oc: &fb::OperatorCode) -> fb::BuiltinOperator {
    fb::BuiltinOperator(oc.builtin_code().0.max(oc.deprecated_builtin_code() as i32))
}

/// Verifies and reads a `.tflite` file.
/// Reads and validates a `.tflite` file's bytes.
pub fn read(bytes: &[u8]) -> Result<Model> {
    if bytes.len() < 8 {
        return Err(bad(format!(
            "the file is {} bytes long, too short to be a TFLite model",
            bytes.len()
        )));
    }
    if !fb::model_buffer_has_identifier(bytes) {
        return Err(bad(format!(
            "not a TFLite model: the file identifier is {:?}, expected \"TFL3\"",
            String::from_utf8_lossy(&bytes[4..8])
        )));
    }
    let opts = flatbuffers::VerifierOptions {
        max_tables: 1 << 22,
        ..Default::default()
    };
    let model = fb::root_as_model_with_opts(&opts, bytes).map_err(|e| {
        // the verifier's message is a trace over several lines; keep it on one
        let trace = e.to_string();
        let why: Vec<&str> = trace
            .lines()
            .map(|l| l.trim().trim_end_matches('.'))
            .filter(|l| !l.is_empty())
            .collect();
        bad(format!(
            "malformed TFLite flatbuffer (the verifier says: {}); the file is truncated or \
             corrupt, export or download it again",
            why.join(", ")
        ))
    })?;
    if model.version() != 3 {
        return Err(bad(format!(
            "schema version {} is not supported (TFLite models are version 3)",
            model.version()
        )));
    }

    // buffers
    let buffers: Vec<(&[u8], bool)> = match model.buffers() {
        Some(bs) => bs
            .iter()
            .map(|b| {
                let data = b.data().map(|d| d.bytes()).unwrap_or(&[]);
                (data, b.offset() > 1)
            })
            .collect(),
        None => Vec::new(),
    };

    let opcodes: Vec<(fb::BuiltinOperator, i32, Option<String>)> = model
        .operator_codes()
        .map(|v| {
            v.iter()
                .map(|oc| {
                    (
                        builtin_code(&oc),
                        oc.version(),
                        oc.custom_code().map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();

    let subgraphs = model
        .subgraphs()
        .ok_or_else(|| bad("the model has no subgraphs"))?;
    if subgraphs.len() != 1 {
        return Err(bad(format!(
            "the model has {} subgraphs; qatc supports single-subgraph models (no control flow)",
            subgraphs.len()
        )));
    }
    let sg = subgraphs.get(0);

    let fb_tensors = sg
        .tensors()
        .ok_or_else(|| bad("the subgraph has no tensors"))?;
    let mut tensors = Vec::with_capacity(fb_tensors.len());
    for (i, t) in fb_tensors.iter().enumerate() {
        tensors.push(read_tensor(i, &t, &buffers)?);
    }
    let n_tensors = tensors.len();
    let tensor_index = |what: &str, v: i32| -> Result<usize> {
        usize::try_from(v)
            .ok()
            .filter(|&i| i < n_tensors)
            .ok_or_else(|| {
                bad(format!(
                    "{what} refers to tensor {v}, but the subgraph has {n_tensors} tensors"
                ))
            })
    };

    let mut operators = Vec::new();
    if let Some(ops) = sg.operators() {
        for (k, op) in ops.iter().enumerate() {
            let oi = op.opcode_index() as usize;
            let (code, version, custom) = opcodes.get(oi).cloned().ok_or_else(|| {
                bad(format!(
                    "operator #{k} uses operator code {oi}, but the model has {}",
                    opcodes.len()
                ))
            })?;
            let what = format!("operator #{k} ({})", op_name(code));
            let inputs = op
                .inputs()
                .map(|v| {
                    v.iter()
                        .map(|i| {
                            if i == -1 {
                                Ok(None)
                            } else {
                                tensor_index(&format!("{what} input"), i).map(Some)
                            }
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default();
            let outputs = op
                .outputs()
                .map(|v| {
                    v.iter()
                        .map(|i| tensor_index(&format!("{what} output"), i))
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default();
            operators.push(Operator {
                code,
                custom_code: custom,
                version,
                inputs,
                outputs,
                options: read_options(&op),
            });
        }
    }

    let index_list = |what: &str, v: Option<flatbuffers::Vector<'_, i32>>| -> Result<Vec<usize>> {
        v.map(|v| v.iter().map(|i| tensor_index(what, i)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    };
    let inputs = index_list("a subgraph input", sg.inputs())?;
    let outputs = index_list("a subgraph output", sg.outputs())?;

    let mut signatures = Vec::new();
    if let Some(sigs) = model.signature_defs() {
        for s in sigs.iter() {
            if s.subgraph_index() != 0 {
                return Err(bad(format!(
                    "signature {:?} refers to subgraph {}",
                    s.signature_key().unwrap_or(""),
                    s.subgraph_index()
                )));
            }
            let maps = |v: Option<
                flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::TensorMap<'_>>>,
            >|
             -> Result<Vec<(String, usize)>> {
                v.map(|v| {
                    v.iter()
                        .map(|m| {
                            let idx = tensor_index("a signature entry", m.tensor_index() as i32)?;
                            Ok((m.name().unwrap_or("").to_string(), idx))
                        })
                        .collect()
                })
                .unwrap_or_else(|| Ok(Vec::new()))
            };
            signatures.push(Signature {
                key: s.signature_key().unwrap_or("").to_string(),
                inputs: maps(s.inputs())?,
                outputs: maps(s.outputs())?,
            });
        }
    }

    let mut metadata = Vec::new();
    if let Some(md) = model.metadata() {
        for m in md.iter() {
            let b = m.buffer() as usize;
            let data = buffers.get(b).ok_or_else(|| {
                bad(format!(
                    "metadata {:?} refers to buffer {b}, but the model has {}",
                    m.name().unwrap_or(""),
                    buffers.len()
                ))
            })?;
            metadata.push((m.name().unwrap_or("").to_string(), data.0.to_vec()));
        }
    }

    Ok(Model {
        description: model.description().unwrap_or("").to_string(),
        subgraph_name: sg.name().unwrap_or("").to_string(),
        tensors,
        operators,
        inputs,
        outputs,
        signatures,
        metadata,
    })
}

fn read_tensor(index: usize, t: &fb::Tensor<'_>, buffers: &[(&[u8], bool)]) -> Result<Tensor> {
    let name = t.name().unwrap_or("").to_string();
    let what = || {
        if name.is_empty() {
            format!("tensor {index}")
        } else {
            format!("tensor {index} `{name}`")
        }
    };
    let raw_shape: Vec<i32> = t.shape().map(|s| s.iter().collect()).unwrap_or_default();
    if raw_shape.len() > MAX_RANK {
        return Err(bad(format!(
            "{} has rank {}; qatc supports up to {MAX_RANK}",
            what(),
            raw_shape.len()
        )));
    }
    let mut shape = Vec::with_capacity(raw_shape.len());
    let mut numel: usize = 1;
    for &d in &raw_shape {
        let d = usize::try_from(d).map_err(|_| {
            bad(format!(
                "{} has a negative dimension in shape {raw_shape:?}",
                what()
            ))
        })?;
        numel = numel
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                bad(format!(
                    "{} has shape {raw_shape:?}, more than {MAX_ELEMENTS} elements",
                    what()
                ))
            })?;
        shape.push(d);
    }
    let signature: Option<Vec<i32>> = t.shape_signature().map(|s| s.iter().collect());
    if let Some(sig) = &signature {
        let consistent = sig.len() == shape.len()
            && sig
                .iter()
                .zip(&shape)
                .all(|(&s, &d)| s == -1 || s as i64 == d as i64);
        if !consistent {
            return Err(bad(format!(
                "{} has shape_signature {sig:?} that does not match its shape {raw_shape:?}",
                what()
            )));
        }
    }
    let dtype = ElemType::from_fb(t.type_());

    let quant = match t.quantization() {
        Some(q) => read_quant(&q, &shape, &what)?,
        None => None,
    };

    let b = t.buffer() as usize;
    let (bytes, external) = *buffers.get(b).ok_or_else(|| {
        bad(format!(
            "{} refers to buffer {b}, but the model has {} buffers",
            what(),
            buffers.len()
        ))
    })?;
    if external {
        return Err(bad(format!(
            "{} keeps its data outside the flatbuffer (a model over 2 GB); qatc does not read those",
            what()
        )));
    }
    // the bytes a constant of a type qatc computes with needs; other types keep theirs
    let data = if bytes.is_empty() {
        None
    } else if let Some(need) = dtype.buffer_len(numel) {
        if bytes.len() < need {
            return Err(bad(format!(
                "{} ({} {raw_shape:?}) needs {need} bytes but its buffer {b} holds {}",
                what(),
                dtype.name(),
                bytes.len()
            )));
        }
        Some(bytes[..need].to_vec())
    } else {
        Some(bytes.to_vec())
    };

    Ok(Tensor {
        name,
        shape,
        signature,
        dtype,
        quant,
        data,
        is_variable: t.is_variable(),
        is_sparse: t.sparsity().is_some(),
    })
}

fn read_quant(
    q: &fb::QuantizationParameters<'_>,
    shape: &[usize],
    what: &dyn Fn() -> String,
) -> Result<Option<QuantParams>> {
    let scale: Vec<f32> = q.scale().map(|s| s.iter().collect()).unwrap_or_default();
    if scale.is_empty() {
        // no scale: "not quantized" (min/max alone are informational)
        return Ok(None);
    }
    let zero_point: Vec<i64> = q
        .zero_point()
        .map(|z| z.iter().collect())
        .unwrap_or_default();
    if zero_point.len() != scale.len() {
        return Err(bad(format!(
            "{} has {} quantization scales but {} zero points",
            what(),
            scale.len(),
            zero_point.len()
        )));
    }
    let axis = q.quantized_dimension();
    if scale.len() > 1 {
        let ok_axis = usize::try_from(axis).ok().filter(|&a| a < shape.len());
        let Some(a) = ok_axis else {
            return Err(bad(format!(
                "{} has quantized_dimension {axis} outside its rank {}",
                what(),
                shape.len()
            )));
        };
        if shape[a] != scale.len() {
            return Err(bad(format!(
                "{} has {} per-axis scales but dimension {a} has size {}",
                what(),
                scale.len(),
                shape[a]
            )));
        }
    }
    if let Some(s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(bad(format!(
            "{} has quantization scale {s}; scales must be positive and finite",
            what()
        )));
    }
    if let Some(z) = zero_point
        .iter()
        .find(|&&z| z < i32::MIN as i64 || z > i32::MAX as i64)
    {
        return Err(bad(format!(
            "{} has zero point {z} outside the i32 range",
            what()
        )));
    }
    Ok(Some(QuantParams {
        scale,
        zero_point,
        axis: axis.max(0) as usize,
    }))
}

fn read_options(op: &fb::Operator<'_>) -> Options {
    use FusedActivation as A;
    let t = op.builtin_options_type();
    if t == fb::BuiltinOptions::NONE {
        return Options::None;
    }
    if let Some(o) = op.builtin_options_as_conv_2_doptions() {
        return Options::Conv2d {
            padding: PaddingMode::from_fb(o.padding()),
            stride_h: o.stride_h(),
            stride_w: o.stride_w(),
            dilation_h: o.dilation_h_factor(),
            dilation_w: o.dilation_w_factor(),
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_depthwise_conv_2_doptions() {
        return Options::DepthwiseConv2d {
            padding: PaddingMode::from_fb(o.padding()),
            stride_h: o.stride_h(),
            stride_w: o.stride_w(),
            dilation_h: o.dilation_h_factor(),
            dilation_w: o.dilation_w_factor(),
            depth_multiplier: o.depth_multiplier(),
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_pool_2_doptions() {
        return Options::Pool2d {
            padding: PaddingMode::from_fb(o.padding()),
            stride_h: o.stride_h(),
            stride_w: o.stride_w(),
            filter_h: o.filter_height(),
            filter_w: o.filter_width(),
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_fully_connected_options() {
        return Options::FullyConnected {
            activation: A::from_fb(o.fused_activation_function()),
            shuffled_weights: o.weights_format() != fb::FullyConnectedOptionsWeightsFormat::DEFAULT,
            keep_num_dims: o.keep_num_dims(),
        };
    }
    if let Some(o) = op.builtin_options_as_softmax_options() {
        return Options::Softmax { beta: o.beta() };
    }
    if let Some(o) = op.builtin_options_as_concatenation_options() {
        return Options::Concatenation {
            axis: o.axis(),
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_add_options() {
        return Options::Add {
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_sub_options() {
        return Options::Sub {
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_mul_options() {
        return Options::Mul {
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_reshape_options() {
        return Options::Reshape {
            new_shape: o.new_shape().map(|s| s.iter().collect()),
        };
    }
    if let Some(o) = op.builtin_options_as_reducer_options() {
        return Options::Reducer {
            keep_dims: o.keep_dims(),
        };
    }
    if let Some(o) = op.builtin_options_as_strided_slice_options() {
        return Options::StridedSlice {
            begin_mask: o.begin_mask(),
            end_mask: o.end_mask(),
            ellipsis_mask: o.ellipsis_mask(),
            new_axis_mask: o.new_axis_mask(),
            shrink_axis_mask: o.shrink_axis_mask(),
            offset: o.offset(),
        };
    }
    if let Some(o) = op.builtin_options_as_transpose_conv_options() {
        return Options::TransposeConv {
            padding: PaddingMode::from_fb(o.padding()),
            stride_h: o.stride_h(),
            stride_w: o.stride_w(),
            activation: A::from_fb(o.fused_activation_function()),
        };
    }
    if let Some(o) = op.builtin_options_as_resize_nearest_neighbor_options() {
        return Options::ResizeNearestNeighbor {
            align_corners: o.align_corners(),
            half_pixel_centers: o.half_pixel_centers(),
        };
    }
    if let Some(o) = op.builtin_options_as_leaky_relu_options() {
        return Options::LeakyRelu { alpha: o.alpha() };
    }
    if let Some(o) = op.builtin_options_as_pack_options() {
        return Options::Pack {
            values_count: o.values_count(),
            axis: o.axis(),
        };
    }
    if let Some(o) = op.builtin_options_as_squeeze_options() {
        return Options::Squeeze {
            dims: o
                .squeeze_dims()
                .map(|s| s.iter().collect())
                .unwrap_or_default(),
        };
    }
    if let Some(o) = op.builtin_options_as_gather_options() {
        return Options::Gather {
            axis: o.axis(),
            batch_dims: o.batch_dims(),
        };
    }
    if let Some(o) = op.builtin_options_as_shape_options() {
        return Options::Shape {
            out_type: ElemType::from_fb(o.out_type()),
        };
    }
    let empty = op.builtin_options_as_pad_options().is_some()
        || op.builtin_options_as_pad_v2_options().is_some()
        || op.builtin_options_as_transpose_options().is_some()
        || op.builtin_options_as_dequantize_options().is_some()
        || op.builtin_options_as_quantize_options().is_some()
        || op.builtin_options_as_maximum_minimum_options().is_some()
        || op.builtin_options_as_slice_options().is_some()
        || op.builtin_options_as_hard_swish_options().is_some()
        || op.builtin_options_as_greater_options().is_some()
        || op.builtin_options_as_select_v2_options().is_some();
    if empty {
        Options::Empty(t)
    } else {
        Options::Unknown(t.0)
    }
}
