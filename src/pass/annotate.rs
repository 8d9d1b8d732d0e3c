//! `annotate`: marks what to quantize, per the scheme's policy table and the per-layer
//! overrides, by wrapping values in `quant` markers (TFMOT's `quantize_annotate`):
//! - each model input: the input spec (`all_values`), marker `<input>/act`;
//! - a kernel op's kernel (operand 1): the weight spec, marker `<kernel>/fq`;
//! - the output of kernel ops, of ops TFLite requantizes, and of a BatchNorm that follows a
//!   conv2d / depthwise_conv2d / dense: the activation spec, marker `<node>/act`;
//! - concat: the output observes (`<concat>/act`), each operand `i` gets a marker
//!   `<concat>/in<i>` tied to it.
//!
//! Overrides apply by node name. A BatchNorm folded into the kernel op before it and a
//! ReLU/ReLU6 TFLite fuses into its producer have no layer of their own in Keras terms, so
//! they follow their producer's override unless they have one themselves.
//!
//! It marks generously (every candidate value); `quantize`'s rules then drop the markers a
//! fused TFLite kernel does not need. An op the scheme cannot quantize is an error that
//! names the node and the override that handles it.

use super::context::{Markers, Pass, PassContext};
use crate::error::{Error, Result};
use crate::ir::graph::{Graph, NodeId};
use crate::ir::op::{FakeQuantAttrs, ModelOp, Op, PassOp};
use crate::ir::types::DType;
use crate::quant::scheme::{
    activation_state, override_for, policy, tied_input_name, weight_quantizer_name, Granularity,
    LayerConfig, LayerOverride, Policy, QuantConfig,
};
use std::collections::HashMap;

pub struct Annotate;

/// Wraps every use of `value` in a marker named `name` (the marker then carries the value).
fn mark_value(g: &mut Graph, value: NodeId, spec: FakeQuantAttrs, name: &str) -> Result<NodeId> {
    let m = g.add(Op::Pass(PassOp::Quant(spec)), name, &[value])?;
    g.replace_all_uses(value, m);
    g.set_operand(m, 0, value);
    Ok(m)
}

/// A name for a quantizer, unique in the graph.
fn fresh(g: &Graph, base: &str) -> String {
    g.unique_name(base)
}

/// All users of `id` in `g` are already fake-quants (an explicitly quantized value).
fn quantized_explicitly(g: &Graph, id: NodeId) -> bool {
    let users = g.users(id);
    !users.is_empty()
        && users
            .iter()
            .all(|(u, _)| matches!(g.node(*u).op, Op::Model(ModelOp::FakeQuant(_))))
}

/// The config of every node: its own override, else — for a BatchNorm folded into the
/// kernel op before it, or a ReLU/ReLU6 TFLite fuses into its producer — the producer's (a
/// Keras `Conv2D(activation=...)` is one layer, here it is two nodes), else none.
fn effective_configs<'o>(
    g: &Graph,
    order: &[NodeId],
    overrides: &'o [LayerOverride],
) -> HashMap<NodeId, Option<&'o LayerConfig>> {
    let mut cfg: HashMap<NodeId, Option<&LayerConfig>> = HashMap::new();
    for &id in order {
        let own = override_for(overrides, &g.node(id).name);
        let producer = g.operand(id, 0).filter(|&p| g.use_count(p) == 1);
        let producer_op = producer.and_then(|p| g.node(p).op.as_model());
        let op = g.node(id).op.as_model();
        // a BatchNorm folds into the kernel op before it; a ReLU/ReLU6 fuses into an op with
        // an activation slot, or joins a BatchNorm that joined its kernel op
        let inherited = match (op, producer_op) {
            (Some(ModelOp::BatchNorm { .. }), Some(p)) if p.folds_batch_norm() => producer,
            (Some(o), Some(p))
                if o.as_fusable_activation().is_some()
                    && (p.activation().is_some() || matches!(p, ModelOp::BatchNorm { .. })) =>
            {
                producer
            }
            _ => None,
        };
        let c = own.or_else(|| inherited.and_then(|p| cfg.get(&p).copied().flatten()));
        cfg.insert(id, c);
    }
    cfg
}

impl Pass for Annotate {
    fn name(&self) -> &'static str {
        "annotate"
    }

    fn description(&self) -> &'static str {
        "wrap the values the scheme quantizes in `quant` markers"
    }

    fn markers(&self) -> Markers {
        Markers::Introduce
    }

    fn run(&self, mut g: Graph, cx: &mut PassContext<'_>) -> Result<Graph> {
        let opts = cx.opts;
        let scheme = &opts.scheme;
        let orig = g.clone();
        let order = orig.canonical_order();
        for o in &opts.overrides {
            if !order.iter().any(|&n| o.matches(&orig.node(n).name)) {
                return Err(Error::Usage(format!(
                    "override `{}` matches no node of graph `{}`",
                    o.pattern, orig.name
                )));
            }
        }
        let default = QuantConfig::default();
        let effective = effective_configs(&orig, &order, &opts.overrides);
        // a kernel shared by several layers gets one quantizer per (bits, axis)
        let mut weight_markers: HashMap<(NodeId, u8, Option<usize>), NodeId> = HashMap::new();
        for &id in &order {
            let node = orig.node(id);
            if node.op.is_param() {
                continue;
            }
            let cfg = match effective.get(&id).copied().flatten() {
                Some(LayerConfig::Skip) => continue,
                Some(LayerConfig::Quantize(c)) => c,
                None => &default,
            };
            let wbits = cfg.weight_bits.unwrap_or(scheme.weight_bits);
            let abits = cfg.activation_bits.unwrap_or(scheme.activation_bits);
            let mark_output = |g: &mut Graph| -> Result<()> {
                if quantized_explicitly(&orig, id) {
                    return Ok(());
                }
                let name = fresh(g, &activation_state(&node.name));
                mark_value(g, id, scheme.activation_spec(abits, &name), &name)?;
                Ok(())
            };
            if node.op.is_input() {
                let quantizable = node.ty.dtype == DType::F32 && node.ty.rank() > 0;
                if quantizable && cfg.output != Some(false) && !quantized_explicitly(&orig, id) {
                    let name = fresh(&g, &activation_state(&node.name));
                    mark_value(&mut g, id, scheme.input_spec(abits, &name), &name)?;
                }
                continue;
            }
            let unsupported = |why: String| Error::Unsupported {
                node: node.name.clone(),
                op: node.op.name().to_string(),
                what: format!("the {} quantization scheme", scheme.name),
                hint: format!(
                    "{why}. Leave it float with the override `{n}=skip`, or quantize its output \
                     with `{n}=output` (qatc dump --override, PipelineOptions::overrides)",
                    n = node.name
                ),
            };
            let policy = match &node.op {
                Op::Model(op) => policy(op),
                Op::Pass(PassOp::Quant(_)) => Policy::Unsupported {
                    why: "the graph is already annotated (a `quant` marker is present)",
                },
                Op::Pass(PassOp::BnScale { .. } | PassOp::ScaleChannels { .. }) => {
                    Policy::Unsupported {
                        why: "it is a pass helper that only `fold_bn` creates",
                    }
                }
                Op::Train(_) | Op::Grad(_) | Op::Update(_) => Policy::Unsupported {
                    why: "it is a training op, which only train-step graphs contain",
                },
            };
            match policy {
                Policy::Kernel { per_axis } => {
                    let axis = node.op.as_model().and_then(ModelOp::kernel_channel_axis);
                    let per_axis = match cfg.granularity {
                        Some(Granularity::PerAxis) => true,
                        Some(Granularity::PerTensor) => false,
                        None => per_axis && scheme.granularity == Granularity::PerAxis,
                    };
                    let axis = axis.filter(|_| per_axis);
                    let kernel = orig.operand(id, 1).expect("kernel ops have a kernel");
                    if !matches!(orig.node(kernel).op, Op::Model(ModelOp::FakeQuant(_))) {
                        let key = (kernel, wbits, axis);
                        let m = match weight_markers.get(&key) {
                            Some(&m) => m,
                            None => {
                                let name =
                                    fresh(&g, &weight_quantizer_name(&orig.node(kernel).name));
                                let spec = scheme.weight_spec(wbits, axis, &name);
                                let m = g.add(Op::Pass(PassOp::Quant(spec)), name, &[kernel])?;
                                weight_markers.insert(key, m);
                                m
                            }
                        };
                        g.set_operand(id, 1, m);
                    }
                    if cfg.output != Some(false) {
                        mark_output(&mut g)?;
                    }
                }
                Policy::Output => {
                    if cfg.output != Some(false) {
                        mark_output(&mut g)?;
                    }
                }
                Policy::SameScale | Policy::Fixed { .. } | Policy::Explicit => {
                    if cfg.output == Some(true) {
                        mark_output(&mut g)?;
                    }
                }
                Policy::SharedScale => {
                    if cfg.output == Some(false) {
                        continue;
                    }
                    let state = fresh(&g, &activation_state(&node.name));
                    mark_value(&mut g, id, scheme.activation_spec(abits, &state), &state)?;
                    for (i, operand) in g.operands(id).into_iter().enumerate() {
                        let name = fresh(&g, &tied_input_name(&node.name, i));
                        let m = g.add(
                            Op::Pass(PassOp::Quant(scheme.tied_spec(abits, &state))),
                            name,
                            &[operand],
                        )?;
                        g.set_operand(id, i, m);
                    }
                }
                Policy::FoldedBatchNorm => {
                    let producer = orig.operand(id, 0).map(|p| &orig.node(p).op);
                    let after_kernel = producer
                        .and_then(Op::as_model)
                        .is_some_and(ModelOp::folds_batch_norm);
                    if after_kernel || cfg.output == Some(true) {
                        if cfg.output != Some(false) {
                            mark_output(&mut g)?;
                        }
                    } else if cfg.output != Some(false) {
                        return Err(unsupported(format!(
                            "a batch_norm that does not directly follow a conv2d, depthwise_conv2d \
                             or dense cannot be folded into a TFLite kernel (its input comes from {}; \
                             TFMOT refuses standalone BatchNorm too). Move it after such a layer",
                            match producer {
                                Some(p) if p.is_input() => "a graph input".to_string(),
                                Some(p) => format!("a {}", p.name()),
                                None => "nothing".to_string(),
                            }
                        )));
                    }
                }
                Policy::Unsupported { why } => {
                    if cfg.output == Some(true) {
                        mark_output(&mut g)?;
                    } else {
                        return Err(unsupported(format!("qatc cannot quantize it: {why}")));
                    }
                }
            }
        }
        Ok(g)
    }
}
