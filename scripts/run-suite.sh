#!/usr/bin/env bash
# Runs every workload of a directory as one suite, then renders one comparison
# report: the first workload (by name) is the baseline, every other one is compared
# against it (change table on stdout, overlaid charts in <out>/compare/).
#
#   bash scripts/run-suite.sh workloads/ [OUT_DIR]
#
# Each workload is validated first (corelog check), so a typo fails the suite before
# anything runs. Results: <out>/<workload file name>/result.json and report.html.
# A workload whose run fails (exit 1: a verdict that is not PASS, or a failed run)
# does not stop the suite: the rest still run and are reported, and the suite exits
# 1 at the end naming them.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: scripts/run-suite.sh WORKLOAD_DIR [OUT_DIR]}
out=${2:-results/suite-$(date -u +%Y%m%dT%H%M%SZ)}
cargo build -q --release --locked -p corelog-harness
corelog=target/release/corelog
mapfile -t files < <(find "$dir" -maxdepth 1 -name '*.yaml' | sort)
[ "${#files[@]}" -gt 0 ] || { echo "no *.yaml in $dir" >&2; exit 2; }
"$corelog" check "${files[@]}"
results=()
failed=()
# Ctrl-C reaches the running `corelog run` too, which stops, writes what it measured
# and exits 1; the suite stops then instead of going on to the next workload.
trap 'echo "interrupted" >&2; exit 130' INT
for file in "${files[@]}"; do
  name=$(basename "$file" .yaml)
  echo "== $name"
  "$corelog" run "$file" --out "$out/$name" || failed+=("$name")
  # A workload with several guarantees writes one result per guarantee.
  while IFS= read -r result; do results+=("$result"); done < <(find "$out/$name" -name result.json | sort)
done
if [ "${#results[@]}" -ge 2 ]; then
  "$corelog" compare "${results[@]}" --out "$out/compare"
else
  "$corelog" report "${results[@]}" --out "$out/compare"
fi
echo "suite report: $out/compare/report.html"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]} (see each run's closing line above)" >&2
  exit 1
fi
