//! The gradient rule of every op: THE table to extend when adding a layer.
//!
//! [`rule`] maps each [`OpKind`] to how gradients flow through it (the match is exhaustive,
//! so a new op does not compile until it has a decision here). A rule receives the forward
//! node ([`Site`]: op, operand values `x`, output `y`, incoming gradient `dy`, which operands
//! need a gradient) and returns one optional [`Contrib`] per operand, built from the
//! training ops of [`crate::ir::op`] whose semantics [`crate::ir::interp`] defines.
//!
//! Rules see the explicit training form that [`super::train_step`] lowers a model to:
//! `batch_norm_train` instead of `batch_norm`, `fake_quant` with `range=operands`, dropout as
//! `mul` by a `dropout_mask`. Two invariants the sweep relies on: every rule is linear in
//! `dy` (so signs can be carried instead of negated), and every contribution has its
//! operand's shape (broadcasts are summed away with `reduce_sum`).
//!
//! Adding a layer: write `fn my_op(e: &mut Emit, s: &Site) -> Result<Grads>`, add its arm to
//! [`rule`], add a finite-difference check to `tests/gradcheck.rs`.

use super::backward::{Contrib, Emit};
use crate::error::Result;
use crate::ir::op::*;
use crate::ir::NodeId;

/// One gradient per operand (`None`: no gradient, or not needed).
pub type Grads = Vec<Option<Contrib>>;

/// A rule: emits the operand gradients of one forward node.
pub type GradFn = fn(&mut Emit, &Site) -> Result<Grads>;

/// How gradients pass through an op.
pub enum Rule {
    Grad(GradFn),
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
    pub op: Op,
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

/// The gradient rule of each op kind.
pub fn rule(kind: OpKind) -> Rule {
    use OpKind::*;
    use Rule::*;
    match kind {
        Input | Param => NoGradient,
        Conv2d => Grad(conv2d),
        DepthwiseConv2d => Grad(depthwise_conv2d),
        Conv2dTranspose => Grad(conv2d_transpose),
        Dense => Grad(dense),
        BatchNormTrain => Grad(batch_norm_train),
        BatchNorm => Unsupported(
            "batch_norm in inference form has no gradient; train_step lowers it to \
             batch_norm_train with batch statistics",
        ),
        Relu => Grad(relu),
        Relu6 => Grad(relu6),
        LeakyRelu => Grad(leaky_relu),
        HardSwish => Grad(hard_swish),
        Sigmoid => Grad(sigmoid),
        Tanh => Grad(tanh),
        Softmax => Grad(softmax),
        Add => Grad(add),
        Sub => Grad(sub),
        Mul => Grad(mul),
        Concat => Grad(concat),
        MaxPool2d => Grad(max_pool2d),
        AvgPool2d => Grad(avg_pool2d),
        GlobalAvgPool => Grad(global_avg_pool),
        GlobalMaxPool => Grad(global_max_pool),
        Mean => Grad(mean),
        Reshape | Flatten => Grad(reshape_back),
        Transpose => Grad(transpose),
        Pad => Grad(pad),
        Crop => Grad(crop),
        UpsampleNearest => Grad(upsample_nearest),
        // the interpreter's dropout node is the identity; train_step lowers it to a mask
        Dropout => Grad(identity),
        FakeQuant => Grad(fake_quant),
        SoftmaxCrossEntropy => Grad(softmax_cross_entropy),
        Quant => Unsupported("a `quant` marker is left: run the `quantize` pass first"),
        BnScale | ScaleChannels => Unsupported(
            "fold_bn helpers belong to export graphs: train the QAT graph, fold afterwards",
        ),
        DropoutMask | ObserveMin | ObserveMax | EmaUpdate | RunningMin | RunningMax | BatchMean
        | BatchVar | MovingAverage | SgdVelocity | AdamMoment | AdamMomentSq | AdamApply => {
            NoGradient
        }
        SoftmaxCrossEntropyGrad
        | ReluGrad
        | Relu6Grad
        | LeakyReluGrad
        | HardSwishGrad
        | SigmoidGrad
        | TanhGrad
        | SoftmaxGrad
        | FakeQuantGrad
        | Conv2dGradInput
        | Conv2dGradFilter
        | DepthwiseConv2dGradInput
        | DepthwiseConv2dGradFilter
        | Conv2dTransposeGradInput
        | Conv2dTransposeGradFilter
        | DenseGradInput
        | DenseGradWeight
        | ReduceSum
        | BatchNormGradInput
        | BatchNormGradGamma
        | MaxPool2dGrad
        | AvgPool2dGrad
        | GlobalAvgPoolGrad
        | GlobalMaxPoolGrad
        | MeanGrad
        | Slice
        | UpsampleNearestGrad => {
            Unsupported("gradient ops are not differentiated again (no second-order gradients)")
        }
    }
}

// ---- helpers -------------------------------------------------------------------------------

/// `dy` through the activation fused into `y`'s op (`relu_grad`/`relu6_grad` read the
/// output, which is positive / inside (0, 6) exactly where the pre-activation is).
fn through_fused_activation(e: &mut Emit, s: &Site) -> Result<NodeId> {
    match s.op.activation().unwrap_or(Activation::None) {
        Activation::None => Ok(s.dy),
        Activation::Relu => e.op(Op::Grad(GradOp::ReluGrad), &s.n("activation"), &[s.dy, s.y]),
        Activation::Relu6 => e.op(
            Op::Grad(GradOp::Relu6Grad),
            &s.n("activation"),
            &[s.dy, s.y],
        ),
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
        let op = Op::Grad(GradOp::ReduceSum(ReduceAttrs {
            axes: kept,
            keepdims: true,
        }));
        g = e.op(op, name, &[g])?;
    }
    if lead > 0 {
        let op = Op::Grad(GradOp::ReduceSum(ReduceAttrs {
            axes: (0..lead).collect(),
            keepdims: false,
        }));
        g = e.op(op, name, &[g])?;
    }
    Ok(g)
}

/// `reduce_sum` over every axis but the last (a bias or BatchNorm beta gradient).
fn sum_to_channels(e: &mut Emit, g: NodeId, name: &str) -> Result<NodeId> {
    let rank = e.shape(g).len();
    let op = Op::Grad(GradOp::ReduceSum(ReduceAttrs {
        axes: (0..rank - 1).collect(),
        keepdims: false,
    }));
    e.op(op, name, &[g])
}

fn no_activation(c: &ConvAttrs) -> ConvAttrs {
    ConvAttrs {
        activation: Activation::None,
        ..c.clone()
    }
}

/// `(dy, x)`-style elementwise gradient op `op` for operand 0, reading operand 0 (or the
/// output when `use_output`).
fn elementwise(e: &mut Emit, s: &Site, op: Op, use_output: bool) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        let other = if use_output { s.y } else { s.x[0] };
        out[0] = Some(Contrib::pos(e.op(op, &s.n("input"), &[s.dy, other])?));
    }
    Ok(out)
}

// ---- layers --------------------------------------------------------------------------------

/// Shared by the three convolutions: input and filter gradients by the matching training
/// ops, bias gradient by summing over batch and space.
fn conv_like(
    e: &mut Emit,
    s: &Site,
    grad_input: impl Fn(Vec<usize>) -> Op,
    grad_filter: impl Fn(Vec<usize>) -> Op,
) -> Result<Grads> {
    let dz = through_fused_activation(e, s)?;
    let mut out = s.grads();
    if s.needs(0) {
        let op = grad_input(e.shape(s.x[0]));
        out[0] = Some(Contrib::pos(e.op(op, &s.n("input"), &[dz, s.x[1]])?));
    }
    if s.needs(1) {
        let op = grad_filter(e.shape(s.x[1]));
        out[1] = Some(Contrib::pos(e.op(op, &s.n("kernel"), &[dz, s.x[0]])?));
    }
    if s.x.len() > 2 && s.needs(2) {
        out[2] = Some(Contrib::pos(sum_to_channels(e, dz, &s.n("bias"))?));
    }
    Ok(out)
}

fn conv2d(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::Conv2d(c)) = &s.op else {
        unreachable!()
    };
    let conv = no_activation(c);
    conv_like(
        e,
        s,
        |input_shape| {
            Op::Grad(GradOp::Conv2dGradInput {
                conv: conv.clone(),
                input_shape,
            })
        },
        |filter_shape| {
            Op::Grad(GradOp::Conv2dGradFilter {
                conv: conv.clone(),
                filter_shape,
            })
        },
    )
}

fn depthwise_conv2d(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::DepthwiseConv2d(c)) = &s.op else {
        unreachable!()
    };
    let conv = no_activation(c);
    conv_like(
        e,
        s,
        |input_shape| {
            Op::Grad(GradOp::DepthwiseConv2dGradInput {
                conv: conv.clone(),
                input_shape,
            })
        },
        |filter_shape| {
            Op::Grad(GradOp::DepthwiseConv2dGradFilter {
                conv: conv.clone(),
                filter_shape,
            })
        },
    )
}

fn conv2d_transpose(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::Conv2dTranspose(c)) = &s.op else {
        unreachable!()
    };
    let conv = no_activation(c);
    conv_like(
        e,
        s,
        |input_shape| {
            Op::Grad(GradOp::Conv2dTransposeGradInput {
                conv: conv.clone(),
                input_shape,
            })
        },
        |filter_shape| {
            Op::Grad(GradOp::Conv2dTransposeGradFilter {
                conv: conv.clone(),
                filter_shape,
            })
        },
    )
}

fn dense(e: &mut Emit, s: &Site) -> Result<Grads> {
    let dz = through_fused_activation(e, s)?;
    let mut out = s.grads();
    if s.needs(0) {
        out[0] = Some(Contrib::pos(e.op(
            Op::Grad(GradOp::DenseGradInput),
            &s.n("input"),
            &[dz, s.x[1]],
        )?));
    }
    if s.needs(1) {
        out[1] = Some(Contrib::pos(e.op(
            Op::Grad(GradOp::DenseGradWeight),
            &s.n("kernel"),
            &[dz, s.x[0]],
        )?));
    }
    if s.x.len() > 2 && s.needs(2) {
        out[2] = Some(Contrib::pos(sum_to_channels(e, dz, &s.n("bias"))?));
    }
    Ok(out)
}

/// Through batch statistics: `dx` includes the paths through the batch mean and variance.
fn batch_norm_train(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Train(TrainOp::BatchNormTrain { epsilon }) = s.op else {
        unreachable!()
    };
    let mut out = s.grads();
    if s.needs(0) {
        let op = Op::Grad(GradOp::BatchNormGradInput { epsilon });
        out[0] = Some(Contrib::pos(e.op(
            op,
            &s.n("input"),
            &[s.dy, s.x[0], s.x[1]],
        )?));
    }
    if s.needs(1) {
        let op = Op::Grad(GradOp::BatchNormGradGamma { epsilon });
        out[1] = Some(Contrib::pos(e.op(op, &s.n("gamma"), &[s.dy, s.x[0]])?));
    }
    if s.needs(2) {
        out[2] = Some(Contrib::pos(sum_to_channels(e, s.dy, &s.n("beta"))?));
    }
    Ok(out)
}

// ---- activations ---------------------------------------------------------------------------

fn relu(e: &mut Emit, s: &Site) -> Result<Grads> {
    elementwise(e, s, Op::Grad(GradOp::ReluGrad), false)
}

fn relu6(e: &mut Emit, s: &Site) -> Result<Grads> {
    elementwise(e, s, Op::Grad(GradOp::Relu6Grad), false)
}

fn leaky_relu(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::LeakyRelu { alpha }) = s.op else {
        unreachable!()
    };
    elementwise(e, s, Op::Grad(GradOp::LeakyReluGrad { alpha }), false)
}

fn hard_swish(e: &mut Emit, s: &Site) -> Result<Grads> {
    elementwise(e, s, Op::Grad(GradOp::HardSwishGrad), false)
}

fn sigmoid(e: &mut Emit, s: &Site) -> Result<Grads> {
    elementwise(e, s, Op::Grad(GradOp::SigmoidGrad), true)
}

fn tanh(e: &mut Emit, s: &Site) -> Result<Grads> {
    elementwise(e, s, Op::Grad(GradOp::TanhGrad), true)
}

fn softmax(e: &mut Emit, s: &Site) -> Result<Grads> {
    elementwise(e, s, Op::Grad(GradOp::SoftmaxGrad), true)
}

// ---- elementwise arithmetic with broadcasting ----------------------------------------------

fn add(e: &mut Emit, s: &Site) -> Result<Grads> {
    add_sub(e, s, false)
}

fn sub(e: &mut Emit, s: &Site) -> Result<Grads> {
    add_sub(e, s, true)
}

fn add_sub(e: &mut Emit, s: &Site, negate_b: bool) -> Result<Grads> {
    let dz = through_fused_activation(e, s)?;
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

fn mul(e: &mut Emit, s: &Site) -> Result<Grads> {
    let dz = through_fused_activation(e, s)?;
    let mut out = s.grads();
    for (i, what) in ["a", "b"].into_iter().enumerate() {
        if s.needs(i) {
            let other = s.x[1 - i];
            let op = Op::Model(ModelOp::Mul {
                activation: Activation::None,
            });
            let prod = e.op(op, &s.n(what), &[dz, other])?;
            let shape = e.shape(s.x[i]);
            out[i] = Some(Contrib::pos(unbroadcast(e, prod, &shape, &s.n(what))?));
        }
    }
    Ok(out)
}

// ---- layout and pooling --------------------------------------------------------------------

/// Each operand's gradient is its slice of `dy` along the concat axis.
fn concat(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::Concat { axis }) = s.op else {
        unreachable!()
    };
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
            let op = Op::Grad(GradOp::Slice {
                begin,
                size: size.clone(),
            });
            *slot = Some(Contrib::pos(e.op(
                op,
                &s.n(&format!("input{i}")),
                &[s.dy],
            )?));
        }
        offset += size[axis];
    }
    Ok(out)
}

fn max_pool2d(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::MaxPool2d(p)) = &s.op else {
        unreachable!()
    };
    elementwise_xy(e, s, Op::Grad(GradOp::MaxPool2dGrad(p.clone())))
}

/// `op(dy, x)` for operand 0 (ops whose gradient reads the forward input).
fn elementwise_xy(e: &mut Emit, s: &Site, op: Op) -> Result<Grads> {
    elementwise(e, s, op, false)
}

/// `op(dy)` for operand 0 (ops whose gradient only needs shapes).
fn from_dy(e: &mut Emit, s: &Site, op: Op) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        out[0] = Some(Contrib::pos(e.op(op, &s.n("input"), &[s.dy])?));
    }
    Ok(out)
}

fn avg_pool2d(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::AvgPool2d(p)) = &s.op else {
        unreachable!()
    };
    let op = Op::Grad(GradOp::AvgPool2dGrad {
        pool: p.clone(),
        input_shape: e.shape(s.x[0]),
    });
    from_dy(e, s, op)
}

fn global_avg_pool(e: &mut Emit, s: &Site) -> Result<Grads> {
    let op = Op::Grad(GradOp::GlobalAvgPoolGrad {
        input_shape: e.shape(s.x[0]),
    });
    from_dy(e, s, op)
}

fn global_max_pool(e: &mut Emit, s: &Site) -> Result<Grads> {
    elementwise_xy(e, s, Op::Grad(GradOp::GlobalMaxPoolGrad))
}

fn mean(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::Mean(r)) = &s.op else {
        unreachable!()
    };
    let op = Op::Grad(GradOp::MeanGrad {
        axes: r.axes.clone(),
        input_shape: e.shape(s.x[0]),
    });
    from_dy(e, s, op)
}

/// `reshape` and `flatten`: `dy` reshaped back to the input's per-sample shape.
fn reshape_back(e: &mut Emit, s: &Site) -> Result<Grads> {
    let shape = e.shape(s.x[0])[1..].iter().map(|&d| d as i64).collect();
    from_dy(e, s, Op::Model(ModelOp::Reshape { shape }))
}

fn transpose(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::Transpose { perm }) = &s.op else {
        unreachable!()
    };
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    from_dy(e, s, Op::Model(ModelOp::Transpose { perm: inverse }))
}

fn pad(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::Pad { pads }) = &s.op else {
        unreachable!()
    };
    from_dy(
        e,
        s,
        Op::Model(ModelOp::Crop {
            crops: pads.clone(),
        }),
    )
}

fn crop(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::Crop { crops }) = &s.op else {
        unreachable!()
    };
    from_dy(
        e,
        s,
        Op::Model(ModelOp::Pad {
            pads: crops.clone(),
        }),
    )
}

fn upsample_nearest(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::UpsampleNearest { scale }) = s.op else {
        unreachable!()
    };
    from_dy(e, s, Op::Grad(GradOp::UpsampleNearestGrad { scale }))
}

fn identity(_: &mut Emit, s: &Site) -> Result<Grads> {
    let mut out = s.grads();
    out[0] = s.needs(0).then_some(Contrib::pos(s.dy));
    Ok(out)
}

// ---- quantization and loss -----------------------------------------------------------------

/// Straight-through estimator: `dy` passes where the input lies inside the nudged range
/// (per channel for per-axis quantizers), zero outside. The range gets no gradient.
fn fake_quant(e: &mut Emit, s: &Site) -> Result<Grads> {
    let Op::Model(ModelOp::FakeQuant(q)) = &s.op else {
        unreachable!()
    };
    if q.range != RangeSource::Operands {
        return Err(crate::error::Error::Unsupported {
            node: s.name.clone(),
            op: "fake_quant".into(),
            what: "autodiff".into(),
            hint: "only range=operands is differentiated; train_step lowers the other \
                   range sources to observers feeding range=operands"
                .into(),
        });
    }
    let mut out = s.grads();
    if s.needs(0) {
        let op = Op::Grad(GradOp::FakeQuantGrad(q.clone()));
        out[0] = Some(Contrib::pos(e.op(
            op,
            &s.n("input"),
            &[s.dy, s.x[0], s.x[1], s.x[2]],
        )?));
    }
    Ok(out)
}

/// `d loss / d logits = softmax_cross_entropy_grad(logits, labels) * dloss`.
fn softmax_cross_entropy(e: &mut Emit, s: &Site) -> Result<Grads> {
    let mut out = s.grads();
    if s.needs(0) {
        let g = e.op(
            Op::Grad(GradOp::SoftmaxCrossEntropyGrad),
            &s.n("logits"),
            &[s.x[0], s.x[1]],
        )?;
        let op = Op::Model(ModelOp::Mul {
            activation: Activation::None,
        });
        out[0] = Some(Contrib::pos(e.op(op, &s.n("logits"), &[g, s.dy])?));
    }
    Ok(out)
}
