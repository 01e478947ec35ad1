#!/usr/bin/env bash
# Several workers sending one run from a PostgreSQL store, against `msgbatch mock` in a
# separate process, each figure printed next to its target.
#
#   scripts/bench-workers.sh [JOBS]      default: 20000 jobs
#
# 1. Throughput: JOBS jobs with 1, 2 and 4 workers (concurrency 32 each, on this one machine)
#    at 0 ms and at 50 ms latency, no rate limit: jobs committed per second, from the first
#    attempt to the last result. Target: four workers not slower than one.
# 2. A shared limit: 4,000 jobs, the gateway and the run at 3,000 requests a minute (so that
#    the last thousand wait for it), 1, 2 and 4 workers:
#    the share of the limit used (requests the gateway accepted over what its bucket held at
#    the start and refilled during the run) and the 429s it answered (target: none).
#
# The server is MSGBATCH_BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432/postgres);
# the script makes and drops a database msgbatch_bench there. Needs psql.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-20000}
admin=${MSGBATCH_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
db=${admin%/*}/msgbatch_bench
. scripts/mock-harness.sh

job_file() {
    awk -v n="$1" 'BEGIN {
        for (i = 0; i < n; i++)
            printf "{\"custom_id\":\"w-%d\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"question %d\"}]}}\n", i, i;
    }' > "$work/jobs.jsonl"
}

sql() { psql "$db" -Atq -c "$1"; }

# One run of `$1` workers against the mock at $addr, extra worker arguments after; prints
# "<jobs/s> <accepted requests> <429s> <seconds from first attempt to last result>".
workers() {
    local n=$1 pids=() i
    shift
    psql "$admin" -q -c "DROP DATABASE IF EXISTS msgbatch_bench WITH (FORCE)" -c "CREATE DATABASE msgbatch_bench" > /dev/null
    BENCH_KEY=bench "$bin" --db "$db" --quiet run "$work/jobs.jsonl" --name bench \
        --base-url "$addr" --api-key-env BENCH_KEY --lease 5s "$@" > "$work/w1.log" 2>&1 &
    pids+=($!)
    until [ "$(sql "SELECT COUNT(*) FROM runs" 2> /dev/null)" = 1 ]; do sleep 0.05; done
    for i in $(seq 2 "$n"); do
        BENCH_KEY=bench "$bin" --db "$db" --quiet work bench --lease 5s "$@" > "$work/w$i.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    sql "SELECT ROUND(COUNT(*) FILTER (WHERE a.http_status = 200) * 1000.0
                      / GREATEST(MAX(a.started_at_ms + a.latency_ms) - MIN(a.started_at_ms), 1), 1),
                COUNT(*) FILTER (WHERE a.http_status = 200),
                COUNT(*) FILTER (WHERE a.http_status = 429),
                ROUND((MAX(a.started_at_ms + a.latency_ms) - MIN(a.started_at_ms)) / 1000.0, 2)
         FROM attempts a" | tr '|' ' '
    [ "$(sql "SELECT COUNT(*) FROM jobs WHERE state <> 'succeeded'")" = 0 ] \
        || { echo "not every job succeeded"; cat "$work"/w*.log; exit 1; }
}

echo "== throughput: $jobs jobs, concurrency 32 per worker, no rate limit"
job_file "$jobs"
for latency in 0 50; do
    start_mock --latency-ms "$latency"
    one=""
    for n in 1 2 4; do
        out=$(workers "$n" --concurrency 32)
        read -r rate _ _ seconds <<< "$out"
        [ -z "$one" ] && one=$rate
        printf "latency %2s ms, %d worker%s: %8s jobs/s (%s s) " "$latency" "$n" \
            "$([ "$n" = 1 ] && echo " " || echo s)" "$rate" "$seconds"
        awk -v r="$rate" -v o="$one" -v n="$n" 'BEGIN {
            if (n == 4) printf "(target at least one worker'"'"'s %s: %s)", o, (r >= o) ? "met" : "MISSED";
            printf "\n"
        }'
    done
    kill "${pids[-1]}"
done

rpm=3000
echo "== a shared limit: 4000 jobs, the gateway and the run at $rpm requests a minute"
job_file 4000
for n in 1 2 4; do
    start_mock --latency-ms 20 --rate-limit-rpm "$rpm"
    out=$(workers "$n" --concurrency 16 --rpm "$rpm")
    read -r _ accepted refused seconds <<< "$out"
    awk -v a="$accepted" -v r="$refused" -v s="$seconds" -v rpm="$rpm" -v n="$n" 'BEGIN {
        printf "%d worker%s: %5.1f%% of the limit used over %s s, %d answered 429 (target none: %s)\n",
            n, (n == 1) ? " " : "s", 100 * a / (rpm + rpm / 60 * s), s, r, (r == 0) ? "met" : "MISSED"
    }'
    kill "${pids[-1]}"
done
psql "$admin" -q -c "DROP DATABASE IF EXISTS msgbatch_bench WITH (FORCE)" > /dev/null
