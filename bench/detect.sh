#!/usr/bin/env bash
# Times `umbra detect` on a million rows (issue 6: under 2 s in release).
#
# The series is generated once: a point every 10 s with a daily cycle, noise,
# a few steps, gaps, duplicate timestamps and a handful of non-numeric rows, in
# CSV (Unix seconds) and as Prometheus range-query JSON. Each detector (and the
# ensemble, the default) scores the CSV three times; the median wall time is
# kept. The file is read from the page cache, so this measures parsing,
# scoring and writing, not the disk.
#
# Usage: bench/detect.sh [ROWS]   (default 1000000)
# Output: one line per run, then one JSON object with every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out/detect
mkdir -p "$out"
rows=${1:-1000000}

cargo build --release -q -p umbra
umbra=${CARGO_TARGET_DIR:-target}/release/umbra

csv=$out/series-$rows.csv
json=$out/series-$rows.json
if [[ ! -f $csv ]]; then
  awk -v n="$rows" 'BEGIN {
    srand(6); print "timestamp,value"; t = 1700000000
    for (i = 0; i < n; i++) {
      t += 10
      if (i % 50000 == 49999) { t += 10 * (1 + int(rand() * 20)) }      # a gap
      v = 100 + 20 * sin(6.283185307 * i / 8640) + 3 * (rand() + rand() + rand() - 1.5)
      if (i % 100000 >= 60000 && i % 100000 < 60030) { v += 40 }          # a step
      if (i % 250000 == 1234) { print t ",n/a"; continue }                # a bad row
      printf "%d,%.3f\n", t, v
      if (i % 100000 == 777) { printf "%d,%.3f\n", t, v + 0.5 }          # a duplicate
    }
  }' >"$csv"
fi
if [[ ! -f $json ]]; then
  awk -F, 'NR == 1 { printf "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"__name__\":\"latency_p99\"},\"values\":["; next }
           { printf "%s[%s,\"%s\"]", (NR > 2 ? "," : ""), $1, $2 }
           END { print "]}]}}" }' "$csv" >"$json"
fi
cat "$csv" "$json" >/dev/null
echo "$(($(wc -l <"$csv") - 1)) rows in $csv ($(du -h "$csv" | cut -f1)), $(du -h "$json" | cut -f1) as JSON"

time_run() { # detector input -> seconds (median of three)
  local ts=()
  for i in 1 2 3; do
    local s e
    s=$(date +%s.%N)
    $umbra detect "$2" --detector "$1" -o "$out/scores.csv" 2>"$out/stderr.txt"
    e=$(date +%s.%N)
    ts+=("$(echo "$e - $s" | bc)")
  done
  printf '%s\n' "${ts[@]}" | sort -n | sed -n 2p | xargs printf '%.3f\n'
}

results=()
for d in ensemble moving-average ewma cusum shewhart holt-winters; do
  secs=$(time_run "$d" "$csv")
  echo "csv, $d: ${secs}s  ($(tail -1 "$out/stderr.txt"))"
  results+=("\"$d\": $secs")
done
secs=$(time_run ensemble "$json")
echo "prometheus json, ensemble: ${secs}s"
results+=("\"ensemble_prometheus_json\": $secs")
lines=$(wc -l <"$out/scores.csv")
echo "{\"rows\": $rows, \"scores_lines\": $lines, \"seconds\": {$(IFS=,; echo "${results[*]}")}}"
