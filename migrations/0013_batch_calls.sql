-- One row per HTTP call to a Message Batches endpoint (create, retrieve, list, results,
-- cancel): a control call of the run, not an attempt at any job's answer. They are kept apart
-- from `attempts`, whose rows each belong to a job and whose counts (errors per job, the last
-- error of a job, what `export` writes) must read the same whichever way a run was sent.
CREATE TABLE batch_calls (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- The batch the call was about: NULL for a list call, or once an intent whose create
    -- call made nothing was dropped.
    batch           INTEGER REFERENCES batches (id) ON DELETE SET NULL,
    -- The API's id of that batch, when known.
    remote_id       TEXT,
    call            TEXT    NOT NULL
                    CHECK (call IN ('create', 'retrieve', 'list', 'results', 'cancel')),
    -- 1 for a call's first attempt, 2 for its first retry, ...
    attempt         INTEGER NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    -- Time spent waiting on the Batches API's request limit before the call was sent.
    queue_wait_ms   INTEGER NOT NULL,
    -- Until the answer's headers (a results file is read after).
    latency_ms      INTEGER NOT NULL,
    http_status     INTEGER,
    error_type      TEXT,
    error_message   TEXT,
    error_body      TEXT,
    retry_after_ms  INTEGER,
    request_id      TEXT
);
CREATE INDEX batch_calls_run ON batch_calls (run_id);
