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
