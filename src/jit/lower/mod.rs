//! Graph ops to LIR, one file per op family. Each lowering reads its operands as [`Val`]s
//! (a vt and the node's shape: reshapes are free views), emits [`Loop`]s, [`Gemm`]s and
//! kernels, and binds the node to the vt holding its value.
//!
//! [`Gemm`]: super::lir::Gemm

pub mod collective;
mod context;
pub mod conv;
mod conv_geom;
mod depthwise;
mod direct;
pub mod elementwise;
mod im2col;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod rows;
pub mod shape;
pub mod stats;
pub mod window;
mod winograd;

pub use context::{Lower, Val};

use crate::error::Result;
use crate::ir::op::{GradOp, ModelOp, Op, PassOp, TrainOp, UpdateOp};
use crate::ir::{DType, NodeId};
use crate::jit::lir::{Program, Storage};
use elementwise::{Arith, Later};
use loss::RowOp;

impl Lower<'_> {
    /// Binds inputs and params, then lowers `order` (every live non-leaf node).
    pub fn run(mut self, order: &[NodeId]) -> Result<Program> {
        for (slot, &id) in self.g.inputs().iter().enumerate() {
            let n = self.g.node(id);
            let vt = self.new_vt_storage(&n.name, n.ty.numel(), n.ty.dtype, Storage::Input(slot));
            self.prog
                .inputs
                .push((n.name.clone(), n.ty.dtype, n.ty.shape.clone()));
            self.bind(id, vt);
        }
        for (name, id) in self.g.params() {
            let n = self.g.node(id);
            let vt = self.new_vt_storage(
                &name,
                n.ty.numel(),
                DType::F32,
                Storage::Param(name.clone()),
            );
            self.prog.params.push((name, vt, n.ty.shape.clone()));
            self.bind(id, vt);
        }
        for &id in order {
            if self.vals.contains_key(&id) {
                continue;
            }
            self.node = Some(id);
            let v = self.lower_node(id)?;
            self.vals.insert(id, v);
        }
        for o in self.g.outputs() {
            let v = self.vals[&o.node].clone();
            self.prog.outputs.push((o.name.clone(), v.vt, v.shape));
        }
        for u in self.g.updates() {
            let v = self.vals[&u.node].clone();
            self.prog.updates.push((u.param.clone(), v.vt));
        }
        Ok(self.prog)
    }

    fn lower_node(&mut self, id: NodeId) -> Result<Val> {
        let op = self.g.node(id).op.clone();
        match &op {
            Op::Model(op) => self.lower_model(op),
            Op::Pass(op) => self.lower_pass(op),
            Op::Train(op) => self.lower_train(op),
            Op::Grad(op) => self.lower_grad(op),
            Op::Update(op) => self.lower_update(op),
        }
    }

    fn lower_model(&mut self, op: &ModelOp) -> Result<Val> {
        use ModelOp::*;
        match op {
            Input | Param => Err(self.unsupported("inputs and params are bound before lowering")),
            Conv2d(c) => conv::conv2d(self, c),
            DepthwiseConv2d(c) => conv::depthwise_conv2d(self, c),
            Conv2dTranspose(c) => conv::conv2d_transpose(self, c),
            Dense { activation } => conv::dense(self, activation),
            BatchNorm { epsilon, .. } => norm::batch_norm(self, epsilon),
            Relu => elementwise::relu(self),
            Relu6 => elementwise::relu6(self),
            LeakyRelu { alpha } => elementwise::leaky_relu(self, alpha),
            ThresholdedRelu { theta } => elementwise::thresholded_relu(self, theta),
            PRelu => elementwise::prelu(self),
            HardSwish => elementwise::hard_swish(self),
            Sigmoid => elementwise::sigmoid_op(self),
            Tanh => elementwise::tanh_op(self),
            Softmax => loss::rows(self, RowOp::Softmax),
            Add { activation } => elementwise::arith(self, Arith::Add, activation),
            Sub { activation } => elementwise::arith(self, Arith::Sub, activation),
            Mul { activation } => elementwise::arith(self, Arith::Mul, activation),
            Concat { axis } => shape::concat(self, *axis),
            MaxPool2d(p) => pool::pool2d(self, p, true),
            AvgPool2d(p) => pool::pool2d(self, p, false),
            GlobalAvgPool { .. } => reduce::global_pool(self, true),
            GlobalMaxPool { .. } => reduce::global_pool(self, false),
            Mean(r) => reduce::sum_or_mean(self, r, true),
            // views: the same elements under another shape
            Reshape { .. } | Flatten | Dropout { .. } => self.view(),
            Transpose { perm } => shape::transpose(self, perm),
            Pad { pads } => shape::pad(self, pads),
            Crop { crops } => shape::crop(self, crops),
            UpsampleNearest { scale } => pool::upsample_nearest(self, scale),
            FakeQuant(q) => quant::fake_quant_op(self, q),
        }
    }

    fn lower_pass(&mut self, op: &PassOp) -> Result<Val> {
        match op {
            PassOp::Quant(_) => Err(self.unsupported(
                "`quant` markers only exist inside the quantization pipeline; run the \
                 `default_8bit` pipeline to completion first",
            )),
            PassOp::BnScale { epsilon } => elementwise::bn_scale(self, epsilon),
            PassOp::ScaleChannels { axis } => elementwise::scale_channels(self, axis),
        }
    }

    fn lower_train(&mut self, op: &TrainOp) -> Result<Val> {
        match op {
            TrainOp::SoftmaxCrossEntropy => loss::loss(self),
            TrainOp::BatchNormTrain { epsilon } => norm::batch_norm_train(self, epsilon),
            TrainOp::BatchMean => reduce::batch_mean(self),
            TrainOp::BatchVar { unbiased } => reduce::batch_var(self, unbiased),
            TrainOp::DropoutMask { rate, seed, .. } => elementwise::dropout_mask(self, rate, seed),
            TrainOp::AllReduce { reduce } => collective::all_reduce(self, *reduce),
            TrainOp::Pack => collective::pack(self),
            TrainOp::Unpack { offset, .. } => collective::unpack(self, *offset),
        }
    }

    fn lower_grad(&mut self, op: &GradOp) -> Result<Val> {
        use GradOp::*;
        match op {
            SoftmaxCrossEntropyGrad => loss::rows(self, RowOp::LossGrad),
            ReluGrad => elementwise::relu_grad(self),
            Relu6Grad => elementwise::relu6_grad(self),
            LeakyReluGrad { alpha } => elementwise::leaky_relu_grad(self, alpha),
            ThresholdedReluGrad { theta } => elementwise::thresholded_relu_grad(self, theta),
            PReluGradInput => elementwise::prelu_grad_input(self),
            PReluGradAlpha => elementwise::prelu_grad_alpha(self),
            HardSwishGrad => elementwise::hard_swish_grad(self),
            SigmoidGrad => elementwise::sigmoid_grad(self),
            TanhGrad => elementwise::tanh_grad(self),
            SoftmaxGrad => loss::rows(self, RowOp::SoftmaxGrad),
            FakeQuantGrad(q) => quant::fake_quant_grad(self, q),
            FakeQuantRangeGrad {
                quant: q,
                end,
                grad_scale,
            } => quant::fake_quant_range_grad(self, q, *end, *grad_scale),
            Conv2dGradInput { conv, input_shape } => {
                conv::conv2d_grad_input(self, conv, input_shape)
            }
            Conv2dGradFilter { conv, filter_shape } => {
                conv::conv2d_grad_filter(self, conv, filter_shape)
            }
            DepthwiseConv2dGradInput { conv, input_shape } => {
                conv::depthwise_conv2d_grad_input(self, conv, input_shape)
            }
            DepthwiseConv2dGradFilter { conv, filter_shape } => {
                conv::depthwise_conv2d_grad_filter(self, conv, filter_shape)
            }
            Conv2dTransposeGradInput { conv, input_shape } => {
                conv::conv2d_transpose_grad_input(self, conv, input_shape)
            }
            Conv2dTransposeGradFilter { conv, filter_shape } => {
                conv::conv2d_transpose_grad_filter(self, conv, filter_shape)
            }
            DenseGradInput => conv::dense_grad_input(self),
            DenseGradWeight => conv::dense_grad_weight(self),
            ReduceSum(r) => reduce::sum_or_mean(self, r, false),
            BatchNormGradInput { epsilon } => norm::batch_norm_grad_input(self, epsilon),
            BatchNormGradGamma { epsilon } => norm::batch_norm_grad_gamma(self, epsilon),
            MaxPool2dGrad(p) => pool::max_pool2d_grad(self, p),
            AvgPool2dGrad { pool, input_shape } => pool::avg_pool2d_grad(self, pool, input_shape),
            GlobalAvgPoolGrad { input_shape } => reduce::global_avg_pool_grad(self, input_shape),
            GlobalMaxPoolGrad => pool::global_max_pool_grad(self),
            MeanGrad { axes, input_shape } => reduce::mean_grad(self, axes, input_shape),
            Slice { begin, .. } => shape::slice(self, begin),
            UpsampleNearestGrad { scale } => pool::upsample_nearest_grad(self, scale),
        }
    }

    fn lower_update(&mut self, op: &UpdateOp) -> Result<Val> {
        use UpdateOp::*;
        match op {
            MovingAverage { momentum } => elementwise::moving_average(self, momentum),
            SgdVelocity { momentum } => elementwise::sgd_velocity(self, momentum),
            AdamMoment { beta } => elementwise::adam_moment(self, beta),
            AdamMomentSq { beta } => elementwise::adam_moment_sq(self, beta),
            AdamApply { epsilon } => elementwise::adam_apply(self, epsilon),
            ObserveMin { axis } => reduce::observe(self, axis, true),
            ObserveMax { axis } => reduce::observe(self, axis, false),
            EmaUpdate { decay } => elementwise::first_then(self, Later::Ema { decay: decay.0 }),
            RunningMin => elementwise::first_then(self, Later::Min),
            RunningMax => elementwise::first_then(self, Later::Max),
        }
    }
}
