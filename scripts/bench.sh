#!/usr/bin/env bash
# Speed and memory of whole runs against `msgbatch mock` in a separate process, each figure
# printed next to its target.
#
#   scripts/bench.sh [JOBS] [CONCURRENCY]      default: 1000000 jobs, concurrency 64
#
# 1. A small run: 2,000 requests of about 6.5 KB (a 13 MB file) at 50 ms latency and
#    concurrency 64. Whole-process time against the ideal (2,000 / 64 x 50 ms = 1.56 s;
#    target at most 1.05x) and peak RSS (target at most 30 MB).
# 2. A large run: JOBS small requests at zero latency and CONCURRENCY. Check, load and send
#    rates and peak RSS (target at most 100 MB for a million), then the time and peak RSS of
#    `msgbatch report` over it in each format (target under 2 s for a million).
#
# Set BENCH_SMALL_ONLY=1 to run only the first, BENCH_STREAM=1 to stream every job of the
# second, BENCH_COMPRESS=gz or zst to give its file compressed, and BENCH_KEEP=DIR to keep
# its database there for further measurements.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-1000000}
concurrency=${2:-64}
. scripts/mock-harness.sh
keep_then_cleanup() {
    if [ -n "${BENCH_KEEP:-}" ]; then
        mkdir -p "$BENCH_KEEP" && mv "$work/bench.db"* "$BENCH_KEEP"/ 2>/dev/null || true
    fi
    cleanup
}
trap keep_then_cleanup EXIT

# `time -v` of the last command: "<elapsed seconds> <peak RSS in MB>".
measured() {
    awk '/Elapsed/ {n = split($NF, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]}
         /Maximum resident/ {r = $6 / 1024}
         END {printf "%.2f %.1f", s, r}' "$1"
}

# Prints "<figure> (target <target>: met|MISSED)"; `$3` is `max` or `min`.
verdict() {
    awk -v v="$1" -v t="$2" -v kind="$3" 'BEGIN {
        ok = (kind == "max") ? (v <= t) : (v >= t);
        printf "(target %s %s: %s)", (kind == "max") ? "at most" : "at least", t,
            ok ? "met" : "MISSED"
    }'
}

echo "== small run: 2000 requests of 6.5 KB, 50 ms latency, concurrency 64"
awk 'BEGIN {
    split("the of and to in is was for on that with as by at from this be are it an or", w, " ");
    for (i = 0; i < 2000; i++) {
        text = "";
        for (k = 0; length(text) < 6400; k++) text = text w[(i * 7 + k * 13) % 21 + 1] " ";
        printf "{\"custom_id\":\"s-%d\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}}\n", i, text;
    }
}' > "$work/small.jsonl"
echo "job file: $(du -h "$work/small.jsonl" | cut -f1)"
start_mock --latency-ms 50
BENCH_KEY=bench /usr/bin/time -v "$bin" --db "$work/small.db" --quiet run "$work/small.jsonl" \
    --base-url "$addr" --api-key-env BENCH_KEY --concurrency 64 \
    > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/out.txt" "$work/err.txt"; exit 1; }
read -r seconds rss <<< "$(measured "$work/err.txt")"
ratio=$(awk -v s="$seconds" 'BEGIN {printf "%.2f", s / (2000 / 64 * 0.05)}')
echo "whole process: ${seconds}s = ${ratio}x the ideal 1.56s $(verdict "$ratio" 1.05 max)"
echo "peak RSS: ${rss} MB $(verdict "$rss" 30 max)"
[ "${BENCH_SMALL_ONLY:-0}" = 1 ] && exit 0

echo
echo "== large run: $jobs jobs, zero latency, concurrency $concurrency"
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

grep -E "jobs checked|jobs loaded|completed|jobs   |time " "$work/out.txt" "$work/err.txt" \
    | sed 's/^[^:]*://'
read -r seconds rss <<< "$(measured "$work/err.txt")"
target_rss=$(awk -v n="$jobs" 'BEGIN {print (n >= 1000000) ? 100 : "-"}')
if [ "$target_rss" = - ]; then
    echo "peak RSS: ${rss} MB (the 100 MB target is for 1,000,000 jobs)"
else
    echo "peak RSS: ${rss} MB $(verdict "$rss" "$target_rss" max)"
fi
echo "database: $(du -h "$work/bench.db" | cut -f1)"

for format in table json html; do
    /usr/bin/time -v "$bin" --db "$work/bench.db" report 1 --format "$format" --out "$work/reports" \
        > /dev/null 2> "$work/report.txt"
    read -r seconds rss <<< "$(measured "$work/report.txt")"
    if [ "$jobs" -ge 1000000 ]; then
        echo "report --format $format: ${seconds}s $(verdict "$seconds" 2 max), peak RSS ${rss} MB"
    else
        echo "report --format $format: ${seconds}s, peak RSS ${rss} MB"
    fi
done
