//! The gradient rule of every op: THE table to extend when adding a layer.
//!
//! [`rule`] maps each [`OpKind`] to how gradients flow through it (the match is exhaustive,
//! so a new op does not compile until it has a decision here). A rule receives the forward
//! node ([`Site`]: op, operand values `x`, output `y`, incoming gradient `dy`, which operands
//! need a gradient) and returns one optional `Contrib` per operand, built from the
//! training ops of [`crate::ir::op`] whose semantics [`crate::ir::interp`] defines.
//!
//! Rules see the explicit training form that [`super::train_step`] lowers a model to:
//! `batch_norm_train` instead of `batch_norm` (a frozen BatchNorm keeps its inference form),
//! `fake_quant` with `range=operands`, dropout as
//! `mul` by a `dropout_mask`. Two invariants the sweep relies on: every rule is linear in
//! `dy` (so signs can be carried instead of negated), and every contribution has its
//! operand's shape (broadcasts are summed away with `reduce_sum`).
//!
//! Adding a layer: write `fn my_op(e: &mut Emit, s: &Site) -> Result<Grads>`, add its arm to
//! [`rule`], add a finite-difference check to `tests/gradcheck.rs`.

use super::emit::{Contrib, Emit};
use crate::error::Result;
use crate::ir::fake_quant::lsq_grad_scale;
use crate::ir::op::*;
use crate::ir::NodeId;

/// One gradient per operand (`None`: no gradient, or not needed).
pub type Grads = Vec<Option<Contrib>>;

/// A rule: emits the operand gradients of one forward node.
pub type GradFn<'a> = Box<dyn Fn(&mut Emit, &Site) -> Result<Grads> + 'a>;

/// How gradients pass through an op.
pub enum Rule<'a> {
    /// The op's rule (its attributes captured).
    Grad(GradFn<'a>),
    /// Gradients stop here: the op's value is treated as a constant (observers, statistics,
    /// state updates, masks — TFMOT's ranges and Keras' moving statistics get no gradient
    /// either). Inputs and params are leaves.
    NoGradient,
    /// No rule; the hint says what to do instead.
    Unsupported(&'static str),
}

/// A forward node whose gradient is being taken.
pub struct Site {
    /// The forward node's name (gradient nodes are named after it).
    pub name: String,
    /// Operand values.
    pub x: Vec<NodeId>,
    /// The forward output.
    pub y: NodeId,
    /// The gradient of the loss with respect to `y`.
    pub dy: NodeId,
    /// `needs[i]`: operand `i` leads to a value whose gradient is wanted.
    pub needs: Vec<bool>,
}

impl Site {
    fn grads(&self) -> Grads {
        vec![None; self.x.len()]
    }

    fn needs(&self, i: usize) -> bool {
        self.needs.get(i).copied().unwrap_or(false)
    }

    fn n(&self, what: &str) -> String {
        format!("{}.grad.{what}", self.name)
    }
}

/// The gradient rule of each op: exhaustive per family, so a new op does not compile until
/// it has a decision here. Rules capture the op's attributes.
pub fn rule(op: &Op) -> Rule<'_> {
    match op {
        Op::Model(op) => model_rule(op),
        Op::Pass(PassOp::Quant(_)) => {
            Rule::Unsupported("a `quant` marker is left: run the `quantize` pass first")
        }
        Op::Pass(PassOp::BnScale { .. } | PassOp::ScaleChannels { .. }) => Rule::Unsupported(
            "fold_bn helpers belong to export graphs: train the QAT graph, fold afterwards",
        ),
        Op::Train(op) => train_rule(op),
        Op::Grad(_) => Rule::Unsupported(
            "gradient ops are not differentiated again (no second-order gradients)",
        ),
        // observers, optimizer slots and moving statistics are state, not functions of it
        Op::Update(_) => Rule::NoGradient,
    }
}

fn grad<'a>(f: impl Fn(&mut Emit, &Site) -> Result<Grads> + 'a) -> Rule<'a> {
    Rule::Grad(Box::new(f))
}

fn model_rule(op: &ModelOp) -> Rule<'_> {
    use ModelOp::*;
    match op {
        Input | Param => Rule::NoGradient,
        Conv2d(c) => grad(move |e, s| conv2d(e, s, c)),
        DepthwiseConv2d(c) => grad(move |e, s| depthwise_conv2d(e, s, c)),
        Conv2dTranspose(c) => grad(move |e, s| conv2d_transpose(e, s, c)),
        Dense { activation } => grad(move |e, s| dense(e, s, *activation)),
        BatchNorm { epsilon, .. } => grad(move |e, s| frozen_batch_norm(e, s, *epsilon)),
        Relu => grad(|e, s| elementwise(e, s, GradOp::ReluGrad, false)),
        Relu6 => grad(|e, s| elementwise(e, s, GradOp::Relu6Grad, false)),
        LeakyRelu { alpha } => {
            grad(move |e, s| elementwise(e, s, GradOp::LeakyReluGrad { alpha: *alpha }, false))
        }
        ThresholdedRelu { theta } => grad(move |e, s| {
            elementwise(e, s, GradOp::ThresholdedReluGrad { theta: *theta }, false)
        }),
        PRelu => grad(prelu),
        HardSwish => grad(|e, s| elementwise(e, s, GradOp::HardSwishGrad, false)),
        Sigmoid => grad(|e, s| elementwise(e, s, GradOp::SigmoidGrad, true)),
        Tanh => grad(|e, s| elementwise(e, s, GradOp::TanhGrad, true)),
        Softmax => grad(|e, s| elementwise(e, s, GradOp::SoftmaxGrad, true)),
        Add { activation } => grad(move |e, s| add_sub(e, s, *activation, false)),
        Sub { activation } => grad(move |e, s| add_sub(e, s, *activation, true)),
        Mul { activation } => grad(move |e, s| mul(e, s, *activation)),
        Concat { axis } => grad(move |e, s| concat(e, s, *axis)),
        MaxPool2d(p) => {
            grad(move |e, s| elementwise(e, s, GradOp::MaxPool2dGrad(p.clone()), false))
        }
        AvgPool2d(p) => grad(move |e, s| avg_pool2d(e, s, p)),
        GlobalAvgPool { .. } => grad(global_avg_pool),
        GlobalMaxPool { .. } => grad(|e, s| elementwise(e, s, GradOp::GlobalMaxPoolGrad, false)),
        Mean(r) => grad(move |e, s| mean(e, s, r)),
        Reshape { .. } | Flatten => grad(reshape_back),
        Transpose { perm } => grad(move |e, s| transpose(e, s, perm)),
        Pad { pads } => grad(move |e, s| {
            from_dy(
                e,
                s,
                ModelOp::Crop {
                    crops: pads.clone(),
                }
                .into(),
            )
        }),
        Crop { crops } => grad(move |e, s| {
            from_dy(
                e,
                s,
                ModelOp::Pad {
                    pads: crops.clone(),
                }
                .into(),
            )
        }),
        UpsampleNearest { scale } => {
            grad(move |e, s| from_dy(e, s, GradOp::UpsampleNearestGrad { scale: *scale }.into()))
        }
        // the interpreter's dropout node is the identity; train_step lowers it to a mask
        Dropout { .. } => grad(identity),
        FakeQuant(q) => grad(move |e, s| fake_quant(e, s, q)),
    }
}

fn train_rule(op: &TrainOp) -> Rule<'_> {
    match op {
        TrainOp::SoftmaxCrossEntropy => grad(softmax_cross_entropy),
        TrainOp::BatchNormTrain { epsilon } => grad(move |e, s| batch_norm_train(e, s, *epsilon)),
        // batch statistics and dropout masks are treated as constants (as in Keras)
        TrainOp::BatchMean | TrainOp::BatchVar { .. } | TrainOp::DropoutMask { .. } => {
            Rule::NoGradient
        }
        // each rank's objective is its own loss: the adjoint of a mean over ranks is the mean
        // of the ranks' adjoints; minima and maxima only feed observers
        TrainOp::AllReduce {
            reduce: Reduce::Mean,
        } => grad(|e, s| {
            from_dy(
                e,
                s,
                TrainOp::AllReduce {
                    reduce: Reduce::Mean,
                }
                .into(),
            )
        }),
        TrainOp::AllReduce {
            reduce: Reduce::Min | Reduce::Max | Reduce::Range,
        } => Rule::NoGradient,
        // they move gradients after differentiation
        TrainOp::Pack | TrainOp::Unpack { .. } => Rule::NoGradient,
    }
}

// ---- helpers -------------------------------------------------------------------------------

/// `dy` through the activation fused into `y`'s op (`relu_grad`/`relu6_grad` read the
/// output, which is positive / inside (0, 6) exactly where the pre-activation is).
fn through_fused_activation(e: &mut Emit, s: &Site, act: Activation) -> Result<NodeId> {
    match act {
        Activation::None => Ok(s.dy),
        Activation::Relu => e.op(GradOp::ReluGrad.into(), &s.n("activation"), &[s.dy, s.y]),
        Activation::Relu6 => e.op(GradOp::Relu6Grad.into(), &s.n("activation"), &[s.dy, s.y]),
    }
}

/// Sums `g` (of the broadcast output shape) down to `shape`: leading axes the operand lacks
/// are reduced away, axes where it has size 1 are reduced keeping the axis.
fn unbroadcast(e: &mut Emit, g: NodeId, shape: &[usize], name: &str) -> Result<NodeId> {
    let out = e.shape(g);
    if out == shape {
        return Ok(g);
    }
    let lead = out.len() - shape.len();
    let kept: Vec<usize> = (lead..out.len())
        .filter(|&i| shape[i - lead] == 1 && out[i] != 1)
        .collect();
    let mut g = g;
    if !kept.is_empty() {
        let op = GradOp::ReduceSum(ReduceAttrs {
            axes: kept,
            keepdims: true,
        });
        g = e.op(op.into(), name, &[g])?;
    }
    if lead > 0 {
        let op = GradOp::ReduceSum(ReduceAttrs {
            axes: (0..lead).collect(),
            keepdims: false,
        });
        g = e.op(op.into(), name, &[g])?;
    }
    Ok(g)
}

/// `reduce_sum` over every axis but the last (a bias or BatchNorm beta gradient).
fn sum_to_channels(e: &mut Emit, g: NodeId, name: &str) -> Result<NodeId> {
    let rank = e.shape(g).len();
    let op = GradOp::ReduceSum(ReduceAttrs {
        axes: (0..rank - 1).collect(),
        keepdims: false,
    });
    e.op(op.into(), name, &[g])
}

fn no_activation(c: &ConvAttrs) -> ConvAttrs {
    ConvAttrs {
        activation: Activation::None,
        ..c.clone()
    }
}

/// `(dy, x)`-style gradient op `op` for operand 0, reading operand 0 (or the output when
/// `use_output`).
fn elementwise(e: &mut Emit, s: &Site, op: GradOp, use_output: bool) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        let other = if use_output { s.y } else { s.x[0] };
        out[0] = Some(Contrib::pos(e.op(
            op.into(),
            &s.n("input"),
            &[s.dy, other],
        )?));
    }
    Ok(out)
}

/// `op(dy)` for operand 0 (ops whose gradient only needs shapes).
fn from_dy(e: &mut Emit, s: &Site, op: Op) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        out[0] = Some(Contrib::pos(e.op(op, &s.n("input"), &[s.dy])?));
    }
    Ok(out)
}

// ---- layers --------------------------------------------------------------------------------

/// The three convolutions: input and filter gradients by the matching gradient ops, bias
/// gradient by summing over batch and space.
fn conv_like(
    e: &mut Emit,
    s: &Site,
    act: Activation,
    grad_input: impl Fn(Vec<usize>) -> GradOp,
    grad_filter: impl Fn(Vec<usize>) -> GradOp,
) -> Result<Grads> {
    let dz = through_fused_activation(e, s, act)?;
    let mut out = s.grads();
    if s.needs(0) {
        let op = grad_input(e.shape(s.x[0]));
        out[0] = Some(Contrib::pos(e.op(
            op.into(),
            &s.n("input"),
            &[dz, s.x[1]],
        )?));
    }
    if s.needs(1) {
        let op = grad_filter(e.shape(s.x[1]));
        out[1] = Some(Contrib::pos(e.op(
            op.into(),
            &s.n("kernel"),
            &[dz, s.x[0]],
        )?));
    }
    if s.x.len() > 2 && s.needs(2) {
        out[2] = Some(Contrib::pos(sum_to_channels(e, dz, &s.n("bias"))?));
    }
    Ok(out)
}

fn conv2d(e: &mut Emit, s: &Site, c: &ConvAttrs) -> Result<Grads> {
    let conv = no_activation(c);
    conv_like(
        e,
        s,
        c.activation,
        |input_shape| GradOp::Conv2dGradInput {
            conv: conv.clone(),
            input_shape,
        },
        |filter_shape| GradOp::Conv2dGradFilter {
            conv: conv.clone(),
            filter_shape,
        },
    )
}

fn depthwise_conv2d(e: &mut Emit, s: &Site, c: &ConvAttrs) -> Result<Grads> {
    let conv = no_activation(c);
    conv_like(
        e,
        s,
        c.activation,
        |input_shape| GradOp::DepthwiseConv2dGradInput {
            conv: conv.clone(),
            input_shape,
        },
        |filter_shape| GradOp::DepthwiseConv2dGradFilter {
            conv: conv.clone(),
            filter_shape,
        },
    )
}

fn conv2d_transpose(e: &mut Emit, s: &Site, c: &ConvAttrs) -> Result<Grads> {
    let conv = no_activation(c);
    conv_like(
        e,
        s,
        c.activation,
        |input_shape| GradOp::Conv2dTransposeGradInput {
            conv: conv.clone(),
            input_shape,
        },
        |filter_shape| GradOp::Conv2dTransposeGradFilter {
            conv: conv.clone(),
            filter_shape,
        },
    )
}

fn dense(e: &mut Emit, s: &Site, act: Activation) -> Result<Grads> {
    let dz = through_fused_activation(e, s, act)?;
    let mut out = s.grads();
    if s.needs(0) {
        let op = GradOp::DenseGradInput.into();
        out[0] = Some(Contrib::pos(e.op(op, &s.n("input"), &[dz, s.x[1]])?));
    }
    if s.needs(1) {
        let op = GradOp::DenseGradWeight.into();
        out[1] = Some(Contrib::pos(e.op(op, &s.n("kernel"), &[dz, s.x[0]])?));
    }
    if s.x.len() > 2 && s.needs(2) {
        out[2] = Some(Contrib::pos(sum_to_channels(e, dz, &s.n("bias"))?));
    }
    Ok(out)
}

/// Through batch statistics: `dx` includes the paths through the batch mean and variance.
fn batch_norm_train(e: &mut Emit, s: &Site, epsilon: F32) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        let op = GradOp::BatchNormGradInput { epsilon }.into();
        let dx = e.op(op, &s.n("input"), &[s.dy, s.x[0], s.x[1]])?;
        out[0] = Some(Contrib::pos(dx));
    }
    if s.needs(1) {
        let op = GradOp::BatchNormGradGamma { epsilon }.into();
        out[1] = Some(Contrib::pos(e.op(op, &s.n("gamma"), &[s.dy, s.x[0]])?));
    }
    if s.needs(2) {
        out[2] = Some(Contrib::pos(sum_to_channels(e, s.dy, &s.n("beta"))?));
    }
    Ok(out)
}

/// The inference form, which a train step keeps only for a frozen BatchNorm (Keras'
/// `trainable = False`): per channel `y = x · γ/√(σ² + ε) + β`, so `dx = dy · γ/√(σ² + ε)`.
/// Its params are frozen (`train_step` keeps the inference form only then), so no other
/// operand gets a gradient.
fn frozen_batch_norm(e: &mut Emit, s: &Site, epsilon: F32) -> Result<Grads> {
    let mut out = s.grads();
    if let Some(i) = (1..s.x.len()).find(|&i| s.needs(i)) {
        return Err(crate::error::Error::node(
            &s.name,
            "batch_norm",
            format!(
                "operand {i} needs a gradient, but a batch_norm in inference form trains \
                 nothing: freeze all four of its params or none"
            ),
        ));
    }
    if s.needs(0) {
        let scale = e.op(
            PassOp::BnScale { epsilon }.into(),
            &s.n("scale"),
            &[s.x[1], s.x[4]],
        )?;
        let axis = e.shape(s.dy).len() - 1;
        let dx = e.op(
            PassOp::ScaleChannels { axis }.into(),
            &s.n("input"),
            &[s.dy, scale],
        )?;
        out[0] = Some(Contrib::pos(dx));
    }
    Ok(out)
}

// ---- elementwise arithmetic with broadcasting ----------------------------------------------

fn add_sub(e: &mut Emit, s: &Site, act: Activation, negate_b: bool) -> Result<Grads> {
    let dz = through_fused_activation(e, s, act)?;
    let mut out = s.grads();
    for (i, what) in ["a", "b"].into_iter().enumerate() {
        if s.needs(i) {
            let shape = e.shape(s.x[i]);
            let g = unbroadcast(e, dz, &shape, &s.n(what))?;
            out[i] = Some(Contrib {
                node: g,
                negated: negate_b && i == 1,
            });
        }
    }
    Ok(out)
}

fn mul(e: &mut Emit, s: &Site, act: Activation) -> Result<Grads> {
    let dz = through_fused_activation(e, s, act)?;
    let mut out = s.grads();
    for (i, what) in ["a", "b"].into_iter().enumerate() {
        if s.needs(i) {
            let other = s.x[1 - i];
            let op = ModelOp::Mul {
                activation: Activation::None,
            };
            let prod = e.op(op.into(), &s.n(what), &[dz, other])?;
            let shape = e.shape(s.x[i]);
            out[i] = Some(Contrib::pos(unbroadcast(e, prod, &shape, &s.n(what))?));
        }
    }
    Ok(out)
}

/// `dx` by `prelu_grad_input`; `dalpha` is `dy * min(x, 0)` summed to the slope's shape.
fn prelu(e: &mut Emit, s: &Site) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        let op = GradOp::PReluGradInput;
        let g = e.op(op.into(), &s.n("input"), &[s.dy, s.x[0], s.x[1]])?;
        out[0] = Some(Contrib::pos(g));
    }
    if s.needs(1) {
        let full = e.op(
            GradOp::PReluGradAlpha.into(),
            &s.n("alpha"),
            &[s.dy, s.x[0]],
        )?;
        let shape = e.shape(s.x[1]);
        out[1] = Some(Contrib::pos(unbroadcast(e, full, &shape, &s.n("alpha"))?));
    }
    Ok(out)
}

// ---- layout and pooling --------------------------------------------------------------------

/// Each operand's gradient is its slice of `dy` along the concat axis.
fn concat(e: &mut Emit, s: &Site, axis: usize) -> Result<Grads> {
    let mut out = s.grads();
    if s.x.len() == 1 {
        out[0] = s.needs(0).then_some(Contrib::pos(s.dy));
        return Ok(out);
    }
    let mut offset = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        let size = e.shape(s.x[i]);
        if s.needs(i) {
            let mut begin = vec![0; size.len()];
            begin[axis] = offset;
            let op = GradOp::Slice {
                begin,
                size: size.clone(),
            };
            let g = e.op(op.into(), &s.n(&format!("input{i}")), &[s.dy])?;
            *slot = Some(Contrib::pos(g));
        }
        offset += size[axis];
    }
    Ok(out)
}

fn avg_pool2d(e: &mut Emit, s: &Site, p: &PoolAttrs) -> Result<Grads> {
    let op = GradOp::AvgPool2dGrad {
        pool: p.clone(),
        input_shape: e.shape(s.x[0]),
    };
    from_dy(e, s, op.into())
}

fn global_avg_pool(e: &mut Emit, s: &Site) -> Result<Grads> {
    let op = GradOp::GlobalAvgPoolGrad {
        input_shape: e.shape(s.x[0]),
    };
    from_dy(e, s, op.into())
}

fn mean(e: &mut Emit, s: &Site, r: &ReduceAttrs) -> Result<Grads> {
    let op = GradOp::MeanGrad {
        axes: r.axes.clone(),
        input_shape: e.shape(s.x[0]),
    };
    from_dy(e, s, op.into())
}

/// `reshape` and `flatten`: `dy` reshaped back to the input's per-sample shape.
fn reshape_back(e: &mut Emit, s: &Site) -> Result<Grads> {
    let shape = e.shape(s.x[0])[1..].iter().map(|&d| d as i64).collect();
    from_dy(e, s, ModelOp::Reshape { shape }.into())
}

fn transpose(e: &mut Emit, s: &Site, perm: &[usize]) -> Result<Grads> {
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    from_dy(e, s, ModelOp::Transpose { perm: inverse }.into())
}

fn identity(_: &mut Emit, s: &Site) -> Result<Grads> {
    let mut out = s.grads();
    out[0] = s.needs(0).then_some(Contrib::pos(s.dy));
    Ok(out)
}

// ---- quantization and loss -----------------------------------------------------------------

/// Straight-through estimator: `dy` passes where the input lies inside the nudged range
/// (per channel for per-axis quantizers), zero outside. An observed range gets no gradient;
/// a trained one (`range=trained`) gets its ends' gradients, summed to the range's shape.
fn fake_quant(e: &mut Emit, s: &Site, q: &FakeQuantAttrs) -> Result<Grads> {
    if !q.range.in_operands() {
        return Err(crate::error::Error::Unsupported {
            node: s.name.clone(),
            op: "fake_quant".into(),
            what: "autodiff".into(),
            hint: "only range=operands and range=trained are differentiated; train_step \
                   lowers the other range sources to those"
                .into(),
        });
    }
    let mut out = s.grads();
    if s.needs(0) {
        let op = GradOp::FakeQuantGrad(q.clone()).into();
        let dx = e.op(op, &s.n("input"), &[s.dy, s.x[0], s.x[1], s.x[2]])?;
        out[0] = Some(Contrib::pos(dx));
    }
    if let RangeSource::Trained(method) = q.range {
        let shape = e.shape(s.x[0]);
        let numel: usize = shape.iter().product();
        // LSQ scales by the elements one range quantizes per sample: a weight channel, or
        // one sample's activations
        let per_range = match q.axis {
            Some(a) => numel / shape[a].max(1),
            None if e.g.node(s.x[0]).op.is_param() => numel,
            None => numel / shape.first().copied().unwrap_or(1).max(1),
        };
        let grad_scale = match method {
            RangeLearning::Lsq => lsq_grad_scale(q, per_range),
            RangeLearning::Pact => 1.0,
        };
        let kept: Vec<usize> = q.axis.into_iter().collect();
        let axes: Vec<usize> = (0..shape.len()).filter(|a| !kept.contains(a)).collect();
        for (i, end) in [(1, RangeEnd::Min), (2, RangeEnd::Max)] {
            if !s.needs(i) {
                continue;
            }
            let op = GradOp::FakeQuantRangeGrad {
                quant: q.clone(),
                end,
                grad_scale: F32(grad_scale),
            };
            let what = end.name();
            let shares = &s.n(&format!("{what}.shares"));
            let share = e.op(op.into(), shares, &[s.dy, s.x[0], s.x[1], s.x[2]])?;
            let sum = GradOp::ReduceSum(ReduceAttrs {
                axes: axes.clone(),
                keepdims: false,
            });
            out[i] = Some(Contrib::pos(e.op(sum.into(), &s.n(what), &[share])?));
        }
    }
    Ok(out)
}

/// `d loss / d logits = softmax_cross_entropy_grad(logits, labels) * dloss`.
fn softmax_cross_entropy(e: &mut Emit, s: &Site) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        let g = e.op(
            GradOp::SoftmaxCrossEntropyGrad.into(),
            &s.n("logits"),
            &[s.x[0], s.x[1]],
        )?;
        let op = ModelOp::Mul {
            activation: Activation::None,
        };
        out[0] = Some(Contrib::pos(e.op(op.into(), &s.n("logits"), &[g, s.dy])?));
    }
    Ok(out)
}
