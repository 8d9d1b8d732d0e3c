//! LIR, the JIT's loop-level IR between graph ops and Cranelift.
//!
//! Every graph op lowers to a few instructions over *virtual tensors* ([`Vt`], flat f32
//! buffers):
//! - [`Loop`]: an elementwise computation over an iteration space, reading leaves through
//!   affine accesses (broadcasts are zero strides), storing some of its values and reducing
//!   others (sum/min/max along any axes). Loops over the same space fuse (see `fuse.rs`), so an
//!   elementwise chain, or an elementwise op and the reductions that read it, become one pass.
//! - [`Gemm`]: a matrix product for the host GEMM (dense, 1x1 and im2col convolutions).
//! - [`Kernel`]: anything else (im2col, depthwise, pools, softmax rows, range nudging),
//!   each emitting its own Cranelift loops.
//!
//! Lowering is in `lower/`, fusion in `fuse.rs`, buffers in `plan.rs`, Cranelift in
//! `codegen.rs` and `loops.rs`.

use super::cg::Cg;
use crate::error::Result;
use crate::ir::DType;
use std::collections::HashMap;

pub type VtId = usize;

/// Where a virtual tensor lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A graph input, read in place from the caller's slice (slot in the input table).
    Input(usize),
    /// A param, in the executor's state memory.
    Param(String),
    /// A temporary in the arena, placed by the memory planner.
    Temp,
    /// Read-only zeros (padding rows of window kernels), after the params in state memory.
    Zeros,
}

/// A virtual tensor: a flat buffer of `numel` elements.
#[derive(Clone, Debug)]
pub struct Vt {
    pub name: String,
    pub numel: usize,
    pub dtype: DType,
    pub storage: Storage,
}

/// An affine view of a vt inside an iteration space: element `i` (multi-index) is at
/// `offset + sum(i[d] * strides[d])`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub vt: VtId,
    pub offset: usize,
    pub strides: Vec<isize>,
}

impl Access {
    /// The row-major access of a tensor of exactly the iteration shape.
    pub fn identity(vt: VtId, shape: &[usize]) -> Access {
        Access {
            vt,
            offset: 0,
            strides: row_major(shape),
        }
    }
}

/// Row-major element strides.
pub fn row_major(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![1isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as isize;
    }
    s
}

pub type NodeIx = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Abs,
    Sqrt,
    Floor,
    Exp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `a < b ? a : b` (x86 `minps`; equals `f32::min` for non-NaN inputs).
    Min,
    /// `b < a ? a : b`.
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

/// One node of a loop's elementwise expression DAG. Masks are the results of `Cmp`/`And`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ENode {
    Leaf(u32),
    /// An f32 constant (by bits, so nodes hash).
    Const(u32),
    Un(UnOp, NodeIx),
    Bin(BinOp, NodeIx, NodeIx),
    /// `a*b + c`: one fused instruction when FMA is enabled, else a multiply and an add.
    Fma(NodeIx, NodeIx, NodeIx),
    Cmp(CmpOp, NodeIx, NodeIx),
    And(NodeIx, NodeIx),
    /// `mask ? a : b`
    Select(NodeIx, NodeIx, NodeIx),
    /// The dropout keep factor of the element at the loop's row-major flat index:
    /// [`crate::ir::interp::dropout_keep`] with `step` the value of node `step`.
    DropoutKeep {
        step: NodeIx,
        seed: u64,
        rate: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedKind {
    Sum,
    Min,
    Max,
}

/// A reduction of node `node` into `out` (an access with zero strides on reduced axes),
/// starting from `init`, then multiplied by `scale`.
#[derive(Clone, Debug)]
pub struct Red {
    pub node: NodeIx,
    pub kind: RedKind,
    pub init: f32,
    pub scale: f32,
    pub out: Access,
    /// Per-thread partial results (`threads * numel(out)`), set by the planner when the
    /// loop runs on several threads.
    pub partial: Option<VtId>,
}

/// An elementwise loop nest with stores and reductions.
#[derive(Clone, Debug, Default)]
pub struct Loop {
    pub name: String,
    pub shape: Vec<usize>,
    pub nodes: Vec<ENode>,
    pub leaves: Vec<Access>,
    pub stores: Vec<(NodeIx, Access)>,
    pub reds: Vec<Red>,
    memo: HashMap<ENode, NodeIx>,
}

impl Loop {
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Loop {
        Loop {
            name: name.into(),
            shape: shape.to_vec(),
            ..Loop::default()
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Adds (or finds) a node: structurally equal nodes are shared.
    pub fn node(&mut self, n: ENode) -> NodeIx {
        if let Some(&i) = self.memo.get(&n) {
            return i;
        }
        let i = self.nodes.len() as NodeIx;
        self.nodes.push(n);
        self.memo.insert(n, i);
        i
    }

    /// An access in canonical form: dimensions of size 1 get stride 0, so equal accesses
    /// compare equal however they were built.
    pub fn canon(&self, mut a: Access) -> Access {
        debug_assert_eq!(a.strides.len(), self.shape.len());
        for (s, &d) in a.strides.iter_mut().zip(&self.shape) {
            if d == 1 {
                *s = 0;
            }
        }
        a
    }

    /// The canonical row-major access of `vt` over this loop's space.
    pub fn identity(&self, vt: VtId) -> Access {
        self.canon(Access::identity(vt, &self.shape))
    }

    pub fn leaf(&mut self, a: Access) -> NodeIx {
        let a = self.canon(a);
        let li = match self.leaves.iter().position(|l| *l == a) {
            Some(i) => i,
            None => {
                self.leaves.push(a);
                self.leaves.len() - 1
            }
        };
        self.node(ENode::Leaf(li as u32))
    }

    pub fn c(&mut self, v: f32) -> NodeIx {
        self.node(ENode::Const(v.to_bits()))
    }
    pub fn un(&mut self, op: UnOp, a: NodeIx) -> NodeIx {
        self.node(ENode::Un(op, a))
    }
    pub fn bin(&mut self, op: BinOp, a: NodeIx, b: NodeIx) -> NodeIx {
        self.node(ENode::Bin(op, a, b))
    }
    pub fn add(&mut self, a: NodeIx, b: NodeIx) -> NodeIx {
        self.bin(BinOp::Add, a, b)
    }
    pub fn sub(&mut self, a: NodeIx, b: NodeIx) -> NodeIx {
        self.bin(BinOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: NodeIx, b: NodeIx) -> NodeIx {
        self.bin(BinOp::Mul, a, b)
    }
    pub fn div(&mut self, a: NodeIx, b: NodeIx) -> NodeIx {
        self.bin(BinOp::Div, a, b)
    }
    pub fn min(&mut self, a: NodeIx, b: NodeIx) -> NodeIx {
        self.bin(BinOp::Min, a, b)
    }
    pub fn max(&mut self, a: NodeIx, b: NodeIx) -> NodeIx {
        self.bin(BinOp::Max, a, b)
    }
    pub fn fma(&mut self, a: NodeIx, b: NodeIx, c: NodeIx) -> NodeIx {
        self.node(ENode::Fma(a, b, c))
    }
    pub fn cmp(&mut self, op: CmpOp, a: NodeIx, b: NodeIx) -> NodeIx {
        self.node(ENode::Cmp(op, a, b))
    }
    pub fn and(&mut self, a: NodeIx, b: NodeIx) -> NodeIx {
        self.node(ENode::And(a, b))
    }
    pub fn select(&mut self, m: NodeIx, a: NodeIx, b: NodeIx) -> NodeIx {
        self.node(ENode::Select(m, a, b))
    }
    /// `mask ? a : 0`
    pub fn keep(&mut self, m: NodeIx, a: NodeIx) -> NodeIx {
        let z = self.c(0.0);
        self.select(m, a, z)
    }
    /// `x.clamp(lo, hi)` for non-NaN `x`.
    pub fn clamp(&mut self, x: NodeIx, lo: NodeIx, hi: NodeIx) -> NodeIx {
        let t = self.min(x, hi);
        self.max(t, lo)
    }

    pub fn store(&mut self, n: NodeIx, a: Access) {
        let a = self.canon(a);
        self.stores.push((n, a));
    }

    pub fn reduce(&mut self, n: NodeIx, kind: RedKind, init: f32, scale: f32, out: Access) {
        let out = self.canon(out);
        self.reds.push(Red {
            node: n,
            kind,
            init,
            scale,
            out,
            partial: None,
        });
    }

    /// Rebuilds the hash-consing table (after fusion rewrote the nodes).
    pub fn rehash(&mut self) {
        self.memo = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i as NodeIx))
            .collect();
    }

    pub fn reads(&self) -> Vec<VtId> {
        self.leaves.iter().map(|a| a.vt).collect()
    }

    pub fn writes(&self) -> Vec<VtId> {
        self.stores
            .iter()
            .map(|(_, a)| a.vt)
            .chain(self.reds.iter().map(|r| r.out.vt))
            .collect()
    }
}

/// A matrix operand: element `(r, c)` at `offset + r*rs + c*cs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mat {
    pub vt: VtId,
    pub offset: usize,
    pub rs: isize,
    pub cs: isize,
}

/// How a GEMM is shared between threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmSplit {
    /// Each thread computes a block of rows of `dst`.
    Rows,
    /// Each thread computes a block of columns of `dst`.
    Cols,
    /// Each thread sums a block of the `k` dimension into a private partial `dst`; thread 0
    /// adds the partials (small outputs with a long reduction: filter gradients).
    K,
}

/// `dst[m,n] (+)= lhs[m,k] * rhs[k,n]` on the host GEMM.
#[derive(Clone, Debug)]
pub struct Gemm {
    pub name: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst: Mat,
    pub lhs: Mat,
    pub rhs: Mat,
    pub accumulate: bool,
    pub split: GemmSplit,
    /// `threads * m * n` floats for [`GemmSplit::K`], set by the planner.
    pub partial: Option<VtId>,
}

impl Gemm {
    pub fn flops(&self) -> usize {
        2 * self.m * self.n * self.k
    }
}

/// A special-purpose kernel that emits its own code.
pub trait Kernel {
    fn name(&self) -> String;
    /// What the kernel does, for profiles (`depthwise`, `im2col`, ...).
    fn kind(&self) -> &'static str;
    /// Arithmetic per run, counted as GEMMs are (2 per multiply-add of the contraction it
    /// computes), for the GFLOP/s of profiles; 0 for kernels that move, compare or rescale
    /// data, whose cost is memory traffic.
    fn flops(&self) -> usize;
    fn reads(&self) -> Vec<VtId>;
    fn writes(&self) -> Vec<VtId>;
    /// Whether the kernel splits its work over threads (else thread 0 runs it alone).
    fn parallel(&self, threads: usize) -> bool;
    /// Emits the code of thread `cg.tid()`'s share.
    fn emit(&self, cg: &mut Cg) -> Result<()>;
    /// When parallel: whether it ends with a barrier and work on thread 0 alone (combining
    /// per-thread partials), so thread-0 work right after it needs no barrier of its own.
    fn ends_on_thread0(&self) -> bool {
        false
    }
    /// Floats this kernel exchanges with the other ranks of a data-parallel step (0: none).
    fn communicates(&self) -> usize {
        0
    }
}

pub enum Inst {
    Loop(Loop),
    Gemm(Gemm),
    Kernel(Box<dyn Kernel>),
}

impl Inst {
    /// Arithmetic per run ([`Gemm::flops`], [`Kernel::flops`]); fused elementwise loops
    /// count 0 (they are bound by memory, not arithmetic).
    pub fn flops(&self) -> usize {
        match self {
            Inst::Loop(_) => 0,
            Inst::Gemm(g) => g.flops(),
            Inst::Kernel(k) => k.flops(),
        }
    }

    /// Floats the instruction combines over the ranks of a data-parallel step.
    pub fn communicates(&self) -> usize {
        match self {
            Inst::Loop(_) | Inst::Gemm(_) => 0,
            Inst::Kernel(k) => k.communicates(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Inst::Loop(l) => l.name.clone(),
            Inst::Gemm(g) => g.name.clone(),
            Inst::Kernel(k) => k.name(),
        }
    }

    pub fn reads(&self) -> Vec<VtId> {
        match self {
            Inst::Loop(l) => l.reads(),
            Inst::Gemm(g) => {
                let mut r = vec![g.lhs.vt, g.rhs.vt];
                if g.accumulate {
                    r.push(g.dst.vt);
                }
                r
            }
            Inst::Kernel(k) => k.reads(),
        }
    }

    pub fn writes(&self) -> Vec<VtId> {
        match self {
            Inst::Loop(l) => l.writes(),
            Inst::Gemm(g) => vec![g.dst.vt],
            Inst::Kernel(k) => k.writes(),
        }
    }

    /// When run in parallel: ends with a barrier and thread-0 work (combining partials).
    pub fn ends_on_thread0(&self) -> bool {
        match self {
            Inst::Loop(l) => !l.reds.is_empty(),
            Inst::Gemm(g) => g.split == GemmSplit::K,
            Inst::Kernel(k) => k.ends_on_thread0(),
        }
    }

    /// Per-instruction scratch (reduction partials), live only during the instruction.
    pub fn scratch(&self) -> Vec<VtId> {
        match self {
            Inst::Loop(l) => l.reds.iter().filter_map(|r| r.partial).collect(),
            Inst::Gemm(g) => g.partial.into_iter().collect(),
            Inst::Kernel(_) => vec![],
        }
    }
}

/// A lowered graph.
#[derive(Default)]
pub struct Program {
    pub vts: Vec<Vt>,
    pub insts: Vec<Inst>,
    /// Graph outputs: name, vt, shape.
    pub outputs: Vec<(String, VtId, Vec<usize>)>,
    /// State updates: param name, vt holding the new value.
    pub updates: Vec<(String, VtId)>,
    /// Graph inputs in slot order: name, dtype, shape.
    pub inputs: Vec<(String, DType, Vec<usize>)>,
    /// Params by name: vt and shape.
    pub params: Vec<(String, VtId, Vec<usize>)>,
}

impl Program {
    /// The shared read-only zero buffer, grown to at least `numel` floats.
    pub fn zeros(&mut self, numel: usize) -> VtId {
        if let Some(vt) = self.vts.iter().position(|v| v.storage == Storage::Zeros) {
            self.vts[vt].numel = self.vts[vt].numel.max(numel);
            return vt;
        }
        let vt = self.vt("zeros", numel);
        self.vts[vt].storage = Storage::Zeros;
        vt
    }

    pub fn vt(&mut self, name: impl Into<String>, numel: usize) -> VtId {
        self.vts.push(Vt {
            name: name.into(),
            numel,
            dtype: DType::F32,
            storage: Storage::Temp,
        });
        self.vts.len() - 1
    }
}
