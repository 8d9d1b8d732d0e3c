//! The training loop: batches, schedules, metrics, checkpoints.
//!
//! [`fit`] trains a model or QAT graph on a [`Dataset`] through any [`Executor`]: it builds
//! the train step ([`autodiff::train_step`]) and the inference graph
//! ([`autodiff::eval_graph`]), compiles both with a [`Backend`] (the interpreter, or the
//! JIT), and runs epochs of seeded, shuffled batches with a learning-rate schedule,
//! reporting loss and accuracy per epoch, evaluating on a test set, stopping on NaN/Inf
//! with the step and the tensor, and writing checkpoints a run can resume from with
//! bit-identical results.
//!
//! Float training and QAT fine-tuning are the same call on different graphs: train the
//! float model, run the `default_8bit` pipeline on it, and `fit` the QAT graph starting
//! from the float result's params (TFMOT's recipe: Adam 1e-3 then 1e-4, batch 64, one
//! epoch each).
//!
//! ```
//! use qatc::data::Dataset;
//! use qatc::ir::builder::{Layer, Sequential};
//! use qatc::train::{fit, FitConfig, ReferenceBackend};
//!
//! // two classes: bright and dark 4x4 images
//! let images: Vec<f32> = (0..64 * 16).map(|i| if (i / 16) % 2 == 0 { 0.9 } else { 0.1 }).collect();
//! let labels: Vec<i32> = (0..64).map(|i| (i % 2) as i32).collect();
//! let data = Dataset { sample_shape: vec![4, 4, 1], images, labels, classes: 2 };
//! let model = Sequential::new("tiny", &[4, 4, 1], 0)
//!     .add(Layer::flatten())
//!     .add(Layer::dense(2))
//!     .build()
//!     .unwrap();
//! let cfg = FitConfig { batch_size: 16, epochs: 3, progress: false, ..FitConfig::default() };
//! let result = fit(&model.graph, &model.params, &data, Some(&data), &cfg, &ReferenceBackend).unwrap();
//! assert_eq!(result.history.epochs.len(), 3);
//! assert!(result.history.last().unwrap().loss < result.history.epochs[0].loss);
//! ```

pub mod augment;
mod backend;
pub mod batch_norm;
pub mod batches;
pub mod calibrate;
pub mod checkpoint;
pub mod metrics;
pub mod schedule;

pub use augment::Augment;
pub use backend::{Backend, ReferenceBackend};
pub use batch_norm::reestimate_batch_norm;
pub use calibrate::{calibrate, RangeMethod};
pub use checkpoint::{Checkpoint, Position, RunKey};
pub use metrics::{EpochMetrics, EvalMetrics, History};
pub use schedule::LrSchedule;

use crate::autodiff::Shard;
use crate::autodiff::{self, Optimizer, TrainSpec, TrainStep};
use crate::data::Dataset;
use crate::dist::GroupHandle;
use crate::error::{Error, Result};
use crate::exec::{Executor, Feed};
use crate::ir::op::ModelOp;
use crate::ir::{Graph, Op, ParamStore, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use metrics::EpochSums;
use std::path::PathBuf;
use std::time::Instant;

/// How to train. `FitConfig::default()` is Keras' `fit` with `optimizer="adam"`:
/// Adam 1e-3, batch 64, one epoch, shuffled.
#[derive(Clone, Debug, PartialEq)]
pub struct FitConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per training step; a last partial batch of each epoch is dropped.
    pub batch_size: usize,
    /// The update rule (Adam, SGD with momentum) and its hyperparameters.
    pub optimizer: Optimizer,
    /// The learning rate per step, over `epochs × batches per epoch` steps.
    pub lr: LrSchedule,
    /// Seeds the shuffling and the dropout masks.
    pub seed: u64,
    /// Visit the samples in a fresh seeded order each epoch (else in dataset order).
    pub shuffle: bool,
    /// Batch size of evaluation (default: `batch_size`).
    pub eval_batch_size: Option<usize>,
    /// The model output holding the logits (default: the only output).
    pub logits: Option<String>,
    /// Params kept fixed.
    pub frozen: Vec<String>,
    /// An `indicatif` progress bar and a line per epoch on stderr; `false` is quiet.
    pub progress: bool,
    /// Checkpoint file, written at the end of every epoch, every `checkpoint_every` steps
    /// and when the run stops early.
    pub checkpoint: Option<PathBuf>,
    /// Also write the checkpoint every this many steps; `None` writes it only at epoch ends and
    /// early stops.
    pub checkpoint_every: Option<u64>,
    /// Continue from this checkpoint (same model, data, batch size, seed, optimizer); the
    /// state comes from the checkpoint, not from `fit`'s `params`.
    pub resume: Option<PathBuf>,
    /// Stop once this many steps (counted from the start of training) are done.
    pub stop_after: Option<u64>,
    /// Check every updated state tensor for NaN/Inf every this many steps. The loss and
    /// logits are checked every step, the state also whenever they turn bad, at the end of
    /// every epoch and before every checkpoint (a checkpoint never holds NaN). `1` names
    /// the exact step of a bad update; checking copies the state out of the executor.
    pub check_state_every: u64,
    /// Augmentation of the training batches (none by default).
    pub augment: Augment,
    /// The ranks of a data-parallel run ([`crate::dist`]): each trains on its equal shard of
    /// every global batch of `batch_size` samples, and the ranks keep identical state. Rank 0
    /// alone writes checkpoints and shows progress. One process by default.
    pub group: GroupHandle,
}

impl Default for FitConfig {
    fn default() -> FitConfig {
        FitConfig {
            epochs: 1,
            batch_size: 64,
            optimizer: Optimizer::adam(),
            lr: LrSchedule::constant(1e-3),
            seed: 0,
            shuffle: true,
            eval_batch_size: None,
            logits: None,
            frozen: Vec::new(),
            progress: true,
            checkpoint: None,
            checkpoint_every: None,
            resume: None,
            stop_after: None,
            check_state_every: 10,
            augment: Augment::default(),
            group: GroupHandle::solo(),
        }
    }
}

impl FitConfig {
    /// TFMOT's QAT fine-tuning recipe: Adam with learning rate 1e-4.
    pub fn qat_fine_tune() -> FitConfig {
        FitConfig {
            lr: LrSchedule::constant(1e-4),
            ..FitConfig::default()
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct FitResult {
    /// The trained model: params, quantizer ranges and BatchNorm statistics (optimizer
    /// slots removed) — what `eval_graph`, export and a QAT fine-tune read.
    pub params: ParamStore,
    /// The complete state (with optimizer slots), as a checkpoint holds it.
    pub state: ParamStore,
    /// Per-epoch metrics and per-step losses, resumed runs' included.
    pub history: History,
    /// Steps done since the start of training (including resumed ones).
    pub steps: u64,
    /// `stop_after` ended the run before the last epoch.
    pub stopped_early: bool,
}

/// Evaluates a model on `data` in inference form.
pub fn evaluate(
    model: &Graph,
    params: &ParamStore,
    data: &Dataset,
    batch_size: usize,
    logits: Option<&str>,
    backend: &dyn Backend,
) -> Result<EvalMetrics> {
    let mut ev = Evaluator::new(model, batch_size, logits)?;
    ev.run(params, data, backend)
}

/// The inference graph at a fixed batch and its executor, kept across epochs.
struct Evaluator {
    graph: Graph,
    input: String,
    output: usize,
    probabilities: bool,
    batch: usize,
    exec: Option<Box<dyn Executor>>,
}

impl Evaluator {
    fn new(model: &Graph, batch: usize, logits: Option<&str>) -> Result<Evaluator> {
        if batch == 0 {
            return Err(Error::Usage(
                "the evaluation batch size must be at least 1".into(),
            ));
        }
        let mut m = model.clone();
        m.rebatch(batch)?;
        let graph = autodiff::eval_graph(&m)?;
        let output = match logits {
            Some(name) => graph
                .outputs()
                .iter()
                .position(|o| o.name == name)
                .ok_or_else(|| {
                    Error::Usage(format!("model `{}` has no output `{name}`", model.name))
                })?,
            None if graph.outputs().len() == 1 => 0,
            None => {
                return Err(Error::Usage(format!(
                    "model `{}` has several outputs: say which one holds the logits",
                    model.name
                )))
            }
        };
        let out_node = graph.outputs()[output].node;
        let probabilities = graph.node(out_node).op == Op::Model(ModelOp::Softmax);
        let [input] = graph.inputs() else {
            return Err(Error::Usage(format!(
                "model `{}` must have exactly one input to be evaluated",
                model.name
            )));
        };
        Ok(Evaluator {
            input: graph.node(*input).name.clone(),
            graph,
            output,
            probabilities,
            batch,
            exec: None,
        })
    }

    fn run(
        &mut self,
        state: &ParamStore,
        data: &Dataset,
        backend: &dyn Backend,
    ) -> Result<EvalMetrics> {
        let probabilities = self.probabilities;
        let (mut loss, mut correct) = (0.0f64, 0usize);
        self.for_each_row(state, data, backend, |_, row, label| {
            let (l, hit) = sample_loss(row, label as usize, probabilities);
            loss += l;
            correct += hit as usize;
        })?;
        let n = data.len().max(1) as f64;
        Ok(EvalMetrics {
            loss: loss / n,
            accuracy: correct as f64 / n,
            samples: data.len(),
        })
    }

    /// Runs the model over `data` in batches and hands each sample's output row, with its
    /// index and label, to `on_row`.
    fn for_each_row(
        &mut self,
        state: &ParamStore,
        data: &Dataset,
        backend: &dyn Backend,
        mut on_row: impl FnMut(usize, &[f32], i32),
    ) -> Result<()> {
        let mut params = ParamStore::new();
        for name in self.graph.params().keys() {
            params.insert(name.clone(), state.require(name)?.clone());
        }
        match &mut self.exec {
            Some(e) => e.set_params(&params)?,
            None => self.exec = Some(backend.executor(&self.graph, params)?),
        }
        let exec = self.exec.as_mut().expect("created above");
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(self.batch) {
            batches::gather(data, chunk, self.batch, &mut images, &mut labels);
            let outs = exec.run(&[(self.input.as_str(), Feed::F32(&images))])?;
            let y = &outs[self.output];
            let classes = y.data.len() / self.batch;
            for (r, &label) in labels.iter().enumerate().take(chunk.len()) {
                on_row(chunk[r], &y.data[r * classes..(r + 1) * classes], label);
            }
        }
        Ok(())
    }
}

/// The predicted class (first maximum of the output row) of every sample of `data`.
pub fn predict(
    model: &Graph,
    params: &ParamStore,
    data: &Dataset,
    batch_size: usize,
    logits: Option<&str>,
    backend: &dyn Backend,
) -> Result<Vec<usize>> {
    let mut ev = Evaluator::new(model, batch_size, logits)?;
    let mut out = vec![0; data.len()];
    ev.for_each_row(params, data, backend, |i, row, _| out[i] = argmax(row))?;
    Ok(out)
}

/// The index of the first maximum.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Cross-entropy of one row (logits, or probabilities clipped like Keras at 1e-7) and
/// whether its argmax (first maximum) is `label`.
fn sample_loss(row: &[f32], label: usize, probabilities: bool) -> (f64, bool) {
    let argmax = argmax(row);
    let loss = if probabilities {
        -(row[label] as f64).clamp(1e-7, 1.0 - 1e-7).ln()
    } else {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        lse - row[label] as f64
    };
    (loss, argmax == label)
}

fn nonfinite(t: &Tensor) -> usize {
    t.data.iter().filter(|v| !v.is_finite()).count()
}

/// The NaN/Inf diagnosis after step `step`: `None` if everything checked is finite.
/// `clean` is the number of steps after which the state was last seen finite: a bad
/// update lies in steps `clean..=step`.
fn diagnose(
    step: u64,
    clean: u64,
    outs: &[Tensor],
    state: Option<&ParamStore>,
    train: &TrainStep,
) -> Option<Error> {
    let mut bad: Vec<String> = Vec::new();
    let mut bad_state = false;
    for (t, name) in outs.iter().zip(["loss", "logits"]) {
        let k = nonfinite(t);
        if k > 0 {
            bad.push(format!("output `{name}` ({k} of {} values)", t.data.len()));
        }
    }
    if let Some(state) = state {
        // trained params first (the culprit users recognize), then optimizer slots,
        // observer ranges and statistics in update order
        let rest = train
            .graph
            .updates()
            .iter()
            .map(|u| &u.param)
            .filter(|p| !train.trained.contains(p));
        for name in train.trained.iter().chain(rest) {
            if let Some(t) = state.get(name) {
                let k = nonfinite(t);
                if k > 0 {
                    bad_state = true;
                    bad.push(format!(
                        "updated param `{name}` ({k} of {} values)",
                        t.data.len()
                    ));
                }
            }
        }
    }
    let first = bad.first()?;
    let rest = if bad.len() > 1 {
        format!("; also non-finite: {}", bad[1..].join(", "))
    } else {
        String::new()
    };
    let when = if bad_state && clean < step {
        format!(" (the state was last finite after {clean} steps: the first bad update is one of steps {clean}..={step}; check_state_every = 1 pins it down)")
    } else {
        String::new()
    };
    Some(Error::Training {
        step,
        msg: format!(
            "NaN or Inf in {first}{rest}{when}. Lower the learning rate, check the data, or \
             resume from the last good checkpoint"
        ),
    })
}

/// Trains `model` (a float or QAT graph) from `params` on `train`, evaluating on `test`
/// after every epoch.
pub fn fit(
    model: &Graph,
    params: &ParamStore,
    train: &Dataset,
    test: Option<&Dataset>,
    cfg: &FitConfig,
    backend: &dyn Backend,
) -> Result<FitResult> {
    let mut run = Run::start(model, params, train, test, cfg, backend)?;
    while run.pos.epoch < cfg.epochs {
        let order = batches::epoch_order(train.len(), cfg.seed, run.pos.epoch, cfg.shuffle);
        let bar = progress_bar(cfg, run.pos, run.per_epoch);
        // the next batches are gathered (and augmented) on another thread while the backend
        // runs the current step; the batches are the same as gathered in line
        let stopped = std::thread::scope(|s| -> Result<bool> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
            let (first, last, epoch, b) =
                (run.pos.batch, run.per_epoch, run.pos.epoch, cfg.batch_size);
            // this rank's shard of each global batch
            let (offset, local) = (run.shard_first, run.shard_len);
            let order = &order;
            s.spawn(move || {
                for bi in first..last {
                    let t = Instant::now();
                    let idx = &order[bi * b + offset..bi * b + offset + local];
                    let mut batch = Batch::default();
                    batches::gather(train, idx, local, &mut batch.images, &mut batch.labels);
                    if !cfg.augment.is_none() {
                        let n = train.sample_len();
                        for (r, &i) in idx.iter().enumerate() {
                            let img = &mut batch.images[r * n..(r + 1) * n];
                            cfg.augment
                                .apply(img, &train.sample_shape, cfg.seed, epoch, i);
                        }
                    }
                    batch.seconds = t.elapsed().as_secs_f64();
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            while run.pos.batch < run.per_epoch {
                if cfg.stop_after.is_some_and(|s| run.pos.step >= s) {
                    return Ok(true);
                }
                let wait = Instant::now();
                let batch = rx
                    .recv()
                    .map_err(|_| Error::Usage("internal: the batch loader stopped".into()))?;
                run.sums.data_wait += wait.elapsed().as_secs_f64();
                run.sums.data_build += batch.seconds;
                run.step(&batch, &bar)?;
            }
            Ok(false)
        });
        match stopped {
            Ok(true) => {
                bar.finish_and_clear();
                run.save()?;
                return Ok(run.finish(params, true));
            }
            Ok(false) => {}
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
        bar.finish_and_clear();
        run.end_epoch(test, backend)?;
    }
    Ok(run.finish(params, false))
}

/// A training run in progress.
struct Run<'a> {
    cfg: &'a FitConfig,
    step_graph: TrainStep,
    exec: Box<dyn Executor>,
    evaluator: Option<Evaluator>,
    key: RunKey,
    pos: Position,
    history: History,
    sums: EpochSums,
    per_epoch: usize,
    total_steps: u64,
    classes: usize,
    /// The learning rate of the last step.
    lr: f32,
    /// Steps after which the state was last verified finite.
    clean: u64,
    /// This rank's shard of every global batch: its first sample and length.
    shard_first: usize,
    shard_len: usize,
}

/// One training batch, assembled by the loader thread.
#[derive(Default)]
struct Batch {
    images: Vec<f32>,
    labels: Vec<i32>,
    /// Time spent gathering and augmenting it.
    seconds: f64,
}

impl<'a> Run<'a> {
    /// Builds the train step and its executor, from `params` or the checkpoint to resume.
    fn start(
        model: &Graph,
        params: &ParamStore,
        train: &Dataset,
        test: Option<&Dataset>,
        cfg: &'a FitConfig,
        backend: &dyn Backend,
    ) -> Result<Run<'a>> {
        cfg.lr.validate()?;
        let b = cfg.batch_size;
        let (shard_first, shard_len) = cfg.group.shard(b)?;
        let spec = TrainSpec {
            batch_size: shard_len,
            shard: Shard {
                rank: cfg.group.rank(),
                ranks: cfg.group.size(),
            },
            optimizer: cfg.optimizer,
            logits: cfg.logits.clone(),
            frozen: cfg.frozen.clone(),
            seed: cfg.seed,
        };
        let step_graph = autodiff::train_step(model, &spec)?;
        check_dataset(&step_graph, train, "training")?;
        if let Some(t) = test {
            check_dataset(&step_graph, t, "test")?;
        }
        let per_epoch = train.len() / b;
        if per_epoch == 0 {
            return Err(Error::Usage(format!(
                "the training set has {} samples, fewer than one batch of {b}",
                train.len()
            )));
        }
        let key = RunKey {
            model: model.name.clone(),
            batch_size: b,
            seed: cfg.seed,
            shuffle: cfg.shuffle,
            optimizer: cfg.optimizer,
            samples: train.len(),
        };
        let (state, pos, history, sums) = match &cfg.resume {
            Some(path) => {
                let c = Checkpoint::load(path)?;
                key.check_resumable(&c.run, path)?;
                let mut state = ParamStore::new();
                for name in step_graph.graph.params().keys() {
                    let t = c.state.get(name).ok_or_else(|| {
                        Error::file(
                            path,
                            format!(
                                "the checkpoint has no `{name}`: it was written for another model"
                            ),
                        )
                    })?;
                    state.insert(name.clone(), t.clone());
                }
                state.check_graph(&step_graph.graph)?;
                (state, c.position, c.history, c.sums)
            }
            None => (
                step_graph.initial_state(params)?,
                Position::default(),
                History::default(),
                EpochSums::default(),
            ),
        };
        let exec = backend.executor_in(&step_graph.graph, state, &cfg.group)?;
        let evaluator = match test {
            Some(_) => Some(Evaluator::new(
                model,
                cfg.eval_batch_size.unwrap_or(b),
                cfg.logits.as_deref(),
            )?),
            None => None,
        };
        let g = &step_graph.graph;
        let classes = g.node(g.outputs()[1].node).ty.shape[1];
        Ok(Run {
            cfg,
            exec,
            evaluator,
            key,
            pos,
            history,
            sums,
            per_epoch,
            total_steps: (per_epoch * cfg.epochs) as u64,
            classes,
            lr: cfg.lr.at(pos.step, (per_epoch * cfg.epochs) as u64),
            clean: pos.step,
            step_graph,
            shard_first,
            shard_len,
        })
    }

    /// One training step on the next batch of `order`.
    fn step(&mut self, batch: &Batch, bar: &ProgressBar) -> Result<()> {
        let (b, pos) = (self.cfg.batch_size, self.pos);
        let t0 = Instant::now();
        self.lr = self.cfg.lr.at(pos.step, self.total_steps);
        let lr_in = self.cfg.optimizer.lr_input(self.lr, pos.step);
        let outs = self.exec.run(&[
            ("input", Feed::F32(&batch.images)),
            ("labels", Feed::I32(&batch.labels)),
            ("step", Feed::F32(&[pos.step as f32])),
            ("lr", Feed::F32(&[lr_in])),
        ])?;
        let every = self.cfg.check_state_every;
        let check_state = every > 0 && (pos.step + 1) % every == 0;
        if check_state || outs.iter().any(|t| nonfinite(t) > 0) {
            let state = self.exec.params();
            let d = diagnose(pos.step, self.clean, &outs, Some(&state), &self.step_graph);
            if let Some(err) = d {
                return Err(err);
            }
            self.clean = pos.step + 1;
        }

        let loss = outs[0].data[0];
        let c = self.classes;
        let mut correct = [batch
            .labels
            .iter()
            .enumerate()
            .filter(|&(r, &l)| sample_loss(&outs[1].data[r * c..(r + 1) * c], l as usize, false).1)
            .count() as u64];
        // every rank saw its own shard's logits; the loss output is the ranks' mean already
        self.cfg.group.sum_counts(&mut correct)?;
        let correct = correct[0];
        let sums = &mut self.sums;
        sums.steps += 1;
        sums.samples += b as u64;
        sums.loss += loss as f64;
        sums.correct += correct;
        self.history.step_loss.push(loss);
        // wall time of the whole step: batch assembly, the run, the finiteness checks
        sums.seconds += t0.elapsed().as_secs_f64();
        self.pos.step += 1;
        self.pos.batch += 1;
        bar.inc(b as u64);
        bar.set_message(format!(
            "loss {:.4} accuracy {:.4}",
            sums.loss / sums.steps as f64,
            sums.correct as f64 / sums.samples as f64
        ));
        let due = self
            .cfg
            .checkpoint_every
            .is_some_and(|k| k > 0 && self.pos.step.is_multiple_of(k));
        // (the end of the epoch writes its own checkpoint)
        if due && self.pos.batch < self.per_epoch {
            self.save()?;
        }
        Ok(())
    }

    /// The state after the last step is finite (else the error names that step).
    fn check_state(&mut self, state: &ParamStore) -> Result<()> {
        let last = self.pos.step.saturating_sub(1);
        match diagnose(last, self.clean, &[], Some(state), &self.step_graph) {
            Some(err) => Err(err),
            None => {
                self.clean = self.pos.step;
                Ok(())
            }
        }
    }

    /// Checks the state, evaluates, records the epoch's metrics and checkpoints.
    fn end_epoch(&mut self, test: Option<&Dataset>, backend: &dyn Backend) -> Result<()> {
        let state = self.exec.params();
        self.check_state(&state)?;
        let mut metrics = self.sums.finish(self.pos.epoch + 1, self.lr);
        if let (Some(ev), Some(test)) = (&mut self.evaluator, test) {
            let m = ev.run(&state, test, backend)?;
            metrics.test_loss = Some(m.loss);
            metrics.test_accuracy = Some(m.accuracy);
        }
        if self.cfg.progress && self.cfg.group.is_root() {
            eprintln!("{}", epoch_line(&metrics, self.cfg.epochs));
        }
        self.history.epochs.push(metrics);
        self.sums = EpochSums::default();
        self.pos.epoch += 1;
        self.pos.batch = 0;
        self.save()
    }

    /// Writes the checkpoint, if the run has one, after checking the state is finite.
    fn save(&mut self) -> Result<()> {
        let Some(path) = &self.cfg.checkpoint else {
            return Ok(());
        };
        let state = self.exec.params();
        self.check_state(&state)?;
        // the ranks hold the same state: rank 0 writes it
        if !self.cfg.group.is_root() {
            return Ok(());
        }
        Checkpoint {
            state,
            position: self.pos,
            run: self.key.clone(),
            history: self.history.clone(),
            sums: self.sums.clone(),
        }
        .save(path)
    }

    fn finish(self, params: &ParamStore, stopped_early: bool) -> FitResult {
        // the given params (tensors the step does not read stay), overlaid with the new
        // state minus the optimizer slots
        let state = self.exec.params();
        let mut trained = params.clone();
        for (name, t) in state.iter() {
            if !self.step_graph.optimizer_state.contains(name) {
                trained.insert(name.clone(), t.clone());
            }
        }
        FitResult {
            params: trained,
            state,
            history: self.history,
            steps: self.pos.step,
            stopped_early,
        }
    }
}

/// The dataset fits the train step's input and logits.
fn check_dataset(step: &TrainStep, data: &Dataset, what: &str) -> Result<()> {
    let g = &step.graph;
    let input = &g.node(g.inputs()[0]).ty.shape;
    if data.sample_shape[..] != input[1..] {
        return Err(Error::Usage(format!(
            "the {what} samples have shape {:?} but the model input takes {:?}",
            data.sample_shape,
            &input[1..]
        )));
    }
    let classes = g.node(g.outputs()[1].node).ty.shape[1];
    if let Some(&bad) = data
        .labels
        .iter()
        .find(|&&l| l < 0 || l as usize >= classes)
    {
        return Err(Error::Usage(format!(
            "the {what} set has label {bad} but the model has {classes} classes"
        )));
    }
    Ok(())
}

fn progress_bar(cfg: &FitConfig, pos: Position, per_epoch: usize) -> ProgressBar {
    if !cfg.progress || !cfg.group.is_root() {
        return ProgressBar::hidden();
    }
    let total = (per_epoch * cfg.batch_size) as u64;
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} samples, {per_sec}, eta {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {}/{}", pos.epoch + 1, cfg.epochs));
    bar.set_position((pos.batch * cfg.batch_size) as u64);
    bar.reset_eta();
    bar
}

fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    let test = match (m.test_loss, m.test_accuracy) {
        (Some(l), Some(a)) => format!(", test loss {l:.4} accuracy {a:.4}"),
        _ => String::new(),
    };
    format!(
        "epoch {}/{epochs}: loss {:.4} accuracy {:.4}{test} ({:.0} samples/s)",
        m.epoch, m.loss, m.accuracy, m.samples_per_s
    )
}
