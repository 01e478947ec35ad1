#!/usr/bin/env bash
# Peak memory of msgbatch fed input made to exhaust it, each figure next to the bound that
# should hold it.
#
#   scripts/bench-input-bombs.sh [GB]        default: 1 GB lines and bombs
#
# 1. A job file of one GB-long line: refused at line 1 past 33 MB (a record's bound), and with
#    --skip-invalid skipped to its end while the next line runs.
# 2. A gzip bomb: GB of zeros on one line, compressed to about a thousandth.
# 3. /dev/zero as the job file, and as --prompt-template (bound 1 MB).
# 4. A CSV of blank lines after its header (BENCH_BLANK_MB, default GB's worth): streamed,
#    nothing accumulates.
#
# Peak RSS is the whole process's (about 25 MB before it reads anything). Set MSGBATCH_BIN to
# measure another build (e.g. target/debug/msgbatch, whose figures must be labelled as such);
# by default the release binary is built.
set -euo pipefail
cd "$(dirname "$0")/.."

gb=${1:-1}
if [ -n "${MSGBATCH_BIN:-}" ]; then
    bin=$MSGBATCH_BIN
else
    cargo build --release --locked --quiet
    bin=$PWD/target/release/msgbatch
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "binary: $bin"

# Runs msgbatch with ARGS under `time -v` and prints the case, its exit code, elapsed time and
# peak RSS next to the bound.
measure() {
    local name=$1 bound=$2
    shift 2
    local status=0
    /usr/bin/time -v "$bin" --db "$work/bench.db" --quiet "$@" \
        > "$work/out.txt" 2> "$work/err.txt" || status=$?
    awk -v name="$name" -v bound="$bound" -v status="$status" '
        /Elapsed/ {n = split($NF, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]}
        /Maximum resident/ {r = $6 / 1024}
        END {printf "%-44s exit %-3s %7.2f s  peak %7.1f MB  (bound: %s)\n", name, status, s, r, bound}
    ' "$work/err.txt"
    grep -m1 '^error:' "$work/err.txt" | cut -c1-150 || true
    rm -f "$work"/bench.db*
}

job='{"custom_id":"after","params":{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}}'

echo "== one line of $gb GB"
{
    printf '{"custom_id":"long","params":{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"'
    head -c "${gb}G" /dev/zero | tr '\0' 'x'
    printf '"}]}}\n%s\n' "$job"
} > "$work/long.jsonl"
measure "run: refused at line 1" "33 MB record" run "$work/long.jsonl" --mock
measure "run --skip-invalid: skipped, next line sent" "33 MB record" \
    run "$work/long.jsonl" --mock --skip-invalid
rm -f "$work/long.jsonl"

echo "== gzip bomb: $gb GB of zeros on one line"
head -c "${gb}G" /dev/zero | gzip -1 > "$work/bomb.jsonl.gz"
echo "compressed: $(du -h "$work/bomb.jsonl.gz" | cut -f1)"
measure "run: refused at line 1" "33 MB record" run "$work/bomb.jsonl.gz" --mock
measure "estimate: refused at line 1" "33 MB record" estimate "$work/bomb.jsonl.gz" --mock
rm -f "$work/bomb.jsonl.gz"

echo "== endless streams"
measure "run /dev/zero" "33 MB record" run /dev/zero --mock
printf 'id,prompt\na,hi\n' > "$work/rows.csv"
measure "run --prompt-template /dev/zero" "1 MB template" \
    run "$work/rows.csv" --prompt-template /dev/zero --mock

blank_mb=${BENCH_BLANK_MB:-$((gb * 1024))}
echo "== $blank_mb MB of blank lines in a CSV"
{
    printf 'id,prompt,model,max_tokens\n'
    head -c "${blank_mb}M" /dev/zero | tr '\0' '\n'
    printf 'a,hi,claude-haiku-4-5,5\n'
} > "$work/blank.csv"
measure "run: one job after the blank lines" "flat (streamed)" run "$work/blank.csv" --mock
