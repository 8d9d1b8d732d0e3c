//! The reference models of `../shared/bench` (TFMOT's side of the comparison), built with
//! the Keras-style builder. `examples/<name>.qir` holds the same graphs as text; a test
//! checks that both give identical IR.

use crate::error::{Error, Result};
use crate::ir::builder::{Act, Functional, Layer, Model, Sequential};
use crate::ir::graph::NodeId;

/// The names [`by_name`] knows.
pub const NAMES: &[&str] = &["mnist_cnn", "mbv2_tiny"];

/// A reference model by name, initialized with `seed`.
pub fn by_name(name: &str, seed: u64) -> Result<Model> {
    match name {
        "mnist_cnn" => mnist_cnn(seed),
        "mbv2_tiny" => mbv2_tiny(seed),
        other => Err(Error::Usage(format!(
            "unknown model `{other}`: use one of {} or a .qir/.tflite file",
            NAMES.join(", ")
        ))),
    }
}

/// TFMOT's own QAT example: Conv2D(12, 3x3, ReLU) -> MaxPool 2 -> Flatten -> Dense(10).
pub fn mnist_cnn(seed: u64) -> Result<Model> {
    Sequential::new("mnist_cnn", &[28, 28, 1], seed)
        .add(Layer::conv2d(12, 3).activation(Act::Relu))
        .add(Layer::max_pool(2))
        .add(Layer::flatten())
        .add(Layer::dense(10))
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
    let mut f = Functional::new("mbv2_tiny", seed);
    let x = f.input("input", &[28, 28, 1])?;
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
    let y = f.layer(h, Layer::dense(10))?;
    f.output("output", y);
    f.build()
}
