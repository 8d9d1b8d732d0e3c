//! BatchNorm statistics re-estimation: with the weights fixed, the moving mean and variance
//! of every BatchNorm are replaced by the average of their batch statistics over the first
//! batches of the training data ([`autodiff::statistics_step`]).
//!
//! A model trained with BatchNorm momentum 0.999 (Keras' MobileNetV2) keeps moving
//! statistics that trail its weights by about a thousand steps; after a few epochs at a
//! learning rate that still moves the weights, the inference form then normalizes with the
//! wrong numbers and the float model evaluates near chance while it trains at 99%.
//! Re-estimating them from the final weights is the usual cure (PyTorch users call it
//! recalibrating BN); it changes no weight.

use super::backend::Backend;
use super::batches;
use super::calibrate::calibration_batches;
use crate::autodiff;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exec::Feed;
use crate::ir::{Graph, ParamStore};

/// `params` with every (unfrozen) BatchNorm moving statistic of `model` replaced by the
/// mean of its batch statistics over the first `samples` training samples, in batches of
/// `batch_size`. A model without BatchNorm comes back unchanged.
pub fn reestimate_batch_norm(
    model: &Graph,
    params: &ParamStore,
    data: &Dataset,
    samples: usize,
    batch_size: usize,
    backend: &dyn Backend,
) -> Result<ParamStore> {
    let (batch, indices) = calibration_batches(data, samples, batch_size)?;
    let mut m = model.clone();
    m.rebatch(batch)?;
    let step = autodiff::statistics_step(&m)?;
    if step.statistics.is_empty() {
        return Ok(params.clone());
    }
    let mut state = ParamStore::new();
    for name in step.graph.params().keys() {
        let t = params
            .get(name)
            .ok_or_else(|| Error::param(name, "missing from the parameter store"))?;
        state.insert(name.clone(), t.clone());
    }
    let input = step.graph.node(step.graph.inputs()[0]).name.clone();
    let mut exec = backend.executor(&step.graph, state)?;
    let mut sums: Vec<Vec<f64>> = step
        .statistics
        .iter()
        .map(|name| params.require(name).map(|t| vec![0.0; t.data.len()]))
        .collect::<Result<_>>()?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let mut runs = 0usize;
    for chunk in indices.chunks(batch) {
        batches::gather(data, chunk, batch, &mut images, &mut labels);
        exec.run(&[(input.as_str(), Feed::F32(&images))])?;
        let now = exec.params();
        for (sum, name) in sums.iter_mut().zip(&step.statistics) {
            let t = now.require(name)?;
            if t.data.iter().any(|v| !v.is_finite()) {
                return Err(Error::param(
                    name,
                    format!("a batch statistic is not finite in batch {runs}"),
                ));
            }
            for (s, &v) in sum.iter_mut().zip(&t.data) {
                *s += v as f64;
            }
        }
        runs += 1;
    }
    let mut out = params.clone();
    for (sum, name) in sums.iter().zip(&step.statistics) {
        let t = out
            .get_mut(name)
            .ok_or_else(|| Error::param(name, "missing from the parameter store"))?;
        for (v, &s) in t.data.iter_mut().zip(sum) {
            *v = (s / runs as f64) as f32;
        }
    }
    Ok(out)
}
