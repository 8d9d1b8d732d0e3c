//! The one table of how qatc's ops map to TFLite builtins, and the versions the TFLite
//! converter writes for them (`versioning/op_version.cc`) with the minimum runtime each
//! needs (`versioning/runtime_version.cc`).
//!
//! | qatc op | TFLite (int8 export) | TFLite (float import) |
//! |---|---|---|
//! | `conv2d` | CONV_2D (per-axis dim 0, int32 bias always present) | CONV_2D |
//! | `depthwise_conv2d` | DEPTHWISE_CONV_2D (per-axis dim 3) | DEPTHWISE_CONV_2D |
//! | `conv2d_transpose` | TRANSPOSE_CONV (+ RELU/RELU6, never fused) | TRANSPOSE_CONV |
//! | `dense` | FULLY_CONNECTED (per-axis dim 0) | FULLY_CONNECTED (+ `flatten` when rank > 2) |
//! | `add` / `sub` / `mul` | ADD / SUB / MUL | same |
//! | `max_pool2d` / `avg_pool2d` | MAX_POOL_2D / AVERAGE_POOL_2D | same |
//! | `global_avg_pool` / `mean` | MEAN | MEAN |
//! | `global_max_pool` | REDUCE_MAX over H, W | — |
//! | `relu` / `relu6` / `leaky_relu` / `hard_swish` | RELU / RELU6 / LEAKY_RELU / HARD_SWISH | same |
//! | `sigmoid` / `tanh` / `softmax` | LOGISTIC / TANH / SOFTMAX (fixed output params) | same |
//! | `reshape` / `flatten` | RESHAPE (batch -1) | RESHAPE (+ SHAPE/STRIDED_SLICE/PACK glue folded) |
//! | `transpose` / `pad` / `concat` | TRANSPOSE / PAD / CONCATENATION | same |
//! | `crop` | STRIDED_SLICE (batch masked) | — |
//! | `upsample_nearest` | RESIZE_NEAREST_NEIGHBOR (half-pixel centers) | RESIZE_NEAREST_NEIGHBOR |
//! | `fake_quant` | QUANTIZE at a float input, requantizing QUANTIZE, MINIMUM/MAXIMUM clamps for n-bit grids | — |
//! | graph output | DEQUANTIZE (float I/O) | — |

use super::model::{ElemType, FusedActivation, PaddingMode};
use super::schema::BuiltinOperator as B;
use crate::ir::op::{Activation, Padding};

/// The fused activation of an IR activation.
pub fn fused(a: Activation) -> FusedActivation {
    match a {
        Activation::None => FusedActivation::None,
        Activation::Relu => FusedActivation::Relu,
        Activation::Relu6 => FusedActivation::Relu6,
    }
}

/// The IR activation of a fused TFLite activation, if the IR has it.
pub fn ir_activation(a: FusedActivation) -> Option<Activation> {
    match a {
        FusedActivation::None => Some(Activation::None),
        FusedActivation::Relu => Some(Activation::Relu),
        FusedActivation::Relu6 => Some(Activation::Relu6),
        _ => None,
    }
}

/// TFLite's padding mode for an IR padding, when the geometry is the same. Explicit
/// padding maps only when it equals what SAME or VALID computes; otherwise `None`.
pub fn padding_mode(
    p: Padding,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Option<PaddingMode> {
    match p {
        Padding::Same => Some(PaddingMode::Same),
        Padding::Valid => Some(PaddingMode::Valid),
        Padding::Explicit(e) => {
            if e == [0; 4] {
                return Some(PaddingMode::Valid);
            }
            let same = |axis: usize| -> [usize; 2] {
                let eff = (kernel[axis] - 1) * dilation[axis] + 1;
                let out = input[axis].div_ceil(stride[axis]);
                let total = ((out - 1) * stride[axis] + eff).saturating_sub(input[axis]);
                [total / 2, total - total / 2]
            };
            let s = [same(0), same(1)];
            (e == [s[0][0], s[0][1], s[1][0], s[1][1]]).then_some(PaddingMode::Same)
        }
    }
}

/// What decides an operator's version: the types and options the converter looks at.
#[derive(Clone, Debug, Default)]
pub struct OpSig {
    pub input_type: Option<ElemType>,
    /// Number of inputs, counting omitted (-1) ones.
    pub inputs: usize,
    /// Rank of the first input.
    pub rank: usize,
    pub fused_activation: bool,
    /// TRANSPOSE_CONV: a bias is present.
    pub has_bias: bool,
    /// MUL: `s1·s2/s_out >= 1`.
    pub mul_multiplier_ge_one: bool,
    /// RESIZE_NEAREST_NEIGHBOR: align_corners or half_pixel_centers.
    pub resize_flags: bool,
    pub keep_num_dims: bool,
    /// QUANTIZE / DEQUANTIZE per channel.
    pub per_channel: bool,
}

/// The version the TFLite converter writes for an operator (`op_version.cc`, for the
/// signatures qatc writes).
pub fn version(code: B, sig: &OpSig) -> i32 {
    let int8 = sig.input_type == Some(ElemType::I8);
    match code {
        B::CONV_2D | B::DEPTHWISE_CONV_2D if int8 => 3,
        B::FULLY_CONNECTED if sig.inputs == 2 => 6,
        B::FULLY_CONNECTED if sig.keep_num_dims => 5,
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

    #[test]
    fn explicit_padding_maps_when_it_equals_same() {
        // 5x5 input, 3x3 kernel, stride 1: SAME pads 1 on every side
        let g = |p| padding_mode(p, [5, 5], [3, 3], [1, 1], [1, 1]);
        assert_eq!(g(Padding::Explicit([1, 1, 1, 1])), Some(PaddingMode::Same));
        assert_eq!(g(Padding::Explicit([0, 0, 0, 0])), Some(PaddingMode::Valid));
        assert_eq!(g(Padding::Explicit([2, 0, 1, 1])), None);
    }
}
