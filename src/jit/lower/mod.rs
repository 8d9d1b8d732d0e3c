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
use crate::ir::{DType, Graph, NodeId, Op};
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

    fn unsupported(&self, op: &Op, hint: &str) -> Error {
        Error::Unsupported {
            node: self.name().to_string(),
            op: op.name().to_string(),
            what: "the JIT".into(),
            hint: hint.into(),
        }
    }

    fn lower_node(&mut self, id: NodeId) -> Result<Val> {
        let node = self.g.node(id);
        let op = node.op.clone();
        use Op::*;
        match &op {
            Input | Param => unreachable!("bound before lowering"),
            // views: the same elements under another shape
            Reshape { .. } | Flatten | Dropout { .. } => Ok(Val {
                vt: self.arg(0).vt,
                shape: self.out_shape(),
            }),
            Quant(_) => Err(self.unsupported(
                &op,
                "`quant` markers only exist inside the quantization pipeline; run the \
                 `default_8bit` pipeline to completion first",
            )),
            Relu
            | Relu6
            | LeakyRelu { .. }
            | HardSwish
            | Sigmoid
            | Tanh
            | Add { .. }
            | Sub { .. }
            | Mul { .. }
            | ReluGrad
            | Relu6Grad
            | LeakyReluGrad { .. }
            | HardSwishGrad
            | SigmoidGrad
            | TanhGrad
            | MovingAverage { .. }
            | SgdVelocity { .. }
            | AdamMoment { .. }
            | AdamMomentSq { .. }
            | AdamApply { .. }
            | EmaUpdate { .. }
            | RunningMin
            | RunningMax
            | DropoutMask { .. }
            | ScaleChannels { .. }
            | BnScale { .. } => elementwise::lower(self, &op),
            ObserveMin { .. }
            | ObserveMax { .. }
            | ReduceSum(_)
            | Mean(_)
            | GlobalAvgPool { .. }
            | GlobalMaxPool { .. }
            | GlobalAvgPoolGrad { .. }
            | MeanGrad { .. }
            | BatchMean
            | BatchVar { .. } => reduce::lower(self, &op),
            BatchNorm { .. }
            | BatchNormTrain { .. }
            | BatchNormGradInput { .. }
            | BatchNormGradGamma { .. } => norm::lower(self, &op),
            FakeQuant(q) => {
                if let Some(state) = q.range.state() {
                    return Err(self.unsupported(
                        &op,
                        &format!(
                            "fake_quant with range source reading state `{state}` must be \
                             made explicit first: lower the graph with autodiff \
                             (`autodiff::train_step` for training, `autodiff::eval_graph` for \
                             evaluation), which turns it into `range=operands`"
                        ),
                    ));
                }
                quant::lower(self, &op)
            }
            FakeQuantGrad(_) => quant::lower(self, &op),
            Conv2d(_)
            | DepthwiseConv2d(_)
            | Conv2dTranspose(_)
            | Dense { .. }
            | Conv2dGradInput { .. }
            | Conv2dGradFilter { .. }
            | DepthwiseConv2dGradInput { .. }
            | DepthwiseConv2dGradFilter { .. }
            | Conv2dTransposeGradInput { .. }
            | Conv2dTransposeGradFilter { .. }
            | DenseGradInput
            | DenseGradWeight => conv::lower(self, &op),
            MaxPool2d(_)
            | AvgPool2d(_)
            | MaxPool2dGrad(_)
            | AvgPool2dGrad { .. }
            | GlobalMaxPoolGrad
            | UpsampleNearest { .. }
            | UpsampleNearestGrad { .. } => pool::lower(self, &op),
            Softmax | SoftmaxGrad | SoftmaxCrossEntropy | SoftmaxCrossEntropyGrad => {
                loss::lower(self, &op)
            }
            Transpose { .. } | Pad { .. } | Crop { .. } | Slice { .. } | Concat { .. } => {
                shape::lower(self, &op)
            }
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
