//! The pass manager and the passes (one file per pass, same stem as its rule file in `passes/`).
