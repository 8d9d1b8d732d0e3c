//! TFLite flatbuffers: export (int8 per-axis), import (float), the generated schema code.
