#!/usr/bin/env bash
# Message Batches benchmark: runs of JOBS jobs each (default 100,000 then 1,000,000) through
# `msgbatch mock`'s Batches endpoints in its own process. For each, prints the whole run's
# time and peak memory (the file loaded, packed into batches, each create body streamed from
# the store, the batches polled, and every result streamed into the store) next to their
# targets, and the phases read from the store: load, pack and submit; record the results.
#
# Then the deadline case (DEADLINE_JOBS jobs, default 20,000): a run through batches on a mock
# whose batches never end unless canceled (half of each answered by then), stopped once its
# batch is submitted, and resumed with a deadline already inside the margin: the batch is
# canceled, what it finished recorded, and the rest sent directly. Prints that resume's time
# and peak memory, and its phases, next to their targets.
#
#   scripts/bench-batches.sh [JOBS…]     the sizes, then the deadline case
#   scripts/bench-batches.sh deadline    the deadline case alone
#
# Targets: peak RSS under 100 MB whatever the size (a create body is never in memory whole);
# load, pack and submit 100,000 jobs in 2.1 s or less (the figure before bodies were
# streamed). Deadline case: every job answered once, well inside the deadline (10 minutes),
# peak RSS under 100 MB. Builds and measures the release binary (BENCH_BIN=PATH measures
# another; the output says which, and a debug build's figures are not the release's).
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
[ "${sizes[0]}" != deadline ] || sizes=()
. scripts/mock-harness.sh

start_mock --batch-ms 200
echo "build: $build"
for jobs in "${sizes[@]+"${sizes[@]}"}"; do
    awk -v n="$jobs" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "{\"custom_id\":\"b-%d\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"question %d: what is %d plus %d?\"}]}}\n", i, i, i, i;
    }' > "$work/jobs.jsonl"
    rm -f "$work"/b.db*
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
    "SELECT COUNT(*), MAX(submitted_at_ms), MAX(ended_at_ms) FROM batches").fetchone()
succeeded = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").fetchone()[0]
created = db.execute("SELECT MIN(created_at_ms) FROM runs").fetchone()[0]
first, last = db.execute("SELECT MIN(completed_at_ms), MAX(completed_at_ms) FROM results").fetchone()
mb = rss / 1024
print(f"jobs {jobs}, batches {batches}, succeeded {succeeded}")
print(f"  whole run {wall} (wall), peak RSS {mb:.0f} MB (target < 100 MB: "
      f"{'met' if mb < 100 else 'MISSED'})")
submit = (submitted - created) / 1000
target = 2.1 * jobs / 100_000
print(f"  load, pack and submit every batch: {submit:.1f} s (target <= {target:.1f} s: "
      f"{'met' if submit <= target else 'missed'})")
intent = db.execute("SELECT MIN(intent_at_ms) FROM batches").fetchone()[0]
print(f"    of which load and pack (to the first batch's intent): {(intent - created) / 1000:.1f} s, "
      f"create calls (to the last submission): {(submitted - intent) / 1000:.1f} s")
print(f"  record the results (first to last written): {(last - first) / 1000:.1f} s "
      f"({succeeded / max((last - first) / 1000, 0.001):.0f} results/s)")
print(f"  run start to batches recorded: {(recorded - created) / 1000:.1f} s")
PY
done

# The deadline case.
jobs=${DEADLINE_JOBS:-20000}
start_mock --batch-ms 86400000 --batch-processed-first $((jobs / 2))
awk -v n="$jobs" 'BEGIN {
    for (i = 0; i < n; i++)
        printf "{\"custom_id\":\"d-%d\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"question %d: what is %d plus %d?\"}]}}\n", i, i, i, i;
}' > "$work/jobs.jsonl"
rm -f "$work"/d.db*
# Ten hours is far enough at 64 in flight (before any latency is seen, 30 s each: about four
# hours with the margin) for the run to go through a batch.
BENCH_KEY=bench "$bin" --db "$work/d.db" --quiet run "$work/jobs.jsonl" --name d \
    --base-url "$addr" --api-key-env BENCH_KEY --via batches --deadline 10h --concurrency 64 \
    --poll-interval 100ms > /dev/null 2> "$work/err.txt" &
run_pid=$!
# Stopped (Ctrl-C, which leaves the batch running) once its batch is submitted.
for _ in $(seq 600); do
    submitted=$(python3 -c 'import sqlite3, sys
try:
    print(sqlite3.connect(sys.argv[1]).execute(
        "SELECT COUNT(*) FROM batches WHERE remote_id IS NOT NULL").fetchone()[0])
except sqlite3.Error:
    print(0)' "$work/d.db")
    [ "$submitted" -gt 0 ] && break
    sleep 0.1
done
kill -INT "$run_pid" 2> /dev/null \
    || { echo "the run ended before its batch was submitted:"; cat "$work/err.txt"; exit 1; }
wait "$run_pid" || true
/usr/bin/time -v -o "$work/time.txt" env BENCH_KEY=bench "$bin" --db "$work/d.db" --quiet \
    resume d --deadline 10m --concurrency 64 --poll-interval 100ms \
    > /dev/null 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt")
rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
python3 - "$work/d.db" "$jobs" "$wall" "$rss" << 'PY'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
jobs, wall, rss = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
settings = json.loads(db.execute("SELECT settings FROM runs").fetchone()[0])
deadline = settings["send"]["deadline"]
switched, at = deadline.get("switched_at_ms"), deadline["at_ms"]
ended = db.execute("SELECT MAX(ended_at_ms) FROM batches").fetchone()[0]
batched, direct = db.execute(
    "SELECT SUM(batch), SUM(1 - batch) FROM results").fetchone()
answered = db.execute("SELECT COUNT(DISTINCT job) FROM results").fetchone()[0]
last = db.execute("SELECT MAX(completed_at_ms) FROM results").fetchone()[0]
mb = rss / 1024
print(f"deadline case: jobs {jobs}, {batched} answered in the canceled batch, {direct} directly, "
      f"{answered} answered (target: each of {jobs} once: {'met' if answered == jobs == batched + direct else 'MISSED'})")
print(f"  resume {wall} (wall), peak RSS {mb:.0f} MB (target < 100 MB: "
      f"{'met' if mb < 100 else 'MISSED'})")
print(f"  switch to the batch recorded (cancel, read what it finished): {(ended - switched) / 1000:.1f} s")
print(f"  direct sends to the last answer: {(last - ended) / 1000:.1f} s")
left = (at - last) / 1000
print(f"  last answer {left:.0f} s before the deadline (target: before it: {'met' if left > 0 else 'MISSED'})")
PY
