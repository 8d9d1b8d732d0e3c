#!/usr/bin/env python3
"""Seeds for the fuzz targets: copies the committed fixtures into fuzz/corpus/<target>/ and
writes small valid files of the formats no fixture covers (IDX, CIFAR, npz, PNG, checkpoints
come from a quick qatc run when target/release/qatc exists). Standard library only.

    python3 fuzz/seeds.py            # then: cargo +nightly fuzz run <target> fuzz/corpus/<target>
"""
import glob
import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import tarfile
import zipfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
MAX_SEED = 256 * 1024  # larger fixtures make slow seeds


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, pattern):
    for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
        if os.path.getsize(path) <= MAX_SEED:
            with open(path, "rb") as f:
                out(target, os.path.basename(path), f.read())


def idx(magic, dims, body):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body


def npy(arr_bytes, descr, shape):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + arr_bytes


def png(w, h, pixels):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + pixels[y * w * 3:(y + 1) * w * 3] for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    copy("qir", "tests/golden/**/*.qir")
    copy("qir", "examples/*.qir")
    copy("rules", "passes/*.rules")
    copy("keras", "tests/fixtures/keras/*.keras")
    copy("h5", "tests/fixtures/keras/*.h5")
    copy("npy", "tests/fixtures/keras/*.npy")
    copy("config", "examples/*.toml")
    # graph: the bytes are choices (input shape, then layer, operands, sizes per layer; see
    # targets.rs): one seed per layer kind, applied to the input, and a few mixed chains
    for kind in range(18):
        out("graph", f"layer{kind}", bytes([3, 3, 1, 0, 0, 0, 1, 1, kind, 1, 1]))
    out("graph", "conv_bn_relu", bytes([7, 7, 0, 2, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 6]))
    out("graph", "residual", bytes([5, 5, 1, 3, 0, 0, 2, 0, 1, 0, 1, 0, 0, 0, 6, 1, 2, 0, 0, 15]))

    # IDX: the idx target's first byte says where the images end and whether names are .gz
    images = idx(0x803, [4, 5, 5], bytes(range(100)))
    labels = idx(0x801, [4], bytes([0, 1, 2, 3]))
    body = images + labels
    cut = round(255 * len(images) / len(body))
    out("idx", "plain", bytes([cut & 0xFE]) + body)
    gz_images, gz_labels = gzip.compress(images), gzip.compress(labels)
    body = gz_images + gz_labels
    out("idx", "gzip", bytes([round(255 * len(gz_images) / len(body)) | 1]) + body)

    # CIFAR-10: label byte, then 3x32x32 pixels, per record
    records = b"".join(bytes([i]) + bytes([i * 7 % 256]) * 3072 for i in range(2))
    out("cifar", "two_records", records)
    # the archive as downloaded: cifar-10-batches-bin/ in a gzip-compressed tar
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name in ["data_batch_1.bin", "test_batch.bin"]:
            info = tarfile.TarInfo("cifar-10-batches-bin/" + name)
            info.size = len(records)
            t.addfile(info, io.BytesIO(records))
    out("cifar", "archive", buf.getvalue())

    # npz (keras.datasets layout), stored and deflated
    x = npy(bytes(range(2 * 4 * 4)), "|u1", "(2, 4, 4)")
    y = npy(struct.pack("<2q", 0, 1), "<i8", "(2,)")
    for name, method in [("stored", zipfile.ZIP_STORED), ("deflated", zipfile.ZIP_DEFLATED)]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as z:
            for k, v in [("x_train", x), ("y_train", y), ("x_test", x), ("y_test", y)]:
                z.writestr(k + ".npy", v)
        out("npz", name, buf.getvalue())

    out("image", "rgb.png", png(4, 3, bytes(range(36))))
    jpegs = glob.glob(os.path.join(os.path.dirname(os.__file__), "test", "**", "python.jpg"), recursive=True)
    if jpegs:
        with open(jpegs[0], "rb") as f:
            out("image", "python.jpg", f.read())

    # .tflite, .safetensors and a checkpoint from a short qatc run, if qatc is built
    qatc = os.path.join(ROOT, "target", "release", "qatc")
    if os.path.exists(qatc):
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([qatc, "train", "--model", "mnist_cnn", "--epochs", "1", "--qat-epochs", "1",
                            "--train-samples", "256", "--test-samples", "64", "--out", d, "--quiet"],
                           check=True, cwd=ROOT)
            for path in glob.glob(os.path.join(d, "**", "*"), recursive=True):
                if os.path.isfile(path) and os.path.getsize(path) <= MAX_SEED:
                    name = os.path.basename(path)
                    with open(path, "rb") as f:
                        data = f.read()
                    if name.endswith(".tflite"):
                        out("tflite_import", name, data)
                        out("tflite_run", name, data)
                    elif name.endswith(".safetensors"):
                        # a checkpoint is a .safetensors whose metadata holds the run state
                        out("safetensors", name, data)
                        out("checkpoint", name, data)
    else:
        print("note: target/release/qatc is not built; no .tflite/.safetensors/checkpoint seeds", file=sys.stderr)
    for t in sorted(os.listdir(CORPUS)):
        print(f"{t:15} {len(os.listdir(os.path.join(CORPUS, t)))} seeds")


if __name__ == "__main__":
    main()
