//! Sensitivity analysis: where quantization hurts a model, layer by layer — what PyTorch's
//! Numeric Suite reports, for qatc's QAT graphs.
//!
//! A *layer* is a weighted op (conv, depthwise conv, dense, …) with its weight quantizer
//! and the activation quantizer after it (through BatchNorm and the activation), or a
//! quantized activation on its own (the model input, an `add`). Per layer, [`analyze`]
//! measures on calibration samples
//! - the SQNR of its weights against their fake-quant (`10·log10(Σw² / Σ(w − q(w))²)`),
//! - the SQNR of its float activation against the same activation fake-quantized alone,
//!   and against the exported int8 model's tensor (every layer quantized, so errors add up),
//!
//! and on the test samples the accuracy of the model with only that layer quantized. The
//! [`Analysis`] prints as a table sorted by accuracy drop, a CSV and an SVG bar chart.

mod chart;
pub mod mixed;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::export::{self, ExportOptions};
use crate::int8::{self, Array};
use crate::ir::fake_quant::{fake_quant, nudged_for, observe_range};
use crate::ir::op::{FakeQuantAttrs, ModelOp, Op, RangeSource};
use crate::ir::{Graph, NodeId, ParamStore};
use crate::pass::{run_pipeline, PipelineOptions};
use crate::train::calibrate::{calibration_batches, FloatActivations};
use crate::train::{self, Backend};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One layer's measurements; `None` where the layer has no such quantizer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSensitivity {
    /// The weighted op's name, or the quantized activation's.
    pub layer: String,
    /// Its op (`conv2d`, `depthwise_conv2d`, `dense`, `add`, `input`).
    pub op: String,
    /// Bits of its weight quantizer.
    pub weight_bits: Option<u8>,
    /// Weight elements (what a lower bit width would shrink).
    pub weights: usize,
    /// Bits of its activation quantizer.
    pub act_bits: Option<u8>,
    /// SQNR (dB) of the weights against their fake-quant.
    pub weight_sqnr_db: Option<f64>,
    /// SQNR (dB) of the float activation against it fake-quantized with the layer's range.
    pub act_sqnr_db: Option<f64>,
    /// SQNR (dB) of the float activation against the int8 model's tensor (dequantized),
    /// with every layer quantized: the error accumulated up to here.
    pub int8_sqnr_db: Option<f64>,
    /// Test accuracy with only this layer's quantizers on, the rest float.
    pub accuracy_alone: f64,
    /// `float accuracy − accuracy_alone`, in percentage points.
    pub accuracy_drop: f64,
}

/// What [`analyze`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// The model's name.
    pub model: String,
    /// Samples the SQNRs were measured on.
    pub calibration_samples: usize,
    /// Samples the accuracies were measured on.
    pub test_samples: usize,
    /// Test accuracy of the float model (every quantizer off).
    pub float_accuracy: f64,
    /// Test accuracy of the fake-quant model (every quantizer on).
    pub quantized_accuracy: f64,
    /// Test accuracy of the exported int8 model in qatc's int8 interpreter.
    pub int8_accuracy: f64,
    /// The layers, most sensitive first (largest accuracy drop, then lowest SQNR).
    pub layers: Vec<LayerSensitivity>,
}

/// A layer's quantizers in the QAT graph.
#[derive(Clone, Debug)]
struct LayerQuantizers {
    name: String,
    op: String,
    weight: Vec<NodeId>,
    activation: Vec<NodeId>,
}

impl LayerQuantizers {
    fn all(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.weight.iter().chain(&self.activation).copied()
    }
}

fn fake_quant_attrs(g: &Graph, id: NodeId) -> Option<&FakeQuantAttrs> {
    match &g.node(id).op {
        Op::Model(ModelOp::FakeQuant(q)) => Some(q),
        _ => None,
    }
}

/// The layers of QAT graph `qat`, in canonical order.
fn layers_of(qat: &Graph) -> Result<Vec<LayerQuantizers>> {
    let order = qat.canonical_order();
    let params: BTreeSet<NodeId> = qat.params().values().copied().collect();
    let mut layers: Vec<LayerQuantizers> = Vec::new();
    let mut by_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    // 1. weighted ops: the users of a quantized param
    for &id in &order {
        let Some(q) = fake_quant_attrs(qat, id) else {
            continue;
        };
        let Some(x) = qat.operand(id, 0) else {
            continue;
        };
        if !(matches!(q.range, RangeSource::LastValue) && params.contains(&x)) {
            continue;
        }
        for (user, _) in qat.users(id) {
            let k = *by_node.entry(user).or_insert_with(|| {
                layers.push(LayerQuantizers {
                    name: qat.node(user).name.clone(),
                    op: qat.node(user).op.name().to_string(),
                    weight: Vec::new(),
                    activation: Vec::new(),
                });
                layers.len() - 1
            });
            if !layers[k].weight.contains(&id) {
                layers[k].weight.push(id);
            }
        }
    }
    // 2. activation quantizers: the weighted op they follow (through single-input ops such
    //    as BatchNorm and ReLU), or a layer of their own
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    let mut tied = Vec::new();
    for &id in &order {
        let Some(q) = fake_quant_attrs(qat, id) else {
            continue;
        };
        let Some(x) = qat.operand(id, 0) else {
            continue;
        };
        let state = match &q.range {
            RangeSource::Ema { state, .. }
            | RangeSource::AllValues { state }
            | RangeSource::Learned { state, .. } => state.clone(),
            RangeSource::Tied { state } => {
                tied.push((id, state.clone()));
                continue;
            }
            RangeSource::Fixed { .. } | RangeSource::Operands | RangeSource::Trained(_) => {
                format!("{}#fixed", id.index())
            }
            RangeSource::LastValue => continue,
        };
        let mut n = x;
        let owner = loop {
            if let Some(&k) = by_node.get(&n) {
                break Some(k);
            }
            if fake_quant_attrs(qat, n).is_some() {
                break None;
            }
            let inner: Vec<NodeId> = qat
                .operands(n)
                .into_iter()
                .filter(|o| !params.contains(o))
                .collect();
            match inner[..] {
                [only] => n = only,
                _ => break None,
            }
        };
        let k = owner.unwrap_or_else(|| {
            let node = qat.node(x);
            let op = if qat.inputs().contains(&x) {
                "input".to_string()
            } else {
                node.op.name().to_string()
            };
            layers.push(LayerQuantizers {
                name: node.name.clone(),
                op,
                weight: Vec::new(),
                activation: Vec::new(),
            });
            layers.len() - 1
        });
        layers[k].activation.push(id);
        by_state.insert(state, k);
    }
    // 3. quantizers that read another's range go with it (concat inputs)
    for (id, state) in tied {
        let k = *by_state.get(&state).ok_or_else(|| {
            Error::node(
                qat.node(id).name.as_str(),
                "fake_quant",
                format!(
                    "reads the range of quantizer state `{state}`, which no quantizer observes"
                ),
            )
        })?;
        layers[k].activation.push(id);
    }
    Ok(layers)
}

/// `qat` with every fake-quant not in `keep` bypassed.
fn with_quantizers(qat: &Graph, keep: &BTreeSet<NodeId>) -> Graph {
    let mut g = qat.clone();
    for id in qat.canonical_order() {
        if fake_quant_attrs(qat, id).is_some() && !keep.contains(&id) {
            if let Some(x) = g.operand(id, 0) {
                g.replace_all_uses(id, x);
            }
        }
    }
    g.dce();
    g
}

/// Signal and noise energy, for an SQNR.
#[derive(Clone, Copy, Debug, Default)]
struct Sqnr {
    signal: f64,
    noise: f64,
}

impl Sqnr {
    fn add(&mut self, reference: &[f32], approx: impl Iterator<Item = f32>) {
        for (&r, a) in reference.iter().zip(approx) {
            self.signal += r as f64 * r as f64;
            self.noise += (r as f64 - a as f64) * (r as f64 - a as f64);
        }
    }

    /// In dB; infinite when the approximation is exact.
    fn db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
}

/// The quantizer range params `S.min`, `S.max` of `state`, per-tensor.
fn state_range(params: &ParamStore, state: &str) -> Result<(f32, f32)> {
    let get = |suffix: &str| -> Result<f32> {
        let name = format!("{state}.{suffix}");
        let t = params.require(&name)?;
        t.data
            .first()
            .copied()
            .ok_or_else(|| Error::param(&name, "is empty: calibrate or train the model first"))
    };
    Ok((get("min")?, get("max")?))
}

/// The energies of param `name` and of its error under fake-quant `q` (its own range, per
/// axis), and its element count.
fn weight_sqnr(params: &ParamStore, name: &str, q: &FakeQuantAttrs) -> Result<(Sqnr, usize)> {
    let w = params.require(name)?;
    let ranges = observe_range(&w.data, &w.shape, q.axis);
    let nudged: Vec<_> = ranges
        .iter()
        .map(|&(lo, hi)| nudged_for(q, lo, hi))
        .collect();
    let inner: usize = match q.axis {
        Some(a) => w.shape[a + 1..].iter().product(),
        None => w.data.len().max(1),
    };
    let channels = nudged.len();
    let mut s = Sqnr::default();
    s.add(
        &w.data,
        w.data
            .iter()
            .enumerate()
            .map(|(i, &x)| fake_quant(x, &nudged[(i / inner.max(1)) % channels])),
    );
    Ok((s, w.data.len()))
}

/// Settings of [`analyze`].
#[derive(Clone)]
pub struct Options {
    /// Samples (the first ones of the calibration set) the SQNRs are measured on.
    pub calibration_samples: usize,
    /// Batch size of every run.
    pub batch: usize,
    /// The export pipeline's options, for the int8 model.
    pub export: PipelineOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            calibration_samples: 512,
            batch: 64,
            export: PipelineOptions::eval(),
        }
    }
}

/// Measures every layer of QAT graph `qat` (form 2, its quantizer ranges in `params`: after
/// QAT, or after [`train::calibrate()`]): SQNRs on the first samples of `calibration`,
/// accuracies on all of `test`.
pub fn analyze(
    qat: &Graph,
    params: &ParamStore,
    calibration: &Dataset,
    test: &Dataset,
    opts: &Options,
    backend: &dyn Backend,
) -> Result<Analysis> {
    let (batch, export_options) = (opts.batch, &opts.export);
    if test.is_empty() || batch == 0 {
        return Err(Error::Usage(format!(
            "sensitivity analysis needs test samples and a batch of at least one (have {} \
             test samples, batch {batch})",
            test.len()
        )));
    }
    let (calib_batch, indices) = calibration_batches(calibration, opts.calibration_samples, batch)?;
    let layers = layers_of(qat)?;
    let accuracy = |g: &Graph| -> Result<f64> {
        Ok(train::evaluate(g, params, test, batch, None, backend)?.accuracy)
    };
    let float_accuracy = accuracy(&with_quantizers(qat, &BTreeSet::new()))?;
    let quantized_accuracy = accuracy(qat)?;

    // the int8 model of the whole graph
    let mut export_params = params.clone();
    let ready = run_pipeline(qat.clone(), &mut export_params, "export", export_options)?;
    let bytes = export::export(&ready, &export_params, &ExportOptions::default())?;
    let it = int8::Interpreter::new(&bytes)?;
    let preds = int8::predict(&it, test, 100)?;
    let int8_accuracy = int8::accuracy(&preds, &test.labels);
    let tensor_of = |name: &str| it.model().tensors.iter().position(|t| t.name == name);

    // SQNRs of the activations, over the calibration batches
    let batch = calib_batch;
    let mut float = FloatActivations::new(qat, params, batch, backend)?;
    let quantizer_layer: BTreeMap<String, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(k, l)| {
            l.activation
                .iter()
                .map(move |&id| (qat.node(id).name.clone(), k))
        })
        .collect();
    let mut act = vec![Sqnr::default(); layers.len()];
    let mut int8 = vec![None::<Sqnr>; layers.len()];
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for chunk in indices.chunks(batch) {
        crate::train::batches::gather(calibration, chunk, batch, &mut images, &mut labels);
        let outs = float.run(&images)?;
        let mut shape = vec![batch];
        shape.extend(&calibration.sample_shape);
        let input = Array::f32(shape, images.clone())
            .ok_or_else(|| Error::Usage("a calibration batch of the wrong size".into()))?;
        let values = it.run_all(&[input])?;
        for (k, tap) in float.taps().iter().enumerate() {
            let Some(&l) = quantizer_layer.get(&tap.quantizer) else {
                continue;
            };
            let xs = float.tap_values(k, &images, &outs);
            let (lo, hi) = state_range(params, &tap.state)?;
            let n = nudged_for(&tap.attrs, lo, hi);
            act[l].add(xs, xs.iter().map(|&x| fake_quant(x, &n)));
            // the int8 tensor named like the layer (a fused op's output) or its quantizer
            let int8_values = [layers[l].name.as_str(), tap.quantizer.as_str()]
                .into_iter()
                .filter_map(tensor_of)
                .find_map(|t| {
                    let q = it.model().tensors[t].quant.as_ref()?;
                    let d = values[t].as_ref()?.as_i8()?;
                    (d.len() == xs.len() && q.scale.len() == 1).then(|| (q.first(), d))
                });
            if let Some(((s, z), d)) = int8_values {
                int8[l]
                    .get_or_insert_with(Sqnr::default)
                    .add(xs, d.iter().map(|&v| (v as i32 - z) as f32 * s));
            }
        }
    }

    let mut out = Vec::new();
    for (k, l) in layers.iter().enumerate() {
        let mut weight_bits = None;
        let mut weight = Sqnr::default();
        let mut weights = 0;
        for &id in &l.weight {
            let Some(q) = fake_quant_attrs(qat, id) else {
                continue;
            };
            let Some(p) = qat.operand(id, 0) else {
                continue;
            };
            // several weight tensors add up as energies: the SQNR of their concatenation
            let (s, n) = weight_sqnr(params, &qat.node(p).name, q)?;
            weight.signal += s.signal;
            weight.noise += s.noise;
            weights += n;
            weight_bits = Some(q.bits);
        }
        let act_bits = l
            .activation
            .iter()
            .find_map(|&id| fake_quant_attrs(qat, id).map(|q| q.bits));
        let keep: BTreeSet<NodeId> = l.all().collect();
        let alone = accuracy(&with_quantizers(qat, &keep))?;
        let has_act_tap = l.activation.iter().any(|&id| {
            float
                .taps()
                .iter()
                .any(|t| t.quantizer == qat.node(id).name)
        });
        out.push(LayerSensitivity {
            layer: l.name.clone(),
            op: l.op.clone(),
            weight_bits,
            weights,
            act_bits,
            weight_sqnr_db: weight_bits.map(|_| weight.db()),
            act_sqnr_db: has_act_tap.then(|| act[k].db()),
            int8_sqnr_db: int8[k].map(|s| s.db()),
            accuracy_alone: alone,
            accuracy_drop: 100.0 * (float_accuracy - alone),
        });
    }
    out.sort_by(|a, b| {
        b.accuracy_drop
            .total_cmp(&a.accuracy_drop)
            .then(sort_db(a.act_sqnr_db).total_cmp(&sort_db(b.act_sqnr_db)))
    });
    Ok(Analysis {
        model: qat.name.clone(),
        calibration_samples: indices.len(),
        test_samples: test.len(),
        float_accuracy,
        quantized_accuracy,
        int8_accuracy,
        layers: out,
    })
}

fn sort_db(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::INFINITY)
}

fn db_cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(d) if d.is_infinite() => "exact".into(),
        Some(d) => format!("{d:.1}"),
    }
}

fn bits_cell(v: Option<u8>) -> String {
    v.map_or("-".into(), |b| b.to_string())
}

impl Analysis {
    /// The sorted table the command line prints.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: float {:.2}%, fake-quant {:.2}%, int8 {:.2}% on {} test samples; SQNR on {} \
             calibration samples",
            self.model,
            100.0 * self.float_accuracy,
            100.0 * self.quantized_accuracy,
            100.0 * self.int8_accuracy,
            self.test_samples,
            self.calibration_samples
        );
        let w = self
            .layers
            .iter()
            .map(|l| l.layer.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            s,
            "  {:<w$} {:<17} {:>6} {:>8} {:>10} {:>10} {:>10} {:>9} {:>7}",
            "layer", "op", "bits", "weights", "weight dB", "act dB", "int8 dB", "alone", "drop"
        );
        for l in &self.layers {
            let _ = writeln!(
                s,
                "  {:<w$} {:<17} {:>6} {:>8} {:>10} {:>10} {:>10} {:>8.2}% {:>7.2}",
                l.layer,
                l.op,
                format!("{}/{}", bits_cell(l.weight_bits), bits_cell(l.act_bits)),
                l.weights,
                db_cell(l.weight_sqnr_db),
                db_cell(l.act_sqnr_db),
                db_cell(l.int8_sqnr_db),
                100.0 * l.accuracy_alone,
                l.accuracy_drop
            );
        }
        let _ = writeln!(
            s,
            "  (bits: weight/activation; dB: SQNR against the float activation or weights; \
             alone: test accuracy with only this layer quantized; drop: points below float)"
        );
        s
    }

    /// The table as CSV (one row per layer, most sensitive first).
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "layer,op,weight_bits,act_bits,weights,weight_sqnr_db,act_sqnr_db,int8_sqnr_db,\
             accuracy_alone,accuracy_drop_points\n",
        );
        let num = |v: Option<f64>| v.map_or(String::new(), |d| format!("{d:.3}"));
        for l in &self.layers {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{:.5},{:.3}",
                l.layer,
                l.op,
                l.weight_bits.map_or(String::new(), |b| b.to_string()),
                l.act_bits.map_or(String::new(), |b| b.to_string()),
                l.weights,
                num(l.weight_sqnr_db),
                num(l.act_sqnr_db),
                num(l.int8_sqnr_db),
                l.accuracy_alone,
                l.accuracy_drop
            );
        }
        s
    }

    /// A bar chart of the accuracy drop and the int8 SQNR per layer, as SVG.
    pub fn svg(&self) -> String {
        let names: Vec<&str> = self.layers.iter().map(|l| l.layer.as_str()).collect();
        let drops: Vec<f64> = self.layers.iter().map(|l| l.accuracy_drop).collect();
        let sqnr: Vec<f64> = self
            .layers
            .iter()
            .map(|l| l.int8_sqnr_db.or(l.act_sqnr_db).unwrap_or(0.0))
            .collect();
        chart::bars(&self.model, &names, &drops, &sqnr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::text::parse;
    use crate::ir::Tensor;
    use crate::train::ReferenceBackend;

    /// conv → BatchNorm → ReLU → quantizer (one layer), a residual add (a layer of its own),
    /// a concat whose inputs read its range, a dense head with 2-bit weights.
    const QAT: &str = r#"
model "m"
param @k : f32[2,1,1,1]
param @g : f32[2]
param @b : f32[2]
param @mean : f32[2]
param @var : f32[2]
param @w : f32[3,64]
%0 = input "x" : f32[1,4,4,1]
%1 = fake_quant "x/act" (%0) {bits=8, range=all_values, state="x/act"}
%2 = fake_quant "k/fq" (@k) {bits=8, narrow=true, symmetric=true, axis=0, range=last_value}
%3 = conv2d "conv" (%1, %2) {stride=[1,1], padding=valid}
%4 = batch_norm "bn" (%3, @g, @b, @mean, @var) {epsilon=0.001, momentum=0.99}
%5 = relu "relu" (%4)
%6 = fake_quant "relu/act" (%5) {bits=8, range=ema, state="relu/act", decay=0.9}
%7 = add "add" (%6, %6)
%8 = fake_quant "add/act" (%7) {bits=8, range=ema, state="add/act", decay=0.9}
%9 = fake_quant "a.t" (%8) {bits=8, range=tied, state="cat/act"}
%10 = fake_quant "b.t" (%6) {bits=8, range=tied, state="cat/act"}
%11 = concat "cat" (%9, %10) {axis=3}
%12 = fake_quant "cat/act" (%11) {bits=8, range=ema, state="cat/act", decay=0.9}
%13 = flatten "flat" (%12)
%14 = fake_quant "w/fq" (@w) {bits=2, narrow=true, symmetric=true, axis=0, range=last_value}
%15 = dense "dense" (%13, %14)
%16 = fake_quant "dense/act" (%15) {bits=8, range=ema, state="dense/act", decay=0.9}
output "y" = %16
"#;

    fn model() -> (Graph, ParamStore) {
        let g = parse(QAT, "m.qir").unwrap();
        let mut p = ParamStore::new();
        p.insert("k", Tensor::new(vec![2, 1, 1, 1], vec![1.0, -0.5]));
        p.insert("g", Tensor::new(vec![2], vec![1.0, 2.0]));
        p.insert("b", Tensor::new(vec![2], vec![0.1, 0.0]));
        p.insert("mean", Tensor::new(vec![2], vec![0.0, -0.2]));
        p.insert("var", Tensor::new(vec![2], vec![1.0, 0.5]));
        let w = (0..192)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) / 9.0)
            .collect();
        p.insert("w", Tensor::new(vec![3, 64], w));
        (g, p)
    }

    fn data(n: usize, seed: usize) -> Dataset {
        let images = (0..n * 16)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0)
            .collect();
        Dataset {
            sample_shape: vec![4, 4, 1],
            images,
            labels: (0..n).map(|i| (i % 3) as i32).collect(),
            classes: 3,
        }
    }

    #[test]
    fn layers_group_each_weighted_op_with_the_quantizer_after_it() {
        let (g, _) = model();
        let layers = layers_of(&g).unwrap();
        let names = |ids: &[NodeId]| -> Vec<String> {
            ids.iter().map(|&i| g.node(i).name.clone()).collect()
        };
        let got: Vec<(String, String, Vec<String>, Vec<String>)> = layers
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    l.op.clone(),
                    names(&l.weight),
                    names(&l.activation),
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                (
                    "conv".into(),
                    "conv2d".into(),
                    s(&["k/fq"]),
                    s(&["relu/act"])
                ),
                (
                    "dense".into(),
                    "dense".into(),
                    s(&["w/fq"]),
                    s(&["dense/act"])
                ),
                ("x".into(), "input".into(), s(&[]), s(&["x/act"])),
                ("add".into(), "add".into(), s(&[]), s(&["add/act"])),
                (
                    "cat".into(),
                    "concat".into(),
                    s(&[]),
                    s(&["cat/act", "a.t", "b.t"])
                ),
            ]
        );
    }

    fn calibrated() -> (Graph, ParamStore) {
        let (g, p) = model();
        let p = crate::train::calibrate(
            &g,
            &p,
            &data(32, 1),
            32,
            8,
            crate::train::RangeMethod::MinMax,
            &ReferenceBackend,
        )
        .unwrap();
        (g, p)
    }

    #[test]
    fn the_two_bit_layer_is_the_noisiest_and_backends_agree() {
        let (g, p) = calibrated();
        let opts = Options {
            calibration_samples: 32,
            batch: 8,
            export: PipelineOptions::eval(),
        };
        let reference =
            analyze(&g, &p, &data(32, 1), &data(24, 2), &opts, &ReferenceBackend).unwrap();
        let jit = analyze(
            &g,
            &p,
            &data(32, 1),
            &data(24, 2),
            &opts,
            &crate::jit::Jit::default(),
        )
        .unwrap();
        assert_eq!(reference.layers.len(), 5);
        let by =
            |a: &Analysis, name: &str| a.layers.iter().find(|l| l.layer == name).unwrap().clone();
        // 2-bit weights: 3 levels, against 255 for the conv's
        let (dense, conv) = (by(&reference, "dense"), by(&reference, "conv"));
        assert!(
            dense.weight_sqnr_db.unwrap() + 20.0 < conv.weight_sqnr_db.unwrap(),
            "{dense:?} {conv:?}"
        );
        assert_eq!((dense.weight_bits, dense.weights), (Some(2), 192));
        assert_eq!((conv.weight_bits, conv.act_bits), (Some(8), Some(8)));
        // an 8-bit activation quantizer alone is close to its float values; in the int8 model
        // the error of everything before adds up
        let act = conv.act_sqnr_db.unwrap();
        assert!(act > 30.0, "{conv:?}");
        assert!(conv.int8_sqnr_db.unwrap() <= act + 0.5, "{conv:?}");
        assert!(by(&reference, "x").int8_sqnr_db.is_some());
        // sorted by accuracy drop
        assert!(reference
            .layers
            .windows(2)
            .all(|w| w[0].accuracy_drop >= w[1].accuracy_drop));
        // the JIT and the interpreter measure the same
        for (r, j) in reference.layers.iter().zip(&jit.layers) {
            assert_eq!(r.layer, j.layer);
            assert_eq!(r.accuracy_alone, j.accuracy_alone, "{}", r.layer);
            for (a, b) in [
                (r.act_sqnr_db, j.act_sqnr_db),
                (r.int8_sqnr_db, j.int8_sqnr_db),
                (r.weight_sqnr_db, j.weight_sqnr_db),
            ] {
                match (a, b) {
                    (Some(a), Some(b)) => {
                        assert!(a == b || (a - b).abs() < 0.05, "{}: {a} {b}", r.layer)
                    }
                    (a, b) => assert_eq!(a.is_some(), b.is_some(), "{}", r.layer),
                }
            }
        }
        // the outputs
        let csv = reference.csv();
        assert!(csv.starts_with("layer,op,weight_bits"), "{csv}");
        assert_eq!(csv.lines().count(), 6);
        let svg = reference.svg();
        assert!(svg.starts_with("<svg") && svg.contains("dense"), "{svg}");
        assert!(reference.table().contains("dense"));
    }

    #[test]
    fn no_samples_is_an_error() {
        let (g, p) = calibrated();
        let e = analyze(
            &g,
            &p,
            &data(0, 1),
            &data(4, 2),
            &Options::default(),
            &ReferenceBackend,
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least one sample"), "{e}");
    }
}
