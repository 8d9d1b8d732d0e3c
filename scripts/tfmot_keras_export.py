#!/usr/bin/env python3
"""TFMOT's int8 export of a legacy Keras .h5 model, for side-by-side comparison with qatc.

usage: tfmot_keras_export.py MODEL.h5 OUT.tflite [--summary OUT.json] [--int8-io]
                             [--calibrate N]

Loads MODEL.h5 with tf_keras (TFMOT 0.8 supports only Keras 2, hence TF_USE_LEGACY_KERAS=1),
wraps it with tfmot.quantization.keras.quantize_model (the default 8-bit QAT scheme), converts
the QAT model with the TFLite converter (optimizations=[Optimize.DEFAULT]) and writes OUT.tflite.
No training: TFMOT's fake-quant ranges only move in training mode, so by default they keep
their initial values (activations +-6, the input range empty, weights +-6): the file shows the
operator and quantization *layout* faithfully, not useful scales. --calibrate N runs N
training-mode forward passes on random inputs first: weight and input ranges become real, the
activation EMA (decay 0.999) barely moves in a few steps, and BatchNorm's moving statistics
drift by about 1% per pass, so the float function changes slightly.

Prints the operators of the result (read from the flatbuffer) and, per tensor, its type and
quantization (per-tensor scale, or the number of per-axis scales and quantized_dimension, zero
points), and with --summary writes the same (plus tensor names) as JSON.

Runs in the venv of ../shared/bench/setup.sh:
    py=$(../shared/bench/setup.sh)
    $py scripts/tfmot_keras_export.py tests/fixtures/keras/conv_bn_relu_dense.h5 /tmp/cbrd_int8.tflite
"""
import argparse
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras is tf_keras: TFMOT needs Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings

import numpy as np
import tensorflow as tf
import tf_keras

warnings.filterwarnings("ignore", category=UserWarning)  # converter: "Statistics for quantized inputs..."
import tensorflow_model_optimization as tfmot


def qat_model(path, calibrate):
    model = tf_keras.models.load_model(path, compile=False)
    q = tfmot.quantization.keras.quantize_model(model)
    if calibrate:
        rng = np.random.default_rng(0)
        shape = (8,) + tuple(model.input_shape[1:])
        for _ in range(calibrate):
            q(rng.normal(size=shape).astype("float32"), training=True)
    return model, q


def convert(q, int8_io):
    conv = tf.lite.TFLiteConverter.from_keras_model(q)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def describe(tflite_bytes):
    """Operators and tensors of a .tflite, read from the flatbuffer itself with the schema
    bindings TensorFlow ships (the interpreter would show XNNPACK's DELEGATE node instead)."""
    from tensorflow.lite.python import schema_py_generated as S
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(tflite_bytes, 0))
    g = m.subgraphs[0]
    op_names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
    act_names = {v: k for k, v in vars(S.ActivationFunctionType).items() if not k.startswith("_")}
    tensors = {}
    for i, t in enumerate(g.tensors):
        q = t.quantization
        scales = [] if q is None or q.scale is None else [float(v) for v in q.scale]
        zps = [] if q is None or q.zeroPoint is None else [int(v) for v in q.zeroPoint]
        buf = m.buffers[t.buffer].data if t.buffer < len(m.buffers) else None
        tensors[i] = {
            "name": t.name.decode(),
            "dtype": type_names[t.type],
            "shape": [int(v) for v in t.shape],
            "shape_signature": None if t.shapeSignature is None else [int(v) for v in t.shapeSignature],
            "constant": buf is not None and len(buf) > 0,
            "num_scales": len(scales),
            "scales": scales if len(scales) <= 4 else scales[:4] + ["..."],
            "zero_points": sorted(set(zps)),
            "quantized_dimension": int(q.quantizedDimension) if q is not None else 0,
        }
    ops = []
    for k, op in enumerate(g.operators):
        code = m.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)  # schema v3a keeps two fields
        opts = op.builtinOptions
        fused = getattr(opts, "fusedActivationFunction", None)
        ops.append({
            "index": k,
            "op": op_names.get(builtin, str(builtin)),
            "version": int(code.version),
            "fused_activation": act_names.get(fused) if fused is not None else None,
            "inputs": [int(i) for i in op.inputs if i >= 0],
            "outputs": [int(i) for i in op.outputs],
        })
    io = {"inputs": [int(i) for i in g.inputs], "outputs": [int(i) for i in g.outputs]}
    return {"ops": ops, "tensors": tensors, "io": io}


def print_summary(info, out=sys.stdout):
    t = info["tensors"]
    for op in info["ops"]:
        fused = f" fused {op['fused_activation']}" if op["fused_activation"] not in (None, "NONE") else ""
        print(f"#{op['index']:<2d} {op['op']} (v{op['version']}){fused}", file=out)
        for role, idxs in (("in ", op["inputs"]), ("out", op["outputs"])):
            for i in idxs:
                d = t[i]
                if d["num_scales"] == 1:
                    q = f"per-tensor scale {d['scales'][0]:.6g} zp {d['zero_points'][0]}"
                elif d["num_scales"]:
                    q = (f"per-axis x{d['num_scales']} (dim {d['quantized_dimension']}) "
                         f"zp {d['zero_points']}")
                else:
                    q = "not quantized"
                const = "const " if d["constant"] else ""
                print(f"      {role} t{i:<3d} {const}{d['dtype']:8s} {str(d['shape']):16s} {q}", file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a legacy .h5 Keras model (tf_keras)")
    ap.add_argument("out", help="where to write the int8 .tflite")
    ap.add_argument("--summary", help="also write the operator/tensor summary as JSON here")
    ap.add_argument("--int8-io", action="store_true", help="int8 model input and output (default float)")
    ap.add_argument("--calibrate", type=int, default=0, metavar="N",
                    help="N training-mode forward passes on random data before converting")
    a = ap.parse_args()
    model, q = qat_model(a.model, a.calibrate)
    tfl = convert(q, a.int8_io)
    with open(a.out, "wb") as f:
        f.write(tfl)
    info = describe(tfl)
    info["source"] = os.path.basename(a.model)
    info["qat_layers"] = [f"{l.name}: {type(l).__name__}"
                          + (f"({type(l.layer).__name__})" if hasattr(l, "layer") else "") for l in q.layers]
    info["versions"] = {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
                        "tfmot": tfmot.__version__ if hasattr(tfmot, "__version__") else "0.8.x"}
    print(f"{a.model} -> {a.out} ({len(tfl)} bytes); model inputs {info['io']['inputs']}, "
          f"outputs {info['io']['outputs']}")
    print_summary(info)
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump(info, f, indent=2, default=str)
            f.write("\n")


if __name__ == "__main__":
    main()
