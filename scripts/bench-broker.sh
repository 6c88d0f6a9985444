#!/usr/bin/env bash
# Broker benchmark, driven by librdkafka's own load tool (rdkafka_performance), so no
# corelog code sits on the client side. Two tables, each side by side in one run:
#
# - peer: corelog vs a peer Kafka-compatible broker (Tansu, memory storage).
# - replication: corelog RF=3 (a three-broker cluster) vs corelog RF=1 (one broker),
#   both acks=all: what replication costs in throughput and in publish latency.
#
#   bash scripts/bench-broker.sh                         # both tables; ~10 minutes
#   CASES=replication bash scripts/bench-broker.sh         # RF=3 vs RF=1 only; ~5 minutes
#   REPEATS=5 COUNT_1K=500000 bash scripts/bench-broker.sh
#
# peer: for each message size (1 KiB, 100 B), produce COUNT messages (acks=all,
# linger.ms=5) to a fresh single-partition topic, then consume them all back from the
# beginning; brokers alternate within each repeat, and the table shows medians of
# REPEATS runs and the corelog/peer ratio.
#
# replication: REPL_SIZE-byte messages (1 KiB). RF=1 is the single broker above;
# RF=3 is three brokers on this machine with RF3_CORES shard(s) each (1), spread
# over the online CPUs as `corelog run` spreads them (broker k on CPU k mod the CPU
# count with one shard each), every topic auto-created with 3 replicas. Each repeat,
# for RF=1 and RF=3 in turn: produce REPL_COUNT messages (600000; acks=all, linger.ms=5) to
# a fresh single-partition topic (created first with one message, so that creation
# and leader election are not timed), then consume them from the beginning. Then, at
# a fixed rate, LATENCY_SECONDS of produce with per-message latency (rdkafka_performance
# -l: send to delivery report, so linger.ms=5 is part of it) and its p99: each at half
# of its own median maximum, and RF=1 also at RF=3's rate (the same offered load).
# The table shows medians of REPEATS runs and RF3/RF1, and the brokers' CPU time per
# produced message (/proc/<pid>/stat), all of them and the busiest (RF=3's leader),
# from which it prints RF3/RF1's ceiling when the machine's CPU is the limit.
#
# corelog runs with its data on disk (default fsync policy `never`: O_DIRECT writes,
# no fdatasync; set CORELOG_FSYNC=always to sync every acknowledged batch), each
# partition kept to 1 GiB by retention in 256 MiB segments (a fixed-rate run at half
# of RF=1's maximum writes several GB, and repeats append to the same topics); the peer
# keeps its data in memory. Figures go to stdout and to target/bench/broker.json
# (peer) and target/bench/broker-replication.json.
#
# The machine's cores are shared: brokers, load tool and this script all run on the
# same CPUs. The header says how many and where each broker's shards are pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${CASES:-peer replication}
REPEATS=${REPEATS:-3}
COUNT_1K=${COUNT_1K:-300000}
COUNT_100=${COUNT_100:-1000000}
CORELOG_FSYNC=${CORELOG_FSYNC:-never}
CORELOG_CORES=${CORELOG_CORES:-0}
REPL_SIZE=${REPL_SIZE:-1024}
REPL_COUNT=${REPL_COUNT:-600000}
RF3_CORES=${RF3_CORES:-1}
LATENCY_SECONDS=${LATENCY_SECONDS:-10}
source scripts/bench-lib.sh
case " $CASES " in *" peer "*) tansu=$(bash "${SHARED_DIR:-../shared}/peers/tansu.sh") ;; esac
bench_setup broker

cat > "$work/corelog.yaml" <<YAML
topic_defaults:
  fsync.policy: $CORELOG_FSYNC
  segment.bytes: 268435456
  retention.bytes: 1073741824
YAML
corelog_port=$(free_port)
"$corelog" broker --data-dir "$work/corelog-data" --listen "127.0.0.1:$corelog_port" \
  --cores "$CORELOG_CORES" --config "$work/corelog.yaml" 2>"$work/corelog.log" &
pids+=($!)
rf1_pid=$!
wait_port "$corelog_port"

cores=$(nproc)
echo "cores online: $cores, CPUs $(cat /sys/devices/system/cpu/online) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); kernel $(uname -r)"
echo "corelog: fsync.policy=$CORELOG_FSYNC, data on $(df --output=source "$work" | tail -1); load tool unpinned, sharing all $cores cores with the brokers"
echo "corelog broker (RF=1): $(broker_cpus_line "$work/corelog.log")"

# CPU time (user + system) the processes $@ have used so far, in microseconds.
cpu_us() {
  local pid total=0 ticks
  for pid in "$@"; do
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    total=$((total + ticks))
  done
  echo $((total * 1000000 / $(getconf CLK_TCK)))
}

# Runs one produce+consume pair against bootstrap $1 (the topic holding $5 messages
# before, default 0); prints "produce_msgs_per_s consume_msgs_per_s". With
# cpu_pids set (the brokers' pids), the CPU they used per produced message, in
# microseconds, overall and for the busiest of them, goes to $work/cpu-<topic>.
run_pair() {
  local bootstrap=$1 size=$2 count=$3 topic=$4 total=$(($3 + ${5:-0})) out produce consume before=() pid
  for pid in ${cpu_pids[@]+"${cpu_pids[@]}"}; do before+=("$(cpu_us "$pid")"); done
  out=$("$perf" -P -t "$topic" -p 0 -b "$bootstrap" -s "$size" -c "$count" \
        -X linger.ms=5 -X acks=all -X queue.buffering.max.messages=1000000 2>&1) || { echo "$out" >&2; return 1; }
  if [ -n "${cpu_pids[*]:-}" ]; then
    local used=() i
    for i in "${!cpu_pids[@]}"; do used+=($(( $(cpu_us "${cpu_pids[$i]}") - before[i] ))); done
    printf '%s\n' "${used[@]}" | awk -v n="$count" '{s += $1; if ($1 > m) m = $1} END {printf "%.2f %.2f\n", s / n, m / n}' \
      > "$work/cpu-$topic"
  fi
  produce=$(echo "$out" | sed -n 's/.* delivered .* in [0-9]*ms: \([0-9]*\) msgs\/s.*/\1/p' | tail -1)
  failed=$(echo "$out" | sed -n 's/.*(offset [-0-9]*, \([0-9]*\) failed).*/\1/p' | tail -1)
  if [ -z "$produce" ] || [ "${failed:-1}" != 0 ]; then echo "produce to $topic on $bootstrap failed:" >&2; echo "$out" | tail -5 >&2; return 1; fi
  out=$(timeout 120 "$perf" -C -t "$topic" -p 0 -b "$bootstrap" -c "$total" -o beginning -e 2>&1) || true
  consume=$(echo "$out" | sed -n "s/^% $total messages .* consumed in [0-9]*ms: \([0-9]*\) msgs\/s.*/\1/p" | tail -1)
  if [ -z "$consume" ]; then echo "consume of $topic on $bootstrap failed:" >&2; echo "$out" | tail -5 >&2; return 1; fi
  echo "$produce $consume"
}

# Creates topic $2 on bootstrap $1 by producing one message to it (acks=all).
create_topic() {
  local out
  out=$("$perf" -P -t "$2" -p 0 -b "$1" -s 16 -c 1 -X acks=all 2>&1) || { echo "$out" | tail -5 >&2; return 1; }
}

# Produces to the existing topic $4 on bootstrap $1 at $3 msgs/s for LATENCY_SECONDS
# with per-message latency (send to delivery report); prints "p99_ms achieved_msgs_per_s".
run_latency() {
  local bootstrap=$1 size=$2 rate=$3 topic=$4 file="$work/latency-$4.txt" out achieved
  out=$("$perf" -P -t "$topic" -p 0 -b "$bootstrap" -s "$size" -c $((rate * LATENCY_SECONDS)) -r "$rate" -l -A "$file" \
        -X linger.ms=5 -X acks=all -X queue.buffering.max.messages=1000000 2>&1) || { echo "$out" | tail -5 >&2; return 1; }
  achieved=$(echo "$out" | sed -n 's/.* delivered .* in [0-9]*ms: \([0-9]*\) msgs\/s.*/\1/p' | tail -1)
  [ -s "$file" ] || { echo "no latencies from $topic on $bootstrap:" >&2; echo "$out" | tail -5 >&2; return 1; }
  echo "$(percentile 99 "$file" 1000) $achieved"
  rm -f "$file"
}

peer_table() {
  tansu_port=$(free_port)
  "$tansu" broker --listener-url "tcp://127.0.0.1:$tansu_port" \
    --advertised-listener-url "tcp://127.0.0.1:$tansu_port" --silent >"$work/tansu.log" 2>&1 &
  pids+=($!)
  wait_port "$tansu_port"
  echo
  echo "== corelog vs Tansu (memory storage), rdkafka_performance $(basename "$perf") =="
  echo "tansu: default runtime, unpinned"
  echo "per run: one fresh topic, 1 partition; produce acks=all linger.ms=5, then consume from the beginning; median of $REPEATS"
  echo
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
        read -r p c < <(run_pair "127.0.0.1:$port" "$size" "$count" "bench-$size-$repeat-$broker")
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
}

# One row of the replication table: name, unit, RF=1 runs, RF=3 runs (space-separated).
replication_row() {
  local name=$1 unit=$2 a b ma mb ratio
  read -ra a <<<"$3"; read -ra b <<<"$4"
  if [ "$unit" = msgs/s ]; then
    ma=$(echo "${a[@]}" | median); mb=$(echo "${b[@]}" | median)
  else
    ma=$(echo "${a[@]}" | median_decimal); mb=$(echo "${b[@]}" | median_decimal)
  fi
  ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.2f", (a > 0 ? b / a : 0)}')
  printf '%-34s %10s %10s %8s   %s | %s\n' "$name $unit" "$ma" "$mb" "$ratio" "${a[*]}" "${b[*]}"
  json+="{\"case\":\"$name\",\"unit\":\"$unit\",\"rf1\":$ma,\"rf3\":$mb,\"rf3_over_rf1\":$ratio,\"rf1_runs\":[$(IFS=,; echo "${a[*]}")],\"rf3_runs\":[$(IFS=,; echo "${b[*]}")],\"cores\":$cores,\"rf3_cores\":$RF3_CORES,\"corelog_fsync\":\"$CORELOG_FSYNC\"},"
}

# Messages per second as MB/s (10^6 bytes) of $2-byte messages, runs space-separated in $1.
mb_per_s() { for rate in $1; do awk -v r="$rate" -v s="$2" 'BEGIN {printf "%.1f ", r * s / 1e6}'; done; }

replication_table() {
  cat > "$work/cluster.yaml" <<YAML
default_replication_factor: 3
topic_defaults:
  fsync.policy: $CORELOG_FSYNC
  segment.bytes: 268435456
  retention.bytes: 1073741824
YAML
  local first_cluster_pid=${#pids[@]}
  start_corelog_cluster 3 "$RF3_CORES" "$work/cluster.yaml"
  rf3_pids=("${pids[@]:$first_cluster_pid:3}")
  local rf1="127.0.0.1:$corelog_port" rf3=$cluster_bootstrap size=$REPL_SIZE
  echo
  echo "== corelog RF=3 (three brokers) vs RF=1 (one broker), acks=all, rdkafka_performance ($("$perf" -h 2>&1 | grep -o 'librdkafka version [0-9.]*')) =="
  for id in 0 1 2; do echo "corelog cluster broker-$id (RF=3): $(broker_cpus_line "$work/cluster-$id.log")"; done
  echo "per run: one fresh topic, 1 partition, ${size} B messages; produce $REPL_COUNT acks=all linger.ms=5, then consume from the beginning;"
  echo "then ${LATENCY_SECONDS} s at a fixed rate with per-message latency (send to delivery report); median of $REPEATS"
  echo
  local p1=() c1=() p3=() c3=() u1=() u3=() m3=() repeat p c u m
  for repeat in $(seq 1 "$REPEATS"); do
    # Alternate which goes first, so drift hits both alike.
    if [ $((repeat % 2)) = 1 ]; then order="rf1 rf3"; else order="rf3 rf1"; fi
    for rf in $order; do
      if [ "$rf" = rf1 ]; then bootstrap=$rf1; cpu_pids=("$rf1_pid"); else bootstrap=$rf3; cpu_pids=("${rf3_pids[@]}"); fi
      create_topic "$bootstrap" "repl-$repeat-$rf"
      read -r p c < <(run_pair "$bootstrap" "$size" "$REPL_COUNT" "repl-$repeat-$rf" 1)
      read -r u m < "$work/cpu-repl-$repeat-$rf"
      if [ "$rf" = rf1 ]; then p1+=("$p"); c1+=("$c"); u1+=("$u"); else p3+=("$p"); c3+=("$c"); u3+=("$u"); m3+=("$m"); fi
    done
  done
  cpu_pids=()
  # Half of each one's median maximum; RF=1 also at RF=3's rate.
  local rate1 rate3 l1=() l3=() same=() a1=() a3=() as=() l a
  rate1=$(( $(echo "${p1[@]}" | median) / 2 )); rate3=$(( $(echo "${p3[@]}" | median) / 2 ))
  for repeat in $(seq 1 "$REPEATS"); do
    read -r l a < <(run_latency "$rf1" "$size" "$rate1" "repl-$repeat-rf1"); l1+=("$l"); a1+=("$a")
    read -r l a < <(run_latency "$rf3" "$size" "$rate3" "repl-$repeat-rf3"); l3+=("$l"); a3+=("$a")
    read -r l a < <(run_latency "$rf1" "$size" "$rate3" "repl-$repeat-rf1"); same+=("$l"); as+=("$a")
  done
  json="["
  printf '%-34s %10s %10s %8s   %s\n' case RF=1 RF=3 RF3/RF1 "runs (RF=1 | RF=3)"
  replication_row "produce/${size}B" msgs/s "${p1[*]}" "${p3[*]}"
  replication_row "produce/${size}B" MB/s "$(mb_per_s "${p1[*]}" "$size")" "$(mb_per_s "${p3[*]}" "$size")"
  replication_row "consume/${size}B" msgs/s "${c1[*]}" "${c3[*]}"
  replication_row "consume/${size}B" MB/s "$(mb_per_s "${c1[*]}" "$size")" "$(mb_per_s "${c3[*]}" "$size")"
  replication_row "p99 publish, half own max" ms "${l1[*]}" "${l3[*]}"
  replication_row "p99 publish, both at RF=3's rate" ms "${same[*]}" "${l3[*]}"
  replication_row "produce CPU, all brokers" us/msg "${u1[*]}" "${u3[*]}"
  replication_row "produce CPU, busiest broker" us/msg "${u1[*]}" "${m3[*]}"
  echo
  # With every broker on this machine, CPU is the budget: RF=3 can reach at most
  # (RF=1's CPU per message) / (RF=3's, all brokers) of RF=1's rate when CPU-bound.
  awk -v a="$(echo "${u1[@]}" | median_decimal)" -v b="$(echo "${u3[@]}" | median_decimal)" \
    'BEGIN {if (b > 0) printf "CPU-bound ceiling of RF3/RF1 on one machine: %.2f (RF=1 %s us/msg, RF=3 %s us/msg over all brokers)\n", a / b, a, b}'
  # rdkafka_performance -r spaces messages one by one (a busy poll between sends) and
  # falls short of high rates: what it achieved is part of the result.
  echo "fixed rates asked (-r): RF=1 $rate1 msgs/s, RF=3 $rate3 msgs/s; achieved: RF=1 ${a1[*]}, RF=3 ${a3[*]}, RF=1 at RF=3's rate ${as[*]}"
  echo "${json%,}]" > target/bench/broker-replication.json
  echo "wrote target/bench/broker-replication.json"
}

mkdir -p target/bench
case " $CASES " in *" peer "*) peer_table ;; esac
case " $CASES " in *" replication "*) replication_table ;; esac
