//! Float `.tflite` models written the way the TFLite converter writes Keras models, built
//! with qatc's flatbuffer writer (there is no TensorFlow here to run the converter).

use super::uniform;
use qatc::tflite::model::{
    Data, ElemType, FusedActivation, Model, Operator, Options, PaddingMode, Signature, Tensor,
};
use qatc::tflite::schema::{BuiltinOperator as B, BuiltinOptions};
use qatc::tflite::write;

/// A little assembler for float `.tflite` models (shapes and tensor indices as the file
/// holds them, i32).
pub struct Asm {
    m: Model,
    seed: u64,
}

fn dims(shape: &[i32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

impl Asm {
    pub fn new() -> Asm {
        Asm {
            m: Model {
                description: "MLIR Converted.".into(),
                subgraph_name: "main".into(),
                ..Default::default()
            },
            seed: 1,
        }
    }

    fn push(&mut self, t: Tensor) -> i32 {
        self.m.tensors.push(t);
        self.m.tensors.len() as i32 - 1
    }

    /// A float activation tensor; its batch dimension is marked resizable.
    pub fn act(&mut self, name: &str, shape: &[i32]) -> i32 {
        let mut sig = shape.to_vec();
        if !sig.is_empty() {
            sig[0] = -1;
        }
        self.push(Tensor {
            signature: Some(sig),
            ..Tensor::new(name, dims(shape), ElemType::F32)
        })
    }

    pub fn weights(&mut self, name: &str, shape: &[i32]) -> i32 {
        let n: usize = shape.iter().map(|&d| d as usize).product();
        self.seed += 1;
        let t = uniform(&[n], -0.5, 0.5, self.seed);
        self.push(Tensor::constant(name, dims(shape), &Data::F32(t.data)))
    }

    pub fn ints(&mut self, name: &str, shape: &[i32], v: &[i32]) -> i32 {
        self.push(Tensor::constant(name, dims(shape), &Data::I32(v.to_vec())))
    }

    /// An int32 tensor computed by glue ops.
    fn int_act(&mut self, name: &str, shape: &[i32]) -> i32 {
        self.push(Tensor::new(name, dims(shape), ElemType::I32))
    }

    pub fn op(&mut self, code: B, inputs: &[i32], output: i32, options: Options) {
        let mut op = Operator::new(code, 1, &[], &[output as usize], options);
        op.inputs = inputs.iter().map(|&i| usize::try_from(i).ok()).collect();
        self.m.operators.push(op);
    }

    pub fn finish(mut self, input: i32, output: i32) -> Vec<u8> {
        let (input, output) = (input as usize, output as usize);
        self.m.inputs = vec![input];
        self.m.outputs = vec![output];
        self.m.signatures = vec![Signature {
            key: "serving_default".into(),
            inputs: vec![("input_1".into(), input)],
            outputs: vec![("output_0".into(), output)],
        }];
        write(&self.m).unwrap()
    }
}

fn conv(padding: PaddingMode, stride: i32, activation: FusedActivation) -> Options {
    Options::Conv2d {
        padding,
        stride_h: stride,
        stride_w: stride,
        dilation_h: 1,
        dilation_w: 1,
        activation,
    }
}

/// Keras' MNIST CNN as the converter writes it: CONV_2D with fused RELU, MAX_POOL_2D, the
/// Flatten as SHAPE → STRIDED_SLICE → PACK → RESHAPE, FULLY_CONNECTED, SOFTMAX.
pub fn keras_mnist() -> Vec<u8> {
    let mut a = Asm::new();
    let x = a.act("serving_default_input_1:0", &[1, 28, 28, 1]);
    let w = a.weights("sequential/conv2d/Conv2D", &[12, 3, 3, 1]);
    let b = a.weights("sequential/conv2d/BiasAdd/ReadVariableOp", &[12]);
    let c = a.act(
        "sequential/conv2d/Relu;sequential/conv2d/BiasAdd;sequential/conv2d/Conv2D",
        &[1, 26, 26, 12],
    );
    a.op(
        B::CONV_2D,
        &[x, w, b],
        c,
        conv(PaddingMode::Valid, 1, FusedActivation::Relu),
    );
    let p = a.act("sequential/max_pooling2d/MaxPool", &[1, 13, 13, 12]);
    a.op(
        B::MAX_POOL_2D,
        &[c],
        p,
        Options::Pool2d {
            padding: PaddingMode::Valid,
            stride_h: 2,
            stride_w: 2,
            filter_h: 2,
            filter_w: 2,
            activation: FusedActivation::None,
        },
    );
    let shape = a.int_act("sequential/flatten/Shape", &[4]);
    a.op(
        B::SHAPE,
        &[p],
        shape,
        Options::Shape {
            out_type: ElemType::I32,
        },
    );
    let (b0, e0, s0) = (
        a.ints("sequential/flatten/strided_slice/stack", &[1], &[0]),
        a.ints("sequential/flatten/strided_slice/stack_1", &[1], &[1]),
        a.ints("sequential/flatten/strided_slice/stack_2", &[1], &[1]),
    );
    let batch = a.int_act("sequential/flatten/strided_slice", &[]);
    a.op(
        B::STRIDED_SLICE,
        &[shape, b0, e0, s0],
        batch,
        Options::StridedSlice {
            begin_mask: 0,
            end_mask: 0,
            ellipsis_mask: 0,
            new_axis_mask: 0,
            shrink_axis_mask: 1,
            offset: false,
        },
    );
    let rest = a.ints("sequential/flatten/Reshape/shape/1", &[], &[2028]);
    let packed = a.int_act("sequential/flatten/Reshape/shape", &[2]);
    a.op(
        B::PACK,
        &[batch, rest],
        packed,
        Options::Pack {
            values_count: 2,
            axis: 0,
        },
    );
    let f = a.act("sequential/flatten/Reshape", &[1, 2028]);
    a.op(B::RESHAPE, &[p, packed], f, Options::None);
    let dw = a.weights("sequential/dense/MatMul", &[10, 2028]);
    let db = a.weights("sequential/dense/BiasAdd/ReadVariableOp", &[10]);
    let d = a.act("sequential/dense/BiasAdd", &[1, 10]);
    a.op(
        B::FULLY_CONNECTED,
        &[f, dw, db],
        d,
        Options::FullyConnected {
            activation: FusedActivation::None,
            shuffled_weights: false,
            keep_num_dims: false,
        },
    );
    let y = a.act("StatefulPartitionedCall:0", &[1, 10]);
    a.op(B::SOFTMAX, &[d], y, Options::Softmax { beta: 1.0 });
    a.finish(x, y)
}

/// Most of the other float ops the importer maps, chained.
pub fn keras_mixed() -> Vec<u8> {
    let mut a = Asm::new();
    let x = a.act("input", &[1, 8, 8, 3]);
    let w = a.weights("conv/kernel", &[4, 3, 3, 3]);
    let b = a.weights("conv/bias", &[4]);
    let t1 = a.act("conv/Relu6", &[1, 8, 8, 4]);
    a.op(
        B::CONV_2D,
        &[x, w, b],
        t1,
        conv(PaddingMode::Same, 1, FusedActivation::Relu6),
    );
    let w = a.weights("dw/kernel", &[1, 3, 3, 8]);
    let b = a.weights("dw/bias", &[8]);
    let t2 = a.act("dw/Relu", &[1, 4, 4, 8]);
    a.op(
        B::DEPTHWISE_CONV_2D,
        &[t1, w, b],
        t2,
        Options::DepthwiseConv2d {
            padding: PaddingMode::Same,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            depth_multiplier: 2,
            activation: FusedActivation::Relu,
        },
    );
    let t3 = a.act("avg", &[1, 4, 4, 8]);
    a.op(
        B::AVERAGE_POOL_2D,
        &[t2],
        t3,
        Options::Pool2d {
            padding: PaddingMode::Same,
            stride_h: 1,
            stride_w: 1,
            filter_h: 2,
            filter_w: 2,
            activation: FusedActivation::None,
        },
    );
    let t4 = a.act("add", &[1, 4, 4, 8]);
    a.op(
        B::ADD,
        &[t2, t3],
        t4,
        Options::Add {
            activation: FusedActivation::Relu,
        },
    );
    let k = a.weights("mul/y", &[8]);
    let t5 = a.act("mul", &[1, 4, 4, 8]);
    a.op(
        B::MUL,
        &[t4, k],
        t5,
        Options::Mul {
            activation: FusedActivation::None,
        },
    );
    let t6 = a.act("sub", &[1, 4, 4, 8]);
    a.op(
        B::SUB,
        &[t5, t3],
        t6,
        Options::Sub {
            activation: FusedActivation::None,
        },
    );
    let t7 = a.act("hard_swish", &[1, 4, 4, 8]);
    a.op(
        B::HARD_SWISH,
        &[t6],
        t7,
        Options::Empty(BuiltinOptions::HardSwishOptions),
    );
    let t8 = a.act("leaky", &[1, 4, 4, 8]);
    a.op(B::LEAKY_RELU, &[t7], t8, Options::LeakyRelu { alpha: 0.1 });
    let pads = a.ints("pad/paddings", &[4, 2], &[0, 0, 1, 1, 1, 1, 0, 0]);
    let t9 = a.act("pad", &[1, 6, 6, 8]);
    a.op(
        B::PAD,
        &[t8, pads],
        t9,
        Options::Empty(BuiltinOptions::PadOptions),
    );
    let (cb, ce, cs) = (
        a.ints("crop/begin", &[4], &[0, 1, 1, 0]),
        a.ints("crop/end", &[4], &[0, 5, 5, 8]),
        a.ints("crop/strides", &[4], &[1, 1, 1, 1]),
    );
    let t9b = a.act("crop", &[1, 4, 4, 8]);
    a.op(
        B::STRIDED_SLICE,
        &[t9, cb, ce, cs],
        t9b,
        Options::StridedSlice {
            begin_mask: 1,
            end_mask: 1,
            ellipsis_mask: 0,
            new_axis_mask: 0,
            shrink_axis_mask: 0,
            offset: false,
        },
    );
    let size = a.ints("up/size", &[2], &[8, 8]);
    let t10 = a.act("up", &[1, 8, 8, 8]);
    a.op(
        B::RESIZE_NEAREST_NEIGHBOR,
        &[t9b, size],
        t10,
        Options::ResizeNearestNeighbor {
            align_corners: false,
            half_pixel_centers: true,
        },
    );
    let oshape = a.ints("deconv/output_shape", &[4], &[1, 16, 16, 4]);
    let w = a.weights("deconv/kernel", &[4, 3, 3, 8]);
    let b = a.weights("deconv/bias", &[4]);
    let t11 = a.act("deconv", &[1, 16, 16, 4]);
    a.op(
        B::TRANSPOSE_CONV,
        &[oshape, w, t10, b],
        t11,
        Options::TransposeConv {
            padding: PaddingMode::Same,
            stride_h: 2,
            stride_w: 2,
            activation: FusedActivation::None,
        },
    );
    let t12 = a.act("sigmoid", &[1, 16, 16, 4]);
    a.op(B::LOGISTIC, &[t11], t12, Options::None);
    let t13 = a.act("tanh", &[1, 16, 16, 4]);
    a.op(B::TANH, &[t11], t13, Options::None);
    let t14 = a.act("concat", &[1, 16, 16, 8]);
    a.op(
        B::CONCATENATION,
        &[t12, t13],
        t14,
        Options::Concatenation {
            axis: -1,
            activation: FusedActivation::None,
        },
    );
    let perm = a.ints("transpose/perm", &[4], &[0, 2, 1, 3]);
    let t15 = a.act("transpose", &[1, 16, 16, 8]);
    a.op(
        B::TRANSPOSE,
        &[t14, perm],
        t15,
        Options::Empty(BuiltinOptions::TransposeOptions),
    );
    let axes = a.ints("mean/axes", &[2], &[1, 2]);
    let t16 = a.act("mean", &[1, 8]);
    a.op(
        B::MEAN,
        &[t15, axes],
        t16,
        Options::Reducer { keep_dims: false },
    );
    let w = a.weights("dense/kernel", &[5, 8]);
    let b = a.weights("dense/bias", &[5]);
    let t17 = a.act("dense", &[1, 5]);
    a.op(
        B::FULLY_CONNECTED,
        &[t16, w, b],
        t17,
        Options::FullyConnected {
            activation: FusedActivation::None,
            shuffled_weights: false,
            keep_num_dims: false,
        },
    );
    let y = a.act("relu", &[1, 5]);
    a.op(B::RELU, &[t17], y, Options::None);
    a.finish(x, y)
}
