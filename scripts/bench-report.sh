#!/usr/bin/env bash
# Time of `msgbatch report` over a million results, best of three in each format, for each
# shape of job file (target under 2 s).
#
#   scripts/bench-report.sh [JOBS] [SHAPE…]    default: 1000000 jobs, shapes bench and dated
#
# Shapes:
#   bench  the file of scripts/bench.sh: three model aliases, short questions, tags.
#   dated  one dated model id (claude-haiku-4-5-20251001) and varied bodies: prompts of 1 to
#          60 words, max_tokens from 16 to 1,039, a system prompt on every third job.
#
# Each shape's database is made once by a run against `msgbatch mock` (zero latency). Set
# BENCH_DBS=DIR to keep the databases there and reuse them, so that two binaries can be timed
# on the same rows (BENCH_BIN=PATH times a given binary). A binary with newer migrations
# brings a database up to date the first time it opens it, and an older one then refuses it:
# time each binary on its own copy.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-1000000}
shift || true
shapes=("$@")
[ ${#shapes[@]} -eq 0 ] && shapes=(bench dated)
. scripts/mock-harness.sh
dbs=${BENCH_DBS:-$work}
mkdir -p "$dbs"

make_jobs() {
    case "$1" in
        bench) awk -v n="$jobs" 'BEGIN {
            split("claude-haiku-4-5 claude-sonnet-4-6 claude-opus-4-7", models, " ");
            for (i = 0; i < n; i++) {
                sys = (i % 4 == 0) ? ",\"system\":\"You are terse.\"" : "";
                printf "{\"custom_id\":\"b-%d\",\"params\":{\"model\":\"%s\",\"max_tokens\":%d%s,\"messages\":[{\"role\":\"user\",\"content\":\"Question number %d: what is %d plus %d?\"}]},\"tags\":{\"shard\":\"%d\"}}\n",
                    i, models[i % 3 + 1], 64 + i % 64, sys, i, i, i * 7, i % 10;
            }
        }' ;;
        dated) awk -v n="$jobs" 'BEGIN {
            split("the of and to in is was for on that with as by at from this be are it an or", w, " ");
            for (i = 0; i < n; i++) {
                words = 1 + (i * 37) % 60;
                text = "";
                for (k = 0; k < words; k++) text = text w[(i * 7 + k * 13) % 21 + 1] " ";
                sys = (i % 3 == 0) ? ",\"system\":\"You answer in the style of a careful reviewer.\"" : "";
                printf "{\"custom_id\":\"d-%d\",\"params\":{\"model\":\"claude-haiku-4-5-20251001\",\"max_tokens\":%d%s,\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}}\n",
                    i, 16 + (i * 131) % 1024, sys, text;
            }
        }' ;;
        *) echo "unknown shape $1 (bench or dated)"; exit 2 ;;
    esac
}

started=false
for shape in "${shapes[@]}"; do
    db=$dbs/report-$shape-$jobs.db
    echo "== $shape: $jobs jobs ($build)"
    if [ ! -f "$db" ]; then
        make_jobs "$shape" > "$work/$shape.jsonl"
        echo "job file: $(du -h "$work/$shape.jsonl" | cut -f1)"
        $started || { start_mock; started=true; }
        BENCH_KEY=bench "$bin" --db "$db" --quiet run "$work/$shape.jsonl" \
            --base-url "$addr" --api-key-env BENCH_KEY --concurrency 64 \
            > "$work/out.txt" 2> "$work/err.txt" || { cat "$work/out.txt" "$work/err.txt"; exit 1; }
        rm "$work/$shape.jsonl"
    fi
    echo "database: $(du -h "$db" | cut -f1)"
    for format in table json html; do
        # Wall time is the target; user+sys CPU time says the same on a loaded machine.
        best=""
        cpu=""
        for _ in 1 2 3; do
            times=$( { TIMEFORMAT='%R %U %S'; time "$bin" --db "$db" report 1 --format "$format" \
                --out "$work/reports" > /dev/null 2>&1; } 2>&1 )
            read -r wall user sys <<< "$times"
            if [ -z "$best" ] || awk -v t="$wall" -v b="$best" 'BEGIN {exit !(t < b)}'; then
                best=$wall
                cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
            fi
        done
        verdict=$(awk -v v="$best" 'BEGIN {print (v <= 2) ? "met" : "MISSED"}')
        echo "report --format $format: ${best}s best of three, ${cpu}s CPU (target at most 2: $verdict)"
    done
done
