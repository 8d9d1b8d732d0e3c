//! Post-training calibration: the quantizers' observers of a QAT graph see a few batches of
//! data in inference form, and nothing else changes (the TFLite converter's
//! `representative_dataset`).

use super::backend::Backend;
use super::batches;
use crate::autodiff;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exec::Feed;
use crate::ir::op::{ModelOp, Op, RangeSource};
use crate::ir::{Graph, ParamStore};

/// How calibration turns what it observes into a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RangeMethod {
    /// The minimum and maximum over all calibration samples (the TFLite converter's):
    /// every moving-average activation quantizer becomes an `all_values` one.
    #[default]
    MinMax,
    /// The graph's own observers as they are (`ema` quantizers average the batches'
    /// ranges, as QAT would).
    AsTrained,
}

/// `qat` with every `ema` quantizer observing all values instead (its state kept): the
/// ranges of [`RangeMethod::MinMax`].
pub fn all_values_ranges(qat: &Graph) -> Graph {
    let mut g = qat.clone();
    for id in qat.node_ids() {
        if let Op::Model(ModelOp::FakeQuant(q)) = &mut g.node_mut(id).op {
            if let RangeSource::Ema { state, .. } = &q.range {
                q.range = RangeSource::AllValues {
                    state: state.clone(),
                };
            }
        }
    }
    g
}

/// Runs the observers of QAT graph `qat` over the first `samples` samples of `data` (in
/// order, batches of `batch_size`; the samples beyond the last full batch are left out, and
/// the batch shrinks to `samples` if that is smaller) with `method`'s ranges, and returns
/// `params` with the observed ranges (`S.min`, `S.max`). Weights, BatchNorm statistics and
/// every other param stay as they are.
pub fn calibrate(
    qat: &Graph,
    params: &ParamStore,
    data: &Dataset,
    samples: usize,
    batch_size: usize,
    method: RangeMethod,
    backend: &dyn Backend,
) -> Result<ParamStore> {
    let samples = samples.min(data.len());
    if samples == 0 || batch_size == 0 {
        return Err(Error::Usage(format!(
            "calibration needs at least one sample and a batch of at least one (have {} \
             samples, asked for {samples} in batches of {batch_size})",
            data.len()
        )));
    }
    let batch = batch_size.min(samples);
    let mut m = match method {
        RangeMethod::MinMax => all_values_ranges(qat),
        RangeMethod::AsTrained => qat.clone(),
    };
    m.rebatch(batch)?;
    let step = autodiff::calibration_step(&m)?;
    let mut state = ParamStore::new();
    for name in step.graph.params().keys() {
        let t = match params.get(name).or_else(|| step.init.get(name)) {
            Some(t) => t.clone(),
            None => return Err(Error::param(name, "missing from the parameter store")),
        };
        state.insert(name.clone(), t);
    }
    let input = step.graph.node(step.graph.inputs()[0]).name.clone();
    let mut exec = backend.executor(&step.graph, state)?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let indices: Vec<usize> = (0..samples - samples % batch).collect();
    for (i, chunk) in indices.chunks(batch).enumerate() {
        batches::gather(data, chunk, batch, &mut images, &mut labels);
        let step_no = [i as f32];
        exec.run(&[
            (input.as_str(), Feed::F32(&images)),
            ("step", Feed::F32(&step_no)),
        ])?;
    }
    let observed = exec.params();
    let mut out = params.clone();
    for name in &step.observer_state {
        out.insert(name.clone(), observed.require(name)?.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::text::parse;
    use crate::ir::Tensor;
    use crate::train::ReferenceBackend;

    const QAT: &str = r#"
model "m"
param @k : f32[2,1,1,1]
%0 = input "x" : f32[1,2,2,1]
%1 = fake_quant "x.fq" (%0) {bits=8, range=all_values, state="x.fq"}
%2 = fake_quant "k.fq" (@k) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = conv2d "conv" (%1, %2) {stride=[1,1], padding=valid}
%4 = dropout "drop" (%3) {rate=0.5}
%5 = fake_quant "conv.fq" (%4) {bits=8, range=ema, state="conv.fq", decay=0.9}
%6 = flatten "flat" (%5)
output "y" = %6
"#;

    fn data() -> Dataset {
        // sample i holds the values i, -i, 2i, 0.5
        let images = (0..6)
            .flat_map(|i| [i as f32, -(i as f32), 2.0 * i as f32, 0.5])
            .collect();
        Dataset {
            sample_shape: vec![2, 2, 1],
            images,
            labels: vec![0; 6],
            classes: 8,
        }
    }

    #[test]
    fn min_max_calibration_sees_every_sample_and_changes_no_weight() {
        let g = parse(QAT, "m.qir").unwrap();
        let mut p = ParamStore::new();
        p.insert("k", Tensor::new(vec![2, 1, 1, 1], vec![1.0, -3.0]));
        let out = calibrate(
            &g,
            &p,
            &data(),
            6,
            2,
            RangeMethod::MinMax,
            &ReferenceBackend,
        )
        .unwrap();
        assert_eq!(out.get("k").unwrap().data, [1.0, -3.0]);
        // the input: min over all samples -5 (sample 5), max 10
        assert_eq!(out.get("x.fq.min").unwrap().data, [-5.0]);
        assert_eq!(out.get("x.fq.max").unwrap().data, [10.0]);
        // the conv output (no dropout in calibration): k·x spans -30 (= -3·10) .. 15
        let (lo, hi) = (
            out.get("conv.fq.min").unwrap(),
            out.get("conv.fq.max").unwrap(),
        );
        assert!((lo.data[0] + 30.0).abs() < 0.2, "{lo:?}");
        assert!((hi.data[0] - 15.0).abs() < 0.2, "{hi:?}");

        // as trained: the EMA of the batches' ranges, not the extremes
        let ema = calibrate(
            &g,
            &p,
            &data(),
            6,
            2,
            RangeMethod::AsTrained,
            &ReferenceBackend,
        )
        .unwrap();
        assert!(ema.get("conv.fq.min").unwrap().data[0] > -30.0);
    }

    #[test]
    fn no_samples_is_an_error() {
        let g = parse(QAT, "m.qir").unwrap();
        let err = calibrate(
            &g,
            &ParamStore::new(),
            &data(),
            0,
            2,
            RangeMethod::MinMax,
            &ReferenceBackend,
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least one sample"), "{err}");
    }
}
