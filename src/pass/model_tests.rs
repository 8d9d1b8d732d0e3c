//! The pipelines on the reference models: `default_8bit` puts fake-quants exactly where a
//! full-int8 TFLite model has quantized tensors (the set the TFLite converter makes from
//! TFMOT's model: the input, every conv / depthwise output after its fused activation, every
//! add, the mean, the dense output, per-axis weights on every conv, depthwise and dense),
//! the results have graph forms 2 and 3, and the pipelines are deterministic.

use super::forms::{check_export_ready, check_qat_graph};
use super::*;
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::ModelOp;
use crate::ir::op::{Op, OpKind, RangeSource};
use crate::ir::text::print;
use std::collections::BTreeSet;
use std::sync::Arc;

/// `(quantized value, range kind, axis)` of every fake-quant.
fn quantization_points(g: &Graph) -> BTreeSet<(String, String, Option<usize>)> {
    g.node_ids()
        .filter_map(|n| match &g.node(n).op {
            Op::Model(ModelOp::FakeQuant(q)) => {
                let x = g.operand(n, 0).unwrap();
                let range = match &q.range {
                    RangeSource::LastValue => "last_value",
                    RangeSource::Ema { .. } => "ema",
                    RangeSource::AllValues { .. } => "all_values",
                    RangeSource::Tied { .. } => "tied",
                    RangeSource::Fixed { .. } => "fixed",
                    RangeSource::Learned { .. } => "learned",
                    RangeSource::Operands => "operands",
                    RangeSource::Trained(_) => "trained",
                };
                Some((g.node(x).name.clone(), range.to_string(), q.axis))
            }
            _ => None,
        })
        .collect()
}

fn kernel_ops(g: &Graph) -> Vec<NodeId> {
    g.canonical_order()
        .into_iter()
        .filter(|&n| {
            matches!(
                g.node(n).op.kind(),
                OpKind::Conv2d | OpKind::DepthwiseConv2d | OpKind::Dense
            )
        })
        .collect()
}

/// What the TFLite converter quantizes, derived from the float model: the input, the output
/// of every kernel op (after BN and activation, which fuse), every add, the mean.
fn tflite_activation_points(model: &Graph) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = model
        .inputs()
        .iter()
        .map(|&i| model.node(i).name.clone())
        .collect();
    for n in model.canonical_order() {
        let kind = model.node(n).op.kind();
        let ends_group = match kind {
            OpKind::Add | OpKind::GlobalAvgPool => true,
            OpKind::Conv2d | OpKind::DepthwiseConv2d | OpKind::Dense => {
                // the group ends after an optional BatchNorm and an optional ReLU/ReLU6
                let mut v = n;
                for next in [OpKind::BatchNorm, OpKind::Relu6] {
                    if let [(u, 0)] = model.users(v).as_slice() {
                        if model.node(*u).op.kind() == next {
                            v = *u;
                        }
                    }
                }
                if let [(u, 0)] = model.users(v).as_slice() {
                    if model.node(*u).op.kind() == OpKind::Relu {
                        v = *u;
                    }
                }
                out.insert(model.node(v).name.clone());
                false
            }
            _ => false,
        };
        if ends_group {
            out.insert(model.node(n).name.clone());
        }
    }
    out
}

fn weight_points(model: &Graph) -> BTreeSet<(String, String, Option<usize>)> {
    kernel_ops(model)
        .into_iter()
        .map(|n| {
            let k = model.operand(n, 1).unwrap();
            let axis = crate::ir::verify::kernel_quant_axis(&model.node(n).op);
            (model.node(k).name.clone(), "last_value".to_string(), axis)
        })
        .collect()
}

#[test]
fn mnist_cnn_gets_exactly_the_tflite_quantization_points() {
    let mut m = crate::models::mnist_cnn(0).unwrap();
    let model = m.graph.clone();
    let qat = run_pipeline(
        m.graph,
        &mut m.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let got = quantization_points(&qat);
    let s = |a: &str, r: &str, x: Option<usize>| (a.to_string(), r.to_string(), x);
    let want: BTreeSet<_> = [
        s("input", "all_values", None),
        s("conv2d.kernel", "last_value", Some(0)),
        s("conv2d.relu", "ema", None),
        s("dense.kernel", "last_value", Some(0)),
        s("dense", "ema", None),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{}", print(&qat));
    // the structural derivation agrees with the hand-written list
    let mut derived = weight_points(&model);
    derived.insert(s("input", "all_values", None));
    for a in tflite_activation_points(&model) {
        if a != "input" {
            derived.insert(s(&a, "ema", None));
        }
    }
    assert_eq!(derived, want);
    check_qat_graph(&qat, &m.params).unwrap();
    let export = run_pipeline(qat, &mut m.params, "export", &PipelineOptions::eval()).unwrap();
    check_export_ready(&export).unwrap();
}

#[test]
fn mbv2_tiny_gets_exactly_the_tflite_quantization_points() {
    let mut m = crate::models::mbv2_tiny(0).unwrap();
    let model = m.graph.clone();
    let qat = run_pipeline(
        m.graph,
        &mut m.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    let got = quantization_points(&qat);
    let mut want = weight_points(&model);
    let acts = tflite_activation_points(&model);
    for a in &acts {
        let range = if a == "input" { "all_values" } else { "ema" };
        want.insert((a.clone(), range.to_string(), None));
    }
    assert_eq!(got, want, "{}", print(&qat));
    // spelled out: 8 conv groups, 3 depthwise groups, 2 adds, the mean, the dense, the input
    let expected_acts: BTreeSet<String> = [
        "input",
        "re_lu",
        "re_lu_1",
        "re_lu_2",
        "batch_normalization_3",
        "add",
        "re_lu_3",
        "re_lu_4",
        "batch_normalization_6",
        "re_lu_5",
        "re_lu_6",
        "batch_normalization_9",
        "add_1",
        "re_lu_7",
        "global_average_pooling2d",
        "dense",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(acts, expected_acts);
    let depthwise: Vec<_> = want.iter().filter(|(_, _, a)| *a == Some(3)).collect();
    assert_eq!(depthwise.len(), 3);
    check_qat_graph(&qat, &m.params).unwrap();

    // after export, the activation fake-quants follow exactly the TFLite ops with int8
    // outputs: QUANTIZE (input), every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, ADD, MEAN
    let export = run_pipeline(qat, &mut m.params, "export", &PipelineOptions::eval()).unwrap();
    check_export_ready(&export).unwrap();
    let after: BTreeSet<String> = quantization_points(&export)
        .into_iter()
        .filter(|(_, r, _)| r != "last_value")
        .map(|(v, _, _)| v)
        .collect();
    let tflite_ops: BTreeSet<String> = model
        .canonical_order()
        .into_iter()
        .filter(|&n| {
            matches!(
                model.node(n).op.kind(),
                OpKind::Input
                    | OpKind::Conv2d
                    | OpKind::DepthwiseConv2d
                    | OpKind::Dense
                    | OpKind::Add
                    | OpKind::GlobalAvgPool
            )
        })
        .map(|n| model.node(n).name.clone())
        .collect();
    assert_eq!(after, tflite_ops);
    assert!(!export
        .node_ids()
        .any(|n| matches!(export.node(n).op.kind(), OpKind::BatchNorm | OpKind::Relu6)));
    // every activation state exists in the store; folded params too
    for n in export.node_ids() {
        if let Op::Model(ModelOp::Param) = export.node(n).op {
            assert!(m.params.contains(&export.node(n).name));
        }
    }
}

#[test]
fn pipelines_are_deterministic() {
    let run = || {
        let mut m = crate::models::mbv2_tiny(3).unwrap();
        let g = run_pipeline(
            m.graph,
            &mut m.params,
            "default_8bit,export",
            &PipelineOptions::eval(),
        )
        .unwrap();
        (print(&g), m.params)
    };
    let (a, pa) = run();
    let (b, pb) = run();
    assert_eq!(a, b);
    assert_eq!(pa, pb);
}

#[test]
fn a_train_mode_qat_graph_loses_its_dropout_in_export() {
    let mut m = crate::ir::builder::Sequential::new("d", &[16], 0)
        .add(crate::ir::builder::Layer::Dropout(0.5))
        .add(crate::ir::builder::Layer::dense(4))
        .add(crate::ir::builder::Layer::relu())
        .build()
        .unwrap();
    let qat = run_pipeline(
        m.graph,
        &mut m.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    assert!(qat
        .node_ids()
        .any(|n| qat.node(n).op.kind() == OpKind::Dropout));
    check_qat_graph(&qat, &m.params).unwrap();
    let export = run_pipeline(qat, &mut m.params, "export", &PipelineOptions::eval()).unwrap();
    assert!(!export
        .node_ids()
        .any(|n| export.node(n).op.kind() == OpKind::Dropout));
    check_export_ready(&export).unwrap();
}

#[test]
fn hooks_see_every_pass_and_reports_say_why_saturation_stopped() {
    use std::sync::Mutex;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let opts = PipelineOptions::eval().with_hook(Arc::new(move |ev: &PassEvent<'_>| {
        s.lock().unwrap().push(format!("{}:{}", ev.index, ev.pass));
        Ok(())
    }));
    let mut m = crate::models::mnist_cnn(0).unwrap();
    let (_, report) =
        run_pipeline_with_report(m.graph, &mut m.params, "default_8bit", &opts).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "0:input",
            "1:canonicalize",
            "2:annotate",
            "3:quantize",
            "4:fuse_fake_quant"
        ]
    );
    let q = report.passes[2].saturation.as_ref().unwrap();
    assert!(q.saturated(), "{q}");
    assert_eq!(q.applied.get("realize"), Some(&6));
    assert!(
        report.passes[1].saturation.is_none(),
        "annotate is not a rewriting pass"
    );

    // an iteration limit of 1 stops quantize before the fusions: reported, and the best form
    // found so far (markers realized) is still a valid QAT graph
    let mut m = crate::models::mbv2_tiny(0).unwrap();
    let opts = PipelineOptions {
        limits: Limits {
            iterations: 1,
            ..Limits::default()
        },
        ..PipelineOptions::eval()
    };
    let (_, report) =
        run_pipeline_with_report(m.graph, &mut m.params, "annotate,quantize", &opts).unwrap();
    let q = report.passes[1].saturation.as_ref().unwrap();
    assert_eq!(q.stop, crate::rewrite::saturate::Stop::IterationLimit(1));
    assert!(
        report.passes[1].warnings[0].contains("did not saturate"),
        "{:?}",
        report.passes[1].warnings
    );
}

#[test]
fn state_params_follow_the_observers() {
    let mut m = crate::models::mnist_cnn(0).unwrap();
    let qat = run_pipeline(
        m.graph,
        &mut m.params,
        "default_8bit",
        &PipelineOptions::train(),
    )
    .unwrap();
    for s in ["input/act", "conv2d.relu/act", "dense/act"] {
        let (lo, hi) = crate::quant::scheme::state_params(s);
        assert_eq!(m.params.get(&lo).unwrap().data, vec![-6.0]);
        assert_eq!(m.params.get(&hi).unwrap().data, vec![6.0]);
    }
    // the conv's own observer was dropped by the fusion: no state for it
    assert!(!m.params.contains("conv2d/act.min"));
    // and the graph evaluates with them
    let x = crate::ir::params::Tensor::full(vec![1, 28, 28, 1], 0.5);
    crate::ir::interp::run(&qat, &m.params, &[("input", x.into())]).unwrap();
}

/// A chain of 100 residual blocks: each block's input is used twice, so a term's kernel count
/// doubles per block. 64-bit extraction costs saturated there and every local choice tied, so
/// `fuse_activation` left ReLUs unfused (found by the pipeline's form check); the 128-bit
/// costs keep the choice exact, and the export pipeline reaches form 3.
#[test]
fn a_hundred_residual_blocks_still_fuse_every_activation() {
    use crate::ir::builder::{Functional, Layer};
    let mut f = Functional::new("residual_chain", 0);
    let x = f.input("input", &[4, 4, 2]).unwrap();
    let mut h = f.layer(x, Layer::conv2d(2, 1)).unwrap();
    for _ in 0..100 {
        let y = f.layer(h, Layer::conv2d(2, 1)).unwrap();
        let y = f.add(h, y).unwrap();
        h = f.layer(y, Layer::relu()).unwrap();
    }
    f.output("output", h);
    let m = f.build().unwrap();
    let mut p = m.params.clone();
    let qat = run_pipeline(m.graph, &mut p, "default_8bit", &PipelineOptions::eval()).unwrap();
    let export = run_pipeline(qat, &mut p, "export", &PipelineOptions::eval()).unwrap();
    check_export_ready(&export).unwrap();
    let relus = export
        .node_ids()
        .filter(|&n| matches!(export.node(n).op, Op::Model(ModelOp::Relu)))
        .count();
    assert_eq!(relus, 0, "every ReLU fuses into its add");
}

/// A step that does not leave the form its pipeline promises fails with an error naming
/// the pass, the form and the node: here `fuse_activation` with a rule file that fuses
/// nothing leaves mnist_cnn's ReLU standing where form 3 wants it fused.
#[test]
fn a_step_that_breaks_its_form_is_named() {
    let dir = std::env::temp_dir().join(format!("qatc-forms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("passes");
    for stem in ["canonicalize", "quantize", "fuse_fake_quant", "fold_bn"] {
        let f = format!("{stem}.rules");
        std::fs::copy(src.join(&f), dir.join(&f)).unwrap();
    }
    std::fs::write(dir.join("fuse_activation.rules"), "# fuses nothing\n").unwrap();
    let mut m = crate::models::mnist_cnn(0).unwrap();
    let opts = PipelineOptions {
        rules_dir: Some(dir.clone()),
        check_forms: true,
        ..PipelineOptions::eval()
    };
    let qat = run_pipeline(m.graph, &mut m.params, "default_8bit", &opts).unwrap();
    let err = run_pipeline(qat, &mut m.params, "export", &opts).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    let crate::Error::Form { pass, source, .. } = &err else {
        panic!("not a form error: {err}");
    };
    assert_eq!(pass, "fuse_activation");
    let msg = err.to_string();
    assert!(msg.contains("form 3") && msg.contains("conv2d"), "{msg}");
    assert!(matches!(**source, crate::Error::Node { .. }), "{source:?}");
    assert!(std::error::Error::source(&err).is_some());
}
