#!/usr/bin/env python3
"""Runs .tflite models in the real LiteRT runtime (ai-edge-litert) for qatc's interop tests.

usage: litert_run.py JOBS.json RESULTS.json
       litert_run.py --version

JOBS.json is a list of jobs, each
    {"model": "m.tflite", "resolver": "ref" | "default",
     "inputs": ["x0.npy", ...], "outputs": ["y0.npy", ...]}
"ref" loads the model with OpResolverType.BUILTIN_REF (LiteRT's reference kernels, no
delegates); "default" with the default resolver (optimized kernels plus XNNPACK). Each
input is resized to its array's shape (so a batch can be fed), the model is invoked once
and every output is saved, in the model's output order. RESULTS.json receives one entry
per job: {"ok": true} or {"ok": false, "error": "..."}; one job failing does not stop the
others. All jobs run in one process so the runtime is imported once.
"""

import json
import sys
import traceback


def run_job(job, Interpreter, OpResolverType, np):
    resolver = {
        "ref": OpResolverType.BUILTIN_REF,
        "default": OpResolverType.AUTO,
    }[job["resolver"]]
    with open(job["model"], "rb") as f:
        content = f.read()
    interp = Interpreter(model_content=content, experimental_op_resolver_type=resolver)
    inputs = [np.load(p) for p in job["inputs"]]
    details = interp.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"model has {len(details)} inputs, job gives {len(inputs)}")
    for d, x in zip(details, inputs):
        if tuple(d["shape"]) != x.shape:
            interp.resize_tensor_input(d["index"], list(x.shape), strict=False)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], x.astype(d["dtype"], copy=False))
    interp.invoke()
    outs = interp.get_output_details()
    if len(outs) != len(job["outputs"]):
        raise ValueError(f"model has {len(outs)} outputs, job expects {len(job['outputs'])}")
    for d, path in zip(outs, job["outputs"]):
        np.save(path, interp.get_tensor(d["index"]))


def main():
    import numpy as np
    from ai_edge_litert import interpreter as litert
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if sys.argv[1:] == ["--version"]:
        import importlib.metadata as md

        print(md.version("ai-edge-litert"))
        return 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    results = []
    for job in jobs:
        try:
            run_job(job, Interpreter, OpResolverType, np)
            results.append({"ok": True})
        except Exception as e:  # reported per job, the Rust test names the model
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}",
                            "trace": traceback.format_exc()})
    del litert
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
