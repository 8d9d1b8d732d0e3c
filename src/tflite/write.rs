//! Writing a [`Model`] as a `.tflite` flatbuffer.
//!
//! What every written file has (the TFLite format's rules, see `tflite_schema/README.md`):
//! schema version 3 and identifier `TFL3`; buffer 0 empty; constant data sized exactly and
//! 16-byte aligned in the file; operator codes with `deprecated_builtin_code =
//! min(code, 127)`, `builtin_code` and `version` all set; every operator's options table
//! written (LiteRT zero-fills missing ones); metadata buffers as given.

use super::model::{Model, Options, QuantParams};
use super::schema as fb;
use crate::error::{Error, Result};
use flatbuffers::{FlatBufferBuilder, Push, PushAlignment, WIPOffset};

/// A byte pushed with 16-byte alignment: a vector of these starts 16-byte aligned in the
/// finished buffer (the schema's `force_align: 16` on `Buffer.data`).
#[derive(Clone, Copy)]
struct AlignedByte(u8);

impl Push for AlignedByte {
    type Output = u8;

    unsafe fn push(&self, dst: &mut [u8], _written_len: usize) {
        dst[0] = self.0;
    }

    fn alignment() -> PushAlignment {
        PushAlignment::new(16)
    }
}

type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

/// Writes an options table; returns its union type and offset.
fn write_options(
    fbb: &mut FlatBufferBuilder<'_>,
    o: &Options,
) -> Result<(fb::BuiltinOptions, Option<Union>)> {
    use fb::BuiltinOptions as U;
    Ok(match o {
        Options::None => (U::NONE, None),
        Options::Conv2d {
            padding: p,
            stride_h,
            stride_w,
            dilation_h,
            dilation_w,
            activation: a,
        } => {
            let t = fb::Conv2DOptions::create(
                fbb,
                &fb::Conv2DOptionsArgs {
                    padding: p.to_fb(),
                    stride_w: *stride_w,
                    stride_h: *stride_h,
                    fused_activation_function: a.to_fb(),
                    dilation_w_factor: *dilation_w,
                    dilation_h_factor: *dilation_h,
                    quantized_bias_type: fb::TensorType::FLOAT32,
                },
            );
            (U::Conv2DOptions, Some(t.as_union_value()))
        }
        Options::DepthwiseConv2d {
            padding: p,
            stride_h,
            stride_w,
            dilation_h,
            dilation_w,
            depth_multiplier,
            activation: a,
        } => {
            let t = fb::DepthwiseConv2DOptions::create(
                fbb,
                &fb::DepthwiseConv2DOptionsArgs {
                    padding: p.to_fb(),
                    stride_w: *stride_w,
                    stride_h: *stride_h,
                    depth_multiplier: *depth_multiplier,
                    fused_activation_function: a.to_fb(),
                    dilation_w_factor: *dilation_w,
                    dilation_h_factor: *dilation_h,
                },
            );
            (U::DepthwiseConv2DOptions, Some(t.as_union_value()))
        }
        Options::Pool2d {
            padding: p,
            stride_h,
            stride_w,
            filter_h,
            filter_w,
            activation: a,
        } => {
            let t = fb::Pool2DOptions::create(
                fbb,
                &fb::Pool2DOptionsArgs {
                    padding: p.to_fb(),
                    stride_w: *stride_w,
                    stride_h: *stride_h,
                    filter_width: *filter_w,
                    filter_height: *filter_h,
                    fused_activation_function: a.to_fb(),
                },
            );
            (U::Pool2DOptions, Some(t.as_union_value()))
        }
        Options::FullyConnected {
            activation: a,
            shuffled_weights,
            keep_num_dims,
        } => {
            let t = fb::FullyConnectedOptions::create(
                fbb,
                &fb::FullyConnectedOptionsArgs {
                    fused_activation_function: a.to_fb(),
                    weights_format: if *shuffled_weights {
                        fb::FullyConnectedOptionsWeightsFormat::SHUFFLED4x16INT8
                    } else {
                        fb::FullyConnectedOptionsWeightsFormat::DEFAULT
                    },
                    keep_num_dims: *keep_num_dims,
                    asymmetric_quantize_inputs: false,
                    quantized_bias_type: fb::TensorType::FLOAT32,
                },
            );
            (U::FullyConnectedOptions, Some(t.as_union_value()))
        }
        Options::Softmax { beta } => {
            let t = fb::SoftmaxOptions::create(fbb, &fb::SoftmaxOptionsArgs { beta: *beta });
            (U::SoftmaxOptions, Some(t.as_union_value()))
        }
        Options::Concatenation {
            axis,
            activation: a,
        } => {
            let t = fb::ConcatenationOptions::create(
                fbb,
                &fb::ConcatenationOptionsArgs {
                    axis: *axis,
                    fused_activation_function: a.to_fb(),
                },
            );
            (U::ConcatenationOptions, Some(t.as_union_value()))
        }
        Options::Add { activation: a } => {
            let t = fb::AddOptions::create(
                fbb,
                &fb::AddOptionsArgs {
                    fused_activation_function: a.to_fb(),
                    pot_scale_int16: true,
                },
            );
            (U::AddOptions, Some(t.as_union_value()))
        }
        Options::Sub { activation: a } => {
            let t = fb::SubOptions::create(
                fbb,
                &fb::SubOptionsArgs {
                    fused_activation_function: a.to_fb(),
                    pot_scale_int16: true,
                },
            );
            (U::SubOptions, Some(t.as_union_value()))
        }
        Options::Mul { activation: a } => {
            let t = fb::MulOptions::create(
                fbb,
                &fb::MulOptionsArgs {
                    fused_activation_function: a.to_fb(),
                },
            );
            (U::MulOptions, Some(t.as_union_value()))
        }
        Options::Reshape { new_shape } => {
            let v = new_shape.as_ref().map(|s| fbb.create_vector(s));
            let t = fb::ReshapeOptions::create(fbb, &fb::ReshapeOptionsArgs { new_shape: v });
            (U::ReshapeOptions, Some(t.as_union_value()))
        }
        Options::Reducer { keep_dims } => {
            let t = fb::ReducerOptions::create(
                fbb,
                &fb::ReducerOptionsArgs {
                    keep_dims: *keep_dims,
                },
            );
            (U::ReducerOptions, Some(t.as_union_value()))
        }
        Options::StridedSlice {
            begin_mask,
            end_mask,
            ellipsis_mask,
            new_axis_mask,
            shrink_axis_mask,
            offset,
        } => {
            let t = fb::StridedSliceOptions::create(
                fbb,
                &fb::StridedSliceOptionsArgs {
                    begin_mask: *begin_mask,
                    end_mask: *end_mask,
                    ellipsis_mask: *ellipsis_mask,
                    new_axis_mask: *new_axis_mask,
                    shrink_axis_mask: *shrink_axis_mask,
                    offset: *offset,
                },
            );
            (U::StridedSliceOptions, Some(t.as_union_value()))
        }
        Options::TransposeConv {
            padding: p,
            stride_h,
            stride_w,
            activation: a,
        } => {
            let t = fb::TransposeConvOptions::create(
                fbb,
                &fb::TransposeConvOptionsArgs {
                    padding: p.to_fb(),
                    stride_w: *stride_w,
                    stride_h: *stride_h,
                    fused_activation_function: a.to_fb(),
                    quantized_bias_type: fb::TensorType::FLOAT32,
                },
            );
            (U::TransposeConvOptions, Some(t.as_union_value()))
        }
        Options::ResizeNearestNeighbor {
            align_corners,
            half_pixel_centers,
        } => {
            let t = fb::ResizeNearestNeighborOptions::create(
                fbb,
                &fb::ResizeNearestNeighborOptionsArgs {
                    align_corners: *align_corners,
                    half_pixel_centers: *half_pixel_centers,
                },
            );
            (U::ResizeNearestNeighborOptions, Some(t.as_union_value()))
        }
        Options::LeakyRelu { alpha } => {
            let t = fb::LeakyReluOptions::create(fbb, &fb::LeakyReluOptionsArgs { alpha: *alpha });
            (U::LeakyReluOptions, Some(t.as_union_value()))
        }
        Options::Pack { values_count, axis } => {
            let t = fb::PackOptions::create(
                fbb,
                &fb::PackOptionsArgs {
                    values_count: *values_count,
                    axis: *axis,
                },
            );
            (U::PackOptions, Some(t.as_union_value()))
        }
        Options::Squeeze { dims } => {
            let v = fbb.create_vector(dims);
            let t = fb::SqueezeOptions::create(
                fbb,
                &fb::SqueezeOptionsArgs {
                    squeeze_dims: Some(v),
                },
            );
            (U::SqueezeOptions, Some(t.as_union_value()))
        }
        Options::Gather { axis, batch_dims } => {
            let t = fb::GatherOptions::create(
                fbb,
                &fb::GatherOptionsArgs {
                    axis: *axis,
                    batch_dims: *batch_dims,
                },
            );
            (U::GatherOptions, Some(t.as_union_value()))
        }
        Options::Shape { out_type } => {
            let t = fb::ShapeOptions::create(
                fbb,
                &fb::ShapeOptionsArgs {
                    out_type: out_type.to_fb(),
                },
            );
            (U::ShapeOptions, Some(t.as_union_value()))
        }
        Options::Empty(t) => {
            let start = fbb.start_table();
            let table = fbb.end_table(start);
            (*t, Some(table.as_union_value()))
        }
        Options::Unknown(t) => {
            return Err(Error::Tflite(format!(
                "cannot write builtin options of union type {t}"
            )))
        }
    })
}

fn write_quant<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    q: &QuantParams,
) -> WIPOffset<fb::QuantizationParameters<'a>> {
    let scale = fbb.create_vector(&q.scale);
    let zero_point = fbb.create_vector(&q.zero_point);
    fb::QuantizationParameters::create(
        fbb,
        &fb::QuantizationParametersArgs {
            scale: Some(scale),
            zero_point: Some(zero_point),
            quantized_dimension: q.axis as i32,
            ..Default::default()
        },
    )
}

/// Serializes a model. Checks only what the flatbuffer layout needs (indices in range,
/// signatures of subgraph 0); the semantic checks are the exporter's and the reader's.
pub fn write(m: &Model) -> Result<Vec<u8>> {
    let n = m.tensors.len();
    let check = |what: &str, i: usize| -> Result<i32> {
        if i < n {
            Ok(i as i32)
        } else {
            Err(Error::Tflite(format!("{what} refers to tensor {i} of {n}")))
        }
    };
    let mut op_io = Vec::with_capacity(m.operators.len());
    for (k, op) in m.operators.iter().enumerate() {
        let inputs = op
            .inputs
            .iter()
            .map(|i| match i {
                Some(i) => check(&format!("operator #{k} input"), *i),
                None => Ok(-1),
            })
            .collect::<Result<Vec<i32>>>()?;
        let outputs = op
            .outputs
            .iter()
            .map(|&i| check(&format!("operator #{k} output"), i))
            .collect::<Result<Vec<i32>>>()?;
        op_io.push((inputs, outputs));
    }
    let io = |v: &[usize]| -> Result<Vec<i32>> {
        v.iter()
            .map(|&i| check("a subgraph input or output", i))
            .collect()
    };
    let (sg_inputs, sg_outputs) = (io(&m.inputs)?, io(&m.outputs)?);
    for s in &m.signatures {
        for (_, i) in s.inputs.iter().chain(&s.outputs) {
            check(&format!("signature `{}`", s.key), *i)?;
        }
    }
    if let Some(t) = m.tensors.iter().find(|t| t.is_sparse) {
        return Err(Error::Tflite(format!(
            "tensor `{}` is sparse; qatc writes dense tensors only",
            t.name
        )));
    }

    let mut fbb = FlatBufferBuilder::with_capacity(1 << 16);

    // buffers: 0 is the empty sentinel, then one per constant tensor, then metadata
    let mut buffers = vec![fb::Buffer::create(&mut fbb, &fb::BufferArgs::default())];
    let mut tensor_buffer = vec![0u32; m.tensors.len()];
    for (i, t) in m.tensors.iter().enumerate() {
        if let Some(data) = &t.data {
            let bytes: Vec<AlignedByte> = data.iter().map(|&b| AlignedByte(b)).collect();
            let v = fbb.create_vector(&bytes);
            let v = WIPOffset::new(v.value());
            tensor_buffer[i] = buffers.len() as u32;
            buffers.push(fb::Buffer::create(
                &mut fbb,
                &fb::BufferArgs {
                    data: Some(v),
                    ..Default::default()
                },
            ));
        }
    }
    let mut metadata = Vec::new();
    for (name, data) in &m.metadata {
        let bytes: Vec<AlignedByte> = data.iter().map(|&b| AlignedByte(b)).collect();
        let v = fbb.create_vector(&bytes);
        let v = WIPOffset::new(v.value());
        let index = buffers.len() as u32;
        buffers.push(fb::Buffer::create(
            &mut fbb,
            &fb::BufferArgs {
                data: Some(v),
                ..Default::default()
            },
        ));
        let name = fbb.create_string(name);
        metadata.push(fb::Metadata::create(
            &mut fbb,
            &fb::MetadataArgs {
                name: Some(name),
                buffer: index,
            },
        ));
    }

    // tensors
    let mut tensors = Vec::with_capacity(m.tensors.len());
    for (i, t) in m.tensors.iter().enumerate() {
        let dims: Vec<i32> = t.shape.iter().map(|&d| d as i32).collect();
        let shape = fbb.create_vector(&dims);
        let signature = t.signature.as_ref().map(|s| fbb.create_vector(s));
        let name = fbb.create_string(&t.name);
        let quant = t.quant.as_ref().map(|q| write_quant(&mut fbb, q));
        tensors.push(fb::Tensor::create(
            &mut fbb,
            &fb::TensorArgs {
                shape: Some(shape),
                type_: t.dtype.to_fb(),
                buffer: tensor_buffer[i],
                name: Some(name),
                quantization: quant,
                shape_signature: signature,
                is_variable: t.is_variable,
                ..Default::default()
            },
        ));
    }

    // operator codes, deduplicated in order of first use
    let mut codes: Vec<(fb::BuiltinOperator, i32, Option<&str>)> = Vec::new();
    let mut ops = Vec::with_capacity(m.operators.len());
    for (op, (op_inputs, op_outputs)) in m.operators.iter().zip(&op_io) {
        let key = (op.code, op.version, op.custom_code.as_deref());
        let index = match codes.iter().position(|c| *c == key) {
            Some(i) => i,
            None => {
                codes.push(key);
                codes.len() - 1
            }
        };
        let (options_type, options) = write_options(&mut fbb, &op.options)?;
        let inputs = fbb.create_vector(op_inputs);
        let outputs = fbb.create_vector(op_outputs);
        ops.push(fb::Operator::create(
            &mut fbb,
            &fb::OperatorArgs {
                opcode_index: index as u32,
                inputs: Some(inputs),
                outputs: Some(outputs),
                builtin_options_type: options_type,
                builtin_options: options,
                ..Default::default()
            },
        ));
    }
    let opcodes: Vec<WIPOffset<fb::OperatorCode>> = codes
        .iter()
        .map(|&(code, version, custom)| {
            let custom_code = custom.map(|c| fbb.create_string(c));
            fb::OperatorCode::create(
                &mut fbb,
                &fb::OperatorCodeArgs {
                    deprecated_builtin_code: code.0.min(127) as i8,
                    custom_code,
                    version,
                    builtin_code: code,
                },
            )
        })
        .collect();

    let tensors = fbb.create_vector(&tensors);
    let inputs = fbb.create_vector(&sg_inputs);
    let outputs = fbb.create_vector(&sg_outputs);
    let operators = fbb.create_vector(&ops);
    let sg_name = fbb.create_string(&m.subgraph_name);
    let subgraph = fb::SubGraph::create(
        &mut fbb,
        &fb::SubGraphArgs {
            tensors: Some(tensors),
            inputs: Some(inputs),
            outputs: Some(outputs),
            operators: Some(operators),
            name: Some(sg_name),
        },
    );

    let mut sigs = Vec::with_capacity(m.signatures.len());
    for s in &m.signatures {
        let mut maps = |entries: &[(String, usize)]| -> Vec<WIPOffset<fb::TensorMap>> {
            entries
                .iter()
                .map(|(name, t)| {
                    let name = fbb.create_string(name);
                    fb::TensorMap::create(
                        &mut fbb,
                        &fb::TensorMapArgs {
                            name: Some(name),
                            tensor_index: *t as u32,
                        },
                    )
                })
                .collect()
        };
        let ins = maps(&s.inputs);
        let outs = maps(&s.outputs);
        let ins = fbb.create_vector(&ins);
        let outs = fbb.create_vector(&outs);
        let key = fbb.create_string(&s.key);
        sigs.push(fb::SignatureDef::create(
            &mut fbb,
            &fb::SignatureDefArgs {
                inputs: Some(ins),
                outputs: Some(outs),
                signature_key: Some(key),
                subgraph_index: 0,
            },
        ));
    }
    let signature_defs = (!sigs.is_empty()).then(|| fbb.create_vector(&sigs));

    let opcodes = fbb.create_vector(&opcodes);
    let subgraphs = fbb.create_vector(&[subgraph]);
    let buffers = fbb.create_vector(&buffers);
    let description = fbb.create_string(&m.description);
    let metadata = (!metadata.is_empty()).then(|| fbb.create_vector(&metadata));
    let model = fb::Model::create(
        &mut fbb,
        &fb::ModelArgs {
            version: 3,
            operator_codes: Some(opcodes),
            subgraphs: Some(subgraphs),
            description: Some(description),
            buffers: Some(buffers),
            metadata_buffer: None,
            metadata,
            signature_defs,
        },
    );
    fb::finish_model_buffer(&mut fbb, model);
    Ok(fbb.finished_data().to_vec())
}
