#!/usr/bin/env bash
# Runs every workload of a directory as one suite, then renders one comparison
# report: the first workload (by name) is the baseline, every other one is compared
# against it (change table on stdout, overlaid charts in <out>/compare/).
#
#   bash scripts/run-suite.sh workloads/ [OUT_DIR]
#
# Each workload is validated first (corelog check), so a typo fails the suite before
# anything runs. Results: <out>/<workload file name>/result.json and report.html.
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
for file in "${files[@]}"; do
  name=$(basename "$file" .yaml)
  echo "== $name"
  "$corelog" run "$file" --out "$out/$name"
  # A workload with several guarantees writes one result per guarantee.
  while IFS= read -r result; do results+=("$result"); done < <(find "$out/$name" -name result.json | sort)
done
if [ "${#results[@]}" -ge 2 ]; then
  "$corelog" compare "${results[@]}" --out "$out/compare"
else
  "$corelog" report "${results[@]}" --out "$out/compare"
fi
echo "suite report: $out/compare/report.html"
