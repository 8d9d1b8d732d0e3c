//! Quantization: the fake-quant arithmetic ([`fake`]) and the schemes that decide what is
//! quantized how ([`scheme`]).

pub mod fake;
pub mod scheme;
