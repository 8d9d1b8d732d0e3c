"""PyTorch QAT training throughput on qatc's reference models, for the side-by-side table of
the README ("Reference models"): the same methodology as scripts/tfmot_bench.py.

The model (any of the six reference models, built here with the layer structure of
scripts/tfmot_models.py, NCHW) is prepared for quantization-aware training with FX graph
mode (`prepare_qat_fx` with the x86 backend's default QAT qconfig mapping: per-channel int8
weights, fake-quantized activations with moving-average observers; Conv+BatchNorm(+ReLU)
fused into QAT modules that fold the BatchNorm, as TFMOT does), then trained with Adam on
random data of the model's input shape with random labels: --warmup untimed steps, then
--steps timed ones. samples/s = samples / wall time of the timed steps; per-step median too.

usage: python scripts/pytorch_qat_bench.py --model resnet8 [--batch 64] [--steps 30]
                                            [--warmup 5] [--threads 2] [--input-shape H,W,C]

Prints one JSON line. Needs torch (pip install torch numpy).
"""
import argparse, json, resource, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qat_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_qat_fx


class MnistCnn(nn.Module):
    """Conv2D(12, 3x3, valid, ReLU) -> MaxPool 2x2 -> Flatten -> Dense."""

    def __init__(self, shape, classes):
        super().__init__()
        h, w, c = shape
        self.conv = nn.Conv2d(c, 12, 3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.dense = nn.Linear(12 * ((h - 2) // 2) * ((w - 2) // 2), classes)

    def forward(self, x):
        return self.dense(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def cbn(cin, cout, k, stride=1, groups=1, bias=False, pad=None):
    pad = k // 2 if pad is None else pad
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
    )


class Block(nn.Module):
    """Inverted residual: 1x1 expand, ReLU6, 3x3 depthwise, ReLU6, 1x1 project, residual add."""

    def __init__(self, cin, cout, stride, expand=4):
        super().__init__()
        e = cin * expand
        self.expand, self.r1 = cbn(cin, e, 1), nn.ReLU6()
        self.dw, self.r2 = cbn(e, e, 3, stride, groups=e), nn.ReLU6()
        self.project = cbn(e, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.project(self.r2(self.dw(self.r1(self.expand(x)))))
        return x + h if self.residual else h


class Mbv2Tiny(nn.Module):
    def __init__(self, shape, classes):
        super().__init__()
        c = shape[2]
        self.stem, self.r = cbn(c, 16, 3, 2), nn.ReLU6()
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 24, 2), Block(24, 24, 1))
        self.head, self.r2 = cbn(24, 64, 1), nn.ReLU6()
        self.dense = nn.Linear(64, classes)

    def forward(self, x):
        x = self.r2(self.head(self.blocks(self.r(self.stem(x)))))
        return self.dense(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNet8(nn.Module):
    """MLPerf Tiny ResNet-8: 3x3 stem, three residual stacks of 16/32/64 filters (stacks 2 and
    3 with a stride-2 first conv and a 1x1 stride-2 shortcut conv), average pool, dense."""

    def __init__(self, shape, classes, f=16):
        super().__init__()
        c = shape[2]
        self.stem, self.r0 = cbn(c, f, 3, bias=True), nn.ReLU()
        self.a1, self.ra1 = cbn(f, f, 3, bias=True), nn.ReLU()
        self.b1 = cbn(f, f, 3, bias=True)
        self.o1 = nn.ReLU()
        self.a2, self.ra2 = cbn(f, 2 * f, 3, 2, bias=True), nn.ReLU()
        self.b2 = cbn(2 * f, 2 * f, 3, bias=True)
        self.s2 = nn.Conv2d(f, 2 * f, 1, 2)
        self.o2 = nn.ReLU()
        self.a3, self.ra3 = cbn(2 * f, 4 * f, 3, 2, bias=True), nn.ReLU()
        self.b3 = cbn(4 * f, 4 * f, 3, bias=True)
        self.s3 = nn.Conv2d(2 * f, 4 * f, 1, 2)
        self.o3 = nn.ReLU()
        self.dense = nn.Linear(4 * f, classes)

    def forward(self, x):
        x = self.r0(self.stem(x))
        x = self.o1(x + self.b1(self.ra1(self.a1(x))))
        x = self.o2(self.s2(x) + self.b2(self.ra2(self.a2(x))))
        x = self.o3(self.s3(x) + self.b3(self.ra3(self.a3(x))))
        return self.dense(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DsCnn(nn.Module):
    """MLPerf Tiny keyword spotting: Conv 64 10x4 stride 2 + BN + ReLU + Dropout(0.2), 4 x
    [depthwise 3x3 + BN + ReLU, Conv 64 1x1 + BN + ReLU], Dropout(0.4), average pool
    (H//2, W//2) of the input size, dense. Padding (5, 1) gives TF's 'same' output size."""

    def __init__(self, shape, classes, f=64):
        super().__init__()
        h, w, c = shape
        layers = [cbn(c, f, (10, 4), 2, bias=True, pad=(5, 1)), nn.ReLU(), nn.Dropout(0.2)]
        for _ in range(4):
            layers += [cbn(f, f, 3, groups=f, bias=True), nn.ReLU()]
            layers += [cbn(f, f, 1, bias=True), nn.ReLU()]
        layers += [nn.Dropout(0.4), nn.AvgPool2d((h // 2, w // 2))]
        self.body = nn.Sequential(*layers)
        self.dense = nn.Linear(f, classes)

    def forward(self, x):
        return self.dense(torch.flatten(self.body(x), 1))


# (stride of the depthwise conv, output channels of the following 1x1 conv), alpha 0.25
MBV1_025 = [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128),
            (1, 128), (1, 128), (1, 128), (1, 128), (1, 128), (2, 256), (1, 256)]


class MobileNetV1025(nn.Module):
    """MLPerf Tiny visual wake words: Conv 8 3x3 stride 2 + BN + ReLU, 13 x [depthwise 3x3 +
    BN + ReLU, Conv 1x1 + BN + ReLU], average pool over the final map, dense."""

    def __init__(self, shape, classes):
        super().__init__()
        c = shape[2]
        layers, cin = [cbn(c, 8, 3, 2, bias=True), nn.ReLU()], 8
        for stride, f in MBV1_025:
            layers += [cbn(cin, cin, 3, stride, groups=cin, bias=True), nn.ReLU()]
            layers += [cbn(cin, f, 1, bias=True), nn.ReLU()]
            cin = f
        self.body = nn.Sequential(*layers)
        self.dense = nn.Linear(cin, classes)

    def forward(self, x):
        return self.dense(torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1))


def make_divisible(v, divisor=8):
    r = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return r + divisor if r < 0.9 * v else r


# (expansion, output channels at alpha 1, stride) of MobileNetV2's 17 inverted residual blocks
MBV2_BLOCKS = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1),
               (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1),
               (6, 96, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1), (6, 320, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        e = cin * t
        layers = [cbn(cin, e, 1), nn.ReLU6()] if t != 1 else []
        layers += [cbn(e, e, 3, stride, groups=e), nn.ReLU6(), cbn(e, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.body(x)
        return x + h if self.residual else h


class MobileNetV2035(nn.Module):
    """keras.applications.MobileNetV2 at alpha 0.35: Conv 3x3 stride 2 + BN + ReLU6, the 17
    inverted residual blocks, Conv 1280 1x1 + BN + ReLU6, global average pool, dense."""

    def __init__(self, shape, classes, alpha=0.35):
        super().__init__()
        cin = make_divisible(32 * alpha)
        layers = [cbn(shape[2], cin, 3, 2), nn.ReLU6()]
        for t, c, s in MBV2_BLOCKS:
            cout = make_divisible(int(c * alpha))
            layers.append(InvertedResidual(cin, cout, s, t))
            cin = cout
        layers += [cbn(cin, 1280, 1), nn.ReLU6()]
        self.body = nn.Sequential(*layers)
        self.dense = nn.Linear(1280, classes)

    def forward(self, x):
        return self.dense(torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1))


MODELS = {
    "mnist_cnn": (MnistCnn, (28, 28, 1), 10),
    "mbv2_tiny": (Mbv2Tiny, (28, 28, 1), 10),
    "resnet8": (ResNet8, (32, 32, 3), 10),
    "ds_cnn": (DsCnn, (49, 10, 1), 12),
    "mobilenet_v1_025": (MobileNetV1025, (96, 96, 3), 2),
    "mobilenet_v2_035": (MobileNetV2035, (96, 96, 3), 2),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=list(MODELS), default="mnist_cnn")
    ap.add_argument("--input-shape", default=None, help="H,W,C (default: the model's own)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    cls, shape, classes = MODELS[a.model]
    if a.input_shape:
        shape = tuple(int(v) for v in a.input_shape.split(","))
    model = cls(shape, classes).train()
    h, w, c = shape
    example = (torch.rand(a.batch, c, h, w),)
    qat = prepare_qat_fx(model, get_default_qat_qconfig_mapping("x86"), example)
    opt = torch.optim.Adam(qat.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(a.seed)
    n = a.warmup + a.steps
    xs = [torch.rand(a.batch, c, h, w, generator=g) for _ in range(n)]
    ys = [torch.randint(0, classes, (a.batch,), generator=g) for _ in range(n)]

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(qat(xs[i]), ys[i])
        loss.backward()
        opt.step()

    for i in range(a.warmup):
        step(i)
    times = []
    t0 = time.perf_counter()
    for i in range(a.warmup, n):
        t = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    med = statistics.median(times)
    print(json.dumps({
        "tool": "pytorch-qat-fx",
        "torch": torch.__version__,
        "model": a.model,
        "input_shape": list(shape),
        "batch": a.batch,
        "threads": a.threads,
        "samples_per_s": a.batch * a.steps / wall,
        "median_step_ms": med * 1e3,
        "samples_per_s_at_median": a.batch / med,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
