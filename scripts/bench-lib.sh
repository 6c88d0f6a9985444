# Shared by the bench-*.sh scripts (sourced, not run): the load tool, the release
# build, a work directory under target/ with every started process killed and the
# directory removed on exit, and small helpers.
#
#   source "$(dirname "$0")/bench-lib.sh"; bench_setup broker   # sets perf, corelog, work, pids

# Builds rdkafka_performance (once) and corelog, creates $work, installs the cleanup.
bench_setup() {
  perf=$(bash "${SHARED_DIR:-../shared}/peers/rdkafka-perf.sh")
  cargo build -q --release --locked -p corelog-harness
  corelog=target/release/corelog
  work=$(mktemp -d "${PWD}/target/bench-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Waits up to 10 s for a listener on 127.0.0.1:$1; otherwise prints the logs in $work and exits.
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "broker on port $1 did not start; its log:" >&2
  cat "$work"/*.log >&2
  exit 1
}

# The median of the whitespace-separated integers on stdin.
median() { tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }

# The median of the whitespace-separated decimals on stdin, with two decimals.
median_decimal() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {printf "%.2f\n", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# The value at percentile $1 (e.g. 99) of the numbers in file $2, one per line
# (nearest rank), divided by $3 (default 1), with two decimals.
percentile() {
  sort -g "$2" | awk -v p="$1" -v d="${3:-1}" '{a[NR]=$1} END {i=int(NR*p/100); if (i<NR*p/100) i++; if (i<1) i=1; printf "%.2f\n", a[i]/d}'
}

# The CPUs of a Linux CPU list ("0-1,3"), space-separated ("0 1 3").
cpu_list_expand() {
  local item first last out=()
  IFS=, read -ra items <<<"$1"
  for item in "${items[@]}"; do
    first=${item%-*}; last=${item#*-}
    for ((cpu = first; cpu <= last; cpu++)); do out+=("$cpu"); done
  done
  echo "${out[*]}"
}

# The CPU list of broker $1 (0, 1, ...) of several on this machine with $2 shards
# each: the $2 online CPUs after broker $1-1's, wrapping, as the harness's
# LocalCluster spreads its brokers (run/cluster.rs, spread_cpus).
spread_cpus() {
  local broker=$1 shards=$2 online taken=() j
  read -ra online <<<"$(cpu_list_expand "$(cat /sys/devices/system/cpu/online)")"
  [ "$shards" -gt "${#online[@]}" ] && shards=${#online[@]}
  for ((j = 0; j < shards; j++)); do taken+=("${online[$(((broker * shards + j) % ${#online[@]}))]}"); done
  printf '%s\n' "${taken[@]}" | sort -n | paste -sd,
}

# What a broker's log (file $1) says about where its shards run:
# "1 shard(s) pinned to CPUs 0 (shard i on CPU: 0)" or "2 shard(s), unpinned".
broker_cpus_line() { grep -o '[0-9]* shard(s)\(, unpinned\| pinned to CPUs .*)\)' "$1" | tail -1; }

# Starts a cluster of $1 corelog brokers on loopback, each with --cores $2 and the
# CPUs spread_cpus gives it, with the YAML config file $3; data and logs under
# $work/cluster-<id>. Sets cluster_ports (client ports) and cluster_bootstrap,
# adds the pids to pids, and returns once every broker is unfenced (30 s at most).
start_corelog_cluster() {
  local count=$1 cores=$2 config=$3 voters=() controller_ports=() id
  cluster_ports=()
  for ((id = 0; id < count; id++)); do
    cluster_ports+=("$(free_port)"); controller_ports+=("$(free_port)")
    voters+=("$id@127.0.0.1:${controller_ports[$id]}")
  done
  for ((id = 0; id < count; id++)); do
    "$corelog" broker --data-dir "$work/cluster-$id" --listen "127.0.0.1:${cluster_ports[$id]}" \
      --cores "$cores" --cpus "$(spread_cpus "$id" "$cores")" --config "$config" \
      --node-id "$id" --controller-listener "127.0.0.1:${controller_ports[$id]}" \
      --controller-quorum-voters "$(IFS=,; echo "${voters[*]}")" --cluster-id "bench-$$" \
      2>"$work/cluster-$id.log" &
    pids+=($!)
  done
  cluster_bootstrap=$(printf '127.0.0.1:%s\n' "${cluster_ports[@]}" | paste -sd,)
  for ((id = 0; id < count; id++)); do wait_port "${cluster_ports[$id]}"; done
  for ((id = 0; id < count; id++)); do
    for _ in $(seq 1 300); do grep -q "broker $id is unfenced" "$work/cluster-$id.log" && break; sleep 0.1; done
    grep -q "broker $id is unfenced" "$work/cluster-$id.log" || {
      echo "broker $id was not unfenced within 30 s; its log:" >&2; tail -20 "$work/cluster-$id.log" >&2; exit 1
    }
  done
}
