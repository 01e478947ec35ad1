#!/usr/bin/env bash
# Diff benchmark: the paired comparison of two models over a 200,000-result run (100,000 graded
# jobs × 2 models, one sample each), timed with its peak memory. The target is under 2 s and
# 100 MB for `msgbatch diff RUN --format json`.
#
#   scripts/bench-diff.sh [JOBS]      default: 100000 (so 2 × JOBS results)
#
# The run is made against the in-process mock (`--mock`), each model passing its grader with a
# probability of its own (`--mock-pass`), then `diff` is measured as json (plain and clustered
# on a tag), as CSV and as the table, each case best of three. BENCH_BIN=PATH measures that
# binary instead of the release build (a debug build's figures are not the release's).
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

# Each case best of three runs (the least time, the least peak memory), beside the target.
printf '%-28s %9s %9s   %s\n' case seconds "peak MB" "target (json: < 2 s, < 100 MB)"
measure() {
    local name=$1 target=$2
    shift 2
    local best_s="" best_kb=""
    for _ in 1 2 3; do
        /usr/bin/time -f '%e %M' -o "$work/time.txt" "$bin" --db "$db" diff big "$@" --out - \
            > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
        read -r seconds kb < "$work/time.txt"
        if [ -z "$best_s" ] || [ "$(echo "$seconds < $best_s" | bc)" = 1 ]; then best_s=$seconds; fi
        if [ -z "$best_kb" ] || [ "$kb" -lt "$best_kb" ]; then best_kb=$kb; fi
    done
    local mb verdict=""
    mb=$(echo "$best_kb / 1024" | bc -l)
    if [ "$target" = yes ]; then
        if [ "$(echo "$best_s < 2 && $mb < 100" | bc)" = 1 ]; then verdict=met; else verdict=missed; fi
    fi
    printf '%-28s %9s %9.1f   %s\n' "$name" "$best_s" "$mb" "$verdict"
}
measure "json" yes --format json
measure "json, clustered on tag:doc" yes --format json --cluster tag:doc
measure "csv" no --format csv
measure "table" no --format table
python3 - "$work/out.txt" << 'PY' || true
import sys
for line in open(sys.argv[1]):
    if " − " in line:
        print(line.rstrip())
PY
