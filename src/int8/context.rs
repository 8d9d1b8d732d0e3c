//! What every kernel's `prepare` uses: the operator being prepared ([`Ctx`]) with checked
//! access to its tensors, the interpreter's settings, and the checks and conversions
//! LiteRT's `Prepare` functions share (per-tensor int8 parameters, constants, fixed-point
//! multipliers, activation clamps, window geometry).

use super::array::Array;
use super::fixed;
use crate::error::Error;
use crate::tflite::model::{ElemType, FusedActivation, Model, Operator, Tensor};

/// How FULLY_CONNECTED requantizes its int32 accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FcRequant {
    /// `round(acc · (double)in_s·w_s/out_s)` in double precision: LiteRT's reference kernel
    /// since April 2025, and what `ai-edge-litert` 2.3 runs under `BUILTIN_REF` (checked
    /// against it by `tests/tflite_interop.rs`).
    #[default]
    Double,
    /// The fixed-point `MultiplyByQuantizedMultiplier` path: older reference kernels
    /// (e.g. `tflite-runtime` 2.14) and LiteRT's optimized kernels.
    FixedPoint,
}

/// Which implementation of the heavy kernels runs. Both give the same bits (integer sums
/// do not depend on their order); the reference loops are the oracle the fast ones are
/// tested against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kernels {
    /// 8-bit dot products (AVX-512 VNNI) for CONV_2D where the CPU has them, else the
    /// reference loops.
    #[default]
    Fast,
    /// The plain loops that follow LiteRT's reference kernels line by line.
    Reference,
}

/// Interpreter settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// How FULLY_CONNECTED requantizes its int32 accumulators (double-precision or fixed-point
    /// multiplier); the default matches current LiteRT reference kernels.
    pub fc_requant: FcRequant,
    /// Fast or reference kernels (same results).
    pub kernels: Kernels,
}

/// The operator being prepared, with helpers that check its tensors and name it in errors.
pub(crate) struct Ctx<'m> {
    pub model: &'m Model,
    pub op: &'m Operator,
    pub index: usize,
}

crate::message_error! {
    /// Why an operator cannot be prepared or run (what LiteRT's `Prepare` would refuse),
    /// before the interpreter names the operator ([`crate::Error::Operator`]).
    KernelError
}

/// The result of preparing or running one operator.
pub(crate) type PResult<T> = std::result::Result<T, KernelError>;

impl<'m> Ctx<'m> {
    /// The error for this operator: `operator #3 CONV_2D (output `name`): msg`.
    pub fn error(&self, e: impl Into<KernelError>) -> Error {
        let output = self
            .op
            .outputs
            .first()
            .map(|&t| format!(" (output `{}`)", self.model.tensors[t].name))
            .unwrap_or_default();
        Error::Operator {
            index: self.index,
            op: self.op.name(),
            output,
            source: Box::new(e.into()),
        }
    }

    pub fn input(&self, i: usize) -> PResult<&'m Tensor> {
        match self.op.inputs.get(i) {
            Some(Some(t)) => Ok(&self.model.tensors[*t]),
            Some(None) => Err(format!("input {i} is omitted but required").into()),
            None => {
                Err(format!("has {} inputs, input {i} is required", self.op.inputs.len()).into())
            }
        }
    }

    pub fn opt_input(&self, i: usize) -> Option<&'m Tensor> {
        self.op
            .inputs
            .get(i)
            .copied()
            .flatten()
            .map(|t| &self.model.tensors[t])
    }

    pub fn output(&self) -> PResult<&'m Tensor> {
        match self.op.outputs.as_slice() {
            [t] => Ok(&self.model.tensors[*t]),
            other => Err(format!("has {} outputs, expected 1", other.len()).into()),
        }
    }

    pub fn inputs_between(&self, lo: usize, hi: usize) -> PResult<()> {
        let n = self.op.inputs.len();
        if n < lo || n > hi {
            return Err(KernelError(if lo == hi {
                format!("has {n} inputs, expected {lo}")
            } else {
                format!("has {n} inputs, expected {lo} to {hi}")
            }));
        }
        Ok(())
    }
}

/// `(scale, zero_point)` of a per-tensor int8 tensor, checked.
pub(crate) fn int8_params(t: &Tensor) -> PResult<(f32, i32)> {
    if t.dtype != ElemType::I8 {
        return Err(format!(
            "tensor `{}` is {}; this kernel computes on INT8",
            t.name,
            t.dtype.name()
        )
        .into());
    }
    let q = t.quant.as_ref().ok_or_else(|| {
        KernelError(format!(
            "INT8 tensor `{}` has no quantization parameters",
            t.name
        ))
    })?;
    if q.is_per_axis() {
        return Err(format!(
            "tensor `{}` is quantized per axis; this kernel needs per-tensor quantization",
            t.name
        )
        .into());
    }
    let (s, zp) = q.first();
    if !(-128..=127).contains(&zp) {
        return Err(format!(
            "INT8 tensor `{}` has zero point {zp} outside [-128, 127]",
            t.name
        )
        .into());
    }
    Ok((s, zp))
}

/// A constant operand (weights, bias, shape, axes), checked and decoded.
pub(crate) fn constant(t: &Tensor, what: &str) -> PResult<Array> {
    if t.is_sparse {
        return Err(format!(
            "the {what} `{}` is sparse; qatc reads dense tensors only",
            t.name
        )
        .into());
    }
    let data = t.values().ok_or_else(|| {
        if t.dtype.buffer_len(1).is_none() {
            format!(
                "the {what} `{}` has unsupported type {}",
                t.name,
                t.dtype.name()
            )
        } else {
            format!(
                "the {what} `{}` must be a constant tensor (qatc runs static graphs)",
                t.name
            )
        }
    })?;
    Ok(Array {
        shape: t.shape.clone(),
        data,
    })
}

/// Integer values of a constant index tensor (INT32 or INT64).
pub(crate) fn const_ints(t: &Tensor, what: &str) -> PResult<Vec<i64>> {
    let a = constant(t, what)?;
    match a.elem_type() {
        ElemType::I32 | ElemType::I64 => Ok(a.data.to_i64().unwrap_or_default()),
        other => Err(format!(
            "the {what} `{}` is {}; expected INT32 or INT64",
            t.name,
            other.name()
        )
        .into()),
    }
}

/// A real multiplier as `(q, shift)`, refusing ones the fixed-point kernels cannot apply.
pub(crate) fn multiplier(m: f64, what: &str) -> PResult<(i32, i32)> {
    if !m.is_finite() {
        return Err(format!("the {what} multiplier is {m}").into());
    }
    let (q, shift) = fixed::quantize_multiplier(m);
    if shift > 30 {
        return Err(format!(
            "the {what} multiplier {m:e} is too large for fixed-point requantization \
             (check the quantization scales)"
        )
        .into());
    }
    Ok((q, shift))
}

/// TFLite's `CalculateActivationRangeQuantized` for an int8 output: the clamp range of a
/// fused activation. Like LiteRT, activations other than RELU, RELU6 and RELU_N1_TO_1 do not
/// clamp (TANH and SIGN_BIT are ignored by the quantized kernels).
pub(crate) fn activation_range(act: FusedActivation, scale: f32, zp: i32) -> PResult<(i32, i32)> {
    let q = |f: f32| {
        fixed::quantize_f32(f, scale, zp).ok_or_else(|| {
            KernelError(format!(
                "the activation bound {f} overflows with scale {scale}"
            ))
        })
    };
    Ok(match act {
        FusedActivation::Relu => (q(0.0)?.max(-128), 127),
        FusedActivation::Relu6 => (q(0.0)?.max(-128), q(6.0)?.min(127)),
        FusedActivation::ReluN1To1 => (q(-1.0)?.max(-128), q(1.0)?.min(127)),
        _ => (-128, 127),
    })
}

/// TFLite's padding rule along one axis (`padding.h`): the output size and the padding
/// before. Errors when the output would be empty.
pub(crate) fn window_geometry(
    padding: crate::tflite::model::PaddingMode,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> PResult<(usize, usize)> {
    if kernel == 0 {
        return Err("the window is empty".into());
    }
    let eff = (kernel - 1) * dilation + 1;
    let out = match padding {
        crate::tflite::model::PaddingMode::Same => input.div_ceil(stride),
        crate::tflite::model::PaddingMode::Valid => (input + stride).saturating_sub(eff) / stride,
        crate::tflite::model::PaddingMode::Other(v) => {
            return Err(format!("unknown padding mode {v}").into())
        }
    };
    if out == 0 {
        return Err(format!(
            "a window of {eff} (kernel {kernel}, dilation {dilation}) leaves no output for an input of {input}"
        ).into());
    }
    let total = ((out - 1) * stride + eff).saturating_sub(input);
    Ok((out, total / 2))
}

/// A positive option value (stride, dilation, filter size) bounded like LiteRT bounds them.
pub(crate) fn positive(v: i32, what: &str) -> PResult<usize> {
    if v <= 0 || v > i16::MAX as i32 {
        return Err(format!("{what} is {v}; it must be in 1..={}", i16::MAX).into());
    }
    Ok(v as usize)
}

/// Checks that an int8 activation output has the same type as its input (the common case
/// of unary kernels) and returns both tensors' params.
pub(crate) fn unary_int8(cx: &Ctx) -> PResult<((f32, i32), (f32, i32))> {
    cx.inputs_between(1, 1)?;
    let x = cx.input(0)?;
    let y = cx.output()?;
    Ok((int8_params(x)?, int8_params(y)?))
}

/// Row-major strides of a shape.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The element count of a shape, bounded by [`model::MAX_ELEMENTS`].
pub(crate) fn checked_numel(shape: &[usize]) -> PResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= crate::tflite::model::MAX_ELEMENTS)
        .ok_or_else(|| KernelError(format!("shape {shape:?} has too many elements")))
}
