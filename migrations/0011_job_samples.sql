-- no-transaction
-- Repeated samples (`--repeat K`): each job of a file is sent K times, each sample its own row,
-- numbered from 0 in `sample`. (run_id, job_id, model, sample) is unique in place of
-- (run_id, job_id, model); every row made before this column is sample 0.
--
-- SQLite cannot change a table's UNIQUE, so the table is rebuilt, keeping every row id (the
-- attempts, results, grades and batch items of a job point at it). Foreign keys are off while
-- it is (dropping the old table would otherwise delete every one of those rows through their
-- ON DELETE CASCADE), which a transaction cannot switch: this migration runs outside sqlx's
-- transaction and holds its own. Run again after a crash between its COMMIT and sqlx's record
-- of it, it rebuilds the table once more to the same result.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE jobs_with_samples (
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
    -- Which of the job's repeated samples this row is, from 0.
    sample          INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, job_id, model, sample)
);
INSERT INTO jobs_with_samples (id, run_id, job_id, model, line, request, request_sha256, tags,
                               expect, state, attempts, error, sample)
    SELECT id, run_id, job_id, model, line, request, request_sha256, tags, expect, state,
           attempts, error, 0
    FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_with_samples RENAME TO jobs;
COMMIT;
PRAGMA foreign_keys = ON;
