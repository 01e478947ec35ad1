#!/usr/bin/env bash
# Rate-limit benchmark: how much of the binding limit a run uses, and how many requests the
# gateway refuses, against `msgbatch mock` in its own process enforcing RPM, ITPM or OTPM as
# the API does (token buckets, 429 with retry-after, anthropic-ratelimit-* headers).
#
#   scripts/bench-limits.sh [JOBS] [CONCURRENCY]     default: 3000 jobs, concurrency 64
#
# For each binding limit, with the limit given as a flag and learnt from headers alone: the
# share of the limit used (the ideal time, (total - bucket) / (limit per second), over the
# whole run's time), the share of requests answered 429, and the wall time. Then the same
# file under 15% faults (500, 502, 503 and 529 with `retry-after: 1`, dropped connections,
# answers cut halfway) against none: the ratio of times.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-3000}
concurrency=${2:-64}
. scripts/mock-harness.sh

# Mixed prompt sizes: 100 to 900 tokens of input, up to 200 tokens of output.
awk -v n="$jobs" 'BEGIN {
    for (i = 0; i < n; i++) {
        words = 100 + (i * 37) % 800;
        text = "";
        for (w = 0; w < words; w++) text = text "abc ";
        printf "{\"custom_id\":\"l-%d\",\"params\":{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":200,\"messages\":[{\"role\":\"user\",\"content\":\"%d %s\"}]}}\n", i, i, text;
    }
}' > "$work/jobs.jsonl"

# run NAME MOCK_ARGS -- RUN_ARGS: prints seconds, and leaves the database as $work/NAME.db
run() {
    local name=$1
    shift
    local mock_args=()
    while [ "$1" != "--" ]; do mock_args+=("$1"); shift; done
    shift
    start_mock "${mock_args[@]}"
    local start end
    start=$(date +%s.%N)
    BENCH_KEY=bench "$bin" --db "$work/$name.db" --quiet run "$work/jobs.jsonl" --name run \
        --base-url "$addr" --api-key-env BENCH_KEY --concurrency "$concurrency" --no-warmup \
        "$@" > /dev/null 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
    end=$(date +%s.%N)
    kill "${pids[-1]}" 2> /dev/null || true
    python3 -c "print(round($end - $start, 2))"
}

report() { # NAME KIND LIMIT SECONDS
    "$bin" --db "$work/$1.db" report run --format json --out - > "$work/report.json"
    python3 - "$work/report.json" "$work/$1.db" "$1" "$2" "$3" "$4" << 'PY'
import json, sqlite3, sys
report = json.load(open(sys.argv[1]))
db = sqlite3.connect(sys.argv[2])
name, kind, limit, seconds = sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
t = report["totals"][0]["tokens"]
total = {"itpm": t["input"] + t["cache_write_5m"] + t["cache_write_1h"],
         "otpm": t["output"],
         "rpm": report["totals"][0]["jobs"]["succeeded"]}[kind]
attempts = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
refused = db.execute("SELECT COUNT(*) FROM attempts WHERE http_status = 429").fetchone()[0]
ideal = max(total - limit, 0) / (limit / 60)
print(f"{name:<16} {kind:<5} {limit:>9.0f} {total:>10.0f} {ideal:>8.1f} {seconds:>8.1f} "
      f"{100 * ideal / seconds:>7.1f}% {100 * refused / attempts:>7.2f}%")
PY
}

printf '%-16s %-5s %9s %10s %8s %8s %8s %8s\n' run limit value total ideal_s run_s used 429s
# Limits about three quarters of what the file needs: each run is bound for about 20 s.
itpm=$((jobs * 375))
otpm=$((jobs * 50))
rpm=$((jobs * 3 / 4))
s=$(run itpm-flag --rate-limit-itpm $itpm -- --itpm $itpm); report itpm-flag itpm $itpm "$s"
s=$(run itpm-headers --rate-limit-itpm $itpm --); report itpm-headers itpm $itpm "$s"
s=$(run otpm-flag --rate-limit-otpm $otpm -- --otpm $otpm); report otpm-flag otpm $otpm "$s"
s=$(run otpm-headers --rate-limit-otpm $otpm --); report otpm-headers otpm $otpm "$s"
s=$(run rpm-flag --rate-limit-rpm $rpm -- --rpm $rpm); report rpm-flag rpm $rpm "$s"
s=$(run rpm-headers --rate-limit-rpm $rpm --); report rpm-headers rpm $rpm "$s"

clean=$(run clean --latency-ms 100 --)
faulty=$(run faulty --latency-ms 100 --fail-rate 0.15 --fault-retry-after 1 --)
echo "faults: 15% of requests fail (5xx and 529 with retry-after: 1, resets, cut answers): $faulty s against $clean s, ratio $(python3 -c "print(round($faulty / $clean, 2))")"
