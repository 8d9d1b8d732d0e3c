//! Post-training calibration: the quantizers' observers of a QAT graph see a few batches of
//! data in inference form, and nothing else changes (the TFLite converter's
//! `representative_dataset`).
//!
//! Min/max ranges come from the graph's own observers ([`autodiff::calibration_step`]).
//! Percentile and MSE-optimal ranges need the distribution of each activation, so they run
//! the float model with every stateful quantizer's input as an extra output and build a
//! [`Histogram`] per quantizer state over the calibration samples.

use super::backend::Backend;
use super::batches;
use crate::autodiff;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exec::Feed;
use crate::ir::op::{FakeQuantAttrs, ModelOp, Op, RangeSource};
use crate::ir::{Graph, ParamStore, Tensor};
use std::collections::BTreeMap;

/// How calibration turns what it observes into a range.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum RangeMethod {
    /// The minimum and maximum over all calibration samples (the TFLite converter's):
    /// every moving-average activation quantizer becomes an `all_values` one.
    #[default]
    MinMax,
    /// The graph's own observers as they are (`ema` quantizers average the batches'
    /// ranges, as QAT would).
    AsTrained,
    /// The range that keeps `percent` % of the float activation's values inside it, cutting
    /// the rest evenly from both tails (e.g. 99.99): outliers no longer stretch the grid.
    Percentile {
        /// Share of the values inside the range, in (50, 100].
        percent: f32,
    },
    /// The clipping range that minimizes the expected squared quantization error of the float
    /// activation on the quantizer's grid: rounding noise `step²/12` inside the range plus
    /// the squared distance of every clipped value.
    Mse,
}

impl RangeMethod {
    /// Reads `minmax`, `percentile` (99.99 %), `percentile:P` or `mse`; an error names the
    /// choices.
    pub fn parse(s: &str) -> Result<RangeMethod> {
        let bad = || {
            Error::Usage(format!(
                "calibration range `{s}`: use minmax, percentile[:P] (P in (50, 100], e.g. \
                 percentile:99.99) or mse"
            ))
        };
        match s.trim() {
            "minmax" | "min_max" => Ok(RangeMethod::MinMax),
            "mse" => Ok(RangeMethod::Mse),
            "percentile" => Ok(RangeMethod::Percentile { percent: 99.99 }),
            other => {
                let p = other.strip_prefix("percentile:").ok_or_else(bad)?;
                let percent: f32 = p.trim().parse().map_err(|_| bad())?;
                if percent > 50.0 && percent <= 100.0 {
                    Ok(RangeMethod::Percentile { percent })
                } else {
                    Err(bad())
                }
            }
        }
    }

    /// The name [`RangeMethod::parse`] reads back.
    pub fn name(&self) -> String {
        match self {
            RangeMethod::MinMax => "minmax".into(),
            RangeMethod::AsTrained => "as_trained".into(),
            RangeMethod::Percentile { percent } => format!("percentile:{percent}"),
            RangeMethod::Mse => "mse".into(),
        }
    }
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
    match method {
        RangeMethod::MinMax | RangeMethod::AsTrained => {
            observe(qat, params, data, samples, batch_size, method, backend)
        }
        RangeMethod::Percentile { .. } | RangeMethod::Mse => {
            // the observers give every state param its shape; the histograms its value
            let mut out = observe(
                qat,
                params,
                data,
                samples,
                batch_size,
                RangeMethod::MinMax,
                backend,
            )?;
            let hists = histograms(qat, params, data, samples, batch_size, backend)?;
            for (state, h) in hists {
                let (lo, hi) = match method {
                    RangeMethod::Percentile { percent } => h.hist.percentile_range(percent),
                    _ => h.hist.mse_range(h.bits, h.narrow),
                };
                for (suffix, v) in [("min", lo), ("max", hi)] {
                    let name = format!("{state}.{suffix}");
                    let t = out.get_mut(&name).ok_or_else(|| {
                        Error::param(&name, "no observer state after calibration")
                    })?;
                    t.data.iter_mut().for_each(|x| *x = v);
                }
            }
            Ok(out)
        }
    }
}

/// The batch size and the sample indices a calibration over the first `samples` samples of
/// `data` runs: whole batches of `batch_size` (shrunk to `samples` if that is smaller), the
/// samples beyond the last full batch left out.
pub fn calibration_batches(
    data: &Dataset,
    samples: usize,
    batch_size: usize,
) -> Result<(usize, Vec<usize>)> {
    let samples = samples.min(data.len());
    if samples == 0 || batch_size == 0 {
        return Err(Error::Usage(format!(
            "calibration needs at least one sample and a batch of at least one (have {} \
             samples, asked for {samples} in batches of {batch_size})",
            data.len()
        )));
    }
    let batch = batch_size.min(samples);
    Ok((batch, (0..samples - samples % batch).collect()))
}

/// The observer pass of [`calibrate`]: min/max or the graph's own observers.
fn observe(
    qat: &Graph,
    params: &ParamStore,
    data: &Dataset,
    samples: usize,
    batch_size: usize,
    method: RangeMethod,
    backend: &dyn Backend,
) -> Result<ParamStore> {
    let (batch, indices) = calibration_batches(data, samples, batch_size)?;
    let mut m = match method {
        RangeMethod::AsTrained => qat.clone(),
        RangeMethod::MinMax | RangeMethod::Percentile { .. } | RangeMethod::Mse => {
            all_values_ranges(qat)
        }
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

/// Bins of a calibration histogram: fine enough that the 8-bit grid's step spans 8 bins.
const BINS: usize = 2048;

/// A histogram of values over `[lo, hi]` in equal bins.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// The lower end of the first bin.
    pub lo: f32,
    /// The upper end of the last bin.
    pub hi: f32,
    /// How many values fell into each bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram of `bins` bins over `[lo, hi]` (`lo <= hi`).
    pub fn new(lo: f32, hi: f32, bins: usize) -> Histogram {
        Histogram {
            lo,
            hi,
            counts: vec![0; bins.max(1)],
        }
    }

    fn width(&self) -> f64 {
        (self.hi as f64 - self.lo as f64) / self.counts.len() as f64
    }

    /// Counts `xs`; values outside `[lo, hi]` go to the end bins.
    pub fn add(&mut self, xs: &[f32]) {
        let n = self.counts.len();
        let w = self.width();
        for &x in xs {
            let i = if w > 0.0 {
                (((x as f64 - self.lo as f64) / w) as isize).clamp(0, n as isize - 1) as usize
            } else {
                0
            };
            self.counts[i] += 1;
        }
    }

    fn center(&self, i: usize) -> f64 {
        self.lo as f64 + (i as f64 + 0.5) * self.width()
    }

    /// The range holding `percent` % of the values, the rest cut evenly from both tails,
    /// widened to contain 0 (a quantized zero must be exact).
    pub fn percentile_range(&self, percent: f32) -> (f32, f32) {
        let total: u64 = self.counts.iter().sum();
        let cut = ((1.0 - percent as f64 / 100.0) / 2.0 * total as f64).floor() as u64;
        let (mut below, mut first) = (0u64, 0usize);
        for (i, &c) in self.counts.iter().enumerate() {
            if below + c > cut {
                first = i;
                break;
            }
            below += c;
        }
        let (mut above, mut last) = (0u64, self.counts.len() - 1);
        for (i, &c) in self.counts.iter().enumerate().rev() {
            if above + c > cut {
                last = i;
                break;
            }
            above += c;
        }
        let w = self.width();
        let lo = (self.lo as f64 + first as f64 * w) as f32;
        let hi = (self.lo as f64 + (last + 1) as f64 * w) as f32;
        (lo.min(0.0), hi.max(0.0))
    }

    /// The expected squared error of quantizing the counted values on a `bits`-bit
    /// asymmetric grid over `[a, b]`: `step²/12` for each value inside, the squared distance
    /// to the range for each value outside.
    pub fn quantization_mse(&self, a: f64, b: f64, bits: u8, narrow: bool) -> f64 {
        let levels = ((1u64 << bits) - 1 - narrow as u64).max(1) as f64;
        let step = (b - a) / levels;
        let inside = step * step / 12.0;
        let (mut err, mut total) = (0.0f64, 0u64);
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let v = self.center(i);
            let e = if v < a {
                (a - v) * (a - v)
            } else if v > b {
                (v - b) * (v - b)
            } else {
                inside
            };
            err += c as f64 * e;
            total += c;
        }
        err / total.max(1) as f64
    }

    /// The range `f · [min(lo, 0), max(hi, 0)]` (f from 1 down to 0.05 in steps of 0.5 %)
    /// with the least [`Histogram::quantization_mse`] on a `bits`-bit grid.
    pub fn mse_range(&self, bits: u8, narrow: bool) -> (f32, f32) {
        let (lo, hi) = (self.lo.min(0.0) as f64, self.hi.max(0.0) as f64);
        let mut best = (f64::INFINITY, lo, hi);
        for k in 0..=190 {
            let f = 1.0 - 0.005 * k as f64;
            let (a, b) = (lo * f, hi * f);
            let e = self.quantization_mse(a, b, bits, narrow);
            if e < best.0 {
                best = (e, a, b);
            }
        }
        (best.1 as f32, best.2 as f32)
    }
}

/// The float activation histogram of one quantizer state, and its grid.
#[derive(Clone, Debug)]
pub struct StateHistogram {
    /// The values the state's quantizers see in the float model.
    pub hist: Histogram,
    /// The quantizer's bits.
    pub bits: u8,
    /// Whether its integer range is narrow.
    pub narrow: bool,
}

/// Where a tap's values come from in one run: the fed input, or the graph's `k`-th output.
#[derive(Clone, Copy, Debug)]
enum TapSource {
    Input,
    Output(usize),
}

/// One stateful quantizer's input in the float model.
#[derive(Clone, Debug)]
pub struct Tap {
    /// The quantizer's state (`S` of `S.min`, `S.max`).
    pub state: String,
    /// The quantizer's node name in the QAT graph.
    pub quantizer: String,
    /// Its attributes (bits, narrowness, symmetry).
    pub attrs: FakeQuantAttrs,
    source: TapSource,
}

/// The float model of a QAT graph (every fake-quant bypassed), run batch by batch with the
/// input of every stateful (`ema`, `all_values`) quantizer as an extra output: what the
/// TFLite converter's calibration sees, and what sensitivity analysis compares against.
pub struct FloatActivations {
    exec: Box<dyn crate::exec::Executor>,
    input: String,
    taps: Vec<Tap>,
    batch: usize,
}

impl FloatActivations {
    /// Prepares the float model of `qat` for batches of `batch` samples with weights from
    /// `params` on `backend`.
    pub fn new(
        qat: &Graph,
        params: &ParamStore,
        batch: usize,
        backend: &dyn Backend,
    ) -> Result<FloatActivations> {
        let mut g = qat.clone();
        let mut found = Vec::new();
        for id in qat.canonical_order() {
            let Op::Model(ModelOp::FakeQuant(q)) = &qat.node(id).op else {
                continue;
            };
            let x = g
                .operand(id, 0)
                .ok_or_else(|| Error::node(&qat.node(id).name, "fake_quant", "has no operand"))?;
            match &q.range {
                RangeSource::Ema { state, .. }
                | RangeSource::AllValues { state }
                | RangeSource::Learned { state, .. } => {
                    found.push((state.clone(), qat.node(id).name.clone(), q.clone(), x));
                }
                RangeSource::LastValue
                | RangeSource::Tied { .. }
                | RangeSource::Fixed { .. }
                | RangeSource::Operands
                | RangeSource::Trained(_) => {}
            }
            g.replace_all_uses(id, x);
        }
        let first_tap = g.outputs().len();
        let mut taps = Vec::new();
        for (state, quantizer, attrs, x) in found {
            let source = if g.inputs().contains(&x) {
                TapSource::Input
            } else {
                let k = g.outputs().len() - first_tap;
                g.add_output(format!("calibration.tap{k}"), x);
                TapSource::Output(first_tap + k)
            };
            taps.push(Tap {
                state,
                quantizer,
                attrs,
                source,
            });
        }
        g.dce();
        let [x] = g.inputs()[..] else {
            return Err(Error::Graph {
                graph: qat.name.clone(),
                msg: format!(
                    "calibration takes one model input, this model has {}",
                    g.inputs().len()
                ),
            });
        };
        let input = g.node(x).name.clone();
        let mut g = autodiff::eval_graph(&g)?;
        g.rebatch(batch)?;
        let mut state = ParamStore::new();
        for name in g.params().keys() {
            let t = params
                .get(name)
                .ok_or_else(|| Error::param(name, "missing from the parameter store"))?;
            state.insert(name.clone(), t.clone());
        }
        let exec = backend.executor(&g, state)?;
        Ok(FloatActivations {
            exec,
            input,
            taps,
            batch,
        })
    }

    /// The quantizers whose inputs each run shows, in the QAT graph's canonical order.
    pub fn taps(&self) -> &[Tap] {
        &self.taps
    }

    /// The batch size every run takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Runs one batch of `images` (`batch` samples) and returns the float model's outputs,
    /// then one tensor of values per tap (see [`FloatActivations::tap_values`]).
    pub fn run(&mut self, images: &[f32]) -> Result<Vec<Tensor>> {
        self.exec.run(&[(self.input.as_str(), Feed::F32(images))])
    }

    /// The values tap `k` saw in the run that fed `images` and returned `outputs`.
    pub fn tap_values<'a>(&self, k: usize, images: &'a [f32], outputs: &'a [Tensor]) -> &'a [f32] {
        match self.taps[k].source {
            TapSource::Input => images,
            TapSource::Output(i) => &outputs[i].data,
        }
    }
}

/// The float activation histogram of every stateful quantizer of `qat` over the first
/// `samples` samples of `data` (two passes: the span, then the counts).
pub fn histograms(
    qat: &Graph,
    params: &ParamStore,
    data: &Dataset,
    samples: usize,
    batch_size: usize,
    backend: &dyn Backend,
) -> Result<BTreeMap<String, StateHistogram>> {
    let (batch, indices) = calibration_batches(data, samples, batch_size)?;
    let mut float = FloatActivations::new(qat, params, batch, backend)?;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    // pass 1: each state's span; pass 2: its histogram over that span
    let mut spans: BTreeMap<String, (f32, f32)> = BTreeMap::new();
    let mut hists: BTreeMap<String, StateHistogram> = BTreeMap::new();
    for pass in 0..2 {
        for chunk in indices.chunks(batch) {
            batches::gather(data, chunk, batch, &mut images, &mut labels);
            let outs = float.run(&images)?;
            for (k, tap) in float.taps().iter().enumerate() {
                let xs = float.tap_values(k, &images, &outs);
                if let Some(i) = xs.iter().position(|v| !v.is_finite()) {
                    return Err(Error::node(
                        tap.quantizer.as_str(),
                        "fake_quant",
                        format!(
                            "the float model computes {} here during calibration (element \
                             {i} of a batch); check the data and the weights",
                            xs[i]
                        ),
                    ));
                }
                if pass == 0 {
                    let span = spans
                        .entry(tap.state.clone())
                        .or_insert((f32::MAX, f32::MIN));
                    for &v in xs {
                        span.0 = span.0.min(v);
                        span.1 = span.1.max(v);
                    }
                } else {
                    let (lo, hi) = spans[&tap.state];
                    hists
                        .entry(tap.state.clone())
                        .or_insert_with(|| StateHistogram {
                            hist: Histogram::new(lo, hi, BINS),
                            bits: tap.attrs.bits,
                            narrow: tap.attrs.narrow,
                        })
                        .hist
                        .add(xs);
                }
            }
        }
    }
    Ok(hists)
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

    #[test]
    fn range_methods_parse_and_name_themselves() {
        for s in ["minmax", "mse", "percentile:99.9"] {
            assert_eq!(RangeMethod::parse(s).unwrap().name(), s);
        }
        assert_eq!(
            RangeMethod::parse("percentile").unwrap(),
            RangeMethod::Percentile { percent: 99.99 }
        );
        for bad in ["percentile:40", "percentile:101", "percentile:x", "kl"] {
            let e = RangeMethod::parse(bad).unwrap_err().to_string();
            assert!(e.contains("minmax") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn percentile_cuts_the_tails_evenly_and_keeps_zero() {
        // 1000 values 0..999 and one outlier at 10 000
        let mut h = Histogram::new(0.0, 10_000.0, 10_000);
        let xs: Vec<f32> = (0..1000).map(|i| i as f32).chain([10_000.0]).collect();
        h.add(&xs);
        let (lo, hi) = h.percentile_range(99.0);
        // 1001 values, 0.5 % = 5 cut from each end: the outlier and 995..999 go
        assert_eq!(lo, 0.0);
        assert!((hi - 995.0).abs() <= 1.0, "{hi}");
        // everything inside at 100 %
        assert_eq!(h.percentile_range(100.0), (0.0, 10_000.0));
        // a range away from zero still contains it
        let mut h = Histogram::new(2.0, 3.0, 8);
        h.add(&[2.0, 2.5, 3.0]);
        assert_eq!(h.percentile_range(100.0), (0.0, 3.0));
    }

    #[test]
    fn mse_clips_a_long_tail_and_keeps_a_uniform_range() {
        // uniform values: clipping only adds error, the full range is best
        let mut u = Histogram::new(-1.0, 1.0, BINS);
        let xs: Vec<f32> = (0..20_000)
            .map(|i| -1.0 + 2.0 * i as f32 / 19_999.0)
            .collect();
        u.add(&xs);
        let (a, b) = u.mse_range(8, false);
        assert!(a <= -0.99 && b >= 0.99, "{a} {b}");
        // exponentially distributed values (a ReLU output's long tail): below 8 bits the grid
        // is better spent on the bulk than on the last few values
        let n = 20_000;
        let xs: Vec<f32> = (0..n)
            .map(|i| -(1.0 - (i as f64 + 0.5) / n as f64).ln() as f32)
            .collect();
        let max = xs.iter().copied().fold(0.0, f32::max);
        let mut t = Histogram::new(0.0, max, BINS);
        t.add(&xs);
        let (a4, b4) = t.mse_range(4, false);
        assert_eq!(a4, 0.0);
        assert!(b4 < 0.8 * max, "{b4} of {max}");
        let full = t.quantization_mse(0.0, max as f64, 4, false);
        assert!(t.quantization_mse(0.0, b4 as f64, 4, false) < full);
        // at 8 bits the grid is finer, so the optimum clips less
        let (_, b8) = t.mse_range(8, false);
        assert!(b4 < b8 && b8 <= max, "{b4} {b8} {max}");
    }

    #[test]
    fn percentile_calibration_ignores_an_outlier_sample_and_keeps_the_weights() {
        let g = parse(QAT, "m.qir").unwrap();
        let mut p = ParamStore::new();
        p.insert("k", Tensor::new(vec![2, 1, 1, 1], vec![1.0, -3.0]));
        // 200 samples in [0, 1], one at 1000
        let mut images: Vec<f32> = (0..800).map(|i| (i % 100) as f32 / 100.0).collect();
        images.extend([1000.0, 0.0, 0.0, 0.0]);
        let d = Dataset {
            sample_shape: vec![2, 2, 1],
            images,
            labels: vec![0; 201],
            classes: 8,
        };
        let minmax =
            calibrate(&g, &p, &d, 201, 201, RangeMethod::MinMax, &ReferenceBackend).unwrap();
        assert_eq!(minmax.get("x.fq.max").unwrap().data, [1000.0]);
        // 804 input values, 0.25 % = 2 cut from each end: the outlier goes
        let out = calibrate(
            &g,
            &p,
            &d,
            201,
            201,
            RangeMethod::Percentile { percent: 99.5 },
            &ReferenceBackend,
        )
        .unwrap();
        let hi = out.get("x.fq.max").unwrap().data[0];
        assert!(hi < 10.0, "{hi}");
        assert_eq!(out.get("x.fq.min").unwrap().data, [0.0]);
        assert_eq!(out.get("k").unwrap().data, [1.0, -3.0]);
        // the conv output k·x: mostly in [-3, 1]
        let lo = out.get("conv.fq.min").unwrap().data[0];
        assert!((-10.0..=-2.0).contains(&lo), "{lo}");
        // one value 1000× the rest costs more clipped than rounded: MSE keeps it, the weights
        // stay
        let out = calibrate(&g, &p, &d, 201, 201, RangeMethod::Mse, &ReferenceBackend).unwrap();
        assert!(out.get("x.fq.max").unwrap().data[0] > 900.0);
        assert_eq!(out.get("k").unwrap().data, [1.0, -3.0]);
    }

    #[test]
    fn histograms_agree_between_the_jit_and_the_interpreter() {
        let g = parse(QAT, "m.qir").unwrap();
        let mut p = ParamStore::new();
        p.insert("k", Tensor::new(vec![2, 1, 1, 1], vec![0.5, -2.0]));
        let reference = histograms(&g, &p, &data(), 6, 3, &ReferenceBackend).unwrap();
        let jit = histograms(&g, &p, &data(), 6, 3, &crate::jit::Jit::default()).unwrap();
        assert_eq!(
            reference.keys().collect::<Vec<_>>(),
            ["conv.fq", "x.fq"],
            "one histogram per stateful quantizer"
        );
        for (state, h) in &reference {
            assert_eq!(jit[state].hist, h.hist, "{state}");
            assert_eq!(
                h.hist.counts.iter().sum::<u64>(),
                if state == "x.fq" { 24 } else { 48 }
            );
        }
    }
}
