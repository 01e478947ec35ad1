#!/usr/bin/env bash
# Diff benchmark: the paired comparison of two models over a 200,000-result run (100,000 graded
# jobs × 2 models, one sample each), timed with its peak memory. The target is under 2 s and
# 100 MB for `msgbatch diff RUN --format json`.
#
#   scripts/bench-diff.sh [JOBS]      default: 100000 (so 2 × JOBS results)
#
# The run is made against the in-process mock (`--mock`), each model passing its grader with a
# probability of its own (`--mock-pass`), then `diff` is measured as json and as the table,
# plain and clustered on a tag. BENCH_BIN=PATH measures that binary instead of the release
# build (a debug build's figures are not the release's).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-100000}
. scripts/mock-harness.sh

awk -v n="$jobs" 'BEGIN {
    for (i = 0; i < n; i++)
        printf "{\"custom_id\":\"q%d\",\"params\":{\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"needle-%d\"}]},\"expect\":{\"contains\":\"needle-%d\"},\"tags\":{\"doc\":\"d%d\"}}\n", i, i, i, i % 500;
}' > "$work/jobs.jsonl"
db=$work/diff.db
start=$(date +%s.%N)
"$bin" --db "$db" --quiet run "$work/jobs.jsonl" --name big --mock \
    --models claude-haiku-4-5,claude-sonnet-4-6 \
    --mock-pass claude-haiku-4-5=0.70,claude-sonnet-4-6=0.72 \
    --concurrency 256 > /dev/null 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
end=$(date +%s.%N)
results=$(sqlite3 "$db" "SELECT count(*) FROM results")
echo "binary: $build; run of $results results made in $(echo "$end - $start" | bc) s"

printf '%-28s %9s %9s\n' case seconds "peak MB"
measure() {
    local name=$1
    shift
    /usr/bin/time -f '%e %M' -o "$work/time.txt" "$bin" --db "$db" diff big "$@" --out - \
        > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
    read -r seconds kb < "$work/time.txt"
    printf '%-28s %9s %9.1f\n' "$name" "$seconds" "$(echo "$kb / 1024" | bc -l)"
}
measure "json" --format json
measure "json, clustered on tag:doc" --format json --cluster tag:doc
measure "table" --format table
python3 - "$work/out.txt" << 'PY' || true
import sys
for line in open(sys.argv[1]):
    if " − " in line:
        print(line.rstrip())
PY
