#!/usr/bin/env python3
"""qatc's post-training quantization side by side with the TFLite converter's.

usage: ptq_converter.py [--model mbv2_tiny|mnist_cnn] [--epochs N] [--calibration-samples N]
                        [--qatc target/release/qatc] [--work DIR]

1. Builds the model in tf_keras (scripts/tfmot_models.py), trains it in float on the MNIST
   copy in data/mnist (pixels in [0, 1], Adam 1e-3, batch 64, seed 0) and saves it as .h5.
2. The TFLite converter's full-integer PTQ of that model: optimizations=[Optimize.DEFAULT],
   representative_dataset = the first N training images (one per call, in order), int8
   kernels only (TFLITE_BUILTINS_INT8), float input and output.
3. `qatc ptq --model model.h5 --calibration-samples N`: the same float weights, the same N
   calibration images in the same order, min/max ranges.
4. Both files on the 10 000 test images in LiteRT (default resolver), the operators of both
   (read from the flatbuffers), the per-axis layout of their constant tensors, and the
   activation scales of tensors both files name alike.

Runs in the venv of ../shared/bench/setup.sh (TF 2.21, tf_keras, ai-edge-litert), after
`cargo build --release`:
    py=$(../shared/bench/setup.sh)
    $py scripts/ptq_converter.py --model mbv2_tiny --epochs 1
"""
import argparse
import gzip
import os
import subprocess
import sys
import json

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tf_keras as keras

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import tfmot_models as M  # noqa: E402
from tfmot_keras_export import describe  # noqa: E402


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mnist():
    d = os.path.join(ROOT, "data", "mnist")
    x_train = idx(os.path.join(d, "train-images.idx3-ubyte.gz")).astype("float32")[..., None] / 255.0
    y_train = idx(os.path.join(d, "train-labels.idx1-ubyte.gz")).astype("int64")
    x_test = idx(os.path.join(d, "t10k-images.idx3-ubyte.gz")).astype("float32")[..., None] / 255.0
    y_test = idx(os.path.join(d, "t10k-labels.idx1-ubyte.gz")).astype("int64")
    return x_train, y_train, x_test, y_test


def converter_ptq(model, calib):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative_dataset():
        for i in range(len(calib)):
            yield [calib[i: i + 1]]

    conv.representative_dataset = representative_dataset
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def accuracy(tflite_bytes, x, y, batch=500):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=tflite_bytes, num_threads=1)
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [batch] + list(x.shape[1:]))
    it.allocate_tensors()
    hits = 0
    for s in range(0, len(x), batch):
        xb = x[s: s + batch]
        if len(xb) < batch:
            it.resize_tensor_input(inp["index"], [len(xb)] + list(x.shape[1:]))
            it.allocate_tensors()
        it.set_tensor(inp["index"], xb)
        it.invoke()
        hits += int((it.get_tensor(out["index"]).argmax(-1) == y[s: s + batch]).sum())
    return hits / len(x)


def op_list(info):
    out = []
    for op in info["ops"]:
        f = op["fused_activation"]
        out.append(op["op"] + (f"+{f}" if f not in (None, "NONE") else ""))
    return out


def const_layout(info):
    """(op, input slot, dtype, number of scales, quantized dimension) of every constant
    operand, in operator order."""
    t = info["tensors"]
    rows = []
    for op in info["ops"]:
        for slot, i in enumerate(op["inputs"]):
            d = t[i]
            if d["constant"]:
                rows.append((op["op"], slot, d["dtype"], d["num_scales"], d["quantized_dimension"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mbv2_tiny", choices=["mbv2_tiny", "mnist_cnn"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--calibration-samples", type=int, default=512)
    ap.add_argument("--qatc", default=os.path.join(ROOT, "target", "release", "qatc"))
    ap.add_argument("--work", default="/tmp/qatc-ptq-converter")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)

    x_train, y_train, x_test, y_test = mnist()
    keras.utils.set_random_seed(0)
    model = M.build(a.model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    if a.epochs:
        model.fit(x_train, y_train, batch_size=64, epochs=a.epochs, verbose=2, shuffle=True)
    float_acc = model.evaluate(x_test, y_test, batch_size=500, verbose=0)[1]
    h5 = os.path.join(a.work, f"{a.model}.h5")
    model.save(h5)

    calib = x_train[: a.calibration_samples]
    tfl = converter_ptq(model, calib)
    conv_path = os.path.join(a.work, f"{a.model}_converter_ptq.tflite")
    with open(conv_path, "wb") as f:
        f.write(tfl)

    out = os.path.join(a.work, "qatc")
    cmd = [a.qatc, "ptq", "--model", h5, "--calibration-samples", str(a.calibration_samples),
           "--out", out, "--quiet"]
    print("$", " ".join(cmd))
    subprocess.run(cmd, check=True)
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(out, f"{a.model}_ptq_int8.tflite"), "rb") as f:
        ours = f.read()

    ci, qi = describe(tfl), describe(ours)
    print(f"\nconverter operators ({len(ci['ops'])}): {' '.join(op_list(ci))}")
    print(f"qatc operators      ({len(qi['ops'])}): {' '.join(op_list(qi))}")
    print("same operators in the same order:", op_list(ci) == op_list(qi))
    cl, ql = const_layout(ci), const_layout(qi)
    print("same constant layout (op, slot, dtype, scales, quantized dim):", cl == ql)
    if cl != ql:
        for c, q in zip(cl, ql):
            if c != q:
                print("  converter", c, " qatc", q)

    # activation scales of the operator outputs, matched by position in the op sequence
    ratios = []
    if op_list(ci) == op_list(qi):
        for co, qo in zip(ci["ops"], qi["ops"]):
            for c, q in zip(co["outputs"], qo["outputs"]):
                sc, sq = ci["tensors"][c]["scales"], qi["tensors"][q]["scales"]
                if len(sc) == 1 and len(sq) == 1 and sc[0] > 0:
                    ratios.append(sq[0] / sc[0])
        r = np.array(ratios)
        print(f"activation scales qatc/converter over {len(r)} operator outputs: "
              f"median {np.median(r):.4f}, min {r.min():.4f}, max {r.max():.4f}")

    conv_acc = accuracy(tfl, x_test, y_test)
    ours_acc = accuracy(ours, x_test, y_test)
    print(f"\n{a.model}, {a.epochs} float epoch(s), {a.calibration_samples} calibration samples")
    print(f"  float (Keras)               {100 * float_acc:.2f}%")
    print(f"  TFLite converter PTQ int8   {100 * conv_acc:.2f}%  {len(tfl)} bytes  (LiteRT)")
    print(f"  qatc ptq int8               {100 * ours_acc:.2f}%  {len(ours)} bytes  (LiteRT)"
          f"; qatc's int8 interpreter {100 * report['ptq']['test_accuracy']:.2f}%")


if __name__ == "__main__":
    main()
