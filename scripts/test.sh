#!/usr/bin/env bash
# The whole test suite, from a fresh clone: checks the toolchain, sets up the Python
# clients of the interop tests, checks style and lints (`cargo fmt --check` and
# `cargo clippy -D warnings`, for the workspace and the fuzz workspace, and no
# function over 80 lines: scripts/long-functions.py; see ARCHITECTURE.md, "Style and
# lints"), then builds and runs every test of the
# workspace (unit, property, model-based crash, real-process crash, and the
# real-client tests of harness/tests/ against a `corelog broker` process). Nothing is
# skipped but the chaos tests too timing-sensitive for a shared machine, which say
# NOT RUN (scripts/chaos-full.sh runs them). Exit status: 2 for a missing tool, 1 for
# unformatted code or a lint, otherwise cargo's.
#
# Python: a virtualenv in target/python-venv with the pinned clients of
# harness/tests/python/requirements.txt (kafka-python, confluent-kafka, aiokafka)
# from PyPI. It is created on the first run and reused after; pip runs again only
# when requirements.txt changed. CORELOG_TEST_PYTHON tells the tests where it is.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust first: curl https://sh.rustup.rs -sSf | sh" >&2
  exit 2
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "error: rustfmt or clippy not found. Install them: rustup component add rustfmt clippy" >&2
  exit 2
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: the interop tests need Python 3.10 or newer with venv as \$PYTHON or python3" \
    "(Debian/Ubuntu: apt-get install python3 python3-venv)." >&2
  exit 2
fi
venv=target/python-venv
requirements=harness/tests/python/requirements.txt
installed="$venv/requirements.installed"
if [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    echo "error: '$python -m venv' failed. Install the venv module (Debian/Ubuntu: apt-get install python3-venv)." >&2
    exit 2
  fi
fi
if ! cmp -s "$requirements" "$installed"; then
  echo "Installing the Python Kafka clients into $venv (from $requirements)"
  # Wheels only: confluent-kafka built from source would need librdkafka's headers.
  PIP_NO_INPUT=1 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --only-binary=:all: -r "$requirements"
  cp "$requirements" "$installed"
fi
export CORELOG_TEST_PYTHON="$PWD/$venv/bin/python"

# Style and lints first, so CI fails on drift before the long part.
fuzz_manifest=engine/broker/fuzz/Cargo.toml
if ! cargo fmt --all --check || ! cargo fmt --manifest-path "$fuzz_manifest" --check; then
  echo "error: code not formatted as rustfmt.toml says (diff above). Fix: cargo fmt --all && cargo fmt --manifest-path $fuzz_manifest" >&2
  exit 1
fi
if ! cargo clippy --workspace --all-targets --locked -- -D warnings ||
  ! cargo clippy --manifest-path "$fuzz_manifest" --all-targets --locked -- -D warnings; then
  echo "error: clippy found problems (above). Fix each one; an allow only where the lint is wrong, with a comment saying why (ARCHITECTURE.md, \"Style and lints\")." >&2
  exit 1
fi
if ! python3 scripts/long-functions.py; then
  echo "error: functions over 80 lines (above): split them into named steps, or mark a table with // long-functions: table (scripts/long-functions.py)." >&2
  exit 1
fi

cargo build --workspace --all-targets --locked
# Every test binary runs even after one fails, so one run reports every failure.
cargo test --workspace --locked --no-fail-fast

# Then the request fuzz target for a fixed time (installs cargo-fuzz if missing;
# CORELOG_FUZZ_SECONDS, default 45): see scripts/fuzz.sh. A crash fails the suite.
bash scripts/fuzz.sh

# Last, the README's main command as a new user runs it (release build, one broker
# the harness starts itself, about half a minute), with its output under target/.
cargo run --release --locked -p corelog-harness -- run workloads/quickstart.yaml --out target/quickstart
