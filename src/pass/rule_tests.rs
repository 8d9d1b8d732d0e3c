//! One unit test per rule: each rule runs alone on a small graph that it must rewrite, and
//! the extracted graph must equal the expected one. A meta-test checks that every rule of
//! every rule file has its case here, that every rule file parses (so every named condition
//! and attribute function it uses exists), and that `passes/` holds no rule file qatc does
//! not compile in.

use crate::ir::text::{parse, print};
use crate::rewrite::rules::{builtin, BUILTIN};
use crate::rewrite::{saturate, Limits, Mode, QAnalysis};
use std::collections::BTreeSet;

struct Case {
    file: &'static str,
    rule: String,
    mode: Mode,
    before: String,
    after: String,
}

fn case(file: &'static str, rule: &str, before: &str, after: &str) -> Case {
    Case {
        file,
        rule: rule.to_string(),
        mode: Mode::Eval,
        before: before.to_string(),
        after: after.to_string(),
    }
}

const BN: &str = "param @g : f32[4]\nparam @be : f32[4]\nparam @m : f32[4]\nparam @v : f32[4]\n";

fn cases() -> Vec<Case> {
    let mut cs = vec![
        // ---- canonicalize
        case(
            "canonicalize",
            "dropout_eval",
            r#"%0 = input "x" : f32[1,4]
%1 = dropout "d" (%0) {rate=0.5}
%2 = relu "r" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,4]
%1 = relu "r" (%0)
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "reshape_reshape",
            r#"%0 = input "x" : f32[1,2,3,4]
%1 = reshape "a" (%0) {shape=[6,4]}
%2 = reshape "b" (%1) {shape=[24]}
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,2,3,4]
%1 = reshape "b" (%0) {shape=[24]}
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "flatten_reshape",
            r#"%0 = input "x" : f32[1,2,3,4]
%1 = reshape "r" (%0) {shape=[4,6]}
%2 = flatten "f" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,2,3,4]
%1 = flatten "f" (%0)
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "reshape_flatten",
            r#"%0 = input "x" : f32[1,2,3,4]
%1 = flatten "f" (%0)
%2 = reshape "r" (%1) {shape=[6,4]}
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,2,3,4]
%1 = reshape "r" (%0) {shape=[6,4]}
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "flatten_flatten",
            r#"%0 = input "x" : f32[1,2,3]
%1 = flatten "f" (%0)
%2 = flatten "g" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,2,3]
%1 = flatten "f" (%0)
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "reshape_identity",
            r#"%0 = input "x" : f32[1,6]
%1 = reshape "r" (%0) {shape=[6]}
%2 = relu "a" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,6]
%1 = relu "a" (%0)
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "flatten_identity",
            r#"%0 = input "x" : f32[1,6]
%1 = flatten "f" (%0)
%2 = relu "a" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,6]
%1 = relu "a" (%0)
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "transpose_identity",
            r#"%0 = input "x" : f32[1,2,3]
%1 = transpose "t" (%0) {perm=[0,1,2]}
%2 = relu "a" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,2,3]
%1 = relu "a" (%0)
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "pad_identity",
            r#"%0 = input "x" : f32[1,2,3]
%1 = pad "p" (%0) {pads=[[0,0],[0,0],[0,0]]}
%2 = relu "a" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,2,3]
%1 = relu "a" (%0)
output "y" = %1"#,
        ),
        case(
            "canonicalize",
            "crop_identity",
            r#"%0 = input "x" : f32[1,2,3]
%1 = crop "c" (%0) {crops=[[0,0],[0,0],[0,0]]}
%2 = relu "a" (%1)
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,2,3]
%1 = relu "a" (%0)
output "y" = %1"#,
        ),
        // ---- quantize
        case(
            "quantize",
            "realize",
            r#"%0 = input "x" : f32[1,4]
%1 = quant "x/act" (%0) {bits=8, range=ema, state="x/act"}
output "y" = %1"#,
            r#"%0 = input "x" : f32[1,4]
%1 = fake_quant "x/act" (%0) {bits=8, range=ema, state="x/act"}
output "y" = %1"#,
        ),
        case(
            "quantize",
            "fused_relu",
            r#"param @k : f32[2,1,1,1]
%0 = input "x" : f32[1,2,2,1]
%1 = conv2d "c" (%0, @k)
%2 = quant "c/act" (%1) {bits=8, range=ema, state="c/act"}
%3 = relu "r" (%2)
output "y" = %3"#,
            r#"param @k : f32[2,1,1,1]
%0 = input "x" : f32[1,2,2,1]
%1 = conv2d "c" (%0, @k)
%2 = relu "r" (%1)
output "y" = %2"#,
        ),
        case(
            "quantize",
            "fused_relu6",
            r#"%0 = input "x" : f32[1,4]
%1 = add "a" (%0, %0)
%2 = quant "a/act" (%1) {bits=8, range=ema, state="a/act"}
%3 = relu6 "r" (%2)
output "y" = %3"#,
            r#"%0 = input "x" : f32[1,4]
%1 = add "a" (%0, %0)
%2 = relu6 "r" (%1)
output "y" = %2"#,
        ),
        case(
            "quantize",
            "folded_batch_norm",
            &format!(
                r#"param @k : f32[4,4]
{BN}%0 = input "x" : f32[1,4]
%1 = dense "d" (%0, @k)
%2 = quant "d/act" (%1) {{bits=8, range=ema, state="d/act"}}
%3 = batch_norm "bn" (%2, @g, @be, @m, @v)
output "y" = %3"#
            ),
            &format!(
                r#"param @k : f32[4,4]
{BN}%0 = input "x" : f32[1,4]
%1 = dense "d" (%0, @k)
%2 = batch_norm "bn" (%1, @g, @be, @m, @v)
output "y" = %2"#
            ),
        ),
        // ---- fuse_fake_quant
        case(
            "fuse_fake_quant",
            "idempotent",
            r#"%0 = input "x" : f32[1,4]
%1 = fake_quant "a" (%0) {bits=8, range=fixed, min=-1.0, max=1.0}
%2 = fake_quant "b" (%1) {bits=8, range=fixed, min=-1.0, max=1.0}
%3 = relu "r" (%1)
output "y" = %2
output "z" = %3"#,
            r#"%0 = input "x" : f32[1,4]
%1 = fake_quant "a" (%0) {bits=8, range=fixed, min=-1.0, max=1.0}
%2 = relu "r" (%1)
output "y" = %1
output "z" = %2"#,
        ),
        case(
            "fuse_fake_quant",
            "requantize",
            r#"%0 = input "x" : f32[1,4]
%1 = fake_quant "x/act" (%0) {bits=8, range=ema, state="x/act"}
%2 = fake_quant "c/in0" (%1) {bits=8, range=tied, state="c/act"}
output "y" = %2"#,
            r#"%0 = input "x" : f32[1,4]
%1 = fake_quant "c/in0" (%0) {bits=8, range=tied, state="c/act"}
output "y" = %1"#,
        ),
    ];
    // ---- fuse_fake_quant: shared scales through same-scale ops
    let same_scale = [
        (
            "shared_max_pool2d",
            "max_pool2d",
            "{size=[2,2], stride=[2,2], padding=valid}",
            "f32[1,4,4,2]",
        ),
        (
            "shared_global_max_pool",
            "global_max_pool",
            "",
            "f32[1,4,4,2]",
        ),
        (
            "shared_reshape",
            "reshape",
            "{shape=[16,2]}",
            "f32[1,4,4,2]",
        ),
        ("shared_flatten", "flatten", "", "f32[1,4,4,2]"),
        (
            "shared_transpose",
            "transpose",
            "{perm=[0,2,1,3]}",
            "f32[1,4,4,2]",
        ),
        (
            "shared_pad",
            "pad",
            "{pads=[[0,0],[1,1],[0,0],[0,0]]}",
            "f32[1,4,4,2]",
        ),
        (
            "shared_crop",
            "crop",
            "{crops=[[0,0],[1,1],[0,0],[0,0]]}",
            "f32[1,4,4,2]",
        ),
        (
            "shared_thresholded_relu",
            "thresholded_relu",
            "{theta=0.5}",
            "f32[1,4,4,2]",
        ),
    ];
    for (rule, op, attrs, ty) in same_scale {
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" {attrs}")
        };
        cs.push(case(
            "fuse_fake_quant",
            rule,
            &format!(
                r#"%0 = input "x" : {ty}
%1 = fake_quant "a" (%0) {{bits=8, range=ema, state="a"}}
%2 = {op} "p" (%1){attrs}
%3 = fake_quant "b" (%2) {{bits=8, range=tied, state="c/act"}}
output "y" = %3"#
            ),
            &format!(
                r#"%0 = input "x" : {ty}
%1 = fake_quant "b" (%0) {{bits=8, range=tied, state="c/act"}}
%2 = {op} "p" (%1){attrs}
output "y" = %2"#
            ),
        ));
    }
    // ---- fold_bn
    let kernels = [
        (
            "conv2d",
            "param @w : f32[4,1,1,2]\nparam @b : f32[4]\n",
            "f32[1,3,3,2]",
            0,
        ),
        (
            "depthwise_conv2d",
            "param @w : f32[1,3,3,4]\nparam @b : f32[4]\n",
            "f32[1,3,3,4]",
            3,
        ),
        (
            "dense",
            "param @w : f32[4,2]\nparam @b : f32[4]\n",
            "f32[1,2]",
            0,
        ),
    ];
    for (op, params, ty, axis) in kernels {
        let params_nobias = params.replace("param @b : f32[4]\n", "");
        cs.push(case(
            "fold_bn",
            &format!("{op}_bn"),
            &format!(
                r#"{params}{BN}%0 = input "x" : {ty}
%1 = {op} "c" (%0, @w, @b)
%2 = batch_norm "bn" (%1, @g, @be, @m, @v)
output "y" = %2"#
            ),
            &format!(
                r#"{params}{BN}%0 = input "x" : {ty}
%1 = bn_scale "bn.scale" (@g, @v)
%2 = scale_channels "c.folded_kernel" (@w, %1) {{axis={axis}}}
%3 = batch_norm "c.folded_bias" (@b, @g, @be, @m, @v)
%4 = {op} "c" (%0, %2, %3)
output "y" = %4"#
            ),
        ));
        cs.push(case(
            "fold_bn",
            &format!("{op}_nobias_bn"),
            &format!(
                r#"{params_nobias}{BN}%0 = input "x" : {ty}
%1 = {op} "c" (%0, @w)
%2 = batch_norm "bn" (%1, @g, @be, @m, @v)
output "y" = %2"#
            ),
            &format!(
                r#"{params_nobias}{BN}%0 = input "x" : {ty}
%1 = bn_scale "bn.scale" (@g, @v)
%2 = scale_channels "c.folded_kernel" (@w, %1) {{axis={axis}}}
%3 = mul "c.folded_bias.mean_scaled" (@m, %1)
%4 = sub "c.folded_bias" (@be, %3)
%5 = {op} "c" (%0, %2, %4)
output "y" = %5"#
            ),
        ));
    }
    cs.push(case(
        "fold_bn",
        "fake_quant_through_scaling",
        r#"param @w : f32[4,2]
param @s : f32[4]
%0 = fake_quant "w/fq" (@w) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%1 = scale_channels "k" (%0, @s) {axis=0}
output "y" = %1"#,
        r#"param @w : f32[4,2]
param @s : f32[4]
%0 = scale_channels "k" (@w, @s) {axis=0}
%1 = fake_quant "w/fq" (%0) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
output "y" = %1"#,
    ));
    // ---- fuse_activation
    let producers = [
        (
            "conv2d",
            Some(("param @w : f32[4,1,1,2]\n", "f32[1,3,3,2]")),
        ),
        (
            "depthwise_conv2d",
            Some(("param @w : f32[1,3,3,2]\n", "f32[1,3,3,2]")),
        ),
        (
            "conv2d_transpose",
            Some(("param @w : f32[4,1,1,2]\n", "f32[1,3,3,2]")),
        ),
        ("dense", Some(("param @w : f32[4,2]\n", "f32[1,2]"))),
        ("add", None),
        ("sub", None),
        ("mul", None),
    ];
    for (op, kernel) in producers {
        for act in ["relu", "relu6"] {
            let variants: Vec<(String, String, String)> = match kernel {
                Some((w, ty)) => {
                    let c = w
                        .trim_end()
                        .rsplit('[')
                        .next()
                        .unwrap()
                        .split(',')
                        .next()
                        .unwrap();
                    let c = if op == "depthwise_conv2d" { "2" } else { c };
                    let with_bias = format!("{w}param @b : f32[{c}]\n");
                    vec![
                        (
                            format!("{op}_{act}"),
                            format!("{with_bias}%0 = input \"x\" : {ty}"),
                            "%0, @w, @b".to_string(),
                        ),
                        (
                            format!("{op}_nobias_{act}"),
                            format!("{w}%0 = input \"x\" : {ty}"),
                            "%0, @w".to_string(),
                        ),
                    ]
                }
                None => vec![(
                    format!("{op}_{act}"),
                    "%0 = input \"x\" : f32[1,4]".to_string(),
                    "%0, %0".to_string(),
                )],
            };
            for (rule, head, args) in variants {
                cs.push(case(
                    "fuse_activation",
                    &rule,
                    &format!(
                        "{head}\n%1 = {op} \"p\" ({args})\n%2 = {act} \"a\" (%1)\n%3 = fake_quant \"a/act\" (%2) {{bits=8, range=fixed, min=0.0, max=6.0}}\noutput \"y\" = %3"
                    ),
                    &format!(
                        "{head}\n%1 = {op} \"p\" ({args}) {{activation={act}}}\n%2 = fake_quant \"a/act\" (%1) {{bits=8, range=fixed, min=0.0, max=6.0}}\noutput \"y\" = %2"
                    ),
                ));
            }
        }
    }
    cs
}

fn canonical(src: &str, what: &str) -> String {
    let text = format!("model \"t\"\n{src}\n");
    let g = parse(&text, what).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
    print(&g)
}

#[test]
fn every_rule_rewrites_its_example() {
    let mut failures = Vec::new();
    for c in cases() {
        let rules = builtin(c.file).unwrap().only(&[&c.rule]).unwrap();
        let before = canonical(&c.before, &format!("{}/{} before", c.file, c.rule));
        let g = parse(&before, "before").unwrap();
        let analysis = QAnalysis {
            mode: c.mode,
            allow_inexact_fold: false,
            ..QAnalysis::default()
        };
        let (out, report) = saturate(&g, &rules, analysis, Limits::default()).unwrap();
        let got = print(&out);
        let want = canonical(&c.after, &format!("{}/{} after", c.file, c.rule));
        if report.applied.get(&c.rule).copied().unwrap_or(0) == 0 {
            failures.push(format!(
                "{}/{}: the rule did not fire ({report})",
                c.file, c.rule
            ));
        } else if got != want {
            failures.push(format!(
                "{}/{}:\n--- got\n{got}--- want\n{want}",
                c.file, c.rule
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_rule_has_a_case_and_every_rule_file_parses() {
    let covered: BTreeSet<(String, String)> = cases()
        .into_iter()
        .map(|c| (c.file.to_string(), c.rule))
        .collect();
    let mut missing = Vec::new();
    for (stem, _) in BUILTIN {
        let file = builtin(stem).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            super::pass(stem).is_some(),
            "passes/{stem}.rules has no pass `{stem}`"
        );
        for r in &file.rules {
            if !covered.contains(&(stem.to_string(), r.name.clone())) {
                missing.push(format!("{stem}/{}", r.name));
            }
            assert!(
                !r.comment.is_empty(),
                "{stem}/{} has no identity comment above it",
                r.name
            );
        }
    }
    assert!(missing.is_empty(), "rules without a unit case: {missing:?}");
    // every rule file on disk is compiled in
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("passes");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rules") {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(
                BUILTIN.iter().any(|(s, _)| *s == stem),
                "{} is not in rewrite::rules::BUILTIN",
                p.display()
            );
            // the file on disk is the one compiled in
            let disk = std::fs::read_to_string(&p).unwrap();
            let built = BUILTIN.iter().find(|(s, _)| *s == stem).unwrap().1;
            assert_eq!(disk, built, "{} changed: rebuild", p.display());
        }
    }
}

#[test]
fn train_mode_keeps_dropout() {
    let g = parse(
        "model \"t\"\n%0 = input \"x\" : f32[1,4]\n%1 = dropout \"d\" (%0) {rate=0.5}\noutput \"y\" = %1\n",
        "t",
    )
    .unwrap();
    let rules = builtin("canonicalize").unwrap();
    let analysis = QAnalysis {
        mode: Mode::Train,
        allow_inexact_fold: false,
        ..QAnalysis::default()
    };
    let (out, report) = saturate(&g, rules, analysis, Limits::default()).unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(print(&out), print(&g));
}
