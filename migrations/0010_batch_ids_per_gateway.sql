-- no-transaction
-- A batch's id is the gateway's, unique only among that gateway's batches: one store keeps the
-- runs of several gateways (and of the mock), whose ids may meet. `gateway` is the base URL of
-- the batch's run, and (gateway, remote_id) is unique in place of remote_id alone.
--
-- SQLite cannot drop a column's UNIQUE, so the table is rebuilt. Foreign keys are off while it
-- is (dropping the old table would otherwise delete every batch_items row through its ON
-- DELETE CASCADE), which a transaction cannot switch: this migration runs outside sqlx's
-- transaction and holds its own. Run again after a crash between its COMMIT and sqlx's record
-- of it, it rebuilds the table once more to the same result.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE batches_per_gateway (
    id                  INTEGER PRIMARY KEY,
    run_id              INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    remote_id           TEXT,
    state               TEXT    NOT NULL CHECK (state IN ('creating', 'submitted', 'recorded')),
    requests            INTEGER NOT NULL,
    bytes               INTEGER NOT NULL,
    reserved_pico_usd   INTEGER NOT NULL,
    intent_at_ms        INTEGER NOT NULL,
    submitted_at_ms     INTEGER,
    ended_at_ms         INTEGER,
    counts              TEXT,
    gateway             TEXT    NOT NULL
);
INSERT INTO batches_per_gateway (id, run_id, remote_id, state, requests, bytes,
                                 reserved_pico_usd, intent_at_ms, submitted_at_ms,
                                 ended_at_ms, counts, gateway)
    SELECT b.id, b.run_id, b.remote_id, b.state, b.requests, b.bytes, b.reserved_pico_usd,
           b.intent_at_ms, b.submitted_at_ms, b.ended_at_ms, b.counts, r.base_url
    FROM batches b JOIN runs r ON r.id = b.run_id;
DROP TABLE batches;
ALTER TABLE batches_per_gateway RENAME TO batches;
CREATE INDEX batches_run ON batches (run_id);
CREATE UNIQUE INDEX batches_remote_id ON batches (gateway, remote_id);
COMMIT;
PRAGMA foreign_keys = ON;
