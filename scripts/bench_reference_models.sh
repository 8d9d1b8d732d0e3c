#!/usr/bin/env bash
# Side-by-side QAT train-step throughput of qatc and TFMOT on the reference models, in one
# sitting, alternating the two tools model by model, ROUNDS times (README, "Reference
# models"). One process per measurement, so each peak RSS is that model's alone.
#
# usage: scripts/bench_reference_models.sh [ROUNDS] [BATCH] > bench.log
#   needs: cargo build --release; ../shared/bench/setup.sh (TF 2.21, TFMOT)
#   MODELS="resnet8 ds_cnn": a subset; STEPS: timed steps per run (30)
#   TORCH_PY=/path/to/python: PyTorch's FX QAT too (scripts/pytorch_qat_bench.py; a venv
#   with `pip install torch numpy`), after TFMOT in each round
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
batch=${2:-64}
py=$(../shared/bench/setup.sh)
models=${MODELS:-"mnist_cnn mbv2_tiny resnet8 ds_cnn mobilenet_v1_025 mobilenet_v2_035"}
for round in $(seq 1 "$rounds"); do
    for m in $models; do
        echo "# round $round $m"
        target/release/qatc bench --model "$m" --batch "$batch" --steps "${STEPS:-30}" --warmup 5 | tail -n 1
        "$py" scripts/tfmot_bench.py --model "$m" --batch "$batch" --steps "${STEPS:-30}" --warmup 5
        if [ -n "${TORCH_PY:-}" ]; then
            "$TORCH_PY" scripts/pytorch_qat_bench.py --model "$m" --batch "$batch" \
                --steps "${STEPS:-30}" --warmup 5
        fi
    done
done
