-- When a batch item's result was recorded (as migrations/0017_batch_items_recorded.sql for
-- SQLite).
ALTER TABLE batch_items ADD COLUMN recorded_at_ms BIGINT;
