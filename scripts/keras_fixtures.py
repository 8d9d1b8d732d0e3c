#!/usr/bin/env python3
"""Build the small Keras models under tests/fixtures/keras/ that qatc's Keras importer is tested on.

usage: keras_fixtures.py [--out DIR] [--only NAME ...] [--list] [--skip-mnist]
       keras_fixtures.py --only mobilenetv2 --out DIR      # just the large MobileNetV2, elsewhere

Runs in the TF venv that ../shared/bench/setup.sh makes (TF 2.21: `keras` 3 and `tf_keras` 2):

    py=$(../shared/bench/setup.sh)
    $py scripts/keras_fixtures.py

For every fixture NAME the script writes, into --out (default tests/fixtures/keras/):

    NAME.keras          the model saved by Keras 3 (zip: config.json, metadata.json, model.weights.h5)
    NAME.h5             the same model saved by tf_keras as a legacy HDF5 file (model.save("NAME.h5"))
    NAME.input.npy      a fixed random input (float32, with a batch dimension of 2)
    NAME.output.npy     Keras' output on that input (float32), when both frameworks agree bit for bit;
                        otherwise NAME.keras.output.npy and NAME.h5.output.npy, one per framework

and a manifest.json that lists, per fixture, its files, shapes, parameter count and the largest
difference between the two frameworks' outputs. Some fixtures exist in one format only (see
`formats` in FIXTURES and the README): `activation_hard_silu` (tf_keras has no hard_silu),
`mobilenetv2` (.keras only, 2.3 MB) and `keras3_h5` (a .h5 written by Keras 3, not tf_keras).
`mnist_cnn` is trained for one epoch on data/mnist and comes with mnist_cnn.json (its test
accuracy) and mnist_cnn.predictions.npy (its predicted class for each of the 10 000 test images).

How the weights are made: each model is first built in Keras 3 and every variable is overwritten
with seeded random values (kernels scaled by fan-in, biases and BatchNorm statistics away from
their 0/1 defaults, so a transposed axis or a swapped variable changes the output). The same
architecture is then built in tf_keras with the same layer names, and the weights are copied layer
by layer, so both files hold identical numbers. Both files are loaded back from disk and run on
the input; the recorded outputs are those of the reloaded models.

Determinism: numpy generators seeded from the fixture name, Keras' global seed fixed, TF limited
to one thread and oneDNN disabled, so reruns give the same weights, inputs and outputs. The file
bytes are not identical between runs (a .keras zip records the save date in metadata.json).
"""
import argparse
import json
import os
import sys
import zlib

# Must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # plain Eigen kernels: same round-off on every machine

import logging
import warnings

import numpy as np
import tensorflow as tf

warnings.filterwarnings("ignore")  # tf_keras warns that HDF5 is a legacy format, on every save
tf.get_logger().setLevel(logging.ERROR)  # "model was not compiled" on every load

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()

import keras  # Keras 3 (the `keras` package that TF 2.21 installs)
import tf_keras  # Keras 2 (legacy), the one that writes .h5 files TFMOT can read

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "keras")
MNIST_DIR = os.path.join(REPO, "data", "mnist")


def is_k3(K):
    return K is keras


# ---------------------------------------------------------------------------------------------
# The models. Each builder takes the Keras module to use (keras or tf_keras) and returns a model
# whose layers all have explicit names, so the two frameworks' models can be matched by name.
# ---------------------------------------------------------------------------------------------

def input_layer(K, shape, name):
    """An explicit InputLayer; Keras 3 calls the argument `shape`, tf_keras `input_shape`."""
    if is_k3(K):
        return K.layers.InputLayer(shape=shape, name=name)
    return K.layers.InputLayer(input_shape=shape, name=name)


def leaky_relu(K, slope, name):
    """LeakyReLU: Keras 3 calls its slope `negative_slope`, tf_keras `alpha`."""
    if is_k3(K):
        return K.layers.LeakyReLU(negative_slope=slope, name=name)
    return K.layers.LeakyReLU(alpha=slope, name=name)


def flat_concat(K, tensors, name):
    """Joins the branches of a multi-branch test model into one output: ONE Flatten layer is
    called on every branch (a shared layer with one inbound node per call; sharing it rather
    than making a Flatten per branch keeps the files small, as every layer costs about 4 KB of
    HDF5 groups), then a Concatenate."""
    L = K.layers
    flat = L.Flatten(name=f"{name}_flatten")
    return L.Concatenate(name=name)([flat(t) for t in tensors])


def m_sequential(K):
    """A Sequential model with an explicit InputLayer (the usual `Sequential([...])` shape)."""
    L = K.layers
    return K.Sequential([
        input_layer(K, (8, 8, 3), "input"),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
        L.MaxPooling2D(2, name="pool"),
        L.Flatten(name="flatten"),
        L.Dropout(0.25, name="dropout"),
        L.Dense(12, activation="tanh", name="fc1"),
        L.Dense(5, activation="softmax", name="fc2"),
    ], name="sequential_cnn")


def m_conv2d(K):
    """Conv2D options: strides, padding same/valid, bias on/off, activation kwarg, dilation,
    groups (also together with dilation and strides), a non-square kernel and stride."""
    L = K.layers
    i = K.Input((8, 8, 4), name="input")
    a = L.Conv2D(6, 3, strides=2, padding="same", use_bias=True, activation="relu", name="s2_same_bias_relu")(i)
    b = L.Conv2D(5, (3, 2), strides=(2, 1), padding="valid", use_bias=False, name="k3x2_s2x1_valid_nobias")(i)
    c = L.Conv2D(4, 3, dilation_rate=2, padding="same", activation="sigmoid", name="dil2_same")(i)
    d = L.Conv2D(6, 3, dilation_rate=(2, 1), padding="valid", name="dil2x1_valid")(i)
    e = L.Conv2D(6, 3, groups=2, padding="valid", activation="relu6", name="groups2_valid")(i)
    f = L.Conv2D(8, 3, groups=4, strides=2, padding="same", use_bias=False, name="groups4_s2_same_nobias")(i)
    g = L.Conv2D(4, 3, groups=2, dilation_rate=2, padding="same", activation="tanh", name="groups2_dil2")(i)
    h = L.Conv2D(3, 1, name="pointwise")(i)
    return K.Model(i, flat_concat(K, [a, b, c, d, e, f, g, h], "concat"), name="conv2d_options")


def m_depthwise_separable(K):
    """DepthwiseConv2D (depth_multiplier 1 and 2, strides, padding) and SeparableConv2D."""
    L = K.layers
    i = K.Input((8, 8, 3), name="input")
    a = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw_mult2_same")(i)
    b = L.DepthwiseConv2D(3, strides=2, padding="valid", use_bias=False, activation="relu", name="dw_s2_valid_nobias")(i)
    c = L.DepthwiseConv2D(3, dilation_rate=2, padding="same", name="dw_dil2")(i)
    d = L.SeparableConv2D(5, 3, padding="same", activation="relu", name="sep_same")(i)
    e = L.SeparableConv2D(4, 3, depth_multiplier=2, strides=2, padding="valid", use_bias=False, name="sep_mult2_s2_nobias")(i)
    return K.Model(i, flat_concat(K, [a, b, c, d, e], "concat"), name="depthwise_separable")


def m_conv2d_transpose(K):
    """Conv2DTranspose with stride 2, padding same and valid, bias on/off, kernel 3 and 2."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    a = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="t3_s2_same")(i)
    b = L.Conv2DTranspose(4, 3, strides=2, padding="valid", use_bias=False, name="t3_s2_valid_nobias")(i)
    c = L.Conv2DTranspose(3, 2, strides=2, padding="same", activation="relu", name="t2_s2_same_relu")(i)
    d = L.Conv2DTranspose(2, 3, strides=1, padding="same", name="t3_s1_same")(i)
    return K.Model(i, flat_concat(K, [a, b, c, d], "concat"), name="conv2d_transpose")


def m_dense(K):
    """Dense on a flat input (bias, no bias, activations) and Dense applied to a rank-4 tensor
    (Keras then contracts the last axis only)."""
    L = K.layers
    i = K.Input((6, 6, 3), name="input")
    r = L.Dense(4, activation="relu", name="dense_rank4")(i)  # (2, 6, 6, 4)
    flat = L.Flatten(name="flatten")  # called twice
    f = flat(i)
    a = L.Dense(16, activation="relu", name="fc_relu")(f)
    b = L.Dense(8, use_bias=False, name="fc_nobias")(a)
    c = L.Dense(7, activation="sigmoid", name="fc_sigmoid")(b)
    return K.Model(i, L.Concatenate(name="concat")([flat(r), c]), name="dense")


def m_dense_sequence(K):
    """Dense on a sequence (batch, steps, features): it acts on the last axis, every step alike."""
    L = K.layers
    i = K.Input((5, 6), name="input")
    x = L.Dense(4, activation="relu", name="dense_steps")(i)
    x = L.Dense(3, use_bias=False, name="dense_steps_nobias")(x)
    x = L.Flatten(name="flatten")(x)
    return K.Model(i, L.Dense(2, name="head")(x), name="dense_sequence")


def m_batchnorm(K):
    """BatchNormalization after a conv (the usual case), with center/scale turned off (then Keras
    drops the beta/gamma variable), a non-default epsilon, and BN on a Dense output."""
    L = K.layers
    i = K.Input((8, 8, 3), name="input")
    x = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(i)
    a = L.BatchNormalization(name="bn")(x)
    b = L.BatchNormalization(center=False, epsilon=1e-2, name="bn_nocenter")(x)
    c = L.BatchNormalization(scale=False, momentum=0.9, name="bn_noscale")(x)
    d = L.BatchNormalization(name="bn_input")(i)
    f = L.Dense(5, name="fc")(L.Flatten(name="flatten")(i))
    e = L.BatchNormalization(name="bn_dense")(f)
    return K.Model(i, flat_concat(K, [a, b, c, d, e], "concat"), name="batchnorm")


ACTIVATIONS = ["relu", "relu6", "softmax", "sigmoid", "tanh", "linear"]


def m_activations(K):
    """Activation layers by name, applied to the (wide-range) input directly."""
    L = K.layers
    i = K.Input((4, 4, 5), name="input")
    outs = [L.Activation(a, name=f"act_{a}")(i) for a in ACTIVATIONS]
    return K.Model(i, L.Concatenate(name="concat")(outs), name="activations")  # (4, 4, 30)


def m_activation_hard_silu(K):
    """Keras 3 only: hard_silu, also by its alias hard_swish, as a layer and as an activation
    kwarg. tf_keras 2.21 knows neither name, so there is no .h5 for this fixture."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    a = L.Activation("hard_silu", name="act_hard_silu")(i)
    b = L.Activation("hard_swish", name="act_hard_swish")(i)
    c = L.Conv2D(4, 1, activation="hard_swish", name="conv_hard_swish")(i)
    d = L.Activation("hard_sigmoid", name="act_hard_sigmoid")(i)
    return K.Model(i, L.Concatenate(name="concat")([a, b, c, d]), name="activation_hard_silu")


def m_relu_variants(K):
    """ReLU with its three options, alone and together, and LeakyReLU (default and explicit slope)."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    outs = [
        L.ReLU(name="relu")(i),
        L.ReLU(max_value=6.0, name="relu_max6")(i),
        L.ReLU(negative_slope=0.1, name="relu_slope")(i),
        L.ReLU(threshold=0.5, name="relu_threshold")(i),
        L.ReLU(max_value=4.0, negative_slope=0.2, threshold=1.0, name="relu_all")(i),
        leaky_relu(K, 0.3, "leaky_default"),
        leaky_relu(K, 0.05, "leaky_005"),
    ]
    outs[5] = outs[5](i)
    outs[6] = outs[6](i)
    return K.Model(i, L.Concatenate(name="concat")(outs), name="relu_variants")  # (4, 4, 21)


def m_thresholded_relu(K):
    """tf_keras' ThresholdedReLU(theta) between two convolutions; Keras 3 dropped the class, so
    its .keras twin uses ReLU(threshold=theta), which computes the same x * (x > theta)."""
    L = K.layers
    i = K.Input((6, 6, 3), name="input")
    x = L.Conv2D(4, 3, padding="same", name="conv")(i)
    if hasattr(L, "ThresholdedReLU"):
        x = L.ThresholdedReLU(theta=0.3, name="thresholded")(x)
    else:
        x = L.ReLU(threshold=0.3, name="thresholded")(x)
    x = L.Conv2D(2, 1, name="pointwise")(x)
    return K.Model(i, L.Flatten(name="flatten")(x), name="thresholded_relu")


def m_prelu(K):
    """PReLU with one alpha per element (not shared) and one per channel (shared_axes=[1, 2])."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    a = L.PReLU(name="prelu_full")(i)
    b = L.PReLU(shared_axes=[1, 2], name="prelu_channel")(i)
    x = L.Conv2D(4, 3, name="conv")(i)
    c = L.PReLU(shared_axes=[1, 2], name="prelu_after_conv")(x)
    return K.Model(i, flat_concat(K, [a, b, c], "concat"), name="prelu")


def m_merge(K):
    """Add, Subtract, Multiply (two and three inputs), Concatenate on channels and on an inner axis."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    p = L.Conv2D(3, 1, name="conv_p")(i)
    q = L.Conv2D(3, 3, padding="same", name="conv_q")(i)
    add = L.Add(name="add")([i, p])
    add3 = L.Add(name="add3")([i, p, q])
    sub = L.Subtract(name="subtract")([p, q])
    mul = L.Multiply(name="multiply")([i, q])
    cat_c = L.Concatenate(name="concat_channels")([add, sub, mul])  # axis -1
    cat_h = L.Concatenate(axis=1, name="concat_rows")([add3, p])
    return K.Model(i, flat_concat(K, [cat_c, cat_h], "concat"), name="merge")


def m_pooling(K):
    """Max and average pooling (valid and same, strides different from the window), and the
    global poolings with keepdims True and False."""
    L = K.layers
    i = K.Input((7, 7, 3), name="input")  # odd size, so 'same' pads unevenly
    outs = [
        L.MaxPooling2D(2, name="max2_valid")(i),
        L.MaxPooling2D(3, strides=2, padding="same", name="max3_s2_same")(i),
        L.AveragePooling2D(2, name="avg2_valid")(i),
        L.AveragePooling2D(3, strides=2, padding="same", name="avg3_s2_same")(i),
        L.AveragePooling2D((2, 3), strides=1, padding="same", name="avg2x3_s1_same")(i),
        L.GlobalAveragePooling2D(name="gap")(i),
        L.GlobalAveragePooling2D(keepdims=True, name="gap_keepdims")(i),
        L.GlobalMaxPooling2D(name="gmp")(i),
        L.GlobalMaxPooling2D(keepdims=True, name="gmp_keepdims")(i),
    ]
    return K.Model(i, flat_concat(K, outs, "concat"), name="pooling")


def m_shape_ops(K):
    """Flatten, Reshape, ZeroPadding2D, Cropping2D and UpSampling2D (nearest), symmetric and not."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    outs = [
        L.ZeroPadding2D(1, name="zpad1")(i),
        L.ZeroPadding2D(((1, 2), (0, 1)), name="zpad_asym")(i),
        L.Cropping2D(1, name="crop1")(i),
        L.Cropping2D(((1, 0), (2, 1)), name="crop_asym")(i),
        L.UpSampling2D(2, interpolation="nearest", name="up2")(i),
        L.UpSampling2D((2, 3), name="up2x3")(i),
        L.Reshape((8, 6), name="reshape")(i),
        L.Reshape((-1, 2, 3), name="reshape_infer")(i),
    ]
    return K.Model(i, flat_concat(K, outs, "concat"), name="shape_ops")


NORM_DATA_SEED = 7


def m_preprocessing(K):
    """Rescaling (scale and offset), Normalization adapted to data (mean/variance become weights)
    and Normalization given mean/variance in the constructor (they stay in the config), Dropout."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    a = L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(i)
    norm = L.Normalization(name="norm_adapted")
    # Adapt on a fixed data set that is not centred, so mean and variance are far from 0 and 1.
    data = np.random.default_rng(NORM_DATA_SEED).uniform(0, 255, (64, 4, 4, 3)).astype("float32")
    data *= np.array([1.0, 0.5, 0.25], dtype="float32")
    norm.adapt(data)
    b = norm(i)
    c = L.Normalization(mean=[100.0, 50.0, 20.0], variance=[400.0, 100.0, 25.0], name="norm_given")(i)
    d = L.Dropout(0.5, name="dropout")(a)
    e = L.Conv2D(4, 1, name="conv")(d)
    return K.Model(i, flat_concat(K, [a, b, c, e], "concat"), name="preprocessing")


def _block(K, x, filters, stride, prefix):
    """Conv + BN + ReLU, then a depthwise conv + BN + ReLU6, with a residual Add when shapes allow."""
    L = K.layers
    h = L.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_expand")(x)
    h = L.BatchNormalization(name=f"{prefix}_expand_bn")(h)
    h = L.ReLU(name=f"{prefix}_expand_relu")(h)
    h = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dw")(h)
    h = L.BatchNormalization(name=f"{prefix}_dw_bn")(h)
    h = L.ReLU(6.0, name=f"{prefix}_dw_relu")(h)
    return h


def m_functional_branches(K):
    """A functional graph with a fan-out, a residual Add, a parallel pooling branch joined by a
    Concatenate, and a tensor used by three consumers."""
    L = K.layers
    i = K.Input((8, 8, 3), name="input")
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    r = _block(K, x, 8, 1, "b1")
    x2 = L.Add(name="residual")([x, r])
    p = L.MaxPooling2D(2, name="branch_pool")(x2)
    c = L.Conv2D(6, 3, strides=2, padding="same", name="branch_conv")(x2)
    y = L.Concatenate(name="join")([p, c, L.AveragePooling2D(2, name="stem_pool")(x)])
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return K.Model(i, L.Dense(4, name="head")(y), name="functional_branches")


def m_shared_layer(K):
    """One Conv2D and one Dense layer called twice (two inbound nodes each; weights stored once)."""
    L = K.layers
    i = K.Input((6, 6, 3), name="input")
    shared = L.Conv2D(3, 3, padding="same", name="shared_conv")
    a = shared(i)
    b = shared(L.ReLU(name="relu")(a))  # second call: node 1 of shared_conv
    fc = L.Dense(4, name="shared_fc")
    u = fc(L.GlobalAveragePooling2D(name="gap_a")(a))
    v = fc(L.GlobalMaxPooling2D(name="gmp_b")(b))
    return K.Model(i, L.Subtract(name="sub")([u, v]), name="shared_layer")


def base_model(K):
    """The small functional 'backbone' nested in the next two fixtures."""
    L = K.layers
    i = K.Input((8, 8, 3), name="base_input")
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="base_conv")(i)
    x = L.BatchNormalization(name="base_bn")(x)
    x = L.ReLU(6.0, name="base_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="base_dw")(x)
    x = L.Conv2D(12, 1, activation="relu", name="base_pw")(x)
    return K.Model(i, x, name="base")


def m_nested_functional(K):
    """Transfer-learning shape: a functional backbone used as one layer of an outer functional
    model, with a new head (a Rescaling in front, pooling + dense after)."""
    L = K.layers
    base = base_model(K)
    i = K.Input((8, 8, 3), name="input")
    x = L.Rescaling(0.5, offset=0.25, name="pre")(i)
    x = base(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="dropout")(x)
    return K.Model(i, L.Dense(5, activation="softmax", name="head")(x), name="nested_functional")


def m_frozen_base(K):
    """Transfer learning as users do it: the backbone frozen (`base.trainable = False`), a new
    trainable head. qatc must keep the base's weights fixed while it fine-tunes."""
    L = K.layers
    base = base_model(K)
    base.trainable = False
    i = K.Input((8, 8, 3), name="input")
    x = base(i)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return K.Model(i, L.Dense(5, name="head")(x), name="frozen_base")


def m_nested_in_sequential(K):
    """The same backbone as the first layer of a Sequential model with a new head."""
    L = K.layers
    return K.Sequential([
        input_layer(K, (8, 8, 3), "input"),
        base_model(K),
        L.GlobalAveragePooling2D(name="gap"),
        L.Dense(5, name="head"),
    ], name="nested_in_sequential")


def m_nested_shared_sequential(K):
    """A Sequential block (with its own InputLayer) nested in a functional model and called twice:
    one set of weights, two call sites (the node-index case of nested models)."""
    L = K.layers
    block = K.Sequential([
        input_layer(K, (4, 4, 6), "block_input"),
        L.Conv2D(6, 3, padding="same", use_bias=False, name="block_conv"),
        L.BatchNormalization(name="block_bn"),
        L.ReLU(name="block_relu"),
    ], name="block")
    i = K.Input((8, 8, 3), name="input")
    s = L.Conv2D(6, 3, strides=2, padding="same", name="stem")(i)
    y = block(block(s))
    y = L.Add(name="residual")([s, y])
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return K.Model(i, L.Dense(3, name="head")(y), name="nested_shared_sequential")


def m_tensor_ops(K):
    """Arithmetic written on symbolic tensors instead of with layers, the way MobileNetV3 builds
    hard-swish and many scripts scale their input. Keras 3 records each as an *operation*
    (module keras.src.ops.numpy, class_name Add/Multiply/... - the same class names as the
    merge layers - with the constant in args); tf_keras records TFOpLambda layers."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    x = i / 2.0 - 0.5
    c = L.Conv2D(4, 1, name="conv")(x)
    hs = L.Multiply(name="hswish")([c, L.ReLU(6.0, name="relu6")(c + 3.0) * (1.0 / 6.0)])
    y = L.Add(name="add_layer")([hs, c])
    return K.Model(i, y, name="tensor_ops")


def m_lambda(K):
    """A Lambda layer holding Python code. qatc must refuse this model; the fixture only tests
    that refusal (the .keras file can only be loaded by Keras with safe_mode=False)."""
    L = K.layers
    i = K.Input((4, 4, 3), name="input")
    x = L.Conv2D(3, 1, name="conv")(i)
    x = L.Lambda(lambda t: t * 2.0 + 1.0, name="lambda")(x)
    return K.Model(i, L.Flatten(name="flatten")(x), name="lambda_layer")


def m_conv_bn_relu_dense(K):
    """A small conv/BN/ReLU/dense model, the one TFMOT is run on (scripts/tfmot_keras_export.py)."""
    L = K.layers
    i = K.Input((8, 8, 3), name="input")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(i)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(6.0, name="relu2")(x)
    x = L.Conv2D(12, 1, name="conv2")(x)
    x = L.ReLU(name="relu3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return K.Model(i, L.Dense(10, name="fc")(x), name="conv_bn_relu_dense")


def m_mobilenetv2(K):
    """keras.applications.MobileNetV2 at alpha 0.35, 96x96 RGB, 10 classes, random weights."""
    return K.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(96, 96, 3), classes=10)


# name -> (builder, input shape without batch, input kind, formats[, batch])
# input kind: "normal" N(0,1); "wide" N(0,4) so activations saturate; "pixels" uniform 0..255.
BATCH = 2
FIXTURES = {
    "sequential": (m_sequential, (8, 8, 3), "normal", ("keras", "h5")),
    "conv2d": (m_conv2d, (8, 8, 4), "normal", ("keras", "h5")),
    "depthwise_separable": (m_depthwise_separable, (8, 8, 3), "normal", ("keras", "h5")),
    "conv2d_transpose": (m_conv2d_transpose, (4, 4, 3), "normal", ("keras", "h5")),
    "dense": (m_dense, (6, 6, 3), "normal", ("keras", "h5")),
    "dense_sequence": (m_dense_sequence, (5, 6), "normal", ("keras", "h5")),
    "batchnorm": (m_batchnorm, (8, 8, 3), "normal", ("keras", "h5")),
    "activations": (m_activations, (4, 4, 5), "wide", ("keras", "h5")),
    "activation_hard_silu": (m_activation_hard_silu, (4, 4, 3), "wide", ("keras",)),
    "relu_variants": (m_relu_variants, (4, 4, 3), "wide", ("keras", "h5")),
    "prelu": (m_prelu, (4, 4, 3), "normal", ("keras", "h5")),
    "thresholded_relu": (m_thresholded_relu, (6, 6, 3), "normal", ("keras", "h5")),
    "merge": (m_merge, (4, 4, 3), "normal", ("keras", "h5")),
    "pooling": (m_pooling, (7, 7, 3), "normal", ("keras", "h5")),
    "shape_ops": (m_shape_ops, (4, 4, 3), "normal", ("keras", "h5")),
    "preprocessing": (m_preprocessing, (4, 4, 3), "pixels", ("keras", "h5")),
    "functional_branches": (m_functional_branches, (8, 8, 3), "normal", ("keras", "h5")),
    "shared_layer": (m_shared_layer, (6, 6, 3), "normal", ("keras", "h5")),
    "nested_functional": (m_nested_functional, (8, 8, 3), "normal", ("keras", "h5")),
    "frozen_base": (m_frozen_base, (8, 8, 3), "normal", ("keras", "h5")),
    "nested_in_sequential": (m_nested_in_sequential, (8, 8, 3), "normal", ("keras", "h5")),
    "nested_shared_sequential": (m_nested_shared_sequential, (8, 8, 3), "normal", ("keras", "h5")),
    # The nested_functional model again, saved as .h5 by Keras 3 instead of tf_keras.
    "keras3_h5": (m_nested_functional, (8, 8, 3), "normal", ("h5@keras3",)),
    "tensor_ops": (m_tensor_ops, (4, 4, 3), "normal", ("keras", "h5")),
    "lambda_layer": (m_lambda, (4, 4, 3), "normal", ("keras", "h5")),
    "conv_bn_relu_dense": (m_conv_bn_relu_dense, (8, 8, 3), "normal", ("keras", "h5")),
    # 2.3 MB: the only large fixture. Keras 3 only (the task asked for .keras); batch 1.
    "mobilenetv2": (m_mobilenetv2, (96, 96, 3), "normal", ("keras",), 1),
}


def seed_of(name):
    """A per-fixture seed that does not depend on the order fixtures are built in."""
    return zlib.crc32(name.encode())


# ---------------------------------------------------------------------------------------------
# Weights: randomize the Keras 3 model, then copy into the tf_keras model by layer name.
# ---------------------------------------------------------------------------------------------

def leaf_layers(model):
    """All layers that are not themselves models, depth first, as (name, layer)."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and isinstance(layer, (keras.Model, tf_keras.Model)):
            out += leaf_layers(layer)
        else:
            out.append((layer.name, layer))
    return out


def var_name(v):
    """'kernel' from a Keras 3 variable ('kernel') or a tf_keras one ('conv/kernel:0')."""
    return v.name.split("/")[-1].split(":")[0]


def random_value(layer, name, shape, rng):
    """A random value for one variable, chosen by the variable's role."""
    shape = tuple(shape)
    if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        if name == "depthwise_kernel" or isinstance(layer, keras.layers.DepthwiseConv2D):
            fan_in = shape[0] * shape[1]  # [kh, kw, in, mult]: each output sees one channel
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            fan_in = np.prod(shape) / shape[-2]  # [kh, kw, out, in]
        else:
            fan_in = np.prod(shape) / shape[-1]  # [kh, kw, in, out] or [in, out]
        return rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
    if name == "bias":
        return rng.uniform(-0.5, 0.5, shape)
    if name == "gamma":
        return rng.uniform(0.5, 1.5, shape)
    if name == "beta":
        return rng.uniform(-0.5, 0.5, shape)
    if name == "moving_mean":
        return rng.uniform(-0.5, 0.5, shape)
    if name == "moving_variance":
        return rng.uniform(0.5, 2.0, shape)  # positive, far from 1
    if name == "alpha":  # PReLU slopes, some negative
        return rng.uniform(-0.3, 0.6, shape)
    raise ValueError(f"no rule to randomize variable {name!r} of layer {layer.name}")


def randomize(model, rng):
    """Overwrite every weight of a Keras 3 model; Normalization keeps what adapt() computed."""
    for name, layer in leaf_layers(model):
        if not layer.weights or isinstance(layer, keras.layers.Normalization):
            continue
        layer.set_weights([
            random_value(layer, var_name(v), v.shape, rng).astype("float32") for v in layer.weights
        ])


def calibrate_batchnorm(model, x):
    """Sets every BatchNorm's moving statistics to the batch statistics of x (one training-mode
    forward pass with momentum 0), then perturbs them a little. Without this, a deep network with
    random weights and random statistics forgets its input: MobileNetV2's softmax came out the
    same to 3 decimals for any input, which would hide layout mistakes in the early layers."""
    bns = [l for _, l in leaf_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in bns]
    for l in bns:
        l.momentum = 0.0
    model(x, training=True)
    rng = np.random.default_rng(1)
    for l, m in zip(bns, saved):
        l.momentum = m
        g, b, mean, var = l.get_weights()
        mean = mean + rng.normal(0.0, 0.1, mean.shape).astype("float32") * np.sqrt(var)
        var = var * rng.uniform(0.8, 1.25, var.shape).astype("float32")
        l.set_weights([g, b, mean, var])


# Variables whose name differs between the frameworks, seen while copying: (class, Keras 3, tf_keras).
NAME_DIFFERENCES = set()


def copy_weights(src, dst):
    """Copy weights from the Keras 3 model into the tf_keras one, matching layers by name and
    checking that both frameworks agree on the number, order and shapes of the variables."""
    dst_layers = dict(leaf_layers(dst))
    for name, layer in leaf_layers(src):
        if not layer.weights:
            continue
        other = dst_layers[name]
        a = [(var_name(v), tuple(v.shape)) for v in layer.weights]
        b = [(var_name(v), tuple(v.shape)) for v in other.weights]
        if [s for _, s in a] != [s for _, s in b]:
            raise ValueError(f"{name}: Keras 3 has {a}, tf_keras has {b}")
        for (na, _), (nb, _) in zip(a, b):
            if na != nb:
                NAME_DIFFERENCES.add((type(layer).__name__, na, nb))
        other.set_weights(layer.get_weights())


def make_input(name, shape, kind, batch=BATCH):
    rng = np.random.default_rng(seed_of(name) + 1)
    shape = (batch,) + tuple(shape)
    if kind == "pixels":
        return rng.uniform(0.0, 255.0, shape).astype("float32")
    scale = 4.0 if kind == "wide" else 1.0
    return (rng.normal(0.0, scale, shape)).astype("float32")


def param_count(model):
    return int(sum(np.prod(w.shape) for w in model.get_weights()))


# ---------------------------------------------------------------------------------------------
# Saving and checking.
# ---------------------------------------------------------------------------------------------

def save_fixture(name, spec, out):
    builder, in_shape, kind, formats = spec[:4]
    batch = spec[4] if len(spec) > 4 else BATCH
    keras.utils.set_random_seed(seed_of(name))
    tf_keras.utils.set_random_seed(seed_of(name))
    x = make_input(name, in_shape, kind, batch)
    np.save(os.path.join(out, f"{name}.input.npy"), x)
    rng = np.random.default_rng(seed_of(name))

    k3 = builder(keras)
    randomize(k3, rng)
    if name == "mobilenetv2":
        calibrate_batchnorm(k3, make_input(name + "/calibration", in_shape, kind, 8))
    outputs = {}
    unsafe = name == "lambda_layer"  # Keras 3 refuses to load Lambda code unless told to
    if "keras" in formats:
        path = os.path.join(out, f"{name}.keras")
        k3.save(path)
        y_mem = np.asarray(k3.predict(x, verbose=0))
        back = keras.saving.load_model(path, safe_mode=not unsafe)
        outputs["keras"] = np.asarray(back.predict(x, verbose=0), dtype="float32")
        assert np.array_equal(outputs["keras"], y_mem), f"{name}: .keras reload changed the output"
    if "h5@keras3" in formats:
        # A legacy .h5 written by Keras 3 itself (model.save("x.h5") in Keras 3): the HDF5
        # layout of tf_keras with a Keras 3 style config inside, see the README.
        path = os.path.join(out, f"{name}.h5")
        k3.save(path)
        y_mem = np.asarray(k3.predict(x, verbose=0))
        back = keras.saving.load_model(path)
        outputs["h5"] = np.asarray(back.predict(x, verbose=0), dtype="float32")
        assert np.array_equal(outputs["h5"], y_mem), f"{name}: .h5 reload changed the output"
    if "h5" in formats:
        tk = builder(tf_keras)
        copy_weights(k3, tk)
        path = os.path.join(out, f"{name}.h5")
        tk.save(path)
        y_mem = np.asarray(tk.predict(x, verbose=0))
        back = tf_keras.models.load_model(path)
        outputs["h5"] = np.asarray(back.predict(x, verbose=0), dtype="float32")
        assert np.array_equal(outputs["h5"], y_mem), f"{name}: .h5 reload changed the output"

    entry = {
        "formats": [f.split("@")[0] for f in formats],
        "h5_writer": ("keras " + keras.__version__ if "h5@keras3" in formats else
                      "tf_keras " + tf_keras.__version__ if "h5" in formats else None),
        "input_shape": list(x.shape),
        "params": param_count(k3),
        "description": ("nested_functional saved as a legacy .h5 by Keras 3 rather than tf_keras"
                        if "h5@keras3" in formats else
                        " ".join((builder.__doc__ or "").split())),
    }
    vals = list(outputs.values())
    same = all(np.array_equal(vals[0], v) for v in vals[1:])
    if same:
        np.save(os.path.join(out, f"{name}.output.npy"), vals[0])
        entry["outputs"] = {f: f"{name}.output.npy" for f in outputs}
    else:
        entry["outputs"] = {}
        for f, y in outputs.items():
            np.save(os.path.join(out, f"{name}.{f}.output.npy"), y)
            entry["outputs"][f] = f"{name}.{f}.output.npy"
    entry["output_shape"] = list(vals[0].shape)
    if len(vals) == 2:
        entry["max_abs_diff_keras_vs_h5"] = float(np.max(np.abs(vals[0] - vals[1])))
    print(f"{name:24s} params {entry['params']:7d}  in {tuple(x.shape)}  out {tuple(vals[0].shape)}"
          + (f"  keras-vs-h5 max|d| {entry.get('max_abs_diff_keras_vs_h5', 0):.3g}" if len(vals) == 2 else ""))
    return entry


# ---------------------------------------------------------------------------------------------
# The MNIST model: trained for one epoch, takes raw 0..255 pixels.
# ---------------------------------------------------------------------------------------------

def read_idx(path):
    """One gzip-compressed IDX file (MNIST's format) as a uint8 array."""
    import gzip
    import struct
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = struct.unpack(">I", raw[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def m_mnist(K):
    """A small functional CNN for MNIST with the 1/255 scaling inside the model."""
    L = K.layers
    i = K.Input((28, 28, 1), name="pixels")
    x = L.Rescaling(1.0 / 255.0, name="scale")(i)
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(12, 3, activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Flatten(name="flatten")(x)
    return K.Model(i, L.Dense(10, name="logits")(x), name="mnist_cnn")


def save_mnist(out, data_dir):
    name = "mnist_cnn"
    xtr = read_idx(os.path.join(data_dir, "train-images.idx3-ubyte.gz"))[..., None].astype("float32")
    ytr = read_idx(os.path.join(data_dir, "train-labels.idx1-ubyte.gz")).astype("int64")
    xte = read_idx(os.path.join(data_dir, "t10k-images.idx3-ubyte.gz"))[..., None].astype("float32")
    yte = read_idx(os.path.join(data_dir, "t10k-labels.idx1-ubyte.gz")).astype("int64")

    keras.utils.set_random_seed(seed_of(name))
    k3 = m_mnist(keras)
    k3.compile(optimizer=keras.optimizers.Adam(1e-3),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    k3.fit(xtr, ytr, batch_size=64, epochs=1, shuffle=True, verbose=0)
    k3.save(os.path.join(out, f"{name}.keras"))

    tk = m_mnist(tf_keras)
    copy_weights(k3, tk)
    # Compiled like a model saved after training, so the .h5 has what such files have: a
    # `training_config` attribute and an `optimizer_weights` group (here Adam's zero state;
    # an importer must skip both). The .keras file likewise keeps Keras 3's optimizer state.
    tk.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
               loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tk.optimizer.build(tk.trainable_variables)
    tk.save(os.path.join(out, f"{name}.h5"))

    # Predictions of the reloaded files on the whole test set.
    k3b = keras.saving.load_model(os.path.join(out, f"{name}.keras"))
    tkb = tf_keras.models.load_model(os.path.join(out, f"{name}.h5"))
    logits = {"keras": k3b.predict(xte, batch_size=500, verbose=0),
              "h5": tkb.predict(xte, batch_size=500, verbose=0)}
    preds = {f: np.argmax(v, axis=1).astype("uint8") for f, v in logits.items()}
    acc = {f: round(float(np.mean(p == yte)), 4) for f, p in preds.items()}
    same_preds = np.array_equal(preds["keras"], preds["h5"])
    report = {
        "model": name,
        "input": "raw MNIST pixels 0..255, float32, NHWC 28x28x1 (Rescaling(1/255) is the first layer)",
        "training": "1 epoch, Adam 1e-3, batch 64, shuffled, Keras 3 seed %d" % seed_of(name),
        "test_images": int(len(yte)),
        "accuracy": acc["keras"],
        "accuracy_h5": acc["h5"],
        "predictions": f"{name}.predictions.npy" if same_preds else {
            f: f"{name}.{f}.predictions.npy" for f in preds},
        "max_abs_logit_diff_keras_vs_h5": float(np.max(np.abs(logits["keras"] - logits["h5"]))),
        "params": param_count(k3),
    }
    if same_preds:
        np.save(os.path.join(out, f"{name}.predictions.npy"), preds["keras"])
    else:
        for f, p in preds.items():
            np.save(os.path.join(out, f"{name}.{f}.predictions.npy"), p)
    # The usual input/output pair too: the first 4 test images and their logits.
    x4 = xte[:4]
    np.save(os.path.join(out, f"{name}.input.npy"), x4)
    y4 = {f: np.asarray(m.predict(x4, verbose=0), dtype="float32") for f, m in (("keras", k3b), ("h5", tkb))}
    if np.array_equal(y4["keras"], y4["h5"]):
        np.save(os.path.join(out, f"{name}.output.npy"), y4["keras"])
        outs = {f: f"{name}.output.npy" for f in y4}
    else:
        outs = {}
        for f, y in y4.items():
            np.save(os.path.join(out, f"{name}.{f}.output.npy"), y)
            outs[f] = f"{name}.{f}.output.npy"
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"{name:24s} params {report['params']:7d}  accuracy {acc}")
    return {"formats": ["keras", "h5"], "h5_writer": "tf_keras " + tf_keras.__version__, "input_shape": list(x4.shape), "output_shape": list(y4["keras"].shape),
            "params": report["params"], "outputs": outs, "accuracy_json": f"{name}.json",
            "description": m_mnist.__doc__.strip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="build only these fixtures (see --list)")
    ap.add_argument("--skip-mnist", action="store_true", help="do not train the MNIST model")
    ap.add_argument("--mnist", default=MNIST_DIR, help="directory with the MNIST .gz files")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    every = list(FIXTURES) + ["mnist_cnn"]
    if a.list:
        print("\n".join(every))
        return
    names = a.only or (list(FIXTURES) + ([] if a.skip_mnist else ["mnist_cnn"]))
    unknown = [n for n in names if n not in every]
    if unknown:
        sys.exit(f"unknown fixture(s): {unknown}; known: {every}")
    os.makedirs(a.out, exist_ok=True)
    manifest_path = os.path.join(a.out, "manifest.json")
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    for n in names:
        if n == "mnist_cnn":
            manifest[n] = save_mnist(a.out, a.mnist)
        else:
            manifest[n] = save_fixture(n, FIXTURES[n], a.out)
    versions = {"keras": keras.__version__, "tf_keras": tf_keras.__version__, "tensorflow": tf.__version__}
    manifest = {"_generated_by": "scripts/keras_fixtures.py", "_versions": versions,
                **{k: v for k, v in sorted(manifest.items()) if not k.startswith("_")}}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    for cls, k3_name, tk_name in sorted(NAME_DIFFERENCES):
        print(f"note: {cls} calls a variable {k3_name!r} in Keras 3 and {tk_name!r} in tf_keras")


if __name__ == "__main__":
    main()
