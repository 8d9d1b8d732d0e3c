"""The reference models for side-by-side QAT runs (qatc vs TFMOT), defined in tf_keras.

Six models, each a function `name(input_shape=..., num_classes=...) -> tf_keras.Model`:

  mnist_cnn         TFMOT's own QAT example (same as ../shared/bench/tfmot_reference.py)
  mbv2_tiny         qatc's small MobileNetV2-style model (same as tfmot_reference.py)
  resnet8           MLPerf Tiny image classification (CIFAR-10 ResNet-8, 16/32/64 filters)
  ds_cnn            MLPerf Tiny keyword spotting (DS-CNN, 49x10x1 MFCC, 12 classes)
  mobilenet_v1_025  MLPerf Tiny visual wake words (EEMBC MobileNetV1, alpha 0.25, 96x96x3)
  mobilenet_v2_035  keras.applications.MobileNetV2(alpha=0.35, weights=None, include_top=True)

These are our own definitions written from the layer tables in the notes
(reference-models.md); the MLPerf Tiny ones follow mlcommons/tiny v1.1, MobileNetV2 follows
keras.applications. Layer names are given explicitly and equal the names Keras generates for
the reference code in a fresh process (conv2d, conv2d_1, batch_normalization, ...; for
MobileNetV2 the names the application sets: Conv1, block_1_expand, ...), so a model built
here and one built from the reference code have the same names whatever was built before in
the same process.

Exactness notes (see the notes file for the evidence):
  * The MLPerf Tiny code passes kernel_initializer / kernel_regularizer to DepthwiseConv2D;
    Keras 2 accepts and ignores them there (the depthwise kernel uses depthwise_initializer /
    depthwise_regularizer). So the depthwise kernels are glorot_uniform without L2. We write
    that explicitly instead of relying on the silent behaviour.
  * ds_cnn's AveragePooling2D pool size comes from the *input* shape, (H//2, W//2), as in the
    reference code; at 49x10 that is (24, 5) on a 25x5 feature map: the last time step is
    dropped. The shipped pretrained model used (25, 5); ds_cnn(final_pool="global") gives that.
  * The MLPerf Tiny models end in Dense(..., activation="softmax") (they train with
    categorical cross-entropy on probabilities); MobileNetV2 too (classifier_activation
    default). mnist_cnn and mbv2_tiny output logits. `outputs_logits(model)` tells which.

Module helpers: MODELS, DEFAULT_INPUT, build(name, input_shape=None, num_classes=None),
layer_table(model) (per-layer config, output shape, params, forward MACs), forward_macs(model).
"""
import os
import re

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tf_keras as keras  # noqa: E402

L = keras.layers
l2 = keras.regularizers.l2


class _Names:
    """Keras' automatic layer names, reproduced per model: the snake_case class name, then
    `_1`, `_2`, ... in creation order (what a fresh process gives the reference code)."""

    def __init__(self):
        self.count = {}

    def __call__(self, base):
        n = self.count.get(base, 0)
        self.count[base] = n + 1
        return base if n == 0 else f"{base}_{n}"


def _input(shape, name="input_1"):
    return keras.Input(shape=tuple(shape), name=name)


# --------------------------------------------------------------------------------------------
# The two models of ../shared/bench/tfmot_reference.py (same structure, names made explicit)


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10):
    """TFMOT's QAT example: Conv2D(12, 3x3, valid, ReLU) -> MaxPool 2x2 -> Flatten -> Dense."""
    return keras.Sequential(
        [
            L.InputLayer(input_shape=tuple(input_shape), name="input_1"),
            L.Conv2D(12, (3, 3), activation="relu", name="conv2d"),
            L.MaxPooling2D((2, 2), name="max_pooling2d"),
            L.Flatten(name="flatten"),
            L.Dense(num_classes, name="dense"),
        ],
        name="sequential",
    )


def mbv2_tiny(input_shape=(28, 28, 1), num_classes=10):
    """qatc's small MobileNetV2-style model (logits output)."""
    nm = _Names()

    def cbr(x, filters, kernel, stride=1, depthwise=False):
        if depthwise:
            x = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                  name=nm("depthwise_conv2d"))(x)
        else:
            x = L.Conv2D(filters, kernel, strides=stride, padding="same" if kernel > 1 else "valid",
                         use_bias=False, name=nm("conv2d"))(x)
        return L.BatchNormalization(name=nm("batch_normalization"))(x)

    def block(x, cin, cout, stride, expand=4):
        h = L.ReLU(6.0, name=nm("re_lu"))(cbr(x, cin * expand, 1))
        h = L.ReLU(6.0, name=nm("re_lu"))(cbr(h, None, 3, stride, depthwise=True))
        h = cbr(h, cout, 1)
        return L.Add(name=nm("add"))([x, h]) if stride == 1 and cin == cout else h

    i = _input(input_shape)
    x = L.ReLU(6.0, name=nm("re_lu"))(cbr(i, 16, 3, 2))
    x = block(x, 16, 16, 1)
    x = block(x, 16, 24, 2)
    x = block(x, 24, 24, 1)
    x = L.ReLU(6.0, name=nm("re_lu"))(cbr(x, 64, 1))
    x = L.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    return keras.Model(i, L.Dense(num_classes, name="dense")(x), name="model")


# --------------------------------------------------------------------------------------------
# MLPerf Tiny image classification: ResNet-8 (resnet_v1_eembc, mlcommons/tiny v1.1)


def resnet8(input_shape=(32, 32, 3), num_classes=10, filters=16):
    """3x3 stem + 3 residual stacks (filters, 2x, 4x; stacks 2 and 3 start with stride 2 and a
    1x1 stride-2 conv on the shortcut, which has no BatchNorm), AveragePooling over the whole
    final map, Flatten, Dense softmax. Convs: he_normal, L2 1e-4, bias on; Dense: he_normal."""
    nm = _Names()

    def conv(x, f, k, s):
        return L.Conv2D(f, k, strides=s, padding="same", kernel_initializer="he_normal",
                        kernel_regularizer=l2(1e-4), name=nm("conv2d"))(x)

    def bn(x):
        return L.BatchNormalization(name=nm("batch_normalization"))(x)

    def relu(x):
        return L.Activation("relu", name=nm("activation"))(x)

    i = _input(input_shape)
    x = relu(bn(conv(i, filters, 3, 1)))
    # stack 1: identity shortcut
    y = relu(bn(conv(x, filters, 3, 1)))
    y = bn(conv(y, filters, 3, 1))
    x = relu(L.Add(name=nm("add"))([x, y]))
    # stacks 2, 3: stride-2 first conv, 1x1 stride-2 projection shortcut (created after y)
    for mult in (2, 4):
        f = filters * mult
        y = relu(bn(conv(x, f, 3, 2)))
        y = bn(conv(y, f, 3, 1))
        s = conv(x, f, 1, 2)
        x = relu(L.Add(name=nm("add"))([s, y]))
    pool = int(min(x.shape[1], x.shape[2]))
    x = L.AveragePooling2D(pool_size=pool, name="average_pooling2d")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(num_classes, activation="softmax", kernel_initializer="he_normal", name="dense")(x)
    return keras.Model(i, out, name="model")


# --------------------------------------------------------------------------------------------
# MLPerf Tiny keyword spotting: DS-CNN (keras_model.py 'ds_cnn', mlcommons/tiny v1.1)


def ds_cnn(input_shape=(49, 10, 1), num_classes=12, filters=64, final_pool="code"):
    """Conv2D(64, 10x4, stride 2, same) + BN + ReLU + Dropout(0.2), 4 x [DepthwiseConv2D 3x3 +
    BN + ReLU, Conv2D 64 1x1 + BN + ReLU], Dropout(0.4), AveragePooling2D, Flatten, Dense
    softmax. All convs keep their bias; Conv2D kernels glorot_uniform + L2 1e-4; depthwise
    kernels glorot_uniform, no L2 (see module doc).

    final_pool="code": pool (H//2, W//2) of the *input* size, as keras_model.py computes it
    since 2021-04 ((24, 5) at 49x10, on a 25x5 map: the last time step is dropped).
    final_pool="global": pool over the whole final map ((25, 5) at 49x10), which is what the
    shipped pretrained kws_ref_model was built with (keras_model.py hard-coded (25, 5) then)."""
    nm = _Names()

    def bn_relu(x):
        x = L.BatchNormalization(name=nm("batch_normalization"))(x)
        return L.Activation("relu", name=nm("activation"))(x)

    h, w = int(input_shape[0]), int(input_shape[1])
    i = _input(input_shape)
    x = L.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=l2(1e-4),
                 name=nm("conv2d"))(i)
    x = bn_relu(x)
    x = L.Dropout(0.2, name=nm("dropout"))(x)
    for _ in range(4):
        x = L.DepthwiseConv2D((3, 3), depth_multiplier=1, padding="same",
                              depthwise_initializer="glorot_uniform", depthwise_regularizer=None,
                              name=nm("depthwise_conv2d"))(x)
        x = bn_relu(x)
        x = L.Conv2D(filters, (1, 1), padding="same", kernel_regularizer=l2(1e-4),
                     name=nm("conv2d"))(x)
        x = bn_relu(x)
    x = L.Dropout(0.4, name=nm("dropout"))(x)
    if final_pool == "global":
        pool = (int(x.shape[1]), int(x.shape[2]))
    elif final_pool == "code":
        pool = (h // 2, w // 2)
    else:
        raise ValueError(f"final_pool must be 'code' or 'global', not {final_pool!r}")
    x = L.AveragePooling2D(pool_size=pool, name="average_pooling2d")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(num_classes, activation="softmax", name="dense")(x)
    return keras.Model(i, out, name="model")


# --------------------------------------------------------------------------------------------
# MLPerf Tiny visual wake words: EEMBC MobileNetV1 alpha 0.25 (vww_model.py, mlcommons/tiny v1.1)

# (stride of the depthwise conv, output channels of the following 1x1 conv) for the 13
# depthwise-separable layers, at alpha 0.25 (the reference hard-codes 8 and doubles it).
_MBV1_025 = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128),
             (1, 128), (1, 128), (1, 128), (1, 128), (1, 128), (2, 256), (1, 256)]


def mobilenet_v1_025(input_shape=(96, 96, 3), num_classes=2):
    """Conv2D(8, 3x3, stride 2, same) + BN + ReLU, 13 x [DepthwiseConv2D 3x3 (same) + BN + ReLU,
    Conv2D 1x1 + BN + ReLU], AveragePooling2D over the whole final map, Flatten, Dense
    softmax. Plain ReLU (not ReLU6), all convs keep their bias, no dropout. Conv2D kernels
    he_normal + L2 1e-4; depthwise kernels glorot_uniform, no L2 (see module doc)."""
    nm = _Names()

    def bn_relu(x):
        x = L.BatchNormalization(name=nm("batch_normalization"))(x)
        return L.Activation("relu", name=nm("activation"))(x)

    def pw(x, f, k=1, s=1):
        return L.Conv2D(f, k, strides=s, padding="same", kernel_initializer="he_normal",
                        kernel_regularizer=l2(1e-4), name=nm("conv2d"))(x)

    i = _input(input_shape)
    x = bn_relu(pw(i, 8, 3, 2))
    for stride, f in _MBV1_025:
        x = L.DepthwiseConv2D(3, strides=stride, padding="same",
                              depthwise_initializer="glorot_uniform", depthwise_regularizer=None,
                              name=nm("depthwise_conv2d"))(x)
        x = bn_relu(x)
        x = bn_relu(pw(x, f))
    x = L.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])), name="average_pooling2d")(x)
    x = L.Flatten(name="flatten")(x)
    out = L.Dense(num_classes, activation="softmax", name="dense")(x)
    return keras.Model(i, out, name="model")


# --------------------------------------------------------------------------------------------
# keras.applications.MobileNetV2, alpha 0.35 (same layers, names, configs as the application)


def _make_divisible(v, divisor=8):
    """Round to the nearest multiple of `divisor` (at least `divisor`), and up one more step if
    that lost more than 10%."""
    r = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return r + divisor if r < 0.9 * v else r


# (expansion t, output channels c at alpha 1, stride s) for the 17 inverted residual blocks
_MBV2_BLOCKS = [(1, 16, 1),
                (6, 24, 2), (6, 24, 1),
                (6, 32, 2), (6, 32, 1), (6, 32, 1),
                (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
                (6, 96, 1), (6, 96, 1), (6, 96, 1),
                (6, 160, 2), (6, 160, 1), (6, 160, 1),
                (6, 320, 1)]


def mobilenet_v2_035(input_shape=(96, 96, 3), num_classes=2, alpha=0.35,
                     classifier_activation="softmax"):
    """MobileNetV2 as keras.applications builds it with weights=None, include_top=True.
    BN epsilon 1e-3, momentum 0.999; ReLU(6); no conv bias; default initializers (glorot
    uniform kernels, zero biases); no regularizers. Stride-2 depthwise convs are 'valid' after
    a ZeroPadding2D of ((s%2, 1), (s%2, 1)) for input size s (i.e. ((0,1),(0,1)) when even).
    Unlike the application, this also builds below 32x32 and with 1 input channel."""

    def bn(x, name):
        return L.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=name)(x)

    i = _input(input_shape)
    x = L.Conv2D(_make_divisible(32 * alpha), 3, strides=(2, 2), padding="same", use_bias=False,
                 name="Conv1")(i)
    x = L.ReLU(6.0, name="Conv1_relu")(bn(x, "bn_Conv1"))
    for block_id, (t, c, s) in enumerate(_MBV2_BLOCKS):
        cin = int(x.shape[-1])
        cout = _make_divisible(int(c * alpha))
        inp = x
        if block_id:
            p = f"block_{block_id}_"
            x = L.Conv2D(t * cin, 1, padding="same", use_bias=False, name=p + "expand")(x)
            x = L.ReLU(6.0, name=p + "expand_relu")(bn(x, p + "expand_BN"))
        else:
            p = "expanded_conv_"
        if s == 2:
            pads = tuple((int(d) % 2, 1) for d in x.shape[1:3])
            x = L.ZeroPadding2D(padding=pads, name=p + "pad")(x)
        x = L.DepthwiseConv2D(3, strides=s, use_bias=False, padding="same" if s == 1 else "valid",
                              name=p + "depthwise")(x)
        x = L.ReLU(6.0, name=p + "depthwise_relu")(bn(x, p + "depthwise_BN"))
        x = L.Conv2D(cout, 1, padding="same", use_bias=False, name=p + "project")(x)
        x = bn(x, p + "project_BN")
        if cin == cout and s == 1:
            x = L.Add(name=p + "add")([inp, x])
    last = _make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = L.Conv2D(last, 1, use_bias=False, name="Conv_1")(x)
    x = L.ReLU(6.0, name="out_relu")(bn(x, "Conv_1_bn"))
    x = L.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    out = L.Dense(num_classes, activation=classifier_activation, name="predictions")(x)
    return keras.Model(i, out, name=f"mobilenetv2_{alpha:0.2f}_{int(input_shape[0])}")


# --------------------------------------------------------------------------------------------

MODELS = {
    "mnist_cnn": mnist_cnn,
    "mbv2_tiny": mbv2_tiny,
    "resnet8": resnet8,
    "ds_cnn": ds_cnn,
    "mobilenet_v1_025": mobilenet_v1_025,
    "mobilenet_v2_035": mobilenet_v2_035,
}
DEFAULT_INPUT = {
    "mnist_cnn": (28, 28, 1),
    "mbv2_tiny": (28, 28, 1),
    "resnet8": (32, 32, 3),
    "ds_cnn": (49, 10, 1),
    "mobilenet_v1_025": (96, 96, 3),
    "mobilenet_v2_035": (96, 96, 3),
}
DEFAULT_CLASSES = {"mnist_cnn": 10, "mbv2_tiny": 10, "resnet8": 10, "ds_cnn": 12,
                   "mobilenet_v1_025": 2, "mobilenet_v2_035": 2}


def build(name, input_shape=None, num_classes=None):
    return MODELS[name](input_shape=tuple(input_shape or DEFAULT_INPUT[name]),
                        num_classes=num_classes or DEFAULT_CLASSES[name])


def outputs_logits(model):
    """True when the last layer has no softmax (train with from_logits=True)."""
    act = model.layers[-1].get_config().get("activation")
    return act in (None, "linear")


def _shape(s):
    return "x".join(str(d) for d in s[1:])


def layer_table(model):
    """One dict per layer: class, name, a short config, output shape, params, forward MACs
    (multiply-accumulates of Conv2D / DepthwiseConv2D / Dense per sample; 0 elsewhere)."""
    rows = []
    for layer in model.layers:
        c = layer.get_config()
        cls = type(layer).__name__
        out = layer.output_shape[0] if isinstance(layer.output_shape, list) else layer.output_shape
        macs, cfg = 0, []
        init = lambda k: (c[k]["class_name"] if isinstance(c.get(k), dict) else c.get(k))  # noqa: E731
        reg = lambda k: ("l2(%g)" % c[k]["config"]["l2"] if isinstance(c.get(k), dict) else "-")  # noqa: E731
        if cls == "Conv2D":
            kh, kw = c["kernel_size"]
            cin = layer.input_shape[-1]
            macs = out[1] * out[2] * out[3] * kh * kw * cin
            cfg = [f"{c['filters']} {kh}x{kw} /{c['strides'][0]}{'' if c['strides'][0]==c['strides'][1] else 'x'+str(c['strides'][1])} {c['padding']}",
                   "bias" if c["use_bias"] else "no bias", f"act {c['activation']}",
                   f"init {init('kernel_initializer')}", f"reg {reg('kernel_regularizer')}"]
        elif cls == "DepthwiseConv2D":
            kh, kw = c["kernel_size"]
            macs = out[1] * out[2] * out[3] * kh * kw
            cfg = [f"{kh}x{kw} x{c['depth_multiplier']} /{c['strides'][0]} {c['padding']}",
                   "bias" if c["use_bias"] else "no bias", f"act {c['activation']}",
                   f"init {init('depthwise_initializer')}", f"reg {reg('depthwise_regularizer')}"]
        elif cls == "Dense":
            macs = layer.input_shape[-1] * c["units"]
            cfg = [f"{c['units']} units", "bias" if c["use_bias"] else "no bias",
                   f"act {c['activation']}", f"init {init('kernel_initializer')}",
                   f"reg {reg('kernel_regularizer')}"]
        elif cls == "BatchNormalization":
            cfg = [f"eps {c['epsilon']:g}", f"mom {c['momentum']:g}"]
        elif cls == "ReLU":
            cfg = [f"max {c['max_value']:g}" if c["max_value"] is not None else "max none"]
        elif cls == "Activation":
            cfg = [c["activation"]]
        elif cls in ("AveragePooling2D", "MaxPooling2D"):
            cfg = [f"pool {tuple(c['pool_size'])} /{tuple(c['strides'])} {c['padding']}"]
        elif cls == "Dropout":
            cfg = [f"rate {c['rate']:g}"]
        elif cls == "ZeroPadding2D":
            cfg = [f"pad {tuple(tuple(p) for p in c['padding'])}"]
        rows.append(dict(cls=cls, name=layer.name, config=", ".join(cfg), out=_shape(out),
                         params=layer.count_params(), macs=int(macs)))
    return rows


def forward_macs(model):
    return sum(r["macs"] for r in layer_table(model))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="print a model's layer table (markdown)")
    ap.add_argument("--model", choices=MODELS, default="resnet8")
    ap.add_argument("--input-shape", default=None, help="H,W,C")
    ap.add_argument("--classes", type=int, default=None)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.input_shape.split(",")) if a.input_shape else None
    m = build(a.model, shape, a.classes)
    print("| # | class | name | config | output | params | MACs |")
    print("|---|---|---|---|---|---|---|")
    rows = layer_table(m)
    for k, r in enumerate(rows):
        print(f"| {k} | {r['cls']} | {r['name']} | {r['config']} | {r['out']} | {r['params']} | {r['macs']} |")
    trainable = sum(int(keras.backend.count_params(w)) for w in m.trainable_weights)
    print(f"\ntotal params {m.count_params()} (trainable {trainable}), "
          f"forward MACs {sum(r['macs'] for r in rows)}")
