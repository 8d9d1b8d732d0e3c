//! Reference semantics of the training forward ops.

use super::kernels::*;
use super::value::{Cx, Value};
use crate::ir::op::OpError;
use crate::ir::op::TrainOp;
use crate::ir::types::numel;

pub(super) fn eval(op: &TrainOp, cx: &Cx) -> Result<Value, OpError> {
    use TrainOp::*;
    match op {
        SoftmaxCrossEntropy => {
            let (logits, labels) = logits_and_labels(cx)?;
            let (n, c) = (logits.shape[0], logits.shape[1]);
            let mut loss = 0.0f32;
            for b in 0..n {
                let row = &logits.data[b * c..(b + 1) * c];
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
                loss += lse - row[labels[b] as usize];
            }
            cx.t(vec![loss / n as f32])
        }
        BatchNormTrain { epsilon } => {
            let x = cx.f(0);
            let (mean, var) = moments(x);
            let c = mean.len();
            let (gamma, beta) = (cx.f(1), cx.f(2));
            cx.t(x
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let k = i % c;
                    (v - mean[k]) / (var[k] + epsilon.0).sqrt() * gamma.data[k] + beta.data[k]
                })
                .collect())
        }
        BatchMean => cx.t(moments(cx.f(0)).0),
        BatchVar { unbiased } => {
            let x = cx.f(0);
            let (_, var) = moments(x);
            let m = (x.data.len() / var.len()) as f32;
            let corr = if *unbiased && m > 1.0 {
                m / (m - 1.0)
            } else {
                1.0
            };
            cx.t(var.into_iter().map(|v| v * corr).collect())
        }
        DropoutMask { rate, seed, shape } => {
            let step = cx.f(0).data[0];
            cx.t((0..numel(shape))
                .map(|i| dropout_keep(*seed, step, i, rate.0))
                .collect())
        }
        // the interpreter runs one process: a group of one rank, where every reduction over
        // ranks is the identity (data-parallel steps run on the JIT, `crate::dist`)
        AllReduce { .. } => cx.t(cx.f(0).data.clone()),
        Pack => cx.t((0..cx.args.len())
            .flat_map(|i| cx.f(i).data.iter().copied())
            .collect()),
        Unpack { offset, shape } => cx.t(cx.f(0).data[*offset..*offset + numel(shape)].to_vec()),
    }
}

/// The logits and the checked labels of `softmax_cross_entropy` and its gradient.
pub(super) fn logits_and_labels<'a>(
    cx: &'a Cx,
) -> Result<(&'a crate::ir::params::Tensor, &'a [i32]), OpError> {
    let logits = cx.f(0);
    let Value::I32 { data: labels, .. } = cx.args[1] else {
        return Err("labels must be i32".into());
    };
    let c = logits.shape[1];
    if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= c) {
        return Err(format!("label {bad} is outside the {c} classes").into());
    }
    Ok((logits, labels))
}
