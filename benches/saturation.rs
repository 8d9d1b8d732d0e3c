//! Equality-saturation speed on a generated ResNet-style graph.
//!
//! `cargo bench --bench saturation` builds ResNet-style models (conv + BatchNorm + ReLU
//! basic blocks with residual adds, projection shortcuts when the shape changes, global
//! average pool, dense), runs `default_8bit` then `export` on them, and reports for every
//! rewriting pass: why its saturation stopped, iterations, e-graph size, and the median time
//! of the saturation itself and of the whole pass (build e-graph, saturate, extract).

use qatc::ir::builder::{Functional, Layer};
use qatc::ir::graph::NodeId;
use qatc::ir::op::ModelOp;
use qatc::ir::op::Op;
use qatc::pass::{run_pipeline_with_report, PipelineOptions};
use std::time::Duration;

fn conv_bn(
    f: &mut Functional,
    x: NodeId,
    filters: usize,
    k: usize,
    stride: usize,
    relu: bool,
) -> NodeId {
    let h = f
        .layer(x, Layer::conv2d(filters, k).stride(stride).same().no_bias())
        .unwrap();
    let h = f.layer(h, Layer::batch_norm()).unwrap();
    if relu {
        f.layer(h, Layer::relu()).unwrap()
    } else {
        h
    }
}

/// A ResNet-style model with `blocks` basic blocks in three stages.
fn resnet(blocks: usize) -> qatc::ir::builder::Model {
    let mut f = Functional::new(&format!("resnet_{blocks}"), 0);
    let x = f.input("input", &[32, 32, 3]).unwrap();
    let mut h = conv_bn(&mut f, x, 16, 3, 1, true);
    let mut width = 16;
    for b in 0..blocks {
        let stage_start = b > 0 && b % (blocks / 3).max(1) == 0 && width < 64;
        let (stride, out) = if stage_start {
            (2, width * 2)
        } else {
            (1, width)
        };
        let shortcut = if stage_start {
            conv_bn(&mut f, h, out, 1, 2, false)
        } else {
            h
        };
        let y = conv_bn(&mut f, h, out, 3, stride, true);
        let y = conv_bn(&mut f, y, out, 3, 1, false);
        let y = f.add(shortcut, y).unwrap();
        h = f.layer(y, Layer::relu()).unwrap();
        width = out;
    }
    let h = f.layer(h, Layer::GlobalAvgPool).unwrap();
    let y = f.layer(h, Layer::dense(10)).unwrap();
    f.output("output", y);
    f.build().unwrap()
}

/// One rewriting pass across the runs.
struct Row {
    pass: String,
    stop: String,
    iterations: usize,
    egraph_nodes: usize,
    saturation: Vec<Duration>,
    total: Vec<Duration>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs = 11;
    println!("equality saturation, median of {runs} runs (release build)\n");
    for blocks in [30, 100] {
        let model = resnet(blocks);
        let ops = model
            .graph
            .node_ids()
            .filter(|&n| {
                !matches!(
                    model.graph.node(n).op,
                    Op::Model(ModelOp::Param) | Op::Model(ModelOp::Input)
                )
            })
            .count();
        println!(
            "{} ({ops} ops, {} nodes with params):",
            model.graph.name,
            model.graph.node_count()
        );
        let mut rows: Vec<Row> = Vec::new();
        for _ in 0..runs {
            let mut params = model.params.clone();
            let (_, report) = run_pipeline_with_report(
                model.graph.clone(),
                &mut params,
                "default_8bit,export",
                &PipelineOptions::eval(),
            )
            .expect("the pipeline runs");
            let sat: Vec<_> = report
                .passes
                .iter()
                .filter_map(|p| p.saturation.as_ref().map(|s| (p, s)))
                .collect();
            if rows.is_empty() {
                rows = sat
                    .iter()
                    .map(|(p, s)| Row {
                        pass: p.pass.clone(),
                        stop: s.stop.to_string(),
                        iterations: s.iterations,
                        egraph_nodes: s.egraph_nodes,
                        saturation: Vec::new(),
                        total: Vec::new(),
                    })
                    .collect();
            }
            for (row, (p, s)) in rows.iter_mut().zip(&sat) {
                assert_eq!(
                    s.stop.to_string(),
                    row.stop,
                    "the stop reason is deterministic"
                );
                row.saturation.push(s.saturation_time);
                row.total.push(p.time);
            }
        }
        println!(
            "  {:<16} {:<10} {:>5} {:>8} {:>14} {:>12}",
            "pass", "stop", "iters", "e-nodes", "saturate (ms)", "pass (ms)"
        );
        for r in rows {
            println!(
                "  {:<16} {:<10} {:>5} {:>8} {:>14.2} {:>12.2}",
                r.pass,
                r.stop,
                r.iterations,
                r.egraph_nodes,
                median(r.saturation).as_secs_f64() * 1e3,
                median(r.total).as_secs_f64() * 1e3
            );
        }
        println!();
    }
}
