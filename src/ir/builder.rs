//! Keras-style model building: [`Functional`] (several inputs, branches, residual adds,
//! concat) and [`Sequential`] on top of it. Layers get Keras' names (`conv2d`, `conv2d_1`,
//! `batch_normalization`, …) and Keras' default initializers (Glorot-uniform kernels, zero
//! biases, BatchNorm gamma 1 / beta 0 / moving mean 0 / moving variance 1), drawn from a
//! seeded ChaCha8 generator, so the same seed gives the same model bytes.
//!
//! ```
//! use qatc::ir::builder::{Act, Layer, Sequential};
//! let model = Sequential::new("tiny", &[28, 28, 1], 0)
//!     .add(Layer::conv2d(8, 3).activation(Act::Relu))
//!     .add(Layer::max_pool(2))
//!     .add(Layer::flatten())
//!     .add(Layer::dense(10))
//!     .build()
//!     .unwrap();
//! assert_eq!(model.graph.node(model.graph.outputs()[0].node).ty.shape, vec![1, 10]);
//! ```

use super::graph::{Graph, NodeId};
use super::op::*;
use super::params::{ParamStore, Tensor};
use super::types::TensorType;
use crate::error::Result;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// A graph with its initialized weights.
#[derive(Clone, Debug)]
pub struct Model {
    /// The verified graph: NHWC input(s) with batch 1, one `param` node per weight.
    pub graph: Graph,
    /// Initial weights keyed by param name (`conv2d.kernel`, `batch_normalization.gamma`, …).
    pub params: ParamStore,
}

/// Activations a layer can apply (Keras' `activation=` argument).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Softmax over the last axis.
    Softmax,
    /// `x · relu6(x + 3) / 6`.
    HardSwish,
    /// `x` for `x >= 0`, `alpha · x` below, with this `alpha`.
    LeakyRelu(f32),
}

impl Act {
    fn op(self) -> Op {
        match self {
            Act::Relu => Op::Model(ModelOp::Relu),
            Act::Relu6 => Op::Model(ModelOp::Relu6),
            Act::Sigmoid => Op::Model(ModelOp::Sigmoid),
            Act::Tanh => Op::Model(ModelOp::Tanh),
            Act::Softmax => Op::Model(ModelOp::Softmax),
            Act::HardSwish => Op::Model(ModelOp::HardSwish),
            Act::LeakyRelu(a) => Op::Model(ModelOp::LeakyRelu { alpha: F32(a) }),
        }
    }
}

/// Keras' kernel initializers the builders use (recorded in the graph, so a `.qir`
/// initializes as the builder did).
pub use crate::ir::graph::Initializer as KernelInit;

/// One Keras layer's configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// Keras' Conv2D: a `conv2d` node with kernel param `[filters, kh, kw, in]` (OHWI) and,
    /// with `use_bias`, bias `[filters]`.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// `[kh, kw]` kernel size.
        kernel: [usize; 2],
        /// Stride, padding and dilation (its `activation` stays `None`; see `act`).
        conv: ConvAttrs,
        /// Whether a zero-initialized bias param is added.
        use_bias: bool,
        /// An activation added as a separate node after the conv; `None` for linear.
        act: Option<Act>,
        /// How the kernel starts (Keras' `kernel_initializer`).
        init: KernelInit,
    },
    /// Keras' DepthwiseConv2D: kernel param `[1, kh, kw, in · multiplier]`, bias
    /// `[in · multiplier]`.
    DepthwiseConv2d {
        /// `[kh, kw]` kernel size.
        kernel: [usize; 2],
        /// Output channels per input channel (Keras' `depth_multiplier`).
        multiplier: usize,
        /// Stride, padding and dilation (its `activation` stays `None`; see `act`).
        conv: ConvAttrs,
        /// Whether a zero-initialized bias param is added.
        use_bias: bool,
        /// An activation added as a separate node after the conv; `None` for linear.
        act: Option<Act>,
        /// How the kernel starts (Keras' `kernel_initializer`).
        init: KernelInit,
    },
    /// Keras' Conv2DTranspose: kernel param `[filters, kh, kw, in]` (OHWI, TFLite's
    /// `TRANSPOSE_CONV` layout), bias `[filters]`.
    Conv2dTranspose {
        /// Output channels.
        filters: usize,
        /// `[kh, kw]` kernel size.
        kernel: [usize; 2],
        /// Stride, padding and dilation (its `activation` stays `None`; see `act`).
        conv: ConvAttrs,
        /// Whether a zero-initialized bias param is added.
        use_bias: bool,
        /// An activation added as a separate node after the conv; `None` for linear.
        act: Option<Act>,
        /// How the kernel starts (Keras' `kernel_initializer`).
        init: KernelInit,
    },
    /// Keras' Dense on the last axis: kernel param `[units, in]`, bias `[units]`.
    Dense {
        /// Output features.
        units: usize,
        /// Whether a zero-initialized bias param is added.
        use_bias: bool,
        /// An activation added as a separate node after the matmul; `None` for linear.
        act: Option<Act>,
        /// How the kernel starts (Keras' `kernel_initializer`).
        init: KernelInit,
    },
    /// Keras' BatchNormalization over the last (channel) axis, with params gamma, beta,
    /// moving_mean and moving_variance of shape `[c]`.
    BatchNorm {
        /// Added to the variance before the square root.
        epsilon: f32,
        /// Weight of the old value when training updates the moving statistics.
        momentum: f32,
    },
    /// A standalone activation layer (`re_lu`, `leaky_re_lu`, `softmax` or `activation`).
    Activation(Act),
    /// Keras' PReLU (`p_re_lu`): a learned slope below zero, param `alpha` of one sample's
    /// shape with the `shared_axes` (numbered from 1, without the batch) set to 1; zeros at
    /// first, as Keras initializes it.
    PRelu {
        /// Axes that share one slope (`[1, 2]`: one slope per channel of an image).
        shared_axes: Vec<usize>,
    },
    /// Keras' MaxPooling2D over H and W of an NHWC input.
    MaxPool(PoolAttrs),
    /// Keras' AveragePooling2D over H and W of an NHWC input.
    AvgPool(PoolAttrs),
    /// Mean over H and W: `[n, h, w, c] -> [n, c]`.
    GlobalAvgPool,
    /// Maximum over H and W: `[n, h, w, c] -> [n, c]`.
    GlobalMaxPool,
    /// `[n, ...] -> [n, prod(...)]`.
    Flatten,
    /// Keras' Reshape: the per-sample target shape (batch excluded), one entry may be -1.
    Reshape(Vec<i64>),
    /// Keras' Dropout with this drop rate (identity at inference).
    Dropout(f32),
    /// Keras' ZeroPadding2D: `[[top, bottom], [left, right]]` zero rows and columns.
    ZeroPadding([[usize; 2]; 2]),
    /// Keras' Cropping2D: `[[top, bottom], [left, right]]` rows and columns removed.
    Cropping([[usize; 2]; 2]),
    /// Keras' UpSampling2D (nearest): `[h, w]` integer factors.
    UpSampling([usize; 2]),
    /// Keras' Permute: a permutation of the non-batch axes, numbered from 1.
    Permute(Vec<usize>),
}

impl Layer {
    /// A Conv2D with `filters` output channels and a square `kernel × kernel` window; stride 1,
    /// `valid` padding, bias, no activation (Keras' defaults).
    pub fn conv2d(filters: usize, kernel: usize) -> Layer {
        Layer::Conv2d {
            filters,
            kernel: [kernel, kernel],
            conv: ConvAttrs::default(),
            use_bias: true,
            act: None,
            init: KernelInit::GlorotUniform,
        }
    }

    /// A DepthwiseConv2D with a square `kernel × kernel` window, multiplier 1, stride 1, `valid`
    /// padding, bias, no activation.
    pub fn depthwise_conv2d(kernel: usize) -> Layer {
        Layer::DepthwiseConv2d {
            kernel: [kernel, kernel],
            multiplier: 1,
            conv: ConvAttrs::default(),
            use_bias: true,
            act: None,
            init: KernelInit::GlorotUniform,
        }
    }

    /// A Conv2DTranspose with `filters` output channels and a square `kernel × kernel` window;
    /// stride 1, `valid` padding, bias, no activation.
    pub fn conv2d_transpose(filters: usize, kernel: usize) -> Layer {
        Layer::Conv2dTranspose {
            filters,
            kernel: [kernel, kernel],
            conv: ConvAttrs::default(),
            use_bias: true,
            act: None,
            init: KernelInit::GlorotUniform,
        }
    }

    /// A Dense layer with `units` outputs over the last axis, with bias and no activation.
    pub fn dense(units: usize) -> Layer {
        Layer::Dense {
            units,
            use_bias: true,
            act: None,
            init: KernelInit::GlorotUniform,
        }
    }

    /// The same conv with a `kh × kw` window (Keras' `kernel_size=(kh, kw)`).
    pub fn kernel_size(mut self, kh: usize, kw: usize) -> Layer {
        match &mut self {
            Layer::Conv2d { kernel, .. }
            | Layer::DepthwiseConv2d { kernel, .. }
            | Layer::Conv2dTranspose { kernel, .. } => *kernel = [kh, kw],
            _ => {}
        }
        self
    }

    /// The same layer with its kernel started by `he_normal` (Keras'
    /// `kernel_initializer="he_normal"`).
    pub fn he_normal(mut self) -> Layer {
        match &mut self {
            Layer::Conv2d { init, .. }
            | Layer::DepthwiseConv2d { init, .. }
            | Layer::Conv2dTranspose { init, .. }
            | Layer::Dense { init, .. } => *init = KernelInit::HeNormal,
            _ => {}
        }
        self
    }

    /// Keras' BatchNormalization defaults: epsilon 1e-3, momentum 0.99.
    pub fn batch_norm() -> Layer {
        Layer::BatchNorm {
            epsilon: 1e-3,
            momentum: 0.99,
        }
    }

    /// A standalone ReLU layer (Keras' `ReLU`, named `re_lu`).
    pub fn relu() -> Layer {
        Layer::Activation(Act::Relu)
    }

    /// A standalone ReLU6 layer (Keras' `ReLU(max_value=6)`, named `re_lu`).
    pub fn relu6() -> Layer {
        Layer::Activation(Act::Relu6)
    }

    /// Keras' `PReLU(shared_axes=[1, 2])` on an image: one learned slope per channel.
    pub fn prelu_per_channel() -> Layer {
        Layer::PRelu {
            shared_axes: vec![1, 2],
        }
    }

    /// A `size × size` max pool with stride `size` and `valid` padding (Keras' defaults).
    pub fn max_pool(size: usize) -> Layer {
        Layer::MaxPool(PoolAttrs {
            size: [size, size],
            stride: [size, size],
            padding: Padding::Valid,
        })
    }

    /// A `size × size` average pool with stride `size` and `valid` padding (Keras' defaults).
    pub fn avg_pool(size: usize) -> Layer {
        Layer::AvgPool(PoolAttrs {
            size: [size, size],
            stride: [size, size],
            padding: Padding::Valid,
        })
    }

    /// Keras' Flatten: `[n, ...] -> [n, prod(...)]`.
    pub fn flatten() -> Layer {
        Layer::Flatten
    }

    fn conv_mut(&mut self) -> Option<&mut ConvAttrs> {
        match self {
            Layer::Conv2d { conv, .. }
            | Layer::DepthwiseConv2d { conv, .. }
            | Layer::Conv2dTranspose { conv, .. } => Some(conv),
            _ => None,
        }
    }

    /// Sets the stride of a conv-like layer or a pool.
    pub fn stride(mut self, s: usize) -> Layer {
        match &mut self {
            Layer::MaxPool(p) | Layer::AvgPool(p) => p.stride = [s, s],
            other => {
                if let Some(c) = other.conv_mut() {
                    c.stride = [s, s]
                }
            }
        }
        self
    }

    /// `padding="same"` for a conv-like layer or a pool.
    pub fn same(mut self) -> Layer {
        match &mut self {
            Layer::MaxPool(p) | Layer::AvgPool(p) => p.padding = Padding::Same,
            other => {
                if let Some(c) = other.conv_mut() {
                    c.padding = Padding::Same
                }
            }
        }
        self
    }

    /// Sets the `[d, d]` dilation rate of a conv-like layer; other layers are unchanged.
    pub fn dilation(mut self, d: usize) -> Layer {
        if let Some(c) = self.conv_mut() {
            c.dilation = [d, d];
        }
        self
    }

    /// `use_bias=False`.
    pub fn no_bias(mut self) -> Layer {
        match &mut self {
            Layer::Conv2d { use_bias, .. }
            | Layer::DepthwiseConv2d { use_bias, .. }
            | Layer::Conv2dTranspose { use_bias, .. }
            | Layer::Dense { use_bias, .. } => *use_bias = false,
            _ => {}
        }
        self
    }

    /// Sets the depth multiplier of a depthwise conv (output channels `in · m`); other layers
    /// are unchanged.
    pub fn depth_multiplier(mut self, m: usize) -> Layer {
        if let Layer::DepthwiseConv2d { multiplier, .. } = &mut self {
            *multiplier = m;
        }
        self
    }

    /// Keras' `activation=` argument of a conv or dense layer.
    pub fn activation(mut self, a: Act) -> Layer {
        match &mut self {
            Layer::Conv2d { act, .. }
            | Layer::DepthwiseConv2d { act, .. }
            | Layer::Conv2dTranspose { act, .. }
            | Layer::Dense { act, .. } => *act = Some(a),
            _ => {}
        }
        self
    }
}

/// Builds graphs layer by layer, Keras-Functional style.
pub struct Functional {
    graph: Graph,
    params: ParamStore,
    rng: ChaCha8Rng,
    counters: HashMap<&'static str, usize>,
    next_name: Option<String>,
}

impl Functional {
    /// An empty graph named `name`; `seed` seeds the ChaCha8 generator that draws every
    /// Glorot-uniform kernel, so the same seed and layers give the same weights.
    pub fn new(name: &str, seed: u64) -> Functional {
        Functional {
            graph: Graph::new(name),
            params: ParamStore::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            counters: HashMap::new(),
            next_name: None,
        }
    }

    /// Names the next layer (or add) `name`, as Keras' `name=` argument does.
    pub fn named(&mut self, name: &str) -> &mut Functional {
        self.next_name = Some(name.to_string());
        self
    }

    /// Keras' automatic layer names: `conv2d`, `conv2d_1`, `conv2d_2`, … (or the name
    /// [`Functional::named`] set for the next layer).
    fn layer_name(&mut self, base: &'static str) -> String {
        if let Some(name) = self.next_name.take() {
            return name;
        }
        let c = self.counters.entry(base).or_insert(0);
        let name = if *c == 0 {
            base.to_string()
        } else {
            format!("{base}_{c}")
        };
        *c += 1;
        name
    }

    /// An input with per-sample shape `shape` (batch 1; see [`Graph::rebatch`]).
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<NodeId> {
        let mut full = vec![1];
        full.extend_from_slice(shape);
        self.graph.add_input(name, TensorType::f32(full))
    }

    fn shape(&self, x: NodeId) -> Vec<usize> {
        self.graph.node(x).ty.shape.clone()
    }

    /// The shape of node `x` (batch 1 first).
    pub fn shape_of(&self, x: NodeId) -> Vec<usize> {
        self.shape(x)
    }

    fn new_param(&mut self, name: String, t: Tensor) -> Result<NodeId> {
        let ty = TensorType::f32(t.shape.clone());
        self.params.insert(name.clone(), t);
        self.graph.param(name, ty)
    }

    /// Keras' initial kernel of `op` (`init` with the op's fans), or an error if `op` has no
    /// kernel of that shape.
    fn kernel(
        &mut self,
        op: &Op,
        shape: Vec<usize>,
        in_channels: usize,
        init: KernelInit,
    ) -> Result<Tensor> {
        let (fan_in, fan_out) = kernel_fans(op, &shape, in_channels).ok_or_else(|| {
            crate::Error::Usage(format!("{} has no kernel of shape {shape:?}", op.name()))
        })?;
        Ok(match init {
            KernelInit::GlorotUniform => self.glorot(shape, fan_in, fan_out),
            KernelInit::HeNormal => self.he_normal(shape, fan_in),
        })
    }

    /// Keras' `he_normal`: truncated at two standard deviations, whose spread it corrects.
    fn he_normal(&mut self, shape: Vec<usize>, fan_in: usize) -> Tensor {
        // the standard deviation of a unit normal truncated to [-2, 2]
        const TRUNCATED_STD: f64 = 0.879_625_661_034_239_8;
        let std = (2.0 / fan_in.max(1) as f64).sqrt() / TRUNCATED_STD;
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| loop {
                // Box-Muller, rejecting beyond two standard deviations
                let u1: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
                let u2: f64 = self.rng.random_range(0.0..1.0);
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                if z.abs() <= 2.0 {
                    break (z * std) as f32;
                }
            })
            .collect();
        Tensor::new(shape, data)
    }

    /// Glorot (Xavier) uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)).
    fn glorot(&mut self, shape: Vec<usize>, fan_in: usize, fan_out: usize) -> Tensor {
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| self.rng.random_range(-limit..limit))
            .collect();
        Tensor::new(shape, data)
    }

    fn act(&mut self, x: NodeId, layer: &str, act: Option<Act>) -> Result<NodeId> {
        match act {
            None => Ok(x),
            Some(a) => {
                let op = a.op();
                let name = format!("{layer}.{}", op.name());
                self.graph.add(op, name, &[x])
            }
        }
    }

    /// Applies one layer.
    pub fn layer(&mut self, x: NodeId, layer: Layer) -> Result<NodeId> {
        let xs = self.shape(x);
        match layer {
            Layer::Conv2d {
                filters,
                kernel,
                conv,
                use_bias,
                act,
                init,
            } => {
                let name = self.layer_name("conv2d");
                let cin = *xs.last().unwrap_or(&0);
                let op = Op::Model(ModelOp::Conv2d(conv));
                let k = self.kernel(&op, vec![filters, kernel[0], kernel[1], cin], cin, init)?;
                self.conv_like(x, op, name, k, filters, use_bias, act, init)
            }
            Layer::DepthwiseConv2d {
                kernel,
                multiplier,
                conv,
                use_bias,
                act,
                init,
            } => {
                let name = self.layer_name("depthwise_conv2d");
                let cin = *xs.last().unwrap_or(&0);
                let op = Op::Model(ModelOp::DepthwiseConv2d(conv));
                let shape = vec![1, kernel[0], kernel[1], cin * multiplier];
                let k = self.kernel(&op, shape, cin, init)?;
                self.conv_like(x, op, name, k, cin * multiplier, use_bias, act, init)
            }
            Layer::Conv2dTranspose {
                filters,
                kernel,
                conv,
                use_bias,
                act,
                init,
            } => {
                let name = self.layer_name("conv2d_transpose");
                let cin = *xs.last().unwrap_or(&0);
                let op = Op::Model(ModelOp::Conv2dTranspose(conv));
                let k = self.kernel(&op, vec![filters, kernel[0], kernel[1], cin], cin, init)?;
                self.conv_like(x, op, name, k, filters, use_bias, act, init)
            }
            Layer::Dense {
                units,
                use_bias,
                act,
                init,
            } => {
                let name = self.layer_name("dense");
                let fan_in = *xs.last().unwrap_or(&0);
                let op = Op::Model(ModelOp::Dense {
                    activation: Activation::None,
                });
                let k = self.kernel(&op, vec![units, fan_in], fan_in, init)?;
                self.conv_like(x, op, name, k, units, use_bias, act, init)
            }
            Layer::BatchNorm { epsilon, momentum } => {
                let name = self.layer_name("batch_normalization");
                let c = *xs.last().unwrap_or(&0);
                let mut ops = vec![x];
                for (p, v) in [
                    ("gamma", 1.0),
                    ("beta", 0.0),
                    ("moving_mean", 0.0),
                    ("moving_variance", 1.0),
                ] {
                    ops.push(self.new_param(format!("{name}.{p}"), Tensor::full(vec![c], v))?);
                }
                let op = Op::Model(ModelOp::BatchNorm {
                    epsilon: F32(epsilon),
                    momentum: F32(momentum),
                });
                self.graph.add(op, name, &ops)
            }
            Layer::Activation(a) => {
                let base = match a {
                    Act::Relu | Act::Relu6 => "re_lu",
                    Act::LeakyRelu(_) => "leaky_re_lu",
                    Act::Softmax => "softmax",
                    _ => "activation",
                };
                let name = self.layer_name(base);
                self.graph.add(a.op(), name, &[x])
            }
            Layer::PRelu { shared_axes } => {
                let name = self.layer_name("p_re_lu");
                let mut shape = xs.get(1..).unwrap_or_default().to_vec();
                for &a in &shared_axes {
                    match shape.get_mut(a.wrapping_sub(1)) {
                        Some(d) => *d = 1,
                        None => {
                            return Err(crate::Error::Usage(format!(
                                "{name}: shared axis {a} is not an axis of one sample {:?} \
                                 (axes are numbered from 1, without the batch)",
                                &xs[1..]
                            )))
                        }
                    }
                }
                let alpha = self.new_param(format!("{name}.alpha"), Tensor::zeros(shape))?;
                self.graph.add(Op::Model(ModelOp::PRelu), name, &[x, alpha])
            }
            Layer::MaxPool(p) => {
                let name = self.layer_name("max_pooling2d");
                self.graph.add(Op::Model(ModelOp::MaxPool2d(p)), name, &[x])
            }
            Layer::AvgPool(p) => {
                let name = self.layer_name("average_pooling2d");
                self.graph.add(Op::Model(ModelOp::AvgPool2d(p)), name, &[x])
            }
            Layer::GlobalAvgPool => {
                let name = self.layer_name("global_average_pooling2d");
                self.graph.add(
                    Op::Model(ModelOp::GlobalAvgPool { keepdims: false }),
                    name,
                    &[x],
                )
            }
            Layer::GlobalMaxPool => {
                let name = self.layer_name("global_max_pooling2d");
                self.graph.add(
                    Op::Model(ModelOp::GlobalMaxPool { keepdims: false }),
                    name,
                    &[x],
                )
            }
            Layer::Flatten => {
                let name = self.layer_name("flatten");
                self.graph.add(Op::Model(ModelOp::Flatten), name, &[x])
            }
            Layer::Reshape(shape) => {
                let name = self.layer_name("reshape");
                self.graph
                    .add(Op::Model(ModelOp::Reshape { shape }), name, &[x])
            }
            Layer::Dropout(rate) => {
                let name = self.layer_name("dropout");
                self.graph
                    .add(Op::Model(ModelOp::Dropout { rate: F32(rate) }), name, &[x])
            }
            Layer::ZeroPadding(p) => {
                let name = self.layer_name("zero_padding2d");
                let pads = vec![[0, 0], p[0], p[1], [0, 0]];
                self.graph.add(Op::Model(ModelOp::Pad { pads }), name, &[x])
            }
            Layer::Cropping(c) => {
                let name = self.layer_name("cropping2d");
                let crops = vec![[0, 0], c[0], c[1], [0, 0]];
                self.graph
                    .add(Op::Model(ModelOp::Crop { crops }), name, &[x])
            }
            Layer::UpSampling(scale) => {
                let name = self.layer_name("up_sampling2d");
                self.graph
                    .add(Op::Model(ModelOp::UpsampleNearest { scale }), name, &[x])
            }
            Layer::Permute(dims) => {
                // Keras' Permute numbers axes from 1, without the batch
                let name = self.layer_name("permute");
                let mut perm = vec![0];
                perm.extend(dims);
                self.graph
                    .add(Op::Model(ModelOp::Transpose { perm }), name, &[x])
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_like(
        &mut self,
        x: NodeId,
        op: Op,
        name: String,
        kernel: Tensor,
        out_channels: usize,
        use_bias: bool,
        act: Option<Act>,
        init: KernelInit,
    ) -> Result<NodeId> {
        let kname = format!("{name}.kernel");
        let k = self.new_param(kname.clone(), kernel)?;
        self.graph.set_initializer(&kname, init)?;
        let mut operands = vec![x, k];
        if use_bias {
            operands
                .push(self.new_param(format!("{name}.bias"), Tensor::zeros(vec![out_channels]))?);
        }
        let y = self.graph.add(op, name.clone(), &operands)?;
        self.act(y, &name, act)
    }

    /// Elementwise `a + b` (Keras' Add).
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let name = self.layer_name("add");
        self.graph.add(
            Op::Model(ModelOp::Add {
                activation: Activation::None,
            }),
            name,
            &[a, b],
        )
    }

    /// Elementwise `a - b` (Keras' Subtract).
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let name = self.layer_name("subtract");
        self.graph.add(
            Op::Model(ModelOp::Sub {
                activation: Activation::None,
            }),
            name,
            &[a, b],
        )
    }

    /// Elementwise `a * b` (Keras' Multiply).
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let name = self.layer_name("multiply");
        self.graph.add(
            Op::Model(ModelOp::Mul {
                activation: Activation::None,
            }),
            name,
            &[a, b],
        )
    }

    /// Concatenation along `axis` (Keras' Concatenate, default the last axis).
    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId> {
        let name = self.layer_name("concatenate");
        self.graph
            .add(Op::Model(ModelOp::Concat { axis }), name, xs)
    }

    /// Marks `x` as a graph output named `name`.
    pub fn output(&mut self, name: &str, x: NodeId) {
        self.graph.add_output(name, x);
    }

    /// The graph and weights built so far, verified.
    pub fn build(self) -> Result<Model> {
        crate::ir::verify::verify_with_params(&self.graph, &self.params)?;
        Ok(Model {
            graph: self.graph,
            params: self.params,
        })
    }
}

/// Keras' Glorot fans `(fan_in, fan_out)` of `op`'s kernel of shape `kernel` (TFLite
/// layouts) reading `in_channels` channels; `None` for an op without such a kernel.
fn kernel_fans(op: &Op, kernel: &[usize], in_channels: usize) -> Option<(usize, usize)> {
    match (op.as_model()?, kernel) {
        (ModelOp::Conv2d(_), &[o, kh, kw, i]) => Some((kh * kw * i, kh * kw * o)),
        (ModelOp::Conv2dTranspose(_), &[o, kh, kw, i]) => Some((kh * kw * o, kh * kw * i)),
        (ModelOp::DepthwiseConv2d(_), &[_, kh, kw, cm]) => {
            Some((kh * kw * in_channels, kh * kw * (cm / in_channels.max(1))))
        }
        (ModelOp::Dense { .. }, &[units, fan_in]) => Some((fan_in, units)),
        _ => None,
    }
}

/// Keras' default initializer of a weight operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    /// Glorot-uniform from the kernel's fans.
    Glorot,
    Zeros,
    Ones,
}

/// Keras' default initializer of operand `operand` of `op`, when that operand is a weight
/// Keras creates (kernels, biases, BatchNorm's four vectors).
fn default_init(op: &ModelOp, operand: usize) -> Option<Init> {
    use ModelOp::*;
    match op {
        Conv2d(_) | DepthwiseConv2d(_) | Conv2dTranspose(_) | Dense { .. } => match operand {
            1 => Some(Init::Glorot),
            2 => Some(Init::Zeros),
            _ => None,
        },
        // gamma, beta, moving mean, moving variance
        BatchNorm { .. } => match operand {
            1 | 4 => Some(Init::Ones),
            2 | 3 => Some(Init::Zeros),
            _ => None,
        },
        // Keras' PReLU starts as a plain ReLU
        PRelu => (operand == 1).then_some(Init::Zeros),
        Input
        | Param
        | Relu
        | Relu6
        | LeakyRelu { .. }
        | ThresholdedRelu { .. }
        | HardSwish
        | Sigmoid
        | Tanh
        | Softmax
        | Add { .. }
        | Sub { .. }
        | Mul { .. }
        | Concat { .. }
        | MaxPool2d(_)
        | AvgPool2d(_)
        | GlobalAvgPool { .. }
        | GlobalMaxPool { .. }
        | Mean(_)
        | Reshape { .. }
        | Flatten
        | Transpose { .. }
        | Pad { .. }
        | Crop { .. }
        | UpsampleNearest { .. }
        | Dropout { .. }
        | FakeQuant(_) => None,
    }
}

/// Keras' default initial values for the params of a graph that has none yet (a `.qir`
/// written by hand or by another tool): Glorot-uniform kernels of `conv2d`,
/// `depthwise_conv2d`, `conv2d_transpose` and `dense`, zero biases, BatchNorm gamma 1 /
/// beta 0 / moving mean 0 / moving variance 1. Kernels are drawn in the graph's canonical
/// order from the same seeded generator the builders use, so a builder's model printed as
/// `.qir` and initialized here gets the builder's weights back.
///
/// A param with no default (a constant operand of `add`, say) is an error naming it.
pub fn init_params(graph: &Graph, seed: u64) -> Result<ParamStore> {
    // checked before anything is allocated: a declared shape is only a claim
    let mut total = 0usize;
    for (name, id) in graph.params() {
        let n = graph
            .node(id)
            .ty
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        total = match n.and_then(|n| total.checked_add(n)) {
            Some(t) if t <= MAX_INIT_ELEMENTS => t,
            _ => {
                return Err(crate::Error::param(
                    &name,
                    format!(
                        "the params declared so far hold more than {MAX_INIT_ELEMENTS} values \
                         (2 GiB of f32, more than a TFLite file can hold); check the shapes"
                    ),
                ))
            }
        };
    }
    let mut f = Functional::new(&graph.name, seed);
    let mut params = ParamStore::new();
    for id in graph.canonical_order() {
        let node = graph.node(id);
        let operands = graph.operands(id);
        let shape = |i: usize| graph.node(operands[i]).ty.shape.clone();
        for (i, &p) in operands.iter().enumerate() {
            let pn = graph.node(p);
            if !pn.op.is_param() || params.contains(&pn.name) {
                continue;
            }
            let ps = pn.ty.shape.clone();
            let init = node.op.as_model().and_then(|op| default_init(op, i));
            let init = match init {
                Some(Init::Glorot) => {
                    let cin = *shape(0).last().unwrap_or(&1);
                    let init = graph.initializer(&pn.name);
                    kernel_fans(&node.op, &ps, cin).map(|(fan_in, fan_out)| match init {
                        KernelInit::GlorotUniform => f.glorot(ps, fan_in, fan_out),
                        KernelInit::HeNormal => f.he_normal(ps, fan_in),
                    })
                }
                Some(Init::Zeros) => Some(Tensor::zeros(ps)),
                Some(Init::Ones) => Some(Tensor::full(ps, 1.0)),
                None => None,
            };
            let t = init.ok_or_else(|| {
                crate::Error::param(
                    &pn.name,
                    format!(
                        "operand {i} of `{}` ({}) has no default initial value; give the \
                         weights in a .safetensors file beside the .qir",
                        node.name,
                        node.op.name()
                    ),
                )
            })?;
            params.insert(pn.name.clone(), t);
        }
    }
    Ok(params)
}

/// The most weight values [`init_params`] creates for one graph (2^29, 2 GiB of f32: a
/// TFLite flatbuffer cannot hold more).
pub const MAX_INIT_ELEMENTS: usize = 1 << 29;

/// A linear stack of layers (Keras' Sequential) with one input and one output.
pub struct Sequential {
    f: Functional,
    x: Result<NodeId>,
}

impl Sequential {
    /// A stack on an input of per-sample shape `input_shape`, weights seeded by `seed`.
    pub fn new(name: &str, input_shape: &[usize], seed: u64) -> Sequential {
        let mut f = Functional::new(name, seed);
        let x = f.input("input", input_shape);
        Sequential { f, x }
    }

    /// Appends a layer (errors surface in [`Sequential::build`]).
    #[allow(clippy::should_implement_trait)] // Keras' name for it: Sequential.add(layer)
    pub fn add(mut self, layer: Layer) -> Sequential {
        self.x = match self.x {
            Ok(x) => self.f.layer(x, layer),
            Err(e) => Err(e),
        };
        self
    }

    /// Marks the last layer's result as the output `output` and verifies the graph; the first
    /// error of any layer added surfaces here.
    pub fn build(mut self) -> Result<Model> {
        let x = self.x?;
        self.f.output("output", x);
        self.f.build()
    }
}
