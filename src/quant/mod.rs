//! Quantization: the fake-quant arithmetic ([`fake`]) and the schemes that decide what is
//! quantized how.

pub mod fake;
