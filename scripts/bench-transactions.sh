#!/usr/bin/env bash
# Transactional throughput on one corelog broker: a librdkafka producer committing a
# transaction every N messages (N = 1, 100, 10000), next to the same producer
# without transactions (idempotent, acks=all, linger.ms=5) that waits for its
# messages' acknowledgements at the same cadence, in the same session, alternating,
# medians of REPEATS. The table shows messages per second, the ratio transactional
# / plain, and the latency p50/p99 from a group's last send to its end: for
# transactions commit_transaction's return (messages acknowledged, EndTxn
# answered), for the plain producer its messages acknowledged.
#
#   bash scripts/bench-transactions.sh          # ~3 minutes
#   REPEATS=5 SIZE=100 bash scripts/bench-transactions.sh
#
# Each run sends at most MESSAGES messages of SIZE bytes to a fresh
# single-partition topic, stopping at the end of the transaction that passes
# SECONDS (so committing every message stays bounded). The broker keeps its data on
# disk with the default fsync policy `never` for the data topics (set
# CORELOG_FSYNC=always to sync every acknowledged batch); __transaction_state is
# always synced. Figures go to stdout and to target/bench/transactions.json.
#
# The machine's cores are shared: the broker, the producer and this script run on
# the same CPUs; the header says how many and where the broker's shards are pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
SIZE=${SIZE:-1024}
MESSAGES=${MESSAGES:-200000}
SECONDS_MAX=${SECONDS_MAX:-8}
CORELOG_FSYNC=${CORELOG_FSYNC:-never}
CORELOG_CORES=${CORELOG_CORES:-1}
source scripts/bench-lib.sh
bench_setup transactions
cargo build -q --release --locked -p corelog-harness --example transactions_bench
bench=target/release/examples/transactions_bench

cat > "$work/corelog.yaml" <<YAML
topic_defaults:
  fsync.policy: $CORELOG_FSYNC
YAML
port=$(free_port)
"$corelog" broker --data-dir "$work/data" --listen "127.0.0.1:$port" --cores "$CORELOG_CORES" \
  --config "$work/corelog.yaml" 2>"$work/broker.log" &
pids+=($!)
wait_port "$port"

echo "== transactional vs plain producer, one corelog broker =="
echo "cores online: $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); kernel $(uname -r)"
echo "broker: $(broker_cpus_line "$work/broker.log"), fsync.policy $CORELOG_FSYNC; producer unpinned, sharing the cores"
echo "per run: 1 producer, 1 fresh partition, ${SIZE} B messages, acks=all, linger.ms=5, at most $MESSAGES messages or ${SECONDS_MAX} s; median of $REPEATS"

results="$work/results.jsonl"
: >"$results"
run=0
for repeat in $(seq 1 "$REPEATS"); do
  for every in 1 100 10000; do
    for mode in plain transactional; do
      run=$((run + 1))
      flag=(); [ "$mode" = transactional ] && flag=(--transactional --transactional-id "bench-$run")
      line=$("$bench" --bootstrap "127.0.0.1:$port" --topic "bench-$run" --size "$SIZE" \
        --messages "$MESSAGES" --seconds "$SECONDS_MAX" --every "$every" "${flag[@]}")
      echo "$line" >>"$results"
      echo "  repeat $repeat, every $every, $mode: $line" >&2
    done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys, os
rows = [json.loads(line) for line in open(sys.argv[1])]
def med(values): return statistics.median(values) if values else float("nan")
table = []
print(f"{'every':>6} {'plain msg/s':>12} {'txn msg/s':>10} {'txn/plain':>9} {'commit p50 ms':>13} {'commit p99 ms':>13} {'plain ack p50 ms':>16}")
for every in (1, 100, 10000):
    plain = [r["rate"] for r in rows if r["every"] == every and not r["transactional"]]
    txn = [r for r in rows if r["every"] == every and r["transactional"]]
    plain_rate, txn_rate = med(plain), med([r["rate"] for r in txn])
    p50, p99 = med([r["commit_p50_ms"] for r in txn]), med([r["commit_p99_ms"] for r in txn])
    plain_p50 = med([r["commit_p50_ms"] for r in rows if r["every"] == every and not r["transactional"]])
    ratio = txn_rate / plain_rate
    table.append({"every": every, "plain_rate": plain_rate, "txn_rate": txn_rate, "ratio": ratio,
                  "commit_p50_ms": p50, "commit_p99_ms": p99, "plain_ack_p50_ms": plain_p50})
    print(f"{every:>6} {plain_rate:>12.0f} {txn_rate:>10.0f} {ratio:>9.2f} {p50:>13.2f} {p99:>13.2f} {plain_p50:>16.2f}")
os.makedirs("target/bench", exist_ok=True)
json.dump({"runs": rows, "table": table}, open("target/bench/transactions.json", "w"), indent=1)
PY
