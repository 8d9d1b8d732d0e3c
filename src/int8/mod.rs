//! The integer reference interpreter, bit-exact with TFLite reference kernels.
