#!/usr/bin/env bash
# The whole test suite, from a fresh clone: checks the toolchain, then builds and
# runs every test of the workspace (unit, property, model-based crash, real-process
# crash). Nothing is skipped; the exit status is cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust first: curl https://sh.rustup.rs -sSf | sh" >&2
  exit 2
fi

cargo build --workspace --all-targets --locked
cargo test --workspace --locked
