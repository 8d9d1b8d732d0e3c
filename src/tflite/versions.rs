//! The operator versions the TFLite converter writes (`versioning/op_version.cc`) and the
//! minimum runtime each needs (`versioning/runtime_version.cc`), for the operators and
//! signatures qatc writes.

use super::model::{ElemType, Options};
use super::schema::BuiltinOperator as B;

/// What decides an operator's version: the types and options the converter looks at.
#[derive(Clone, Debug, Default)]
pub struct OpSig {
    /// The first input's element type.
    pub input_type: Option<ElemType>,
    /// Number of inputs, counting omitted (-1) ones.
    pub inputs: usize,
    /// Rank of the first input.
    pub rank: usize,
    /// A fused activation other than NONE.
    pub fused_activation: bool,
    /// TRANSPOSE_CONV: a bias is present.
    pub has_bias: bool,
    /// MUL: `s1·s2/s_out >= 1`.
    pub mul_multiplier_ge_one: bool,
    /// RESIZE_NEAREST_NEIGHBOR: align_corners or half_pixel_centers.
    pub resize_flags: bool,
    /// FULLY_CONNECTED: `keep_num_dims`.
    pub keep_num_dims: bool,
    /// QUANTIZE / DEQUANTIZE per channel.
    pub per_channel: bool,
    /// CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED: the weights' element type when it is
    /// not the input's (`INT4`).
    pub weight_type: Option<ElemType>,
}

impl OpSig {
    /// The signature of an operator with these options reading `inputs` inputs of rank
    /// `rank`, the first of type `input_type`: the option-dependent fields are read from the
    /// options.
    pub fn new(input_type: ElemType, inputs: usize, rank: usize, options: &Options) -> OpSig {
        let mut sig = OpSig {
            input_type: Some(input_type),
            inputs,
            rank,
            ..OpSig::default()
        };
        match options {
            Options::ResizeNearestNeighbor {
                align_corners,
                half_pixel_centers,
            } => sig.resize_flags = *align_corners || *half_pixel_centers,
            Options::FullyConnected { keep_num_dims, .. } => sig.keep_num_dims = *keep_num_dims,
            Options::TransposeConv { activation, .. } => {
                sig.fused_activation = *activation != super::model::FusedActivation::None
            }
            _ => {}
        }
        sig
    }
}

/// The version the TFLite converter writes for an operator (`op_version.cc`, for the
/// signatures qatc writes).
pub fn version(code: B, sig: &OpSig) -> i32 {
    let int8 = sig.input_type == Some(ElemType::I8);
    let int4_weights = sig.weight_type == Some(ElemType::I4);
    match code {
        B::CONV_2D | B::DEPTHWISE_CONV_2D if int8 && int4_weights => 7,
        B::CONV_2D | B::DEPTHWISE_CONV_2D if int8 => 3,
        B::FULLY_CONNECTED if sig.inputs == 2 => 6,
        B::FULLY_CONNECTED if sig.keep_num_dims => 5,
        B::FULLY_CONNECTED if int8 && int4_weights => 10,
        B::FULLY_CONNECTED if int8 => 4,
        B::MUL if int8 && sig.mul_multiplier_ge_one => 3,
        B::TRANSPOSE_CONV if sig.fused_activation => 4,
        B::TRANSPOSE_CONV if sig.has_bias => 3,
        B::RESIZE_NEAREST_NEIGHBOR if sig.resize_flags => 3,
        B::PAD | B::PADV2 | B::STRIDED_SLICE if sig.rank > 4 => 4,
        B::QUANTIZE if sig.per_channel => 3,
        B::DEQUANTIZE if int8 && sig.per_channel => 5,
        B::QUANTIZE | B::RESHAPE | B::HARD_SWISH | B::LEAKY_RELU => 1,
        B::ADD
        | B::SUB
        | B::MUL
        | B::TRANSPOSE_CONV
        | B::RESIZE_NEAREST_NEIGHBOR
        | B::DEQUANTIZE
        | B::AVERAGE_POOL_2D
        | B::MAX_POOL_2D
        | B::CONCATENATION
        | B::PAD
        | B::PADV2
        | B::SOFTMAX
        | B::MEAN
        | B::REDUCE_MAX
        | B::RELU
        | B::RELU6
        | B::LOGISTIC
        | B::TANH
        | B::STRIDED_SLICE
        | B::SLICE
        | B::TRANSPOSE
        | B::MAXIMUM
        | B::MINIMUM
        | B::GREATER
            if int8 =>
        {
            2
        }
        _ => 1,
    }
}

/// The TFLite runtime version an operator version needs (`runtime_version.cc`), for the
/// operators and versions qatc writes.
pub fn min_runtime(code: B, version: i32) -> Option<&'static str> {
    Some(match (code, version) {
        (B::CONV_2D, 1) => "1.5.0",
        (B::CONV_2D, 2 | 3) => "1.14.0",
        (B::CONV_2D | B::DEPTHWISE_CONV_2D, 7) | (B::FULLY_CONNECTED, 10) => "2.11.0",
        (B::DEPTHWISE_CONV_2D, 1) => "1.5.0",
        (B::DEPTHWISE_CONV_2D, 3) => "1.14.0",
        (B::FULLY_CONNECTED, 1) => "1.5.0",
        (B::FULLY_CONNECTED, 4) => "1.14.0",
        (B::FULLY_CONNECTED, 5) => "2.0.0",
        (B::FULLY_CONNECTED, 6) => "2.1.0",
        (B::ADD | B::MUL | B::AVERAGE_POOL_2D | B::MAX_POOL_2D | B::CONCATENATION, 1) => "1.5.0",
        (B::SUB | B::TRANSPOSE | B::MEAN | B::STRIDED_SLICE, 1) => "1.6.0",
        (
            B::ADD
            | B::SUB
            | B::MUL
            | B::AVERAGE_POOL_2D
            | B::MAX_POOL_2D
            | B::CONCATENATION
            | B::PAD
            | B::PADV2
            | B::SOFTMAX
            | B::MEAN
            | B::REDUCE_MAX
            | B::RELU6
            | B::LOGISTIC
            | B::TANH
            | B::STRIDED_SLICE
            | B::SLICE
            | B::TRANSPOSE
            | B::MAXIMUM
            | B::MINIMUM
            | B::DEQUANTIZE,
            2,
        ) => "1.14.0",
        (B::MUL, 3) => "1.15.0",
        (B::RELU, 1) | (B::RELU6, 1) | (B::RESHAPE, 1) | (B::SOFTMAX, 1) | (B::PAD, 1) => "1.5.0",
        (B::RELU, 2) => "2.1.0",
        (B::LOGISTIC | B::TANH | B::MAXIMUM | B::MINIMUM | B::QUANTIZE, 1) => "1.14.0",
        (B::RESIZE_NEAREST_NEIGHBOR, 1) | (B::LEAKY_RELU, 1) | (B::DEQUANTIZE, 1) => "1.13.1",
        (B::RESIZE_NEAREST_NEIGHBOR, 2) => "1.14.0",
        (B::RESIZE_NEAREST_NEIGHBOR, 3) => "2.3.0",
        (B::TRANSPOSE_CONV, 1) => "1.9.0",
        (B::TRANSPOSE_CONV, 2) => "2.2.0",
        (B::TRANSPOSE_CONV, 3) => "2.3.0",
        (B::TRANSPOSE_CONV, 4) => "2.13.0",
        (B::HARD_SWISH, 1) => "1.15.0",
        (B::PRELU, 1) => "1.8.0",
        (B::GREATER, 1 | 2) => "1.14.0",
        (B::SELECT_V2, 1) => "2.2.0",
        (B::PAD | B::PADV2 | B::STRIDED_SLICE, 4) => "2.6.0",
        _ => return None,
    })
}

/// The largest of some dotted version strings (`"1.14.0" < "2.1.0"`).
pub fn max_version<'a>(versions: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let key = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    versions.into_iter().max_by_key(|v| key(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_versions_match_the_converter() {
        let int8 = OpSig {
            input_type: Some(ElemType::I8),
            inputs: 3,
            rank: 4,
            ..Default::default()
        };
        assert_eq!(version(B::CONV_2D, &int8), 3);
        assert_eq!(version(B::DEPTHWISE_CONV_2D, &int8), 3);
        assert_eq!(version(B::FULLY_CONNECTED, &int8), 4);
        let int4 = OpSig {
            weight_type: Some(ElemType::I4),
            ..int8.clone()
        };
        assert_eq!(version(B::CONV_2D, &int4), 7);
        assert_eq!(version(B::DEPTHWISE_CONV_2D, &int4), 7);
        assert_eq!(version(B::FULLY_CONNECTED, &int4), 10);
        assert_eq!(min_runtime(B::FULLY_CONNECTED, 10), Some("2.11.0"));
        assert_eq!(version(B::SOFTMAX, &int8), 2);
        assert_eq!(version(B::RESHAPE, &int8), 1);
        let mul = OpSig {
            mul_multiplier_ge_one: true,
            ..int8.clone()
        };
        assert_eq!(version(B::MUL, &mul), 3);
        let tconv = OpSig {
            has_bias: true,
            ..int8.clone()
        };
        assert_eq!(version(B::TRANSPOSE_CONV, &tconv), 3);
    }

    #[test]
    fn runtime_versions_compare_numerically() {
        assert_eq!(max_version(["1.14.0", "2.1.0", "1.5.0"]), Some("2.1.0"));
        assert_eq!(max_version(["1.14.0", "1.5.0"]), Some("1.14.0"));
        assert_eq!(min_runtime(B::RELU, 2), Some("2.1.0"));
        assert_eq!(min_runtime(B::CONV_2D, 3), Some("1.14.0"));
    }
}
