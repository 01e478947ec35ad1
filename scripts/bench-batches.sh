#!/usr/bin/env bash
# Message Batches benchmark: JOBS jobs (default 100,000) through `msgbatch mock`'s Batches
# endpoints in its own process. Prints the whole run's time and peak memory (the file loaded,
# packed into batches, submitted, polled, and every result streamed into the store), and the
# time to record the results alone (from the batch's end to the run's end, read from the
# store).
#
#   scripts/bench-batches.sh [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-100000}
. scripts/mock-harness.sh

awk -v n="$jobs" 'BEGIN {
    for (i = 0; i < n; i++)
        printf "{\"custom_id\":\"b-%d\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"question %d: what is %d plus %d?\"}]}}\n", i, i, i, i;
}' > "$work/jobs.jsonl"

start_mock --batch-ms 200
/usr/bin/time -v -o "$work/time.txt" env BENCH_KEY=bench "$bin" --db "$work/b.db" --quiet \
    run "$work/jobs.jsonl" --name b --base-url "$addr" --api-key-env BENCH_KEY \
    --via batches --poll-interval 100ms > /dev/null 2> "$work/err.txt" \
    || { cat "$work/err.txt"; exit 1; }
wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt")
rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
python3 - "$work/b.db" "$jobs" "$wall" "$rss" << 'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
jobs, wall, rss = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
batches, submitted, recorded = db.execute(
    "SELECT COUNT(*), MIN(submitted_at_ms), MAX(ended_at_ms) FROM batches").fetchone()
succeeded = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").fetchone()[0]
created = db.execute("SELECT MIN(created_at_ms) FROM runs").fetchone()[0]
first, last = db.execute("SELECT MIN(completed_at_ms), MAX(completed_at_ms) FROM results").fetchone()
print(f"jobs {jobs}, batches {batches}, succeeded {succeeded}")
print(f"whole run {wall} (wall), peak RSS {rss / 1024:.0f} MB")
print(f"load, pack and submit: {(submitted - created) / 1000:.1f} s")
print(f"record the results (first to last written): {(last - first) / 1000:.1f} s "
      f"({succeeded / max((last - first) / 1000, 0.001):.0f} results/s)")
print(f"run start to batches recorded: {(recorded - created) / 1000:.1f} s")
PY
