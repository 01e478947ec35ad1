-- Runs sent through the Message Batches API, and their batches.
--
-- `via` says how a run sends: `direct` (one Messages call per job) or `batches`.
ALTER TABLE runs ADD COLUMN via TEXT NOT NULL DEFAULT 'direct';

-- One batch of a run. Creating a batch is not idempotent, so its row is written (state
-- `creating`, no remote id) before the create call, and given the API's id once the call
-- answers: a row left `creating` by a crash is resolved on resume by looking for a batch
-- created in that window before anything is submitted again.
CREATE TABLE batches (
    id                  INTEGER PRIMARY KEY,
    run_id              INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    remote_id           TEXT UNIQUE,
    state               TEXT    NOT NULL CHECK (state IN ('creating', 'submitted', 'recorded')),
    requests            INTEGER NOT NULL,
    bytes               INTEGER NOT NULL,
    -- The worst case of its requests at the batch rates, held against --max-cost until its
    -- results are recorded.
    reserved_pico_usd   INTEGER NOT NULL,
    intent_at_ms        INTEGER NOT NULL,
    submitted_at_ms     INTEGER,
    ended_at_ms         INTEGER,
    -- The last request_counts the API gave, as JSON.
    counts              TEXT
);
CREATE INDEX batches_run ON batches (run_id);

-- Which job each request of a batch is: `custom_id` as sent (the job's own id where the API
-- accepts it, else one made for it).
CREATE TABLE batch_items (
    batch       INTEGER NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    custom_id   TEXT    NOT NULL,
    job         INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (batch, custom_id)
);
CREATE INDEX batch_items_job ON batch_items (job);

-- Results answered through a batch: billed at half of every price, and their latency is the
-- batch's turnaround (submit to result).
ALTER TABLE results ADD COLUMN batch INTEGER NOT NULL DEFAULT 0;
