#!/usr/bin/env bash
# The test command of README.md: everything the tests need, then `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
cargo test --doc
