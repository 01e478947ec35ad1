#!/usr/bin/env bash
# Throughput and memory benchmark of a whole run against `msgbatch mock` in a separate process
# at zero latency.
#
#   scripts/bench.sh [JOBS] [CONCURRENCY]      default: 50000 jobs, concurrency 64
#
# Prints the load rate (jobs inserted per second), the send rate (jobs committed end to end per
# second) and the peak RSS of the msgbatch process, then the time and peak RSS of `msgbatch
# report` over the finished run in each format. Set BENCH_STREAM=1 to stream every job,
# BENCH_COMPRESS=gz or zst to give the job file compressed (to compare memory with the plain
# file), and BENCH_KEEP=DIR to keep the database there for further measurements.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-50000}
concurrency=${2:-64}
. scripts/mock-harness.sh
keep_then_cleanup() {
    if [ -n "${BENCH_KEEP:-}" ]; then
        mkdir -p "$BENCH_KEEP" && mv "$work/bench.db"* "$BENCH_KEEP"/ 2>/dev/null || true
    fi
    cleanup
}
trap keep_then_cleanup EXIT

# Varied small requests: three models, a system prompt on every fourth, tags on every record.
awk -v n="$jobs" 'BEGIN {
    split("claude-haiku-4-5 claude-sonnet-4-6 claude-opus-4-7", models, " ");
    for (i = 0; i < n; i++) {
        sys = (i % 4 == 0) ? ",\"system\":\"You are terse.\"" : "";
        printf "{\"custom_id\":\"b-%d\",\"params\":{\"model\":\"%s\",\"max_tokens\":%d%s,\"messages\":[{\"role\":\"user\",\"content\":\"Question number %d: what is %d plus %d?\"}]},\"tags\":{\"shard\":\"%d\"}}\n",
            i, models[i % 3 + 1], 64 + i % 64, sys, i, i, i * 7, i % 10;
    }
}' > "$work/jobs.jsonl"
input=$work/jobs.jsonl
case "${BENCH_COMPRESS:-}" in
    gz) gzip -k "$input" && input=$input.gz ;;
    zst) command -v zstd > /dev/null || { echo "BENCH_COMPRESS=zst needs zstd(1): apt-get install zstd"; exit 2; }
        zstd -q -k "$input" && input=$input.zst ;;
    "") ;;
    *) echo "BENCH_COMPRESS is gz or zst"; exit 2 ;;
esac
echo "job file: $jobs lines, $(du -h "$input" | cut -f1)"

start_mock

stream=()
[ "${BENCH_STREAM:-0}" = 1 ] && stream=(--stream)
BENCH_KEY=bench /usr/bin/time -v "$bin" --db "$work/bench.db" --quiet run "$input" \
    --base-url "$addr" --api-key-env BENCH_KEY --concurrency "$concurrency" "${stream[@]}" \
    > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/out.txt" "$work/err.txt"; exit 1; }

grep -E "jobs loaded|completed|jobs   |time " "$work/out.txt" "$work/err.txt" | sed 's/^[^:]*://'
echo "peak RSS: $(awk '/Maximum resident set size/ {printf "%.1f MB", $6 / 1024}' "$work/err.txt")"
echo "database: $(du -h "$work/bench.db" | cut -f1)"

for format in table json html; do
    /usr/bin/time -v "$bin" --db "$work/bench.db" report 1 --format "$format" --out "$work/reports" \
        > /dev/null 2> "$work/report.txt"
    awk -v f="$format" '/Elapsed/ {t = $NF} /Maximum resident/ {r = $6 / 1024}
        END {printf "report --format %s: %s, peak RSS %.1f MB\n", f, t, r}' "$work/report.txt"
done
