//! From fake-quant ranges to TFLite int8 quantization: activation scale and zero point,
//! per-axis int8 weights that hold exactly the fake-quant's levels, and int32 biases.
//!
//! A fake-quant with `bits` b and integer range `[qmin, qmax]` (see
//! [`FakeQuantAttrs::quant_range`]) nudges its range so that 0.0 is the level `zp`; the
//! quantized value of level `q` is `(q - zp)·scale`. TFLite stores int8 values `v` with
//! `real = (v - zp8)·scale`:
//! - activations shift the levels down to start at -128: `v = q + (-128 - qmin)`, so
//!   `zp8 = zp + (-128 - qmin)`; a b-bit grid occupies `[-128, -128 + qmax - qmin]`;
//! - weights are symmetric around 0: `v = q - zp` with `zp8 = 0`, which must stay in
//!   `[-127, 127]` (TFLite's weight range), true for every narrow-range quantizer and for
//!   any quantizer of at most 7 bits.

use crate::ir::fake_quant::{nudged_for, observe_range, Nudged};
use crate::ir::op::{FakeQuantAttrs, RangeSource};
use crate::ir::params::{ParamStore, Tensor};

crate::message_error! {
    /// Why a quantizer's range or values have no int8 form (a missing or non-finite
    /// state, a grid wider than int8), before the exporter names the node.
    QuantParamError
}

/// The int8 quantization of an activation fake-quant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationQuant {
    /// Real value of one int8 step: the fake-quant's nudged `(max - min) / (qmax - qmin)`.
    pub scale: f32,
    /// The int8 value representing 0.0: `zp + (-128 - qmin)`, in `[-128, 127]`.
    pub zero_point: i32,
    /// The int8 values the fake-quant's grid covers: `[-128, -128 + qmax - qmin]`.
    pub grid: (i32, i32),
    /// The nudged float range (for messages and `min`/`max` metadata).
    pub min: f32,
    /// The nudged float maximum (`min` plus `(qmax - qmin)` steps).
    pub max: f32,
}

impl ActivationQuant {
    /// `(scale, zero point)`, what int8 kernels compare.
    pub fn params(&self) -> (f32, i32) {
        (self.scale, self.zero_point)
    }
}

fn state_value(params: &ParamStore, name: &str) -> Result<Vec<f32>, QuantParamError> {
    let t = params.get(name).ok_or_else(|| {
        format!("the quantizer state `{name}` is missing: train or calibrate the model first")
    })?;
    if let Some(v) = t.data.iter().find(|v| !v.is_finite()) {
        return Err(format!("the quantizer state `{name}` holds {v}").into());
    }
    Ok(t.data.clone())
}

/// The raw `(min, max)` ranges of a quantizer that reads a fixed or observed range (one
/// per channel for per-axis state).
fn stored_ranges(
    q: &FakeQuantAttrs,
    params: &ParamStore,
) -> Result<Vec<(f32, f32)>, QuantParamError> {
    match &q.range {
        RangeSource::Fixed { min, max } => Ok(vec![(min.0, max.0)]),
        RangeSource::Ema { state, .. }
        | RangeSource::AllValues { state }
        | RangeSource::Tied { state }
        | RangeSource::Learned { state, .. } => {
            let lo = state_value(params, &format!("{state}.min"))?;
            let hi = state_value(params, &format!("{state}.max"))?;
            if lo.len() != hi.len() || lo.is_empty() {
                return Err(format!("the quantizer state `{state}` has mismatched min/max").into());
            }
            Ok(lo.into_iter().zip(hi).collect())
        }
        RangeSource::LastValue => Err(
            "range=last_value takes its range from the data it sees; an activation needs a \
             fixed or observed range to be exported"
                .into(),
        ),
        RangeSource::Operands | RangeSource::Trained(_) => Err(
            "range=operands is the train/eval lowering; export takes export-ready graphs \
             (run the `export` pipeline on the QAT graph)"
                .into(),
        ),
    }
}

/// The int8 parameters of an activation fake-quant.
pub fn activation_quant(
    q: &FakeQuantAttrs,
    params: &ParamStore,
) -> Result<ActivationQuant, QuantParamError> {
    if q.axis.is_some() {
        return Err(
            "activations are quantized per tensor in TFLite; this quantizer is per axis".into(),
        );
    }
    let ranges = stored_ranges(q, params)?;
    if ranges.len() != 1 {
        return Err(format!(
            "an activation quantizer needs one range, found {}",
            ranges.len()
        )
        .into());
    }
    let n = nudged_for(q, ranges[0].0, ranges[0].1);
    let (qmin, qmax) = q.quant_range();
    Ok(ActivationQuant {
        scale: n.scale,
        zero_point: n.zero_point + (-128 - qmin),
        grid: (-128, -128 + (qmax - qmin)),
        min: n.min,
        max: n.max,
    })
}

/// The fake-quant's level of `x` relative to its zero point, `q - zp`: the integer
/// [`crate::ir::fake_quant::fake_quant`] multiplies by the scale, computed with the same float
/// operations (TF's current formula), so `signed_level(x)·scale == fake_quant(x)` exactly.
#[inline]
pub fn signed_level(x: f32, n: &Nudged) -> i32 {
    let quant_zero = (-n.min * n.inv_scale + 0.5).floor();
    let clamped = x.clamp(n.min, n.max);
    ((clamped - n.min) * n.inv_scale - quant_zero + 0.5).floor() as i32
}

/// Per-axis (or per-tensor) int8 weights.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeights {
    /// The int8 values in the tensor's own layout (OHWI, 1HWO, `[out, in]`), symmetric with zero
    /// point 0, each in `[-127, 127]`.
    pub data: Vec<i8>,
    /// One scale per channel of `axis`, or one for per-tensor weights.
    pub scales: Vec<f32>,
    /// The quantized dimension of per-axis weights; `None` for per-tensor.
    pub axis: Option<usize>,
}

/// Quantizes a weight tensor with its fake-quant: every int8 value is the fake-quant's
/// level minus its zero point, so `v·scale` is exactly the fake-quantized weight.
pub fn quantize_weights(
    w: &Tensor,
    q: &FakeQuantAttrs,
    params: &ParamStore,
) -> Result<QuantizedWeights, QuantParamError> {
    if let Some(v) = w.data.iter().find(|v| !v.is_finite()) {
        return Err(format!("the weights hold {v}").into());
    }
    let raw = match q.range {
        RangeSource::LastValue => observe_range(&w.data, &w.shape, q.axis),
        _ => stored_ranges(q, params)?,
    };
    let channels = q.axis.map_or(1, |a| w.shape[a]);
    if raw.len() != channels {
        return Err(format!(
            "the quantizer has {} ranges for {channels} channels",
            raw.len()
        )
        .into());
    }
    let nudged: Vec<Nudged> = raw.iter().map(|&(lo, hi)| nudged_for(q, lo, hi)).collect();
    let (qmin, qmax) = q.quant_range();
    for (c, n) in nudged.iter().enumerate() {
        let (lo, hi) = (qmin - n.zero_point, qmax - n.zero_point);
        if lo < -127 || hi > 127 {
            return Err(format!(
                "channel {c}: the {}-bit weight grid runs from {lo} to {hi} around zero, outside \
                 TFLite's symmetric int8 weight range [-127, 127]; use a narrow-range (or \
                 at most 7-bit) weight quantizer",
                q.bits
            )
            .into());
        }
    }
    let inner: usize = match q.axis {
        Some(a) => w.shape[a + 1..].iter().product(),
        None => usize::MAX,
    };
    let data = w
        .data
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = if q.axis.is_some() {
                (i / inner) % channels
            } else {
                0
            };
            signed_level(x, &nudged[c]) as i8
        })
        .collect();
    Ok(QuantizedWeights {
        data,
        scales: nudged.iter().map(|n| n.scale).collect(),
        axis: q.axis,
    })
}

/// An int32 bias with per-channel scale `input_scale · weight_scale[c]`.
pub fn quantize_bias(
    bias: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> Result<(Vec<i32>, Vec<f32>), QuantParamError> {
    let channels = bias.len();
    let scale_of = |c: usize| -> f32 {
        let ws = if weight_scales.len() == 1 {
            weight_scales[0]
        } else {
            weight_scales[c]
        };
        (input_scale as f64 * ws as f64) as f32
    };
    let scales: Vec<f32> = (0..channels).map(scale_of).collect();
    let mut q = Vec::with_capacity(channels);
    for (c, &b) in bias.iter().enumerate() {
        let v = (b as f64 / scales[c] as f64).round();
        if !v.is_finite() || v < i32::MIN as f64 || v > i32::MAX as f64 {
            return Err(format!(
                "bias {b} of channel {c} does not fit int32 at scale {} (input scale × weight \
                 scale); the weights' range is too small for this bias",
                scales[c]
            )
            .into());
        }
        q.push(v as i32);
    }
    Ok((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::F32;

    #[test]
    fn eight_bit_activation_zero_point_shifts_by_128() {
        // [0, 1]: scale 1/255, nudged zp 0 -> int8 zp -128
        let mut p = ParamStore::new();
        p.insert("s.min", Tensor::scalar(0.0));
        p.insert("s.max", Tensor::scalar(1.0));
        let a = activation_quant(&FakeQuantAttrs::activation("s"), &p).unwrap();
        assert_eq!(a.params(), (1.0 / 255.0, -128));
        assert_eq!(a.grid, (-128, 127));
        // [-0.1, 1.0]: nudged zp 23 -> -105
        p.insert("s.min", Tensor::scalar(-0.1));
        let a = activation_quant(&FakeQuantAttrs::activation("s"), &p).unwrap();
        assert_eq!(a.zero_point, 23 - 128);
    }

    #[test]
    fn four_bit_activation_occupies_sixteen_int8_levels() {
        let mut q = FakeQuantAttrs::activation("s");
        q.bits = 4;
        q.range = RangeSource::Fixed {
            min: F32(0.0),
            max: F32(1.5),
        };
        let a = activation_quant(&q, &ParamStore::new()).unwrap();
        assert!((a.scale - 0.1).abs() < 1e-7);
        assert_eq!((a.zero_point, a.grid), (-128, (-128, -113)));
    }

    #[test]
    fn weights_hold_the_fake_quant_levels() {
        // per-axis 0 over two channels: [-0.5, 0.25] and [0, 1]
        let w = Tensor::new(vec![2, 2], vec![-0.5, 0.25, 0.3, 1.0]);
        let q = FakeQuantAttrs::weight(Some(0));
        let qw = quantize_weights(&w, &q, &ParamStore::new()).unwrap();
        // channel 0: scale 0.5/127; -0.5 -> -127, 0.25 -> 63.5 rounds up to 64
        assert_eq!(qw.data[0], -127);
        assert_eq!(qw.data[1], 64);
        // channel 1: scale 1/127; 0.3 -> 38.1 -> 38; 1.0 -> 127
        assert_eq!(qw.data[2], 38);
        assert_eq!(qw.data[3], 127);
        assert_eq!(qw.scales.len(), 2);
        // each int8 value times its scale is the fake-quantized weight
        let n = nudged_for(&q, -0.5, 0.5);
        let fq = crate::ir::fake_quant::fake_quant(0.25, &n);
        assert_eq!(qw.data[1] as f32 * qw.scales[0], fq);
    }

    #[test]
    fn full_range_eight_bit_weights_are_refused() {
        let w = Tensor::new(vec![2], vec![-1.0, 1.0]);
        let mut q = FakeQuantAttrs::weight(None);
        q.narrow = false;
        let err = quantize_weights(&w, &q, &ParamStore::new()).unwrap_err();
        assert!(err.0.contains("[-127, 127]"), "{err}");
        // 4-bit asymmetric weights fit: levels -15..15 at most
        q.bits = 4;
        q.symmetric = false;
        assert!(quantize_weights(&w, &q, &ParamStore::new()).is_ok());
    }

    #[test]
    fn bias_scale_is_input_times_weight_scale() {
        let (q, s) = quantize_bias(&[0.5, -0.25], 0.5, &[0.01, 0.02]).unwrap();
        assert_eq!(s, vec![0.005, 0.01]);
        assert_eq!(q, vec![100, -25]);
        assert!(quantize_bias(&[1e30], 1e-6, &[1e-6]).is_err());
    }
}
