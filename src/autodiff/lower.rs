//! Lowering a model or QAT graph to explicit forms: the training forward pass (batch
//! statistics, observers, dropout masks) and the inference form.
//!
//! | model op | training forward | inference |
//! |---|---|---|
//! | `batch_norm` | `batch_norm_train`; `batch_mean`/`batch_var` into `moving_average` updates | kept |
//! | `dropout` | `mul` by `dropout_mask(step)` | removed |
//! | `fake_quant{last_value}` | `observe_min/max` of the value (per axis) | kept |
//! | `fake_quant{ema}` | batch `observe_min/max` into `ema_update` (state `S`) | `S.min`/`S.max` |
//! | `fake_quant{all_values}` | batch `observe_min/max` into `running_min/max` | `S.min`/`S.max` |
//! | `fake_quant{tied}` | the observing quantizer's new range | `S.min`/`S.max` |
//! | `fake_quant{fixed}` | constant params `<node>.min`/`.max` | kept |
//! | `fake_quant{learned}` | `range=trained` of params `S.min`/`S.max` (trained) | `S.min`/`S.max` |
//!
//! Every quantizer ends as `fake_quant{range=operands}(x, min, max)` in training, a learned
//! one as `fake_quant{range=trained}(x, min, max)`, whose backward also gives the range
//! params their gradient. Calibration observes a learned quantizer's input as `all_values`
//! would (the start of its training). The range a
//! quantizer uses on a batch is the one observed *including* that batch (TFMOT assigns the
//! moving average, then quantizes with it); `ema_update` returns the batch's own range at
//! step 0, so no ±6 initialization has to be forgotten.
//!
//! Concat inputs are quantized with the concat output's range (`tied`), but that output is
//! computed from them: the observer then watches a *shadow* of its input, recomputed with
//! the tied quantizers bypassed (TFMOT observes the unquantized concat too). Only stateless
//! ops may sit between the tied quantizers and their observer.

use super::emit::Emit;
use crate::error::{Error, Result};
use crate::ir::infer::range_shape;
use crate::ir::op::*;
use crate::ir::{Graph, NodeId, Op, ParamStore, Tensor, TensorType};
use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// The training forward pass; `step` is the step input, `seed` salts dropout masks,
    /// `first_sample` is the global index of the batch's first sample (a data-parallel
    /// rank's shard starts past the earlier ranks' samples).
    Train {
        step: NodeId,
        seed: u64,
        first_sample: usize,
    },
    /// Post-training calibration: the inference form, with the quantizers' observers
    /// updating their ranges (`step` is the step input).
    Calibrate {
        step: NodeId,
    },
    /// BatchNorm statistics re-estimation: the inference form, except that every BatchNorm
    /// normalizes with its batch's statistics and sets its moving statistics to them (the
    /// caller averages them over batches).
    Statistics,
    Eval,
}

pub(crate) struct Lowering<'m> {
    m: &'m Graph,
    pub g: Graph,
    mode: Mode,
    /// model node -> lowered value
    pub map: HashMap<NodeId, NodeId>,
    /// quantizer state -> the model `fake_quant` observing it, and its spec
    observers: HashMap<String, (NodeId, FakeQuantAttrs)>,
    /// quantizer state -> model nodes at or downstream of a quantizer tied to it
    tied_downstream: HashMap<String, HashSet<NodeId>>,
    ranges: HashMap<String, (NodeId, NodeId)>,
    shadows: HashMap<(String, NodeId), NodeId>,
    /// State write-backs of the forward pass (`param name`, new value).
    pub updates: Vec<(String, NodeId)>,
    /// Initial values of the state this lowering introduced.
    pub init: ParamStore,
    pub observer_state: Vec<String>,
    pub statistics: Vec<String>,
    /// Params training leaves as they are (the model's frozen ones and the spec's). A
    /// `batch_norm` whose moving statistics are frozen normalizes with them in training too,
    /// as Keras runs a BatchNormalization layer with `trainable = False` in inference mode.
    pub frozen: HashSet<String>,
    /// The range params of learned quantizers (`S.min`, `S.max`), which training updates
    /// with the optimizer.
    pub learned: Vec<String>,
    /// Ranks of a data-parallel step: with more than one, observed ranges are combined over
    /// them (`all_reduce` min and max) before they update any state.
    pub ranks: usize,
}

impl<'m> Lowering<'m> {
    /// `g` holds the new graph's inputs already; `map` maps the model's inputs to them.
    pub fn new(
        m: &'m Graph,
        g: Graph,
        mode: Mode,
        map: HashMap<NodeId, NodeId>,
    ) -> Result<Lowering<'m>> {
        let mut observers = HashMap::new();
        let mut tied_roots: HashMap<String, Vec<NodeId>> = HashMap::new();
        for id in m.node_ids() {
            let node = m.node(id);
            match &node.op {
                Op::Model(ModelOp::FakeQuant(q)) => match &q.range {
                    RangeSource::Ema { state, .. }
                    | RangeSource::AllValues { state }
                    | RangeSource::Learned { state, .. } => {
                        if let Some((other, _)) = observers.insert(state.clone(), (id, q.clone())) {
                            return Err(Error::node(
                                &node.name,
                                "fake_quant",
                                format!(
                                    "quantizer state `{state}` is also observed by `{}`",
                                    m.node(other).name
                                ),
                            ));
                        }
                    }
                    RangeSource::Tied { state } => {
                        tied_roots.entry(state.clone()).or_default().push(id)
                    }
                    _ => {}
                },
                Op::Pass(PassOp::Quant(_)) => {
                    return Err(Error::Unsupported {
                        node: node.name.clone(),
                        op: "quant".into(),
                        what: "autodiff".into(),
                        hint: "a `quant` marker is left: run the `quantize` pass first".into(),
                    })
                }
                _ => {}
            }
        }
        let mut tied_downstream = HashMap::new();
        for (state, roots) in tied_roots {
            let mut seen: HashSet<NodeId> = HashSet::new();
            let mut stack = roots;
            while let Some(n) = stack.pop() {
                if seen.insert(n) {
                    stack.extend(m.users(n).into_iter().map(|(u, _)| u));
                }
            }
            tied_downstream.insert(state, seen);
        }
        Ok(Lowering {
            m,
            g,
            mode,
            map,
            observers,
            tied_downstream,
            ranges: HashMap::new(),
            shadows: HashMap::new(),
            updates: Vec::new(),
            init: ParamStore::new(),
            observer_state: Vec::new(),
            statistics: Vec::new(),
            frozen: m.frozen().map(str::to_string).collect(),
            learned: Vec::new(),
            ranks: 1,
        })
    }

    fn emit(&mut self, op: Op, name: &str, operands: &[NodeId]) -> Result<NodeId> {
        Emit { g: &mut self.g }.op(op, name, operands)
    }

    /// The lowered value of model node `root`, lowering what it needs first (post-order,
    /// without recursion: model graphs can be deep).
    pub fn ensure(&mut self, root: NodeId) -> Result<NodeId> {
        let mut stack = vec![(root, false)];
        while let Some((n, expanded)) = stack.pop() {
            if self.map.contains_key(&n) {
                continue;
            }
            if expanded {
                let id = self.lower_one(n)?;
                self.map.insert(n, id);
                continue;
            }
            stack.push((n, true));
            for o in self.m.operands(n).into_iter().rev() {
                if !self.map.contains_key(&o) {
                    stack.push((o, false));
                }
            }
        }
        Ok(self.map[&root])
    }

    fn lower_one(&mut self, n: NodeId) -> Result<NodeId> {
        let node = self.m.node(n);
        let name = node.name.clone();
        let xs: Vec<NodeId> = self.m.operands(n).iter().map(|o| self.map[o]).collect();
        match (&node.op, self.mode) {
            (Op::Model(ModelOp::Input), _) => Err(Error::Unsupported {
                node: name,
                op: "input".into(),
                what: "autodiff".into(),
                hint: "the training step takes exactly one model input".into(),
            }),
            (Op::Model(ModelOp::Param), _) => self.g.param(name, node.ty.clone()),
            (Op::Model(ModelOp::BatchNorm { epsilon, momentum }), Mode::Train { .. })
                if !self.statistics_frozen(n) =>
            {
                self.batch_norm(n, *epsilon, *momentum, &xs)
            }
            (Op::Model(ModelOp::BatchNorm { epsilon, .. }), Mode::Statistics)
                if !self.statistics_frozen(n) =>
            {
                // momentum 0: the update is the batch's statistic itself
                self.batch_norm(n, *epsilon, F32(0.0), &xs)
            }
            (
                Op::Model(ModelOp::Dropout { rate }),
                Mode::Train {
                    step,
                    seed,
                    first_sample,
                },
            ) => {
                if rate.0 == 0.0 {
                    return Ok(xs[0]);
                }
                let shape = &node.ty.shape;
                let per_sample = shape.iter().skip(1).product::<usize>();
                let first_index = (first_sample * per_sample) as u64;
                let op = Op::Train(TrainOp::DropoutMask {
                    rate: *rate,
                    seed: shard_seed(mix_seed(seed, &name), first_index),
                    shape: node.ty.shape.clone(),
                });
                let mask = self.emit(op, &format!("{name}.mask"), &[step])?;
                let mul = Op::Model(ModelOp::Mul {
                    activation: Activation::None,
                });
                self.emit(mul, &name, &[xs[0], mask])
            }
            (
                Op::Model(ModelOp::Dropout { .. }),
                Mode::Eval | Mode::Calibrate { .. } | Mode::Statistics,
            ) => Ok(xs[0]),
            (Op::Model(ModelOp::FakeQuant(q)), _) => self.fake_quant(&name, q, &xs),
            (op, _) => self.emit(op.clone(), &name, &xs),
        }
    }

    /// Whether all four params of `batch_norm` node `n` are frozen (it then normalizes with
    /// its moving statistics, as in inference, and updates nothing).
    fn statistics_frozen(&self, n: NodeId) -> bool {
        let operands = self.m.operands(n);
        (1..=4).all(|i| {
            operands
                .get(i)
                .is_some_and(|&o| self.frozen.contains(&self.m.node(o).name))
        })
    }

    /// `batch_norm` in training: normalize with the batch's statistics and move the moving
    /// ones towards them (Keras: `moving = momentum * moving + (1 - momentum) * batch`).
    ///
    /// The moving variance follows tf_keras (the Keras 2 TFMOT runs on): for rank-4 inputs
    /// its fused kernel hands the *unbiased* batch variance (`n / (n - 1)`) to the moving
    /// average; other ranks go through `tf.nn.moments`, biased. Normalization itself always
    /// uses the biased variance.
    fn batch_norm(
        &mut self,
        n: NodeId,
        epsilon: F32,
        momentum: F32,
        xs: &[NodeId],
    ) -> Result<NodeId> {
        let name = self.m.node(n).name.clone();
        for (i, what) in [(3, "moving_mean"), (4, "moving_var")] {
            if self.g.node(xs[i]).op != Op::Model(ModelOp::Param) {
                return Err(Error::node(
                    &name,
                    "batch_norm",
                    format!("operand {i} ({what}) must be a param to be updated in training"),
                ));
            }
        }
        let x = xs[0];
        let y = self.emit(
            Op::Train(TrainOp::BatchNormTrain { epsilon }),
            &name,
            &[x, xs[1], xs[2]],
        )?;
        let unbiased = self.g.node(x).ty.rank() == 4;
        let mean = self.emit(
            Op::Train(TrainOp::BatchMean),
            &format!("{name}.batch_mean"),
            &[x],
        )?;
        let var = self.emit(
            Op::Train(TrainOp::BatchVar { unbiased }),
            &format!("{name}.batch_var"),
            &[x],
        )?;
        for (stat, batch) in [(xs[3], mean), (xs[4], var)] {
            let pname = self.g.node(stat).name.clone();
            let next = self.emit(
                Op::Update(UpdateOp::MovingAverage { momentum }),
                &format!("{pname}.next"),
                &[stat, batch],
            )?;
            self.updates.push((pname.clone(), next));
            self.statistics.push(pname);
        }
        Ok(y)
    }

    fn fake_quant(&mut self, name: &str, q: &FakeQuantAttrs, xs: &[NodeId]) -> Result<NodeId> {
        let train = matches!(self.mode, Mode::Train { .. });
        let (lo, hi) = match &q.range {
            RangeSource::Operands => {
                return self.emit(Op::Model(ModelOp::FakeQuant(q.clone())), name, xs)
            }
            RangeSource::LastValue | RangeSource::Fixed { .. } if !train => {
                return self.emit(Op::Model(ModelOp::FakeQuant(q.clone())), name, xs)
            }
            RangeSource::LastValue => {
                let x = xs[0];
                self.observe(x, q.axis, &format!("{name}.min"), &format!("{name}.max"))?
            }
            RangeSource::Fixed { min, max } => {
                let shape = range_shape(q, &self.g.node(xs[0]).ty.shape);
                let mut ends = Vec::new();
                for (end, v) in [("min", min.0), ("max", max.0)] {
                    let pname = format!("{name}.{end}");
                    let id = self.g.param(&pname, TensorType::f32(shape.clone()))?;
                    self.init.insert(pname, Tensor::full(shape.clone(), v));
                    ends.push(id);
                }
                (ends[0], ends[1])
            }
            RangeSource::Ema { state, .. }
            | RangeSource::AllValues { state }
            | RangeSource::Tied { state }
            | RangeSource::Learned { state, .. } => self.range(state)?,
            RangeSource::Trained(_) => {
                return Err(Error::node(
                    name,
                    "fake_quant",
                    "range=trained is the train-step lowering; lower the model graph instead",
                ))
            }
        };
        let range = match (&q.range, self.mode) {
            (RangeSource::Learned { method, .. }, Mode::Train { .. }) => {
                RangeSource::Trained(*method)
            }
            _ => RangeSource::Operands,
        };
        let explicit = FakeQuantAttrs { range, ..q.clone() };
        self.emit(
            Op::Model(ModelOp::FakeQuant(explicit)),
            name,
            &[xs[0], lo, hi],
        )
    }

    /// The `(min, max)` values quantizer state `state` provides: in training the range
    /// observed including this batch (and its update), in inference the stored params.
    fn range(&mut self, state: &str) -> Result<(NodeId, NodeId)> {
        if let Some(&r) = self.ranges.get(state) {
            return Ok(r);
        }
        let (obs, q) = self
            .observers
            .get(state)
            .cloned()
            .ok_or_else(|| Error::Graph {
                graph: self.m.name.clone(),
                msg: format!("range=tied reads state `{state}` but no quantizer observes it"),
            })?;
        let x_model = self
            .m
            .operand(obs, 0)
            .expect("a verified fake_quant has an operand");
        let shape = range_shape(&q, &self.m.node(x_model).ty.shape);
        let (pmin, pmax) = (format!("{state}.min"), format!("{state}.max"));
        let ty = TensorType::f32(shape.clone());
        let lo = self.g.param(&pmin, ty.clone())?;
        let hi = self.g.param(&pmax, ty)?;
        let learned = matches!(q.range, RangeSource::Learned { .. });
        let r = match self.mode {
            Mode::Eval | Mode::Statistics => (lo, hi),
            Mode::Train { .. } if learned => {
                if !self.frozen.contains(&pmin) && !self.frozen.contains(&pmax) {
                    self.learned.extend([pmin, pmax]);
                }
                (lo, hi)
            }
            Mode::Train { step, .. } | Mode::Calibrate { step } => {
                let tied = self
                    .tied_downstream
                    .get(state)
                    .is_some_and(|s| s.contains(&x_model));
                let x = if tied {
                    self.shadow(state, x_model)?
                } else {
                    self.ensure(x_model)?
                };
                let (bmin, bmax) = self.observe(
                    x,
                    q.axis,
                    &format!("{state}.batch_min"),
                    &format!("{state}.batch_max"),
                )?;
                let (op_lo, op_hi) = match q.range {
                    RangeSource::Ema { decay, .. } => (
                        Op::Update(UpdateOp::EmaUpdate { decay }),
                        Op::Update(UpdateOp::EmaUpdate { decay }),
                    ),
                    _ => (
                        Op::Update(UpdateOp::RunningMin),
                        Op::Update(UpdateOp::RunningMax),
                    ),
                };
                let new_lo = self.emit(op_lo, &format!("{pmin}.next"), &[lo, bmin, step])?;
                let new_hi = self.emit(op_hi, &format!("{pmax}.next"), &[hi, bmax, step])?;
                for (p, v) in [(&pmin, new_lo), (&pmax, new_hi)] {
                    // the first step overwrites these (ema_update / running_* at step 0)
                    self.init.insert(p.clone(), Tensor::zeros(shape.clone()));
                    self.updates.push((p.clone(), v));
                    self.observer_state.push(p.clone());
                }
                (new_lo, new_hi)
            }
        };
        self.ranges.insert(state.to_string(), r);
        Ok(r)
    }

    /// The range of `x` in this batch, `(min, max)` (per `axis` when set), over all ranks of
    /// a data-parallel step.
    fn observe(
        &mut self,
        x: NodeId,
        axis: Option<usize>,
        min_name: &str,
        max_name: &str,
    ) -> Result<(NodeId, NodeId)> {
        let lo = self.emit(Op::Update(UpdateOp::ObserveMin { axis }), min_name, &[x])?;
        let hi = self.emit(Op::Update(UpdateOp::ObserveMax { axis }), max_name, &[x])?;
        // a range of weights alone is the same on every rank already
        if self.ranks <= 1 || !self.reads_inputs(x) {
            return Ok((lo, hi));
        }
        // both ends in one exchange: `[min | max]`, reduced as a range
        let shape = self.g.node(lo).ty.shape.clone();
        let n: usize = shape.iter().product();
        let both = self.emit(
            Op::Train(TrainOp::Pack),
            &format!("{min_name}.range"),
            &[lo, hi],
        )?;
        let range = Op::Train(TrainOp::AllReduce {
            reduce: Reduce::Range,
        });
        let both = self.emit(range, &format!("{min_name}.range.all_ranks"), &[both])?;
        let mut ends = [lo, hi];
        for (i, (end, name)) in ends.iter_mut().zip([min_name, max_name]).enumerate() {
            let unpack = Op::Train(TrainOp::Unpack {
                offset: i * n,
                shape: shape.clone(),
            });
            *end = self.emit(unpack, &format!("{name}.all_ranks"), &[both])?;
        }
        Ok((ends[0], ends[1]))
    }

    /// Whether lowered value `x` depends on a graph input (the batch, the step), rather than
    /// on params alone.
    fn reads_inputs(&self, x: NodeId) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![x];
        while let Some(n) = stack.pop() {
            if !seen.insert(n) {
                continue;
            }
            if self.g.node(n).op.is_input() {
                return true;
            }
            stack.extend(self.g.operands(n));
        }
        false
    }

    /// Model node `n` recomputed with the quantizers tied to `state` bypassed.
    fn shadow(&mut self, state: &str, n: NodeId) -> Result<NodeId> {
        let downstream = self
            .tied_downstream
            .get(state)
            .is_some_and(|s| s.contains(&n));
        if !downstream {
            return self.ensure(n);
        }
        let key = (state.to_string(), n);
        if let Some(&id) = self.shadows.get(&key) {
            return Ok(id);
        }
        let node = self.m.node(n);
        let operands = self.m.operands(n);
        let id = match &node.op {
            Op::Model(ModelOp::FakeQuant(q)) if q.range.state() == Some(state) => {
                self.shadow(state, operands[0])?
            }
            Op::Model(ModelOp::BatchNorm { .. })
            | Op::Model(ModelOp::Dropout { .. })
            | Op::Model(ModelOp::FakeQuant(_))
            | Op::Model(ModelOp::Input)
            | Op::Model(ModelOp::Param) => {
                return Err(Error::Unsupported {
                    node: node.name.clone(),
                    op: node.op.name().into(),
                    what: "train_step".into(),
                    hint: format!(
                        "it sits between the quantizers tied to state `{state}` and the \
                         quantizer observing it; only stateless ops (concat, reshape, pooling) \
                         may"
                    ),
                })
            }
            op => {
                let op = op.clone();
                let name = format!("{}.observed", node.name);
                let mut xs = Vec::new();
                for o in operands {
                    xs.push(self.shadow(state, o)?);
                }
                self.emit(op, &name, &xs)?
            }
        };
        self.shadows.insert(key, id);
        Ok(id)
    }
}

/// The seed that makes a mask whose first element has global index `first_index` equal to
/// that part of the mask starting at 0: `dropout_mask` hashes `index * 0x9E3779B1 + seed`
/// (mod 2^32), so shifting the index is adding `first_index * 0x9E3779B1` to the seed.
fn shard_seed(seed: u64, first_index: u64) -> u64 {
    seed.wrapping_add(first_index.wrapping_mul(0x9E37_79B1)) & 0xffff_ffff
}

/// A per-node dropout seed: the run's seed mixed with the node name (FNV-1a), so two
/// dropout layers draw different masks. 32 bits: what `dropout_mask` hashes, and it prints
/// as a plain positive integer in `.qir`.
fn mix_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) & 0xffff_ffff
}
