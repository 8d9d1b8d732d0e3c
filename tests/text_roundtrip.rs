//! `.qir` round trips: `print(parse(print(g))) == print(g)` for random valid graphs drawn
//! from the whole op table (awkward names, extreme floats, negative ints, per-axis
//! quantizers, several outputs, updates), for every golden case and for the examples.
//! And malformed text never panics the parser or the verifier.

use proptest::prelude::*;
use qatc::ir::graph::NodeId;
use qatc::ir::infer::{infer_type, range_shape};
use qatc::ir::op::*;
use qatc::ir::verify::{verify_with, VerifyOptions};
use qatc::ir::{text, DType, Graph, Op, OpKind, TensorType};
use std::path::Path;

// ---- a small deterministic generator -------------------------------------------------------

/// xorshift64*: the generator state of one step, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// In `lo..=hi`.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.int(0, xs.len() - 1)]
    }
    /// In `[0, 1)`, on a coarse grid or any f32 bit pattern there.
    fn unit(&mut self) -> f32 {
        match self.int(0, 3) {
            0 => *self.pick(&[0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]),
            _ => (self.next() >> 40) as f32 / (1u64 << 24) as f32,
        }
    }
    /// Any finite f32, biased towards values that print awkwardly.
    fn float(&mut self) -> f32 {
        match self.int(0, 4) {
            0 => *self.pick(&[
                0.0,
                -0.0,
                1.0,
                -3.0,
                0.1,
                1.0 / 3.0,
                1e-7,
                1e-45,
                -1.1754944e-38,
                3.4028235e38,
                -16777217.0,
                123456790.0,
            ]),
            1 => self.int(0, 20) as f32 - 10.0,
            _ => loop {
                let f = f32::from_bits(self.next() as u32);
                if f.is_finite() {
                    break f;
                }
            },
        }
    }
    fn positive(&mut self) -> f32 {
        loop {
            let f = self.float().abs();
            if f > 0.0 {
                return f;
            }
        }
    }
}

/// Node, param, output and state names: plain words and ones that need quotes or escapes.
const NAMES: &[&str] = &[
    "x",
    "conv2d_1",
    "dense.kernel",
    "model/block_1/conv:0",
    "-lead",
    "7up",
    "a b",
    "quote\"d",
    "back\\slash",
    "new\nline",
    "tab\there",
    "carriage\rreturn",
    "bell\u{7}",
    "del\u{7f}",
    "nul\u{0}",
    "arrow→é",
    "emoji😀",
    "zero\u{200b}width",
    "%0",
    "@p",
    "#not a comment",
    "{braces}",
];

struct Gen {
    g: Graph,
    rng: Rng,
    /// Observed quantizer states (for `range=tied`).
    states: Vec<String>,
}

fn act(r: &mut Rng) -> Activation {
    *r.pick(&[Activation::None, Activation::Relu, Activation::Relu6])
}

impl Gen {
    fn name(&mut self) -> String {
        let base = *self.rng.pick(NAMES);
        self.g.unique_name(base)
    }

    fn values(&self, pred: impl Fn(&TensorType) -> bool) -> Vec<NodeId> {
        self.g
            .node_ids()
            .filter(|&n| {
                let node = self.g.node(n);
                node.ty.dtype == DType::F32 && pred(&node.ty)
            })
            .collect()
    }

    fn new_input(&mut self, shape: Vec<usize>) -> NodeId {
        let name = self.name();
        self.g.add_input(name, TensorType::f32(shape)).unwrap()
    }

    fn new_param(&mut self, shape: Vec<usize>) -> NodeId {
        let name = self.name();
        self.g.param(name, TensorType::f32(shape)).unwrap()
    }

    /// An existing f32 value of exactly `shape` (sometimes), else a new param or input.
    fn operand(&mut self, shape: &[usize]) -> NodeId {
        let same = self.values(|t| t.shape == shape);
        if !same.is_empty() && self.rng.coin() {
            return *self.rng.pick(&same);
        }
        if self.rng.coin() {
            self.new_param(shape.to_vec())
        } else {
            self.new_input(shape.to_vec())
        }
    }

    fn dims(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| self.rng.int(1, 4)).collect()
    }

    /// An existing value satisfying `pred`, or a new input of shape `fresh`.
    fn main(&mut self, pred: impl Fn(&TensorType) -> bool, fresh: Vec<usize>) -> NodeId {
        let fits = self.values(pred);
        if !fits.is_empty() && self.rng.int(0, 3) > 0 {
            *self.rng.pick(&fits)
        } else {
            self.new_input(fresh)
        }
    }

    fn x4(&mut self) -> NodeId {
        let fresh = vec![
            self.rng.int(1, 2),
            self.rng.int(1, 6),
            self.rng.int(1, 6),
            self.rng.int(1, 4),
        ];
        self.main(|t| t.rank() == 4, fresh)
    }

    fn xany(&mut self) -> NodeId {
        let rank = self.rng.int(1, 4);
        let fresh = self.dims(rank);
        self.main(|t| t.rank() >= 1, fresh)
    }

    fn x_rank(&mut self, rank: usize) -> NodeId {
        let fresh = self.dims(rank);
        self.main(|t| t.rank() == rank, fresh)
    }

    fn shape(&self, id: NodeId) -> Vec<usize> {
        self.g.node(id).ty.shape.clone()
    }

    fn scalar_input(&mut self) -> NodeId {
        let shape = if self.rng.coin() { vec![] } else { vec![1] };
        let same = self.values(|t| t.shape == shape);
        if !same.is_empty() && self.rng.coin() {
            return same[0];
        }
        self.new_input(shape)
    }

    fn padding(&mut self, limit: usize) -> Padding {
        match self.rng.int(0, 2) {
            0 => Padding::Same,
            1 => Padding::Valid,
            _ => Padding::Explicit([0; 4].map(|_| self.rng.int(0, limit))),
        }
    }

    fn conv_attrs(&mut self) -> ConvAttrs {
        ConvAttrs {
            stride: [self.rng.int(1, 3), self.rng.int(1, 3)],
            padding: self.padding(2),
            dilation: [self.rng.int(1, 2), self.rng.int(1, 2)],
            activation: act(&mut self.rng),
        }
    }

    fn pool_attrs(&mut self) -> PoolAttrs {
        let size = [self.rng.int(1, 3), self.rng.int(1, 3)];
        let padding = match self.padding(0) {
            Padding::Explicit(_) => Padding::Explicit([
                self.rng.int(0, size[0] - 1),
                self.rng.int(0, size[0] - 1),
                self.rng.int(0, size[1] - 1),
                self.rng.int(0, size[1] - 1),
            ]),
            p => p,
        };
        PoolAttrs {
            size,
            stride: [self.rng.int(1, 3), self.rng.int(1, 3)],
            padding,
        }
    }

    fn fq_attrs(&mut self, x: &[usize], operands: bool) -> FakeQuantAttrs {
        let axis = if self.rng.coin() && !x.is_empty() {
            Some(self.rng.int(0, x.len() - 1))
        } else {
            None
        };
        let method = if self.rng.coin() {
            RangeLearning::Lsq
        } else {
            RangeLearning::Pact
        };
        let range = if operands {
            if self.rng.coin() {
                RangeSource::Operands
            } else {
                RangeSource::Trained(method)
            }
        } else {
            match self.rng.int(0, 5) {
                0 => RangeSource::LastValue,
                1 => {
                    let lo = -self.rng.positive().min(1e30);
                    let hi = self.rng.positive().min(1e30);
                    RangeSource::Fixed {
                        min: F32(if self.rng.coin() { 0.0 } else { lo }),
                        max: F32(hi),
                    }
                }
                2 if !self.states.is_empty() => RangeSource::Tied {
                    state: self.rng.pick(&self.states).clone(),
                },
                k => {
                    // a fresh state (the caller records it once the node exists)
                    let state = format!("{}#{}", self.rng.pick(NAMES), self.rng.next() % 1000);
                    if k == 3 {
                        RangeSource::AllValues { state }
                    } else if k == 5 {
                        RangeSource::Learned { state, method }
                    } else {
                        RangeSource::Ema {
                            state,
                            decay: F32(self.rng.unit()),
                        }
                    }
                }
            }
        };
        FakeQuantAttrs {
            bits: self.rng.int(2, 8) as u8,
            narrow: self.rng.coin(),
            symmetric: self.rng.coin(),
            axis,
            range,
        }
    }

    /// Adds `op` on `operands` if its shape rule accepts them (a step may do nothing).
    fn add(&mut self, op: Op, operands: &[NodeId]) {
        let name = self.name();
        let observes = match &op {
            Op::Model(ModelOp::FakeQuant(q)) | Op::Pass(PassOp::Quant(q)) => match &q.range {
                RangeSource::Ema { state, .. }
                | RangeSource::AllValues { state }
                | RangeSource::Learned { state, .. } => Some(state.clone()),
                _ => None,
            },
            _ => None,
        };
        if let Some(state) = &observes {
            if self.states.contains(state) {
                return;
            }
        }
        if self.g.add(op, name, operands).is_ok() {
            self.states.extend(observes);
        }
    }

    /// The forward output shape of `op` on `ins`, if valid.
    fn forward(op: &Op, ins: &[TensorType]) -> Option<Vec<usize>> {
        let refs: Vec<&TensorType> = ins.iter().collect();
        infer_type(op, &refs).ok().map(|t| t.shape)
    }

    /// One node of kind `kind` (with whatever operands it needs).
    fn step(&mut self, kind: OpKind) {
        use OpKind as K;
        let r = &mut self.rng;
        let none = Activation::None;
        match kind {
            K::Input => {
                let rank = r.int(0, 4);
                let shape = self.dims(rank);
                if self.rng.int(0, 5) == 0 {
                    // labels
                    let name = self.name();
                    let n = self.rng.int(1, 4);
                    let _ = self.g.add_input(name, TensorType::new(DType::I32, vec![n]));
                } else {
                    self.new_input(shape);
                }
            }
            K::Param => {
                let rank = r.int(0, 4);
                let shape = self.dims(rank);
                self.new_param(shape);
            }
            K::Conv2d | K::DepthwiseConv2d | K::Conv2dTranspose => {
                let c = self.conv_attrs();
                let x = self.x4();
                let cin = self.shape(x)[3];
                let (kh, kw) = (self.rng.int(1, 3), self.rng.int(1, 3));
                let (op, kshape, cout) = match kind {
                    K::Conv2d => {
                        let co = self.rng.int(1, 4);
                        (Op::Model(ModelOp::Conv2d(c)), vec![co, kh, kw, cin], co)
                    }
                    K::DepthwiseConv2d => {
                        let m = self.rng.int(1, 2);
                        (
                            Op::Model(ModelOp::DepthwiseConv2d(c)),
                            vec![1, kh, kw, cin * m],
                            cin * m,
                        )
                    }
                    _ => {
                        let co = self.rng.int(1, 4);
                        (
                            Op::Model(ModelOp::Conv2dTranspose(c)),
                            vec![co, kh, kw, cin],
                            co,
                        )
                    }
                };
                let k = self.new_param(kshape);
                let mut ops = vec![x, k];
                if self.rng.coin() {
                    ops.push(self.operand(&[cout]));
                }
                self.add(op, &ops);
            }
            K::Dense => {
                let x = self.x_rank(2);
                let f = self.shape(x)[1];
                let units = self.rng.int(1, 5);
                let k = self.new_param(vec![units, f]);
                let mut ops = vec![x, k];
                if self.rng.coin() {
                    ops.push(self.operand(&[units]));
                }
                let op = Op::Model(ModelOp::Dense {
                    activation: act(&mut self.rng),
                });
                self.add(op, &ops);
            }
            K::BatchNorm | K::BatchNormTrain => {
                let x = self.xany();
                let c = *self.shape(x).last().unwrap();
                let mut ops = vec![x];
                let n = if kind == K::BatchNorm { 4 } else { 2 };
                for _ in 0..n {
                    ops.push(self.operand(&[c]));
                }
                let epsilon = F32(self.rng.positive());
                let op = if kind == K::BatchNorm {
                    Op::Model(ModelOp::BatchNorm {
                        epsilon,
                        momentum: F32(self.rng.unit()),
                    })
                } else {
                    Op::Train(TrainOp::BatchNormTrain { epsilon })
                };
                self.add(op, &ops);
            }
            K::Relu
            | K::Relu6
            | K::HardSwish
            | K::Sigmoid
            | K::Tanh
            | K::Softmax
            | K::Flatten
            | K::BatchMean => {
                let x = self.xany();
                let op = match kind {
                    K::Relu => Op::Model(ModelOp::Relu),
                    K::Relu6 => Op::Model(ModelOp::Relu6),
                    K::HardSwish => Op::Model(ModelOp::HardSwish),
                    K::Sigmoid => Op::Model(ModelOp::Sigmoid),
                    K::Tanh => Op::Model(ModelOp::Tanh),
                    K::Softmax => Op::Model(ModelOp::Softmax),
                    K::Flatten => Op::Model(ModelOp::Flatten),
                    _ => Op::Train(TrainOp::BatchMean),
                };
                self.add(op, &[x]);
            }
            K::LeakyRelu => {
                let x = self.xany();
                let op = Op::Model(ModelOp::LeakyRelu {
                    alpha: F32(self.rng.float()),
                });
                self.add(op, &[x]);
            }
            K::ThresholdedRelu => {
                let x = self.xany();
                let op = Op::Model(ModelOp::ThresholdedRelu {
                    theta: F32(self.rng.float()),
                });
                self.add(op, &[x]);
            }
            K::PRelu | K::PReluGradInput => {
                let x = self.xany();
                let sx = self.shape(x);
                // a per-sample slope: a suffix of one sample's shape with some dims set to 1
                let keep = self.rng.int(0, sx.len().saturating_sub(1));
                let sa: Vec<usize> = sx[sx.len() - keep..]
                    .iter()
                    .map(|&d| if self.rng.coin() { d } else { 1 })
                    .collect();
                let alpha = self.operand(&sa);
                if kind == K::PRelu {
                    self.add(Op::Model(ModelOp::PRelu), &[x, alpha]);
                } else {
                    let dy = self.operand(&sx);
                    self.add(Op::Grad(GradOp::PReluGradInput), &[dy, x, alpha]);
                }
            }
            K::Add | K::Sub | K::Mul => {
                let a = self.xany();
                let sa = self.shape(a);
                // a broadcastable partner: a suffix of a's shape with some dims set to 1
                let keep = self.rng.int(0, sa.len());
                let sb: Vec<usize> = sa[sa.len() - keep..]
                    .iter()
                    .map(|&d| if self.rng.coin() { d } else { 1 })
                    .collect();
                let b = self.operand(&sb);
                let activation = act(&mut self.rng);
                let op = match kind {
                    K::Add => Op::Model(ModelOp::Add { activation }),
                    K::Sub => Op::Model(ModelOp::Sub { activation }),
                    _ => Op::Model(ModelOp::Mul { activation }),
                };
                let ops = if self.rng.coin() { [a, b] } else { [b, a] };
                self.add(op, &ops);
            }
            K::Concat => {
                let a = self.xany();
                let sa = self.shape(a);
                let axis = self.rng.int(0, sa.len() - 1);
                let mut ops = vec![a];
                for _ in 0..self.rng.int(0, 2) {
                    let mut s = sa.clone();
                    s[axis] = self.rng.int(1, 3);
                    ops.push(self.operand(&s));
                }
                self.add(Op::Model(ModelOp::Concat { axis }), &ops);
            }
            K::MaxPool2d | K::AvgPool2d => {
                let p = self.pool_attrs();
                let x = self.x4();
                let op = if kind == K::MaxPool2d {
                    Op::Model(ModelOp::MaxPool2d(p))
                } else {
                    Op::Model(ModelOp::AvgPool2d(p))
                };
                self.add(op, &[x]);
            }
            K::GlobalAvgPool | K::GlobalMaxPool => {
                let x = self.x4();
                let keepdims = self.rng.coin();
                let op = if kind == K::GlobalAvgPool {
                    Op::Model(ModelOp::GlobalAvgPool { keepdims })
                } else {
                    Op::Model(ModelOp::GlobalMaxPool { keepdims })
                };
                self.add(op, &[x]);
            }
            K::Mean | K::ReduceSum => {
                let x = self.xany();
                let rank = self.shape(x).len();
                let mut axes: Vec<usize> = (0..rank).filter(|_| self.rng.coin()).collect();
                if self.rng.coin() {
                    axes.reverse();
                }
                let r = ReduceAttrs {
                    axes,
                    keepdims: self.rng.coin(),
                };
                let op = if kind == K::Mean {
                    Op::Model(ModelOp::Mean(r))
                } else {
                    Op::Grad(GradOp::ReduceSum(r))
                };
                self.add(op, &[x]);
            }
            K::Reshape => {
                let x = self.xany();
                let mut m: usize = self.shape(x)[1..].iter().product();
                let mut shape = Vec::new();
                for _ in 0..self.rng.int(0, 2) {
                    let divisors: Vec<usize> = (1..=m).filter(|d| m.is_multiple_of(*d)).collect();
                    let d = *self.rng.pick(&divisors);
                    shape.push(d as i64);
                    m /= d;
                }
                shape.push(m as i64);
                if self.rng.coin() {
                    let i = self.rng.int(0, shape.len() - 1);
                    shape[i] = -1;
                }
                self.add(Op::Model(ModelOp::Reshape { shape }), &[x]);
            }
            K::Transpose => {
                let x = self.xany();
                let rank = self.shape(x).len();
                let mut perm: Vec<usize> = (0..rank).collect();
                for i in (2..rank).rev() {
                    let j = self.rng.int(1, i);
                    perm.swap(i, j);
                }
                self.add(Op::Model(ModelOp::Transpose { perm }), &[x]);
            }
            K::Pad | K::Crop => {
                let x = self.xany();
                let s = self.shape(x);
                let rows: Vec<[usize; 2]> = s
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if i == 0 {
                            [0, 0]
                        } else if kind == K::Pad {
                            [self.rng.int(0, 2), self.rng.int(0, 2)]
                        } else {
                            let a = self.rng.int(0, d - 1);
                            [a, self.rng.int(0, d - 1 - a)]
                        }
                    })
                    .collect();
                let op = if kind == K::Pad {
                    Op::Model(ModelOp::Pad { pads: rows })
                } else {
                    Op::Model(ModelOp::Crop { crops: rows })
                };
                self.add(op, &[x]);
            }
            K::UpsampleNearest | K::UpsampleNearestGrad => {
                let scale = [self.rng.int(1, 3), self.rng.int(1, 3)];
                let x = if kind == K::UpsampleNearest {
                    self.x4()
                } else {
                    let s = vec![
                        1,
                        scale[0] * self.rng.int(1, 2),
                        scale[1] * self.rng.int(1, 2),
                        2,
                    ];
                    self.operand(&s)
                };
                let op = if kind == K::UpsampleNearest {
                    Op::Model(ModelOp::UpsampleNearest { scale })
                } else {
                    Op::Grad(GradOp::UpsampleNearestGrad { scale })
                };
                self.add(op, &[x]);
            }
            K::Dropout => {
                let x = self.xany();
                let rate = F32(self.rng.unit());
                self.add(Op::Model(ModelOp::Dropout { rate }), &[x]);
            }
            K::FakeQuant | K::Quant => {
                let x = self.xany();
                let s = self.shape(x);
                let operands = kind == K::FakeQuant && self.rng.int(0, 3) == 0;
                let q = self.fq_attrs(&s, operands);
                if operands {
                    let rs = range_shape(&q, &s);
                    let (lo, hi) = (self.operand(&rs), self.operand(&rs));
                    self.add(Op::Model(ModelOp::FakeQuant(q)), &[x, lo, hi]);
                } else if kind == K::FakeQuant {
                    self.add(Op::Model(ModelOp::FakeQuant(q)), &[x]);
                } else {
                    self.add(Op::Pass(PassOp::Quant(q)), &[x]);
                }
            }
            K::FakeQuantGrad => {
                let x = self.xany();
                let s = self.shape(x);
                let operands = self.rng.coin();
                let q = self.fq_attrs(&s, operands);
                let rs = range_shape(&q, &s);
                let ops = [self.operand(&s), x, self.operand(&rs), self.operand(&rs)];
                self.add(Op::Grad(GradOp::FakeQuantGrad(q)), &ops);
            }
            K::FakeQuantRangeGrad => {
                let x = self.xany();
                let s = self.shape(x);
                let mut q = self.fq_attrs(&s, true);
                q.range = RangeSource::Trained(if self.rng.coin() {
                    RangeLearning::Lsq
                } else {
                    RangeLearning::Pact
                });
                let rs = range_shape(&q, &s);
                let ops = [self.operand(&s), x, self.operand(&rs), self.operand(&rs)];
                let op = GradOp::FakeQuantRangeGrad {
                    quant: q,
                    end: if self.rng.coin() {
                        RangeEnd::Min
                    } else {
                        RangeEnd::Max
                    },
                    grad_scale: F32(self.rng.positive()),
                };
                self.add(Op::Grad(op), &ops);
            }
            K::BnScale => {
                let c = self.rng.int(1, 4);
                let ops = [self.operand(&[c]), self.operand(&[c])];
                let epsilon = F32(self.rng.positive());
                self.add(Op::Pass(PassOp::BnScale { epsilon }), &ops);
            }
            K::ScaleChannels => {
                let w = self.xany();
                let s = self.shape(w);
                let axis = self.rng.int(0, s.len() - 1);
                let scale = self.operand(&[s[axis]]);
                self.add(Op::Pass(PassOp::ScaleChannels { axis }), &[w, scale]);
            }
            K::SoftmaxCrossEntropy | K::SoftmaxCrossEntropyGrad => {
                let logits = self.x_rank(2);
                let n = self.shape(logits)[0];
                let name = self.name();
                let labels = self
                    .g
                    .add_input(name, TensorType::new(DType::I32, vec![n]))
                    .unwrap();
                let op = if kind == K::SoftmaxCrossEntropy {
                    Op::Train(TrainOp::SoftmaxCrossEntropy)
                } else {
                    Op::Grad(GradOp::SoftmaxCrossEntropyGrad)
                };
                self.add(op, &[logits, labels]);
            }
            K::ReluGrad
            | K::Relu6Grad
            | K::LeakyReluGrad
            | K::ThresholdedReluGrad
            | K::PReluGradAlpha
            | K::HardSwishGrad
            | K::SigmoidGrad
            | K::TanhGrad
            | K::SoftmaxGrad
            | K::BatchNormGradGamma
            | K::MovingAverage
            | K::AdamMoment
            | K::AdamMomentSq => {
                let x = self.xany();
                let s = self.shape(x);
                let dy = self.operand(&s);
                let u = F32(self.rng.unit());
                let op = match kind {
                    K::ReluGrad => Op::Grad(GradOp::ReluGrad),
                    K::Relu6Grad => Op::Grad(GradOp::Relu6Grad),
                    K::LeakyReluGrad => Op::Grad(GradOp::LeakyReluGrad {
                        alpha: F32(self.rng.float()),
                    }),
                    K::ThresholdedReluGrad => Op::Grad(GradOp::ThresholdedReluGrad {
                        theta: F32(self.rng.float()),
                    }),
                    K::HardSwishGrad => Op::Grad(GradOp::HardSwishGrad),
                    K::PReluGradAlpha => Op::Grad(GradOp::PReluGradAlpha),
                    K::SigmoidGrad => Op::Grad(GradOp::SigmoidGrad),
                    K::TanhGrad => Op::Grad(GradOp::TanhGrad),
                    K::SoftmaxGrad => Op::Grad(GradOp::SoftmaxGrad),
                    K::BatchNormGradGamma => Op::Grad(GradOp::BatchNormGradGamma {
                        epsilon: F32(self.rng.positive()),
                    }),
                    K::MovingAverage => Op::Update(UpdateOp::MovingAverage { momentum: u }),
                    K::AdamMoment => Op::Update(UpdateOp::AdamMoment { beta: u }),
                    _ => Op::Update(UpdateOp::AdamMomentSq { beta: u }),
                };
                self.add(op, &[dy, x]);
            }
            K::BatchNormGradInput => {
                let x = self.xany();
                let s = self.shape(x);
                let ops = [self.operand(&s), x, self.operand(&[*s.last().unwrap()])];
                let epsilon = F32(self.rng.positive());
                self.add(Op::Grad(GradOp::BatchNormGradInput { epsilon }), &ops);
            }
            K::Conv2dGradInput
            | K::Conv2dGradFilter
            | K::DepthwiseConv2dGradInput
            | K::DepthwiseConv2dGradFilter
            | K::Conv2dTransposeGradInput
            | K::Conv2dTransposeGradFilter => {
                let c = self.conv_attrs();
                let xs = vec![
                    self.rng.int(1, 2),
                    self.rng.int(1, 6),
                    self.rng.int(1, 6),
                    self.rng.int(1, 3),
                ];
                let (kh, kw) = (self.rng.int(1, 3), self.rng.int(1, 3));
                let (fwd, ks) = match kind {
                    K::Conv2dGradInput | K::Conv2dGradFilter => (
                        Op::Model(ModelOp::Conv2d(c.clone())),
                        vec![self.rng.int(1, 3), kh, kw, xs[3]],
                    ),
                    K::DepthwiseConv2dGradInput | K::DepthwiseConv2dGradFilter => (
                        Op::Model(ModelOp::DepthwiseConv2d(c.clone())),
                        vec![1, kh, kw, xs[3] * self.rng.int(1, 2)],
                    ),
                    _ => (
                        Op::Model(ModelOp::Conv2dTranspose(c.clone())),
                        vec![self.rng.int(1, 3), kh, kw, xs[3]],
                    ),
                };
                let Some(ys) = Self::forward(
                    &fwd,
                    &[TensorType::f32(xs.clone()), TensorType::f32(ks.clone())],
                ) else {
                    return;
                };
                let dy = self.operand(&ys);
                let conv = c;
                let (op, other) = match kind {
                    K::Conv2dGradInput => (
                        Op::Grad(GradOp::Conv2dGradInput {
                            conv,
                            input_shape: xs,
                        }),
                        self.new_param(ks),
                    ),
                    K::DepthwiseConv2dGradInput => (
                        Op::Grad(GradOp::DepthwiseConv2dGradInput {
                            conv,
                            input_shape: xs,
                        }),
                        self.new_param(ks),
                    ),
                    K::Conv2dTransposeGradInput => (
                        Op::Grad(GradOp::Conv2dTransposeGradInput {
                            conv,
                            input_shape: xs,
                        }),
                        self.new_param(ks),
                    ),
                    K::Conv2dGradFilter => {
                        let x = self.operand(&xs);
                        (
                            Op::Grad(GradOp::Conv2dGradFilter {
                                conv,
                                filter_shape: ks,
                            }),
                            x,
                        )
                    }
                    K::DepthwiseConv2dGradFilter => {
                        let x = self.operand(&xs);
                        (
                            Op::Grad(GradOp::DepthwiseConv2dGradFilter {
                                conv,
                                filter_shape: ks,
                            }),
                            x,
                        )
                    }
                    _ => {
                        let x = self.operand(&xs);
                        (
                            Op::Grad(GradOp::Conv2dTransposeGradFilter {
                                conv,
                                filter_shape: ks,
                            }),
                            x,
                        )
                    }
                };
                self.add(op, &[dy, other]);
            }
            K::DenseGradInput | K::DenseGradWeight => {
                let (n, o, i) = (self.rng.int(1, 3), self.rng.int(1, 4), self.rng.int(1, 4));
                let dy = self.operand(&[n, o]);
                if kind == K::DenseGradInput {
                    let w = self.new_param(vec![o, i]);
                    self.add(Op::Grad(GradOp::DenseGradInput), &[dy, w]);
                } else {
                    let x = self.operand(&[n, i]);
                    self.add(Op::Grad(GradOp::DenseGradWeight), &[dy, x]);
                }
            }
            K::BatchVar => {
                let x = self.xany();
                let unbiased = self.rng.coin();
                self.add(Op::Train(TrainOp::BatchVar { unbiased }), &[x]);
            }
            K::MaxPool2dGrad | K::AvgPool2dGrad => {
                let p = self.pool_attrs();
                let x = self.x4();
                let xs = self.shape(x);
                let Some(ys) = Self::forward(
                    &Op::Model(ModelOp::MaxPool2d(p.clone())),
                    &[TensorType::f32(xs.clone())],
                ) else {
                    return;
                };
                let dy = self.operand(&ys);
                if kind == K::MaxPool2dGrad {
                    self.add(Op::Grad(GradOp::MaxPool2dGrad(p)), &[dy, x]);
                } else {
                    self.add(
                        Op::Grad(GradOp::AvgPool2dGrad {
                            pool: p,
                            input_shape: xs,
                        }),
                        &[dy],
                    );
                }
            }
            K::GlobalAvgPoolGrad | K::GlobalMaxPoolGrad => {
                let x = self.x4();
                let xs = self.shape(x);
                let ds = if self.rng.coin() {
                    vec![xs[0], xs[3]]
                } else {
                    vec![xs[0], 1, 1, xs[3]]
                };
                let dy = self.operand(&ds);
                if kind == K::GlobalAvgPoolGrad {
                    self.add(
                        Op::Grad(GradOp::GlobalAvgPoolGrad { input_shape: xs }),
                        &[dy],
                    );
                } else {
                    self.add(Op::Grad(GradOp::GlobalMaxPoolGrad), &[dy, x]);
                }
            }
            K::MeanGrad => {
                let rank = self.rng.int(1, 4);
                let xs = self.dims(rank);
                let axes: Vec<usize> = (0..rank).filter(|_| self.rng.coin()).collect();
                let keep = self.rng.coin();
                let ds: Vec<usize> = xs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                        (false, _) => Some(d),
                        (true, true) => Some(1),
                        (true, false) => None,
                    })
                    .collect();
                let dy = self.operand(&ds);
                self.add(
                    Op::Grad(GradOp::MeanGrad {
                        axes,
                        input_shape: xs,
                    }),
                    &[dy],
                );
            }
            K::Slice => {
                let x = self.xany();
                let s = self.shape(x);
                let begin: Vec<usize> = s.iter().map(|&d| self.rng.int(0, d - 1)).collect();
                let size = s
                    .iter()
                    .zip(&begin)
                    .map(|(&d, &b)| self.rng.int(1, d - b))
                    .collect();
                self.add(Op::Grad(GradOp::Slice { begin, size }), &[x]);
            }
            K::DropoutMask => {
                let step = self.scalar_input();
                let rank = self.rng.int(0, 3);
                let shape = self.dims(rank);
                let seed = self.rng.next();
                let rate = F32(self.rng.unit());
                self.add(
                    Op::Train(TrainOp::DropoutMask { rate, seed, shape }),
                    &[step],
                );
            }
            K::Pack => {
                let (a, b) = (self.xany(), self.xany());
                self.add(Op::Train(TrainOp::Pack), &[a, b]);
            }
            K::Unpack => {
                let x = self.xany();
                let n: usize = self.shape(x).iter().product();
                let name = self.name();
                let flat = self.g.add(Op::Train(TrainOp::Pack), name, &[x]);
                if let Ok(flat) = flat {
                    let take = self.rng.int(1, n);
                    let offset = self.rng.int(0, n - take);
                    self.add(
                        Op::Train(TrainOp::Unpack {
                            offset,
                            shape: vec![take],
                        }),
                        &[flat],
                    );
                }
            }
            K::AllReduce => {
                let x = self.xany();
                let reduce = [Reduce::Mean, Reduce::Min, Reduce::Max][self.rng.int(0, 2)];
                self.add(Op::Train(TrainOp::AllReduce { reduce }), &[x]);
            }
            K::SgdVelocity | K::AdamApply | K::EmaUpdate | K::RunningMin | K::RunningMax => {
                let x = self.xany();
                let s = self.shape(x);
                let (a, b) = (self.operand(&s), self.operand(&s));
                let sc = self.scalar_input();
                let u = F32(self.rng.unit());
                match kind {
                    K::SgdVelocity => self.add(
                        Op::Update(UpdateOp::SgdVelocity { momentum: u }),
                        &[x, a, sc],
                    ),
                    K::AdamApply => {
                        let epsilon = F32(if self.rng.coin() {
                            0.0
                        } else {
                            self.rng.positive()
                        });
                        self.add(Op::Update(UpdateOp::AdamApply { epsilon }), &[x, a, b, sc]);
                    }
                    K::EmaUpdate => {
                        self.add(Op::Update(UpdateOp::EmaUpdate { decay: u }), &[x, a, sc])
                    }
                    K::RunningMin => self.add(Op::Update(UpdateOp::RunningMin), &[x, a, sc]),
                    _ => self.add(Op::Update(UpdateOp::RunningMax), &[x, a, sc]),
                }
            }
            K::ObserveMin | K::ObserveMax => {
                let x = self.xany();
                let rank = self.shape(x).len();
                let axis = if self.rng.coin() {
                    Some(self.rng.int(0, rank - 1))
                } else {
                    None
                };
                let op = if kind == K::ObserveMin {
                    Op::Update(UpdateOp::ObserveMin { axis })
                } else {
                    Op::Update(UpdateOp::ObserveMax { axis })
                };
                self.add(op, &[x]);
            }
        }
        let _ = none;
    }

    /// Outputs (several, any value including params and inputs) and updates (including one
    /// of a param nothing else reads).
    fn finish(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
        let all: Vec<NodeId> = self.g.node_ids().collect();
        // every op nothing uses is an output (so every generated op is printed), plus
        // sometimes any node at all: an input, a param, a value already output
        let mut outputs: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|&n| {
                !matches!(
                    self.g.node(n).op,
                    Op::Model(ModelOp::Input) | Op::Model(ModelOp::Param)
                ) && self.g.use_count(n) == 0
            })
            .collect();
        if outputs.is_empty() || self.rng.coin() {
            outputs.push(*self.rng.pick(&all));
        }
        let mut used = std::collections::HashSet::new();
        for node in outputs {
            let mut name = self.rng.pick(NAMES).to_string();
            while !used.insert(name.clone()) {
                name.push('\'');
            }
            self.g.add_output(name, node);
        }
        let params: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|&n| self.g.node(n).op == Op::Model(ModelOp::Param))
            .collect();
        let mut updated = std::collections::HashSet::new();
        for _ in 0..self.rng.int(0, 3) {
            if params.is_empty() {
                break;
            }
            let p = *self.rng.pick(&params);
            let ty = self.g.node(p).ty.clone();
            let same: Vec<NodeId> = all
                .iter()
                .copied()
                .filter(|&n| self.g.node(n).ty == ty)
                .collect();
            let value = *self.rng.pick(&same);
            let name = self.g.node(p).name.clone();
            if updated.insert(name.clone()) {
                self.g.add_update(name, value);
            }
        }
        if self.rng.coin() {
            // a param only written: its declaration must survive printing
            let value = *self.rng.pick(&all);
            let ty = self.g.node(value).ty.clone();
            if ty.dtype == DType::F32 {
                let name = self.name();
                self.g.param(name.clone(), ty).unwrap();
                self.g.add_update(name, value);
            }
        }
    }
}

fn generate(steps: &[(usize, u64)], finish: u64) -> Graph {
    let mut gen = Gen {
        g: Graph::new(*Rng::new(finish).pick(NAMES)),
        rng: Rng::new(0),
        states: Vec::new(),
    };
    for &(k, seed) in steps {
        gen.rng = Rng::new(seed);
        gen.step(OpKind::ALL[k % OpKind::ALL.len()]);
    }
    if gen.g.node_count() == 0 {
        gen.new_input(vec![1]);
    }
    gen.finish(finish);
    gen.g
}

const MARKERS: VerifyOptions = VerifyOptions {
    allow_markers: true,
};

/// `print(parse(print(g))) == print(g)`, and both verify.
fn round_trip(g: &Graph) -> Result<(), String> {
    verify_with(g, MARKERS).map_err(|e| format!("generated graph does not verify: {e}"))?;
    let t1 = text::print(g);
    let g2 = text::parse(&t1, "generated.qir").map_err(|e| format!("{e}\n{t1}"))?;
    verify_with(&g2, MARKERS).map_err(|e| format!("{e}\n{t1}"))?;
    let t2 = text::print(&g2);
    if t1 != t2 {
        return Err(format!("printed texts differ:\n{t1}\n---\n{t2}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_round_trip(
        steps in prop::collection::vec((0..OpKind::ALL.len(), any::<u64>()), 1..24),
        finish in any::<u64>(),
    ) {
        let g = generate(&steps, finish);
        if let Err(e) = round_trip(&g) {
            return Err(TestCaseError::fail(e));
        }
    }
}

#[test]
fn the_generator_reaches_every_op() {
    // every kind, alone and after a few others, is printed in some generated graph
    let mut seen = std::collections::HashSet::new();
    for seed in 0..400u64 {
        let k = seed as usize % OpKind::ALL.len();
        let steps = [
            (k, seed),
            ((k * 7 + 3) % OpKind::ALL.len(), seed + 1),
            (k, seed + 2),
        ];
        let g = generate(&steps, seed);
        round_trip(&g).unwrap();
        for id in g.canonical_order() {
            seen.insert(g.node(id).op.kind());
        }
    }
    let missing: Vec<&str> = OpKind::ALL
        .iter()
        .filter(|k| !seen.contains(k))
        .map(|k| k.name())
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

// ---- golden cases and examples -------------------------------------------------------------

fn qir_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            qir_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "qir") {
            out.push(p);
        }
    }
}

#[test]
fn every_golden_case_round_trips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    qir_files(&root.join("tests/golden"), &mut files);
    let mut checked = 0;
    for path in files {
        // parse errors are what tests/golden/parse shows; every other case must round-trip
        let Ok(g) = text::parse_file(&path) else {
            continue;
        };
        let t1 = text::print(&g);
        let t2 = text::print(
            &text::parse(&t1, "again.qir").unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        );
        assert_eq!(t1, t2, "{}", path.display());
        checked += 1;
    }
    assert!(checked > 100, "only {checked} cases");
}

#[test]
fn examples_are_in_canonical_form() {
    // print(parse(file)) is the file itself: the examples are what qatc dump prints
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = Vec::new();
    qir_files(&root, &mut files);
    assert!(!files.is_empty());
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let g = text::parse(&src, &path.display().to_string()).unwrap();
        qatc::ir::verify::verify(&g).unwrap();
        assert_eq!(text::print(&g), src, "{}", path.display());
    }
}

// ---- specific round trips the generator might reach rarely ---------------------------------

#[test]
fn strings_with_every_escape_round_trip() {
    let mut g = Graph::new("m\"o\\d\te\nl\r\u{1}\u{7f}→");
    let x = g
        .add_input("in\u{0}put", TensorType::f32(vec![1, 2]))
        .unwrap();
    let q = FakeQuantAttrs::activation("st\"ate\n");
    let y = g
        .add(Op::Model(ModelOp::FakeQuant(q)), "a\\b\"c", &[x])
        .unwrap();
    g.add_output("out\r\n", y);
    round_trip(&g).unwrap();
    let printed = text::print(&g);
    assert!(
        printed.contains(r#"model "m\"o\\d\te\nl\r\u{1}\u{7f}→""#),
        "{printed}"
    );
}

#[test]
fn outputs_and_updates_may_name_params_directly() {
    let mut g = Graph::new("p");
    let x = g.add_input("x", TensorType::f32(vec![3])).unwrap();
    let w = g.param("w", TensorType::f32(vec![3])).unwrap();
    let w_old = g.param("w.old", TensorType::f32(vec![3])).unwrap();
    let only_written = g.param("only written", TensorType::f32(vec![3])).unwrap();
    let _ = only_written;
    g.add_output("w", w);
    g.add_output("x", x);
    g.add_update("w.old", w);
    g.add_update("only written", x);
    let _ = w_old;
    round_trip(&g).unwrap();
    let printed = text::print(&g);
    assert!(printed.contains("output \"w\" = @w\n"), "{printed}");
    assert!(
        printed.contains("param @\"only written\" : f32[3]\n"),
        "{printed}"
    );
}

#[test]
fn large_dropout_seeds_round_trip() {
    for seed in [0, 7, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let mut g = Graph::new("d");
        let step = g.add_input("step", TensorType::scalar(DType::F32)).unwrap();
        let m = g
            .add(
                Op::Train(TrainOp::DropoutMask {
                    rate: F32(0.5),
                    seed,
                    shape: vec![2],
                }),
                "m",
                &[step],
            )
            .unwrap();
        g.add_output("m", m);
        round_trip(&g).unwrap();
        let back = text::parse(&text::print(&g), "d.qir").unwrap();
        let id = back.find("m").unwrap();
        assert_eq!(back.node(id).op, g.node(m).op, "seed {seed}");
    }
}

// ---- malformed text ------------------------------------------------------------------------

/// Mutates `src`: replaces a number with an extreme one, deletes or duplicates a span,
/// or swaps two lines.
fn mutate(src: &str, r: &mut Rng) -> String {
    let b: Vec<char> = src.chars().collect();
    if b.is_empty() {
        return String::new();
    }
    match r.int(0, 4) {
        0 | 1 => {
            // a digit run becomes an extreme number
            let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
            if digits.is_empty() {
                return src.to_string();
            }
            let start = *r.pick(&digits);
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            let n = *r.pick(&[
                "0",
                "1",
                "2",
                "9",
                "100000",
                "4294967296",
                "9223372036854775807",
                "18446744073709551615",
                "99999999999999999999",
                "1e30",
                "0.5",
            ]);
            let mut s: String = b[..start].iter().collect();
            s.push_str(n);
            s.extend(&b[end..]);
            s
        }
        2 => {
            let i = r.int(0, b.len() - 1);
            let j = (i + r.int(1, 8)).min(b.len());
            b[..i].iter().chain(&b[j..]).collect()
        }
        3 => {
            let i = r.int(0, b.len() - 1);
            let j = (i + r.int(1, 8)).min(b.len());
            b[..j].iter().chain(&b[i..]).collect()
        }
        _ => {
            let mut lines: Vec<&str> = src.lines().collect();
            let (i, j) = (r.int(0, lines.len() - 1), r.int(0, lines.len() - 1));
            lines.swap(i, j);
            lines.join("\n")
        }
    }
}

fn golden_sources() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    qir_files(&root.join("tests/golden/ops"), &mut files);
    qir_files(&root.join("examples"), &mut files);
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn malformed_text_is_an_error_not_a_panic(pick in any::<usize>(), seed in any::<u64>(), rounds in 1..4usize) {
        let sources = golden_sources();
        let mut r = Rng::new(seed);
        let mut src = sources[pick % sources.len()].clone();
        for _ in 0..rounds {
            src = mutate(&src, &mut r);
        }
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(g) = text::parse(&src, "mutated.qir") {
                let _ = verify_with(&g, MARKERS);
                let _ = text::print(&g);
                let mut g = g;
                let _ = g.rebatch(3);
            }
        });
        prop_assert!(outcome.is_ok(), "panicked on:\n{}", src);
    }
}

/// Texts that panicked the parser, the verifier or `rebatch` (arithmetic overflow, empty
/// tensors, out-of-bounds indexing) before the checks in `ir::infer`. Each must be an error.
#[test]
fn hostile_shapes_and_numbers_are_errors_not_panics() {
    let big = "9223372036854775807";
    let cases = [
        format!("%0 = pad \"p\" (%x) {{pads=[[0,0],[{big},{big}]]}}"),
        format!("%0 = crop \"c\" (%x) {{crops=[[0,0],[{big},{big}]]}}"),
        format!("%0 = slice \"s\" (%x) {{begin=[0,{big}], size=[1,{big}]}}"),
        format!("%0 = upsample_nearest \"u\" (%img) {{scale=[{big},2]}}"),
        format!("%0 = conv2d \"c\" (%img, @k) {{dilation=[{big},1]}}"),
        format!("%0 = conv2d \"c\" (%img, @k) {{padding=[{big},{big},0,0]}}"),
        format!("%0 = conv2d_transpose \"c\" (%img, @k) {{stride=[{big},1]}}"),
        format!("%0 = reshape \"r\" (%x) {{shape=[{big},{big},-1]}}"),
        "%0 = flatten \"f\" (%huge)".to_string(),
        "%0 = slice \"s\" (%x) {begin=[0,0], size=[1,0]}\n%1 = softmax \"p\" (%0)".to_string(),
        "%0 = slice \"s\" (%img) {begin=[0,0,0,0], size=[1,0,2,1]}\n%1 = conv2d_transpose \"t\" (%0, @k)".to_string(),
        "%0 = conv2d_grad_input \"g\" (%img, @v) {input_shape=[1,4,4,1]}".to_string(),
        "%0 = max_pool2d_grad \"g\" (%img, %img) {size=[1,1], padding=[1,1,1,1]}".to_string(),
        "%0 = global_max_pool_grad \"g\" (%img, %img)".to_string(),
        "%0 = batch_norm_grad_gamma \"g\" (%s, %s)".to_string(),
        "%0 = softmax_grad \"g\" (%s, %s)".to_string(),
        format!("%0 = dropout_mask \"m\" (%s) {{rate=0.5, shape=[{big},{big}]}}"),
        format!("%0 = global_avg_pool_grad \"g\" (%x) {{input_shape=[1,{big},{big},2]}}"),
    ];
    let header = "model \"m\"\nparam @k : f32[1,2,2,1]\nparam @v : f32[3,3]\n\
                  %x = input \"x\" : f32[1,2]\n%img = input \"img\" : f32[1,4,4,1]\n\
                  %s = input \"s\" : f32[]\n%huge = input \"huge\" : f32[1,4294967296,4294967296]\n";
    for case in cases {
        let src = format!("{header}{case}\noutput \"y\" = %0\n");
        let outcome = std::panic::catch_unwind(|| {
            let parsed = text::parse(&src, "hostile.qir");
            match parsed {
                Err(e) => Err(e.to_string()),
                Ok(mut g) => {
                    verify_with(&g, MARKERS).map_err(|e| e.to_string())?;
                    g.rebatch(2).map_err(|e| e.to_string())
                }
            }
        });
        match outcome {
            Err(_) => panic!("panicked on:\n{src}"),
            Ok(Ok(())) => panic!("accepted:\n{src}"),
            Ok(Err(_)) => {}
        }
    }
}

/// Strings are read in time linear in their length: every character of a string literal
/// used to re-validate the rest of the file as UTF-8, so a 1 MB model name took minutes
/// (and a 200k-node chain over a minute in `qatc dump`). `benches/qir_scaling.rs` measures
/// the front end's scaling; this only guards against the quadratic case coming back.
#[test]
fn long_strings_parse_in_linear_time() {
    let name = "é".repeat(500_000);
    let text = format!("model \"{name}\"\n%0 = input \"x\" : f32[1,4]\noutput \"y\" = %0\n");
    let t = std::time::Instant::now();
    let g = qatc::ir::text::parse(&text, "long.qir").unwrap();
    assert_eq!(g.name, name);
    assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
}
