#!/usr/bin/env bash
# `msgbatch view` on a large store: RESULTS results (default 1,000,000) in one run, made by
# copying the rows of a small real run on the mock straight into SQLite (a real run of a
# million jobs takes far longer and measures the runner, not the view). Starts the view, times
# its pages with curl (the job list's first page, filtered and sorted pages, the run page
# while its report is computed and after, its models compared and the run diffed with itself
# while each is computed and after, one job, the runs), and prints the server's peak RSS.
#
#   scripts/bench-view.sh [RESULTS]
#
# BENCH_BIN=target/debug/msgbatch measures a debug build instead of building the release one
# (its figures are a debug build's, and say so). BENCH_VIEW_DB=PATH keeps the store made at
# PATH and, when it exists already, measures it again without making it.
#
# A postgres:// URL in BENCH_VIEW_DB measures that PostgreSQL store: one without a run named
# `large` has it made there first (the same rows as on SQLite, copied with INSERT … SELECT
# over generate_series by psql, which must be installed), and one with it is measured as it
# is. Give it a database of its own, made for it and dropped after:
#
#   createdb -h 127.0.0.1 -U postgres view_bench
#   BENCH_VIEW_DB=postgres://postgres@127.0.0.1:5432/view_bench scripts/bench-view.sh
#   dropdb -h 127.0.0.1 -U postgres view_bench
set -euo pipefail
cd "$(dirname "$0")/.."

results=${1:-1000000}
. scripts/mock-harness.sh

db=${BENCH_VIEW_DB:-$work/view.db}
# A small real run: its rows are the templates of the large one.
seed_run() {
    awk 'BEGIN {
        for (i = 0; i < 4; i++)
            printf "{\"custom_id\":\"seed-%d\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"say alpha %d\"}]},\"expect\":{\"contains\":\"alpha\"},\"tags\":{\"suite\":\"seed\"}}\n", i, i;
    }' > "$work/seed.jsonl"
    "$bin" --db "$db" --quiet run "$work/seed.jsonl" --name seed --mock > /dev/null
}
if [[ "$db" == postgres://* ]]; then
    made=$(psql "$db" -v ON_ERROR_STOP=1 -tAc "SELECT to_regclass('runs') IS NOT NULL")
    if [ "$made" = t ]; then
        made=$(psql "$db" -v ON_ERROR_STOP=1 -tAc \
            "SELECT EXISTS (SELECT 1 FROM runs WHERE name = 'large')")
    fi
    if [ "$made" = t ]; then
        echo "store: $db as it is"
    else
        seed_run
        started=$(date +%s.%N)
        # The rows of the SQLite store below, statement for statement.
        psql "$db" -q -v ON_ERROR_STOP=1 -v n="$results" << 'SQL'
BEGIN;
INSERT INTO runs (name, created_at_ms, finished_at_ms, status, input_path, input_sha256,
                  gateway_name, base_url, messages_path, settings, input_format, via, loaded,
                  input_jobs)
SELECT 'large', created_at_ms, finished_at_ms, 'completed', input_path, input_sha256,
       gateway_name, base_url, messages_path, settings, input_format, via, TRUE, :n
FROM runs WHERE name = 'seed';
SELECT id AS run FROM runs WHERE name = 'large' \gset
-- Jobs on two models; every tenth fails its grader, every hundredth has no answer.
INSERT INTO jobs (run_id, job_id, model, line, request, request_sha256, tags, expect, state,
                  attempts)
SELECT :run, 'job-' || i, m.model, i + 1,
       CAST(json_build_object('model', m.model, 'max_tokens', 64,
            'messages', json_build_array(json_build_object('role', 'user',
                'content', 'question ' || i || ': what is ' || i || ' plus ' || i || '?')))
            AS TEXT),
       encode(sha256(convert_to('job-' || i, 'UTF8')), 'hex'),
       CAST(json_build_object('suite', 's' || (i % 7)) AS TEXT),
       '{"contains":"' || i * 2 || '"}',
       CASE WHEN i % 100 = 99 THEN 'failed' ELSE 'succeeded' END, 1
FROM generate_series(0, :n - 1) AS i,
     LATERAL (SELECT CASE i % 2 WHEN 0 THEN 'claude-haiku-4-5'
                                ELSE 'claude-sonnet-4-6' END AS model) AS m
ORDER BY i;
INSERT INTO results (job, message_id, response_model, stop_reason, input_tokens,
                     output_tokens, cache_creation_input_tokens, cache_write_5m_tokens,
                     cache_write_1h_tokens, cache_read_input_tokens, latency_ms, streamed,
                     cost_pico_usd, completed_at_ms)
SELECT id, 'msg_' || id, model,
       CASE WHEN id % 13 = 0 THEN 'max_tokens' ELSE 'end_turn' END,
       20 + id % 50, 10 + id % 40, 0, 0, 0, 0, 150 + (id * 7919) % 4000, FALSE,
       (20 + id % 50) * 1000000 + (10 + id % 40) * 5000000, 1700000000000 + id * 10
FROM jobs WHERE run_id = :run AND state = 'succeeded' ORDER BY id;
INSERT INTO responses (job, body)
SELECT j.id, CAST(json_build_object('id', 'msg_' || j.id, 'type', 'message',
                  'role', 'assistant', 'model', j.model,
                  'content', json_build_array(json_build_object('type', 'text',
                      'text', 'The answer is ' || (j.line - 1) * 2 || '.')),
                  'stop_reason', r.stop_reason, 'stop_sequence', NULL,
                  'usage', json_build_object('input_tokens', r.input_tokens,
                                             'output_tokens', r.output_tokens)) AS TEXT)
FROM jobs j JOIN results r ON r.job = j.id WHERE j.run_id = :run ORDER BY j.id;
INSERT INTO attempts (job, attempt, started_at_ms, queue_wait_ms, latency_ms, http_status,
                      error_type, error_message, kind)
SELECT id, 1, 1700000000000 + id * 10, 0, 150 + (id * 7919) % 4000,
       CASE state WHEN 'failed' THEN 529 ELSE 200 END,
       CASE state WHEN 'failed' THEN 'overloaded_error' END,
       CASE state WHEN 'failed' THEN 'Overloaded' END, 'job'
FROM jobs WHERE run_id = :run ORDER BY id;
INSERT INTO grades (job, grader, kind, passed, reason, spec, graded_at_ms)
SELECT id, 0, 'contains', id % 10 != 0,
       CASE WHEN id % 10 = 0 THEN 'the answer does not contain it' END, expect, 1700000000000
FROM jobs WHERE run_id = :run AND state = 'succeeded' ORDER BY id;
COMMIT;
-- As autovacuum leaves a store some time after its writes: visibility known, statistics kept.
VACUUM ANALYZE;
SELECT 'store: ' || :n || ' jobs, ' || COUNT(*) || ' results in run `large` (id ' || :run || ')'
FROM results r JOIN jobs j ON j.id = r.job WHERE j.run_id = :run \g (tuples_only=on)
SQL
        echo "filled in $(echo "$(date +%s.%N) - $started" | bc) s; database $(psql "$db" -tAc \
            "SELECT pg_database_size(current_database()) / 1048576") MB"
    fi
elif [ -e "$db" ]; then
    echo "store: $db as it is"
else
seed_run

started=$(date +%s.%N)
python3 - "$db" "$results" << 'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = int(sys.argv[2])
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = OFF")
seed = db.execute("SELECT id FROM runs WHERE name = 'seed'").fetchone()[0]
db.execute("""INSERT INTO runs (name, created_at_ms, finished_at_ms, status, input_path,
              input_sha256, gateway_name, base_url, messages_path, settings, input_format, via,
              loaded, input_jobs)
              SELECT 'large', created_at_ms, finished_at_ms, 'completed', input_path,
                     input_sha256, gateway_name, base_url, messages_path, settings,
                     input_format, via, 1, ? FROM runs WHERE id = ?""", (n, seed))
run = db.execute("SELECT id FROM runs WHERE name = 'large'").fetchone()[0]
# Jobs on two models; every tenth fails its grader, every hundredth has no answer.
db.execute("""WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < ? - 1)
              INSERT INTO jobs (run_id, job_id, model, line, request, request_sha256, tags,
                                expect, state, attempts)
              SELECT ?, 'job-' || i,
                     CASE i % 2 WHEN 0 THEN 'claude-haiku-4-5' ELSE 'claude-sonnet-4-6' END,
                     i + 1,
                     json_object('model', CASE i % 2 WHEN 0 THEN 'claude-haiku-4-5'
                                                     ELSE 'claude-sonnet-4-6' END,
                                 'max_tokens', 64,
                                 'messages', json_array(json_object('role', 'user',
                                     'content', 'question ' || i || ': what is ' || i
                                                || ' plus ' || i || '?'))),
                     hex(randomblob(32)),
                     json_object('suite', 's' || (i % 7)),
                     '{"contains":"' || i * 2 || '"}',
                     CASE WHEN i % 100 = 99 THEN 'failed' ELSE 'succeeded' END, 1
              FROM k""", (n, run))
first, last = db.execute("SELECT MIN(id), MAX(id) FROM jobs WHERE run_id = ?", (run,)).fetchone()
# The jobs counted into the run's tallies, as msgbatch counts the jobs it stores (its store
# counts them per insert, not by a trigger: rows written as SQL are counted by their writer).
db.execute("""INSERT INTO run_tallies (run_id, model, jobs, pending, succeeded, failed, rejected,
                                       first_job, last_job)
              SELECT run_id, model, COUNT(*), 0, COUNT(*) FILTER (WHERE state = 'succeeded'),
                     COUNT(*) FILTER (WHERE state = 'failed'), 0, MIN(id), MAX(id)
              FROM jobs WHERE run_id = ? GROUP BY run_id, model""", (run,))
db.execute("""INSERT INTO results (job, message_id, response_model, stop_reason, input_tokens,
                                   output_tokens, cache_creation_input_tokens,
                                   cache_write_5m_tokens, cache_write_1h_tokens,
                                   cache_read_input_tokens, latency_ms, streamed,
                                   cost_pico_usd, completed_at_ms)
              SELECT id, 'msg_' || id, model,
                     CASE WHEN id % 13 = 0 THEN 'max_tokens' ELSE 'end_turn' END,
                     20 + id % 50, 10 + id % 40, 0, 0, 0, 0, 150 + (id * 7919) % 4000, 0,
                     (20 + id % 50) * 1000000 + (10 + id % 40) * 5000000,
                     1700000000000 + id * 10
              FROM jobs WHERE run_id = ? AND state = 'succeeded'""", (run,))
db.execute("""INSERT INTO responses (job, body)
              SELECT j.id, json_object('id', 'msg_' || j.id, 'type', 'message', 'role',
                                       'assistant', 'model', j.model,
                                       'content', json_array(json_object('type', 'text',
                                           'text', 'The answer is ' || (j.line - 1) * 2 || '.')),
                                       'stop_reason', r.stop_reason, 'stop_sequence', NULL,
                                       'usage', json_object('input_tokens', r.input_tokens,
                                                            'output_tokens', r.output_tokens))
              FROM jobs j JOIN results r ON r.job = j.id WHERE j.run_id = ?""", (run,))
db.execute("""INSERT INTO attempts (job, attempt, started_at_ms, queue_wait_ms, latency_ms,
                                    http_status, error_type, error_message, kind)
              SELECT id, 1, 1700000000000 + id * 10, 0, 150 + (id * 7919) % 4000,
                     CASE state WHEN 'failed' THEN 529 ELSE 200 END,
                     CASE state WHEN 'failed' THEN 'overloaded_error' END,
                     CASE state WHEN 'failed' THEN 'Overloaded' END, 'job'
              FROM jobs WHERE run_id = ?""", (run,))
db.execute("""INSERT INTO grades (job, grader, kind, passed, reason, spec, graded_at_ms)
              SELECT id, 0, 'contains', id % 10 != 0,
                     CASE WHEN id % 10 = 0 THEN 'the answer does not contain it' END,
                     expect, 1700000000000
              FROM jobs WHERE run_id = ? AND state = 'succeeded'""", (run,))
db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
count = db.execute("SELECT COUNT(*) FROM results r JOIN jobs j ON j.id = r.job "
                   "WHERE j.run_id = ?", (run,)).fetchone()[0]
print(f"store: {n} jobs, {count} results in run `large` (id {run})")
PY
echo "filled in $(echo "$(date +%s.%N) - $started" | bc) s; database $(du -m "$db" | cut -f1) MB"
fi

/usr/bin/time -v -o "$work/time.txt" "$bin" --db "$db" view --port 0 \
    > "$work/view.out" 2> "$work/view.err" &
pids+=($!)
url=""
for _ in $(seq 200); do
    url=$(sed -n 's/^msgbatch view: //p' "$work/view.out")
    [ -n "$url" ] && break
    sleep 0.05
done
[ -n "$url" ] || { echo "the view did not start"; cat "$work/view.err"; exit 1; }
# The first request is the server's first look at the store (the runs' counts are kept in the
# store as rows are written); the run's report (as long as `msgbatch report` takes) is
# computed in the background, and the run's page answers meanwhile that it is. The pages
# below are timed once it is ready (and no longer computed beside them).
first_runs=$(curl -s -o "$work/runs.json" -w '%{time_total}' "${url}api/runs")
run=$(python3 -c 'import json,sys; print([r["id"] for r in json.load(open(sys.argv[1]))["runs"] if r["name"] == "large"][0])' "$work/runs.json")
first_run=$(curl -s -o /dev/null -w '%{time_total}' "${url}runs/$run")
asked=$(date +%s.%N)
for tries in $(seq 1800); do
    curl -s "${url}api/runs/$run" \
        | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["report_status"] != "ready")' \
        && break
    [ "$tries" = 1800 ] && { echo "the report is not ready after 30 minutes"; exit 1; }
    sleep 1
done
ready=$(echo "$(date +%s.%N) - $asked" | bc)
job=$(curl -s "${url}api/runs/$run/jobs?per_page=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])')
further=$(curl -s "${url}api/runs/$run/jobs?q=question+999999%3A" | python3 -c 'import json,sys; print(json.load(sys.stdin)["search"]["next_from"])')

# Each page three times: the figure is the median; a page that does not answer 200 says so.
time_page() {
    local name=$1 path=$2 figures
    figures=$(for _ in 1 2 3; do
        curl -s -o /dev/null -w '%{time_total} %{http_code}\n' "${url}${path#/}"
    done | sort -n | sed -n 2p)
    printf '  %-48s %7.0f ms  %s\n' "$name" "$(echo "${figures% *} * 1000" | bc)" \
        "$([ "${figures#* }" = 200 ] || echo "HTTP ${figures#* }")"
}
echo "pages ($build, median of 3; target: every page under 300 ms, the server under 100 MB):"
printf '  %-48s %7.0f ms\n' "runs, first request" "$(echo "$first_runs * 1000" | bc)"
printf '  %-48s %7.0f ms\n' "run page, first request (report being computed)" "$(echo "$first_run * 1000" | bc)"
printf '  %-48s %7.1f s\n' "  its report ready in the background after" "$ready"
time_page "run page (report kept)" "/runs/$run"
time_page "run page (JSON)" "/api/runs/$run"
time_page "job list, first page" "/runs/$run/jobs"
time_page "job list, first page (JSON)" "/api/runs/$run/jobs"
time_page "job list, page 100" "/runs/$run/jobs?page=100"
time_page "job list, outcome=failed (10%)" "/runs/$run/jobs?outcome=failed"
time_page "job list, no answer (1%)" "/runs/$run/jobs?outcome=no_answer"
time_page "job list, model + stop reason" "/runs/$run/jobs?model=claude-sonnet-4-6&stop_reason=max_tokens"
# Filters few or no jobs pass: each list and its count read the jobs they keep (by an index, or
# by what the run's tally counts), not every job of the run.
time_page "job list, outcome=failed, page 150 by number" "/runs/$run/jobs?outcome=failed&page=150"
time_page "job list, grader contains failed" "/runs/$run/jobs?grader=contains&outcome=failed"
time_page "job list, model + stop reason, page 40 by number" \
    "/runs/$run/jobs?model=claude-sonnet-4-6&stop_reason=max_tokens&page=40"
time_page "job list, a stop reason no job has" "/runs/$run/jobs?stop_reason=refusal"
time_page "job list, rejected (none)" "/runs/$run/jobs?outcome=rejected"
time_page "job list, pending, one model (none)" "/runs/$run/jobs?outcome=pending&model=claude-haiku-4-5"
time_page "job list, one job by its id" "/runs/$run/jobs?job_id=job-777777"
time_page "job list, tag suite=s3" "/runs/$run/jobs?tag=suite%3Ds3"
time_page "job list, text search (one window)" "/runs/$run/jobs?q=question+999999%3A"
time_page "job list, text search, searching further" "/runs/$run/jobs?q=question+999999%3A&from=$further"
time_page "job list, sorted by cost" "/runs/$run/jobs?sort=cost_desc"
time_page "job list, sorted by latency" "/runs/$run/jobs?sort=latency_desc"
time_page "job list, sorted by cost, one model" "/runs/$run/jobs?sort=cost_asc&model=claude-haiku-4-5"
time_page "job list, sorted by latency, page 100" "/runs/$run/jobs?sort=latency_asc&page=100"
# The last pages: past every job with a value, those without (no answer) in row order.
last=$(( (results + 49) / 50 ))
time_page "job list, sorted by latency, last page" "/runs/$run/jobs?sort=latency_desc&page=$last"
time_page "job list, sorted by cost, one model, last page" \
    "/runs/$run/jobs?sort=cost_desc&model=claude-sonnet-4-6&page=$(( (last + 1) / 2 ))"
time_page "job list, page 100, one model" "/runs/$run/jobs?page=100&model=claude-haiku-4-5"
# Deep pages of a sorted list, as its links reach them: a next link carries the last row's
# value and id (after=), a previous link the first's (before=), and the page is found by a
# seek on the sort's index. The same pages asked by number are found by a seek too when the
# list is every job of the run (the job before the page is counted in the sort's index alone);
# a filtered list's are read job by job, and refused (400, naming the links) past 10,000 jobs
# from an end of the list. (A binary without cursors gives none: those lines say so.)
cursor_of() {
    curl -s "${url}api/runs/$run/jobs?$1" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$2"
}
# The cursor a link names for the job at POSITION (from 0) of the run's haiku jobs by cost
# (`cost`) or of its jobs tagged suite=s3 (`tag`), read from the store itself: a filtered
# list's page that deep is not found by its number (it is refused), only by its links.
store_cursor() {
    local list=$1 position=$2 where order value
    case $list in
        cost) where="j.model = 'claude-haiku-4-5' AND r.cost_pico_usd IS NOT NULL"
              order="r.cost_pico_usd, r.job" value="r.cost_pico_usd || '.' || r.job" ;;
        tag) where="$( [[ "$db" == postgres://* ]] && echo "CAST(j.tags AS JSONB) ->> 'suite'" \
                       || echo "json_extract(j.tags, '\$.suite')") = 's3'"
             order="j.id" value="j.id" ;;
    esac
    local sql="SELECT $value FROM jobs j LEFT JOIN results r ON r.job = j.id
               WHERE j.run_id = $run AND $where ORDER BY $order LIMIT 1 OFFSET $position"
    if [[ "$db" == postgres://* ]]; then
        psql "$db" -tAc "$sql"
    else
        python3 -c 'import sqlite3,sys; print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute(sys.argv[2]).fetchone()[0])' "$db" "$sql"
    fi
}
one_model="sort=cost_asc&model=claude-haiku-4-5"
for deep in 5000 9900; do
    time_page "job list, sorted by cost, one model, page $deep by number" \
        "/runs/$run/jobs?$one_model&page=$deep"
    after=$(cursor_of "$one_model&page=$(( deep - 1 ))" next)
    [ -n "$after" ] || after=$(store_cursor cost $(( (deep - 1) * 50 - 1 )))
    if [ -n "$after" ]; then
        time_page "  the same page by its next link (after=)" \
            "/runs/$run/jobs?$one_model&after=$after&page=$deep"
        time_page "  the same page (JSON)" "/api/runs/$run/jobs?$one_model&after=$after&page=$deep"
        before=$(cursor_of "$one_model&page=$(( deep + 1 ))" prev)
        [ -n "$before" ] || before=$(store_cursor cost $(( deep * 50 )))
        time_page "  the same page by its previous link (before=)" \
            "/runs/$run/jobs?$one_model&before=$before&page=$deep"
    else
        echo "  (no cursors: this binary pages by number only)"
    fi
done
middle=$(( (results + 49) / 50 / 2 ))
time_page "job list, sorted by latency, page $middle by number" \
    "/runs/$run/jobs?sort=latency_desc&page=$middle"
after=$(cursor_of "sort=latency_desc&page=$(( middle - 1 ))" next)
[ -n "$after" ] && time_page "  the same page by its next link (after=)" \
    "/runs/$run/jobs?sort=latency_desc&after=$after&page=$middle"
time_page "job list, tag suite=s3, page 1400 by number" "/runs/$run/jobs?tag=suite%3Ds3&page=1400"
after=$(cursor_of "tag=suite%3Ds3&page=1399" next)
[ -n "$after" ] || after=$(store_cursor tag $(( 1399 * 50 - 1 )))
[ -n "$after" ] && time_page "  the same page by its next link (after=)" \
    "/runs/$run/jobs?tag=suite%3Ds3&after=$after&page=1400"
# The run's models compared, and the run compared with itself (a diff of a million jobs on
# each side): the first look answers at once while the comparison is computed in the
# background, then each page is read from what the server keeps.
compare_page() {
    local name=$1 path=$2 api=$3 first asked tries=0
    first=$(curl -s -o /dev/null -w '%{time_total}' "${url}${path#/}")
    asked=$(date +%s.%N)
    until curl -s "${url}${api#/}" | python3 -c \
        'import json,sys; sys.exit(json.load(sys.stdin).get("status") != "ready")'; do
        tries=$((tries + 1))
        [ "$tries" = 1800 ] && { echo "$name is not ready after 30 minutes"; exit 1; }
        sleep 1
    done
    printf '  %-48s %7.0f ms\n' "$name, first request (being computed)" \
        "$(echo "$first * 1000" | bc)"
    printf '  %-48s %7.1f s\n' "  ready in the background after" \
        "$(echo "$(date +%s.%N) - $asked" | bc)"
    time_page "$name, first page (kept)" "$path"
    time_page "$name, page 5000" "$path?page=5000"
    time_page "$name, filtered" "$path?$4"
}
compare_page "model comparison" "/runs/$run/models" "/api/runs/$run/models" "outcome=fail"
compare_page "diff with itself" "/diff/$run/$run" "/api/diff/$run/$run" \
    "model=claude-sonnet-4-6"
time_page "one job" "/runs/$run/jobs/$job"
time_page "runs" "/"
time_page "runs (JSON, as the page polls it)" "/api/runs"

# SIGTERM to the server itself (time passes no signal on), which stops as on Ctrl-C.
pkill -TERM -P "${pids[-1]}"
wait "${pids[-1]}" || true
rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
echo "view server peak RSS: $((rss / 1024)) MB (target: under 100 MB)"
