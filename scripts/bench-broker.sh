#!/usr/bin/env bash
# Broker benchmark: corelog vs a peer Kafka-compatible broker (Tansu, memory storage),
# side by side in one run, driven by librdkafka's own load tool (rdkafka_performance),
# so no corelog code sits on the client side.
#
#   bash scripts/bench-broker.sh            # defaults below; ~5 minutes
#   REPEATS=5 COUNT_1K=500000 bash scripts/bench-broker.sh
#
# For each message size (1 KiB, 100 B): produce COUNT messages (acks=all,
# linger.ms=5) to a fresh single-partition topic, then consume them all back from
# the beginning; brokers alternate within each repeat, and the table shows medians
# of REPEATS runs and the corelog/peer ratio. corelog runs with its data on disk
# (default fsync policy `never`: O_DIRECT writes, no fdatasync; set
# CORELOG_FSYNC=always to sync every acknowledged batch); the peer keeps its data in
# memory. Figures go to stdout and to target/bench/broker.json.
#
# The machine's cores are shared: broker, load tool and this script all run on the
# same CPUs. The header says how many and how the broker is pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

REPEATS=${REPEATS:-3}
COUNT_1K=${COUNT_1K:-300000}
COUNT_100=${COUNT_100:-1000000}
CORELOG_FSYNC=${CORELOG_FSYNC:-never}
CORELOG_CORES=${CORELOG_CORES:-0}
source scripts/bench-lib.sh
tansu=$(bash "${SHARED_DIR:-../shared}/peers/tansu.sh")
bench_setup broker

corelog_port=$(free_port)
cat > "$work/corelog.yaml" <<YAML
topic_defaults:
  fsync.policy: $CORELOG_FSYNC
YAML
"$corelog" broker --data-dir "$work/corelog-data" --listen "127.0.0.1:$corelog_port" \
  --cores "$CORELOG_CORES" --config "$work/corelog.yaml" 2>"$work/corelog.log" &
pids+=($!)
tansu_port=$(free_port)
"$tansu" broker --listener-url "tcp://127.0.0.1:$tansu_port" \
  --advertised-listener-url "tcp://127.0.0.1:$tansu_port" --silent >"$work/tansu.log" 2>&1 &
pids+=($!)
wait_port "$corelog_port"
wait_port "$tansu_port"

cores=$(nproc)
echo "== broker benchmark: corelog vs Tansu (memory storage), rdkafka_performance $(basename "$perf") =="
echo "cores online: $cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); kernel $(uname -r)"
echo "corelog: shards=$([ "$CORELOG_CORES" = 0 ] && echo "$cores (one per core, pinned)" || echo "$CORELOG_CORES (pinned to cores 0..)"), fsync.policy=$CORELOG_FSYNC, data on $(df --output=source "$work" | tail -1)"
echo "tansu: default runtime, unpinned; load tool and brokers share all $cores cores"
echo "per run: one fresh topic, 1 partition; produce acks=all linger.ms=5, then consume from the beginning; median of $REPEATS"
echo

# Runs one produce+consume pair; prints "produce_msgs_per_s consume_msgs_per_s".
run_pair() {
  local port=$1 size=$2 count=$3 topic=$4 out produce consume
  out=$("$perf" -P -t "$topic" -p 0 -b "127.0.0.1:$port" -s "$size" -c "$count" \
        -X linger.ms=5 -X acks=all -X queue.buffering.max.messages=1000000 2>&1) || { echo "$out" >&2; return 1; }
  produce=$(echo "$out" | sed -n 's/.* delivered .* in [0-9]*ms: \([0-9]*\) msgs\/s.*/\1/p' | tail -1)
  failed=$(echo "$out" | sed -n 's/.*(offset [-0-9]*, \([0-9]*\) failed).*/\1/p' | tail -1)
  if [ -z "$produce" ] || [ "${failed:-1}" != 0 ]; then echo "produce to $topic on $port failed:" >&2; echo "$out" | tail -5 >&2; return 1; fi
  out=$(timeout 120 "$perf" -C -t "$topic" -p 0 -b "127.0.0.1:$port" -c "$count" -o beginning -e 2>&1) || true
  consume=$(echo "$out" | sed -n "s/^% $count messages .* consumed in [0-9]*ms: \([0-9]*\) msgs\/s.*/\1/p" | tail -1)
  if [ -z "$consume" ]; then echo "consume of $topic on $port failed:" >&2; echo "$out" | tail -5 >&2; return 1; fi
  echo "$produce $consume"
}

mkdir -p target/bench
json="["
printf '%-26s %14s %14s %7s   %s\n' case corelog tansu ratio "runs (corelog | tansu)"
for size in 1024 100; do
  count=$([ "$size" = 1024 ] && echo "$COUNT_1K" || echo "$COUNT_100")
  cp=(); cc=(); tp=(); tc=()
  for repeat in $(seq 1 "$REPEATS"); do
    # Alternate which broker goes first, so drift hits both alike.
    if [ $((repeat % 2)) = 1 ]; then order="corelog tansu"; else order="tansu corelog"; fi
    for broker in $order; do
      port=$([ "$broker" = corelog ] && echo "$corelog_port" || echo "$tansu_port")
      read -r p c < <(run_pair "$port" "$size" "$count" "bench-$size-$repeat-$broker")
      if [ "$broker" = corelog ]; then cp+=("$p"); cc+=("$c"); else tp+=("$p"); tc+=("$c"); fi
    done
  done
  for phase in produce consume; do
    if [ "$phase" = produce ]; then a=("${cp[@]}"); b=("${tp[@]}"); else a=("${cc[@]}"); b=("${tc[@]}"); fi
    ma=$(echo "${a[@]}" | median); mb=$(echo "${b[@]}" | median)
    ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
    name="$phase/${size}B msgs/s"
    printf '%-26s %14s %14s %7s   %s | %s\n' "$name" "$ma" "$mb" "$ratio" "${a[*]}" "${b[*]}"
    json+="{\"case\":\"$phase/${size}B\",\"corelog\":$ma,\"peer\":$mb,\"ratio\":$ratio,\"unit\":\"msgs/s\",\"corelog_runs\":[$(IFS=,; echo "${a[*]}")],\"peer_runs\":[$(IFS=,; echo "${b[*]}")],\"cores\":$cores,\"corelog_fsync\":\"$CORELOG_FSYNC\"},"
  done
done
echo "${json%,}]" > target/bench/broker.json
echo
echo "wrote target/bench/broker.json"
