#!/usr/bin/env bash
# The whole test suite: formatting, then every crate's tests against the real models
# (fetched into $THAW_HOME on first use). Optimized build: the model tests need it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo test --workspace --release --no-fail-fast
