//! Communication between the ranks of a data-parallel step ([`crate::dist`]): `all_reduce`
//! nodes, and the helper the BatchNorm lowerings use to make their per-channel statistics
//! and gradient sums global. Each is an instruction that calls `qatc_all_reduce` on thread 0;
//! in a group of one process they emit nothing.

use super::context::{Lower, Val};
use crate::dist::Reduce;
use crate::error::Result;
use crate::jit::cg::Cg;
use crate::jit::lir::{Access, Inst, Kernel, VtId};
use crate::jit::runtime::reduce_code;

/// `dst = all_reduce(src)` over the ranks.
struct AllReduce {
    name: String,
    src: VtId,
    dst: VtId,
    n: usize,
    reduce: Reduce,
}

impl Kernel for AllReduce {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        "all_reduce"
    }
    fn flops(&self) -> usize {
        0
    }
    fn reads(&self) -> Vec<VtId> {
        vec![self.src]
    }
    fn writes(&self) -> Vec<VtId> {
        vec![self.dst]
    }
    fn parallel(&self, _threads: usize) -> bool {
        false
    }
    fn communicates(&self) -> usize {
        self.n
    }
    fn emit(&self, cg: &mut Cg) -> Result<()> {
        let args = [
            cg.ctx(),
            cg.ptr(self.src, 0),
            cg.ptr(self.dst, 0),
            cg.iconst(self.n as i64),
            cg.iconst(reduce_code(self.reduce)),
        ];
        let f = cg.helpers.all_reduce;
        cg.call(f, &args);
        Ok(())
    }
}

/// `x` combined over the ranks into a new vt (`x` itself in a group of one).
pub fn combined(cx: &mut Lower, suffix: &str, x: &Val, reduce: Reduce) -> Val {
    if cx.ranks <= 1 {
        return x.clone();
    }
    let n = x.numel();
    let dst = cx.temp(suffix, n);
    cx.push(Inst::Kernel(Box::new(AllReduce {
        name: format!("{suffix}:{}", reduce.name()),
        src: x.vt,
        dst,
        n,
        reduce,
    })));
    Val {
        vt: dst,
        shape: x.shape.clone(),
    }
}

/// `all_reduce(x)`.
pub fn all_reduce(cx: &mut Lower, reduce: Reduce) -> Result<Val> {
    let x = cx.arg(0);
    Ok(combined(cx, "all_reduce", &x, reduce))
}

/// `parts` laid end to end in a new vector of `total` elements.
fn lay_end_to_end(cx: &mut Lower, suffix: &str, parts: &[Val], total: usize) -> Val {
    let y = cx.temp(suffix, total);
    let mut at = 0;
    for p in parts {
        let flat = [p.numel()];
        let mut l = cx.new_loop(suffix, &flat);
        let v = l.leaf(Access::identity(p.vt, &flat));
        l.store(
            v,
            Access {
                vt: y,
                offset: at,
                strides: vec![1],
            },
        );
        cx.push(Inst::Loop(l));
        at += flat[0];
    }
    Val {
        vt: y,
        shape: vec![total],
    }
}

/// Elements `offset..` of vector `flat` copied out as a new tensor of `shape`.
fn take(cx: &mut Lower, suffix: &str, flat: &Val, offset: usize, shape: &[usize]) -> Val {
    let n = [shape.iter().product::<usize>()];
    let v = cx.map(suffix, &n, |l| {
        l.leaf(Access {
            vt: flat.vt,
            offset,
            strides: vec![1],
        })
    });
    Val {
        vt: v.vt,
        shape: shape.to_vec(),
    }
}

/// `pack(x*)`: each operand copied to its place in one vector.
pub fn pack(cx: &mut Lower) -> Result<Val> {
    let out = cx.out_shape();
    let parts: Vec<Val> = (0..cx.n_args()).map(|i| cx.arg(i)).collect();
    Ok(lay_end_to_end(cx, "pack", &parts, out[0]))
}

/// `unpack(flat)`: a run of the vector copied out in the output's shape.
pub fn unpack(cx: &mut Lower, offset: usize) -> Result<Val> {
    let out = cx.out_shape();
    let x = cx.arg(0);
    Ok(take(cx, "unpack", &x, offset, &out))
}

/// `parts` combined over the ranks in one exchange: laid end to end, reduced, copied back out
/// (`x` themselves in a group of one). [`Reduce::Range`] takes two equal parts, lows and
/// highs.
pub fn combined_together<const N: usize>(
    cx: &mut Lower,
    suffix: &str,
    parts: [&Val; N],
    reduce: Reduce,
) -> [Val; N] {
    if cx.ranks <= 1 {
        return parts.map(|p| p.clone());
    }
    let total: usize = parts.iter().map(|p| p.numel()).sum();
    let owned: Vec<Val> = parts.iter().map(|&p| p.clone()).collect();
    let packed = lay_end_to_end(cx, suffix, &owned, total);
    let all = combined(cx, suffix, &packed, reduce);
    let mut at = 0;
    parts.map(|p| {
        let v = take(cx, suffix, &all, at, &p.shape);
        at += p.numel();
        v
    })
}
