"""TFMOT QAT training throughput on the six reference models (scripts/tfmot_models.py).

An extension of the `throughput` mode of ../shared/bench/tfmot_reference.py, same
methodology: quantize_model (TFMOT default 8-bit), compile with Adam, one warm-up fit of 5
batches (traces the train function), then one timed fit of --steps batches, one epoch,
samples/s = samples / wall time of that fit. Instead of MNIST it trains on random data of
the model's input shape (uniform [0, 1), seeded) with random labels in the model's class
count, so any model and input shape can be timed.

usage: python scripts/tfmot_bench.py --model resnet8 [--input-shape 32,32,3] [--batch 32]
                                     [--steps 60] [--warmup 5] [--classes N] [--seed 0]

Prints one JSON line: samples/s over the whole timed fit (as the original script), plus
per-step wall times measured by a callback (train-batch begin to end, timed fit only):
mean and median in ms, samples/s at the median step, and the process' peak RSS
(getrusage ru_maxrss, which covers the whole run: model build, tracing, warm-up).

Loss: sparse categorical cross-entropy, from_logits=True for models that output logits
(mnist_cnn, mbv2_tiny) and False for those ending in softmax (the MLPerf Tiny models and
MobileNetV2), i.e. each model trains the way its reference does.
"""
import argparse, json, os, resource, statistics, sys, time
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfmot_models as M


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=M.MODELS, default="mnist_cnn")
    ap.add_argument("--input-shape", default=None, help="H,W,C (default: the model's own)")
    ap.add_argument("--classes", type=int, default=None, help="default: the model's own")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5, help="warm-up batches (original: 5)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    shape = tuple(int(v) for v in a.input_shape.split(",")) if a.input_shape else M.DEFAULT_INPUT[a.model]
    classes = a.classes or M.DEFAULT_CLASSES[a.model]
    keras.utils.set_random_seed(a.seed)
    model = M.build(a.model, shape, classes)
    logits = M.outputs_logits(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)

    n = a.batch * a.steps
    nw = a.batch * a.warmup
    rng = np.random.default_rng(a.seed)
    x = rng.random((max(n, nw),) + shape, dtype=np.float32)
    y = rng.integers(0, classes, size=(max(n, nw),)).astype(np.int64)

    res = {"model": a.model, "tf": tf.__version__, "tfmot": tfmot.__version__,
           "input_shape": list(shape), "classes": classes, "from_logits": logits,
           "params": model.count_params(), "forward_macs_per_sample": M.forward_macs(model)}
    q = tfmot.quantization.keras.quantize_model(model)
    q.compile(optimizer="adam", loss=loss)
    q.fit(x[:nw], y[:nw], batch_size=a.batch, epochs=1, verbose=0)
    timer = StepTimer()
    t = time.perf_counter()
    q.fit(x[:n], y[:n], batch_size=a.batch, epochs=1, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - t
    med = statistics.median(timer.times)
    res.update(batch=a.batch, steps=a.steps, warmup_steps=a.warmup,
               qat_train_samples_per_s=n / wall,
               step_ms_mean=1e3 * statistics.fmean(timer.times),
               step_ms_median=1e3 * med,
               samples_per_s_at_median_step=a.batch / med,
               timed_fit_s=wall,
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
