#!/usr/bin/env bash
# Cache warm-up benchmark: the same files run with and without warm-up against `msgbatch mock`
# in its own process, at 300 ms to the first token (the mock makes a cache entry readable only
# from the first token of the response that wrote it, as the API does).
#
#   scripts/bench-warmup.sh [CONCURRENCY]      default: 64
#
# Two files: 4 shared prefixes of about 2,300 tokens with 75 questions each, and 200 groups of
# 10 questions sharing a document. For each, with warm-up and with --no-warmup: cache writes
# per distinct prefix (the target is 1.0), the cost, and the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

concurrency=${1:-64}
. scripts/mock-harness.sh

# GROUPS groups of PER questions; each group's system prompt is cached.
make_file() {
    awk -v groups="$1" -v per="$2" 'BEGIN {
        text = "";
        for (i = 0; i < 770; i++) text = text "policy text ";
        for (g = 0; g < groups; g++)
            for (q = 0; q < per; q++)
                printf "{\"custom_id\":\"g%d-q%d\",\"params\":{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":64,\"system\":[{\"type\":\"text\",\"text\":\"Document %d: %s\",\"cache_control\":{\"type\":\"ephemeral\"}}],\"messages\":[{\"role\":\"user\",\"content\":\"question %d\"}]}}\n", g, q, g, text, q;
    }'
}
make_file 4 75 > "$work/shared.jsonl"
make_file 200 10 > "$work/groups.jsonl"

printf '%-8s %-12s %10s %9s %12s %9s\n' file mode prefixes writes/prefix cost seconds
for file in shared groups; do
    for mode in warm cold; do
        start_mock --latency-ms 250 --first-token-ms 50 --token-ms 1
        flags=()
        [ "$mode" = cold ] && flags=(--no-warmup)
        db=$work/$file-$mode.db
        start=$(date +%s.%N)
        BENCH_KEY=bench "$bin" --db "$db" --quiet run "$work/$file.jsonl" --name run \
            --base-url "$addr" --api-key-env BENCH_KEY --concurrency "$concurrency" \
            "${flags[@]}" > /dev/null 2> "$work/err.txt" || { cat "$work/err.txt"; exit 1; }
        end=$(date +%s.%N)
        "$bin" --db "$db" report run --format json --out - > "$work/report.json"
        python3 - "$work/report.json" "$file" "$mode" "$start" "$end" << 'PY'
import json, sys
report = json.load(open(sys.argv[1]))
total = report["totals"][0]
cache = total.get("cache") or {}
prefixes = cache.get("prefixes", 0)
writes = cache.get("writes", 0)
cost = total["cost"]["total_pico_usd"] / 1e12
seconds = float(sys.argv[5]) - float(sys.argv[4])
print(f"{sys.argv[2]:<8} {sys.argv[3]:<12} {prefixes:>10} {writes / max(prefixes, 1):>9.2f} {cost:>12.6f} {seconds:>9.2f}")
PY
        kill "${pids[-1]}" 2> /dev/null || true
    done
done
