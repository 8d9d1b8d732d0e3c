//! Quantization schemes: the policy table that decides what is quantized how, per-layer
//! overrides, and the quantizer naming conventions ([`scheme`]). The fake-quant arithmetic
//! itself is the `fake_quant` op's semantics, [`crate::ir::fake_quant`].

pub mod scheme;
