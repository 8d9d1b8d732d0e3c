//! Reverse-mode autodiff as an IR -> IR pass: builds the train-step graph (forward, loss,
//! backward, optimizer, observers) and the inference graph the training loop evaluates.
//!
//! [`train_step`] turns a model or QAT graph (graph forms 1 and 2) into one graph that
//! performs a whole training step (form 4):
//!
//! 1. **forward in training mode** (`lower.rs`): batch statistics for BatchNorm, dropout
//!    masks, quantizer ranges observed on the batch, every `fake_quant` explicit
//!    (`range=operands`);
//! 2. **loss**: mean softmax cross-entropy of the logits output against `labels`;
//! 3. **backward** ([`backward()`], rules in [`rules`]): gradients of every trained param,
//!    summed over a value's users, straight-through across `fake_quant`;
//! 4. **optimizer** ([`Optimizer`]): Keras SGD with momentum or Adam;
//! 5. **state updates**: params, optimizer slots, observer ranges, BatchNorm moving
//!    statistics, each an `update` of the graph.
//!
//! Inputs are `input` (the model input), `labels` (`i32[batch]`), `step` (f32[], 0-based) and
//! `lr` (f32[], from [`Optimizer::lr_input`]); outputs `loss` (f32[]) and `logits`.
//! [`eval_graph`] gives the inference form (form 5).
//!
//! ```
//! use qatc::autodiff::{train_step, TrainSpec};
//! use qatc::ir::builder::{Layer, Sequential};
//! let model = Sequential::new("tiny", &[4, 4, 1], 0)
//!     .add(Layer::flatten())
//!     .add(Layer::dense(3))
//!     .build()
//!     .unwrap();
//! let step = train_step(&model.graph, &TrainSpec::new(8)).unwrap();
//! assert_eq!(step.trained, vec!["dense.bias", "dense.kernel"]);
//! let names: Vec<&str> = step.graph.outputs().iter().map(|o| o.name.as_str()).collect();
//! assert_eq!(names, ["loss", "logits"]);
//! ```

pub mod backward;
mod emit;
mod lower;
mod optim;
pub mod rules;

pub use backward::backward;
pub use optim::Optimizer;

use crate::error::{Error, Result};
use crate::ir::op::{GradOp, ModelOp, Reduce, TrainOp};
use crate::ir::types::DType;
use crate::ir::verify::verify;
use crate::ir::{Graph, NodeId, Op, ParamStore, TensorType};
use emit::Emit;
use lower::{Lowering, Mode};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What [`train_step`] builds.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSpec {
    /// The static batch size of the step (the model graph is rebatched to it).
    pub batch_size: usize,
    /// The update rule; its slots become state params of the step.
    pub optimizer: Optimizer,
    /// The model output holding the logits; `None`: the model's only output. An output
    /// computed by `softmax` is differentiated from the softmax's input (as Keras does for
    /// `from_logits=False` on a softmax layer), and `logits` is that input.
    pub logits: Option<String>,
    /// Params that stay fixed (no gradient, no optimizer state).
    pub frozen: Vec<String>,
    /// Salts the dropout masks (each mask is a hash of seed, node name, step and index).
    pub seed: u64,
    /// The step's place in a data-parallel run ([`crate::dist`]); one process by default.
    pub shard: Shard,
}

/// Where a train step sits in a data-parallel run: rank `rank` of `ranks`, each running the
/// step on its own `batch_size` samples of a global batch `ranks` times larger (rank `r`
/// holds global samples `r * batch_size ..`).
///
/// With more than one rank the step averages every gradient over the ranks before the
/// optimizer update, combines observed ranges (min and max over ranks) before their moving
/// averages, and reports the ranks' mean loss (`all_reduce` nodes); BatchNorm statistics
/// are combined by the executor's group ([`crate::jit::JitOptions::group`]). Dropout masks
/// are those of the global sample indices, so they do not depend on `ranks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This rank, `0..ranks`.
    pub rank: usize,
    /// The number of ranks.
    pub ranks: usize,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard { rank: 0, ranks: 1 }
    }
}

impl TrainSpec {
    /// Keras defaults: Adam, all params trained, the only output as logits.
    pub fn new(batch_size: usize) -> TrainSpec {
        TrainSpec {
            batch_size,
            optimizer: Optimizer::default(),
            logits: None,
            frozen: Vec::new(),
            seed: 0,
            shard: Shard::default(),
        }
    }

    /// The same spec with optimizer `o`.
    pub fn optimizer(mut self, o: Optimizer) -> TrainSpec {
        self.optimizer = o;
        self
    }
}

/// A train-step graph and the state it adds to the model's params. Its batch size is
/// static (gradient ops carry shapes): build another step for another batch size.
#[derive(Clone, Debug)]
pub struct TrainStep {
    /// The step: inputs `input`, `labels` (i32 `[batch]`), `step` and `lr` (f32 scalars);
    /// outputs `loss` and `logits`; one update per trained param and state tensor.
    pub graph: Graph,
    /// Initial values of the state the model's ParamStore lacks: optimizer slots (zeros),
    /// observer ranges (zeros; the first step overwrites them with the batch's range) and
    /// fixed-range constants.
    pub init: ParamStore,
    /// Params the optimizer updates, sorted.
    pub trained: Vec<String>,
    /// Optimizer slot params (`<param>.adam_m`, …).
    pub optimizer_state: Vec<String>,
    /// Quantizer range params (`S.min`, `S.max`).
    pub observer_state: Vec<String>,
    /// BatchNorm moving statistics the step updates.
    pub statistics: Vec<String>,
}

impl TrainStep {
    /// The complete state the step reads: every param of the graph from `params`, or from
    /// [`TrainStep::init`] when `params` lacks it.
    pub fn initial_state(&self, params: &ParamStore) -> Result<ParamStore> {
        let mut out = ParamStore::new();
        for name in self.graph.params().keys() {
            let t = match params.get(name) {
                Some(t) => t.clone(),
                None => self.init.get(name).cloned().ok_or_else(|| {
                    Error::param(
                        name,
                        "missing from the parameter store (load the model's .safetensors \
                         file, or initialize the model with a builder)",
                    )
                })?,
            };
            out.insert(name.clone(), t);
        }
        out.check_graph(&self.graph)?;
        Ok(out)
    }
}

/// The model output `spec` names (or the only one).
fn logits_output(model: &Graph, wanted: Option<&str>) -> Result<NodeId> {
    let outs = model.outputs();
    let found = match wanted {
        Some(w) => outs.iter().find(|o| o.name == w),
        None if outs.len() == 1 => outs.first(),
        None => {
            let names: Vec<&str> = outs.iter().map(|o| o.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "model `{}` has outputs {names:?}: say which one holds the logits",
                model.name
            )));
        }
    };
    found.map(|o| o.node).ok_or_else(|| {
        Error::Usage(format!(
            "model `{}` has no output named `{}`",
            model.name,
            wanted.unwrap_or("")
        ))
    })
}

/// Whether param operand `i` of `op` is something gradients flow into (not BatchNorm
/// moving statistics or quantizer ranges).
fn trainable_operand(op: &Op, i: usize) -> bool {
    !matches!(
        (op, i),
        (Op::Model(ModelOp::BatchNorm { .. }), 3 | 4) | (Op::Model(ModelOp::FakeQuant(_)), 1 | 2)
    )
}

/// Builds the train-step graph (graph form 4) of a model or QAT graph.
pub fn train_step(model: &Graph, spec: &TrainSpec) -> Result<TrainStep> {
    spec.optimizer.validate()?;
    if spec.batch_size == 0 {
        return Err(Error::Usage("the batch size must be at least 1".into()));
    }
    verify(model)?;
    let mut m = model.clone();
    m.rebatch(spec.batch_size)?;
    let [model_input] = m.inputs() else {
        return Err(Error::Graph {
            graph: m.name.clone(),
            msg: format!(
                "a train step takes one model input, this model has {}",
                m.inputs().len()
            ),
        });
    };
    let model_input = *model_input;
    let out = logits_output(&m, spec.logits.as_deref())?;
    let params = m.params();
    for f in &spec.frozen {
        if !params.contains_key(f) {
            return Err(Error::param(
                f,
                "is to be frozen but the model has no such param",
            ));
        }
    }

    let mut g = Graph::new(format!("{}.train_step", m.name));
    let input = g.add_input("input", m.node(model_input).ty.clone())?;
    let labels = g.add_input("labels", TensorType::new(DType::I32, vec![spec.batch_size]))?;
    let step = g.add_input("step", TensorType::scalar(DType::F32))?;
    let lr = g.add_input("lr", TensorType::scalar(DType::F32))?;
    let Shard { rank, ranks } = spec.shard;
    if ranks == 0 || rank >= ranks {
        return Err(Error::Usage(format!(
            "rank {rank} of {ranks}: a data-parallel step needs 0 <= rank < ranks"
        )));
    }
    let mode = Mode::Train {
        step,
        seed: spec.seed,
        first_sample: rank * spec.batch_size,
    };
    let mut low = Lowering::new(&m, g, mode, HashMap::from([(model_input, input)]))?;
    low.ranks = ranks;
    low.frozen.extend(spec.frozen.iter().cloned());
    for n in m.canonical_order() {
        low.ensure(n)?;
    }
    let logits_model = match m.node(out).op {
        Op::Model(ModelOp::Softmax) => m.operand(out, 0).expect("softmax has an operand"),
        _ => out,
    };
    let logits = low.map[&logits_model];
    let logits_ty = low.g.node(logits).ty.clone();
    if logits_ty.rank() != 2 {
        return Err(Error::node(
            &m.node(logits_model).name,
            m.node(logits_model).op.name(),
            format!("the logits must be [batch, classes], found {logits_ty}"),
        ));
    }

    // trained params: used as a differentiable operand somewhere, not frozen
    let frozen: HashSet<&str> = spec
        .frozen
        .iter()
        .map(|s| s.as_str())
        .chain(m.frozen())
        .collect();
    let mut candidates: BTreeMap<String, NodeId> = params
        .iter()
        .filter(|(name, &id)| {
            !frozen.contains(name.as_str())
                && m.users(id)
                    .iter()
                    .any(|&(u, i)| trainable_operand(&m.node(u).op, i))
        })
        .filter_map(|(name, &id)| low.map.get(&id).map(|&nid| (name.clone(), nid)))
        .collect();
    // and the ranges of learned quantizers
    let lowered = low.g.params();
    for name in &low.learned {
        if !frozen.contains(name.as_str()) {
            candidates.insert(name.clone(), lowered[name]);
        }
    }

    let Lowering {
        g: mut graph,
        updates: fwd_updates,
        init: mut state_init,
        observer_state,
        statistics,
        ..
    } = low;
    let mut e = Emit { g: &mut graph };
    let loss = e.op(
        Op::Train(TrainOp::SoftmaxCrossEntropy),
        "loss",
        &[logits, labels],
    )?;
    let dlogits = e.op(
        Op::Grad(GradOp::SoftmaxCrossEntropyGrad),
        "loss.grad",
        &[logits, labels],
    )?;
    let wrt: Vec<NodeId> = candidates.values().copied().collect();
    let grads = backward(e.g, &[(logits, dlogits)], &wrt)?;
    // a param that does not reach the loss gets no update (Keras warns and skips too)
    let grads: Vec<(&String, NodeId, NodeId)> = candidates
        .iter()
        .zip(grads)
        .filter_map(|((name, &p), g)| g.map(|g| (name, p, g)))
        .collect();
    let grads = if ranks > 1 {
        average_over_ranks(e.g, grads)?
    } else {
        grads
    };

    let mut updates = fwd_updates;
    let mut trained = Vec::new();
    let mut optimizer_state = Vec::new();
    let mut e = Emit { g: &mut graph };
    for (name, p, grad) in grads {
        let (p_next, slots) = spec.optimizer.emit(&mut e, name, p, grad, lr)?;
        for (slot, next) in slots {
            let shape = e.g.node(next).ty.shape.clone();
            state_init.insert(slot.clone(), crate::ir::Tensor::zeros(shape));
            updates.push((slot.clone(), next));
            optimizer_state.push(slot);
        }
        updates.push((name.clone(), p_next));
        trained.push(name.clone());
    }

    let mut seen = HashSet::new();
    for (param, _) in &updates {
        if !seen.insert(param.clone()) {
            return Err(Error::param(
                param,
                "is updated twice by the train step (two BatchNorm layers sharing moving \
                 statistics?)",
            ));
        }
    }
    let loss = if ranks > 1 {
        let op = Op::Train(TrainOp::AllReduce {
            reduce: Reduce::Mean,
        });
        Emit { g: &mut graph }.op(op, "loss.all_ranks", &[loss])?
    } else {
        loss
    };
    graph.add_output("loss", loss);
    graph.add_output("logits", logits);
    for (param, node) in updates {
        graph.add_update(param, node);
    }
    graph.dce();
    verify(&graph)?;
    Ok(TrainStep {
        graph,
        init: state_init,
        trained,
        optimizer_state,
        observer_state,
        statistics,
    })
}

/// The gradients averaged over the ranks of a data-parallel step, in one bucket: packed into
/// one vector, combined by one `all_reduce` (one exchange latency per step instead of one per
/// param), unpacked.
fn average_over_ranks<'a>(
    g: &mut Graph,
    grads: Vec<(&'a String, NodeId, NodeId)>,
) -> Result<Vec<(&'a String, NodeId, NodeId)>> {
    if grads.is_empty() {
        return Ok(grads);
    }
    let mut e = Emit { g };
    let all: Vec<NodeId> = grads.iter().map(|&(_, _, grad)| grad).collect();
    let packed = e.op(Op::Train(TrainOp::Pack), "gradients", &all)?;
    let mean = Op::Train(TrainOp::AllReduce {
        reduce: Reduce::Mean,
    });
    let packed = e.op(mean, "gradients.all_ranks", &[packed])?;
    let mut offset = 0;
    let mut out = Vec::with_capacity(grads.len());
    for (name, p, grad) in grads {
        let shape = e.shape(grad);
        let n: usize = shape.iter().product();
        let unpack = Op::Train(TrainOp::Unpack { offset, shape });
        let grad = e.op(unpack, &format!("{name}.grad.all_ranks"), &[packed])?;
        out.push((name, p, grad));
        offset += n;
    }
    Ok(out)
}

/// The inference graph (graph form 5) of a model or QAT graph: quantizers with state
/// read their params (`S.min`, `S.max`) through `range=operands`, weights keep
/// `last_value`, BatchNorm uses its moving statistics, dropout is gone. Inputs and
/// outputs keep their names; the batch is the model's (see [`Graph::rebatch`]).
pub fn eval_graph(model: &Graph) -> Result<Graph> {
    verify(model)?;
    let mut g = Graph::new(model.name.clone());
    let mut map = HashMap::new();
    for &i in model.inputs() {
        let node = model.node(i);
        map.insert(i, g.add_input(node.name.clone(), node.ty.clone())?);
    }
    let low = lower_with_outputs(model, Lowering::new(model, g, Mode::Eval, map)?)?;
    let mut g = low.g;
    g.dce();
    verify(&g)?;
    Ok(g)
}

/// Lowers every node of `model` and gives the lowered graph the model's outputs, by name.
fn lower_with_outputs<'m>(model: &'m Graph, mut low: Lowering<'m>) -> Result<Lowering<'m>> {
    for n in model.canonical_order() {
        low.ensure(n)?;
    }
    for o in model.outputs() {
        let node = low.map[&o.node];
        low.g.add_output(o.name.clone(), node);
    }
    Ok(low)
}

/// What [`calibration_step`] builds.
#[derive(Clone, Debug)]
pub struct CalibrationStep {
    /// Inputs: the model input (its name kept) and `step` (f32[], 0-based); outputs: the
    /// model's; one update per observed quantizer range.
    pub graph: Graph,
    /// Initial observer ranges (zeros; the first step overwrites them with the batch's).
    pub init: ParamStore,
    /// The quantizer range params (`S.min`, `S.max`) the step updates.
    pub observer_state: Vec<String>,
}

/// Post-training calibration of a QAT graph (form 2): the inference form (BatchNorm with its
/// moving statistics, no dropout, weights as they are) in which every stateful quantizer
/// observes the batch as in training (`ema` averages, `all_values` keeps the running
/// min/max). Run over a few batches, it gives the activation ranges of post-training
/// quantization without changing a weight.
pub fn calibration_step(model: &Graph) -> Result<CalibrationStep> {
    let low = lower_forward(model, "calibration", |g| {
        let step = g.add_input("step", TensorType::scalar(DType::F32))?;
        Ok(Mode::Calibrate { step })
    })?;
    Ok(CalibrationStep {
        graph: low.g,
        init: low.init,
        observer_state: low.observer_state,
    })
}

/// The forward-only forms ([`calibration_step`], [`statistics_step`]): the model's one input
/// (its name kept) and any inputs `mode` adds, lowered in that mode, with the lowering's
/// updates attached to the graph (`{model}.{what}`), dead nodes removed, verified.
fn lower_forward<'m>(
    model: &'m Graph,
    what: &str,
    mode: impl FnOnce(&mut Graph) -> Result<Mode>,
) -> Result<Lowering<'m>> {
    verify(model)?;
    let [model_input] = model.inputs() else {
        return Err(Error::Graph {
            graph: model.name.clone(),
            msg: format!(
                "{what} takes one model input, this model has {}",
                model.inputs().len()
            ),
        });
    };
    let mut g = Graph::new(format!("{}.{what}", model.name));
    let node = model.node(*model_input);
    let input = g.add_input(node.name.clone(), node.ty.clone())?;
    let mode = mode(&mut g)?;
    let low = Lowering::new(model, g, mode, HashMap::from([(*model_input, input)]))?;
    let mut low = lower_with_outputs(model, low)?;
    for (param, node) in std::mem::take(&mut low.updates) {
        low.g.add_update(param, node);
    }
    low.g.dce();
    verify(&low.g)?;
    Ok(low)
}

/// What [`statistics_step`] builds.
#[derive(Clone, Debug)]
pub struct StatisticsStep {
    /// Inputs: the model input (its name kept); outputs: the model's; one update per
    /// BatchNorm moving statistic, to the batch's own statistic.
    pub graph: Graph,
    /// The moving-statistic params (`….moving_mean`, `….moving_variance`) it updates.
    pub statistics: Vec<String>,
}

/// BatchNorm statistics re-estimation: the inference form, except that every BatchNorm
/// whose statistics are not frozen normalizes with the batch's mean and variance (as in
/// training) and sets its moving statistics to them. Averaged over a few hundred batches
/// with the weights fixed, they are the population statistics of the current weights, which
/// a moving average with momentum 0.999 (Keras' MobileNetV2) is still far from after a few
/// epochs of fast-moving weights.
pub fn statistics_step(model: &Graph) -> Result<StatisticsStep> {
    let low = lower_forward(model, "statistics", |_| Ok(Mode::Statistics))?;
    Ok(StatisticsStep {
        graph: low.g,
        statistics: low.statistics,
    })
}

#[cfg(test)]
mod tests;
