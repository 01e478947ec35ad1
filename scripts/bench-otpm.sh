#!/usr/bin/env bash
# Learnt-OTPM benchmark: a run bound by the gateway's output-token limit, with no limit given
# (the limiter learns it from the `anthropic-ratelimit-*` headers alone), against `msgbatch
# mock` charging output as the API does (a request is admitted while the bucket is not in
# debt, and charged what it produced once answered).
#
#   scripts/bench-otpm.sh [JOBS] [CONCURRENCY]     default: 3000 jobs, concurrency 64
#
# Prints the share of the limit used (the ideal time, (output - bucket) / (limit per second),
# over the run's time) and the share of requests answered 429. Builds and measures the release
# binary (BENCH_BIN=PATH measures another; the output says which).
# MOCK_ARGS adds arguments to the mock (e.g. "--latency-ms 1000"); KEEP=FILE keeps the database.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-3000}
concurrency=${2:-64}
. scripts/mock-harness.sh
keep_then_cleanup() {
    if [ -n "${KEEP:-}" ]; then cp "$work/run.db" "$KEEP"; fi
    cleanup
}
trap keep_then_cleanup EXIT

# About three quarters of what the file needs: the run is bound for about 20 s.
otpm=$((jobs * 50))
# shellcheck disable=SC2086 # MOCK_ARGS is a list of words.
start_mock --rate-limit-otpm "$otpm" ${MOCK_ARGS:-}

# The same file as scripts/bench-limits.sh: 100 to 900 tokens of input, up to 200 of output.
awk -v n="$jobs" 'BEGIN {
    for (i = 0; i < n; i++) {
        words = 100 + (i * 37) % 800;
        text = "";
        for (w = 0; w < words; w++) text = text "abc ";
        printf "{\"custom_id\":\"l-%d\",\"params\":{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":200,\"messages\":[{\"role\":\"user\",\"content\":\"%d %s\"}]}}\n", i, i, text;
    }
}' > "$work/jobs.jsonl"

start=$(date +%s.%N)
BENCH_KEY=bench "$bin" --db "$work/run.db" --quiet run "$work/jobs.jsonl" --name run \
    --base-url "$addr" --api-key-env BENCH_KEY --concurrency "$concurrency" --no-warmup \
    > /dev/null 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
end=$(date +%s.%N)

python3 - "$work/run.db" "$start" "$end" "$build" "$otpm" << 'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
start, end, build, limit = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
seconds = end - start
output = db.execute("SELECT COALESCE(SUM(output_tokens), 0) FROM results").fetchone()[0]
attempts, refused = db.execute(
    "SELECT COUNT(*), SUM(http_status = 429) FROM attempts WHERE kind = 'job'").fetchone()
ideal = max(output - limit, 0) / (limit / 60)
print(f"binary: {build}; OTPM {limit:.0f} learnt from headers; output {output} tokens")
print(f"run {seconds:.1f} s, ideal {ideal:.1f} s: {100 * ideal / seconds:.1f}% of the limit used; "
      f"{refused} of {attempts} requests answered 429 ({100 * refused / attempts:.2f}%)")
PY
