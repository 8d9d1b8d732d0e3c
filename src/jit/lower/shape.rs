//! Data movement: `transpose`, `pad`, `crop`, `slice`, `concat`. Each is a loop whose
//! leaf or store access carries the index arithmetic (permuted strides, offsets);
//! `reshape`, `flatten` and inference-mode `dropout` are views and emit nothing.

use super::context::{same, Lower, Val};
use crate::error::Result;
use crate::jit::lir::{row_major, Access, Inst};

/// The output shape, its element count and its row-major strides.
fn out_geometry(cx: &Lower) -> (Vec<usize>, usize, Vec<isize>) {
    let out = cx.out_shape();
    let numel = out.iter().product();
    let os = row_major(&out);
    (out, numel, os)
}

/// `transpose`: a loop reading with permuted strides.
pub fn transpose(cx: &mut Lower, perm: &[usize]) -> Result<Val> {
    let (out, numel, _) = out_geometry(cx);
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
    Ok(Val { vt: y, shape: out })
}

/// `crop`: the window after the leading crops.
pub fn crop(cx: &mut Lower, crops: &[[usize; 2]]) -> Result<Val> {
    let out = cx.out_shape();
    let begin: Vec<usize> = crops.iter().map(|c| c[0]).collect();
    let y = window(cx, &begin, &out);
    Ok(Val { vt: y, shape: out })
}

/// `slice`: the window at `begin`.
pub fn slice(cx: &mut Lower, begin: &[usize]) -> Result<Val> {
    let out = cx.out_shape();
    let y = window(cx, begin, &out);
    Ok(Val { vt: y, shape: out })
}

/// `pad`: zeros, then the input stored at the padding offset.
pub fn pad(cx: &mut Lower, pads: &[[usize; 2]]) -> Result<Val> {
    let (out, numel, os) = out_geometry(cx);
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
    Ok(Val { vt: y, shape: out })
}

/// `concat`: each operand stored at its offset along `axis`.
pub fn concat(cx: &mut Lower, axis: usize) -> Result<Val> {
    let (out, numel, os) = out_geometry(cx);
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
                offset: at * os[axis] as usize,
                strides: os.clone(),
            },
        );
        cx.push(Inst::Loop(l));
        at += x.shape[axis];
    }
    Ok(Val { vt: y, shape: out })
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
