//! Graph ops to LIR, one file per op family. Each lowering reads its operands as [`Val`]s
//! (a vt and the node's shape: reshapes are free views), emits [`Loop`]s, [`Gemm`]s and
//! kernels, and binds the node to the vt holding its value.
//!
//! [`Gemm`]: super::lir::Gemm

pub mod conv;
pub mod elementwise;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod quant;
pub mod reduce;
pub mod rows;
pub mod shape;
pub mod window;

use super::lir::{row_major, Access, Inst, Kernel, Loop, NodeIx, Program, Storage, VtId};
use crate::error::{Error, Result};
use crate::ir::op::{GradOp, ModelOp, Op, PassOp, TrainOp, UpdateOp};
use crate::ir::{DType, Graph, NodeId};
use elementwise::{Arith, Later};
use loss::RowOp;
use std::collections::HashMap;

/// A node's value: its vt and the node's shape (a view of the vt's elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Val {
    pub vt: VtId,
    pub shape: Vec<usize>,
}

impl Val {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The lowering context.
pub struct Lower<'g> {
    pub g: &'g Graph,
    pub prog: Program,
    vals: HashMap<NodeId, Val>,
    /// Shared sub-computations (batch moments, channel sums), by a structural key.
    pub memo: HashMap<String, Vec<VtId>>,
    /// The node being lowered (diagnostics and names).
    node: Option<NodeId>,
    /// Threads the program will run on (kernels size their per-thread partials).
    pub threads: usize,
}

impl<'g> Lower<'g> {
    pub fn new(g: &'g Graph) -> Lower<'g> {
        Lower {
            g,
            prog: Program::default(),
            vals: HashMap::new(),
            memo: HashMap::new(),
            node: None,
            threads: 1,
        }
    }

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

    fn new_vt_storage(&mut self, name: &str, numel: usize, dtype: DType, s: Storage) -> VtId {
        let vt = self.prog.vt(name, numel);
        self.prog.vts[vt].dtype = dtype;
        self.prog.vts[vt].storage = s;
        vt
    }

    fn bind(&mut self, id: NodeId, vt: VtId) {
        let shape = self.g.node(id).ty.shape.clone();
        self.vals.insert(id, Val { vt, shape });
    }

    /// The node being lowered.
    pub fn node_id(&self) -> NodeId {
        self.node.unwrap()
    }

    /// The value of an already lowered node.
    pub fn val_of(&self, id: NodeId) -> Val {
        self.vals[&id].clone()
    }

    /// The current node's name.
    pub fn name(&self) -> &str {
        &self.g.node(self.node.unwrap()).name
    }

    /// The current node's output shape.
    pub fn out_shape(&self) -> Vec<usize> {
        self.g.node(self.node.unwrap()).ty.shape.clone()
    }

    /// Operand `i` of the current node.
    pub fn arg(&self, i: usize) -> Val {
        let id = self.node.unwrap();
        let o = self.g.operands(id)[i];
        self.vals[&o].clone()
    }

    pub fn n_args(&self) -> usize {
        self.g.operands(self.node.unwrap()).len()
    }

    pub fn arg_dtype(&self, i: usize) -> DType {
        let o = self.g.operands(self.node.unwrap())[i];
        self.g.node(o).ty.dtype
    }

    /// A new temporary for the current node (`suffix` distinguishes helpers).
    pub fn temp(&mut self, suffix: &str, numel: usize) -> VtId {
        let name = if suffix.is_empty() {
            self.name().to_string()
        } else {
            format!("{}.{suffix}", self.name())
        };
        self.prog.vt(name, numel)
    }

    pub fn push(&mut self, inst: Inst) {
        self.prog.insts.push(inst);
    }

    pub fn kernel(&mut self, k: impl Kernel + 'static) {
        self.prog.insts.push(Inst::Kernel(Box::new(k)));
    }

    /// A new loop over `shape` named after the current node.
    pub fn new_loop(&self, suffix: &str, shape: &[usize]) -> Loop {
        let name = if suffix.is_empty() {
            self.name().to_string()
        } else {
            format!("{}.{suffix}", self.name())
        };
        Loop::new(name, shape)
    }

    /// An elementwise map over `shape` into a new vt: `f` builds the value to store.
    pub fn map(
        &mut self,
        suffix: &str,
        shape: &[usize],
        f: impl FnOnce(&mut Loop) -> NodeIx,
    ) -> Val {
        let numel = shape.iter().product();
        let vt = self.temp(suffix, numel);
        let mut l = self.new_loop(suffix, shape);
        let n = f(&mut l);
        l.store(n, Access::identity(vt, shape));
        self.push(Inst::Loop(l));
        Val {
            vt,
            shape: shape.to_vec(),
        }
    }

    /// The current node refused by the JIT, with what to do instead.
    pub fn unsupported(&self, hint: &str) -> Error {
        let node = self.g.node(self.node_id());
        Error::Unsupported {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            what: "the JIT".into(),
            hint: hint.into(),
        }
    }

    /// A view of operand 0's elements under the node's shape.
    fn view(&self) -> Result<Val> {
        Ok(Val {
            vt: self.arg(0).vt,
            shape: self.out_shape(),
        })
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
        }
    }

    fn lower_grad(&mut self, op: &GradOp) -> Result<Val> {
        use GradOp::*;
        match op {
            SoftmaxCrossEntropyGrad => loss::rows(self, RowOp::LossGrad),
            ReluGrad => elementwise::relu_grad(self),
            Relu6Grad => elementwise::relu6_grad(self),
            LeakyReluGrad { alpha } => elementwise::leaky_relu_grad(self, alpha),
            HardSwishGrad => elementwise::hard_swish_grad(self),
            SigmoidGrad => elementwise::sigmoid_grad(self),
            TanhGrad => elementwise::tanh_grad(self),
            SoftmaxGrad => loss::rows(self, RowOp::SoftmaxGrad),
            FakeQuantGrad(q) => quant::fake_quant_grad(self, q),
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

// ---- accesses --------------------------------------------------------------------------

/// `v` read at the same index (its shape is the iteration shape, or a reshape of it).
pub fn same(v: &Val, shape: &[usize]) -> Access {
    debug_assert_eq!(v.numel(), shape.iter().product::<usize>());
    Access::identity(v.vt, shape)
}

/// `v` broadcast numpy-style (trailing dimensions aligned) to `shape`.
pub fn bcast(v: &Val, shape: &[usize]) -> Access {
    let r = shape.len();
    let rs = v.shape.len();
    let vs = row_major(&v.shape);
    let strides = (0..r)
        .map(|d| {
            if d + rs < r {
                0
            } else {
                let k = d + rs - r;
                if v.shape[k] == 1 {
                    0
                } else {
                    vs[k]
                }
            }
        })
        .collect();
    Access {
        vt: v.vt,
        offset: 0,
        strides,
    }
}

/// A vector `vt[offset..offset+shape[axis]]` indexed by coordinate `axis` of `shape`.
pub fn along(vt: VtId, offset: usize, shape: &[usize], axis: usize) -> Access {
    let strides = (0..shape.len())
        .map(|d| if d == axis { 1 } else { 0 })
        .collect();
    Access {
        vt,
        offset,
        strides,
    }
}

/// A scalar (one element) broadcast everywhere.
pub fn scalar(vt: VtId, shape: &[usize]) -> Access {
    Access {
        vt,
        offset: 0,
        strides: vec![0; shape.len()],
    }
}

/// Output access of a reduction of `shape` keeping the axes in `keep` (row-major over the
/// kept axes).
pub fn reduced(vt: VtId, shape: &[usize], keep: &[usize]) -> Access {
    let kept: Vec<usize> = (0..shape.len())
        .map(|d| if keep.contains(&d) { shape[d] } else { 1 })
        .collect();
    let ks = row_major(&kept);
    let strides = (0..shape.len())
        .map(|d| if keep.contains(&d) { ks[d] } else { 0 })
        .collect();
    Access {
        vt,
        offset: 0,
        strides,
    }
}
