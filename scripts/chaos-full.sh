#!/usr/bin/env bash
# Every chaos test of harness/tests/chaos.rs, including those CI leaves out
# (CORELOG_CHAOS_FULL=1): today the unclean leader election of
# workloads/chaos/unclean-election.yaml, which loses acknowledged messages on
# purpose and depends on timing a loaded machine can upset (the reason is in
# chaos.rs's doc), the isolated leader and the partitions of
# workloads/chaos/leader-isolated-rf3.yaml and partition-rf3.yaml (they found an
# idempotence gap, see chaos.rs's doc), and the seeded nemesis of workloads/chaos/nemesis-rf3.yaml
# (crashes, pauses, isolated brokers, partitions, latency; three guarantees on
# three brokers, about 3 minutes). Each test starts its own brokers on loopback; the three-broker
# ones take about a minute each, two at a time. Extra arguments go to the test
# binary (a test name to run only that one, --test-threads 1 on a busy machine).
set -euo pipefail
cd "$(dirname "$0")/.."
CORELOG_CHAOS_FULL=1 exec cargo test --locked -p corelog-harness --test chaos -- --nocapture "$@"
