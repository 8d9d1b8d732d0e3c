//! The Cranelift JIT: compiles a graph (a train step or an eval graph) into one native function.
