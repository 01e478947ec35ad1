-- The run store. Every figure a report shows is computed from these tables, so
-- responses are kept as received and nothing here is derived from anything else.
-- Times are Unix epoch milliseconds; durations are milliseconds.

CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    created_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    -- loading: jobs are still being written; a run left in this state never
    -- sent anything and cannot be resumed.
    status          TEXT    NOT NULL CHECK (status IN
                        ('loading', 'running', 'interrupted', 'completed', 'budget_exhausted')),
    -- Why the run stopped before completing, in one sentence.
    stop_reason     TEXT,
    input_path      TEXT    NOT NULL,
    input_sha256    TEXT    NOT NULL,
    gateway_name    TEXT    NOT NULL,
    base_url        TEXT    NOT NULL,
    messages_path   TEXT    NOT NULL,
    -- Resolved settings (never a key or a header value) as JSON.
    settings        TEXT    NOT NULL
);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job_id          TEXT    NOT NULL,
    model           TEXT    NOT NULL,
    -- Line (JSONL) or record line (CSV) the job came from.
    line            INTEGER NOT NULL,
    request         TEXT    NOT NULL,
    request_sha256  TEXT    NOT NULL,
    tags            TEXT,
    expect          TEXT,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed', 'rejected')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Why a job was rejected or failed.
    error           TEXT,
    UNIQUE (run_id, job_id, model)
);
-- No index on state: it would cost every insert of a million-job load, and the dispatcher
-- reads pending jobs by a rowid range scan instead (a run's jobs are contiguous).


CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY,
    job             INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    -- Time spent waiting on the rate limiter before this attempt was sent.
    queue_wait_ms   INTEGER NOT NULL,
    latency_ms      INTEGER NOT NULL,
    ttft_ms         INTEGER,
    http_status     INTEGER,
    -- NULL on success; otherwise the API's error.type or a transport class
    -- such as connection_error, timeout, invalid_response, stream_error.
    error_type      TEXT,
    error_message   TEXT,
    -- The error body as received, when there was one.
    error_body      TEXT,
    retry_after_ms  INTEGER,
    request_id      TEXT
);

CREATE INDEX attempts_job ON attempts (job);
-- Failed attempts only, for the error counts of reports.
CREATE INDEX attempts_failed ON attempts (job) WHERE error_type IS NOT NULL;

-- The figures of each successful answer. The body itself lives in `responses`, so that
-- reports scanning a million results read narrow rows.
CREATE TABLE results (
    job                          INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    message_id                   TEXT,
    response_model               TEXT,
    stop_reason                  TEXT,
    stop_sequence                TEXT,
    input_tokens                 INTEGER NOT NULL,
    output_tokens                INTEGER NOT NULL,
    cache_creation_input_tokens  INTEGER NOT NULL,
    cache_write_5m_tokens        INTEGER NOT NULL,
    cache_write_1h_tokens        INTEGER NOT NULL,
    cache_read_input_tokens      INTEGER NOT NULL,
    service_tier                 TEXT,
    latency_ms                   INTEGER NOT NULL,
    ttft_ms                      INTEGER,
    streamed                     INTEGER NOT NULL,
    -- Cost at the prices in force when the result was written, in pico-USD
    -- (1e-12 USD); NULL when the model has no price.
    cost_pico_usd                INTEGER,
    completed_at_ms              INTEGER NOT NULL
);

-- Streamed results only, for the time-to-first-token figures of reports.
CREATE INDEX results_streamed ON results (job) WHERE ttft_ms IS NOT NULL;

-- The final response body of each result, as received (or as rebuilt from a stream).
CREATE TABLE responses (
    job   INTEGER PRIMARY KEY REFERENCES results (job) ON DELETE CASCADE,
    body  TEXT    NOT NULL
);
