#!/usr/bin/env python3
"""MNIST test accuracy of a .tflite model in the real LiteRT runtime (ai-edge-litert).

usage: litert_eval.py MODEL.tflite [--data data/mnist] [--resolver ref|default] [--batch 500]
                      [--threads N]

The same measurement as `qatc eval MODEL.tflite` (qatc's integer interpreter), made by LiteRT
instead, so the two can be put side by side: pixels scaled to [0, 1], NHWC 28x28x1, argmax of
the output. With `--predictions FILE.npy` the predicted classes are saved too. Prints one JSON
line: {"model": ..., "resolver": ..., "accuracy": ..., "correct": ..., "total": ..., "seconds":
..., "ms_per_image_per_thread": ...}; `seconds` times the invoke loop alone (`default` is
LiteRT's builtin kernels with the XNNPACK delegate, on --threads threads). The interpreter is
resized only when the batch shape changes, and the first run after each resize is not timed.

Runs in the venv scripts/test.sh makes (target/litert-venv/bin/python).
"""

import argparse
import gzip
import json
import os
import struct
import sys


def read_idx(path, np):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "mnist"))
    ap.add_argument("--resolver", choices=["ref", "default"], default="ref")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--predictions", help="save the predicted classes (int64 .npy)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    images = read_idx(os.path.join(a.data, "t10k-images.idx3-ubyte.gz"), np)
    labels = read_idx(os.path.join(a.data, "t10k-labels.idx1-ubyte.gz"), np)
    x = (images.astype(np.float32) / 255.0)[..., None]

    resolver = {"ref": OpResolverType.BUILTIN_REF, "default": OpResolverType.AUTO}[a.resolver]
    with open(a.model, "rb") as f:
        it = Interpreter(model_content=f.read(), experimental_op_resolver_type=resolver,
                         num_threads=a.threads)
    inp = it.get_input_details()[0]
    out = it.get_output_details()[0]
    preds = []
    import time
    seconds = 0.0
    shape = None
    for k in range(0, len(x), a.batch):
        xb = x[k:k + a.batch]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            q = xb / scale  # rounded half away from zero, like LiteRT's QUANTIZE
            q = np.sign(q) * np.floor(np.abs(q) + 0.5) + zero
            xb = np.clip(q, info.min, info.max).astype(inp["dtype"])
        if shape != xb.shape:
            # a new batch shape: resize, and one untimed run (a delegate such as XNNPACK
            # prepares its kernels on the first run after an allocation)
            shape = xb.shape
            it.resize_tensor_input(inp["index"], list(shape), strict=False)
            it.allocate_tensors()
            it.set_tensor(inp["index"], xb)
            it.invoke()
        it.set_tensor(inp["index"], xb)
        t = time.perf_counter()
        it.invoke()
        seconds += time.perf_counter() - t
        preds.append(it.get_tensor(out["index"]).argmax(axis=1))
    preds = np.concatenate(preds)
    if a.predictions:
        np.save(a.predictions, preds.astype(np.int64))
    correct = int((preds == labels).sum())
    json.dump({"model": a.model, "resolver": a.resolver, "accuracy": correct / len(labels),
               "correct": correct, "total": int(len(labels)), "seconds": seconds,
               "ms_per_image_per_thread": 1e3 * seconds * a.threads / len(labels)}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
