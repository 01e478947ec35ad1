#!/usr/bin/env bash
# Retry-wait benchmark: how long a run takes under faults that carry `retry-after`, against
# the longest chain of waits the gateway forced on any one job.
#
#   scripts/bench-retries.sh [JOBS] [CONCURRENCY]     default: 2000 jobs, concurrency 64
#
# `msgbatch mock` answers after 50 ms and fails 15% of requests (500, 502, 503 and 529 with
# `retry-after: 1`, dropped connections, answers cut halfway). A job's forced chain is the sum,
# over its attempts, of the attempt's latency and the `retry-after` it was answered with; the
# run cannot end before its longest one. The figure is the run's wall time over that chain:
# waiting what `retry-after` says (as the SDKs do) keeps it near 1; waiting the larger of
# `retry-after` and a doubling backoff stretched it to about 2. A job sent late in the run
# ends no sooner than its first send plus its chain, so the script also gives the latest such
# end over the jobs, and the run's wall time over it.
#
# Builds and measures the release binary (BENCH_BIN=PATH measures another; the output says
# which). FAIL_RATE=0 gives the clean run; KEEP=FILE keeps the run's database.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-2000}
concurrency=${2:-64}
. scripts/mock-harness.sh
keep_then_cleanup() {
    if [ -n "${KEEP:-}" ]; then cp "$work/run.db" "$KEEP"; fi
    cleanup
}
trap keep_then_cleanup EXIT

start_mock --latency-ms 50 --fail-rate "${FAIL_RATE:-0.15}" --fault-retry-after 1

awk -v n="$jobs" 'BEGIN {
    for (i = 0; i < n; i++)
        printf "{\"custom_id\":\"r-%d\",\"params\":{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":50,\"messages\":[{\"role\":\"user\",\"content\":\"question %d\"}]}}\n", i, i;
}' > "$work/jobs.jsonl"

start=$(date +%s.%N)
BENCH_KEY=bench "$bin" --db "$work/run.db" --quiet run "$work/jobs.jsonl" --name run \
    --base-url "$addr" --api-key-env BENCH_KEY --concurrency "$concurrency" --no-warmup \
    > /dev/null 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
end=$(date +%s.%N)

python3 - "$work/run.db" "$start" "$end" "$build" "$jobs" "$concurrency" << 'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
start, end, build, jobs, concurrency = float(sys.argv[2]), float(sys.argv[3]), *sys.argv[4:]
wall = end - start
attempts, failed = db.execute(
    "SELECT COUNT(*), COUNT(error_type) FROM attempts WHERE kind = 'job'").fetchone()
chain_ms, job = db.execute(
    "SELECT SUM(latency_ms + COALESCE(retry_after_ms, 0)) AS chain, job FROM attempts "
    "WHERE kind = 'job' GROUP BY job ORDER BY chain DESC LIMIT 1").fetchone()
longest = db.execute("SELECT COUNT(*) FROM attempts WHERE job = ?", (job,)).fetchone()[0]
chain = chain_ms / 1000
print(f"binary: {build}; {jobs} jobs, concurrency {concurrency}, 50 ms answers, 15% faults")
print(f"attempts {attempts}, failed {failed} ({100 * failed / attempts:.1f}%)")
print(f"longest forced chain {chain:.2f} s ({longest} attempts); run {wall:.2f} s; "
      f"ratio {wall / chain:.2f}")
# A job's chain cannot start before its first attempt: the latest end any schedule at this
# concurrency could give is that start plus the chain, for the job where it is latest.
(first,) = db.execute("SELECT MIN(started_at_ms) FROM attempts WHERE kind = 'job'").fetchone()
bound_ms, = db.execute(
    "SELECT MAX(s - ? + c) FROM (SELECT MIN(started_at_ms) AS s, "
    "SUM(latency_ms + COALESCE(retry_after_ms, 0)) AS c FROM attempts WHERE kind = 'job' "
    "GROUP BY job)", (first,)).fetchone()
print(f"latest first send plus its chain {bound_ms / 1000:.2f} s; ratio {wall * 1000 / bound_ms:.2f}")
PY
