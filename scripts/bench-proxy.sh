#!/usr/bin/env bash
# Overhead of the fault proxy without faults: 20,000 ping-pongs of 1 KiB (p50/p99
# round trip) and 1 GiB one way, each direct to a server and through `corelog proxy`
# (harness/tests/proxy_cli.rs, `overhead_without_faults`). Client, servers and proxy
# share this machine's cores. Figures go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
CORELOG_BENCH_PROXY=1 cargo test --release --locked -p corelog-harness --test proxy_cli -- --nocapture overhead_without_faults
