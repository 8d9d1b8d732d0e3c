//! The op table is fully covered by golden cases: every `OpKind` has
//! `tests/golden/ops/<op>.qir`, and that case really contains the op (tests/golden.rs
//! verifies, prints and snapshot-compares it). Adding an op without a case fails here.

use qatc::ir::text;
use qatc::ir::OpKind;
use std::path::Path;

#[test]
fn every_op_has_a_golden_case_that_uses_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ops");
    let mut missing = Vec::new();
    for &kind in OpKind::ALL {
        let path = dir.join(format!("{}.qir", kind.name()));
        if !path.exists() {
            missing.push(format!("{}: no {}", kind.name(), path.display()));
            continue;
        }
        let g = text::parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let uses = g
            .canonical_order()
            .into_iter()
            .any(|id| g.node(id).op.kind() == kind);
        if !uses {
            missing.push(format!(
                "{}: {} has no {} node",
                kind.name(),
                path.display(),
                kind.name()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "ops without a golden case:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_golden_op_case_is_named_after_an_op() {
    // `<op>.qir` or `<op>_<variant>.qir`: a case for an op that was renamed or removed fails
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ops");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let named = OpKind::ALL.iter().any(|k| {
            stem == k.name()
                || stem
                    .strip_prefix(k.name())
                    .is_some_and(|rest| rest.starts_with('_'))
        });
        assert!(named, "{}: not named after an op", path.display());
    }
}
