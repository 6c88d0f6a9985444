#!/usr/bin/env bash
# Fuzzes the broker's request path for a fixed time: the `request_frame` target of
# engine/broker/fuzz feeds arbitrary bytes through codec::read_frame, codec::decode_request
# and the response envelope, asserting what must hold (see the target's doc comment).
# A panic, a failed assertion, an abort or an oversized allocation fails this script;
# libFuzzer saves the input under engine/broker/fuzz/artifacts/request_frame/ and prints the
# command that replays it.
#
# Runs on stable Rust: cargo-fuzz needs nightly only for sanitizers, so the target is
# built with `--sanitizer none` (libFuzzer and its coverage instrumentation need no
# nightly feature). The target measures allocations itself (no sanitizer is needed to
# catch a decoder asking for gigabytes).
#
# CORELOG_FUZZ_SECONDS: how long to fuzz (default 45). The corpus starts from the
# committed seeds (engine/broker/fuzz/corpus/request_frame, one well-formed request of each
# served API and version) and grows in engine/broker/fuzz/target/corpus, which is kept
# between runs on one machine and never committed.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION="0.13.2"
seconds="${CORELOG_FUZZ_SECONDS:-45}"

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (once per machine, about 2 minutes)" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cd engine/broker/fuzz
scratch_corpus="target/corpus/request_frame"
mkdir -p "$scratch_corpus"
# New inputs go to the first corpus directory; the seeds are only read.
cargo fuzz run --sanitizer none request_frame "$scratch_corpus" corpus/request_frame -- \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
echo "fuzz: request_frame ran ${seconds}s without a failure"
