#!/usr/bin/env bash
# Are the harness' producers the bottleneck? Its maximum publish rate against one
# corelog broker, next to librdkafka's own load tool (rdkafka_performance) against
# the same broker, in the same session, alternating, median of REPEATS.
#
#   bash scripts/bench-harness.sh          # ~4 minutes
#   REPEATS=5 SIZE=1024 bash scripts/bench-harness.sh
#
# Both sides: one producer, one fresh single-partition topic, SIZE-byte messages,
# acks=all, linger.ms=1 (the harness' default), librdkafka's queue at 1M messages.
# rdkafka_performance sends COUNT messages as fast as it can; `corelog run` runs a
# workload with no consumers at a rate far above what the broker takes (open
# loop: the producer is always behind schedule, so it sends as fast as the client
# accepts) for DURATION seconds after a 2 s warm-up, with its full measurement
# (every send stamped, recorded for the checker and timed) switched on. COUNT
# defaults to about as many bytes as DURATION seconds at 250 MB/s, so both runs
# last about as long and meet the same broker events (a 1 GiB segment roll stalls
# the partition for a moment: a run that is too short to see one is not
# comparable). rdkafka_performance runs with -D, so that every message has its own
# payload as in any real producer: without it every message it sends points at
# one shared buffer that librdkafka never copies (its default; PEER_FLAGS= runs it
# that way), while the harness must give each message its own bytes (the header
# the checker and the end-to-end latency read). The issue's bar: harness /
# rdkafka_performance >= 0.9.
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
SIZE=${SIZE:-100}
DURATION=${DURATION:-10}
COUNT=${COUNT:-$((DURATION * 250000000 / (SIZE + 25)))}
PEER_FLAGS=${PEER_FLAGS--D}
CORELOG_CORES=${CORELOG_CORES:-1}
source scripts/bench-lib.sh
bench_setup harness

port=$(free_port)
"$corelog" broker --data-dir "$work/data" --listen "127.0.0.1:$port" --cores "$CORELOG_CORES" 2>"$work/broker.log" &
pids+=($!)
wait_port "$port"

cores=$(nproc)
echo "== harness producers vs rdkafka_performance, one corelog broker =="
echo "cores online: $cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); kernel $(uname -r)"
echo "broker: $CORELOG_CORES shard(s) pinned from core 0, fsync.policy never; load tools unpinned, sharing all $cores cores with it"
echo "per run: 1 producer, 1 fresh partition, ${SIZE} B messages, acks=all, linger.ms=1; median of $REPEATS; rdkafka_performance flags: ${PEER_FLAGS:-none}"

perf_run() {
  local out rate
  # Its exit status is not used: it compares two counters that can be one apart
  # at the end of a clean run. The last line must show every message delivered.
  # shellcheck disable=SC2086 # PEER_FLAGS is a list of flags.
  out=$("$perf" -P $PEER_FLAGS -t "perf-$1" -p 0 -b "127.0.0.1:$port" -s "$SIZE" -c "$COUNT" \
        -X linger.ms=1 -X acks=all -X queue.buffering.max.messages=1000000 2>&1) || true
  rate=$(echo "$out" | tail -1 | sed -n "s/.* $COUNT delivered .* 0 failed) in [0-9]*ms: \([0-9]*\) msgs\/s.*/\1/p")
  [ -n "$rate" ] || { echo "$out" | tail -5 >&2; return 1; }
  echo "$rate"
}

harness_run() {
  cat > "$work/max.yaml" <<YAML
name: harness-max-$1
topics: 1
partitionsPerTopic: 1
messageSize: $SIZE
producersPerTopic: 1
subscriptionsPerTopic: 0
producerRate: 50000000
warmupDurationSeconds: 2
testDurationSeconds: $DURATION
cluster:
  bootstrap: [127.0.0.1:$port]
YAML
  "$corelog" run "$work/max.yaml" --out "$work/run-$1" >/dev/null 2>"$work/run-$1.log" || { tail -5 "$work/run-$1.log" >&2; return 1; }
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); w=r["publishRate"]; print(int(sum(w)/len(w)))' "$work/run-$1/result.json"
}

h=(); p=()
for repeat in $(seq 1 "$REPEATS"); do
  if [ $((repeat % 2)) = 1 ]; then order="harness perf"; else order="perf harness"; fi
  for tool in $order; do
    if [ "$tool" = harness ]; then h+=("$(harness_run "$repeat")"); else p+=("$(perf_run "$repeat")"); fi
  done
done
mh=$(echo "${h[@]}" | median); mp=$(echo "${p[@]}" | median)
ratio=$(awk -v a="$mh" -v b="$mp" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
printf '%-28s %12s %12s %7s   %s\n' case harness rdkafka_perf ratio "runs (harness | rdkafka_performance)"
printf '%-28s %12s %12s %7s   %s | %s\n' "produce ${SIZE}B msgs/s" "$mh" "$mp" "$ratio" "${h[*]}" "${p[*]}"
mkdir -p target/bench
echo "{\"case\":\"produce/${SIZE}B\",\"peer_flags\":\"${PEER_FLAGS}\",\"harness\":$mh,\"rdkafka_performance\":$mp,\"ratio\":$ratio,\"harness_runs\":[$(IFS=,; echo "${h[*]}")],\"rdkafka_performance_runs\":[$(IFS=,; echo "${p[*]}")],\"cores\":$cores}" > target/bench/harness.json
echo "wrote target/bench/harness.json"
