-- The kind of a batch (`answer` or `judge`) and the grade each judge item is for (as
-- migrations/0014_judge_batches.sql for SQLite).
ALTER TABLE batches ADD COLUMN kind TEXT NOT NULL DEFAULT 'answer'
    CHECK (kind IN ('answer', 'judge'));
ALTER TABLE batch_items ADD COLUMN grader BIGINT;
