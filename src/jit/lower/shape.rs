//! Data movement: `transpose`, `pad`, `crop`, `slice`, `concat`. Each is a loop whose
//! leaf or store access carries the index arithmetic (permuted strides, offsets);
//! `reshape`, `flatten` and inference-mode `dropout` are views and emit nothing.

use super::{same, Lower, Val};
use crate::error::Result;
use crate::ir::op::Op;
use crate::jit::lir::{row_major, Access, Inst};

pub fn lower(cx: &mut Lower, op: &Op) -> Result<Val> {
    let out = cx.out_shape();
    let numel: usize = out.iter().product();
    let os = row_major(&out);
    let v = match op {
        Op::Transpose { perm } => {
            let x = cx.arg(0);
            let xs = row_major(&x.shape);
            let y = cx.temp("", numel);
            let mut l = cx.new_loop("", &out);
            let v = l.leaf(Access {
                vt: x.vt,
                offset: 0,
                strides: perm.iter().map(|&p| xs[p]).collect(),
            });
            l.store(v, Access::identity(y, &out));
            cx.push(Inst::Loop(l));
            y
        }
        Op::Crop { crops } => {
            let begin: Vec<usize> = crops.iter().map(|c| c[0]).collect();
            window(cx, &begin, &out)
        }
        Op::Slice { begin, .. } => window(cx, &begin.clone(), &out),
        Op::Pad { pads } => {
            let x = cx.arg(0);
            let y = cx.temp("", numel);
            let mut z = cx.new_loop("zero", &out);
            let c = z.c(0.0);
            z.store(c, Access::identity(y, &out));
            cx.push(Inst::Loop(z));
            let offset: usize = pads.iter().zip(&os).map(|(p, &s)| p[0] * s as usize).sum();
            let mut l = cx.new_loop("", &x.shape);
            let v = l.leaf(same(&x, &x.shape));
            l.store(
                v,
                Access {
                    vt: y,
                    offset,
                    strides: os.clone(),
                },
            );
            cx.push(Inst::Loop(l));
            y
        }
        Op::Concat { axis } => {
            let y = cx.temp("", numel);
            let mut at = 0;
            for i in 0..cx.n_args() {
                let x = cx.arg(i);
                let mut l = cx.new_loop(&format!("part{i}"), &x.shape);
                let v = l.leaf(same(&x, &x.shape));
                l.store(
                    v,
                    Access {
                        vt: y,
                        offset: at * os[*axis] as usize,
                        strides: os.clone(),
                    },
                );
                cx.push(Inst::Loop(l));
                at += x.shape[*axis];
            }
            y
        }
        other => unreachable!("{} is not a data-movement op", other.name()),
    };
    Ok(Val { vt: v, shape: out })
}

/// `x[begin .. begin + out]` per axis.
fn window(cx: &mut Lower, begin: &[usize], out: &[usize]) -> usize {
    let x = cx.arg(0);
    let xs = row_major(&x.shape);
    let numel: usize = out.iter().product();
    let y = cx.temp("", numel);
    let mut l = cx.new_loop("", out);
    let offset: usize = begin.iter().zip(&xs).map(|(b, &s)| b * s as usize).sum();
    let v = l.leaf(Access {
        vt: x.vt,
        offset,
        strides: xs.clone(),
    });
    l.store(v, Access::identity(y, out));
    cx.push(Inst::Loop(l));
    y
}
