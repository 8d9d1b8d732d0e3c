#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 150) on one core, one after the other, from
# the seeds of fuzz/seeds.py; crashes land in fuzz/artifacts/<target>/, a log per target in
# fuzz/logs/ ending with the CPU seconds the fuzzer used (GNU time). The fuzzers run at
# nice 10 so that a build on the same machine keeps its speed; read CPU time, not wall time.
# Usage: fuzz/run_all.sh [SECONDS] [TARGET...]; FUZZ_TARGET_DIR builds and runs from another
# target directory (a second campaign while the first one's binaries run).
# FUZZ_NICE sets the niceness (default 10).
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-150}; shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(qir graph rules tflite_import tflite_run safetensors checkpoint npy npz idx cifar keras h5 image config)
mkdir -p fuzz/logs
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}
cargo +nightly fuzz build -O --target-dir "$target_dir" || exit 1
bin=$target_dir/x86_64-unknown-linux-gnu/release
stamp=$(date +%Y%m%dT%H%M)
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    /usr/bin/time -f "cpu_seconds: %U user %S sys" nice -n "${FUZZ_NICE:-10}" "$bin/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
        > "fuzz/logs/$t-$stamp.log" 2>&1
    echo "$t: exit $? $(grep -E "^(stat::number_of_executed_units|cpu_seconds)" "fuzz/logs/$t-$stamp.log" | tr '\n' ' ')"
done
