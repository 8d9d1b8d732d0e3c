//! The in-memory TFLite model: one owned type that [`super::read()`] fills from a file and
//! [`super::write()`] serializes, and that the exporter builds, the importer and the int8
//! interpreter consume, and `qatc inspect` prints. `write(read(bytes))` keeps every field
//! this type holds, and `read(write(m)) == m` for a model the writer accepts.

use super::schema as fb;

/// The largest tensor qatc accepts (elements), and the largest rank: bounds that keep every
/// size computation in range for inputs that are well-formed flatbuffers but nonsense.
pub const MAX_ELEMENTS: usize = 1 << 28;
/// The largest tensor rank qatc accepts; [`super::read()`] rejects deeper shapes and the int8
/// interpreter's reshape checks its target against it.
pub const MAX_RANK: usize = 8;

/// A tensor element type (TFLite's `TensorType`); the ones qatc computes with have names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    /// `FLOAT32`: 4-byte IEEE floats.
    F32,
    /// `INT8`: signed bytes, the quantized type of the int8 path.
    I8,
    /// `INT32`: biases of quantized kernels and index tensors.
    I32,
    /// `INT64`: index tensors (shapes, axes) some converters emit.
    I64,
    /// `BOOL`: the condition of SELECT_V2, written by GREATER (one byte per element).
    Bool,
    /// `INT4`: signed 4-bit weights of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED, two
    /// per byte, the lower nibble first (the decoded [`Data`] is `I8`).
    I4,
    /// Another TFLite type (its `TensorType` value).
    Other(i8),
}

impl ElemType {
    /// From the schema's enum; unnamed types become [`ElemType::Other`].
    pub fn from_fb(t: fb::TensorType) -> ElemType {
        match t {
            fb::TensorType::FLOAT32 => ElemType::F32,
            fb::TensorType::INT8 => ElemType::I8,
            fb::TensorType::INT32 => ElemType::I32,
            fb::TensorType::INT64 => ElemType::I64,
            fb::TensorType::BOOL => ElemType::Bool,
            fb::TensorType::INT4 => ElemType::I4,
            other => ElemType::Other(other.0),
        }
    }

    /// To the schema's enum (the inverse of [`ElemType::from_fb`]).
    pub fn to_fb(self) -> fb::TensorType {
        match self {
            ElemType::F32 => fb::TensorType::FLOAT32,
            ElemType::I8 => fb::TensorType::INT8,
            ElemType::I32 => fb::TensorType::INT32,
            ElemType::I64 => fb::TensorType::INT64,
            ElemType::Bool => fb::TensorType::BOOL,
            ElemType::I4 => fb::TensorType::INT4,
            ElemType::Other(v) => fb::TensorType(v),
        }
    }

    /// TFLite's name for the type (`FLOAT32`, `INT8`, …).
    pub fn name(self) -> String {
        match self.to_fb().variant_name() {
            Some(n) => n.to_string(),
            None => format!("type {}", self.to_fb().0),
        }
    }

    /// The bytes `n` elements take in a buffer, for the types qatc computes with.
    pub fn buffer_len(self, n: usize) -> Option<usize> {
        match self {
            ElemType::F32 | ElemType::I32 => n.checked_mul(4),
            ElemType::I8 | ElemType::Bool => Some(n),
            ElemType::I64 => n.checked_mul(8),
            ElemType::I4 => Some(n.div_ceil(2)),
            ElemType::Other(_) => None,
        }
    }
}

/// The name of a builtin operator code (`CONV_2D`), or `builtin code N` for codes qatc's
/// schema does not list.
pub fn op_name(code: fb::BuiltinOperator) -> String {
    match code.variant_name() {
        Some(n) => n.to_string(),
        None => format!("builtin operator code {}", code.0),
    }
}

/// Affine quantization: `real = (q - zero_point) · scale`, per tensor (one entry) or along
/// `axis` (one entry per index of that dimension).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    /// Real value of one quantization step, one entry per channel along `axis` (or a single one).
    pub scale: Vec<f32>,
    /// The quantized value representing real zero; same length as `scale` and within the i32
    /// range (the reader rejects wider values).
    pub zero_point: Vec<i64>,
    /// The quantized dimension for per-axis parameters (TFLite's `quantized_dimension`, e.g. 0 for
    /// OHWI conv filters, 3 for 1HWO depthwise filters); 0 and unused when per-tensor.
    pub axis: usize,
}

impl QuantParams {
    /// Per-tensor parameters: a single `(scale, zero_point)` pair, `axis` 0.
    pub fn per_tensor(scale: f32, zero_point: i32) -> QuantParams {
        QuantParams {
            scale: vec![scale],
            zero_point: vec![zero_point as i64],
            axis: 0,
        }
    }

    /// `(scale, zero_point)` of a per-tensor quantization (the first entries, as TFLite's
    /// legacy `params` field holds).
    pub fn first(&self) -> (f32, i32) {
        (self.scale[0], self.zero_point[0] as i32)
    }

    /// Whether there is more than one scale, i.e. the parameters vary along `axis`.
    pub fn is_per_axis(&self) -> bool {
        self.scale.len() > 1
    }
}

/// Packs values in `[-8, 7]` two per byte, the lower nibble first (TFLite's `INT4`
/// buffers); an odd count leaves the last upper nibble 0.
pub fn pack_int4(values: &[i8]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|p| (p[0] as u8 & 0x0f) | ((p.get(1).copied().unwrap_or(0) as u8 & 0x0f) << 4))
        .collect()
}

/// The elements of a constant tensor, decoded from its little-endian buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// `FLOAT32`
    F32(Vec<f32>),
    /// `INT8`
    I8(Vec<i8>),
    /// `INT32`
    I32(Vec<i32>),
    /// `INT64`
    I64(Vec<i64>),
    /// `BOOL`
    Bool(Vec<bool>),
}

impl Data {
    /// Decodes `bytes` (exactly `n` elements' worth) as `dtype`; `None` for a type qatc
    /// does not compute with.
    pub fn decode(dtype: ElemType, bytes: &[u8]) -> Option<Data> {
        Some(match dtype {
            ElemType::F32 => Data::F32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            ElemType::I8 => Data::I8(bytes.iter().map(|&b| b as i8).collect()),
            ElemType::I32 => Data::I32(
                bytes
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            ElemType::I64 => Data::I64(
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            ElemType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
            // both nibbles of every byte (a tensor drops the padding of an odd count)
            ElemType::I4 => Data::I8(
                bytes
                    .iter()
                    .flat_map(|&b| [((b << 4) as i8) >> 4, (b as i8) >> 4])
                    .collect(),
            ),
            ElemType::Other(_) => return None,
        })
    }

    /// The little-endian bytes a buffer holds for these elements.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        match self {
            Data::F32(_) => ElemType::F32,
            Data::I8(_) => ElemType::I8,
            Data::I32(_) => ElemType::I32,
            Data::I64(_) => ElemType::I64,
            Data::Bool(_) => ElemType::Bool,
        }
    }

    /// Integer elements widened to i64 (index tensors: shapes, axes, paddings).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I64(v) => Some(v.clone()),
            Data::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::F32(_) | Data::Bool(_) => None,
        }
    }
}

/// One tensor of the (single) subgraph.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The tensor's name.
    pub name: String,
    /// The static shape.
    pub shape: Vec<usize>,
    /// `shape_signature`: `-1` where a dimension may change (the batch).
    pub signature: Option<Vec<i32>>,
    /// The element type.
    pub dtype: ElemType,
    /// Affine quantization, if any.
    pub quant: Option<QuantParams>,
    /// The constant value as its buffer holds it (little-endian, `numel · size` bytes for the
    /// types qatc computes with); `None` for activations.
    pub data: Option<Vec<u8>>,
    /// A variable tensor (state TFLite keeps between invocations).
    pub is_variable: bool,
    /// A sparse tensor (qatc reads dense tensors only).
    pub is_sparse: bool,
}

impl Tensor {
    /// A tensor without data or quantization.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, dtype: ElemType) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            signature: None,
            dtype,
            quant: None,
            data: None,
            is_variable: false,
            is_sparse: false,
        }
    }

    /// A constant tensor holding `data`.
    pub fn constant(name: impl Into<String>, shape: Vec<usize>, data: &Data) -> Tensor {
        Tensor {
            data: Some(data.to_le_bytes()),
            ..Tensor::new(name, shape, data.elem_type())
        }
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The constant's elements, for the types qatc computes with (`INT4` as `I8`).
    pub fn values(&self) -> Option<Data> {
        match Data::decode(self.dtype, self.data.as_deref()?)? {
            Data::I8(mut v) if self.dtype == ElemType::I4 => {
                v.truncate(self.numel());
                Some(Data::I8(v))
            }
            d => Some(d),
        }
    }
}

/// TFLite's fused activation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedActivation {
    /// No activation: the output is the operator's raw result.
    None,
    /// Clamps to `[0, ∞)`.
    Relu,
    /// Clamps to `[-1, 1]`.
    ReluN1To1,
    /// Clamps to `[0, 6]`.
    Relu6,
    /// Hyperbolic tangent; the int8 kernels ignore it (no clamp), as LiteRT's do.
    Tanh,
    /// TFLite's `SIGN_BIT`; the int8 kernels ignore it (no clamp), as LiteRT's do.
    SignBit,
    /// Another activation code (its `ActivationFunctionType` value).
    Other(i8),
}

impl FusedActivation {
    /// From the schema's enum.
    pub fn from_fb(a: fb::ActivationFunctionType) -> FusedActivation {
        match a {
            fb::ActivationFunctionType::NONE => FusedActivation::None,
            fb::ActivationFunctionType::RELU => FusedActivation::Relu,
            fb::ActivationFunctionType::RELU_N1_TO_1 => FusedActivation::ReluN1To1,
            fb::ActivationFunctionType::RELU6 => FusedActivation::Relu6,
            fb::ActivationFunctionType::TANH => FusedActivation::Tanh,
            fb::ActivationFunctionType::SIGN_BIT => FusedActivation::SignBit,
            other => FusedActivation::Other(other.0),
        }
    }

    /// To the schema's enum.
    pub fn to_fb(self) -> fb::ActivationFunctionType {
        match self {
            FusedActivation::None => fb::ActivationFunctionType::NONE,
            FusedActivation::Relu => fb::ActivationFunctionType::RELU,
            FusedActivation::ReluN1To1 => fb::ActivationFunctionType::RELU_N1_TO_1,
            FusedActivation::Relu6 => fb::ActivationFunctionType::RELU6,
            FusedActivation::Tanh => fb::ActivationFunctionType::TANH,
            FusedActivation::SignBit => fb::ActivationFunctionType::SIGN_BIT,
            FusedActivation::Other(v) => fb::ActivationFunctionType(v),
        }
    }

    /// TFLite's name for the activation.
    pub fn name(self) -> String {
        match self {
            FusedActivation::None => "NONE".into(),
            FusedActivation::Relu => "RELU".into(),
            FusedActivation::ReluN1To1 => "RELU_N1_TO_1".into(),
            FusedActivation::Relu6 => "RELU6".into(),
            FusedActivation::Tanh => "TANH".into(),
            FusedActivation::SignBit => "SIGN_BIT".into(),
            FusedActivation::Other(v) => format!("activation {v}"),
        }
    }
}

/// TFLite's padding modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingMode {
    /// Pad so the output has `ceil(input / stride)` positions per spatial dimension, the extra
    /// padding going to the end (bottom/right).
    Same,
    /// No padding: only windows that fit entirely inside the input.
    Valid,
    /// Another padding code (its `Padding` value).
    Other(i8),
}

impl PaddingMode {
    /// From the schema's enum.
    pub fn from_fb(p: fb::Padding) -> PaddingMode {
        match p {
            fb::Padding::SAME => PaddingMode::Same,
            fb::Padding::VALID => PaddingMode::Valid,
            other => PaddingMode::Other(other.0),
        }
    }

    /// To the schema's enum.
    pub fn to_fb(self) -> fb::Padding {
        match self {
            PaddingMode::Same => fb::Padding::SAME,
            PaddingMode::Valid => fb::Padding::VALID,
            PaddingMode::Other(v) => fb::Padding(v),
        }
    }
}

/// The builtin options of an operator, decoded. Numeric fields are kept raw; each kernel
/// validates the ones it uses.
#[derive(Clone, Debug, PartialEq)]
pub enum Options {
    /// No options table.
    None,
    /// `Conv2DOptions` (`CONV_2D`: NHWC input, OHWI filter, per-channel bias).
    Conv2d {
        /// How the spatial borders are padded.
        padding: PaddingMode,
        /// Vertical stride, in input rows.
        stride_h: i32,
        /// Horizontal stride, in input columns.
        stride_w: i32,
        /// Vertical dilation factor (1 for a dense filter).
        dilation_h: i32,
        /// Horizontal dilation factor (1 for a dense filter).
        dilation_w: i32,
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `DepthwiseConv2DOptions` (`DEPTHWISE_CONV_2D`: NHWC input, 1HWO filter).
    DepthwiseConv2d {
        /// How the spatial borders are padded.
        padding: PaddingMode,
        /// Vertical stride, in input rows.
        stride_h: i32,
        /// Horizontal stride, in input columns.
        stride_w: i32,
        /// Vertical dilation factor (1 for a dense filter).
        dilation_h: i32,
        /// Horizontal dilation factor (1 for a dense filter).
        dilation_w: i32,
        /// Output channels per input channel; the filter's last dimension is
        /// `in_channels · depth_multiplier`. The int8 interpreter derives it from the shapes
        /// instead, as LiteRT does.
        depth_multiplier: i32,
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `Pool2DOptions` (`AVERAGE_POOL_2D`, `MAX_POOL_2D`, NHWC).
    Pool2d {
        /// How the spatial borders are padded (padded cells are excluded, not zeros).
        padding: PaddingMode,
        /// Vertical stride, in input rows.
        stride_h: i32,
        /// Horizontal stride, in input columns.
        stride_w: i32,
        /// Window height, in input rows.
        filter_h: i32,
        /// Window width, in input columns.
        filter_w: i32,
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `FullyConnectedOptions` (`FULLY_CONNECTED`: weights `[out, in]`, output `x · Wᵀ + b`).
    FullyConnected {
        /// The activation fused into the output.
        activation: FusedActivation,
        /// The weights use a non-default `weights_format` (`SHUFFLED4x16INT8`), which qatc
        /// does not compute with.
        shuffled_weights: bool,
        /// Keep the input's leading dimensions in the output instead of flattening it to
        /// `[batch, out]`.
        keep_num_dims: bool,
    },
    /// `SoftmaxOptions` (`SOFTMAX` over the last dimension).
    Softmax {
        /// Input multiplier: the output is `softmax(beta · x)`.
        beta: f32,
    },
    /// `ConcatenationOptions` (`CONCATENATION`).
    Concatenation {
        /// The joined dimension; negative counts from the end.
        axis: i32,
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `AddOptions` (`ADD`, with broadcasting).
    Add {
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `SubOptions` (`SUB`, with broadcasting).
    Sub {
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `MulOptions` (`MUL`, with broadcasting).
    Mul {
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `ReshapeOptions` (`RESHAPE`).
    Reshape {
        /// The target shape (one `-1` allowed) when stored as an option; `None` when the
        /// table omits it and the second input (a shape tensor) gives it.
        new_shape: Option<Vec<i32>>,
    },
    /// `ReducerOptions` (`MEAN`, `SUM`, `REDUCE_MAX`, …; the axes are the second input).
    Reducer {
        /// Keep reduced dimensions as size 1 instead of dropping them.
        keep_dims: bool,
    },
    /// `StridedSliceOptions` (`STRIDED_SLICE`); each mask has bit `i` for dimension `i`.
    StridedSlice {
        /// Dimensions whose `begin` is ignored (the slice starts at the first element).
        begin_mask: i32,
        /// Dimensions whose `end` is ignored (the slice runs to the last element).
        end_mask: i32,
        /// The position of the ellipsis (`...`) that stands for all unlisted dimensions.
        ellipsis_mask: i32,
        /// Positions where a new size-1 dimension is inserted.
        new_axis_mask: i32,
        /// Dimensions that are indexed (size 1) and removed from the output.
        shrink_axis_mask: i32,
        /// `end` is relative to `begin` (`end = begin + end`) rather than absolute.
        offset: bool,
    },
    /// `TransposeConvOptions` (`TRANSPOSE_CONV`: inputs output shape, OHWI filter, NHWC
    /// input, optional bias).
    TransposeConv {
        /// How the output is cropped relative to the full transposed convolution.
        padding: PaddingMode,
        /// Vertical stride: output rows per input row.
        stride_h: i32,
        /// Horizontal stride: output columns per input column.
        stride_w: i32,
        /// The activation fused into the output.
        activation: FusedActivation,
    },
    /// `ResizeNearestNeighborOptions` (`RESIZE_NEAREST_NEIGHBOR`, NHWC; the output size is
    /// the second input).
    ResizeNearestNeighbor {
        /// Map the corner pixels of input and output onto each other (scale
        /// `(in - 1) / (out - 1)` instead of `in / out`).
        align_corners: bool,
        /// Sample at pixel centres (offset by 0.5), as TF2's resize does.
        half_pixel_centers: bool,
    },
    /// `LeakyReluOptions` (`LEAKY_RELU`).
    LeakyRelu {
        /// The slope for negative inputs: `x < 0 ? alpha · x : x`.
        alpha: f32,
    },
    /// `PackOptions` (`PACK`: stacks equal-shaped inputs along a new dimension).
    Pack {
        /// The number of inputs stacked.
        values_count: i32,
        /// Where the new dimension is inserted in the output; negative counts from the end.
        axis: i32,
    },
    /// `SqueezeOptions` (`SQUEEZE`).
    Squeeze {
        /// The size-1 dimensions to remove (negative counts from the end); empty removes every
        /// size-1 dimension.
        dims: Vec<i32>,
    },
    /// `GatherOptions` (`GATHER`: inputs params, indices).
    Gather {
        /// The dimension of params that the indices select along; negative counts from the end.
        axis: i32,
        /// The number of leading dimensions params and indices share as batch dimensions.
        batch_dims: i32,
    },
    /// `ShapeOptions` (`SHAPE`).
    Shape {
        /// The element type of the output shape tensor (`INT32` or `INT64`).
        out_type: ElemType,
    },
    /// An options table without fields (PAD, QUANTIZE, HARD_SWISH, …), by its union type.
    Empty(fb::BuiltinOptions),
    /// An options table qatc's schema does not describe (its union index).
    Unknown(u8),
}

/// One operator, in execution order.
/// One operator of the subgraph.
#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    /// The builtin operator (`CUSTOM` for custom ones).
    pub code: fb::BuiltinOperator,
    /// The custom operator's name.
    pub custom_code: Option<String>,
    /// The operator version (what the runtime's kernel registration selects).
    pub version: i32,
    /// Input tensor indices; `None` for an omitted optional input (`-1` in the file).
    pub inputs: Vec<Option<usize>>,
    /// Output tensor indices.
    pub outputs: Vec<usize>,
    /// The builtin options.
    pub options: Options,
}

impl Operator {
    /// A builtin operator with all inputs present.
    pub fn new(
        code: fb::BuiltinOperator,
        version: i32,
        inputs: &[usize],
        outputs: &[usize],
        options: Options,
    ) -> Operator {
        Operator {
            code,
            custom_code: None,
            version,
            inputs: inputs.iter().map(|&i| Some(i)).collect(),
            outputs: outputs.to_vec(),
            options,
        }
    }

    /// The operator's name (`CONV_2D`, `CUSTOM(name)`).
    pub fn name(&self) -> String {
        match &self.custom_code {
            Some(c) if self.code == fb::BuiltinOperator::CUSTOM => format!("CUSTOM({c})"),
            _ => op_name(self.code),
        }
    }
}

/// A signature: named inputs and outputs of the subgraph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signature {
    /// The signature key (`serving_default`).
    pub key: String,
    /// `(name, tensor index)` per input.
    pub inputs: Vec<(String, usize)>,
    /// `(name, tensor index)` per output.
    pub outputs: Vec<(String, usize)>,
}

/// A single-subgraph TFLite model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// The model description.
    pub description: String,
    /// The subgraph's name.
    pub subgraph_name: String,
    /// Every tensor of the subgraph.
    pub tensors: Vec<Tensor>,
    /// The operators in execution order.
    pub operators: Vec<Operator>,
    /// The subgraph inputs (tensor indices).
    pub inputs: Vec<usize>,
    /// The subgraph outputs (tensor indices).
    pub outputs: Vec<usize>,
    /// The signatures.
    pub signatures: Vec<Signature>,
    /// Metadata entries: name and the bytes of their buffer.
    pub metadata: Vec<(String, Vec<u8>)>,
}

impl Model {
    /// The `min_runtime_version` metadata, if present.
    pub fn min_runtime_version(&self) -> Option<String> {
        self.metadata
            .iter()
            .find(|(n, _)| n == "min_runtime_version")
            .map(|(_, b)| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end]).into_owned()
            })
    }

    /// The operator codes and versions in order of first use (the file's operator-code
    /// table).
    pub fn opcodes(&self) -> Vec<(fb::BuiltinOperator, i32)> {
        let mut codes = Vec::new();
        for op in &self.operators {
            let key = (op.code, op.version);
            if !codes.contains(&key) {
                codes.push(key);
            }
        }
        codes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// INT4 buffers: two values per byte, the lower nibble first, sign-extended on reading;
    /// an odd count pads the last byte and the tensor drops the padding.
    #[test]
    fn int4_packs_low_nibble_first_and_round_trips() {
        let v: Vec<i8> = vec![-8, 7, -1, 0, 3];
        let packed = pack_int4(&v);
        assert_eq!(packed, [0x78, 0x0f, 0x03]);
        assert_eq!(ElemType::I4.buffer_len(v.len()), Some(3));
        let t = Tensor {
            dtype: ElemType::I4,
            data: Some(packed),
            ..Tensor::constant("w", vec![5], &Data::I8(v.clone()))
        };
        assert_eq!(t.values(), Some(Data::I8(v)));
        assert_eq!(ElemType::from_fb(ElemType::I4.to_fb()), ElemType::I4);
    }
}
