//! Every model op is tested the same way: this test names each op that lacks one of the
//! four checks (README, "Adding a layer"):
//!
//! 1. a golden case `tests/golden/ops/<op>.qir` (with its snapshot);
//! 2. a finite-difference gradient check in `tests/gradcheck.rs`;
//! 3. a JIT-vs-interpreter check in `tests/jit_ops.rs`;
//! 4. a TFLite mapping exercised by a one-layer model of `tests/support` (exported, run in
//!    the int8 interpreter and LiteRT, imported back), or the mapping's written reason why
//!    the op has no operator of its own.
//!
//! An op that cannot have one of the checks is listed below with the reason.

mod support;

use qatc::ir::op::{Family, ModelOp, OpKind};
use qatc::tflite::mapping::{mapping, Mapping};
use std::path::Path;

/// Ops without a gradient check of their own, and why.
const NO_GRADCHECK: &[(&str, &str)] = &[
    ("input", "a leaf: no operands"),
    ("param", "a leaf: no operands"),
    (
        "dropout",
        "the identity in the interpreter; train steps multiply by dropout_mask, checked in \
         tests/train.rs",
    ),
];

/// Ops without a JIT-vs-interpreter case of their own, and why.
const NO_JIT_CASE: &[(&str, &str)] = &[
    ("input", "bound before lowering"),
    ("param", "bound before lowering"),
    (
        "reshape",
        "a view: the JIT emits nothing (covered by every train step that flattens)",
    ),
    (
        "flatten",
        "a view: the JIT emits nothing (covered by every train step that flattens)",
    ),
    (
        "dropout",
        "a view in inference; train steps use dropout_mask, which has its case",
    ),
];

fn source(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether a test source builds op `kind` (as `ModelOp::Variant` or in `.qir` text).
fn builds(src: &str, kind: OpKind) -> bool {
    let variant = format!("ModelOp::{kind:?}");
    let qir = format!("= {} \"", kind.name());
    src.match_indices(&variant)
        .any(|(i, _)| !src[i + variant.len()..].starts_with(|c: char| c.is_alphanumeric()))
        || src.contains(&qir)
}

/// The op of the golden case `tests/golden/ops/<name>.qir` (its node of that kind).
fn golden_op(kind: OpKind) -> Option<ModelOp> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/ops")
        .join(format!("{}.qir", kind.name()));
    let text = std::fs::read_to_string(&path).ok()?;
    let g = qatc::ir::text::parse(&text, &path.display().to_string()).ok()?;
    let op = g
        .node_ids()
        .map(|n| &g.node(n).op)
        .find(|op| op.kind() == kind)
        .and_then(|op| op.as_model().cloned());
    op
}

#[test]
fn every_model_op_has_the_four_checks() {
    let gradcheck = source("gradcheck.rs");
    let jit = source("jit_ops.rs");
    let exported: Vec<OpKind> = support::one_layer_cases()
        .iter()
        .flat_map(|c| {
            let g = &c.model.graph;
            g.node_ids()
                .map(|n| g.node(n).op.kind())
                .collect::<Vec<_>>()
        })
        .collect();
    let reason = |list: &[(&str, &str)], k: OpKind| list.iter().any(|(n, _)| *n == k.name());
    let mut missing = Vec::new();
    for &k in OpKind::ALL.iter().filter(|k| k.family() == Family::Model) {
        let Some(op) = golden_op(k) else {
            missing.push(format!("{k}: no golden case tests/golden/ops/{k}.qir"));
            continue;
        };
        if !builds(&gradcheck, k) && !reason(NO_GRADCHECK, k) {
            missing.push(format!("{k}: no gradient check in tests/gradcheck.rs"));
        }
        if !builds(&jit, k) && !reason(NO_JIT_CASE, k) {
            missing.push(format!(
                "{k}: no JIT-vs-interpreter case in tests/jit_ops.rs"
            ));
        }
        match mapping(&op) {
            Mapping::Builtin { code, .. } => {
                if !exported.contains(&k) {
                    missing.push(format!(
                        "{k}: maps to {code:?} but no one-layer model in tests/support exports it"
                    ));
                }
            }
            Mapping::Tensor => {}
            Mapping::Removed(why) => assert!(!why.is_empty()),
        }
    }
    assert!(
        missing.is_empty(),
        "model ops without their checks:\n  {}",
        missing.join("\n  ")
    );
}

/// The exemptions name ops that exist.
#[test]
fn exemptions_name_model_ops() {
    for (name, why) in NO_GRADCHECK.iter().chain(NO_JIT_CASE) {
        let k = OpKind::from_name(name).unwrap_or_else(|| panic!("{name} is not an op"));
        assert_eq!(k.family(), Family::Model, "{name}");
        assert!(!why.is_empty());
    }
}
