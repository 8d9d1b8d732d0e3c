//! The reference models of `../shared/bench` (TFMOT's side of the comparison) and the MLPerf
//! Tiny networks, built with the Keras-style builder with the Keras definitions' layer
//! names and initializers (`scripts/tfmot_models.py` builds the same models in Keras).
//! `examples/<name>.qir` holds the same graphs as text; a test checks that both give
//! identical IR. Like Keras applications, each takes its input shape and class count.

use crate::error::{Error, Result};
use crate::ir::builder::{Act, Functional, Layer, Model, Sequential};
use crate::ir::graph::NodeId;
use crate::ir::op::{Padding, PoolAttrs};

/// The names [`by_name`] knows.
pub const NAMES: &[&str] = &[
    "mnist_cnn",
    "mbv2_tiny",
    "resnet8",
    "ds_cnn",
    "mobilenet_v1_025",
    "mobilenet_v2_035",
];

/// A reference model's default input shape (`[h, w, c]`) and class count.
pub fn defaults(name: &str) -> Option<([usize; 3], usize)> {
    Some(match name {
        "mnist_cnn" | "mbv2_tiny" => ([28, 28, 1], 10),
        "resnet8" => ([32, 32, 3], 10),
        "ds_cnn" => ([49, 10, 1], 12),
        "mobilenet_v1_025" | "mobilenet_v2_035" => ([96, 96, 3], 2),
        _ => return None,
    })
}

/// A reference model by name, initialized with `seed`, at its default input shape.
pub fn by_name(name: &str, seed: u64) -> Result<Model> {
    build(name, seed, None, None)
}

/// A reference model by name for input shape `input` (`[h, w, c]`) and `classes` classes
/// (the model's defaults when `None`), initialized with `seed`.
pub fn build(
    name: &str,
    seed: u64,
    input: Option<&[usize]>,
    classes: Option<usize>,
) -> Result<Model> {
    let Some((default_input, default_classes)) = defaults(name) else {
        return Err(Error::Usage(format!(
            "unknown model `{name}`: use one of {} or a .keras, .h5, .qir or float .tflite file",
            NAMES.join(", ")
        )));
    };
    let input = input.unwrap_or(&default_input);
    let classes = classes.unwrap_or(default_classes);
    if input.len() != 3 || input.contains(&0) || classes == 0 {
        return Err(Error::Usage(format!(
            "{name}: the input shape must be H,W,C of positive sizes and the classes at least \
             1, found {input:?} and {classes}"
        )));
    }
    let [h, w, c] = [input[0], input[1], input[2]];
    let m = match name {
        "mnist_cnn" => mnist_cnn_for([h, w, c], classes, seed),
        "mbv2_tiny" => mbv2_tiny_for([h, w, c], classes, seed),
        "resnet8" => resnet8([h, w, c], classes, seed),
        "ds_cnn" => ds_cnn([h, w, c], classes, seed),
        "mobilenet_v1_025" => mobilenet_v1_025([h, w, c], classes, seed),
        _ => mobilenet_v2_035([h, w, c], classes, seed),
    };
    m.map_err(|e| Error::Usage(format!("{name} at input {h},{w},{c}: {e}")))
}

/// TFMOT's own QAT example: Conv2D(12, 3x3, ReLU) -> MaxPool 2 -> Flatten -> Dense(10).
pub fn mnist_cnn(seed: u64) -> Result<Model> {
    mnist_cnn_for([28, 28, 1], 10, seed)
}

fn mnist_cnn_for(input: [usize; 3], classes: usize, seed: u64) -> Result<Model> {
    Sequential::new("mnist_cnn", &input, seed)
        .add(Layer::conv2d(12, 3).activation(Act::Relu))
        .add(Layer::max_pool(2))
        .add(Layer::flatten())
        .add(Layer::dense(classes))
        .build()
}

/// One MobileNetV2 inverted residual block: 1x1 expand x4 + BN + ReLU6, 3x3 depthwise +
/// BN + ReLU6, 1x1 project + BN, and a residual add when the shape is kept.
fn inverted_residual(
    f: &mut Functional,
    x: NodeId,
    cin: usize,
    cout: usize,
    stride: usize,
) -> Result<NodeId> {
    let h = f.layer(x, Layer::conv2d(cin * 4, 1).no_bias())?;
    let h = f.layer(h, Layer::batch_norm())?;
    let h = f.layer(h, Layer::relu6())?;
    let h = f.layer(
        h,
        Layer::depthwise_conv2d(3).stride(stride).same().no_bias(),
    )?;
    let h = f.layer(h, Layer::batch_norm())?;
    let h = f.layer(h, Layer::relu6())?;
    let h = f.layer(h, Layer::conv2d(cout, 1).no_bias())?;
    let h = f.layer(h, Layer::batch_norm())?;
    if stride == 1 && cin == cout {
        f.add(x, h)
    } else {
        Ok(h)
    }
}

/// A small MobileNetV2-style model: Conv+BN+ReLU6, three inverted residual blocks
/// (16->16, 16->24 stride 2, 24->24), Conv 1x1 64 + BN + ReLU6, global average pool, Dense(10).
pub fn mbv2_tiny(seed: u64) -> Result<Model> {
    mbv2_tiny_for([28, 28, 1], 10, seed)
}

fn mbv2_tiny_for(input: [usize; 3], classes: usize, seed: u64) -> Result<Model> {
    let mut f = Functional::new("mbv2_tiny", seed);
    let x = f.input("input", &input)?;
    let h = f.layer(x, Layer::conv2d(16, 3).stride(2).same().no_bias())?;
    let h = f.layer(h, Layer::batch_norm())?;
    let h = f.layer(h, Layer::relu6())?;
    let h = inverted_residual(&mut f, h, 16, 16, 1)?;
    let h = inverted_residual(&mut f, h, 16, 24, 2)?;
    let h = inverted_residual(&mut f, h, 24, 24, 1)?;
    let h = f.layer(h, Layer::conv2d(64, 1).no_bias())?;
    let h = f.layer(h, Layer::batch_norm())?;
    let h = f.layer(h, Layer::relu6())?;
    let h = f.layer(h, Layer::GlobalAvgPool)?;
    let y = f.layer(h, Layer::dense(classes))?;
    f.output("output", y);
    f.build()
}

/// BatchNormalization then ReLU (the MLPerf Tiny networks' `Activation("relu")`).
fn bn_relu(f: &mut Functional, x: NodeId) -> Result<NodeId> {
    let x = f.layer(x, Layer::batch_norm())?;
    f.layer(x, Layer::Activation(Act::Relu))
}

/// An average pool over a whole `[h, w]` map (or a `[h, w]` window), stride = window, valid.
fn avg_pool(size: [usize; 2]) -> Layer {
    Layer::AvgPool(PoolAttrs {
        size,
        stride: size,
        padding: Padding::Valid,
    })
}

/// The `[h, w]` of `x`'s NHWC shape.
fn spatial(f: &Functional, x: NodeId) -> [usize; 2] {
    let s = f.shape_of(x);
    [s[1], s[2]]
}

/// MLPerf Tiny image classification: ResNet-8 (`resnet_v1_eembc`), ~78k parameters at
/// 32x32x3. A 3x3 stem, three residual stacks of 16, 32 and 64 filters (stacks 2 and 3 start
/// with stride 2 and a 1x1 stride-2 projection shortcut without BatchNorm), an average pool
/// over the final map, Flatten, Dense. Convs `he_normal` with bias, BatchNorm and ReLU
/// between; the softmax of the Keras model is left to the loss.
pub fn resnet8(input: [usize; 3], classes: usize, seed: u64) -> Result<Model> {
    let mut f = Functional::new("resnet8", seed);
    let i = f.input("input_1", &input)?;
    // Keras' names (`conv2d_<k>` in creation order) given explicitly: the weights are drawn
    // in graph order, where a stack's shortcut (operand 0 of its add) comes first
    let conv = |f: &mut Functional, x, k: usize, filters, size, s| {
        let name = if k == 0 {
            "conv2d".to_string()
        } else {
            format!("conv2d_{k}")
        };
        f.named(&name)
            .layer(x, Layer::conv2d(filters, size).stride(s).same().he_normal())
    };
    let x = conv(&mut f, i, 0, 16, 3, 1)?;
    let mut x = bn_relu(&mut f, x)?;
    // stack 1: identity shortcut
    let y = conv(&mut f, x, 1, 16, 3, 1)?;
    let y = bn_relu(&mut f, y)?;
    let y = conv(&mut f, y, 2, 16, 3, 1)?;
    let y = f.layer(y, Layer::batch_norm())?;
    let a = f.add(x, y)?;
    x = f.layer(a, Layer::Activation(Act::Relu))?;
    // stacks 2, 3: stride-2 first conv, 1x1 stride-2 projection shortcut (Keras creates it
    // after the branch: conv2d_5 and conv2d_8)
    for (k, filters) in [(3, 32), (6, 64)] {
        let s = conv(&mut f, x, k + 2, filters, 1, 2)?;
        let y = conv(&mut f, x, k, filters, 3, 2)?;
        let y = bn_relu(&mut f, y)?;
        let y = conv(&mut f, y, k + 1, filters, 3, 1)?;
        let y = f.layer(y, Layer::batch_norm())?;
        let a = f.add(s, y)?;
        x = f.layer(a, Layer::Activation(Act::Relu))?;
    }
    let [h, w] = spatial(&f, x);
    let pool = h.min(w);
    let x = f.layer(x, avg_pool([pool, pool]))?;
    let x = f.layer(x, Layer::flatten())?;
    let y = f.layer(x, Layer::dense(classes).he_normal())?;
    f.output("dense", y);
    f.build()
}

/// MLPerf Tiny keyword spotting: DS-CNN (`keras_model.py` `ds_cnn`) on 49x10x1 MFCCs.
/// Conv2D(64, 10x4, stride 2, same) + BN + ReLU + Dropout(0.2), four depthwise-separable
/// blocks (3x3 depthwise + BN + ReLU, 64 1x1 + BN + ReLU), Dropout(0.4), an average pool of
/// `(H/2, W/2)` of the input (the reference code's pool), Flatten, Dense. Convs keep their
/// bias, all kernels `glorot_uniform`.
pub fn ds_cnn(input: [usize; 3], classes: usize, seed: u64) -> Result<Model> {
    let mut f = Functional::new("ds_cnn", seed);
    let i = f.input("input_1", &input)?;
    let x = f.layer(i, Layer::conv2d(64, 10).kernel_size(10, 4).stride(2).same())?;
    let x = bn_relu(&mut f, x)?;
    let mut x = f.layer(x, Layer::Dropout(0.2))?;
    for _ in 0..4 {
        let y = f.layer(x, Layer::depthwise_conv2d(3).same())?;
        let y = bn_relu(&mut f, y)?;
        let y = f.layer(y, Layer::conv2d(64, 1).same())?;
        x = bn_relu(&mut f, y)?;
    }
    let x = f.layer(x, Layer::Dropout(0.4))?;
    let x = f.layer(x, avg_pool([input[0] / 2, input[1] / 2]))?;
    let x = f.layer(x, Layer::flatten())?;
    let y = f.layer(x, Layer::dense(classes))?;
    f.output("dense", y);
    f.build()
}

/// (depthwise stride, filters of the following 1x1 conv) of MobileNetV1 α = 0.25's 13
/// depthwise-separable layers.
const MBV1_025: [(usize, usize); 13] = [
    (1, 16),
    (2, 32),
    (1, 32),
    (2, 64),
    (1, 64),
    (2, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (2, 256),
    (1, 256),
];

/// MLPerf Tiny visual wake words: MobileNetV1 α = 0.25 (`vww_model.py`) at 96x96x3.
/// Conv2D(8, 3x3, stride 2) + BN + ReLU, 13 depthwise-separable layers (3x3 depthwise + BN +
/// ReLU, 1x1 conv + BN + ReLU), an average pool over the final map, Flatten, Dense. Plain
/// ReLU, biases kept; 1x1 and stem convs `he_normal`, depthwise kernels `glorot_uniform`.
pub fn mobilenet_v1_025(input: [usize; 3], classes: usize, seed: u64) -> Result<Model> {
    let mut f = Functional::new("mobilenet_v1_025", seed);
    let i = f.input("input_1", &input)?;
    let x = f.layer(i, Layer::conv2d(8, 3).stride(2).same().he_normal())?;
    let mut x = bn_relu(&mut f, x)?;
    for (stride, filters) in MBV1_025 {
        let y = f.layer(x, Layer::depthwise_conv2d(3).stride(stride).same())?;
        let y = bn_relu(&mut f, y)?;
        let y = f.layer(y, Layer::conv2d(filters, 1).same().he_normal())?;
        x = bn_relu(&mut f, y)?;
    }
    let x = f.layer(x, avg_pool(spatial(&f, x)))?;
    let x = f.layer(x, Layer::flatten())?;
    let y = f.layer(x, Layer::dense(classes))?;
    f.output("dense", y);
    f.build()
}

/// Keras applications' `_make_divisible`: the nearest multiple of 8 (at least 8), one step
/// up if that lost more than 10%.
fn make_divisible(v: f64) -> usize {
    let r = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (r as f64) < 0.9 * v {
        r + 8
    } else {
        r
    }
}

/// (expansion, output channels at α = 1, stride) of MobileNetV2's 17 inverted residuals.
const MBV2_BLOCKS: [(usize, usize, usize); 17] = [
    (1, 16, 1),
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 2),
    (6, 32, 1),
    (6, 32, 1),
    (6, 64, 2),
    (6, 64, 1),
    (6, 64, 1),
    (6, 64, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 160, 2),
    (6, 160, 1),
    (6, 160, 1),
    (6, 320, 1),
];

/// MobileNetV2 α = 0.35 as `keras.applications.MobileNetV2(weights=None)` builds it, with
/// its layer names (`Conv1`, `block_3_expand_BN`, …): no conv biases, BatchNorm epsilon 1e-3
/// and momentum 0.999, ReLU6, stride-2 depthwise convs `valid` after a ZeroPadding2D of
/// `((h % 2, 1), (w % 2, 1))`, a 1280-channel last conv, global average pool and Dense. Also
/// builds below 32x32 and with one input channel (MNIST).
pub fn mobilenet_v2_035(input: [usize; 3], classes: usize, seed: u64) -> Result<Model> {
    const ALPHA: f64 = 0.35;
    let mut f = Functional::new("mobilenet_v2_035", seed);
    let i = f.input("input_1", &input)?;
    let bn = |f: &mut Functional, x, name: &str| {
        f.named(name).layer(
            x,
            Layer::BatchNorm {
                epsilon: 1e-3,
                momentum: 0.999,
            },
        )
    };
    let relu6 = |f: &mut Functional, x, name: &str| f.named(name).layer(x, Layer::relu6());
    let x = f.named("Conv1").layer(
        i,
        Layer::conv2d(make_divisible(32.0 * ALPHA), 3)
            .stride(2)
            .same()
            .no_bias(),
    )?;
    let x = bn(&mut f, x, "bn_Conv1")?;
    let mut x = relu6(&mut f, x, "Conv1_relu")?;
    for (id, (t, c, s)) in MBV2_BLOCKS.into_iter().enumerate() {
        let cin = *f.shape_of(x).last().unwrap_or(&0);
        let cout = make_divisible((c as f64 * ALPHA).trunc());
        let inp = x;
        let p = if id == 0 {
            "expanded_conv_".to_string()
        } else {
            format!("block_{id}_")
        };
        if id > 0 {
            let e = f
                .named(&format!("{p}expand"))
                .layer(x, Layer::conv2d(t * cin, 1).same().no_bias())?;
            let e = bn(&mut f, e, &format!("{p}expand_BN"))?;
            x = relu6(&mut f, e, &format!("{p}expand_relu"))?;
        }
        let dw = if s == 2 {
            let [h, w] = spatial(&f, x);
            x = f
                .named(&format!("{p}pad"))
                .layer(x, Layer::ZeroPadding([[h % 2, 1], [w % 2, 1]]))?;
            Layer::depthwise_conv2d(3).stride(2).no_bias()
        } else {
            Layer::depthwise_conv2d(3).same().no_bias()
        };
        let d = f.named(&format!("{p}depthwise")).layer(x, dw)?;
        let d = bn(&mut f, d, &format!("{p}depthwise_BN"))?;
        let d = relu6(&mut f, d, &format!("{p}depthwise_relu"))?;
        let o = f
            .named(&format!("{p}project"))
            .layer(d, Layer::conv2d(cout, 1).same().no_bias())?;
        x = bn(&mut f, o, &format!("{p}project_BN"))?;
        if cin == cout && s == 1 {
            x = f.named(&format!("{p}add")).add(inp, x)?;
        }
    }
    let x = f
        .named("Conv_1")
        .layer(x, Layer::conv2d(1280, 1).no_bias())?;
    let x = bn(&mut f, x, "Conv_1_bn")?;
    let x = relu6(&mut f, x, "out_relu")?;
    let x = f
        .named("global_average_pooling2d")
        .layer(x, Layer::GlobalAvgPool)?;
    let y = f.named("predictions").layer(x, Layer::dense(classes))?;
    f.output("predictions", y);
    f.build()
}
