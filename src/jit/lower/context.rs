//! The lowering context: the graph being lowered, the program being built, each node's
//! value, and the helpers every lowering uses to read operands, make temporaries and loops,
//! and address values ([`same`], [`bcast`], [`along`], [`scalar`], [`reduced`]).

use crate::error::{Error, Result};
use crate::ir::{DType, Graph, NodeId};
use crate::jit::lir::{row_major, Access, Inst, Kernel, Loop, NodeIx, Program, Storage, VtId};
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
    pub(super) vals: HashMap<NodeId, Val>,
    /// Shared sub-computations (batch moments, channel sums), by a structural key.
    pub memo: HashMap<String, Vec<VtId>>,
    /// The node being lowered (diagnostics and names).
    pub(super) node: Option<NodeId>,
    /// Threads the program will run on (kernels size their per-thread partials).
    pub threads: usize,
    /// Ranks of the data-parallel group the step runs in (1: one process). With more,
    /// `all_reduce` nodes communicate and BatchNorm's batch statistics and gradient sums are
    /// combined over the ranks.
    pub ranks: usize,
    /// Lower stride-1 3×3 convolutions with this Winograd variant ([`super::winograd`]);
    /// `None`: as im2col GEMMs.
    pub winograd: Option<crate::jit::winograd::Variant>,
    /// Lower the convolutions [`super::direct`] takes to the direct kernels where the CPU
    /// has AVX-512.
    pub direct: bool,
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
            ranks: 1,
            winograd: None,
            direct: false,
        }
    }

    pub(super) fn new_vt_storage(
        &mut self,
        name: &str,
        numel: usize,
        dtype: DType,
        s: Storage,
    ) -> VtId {
        let vt = self.prog.vt(name, numel);
        self.prog.vts[vt].dtype = dtype;
        self.prog.vts[vt].storage = s;
        vt
    }

    pub(super) fn bind(&mut self, id: NodeId, vt: VtId) {
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
    pub(super) fn view(&self) -> Result<Val> {
        Ok(Val {
            vt: self.arg(0).vt,
            shape: self.out_shape(),
        })
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
