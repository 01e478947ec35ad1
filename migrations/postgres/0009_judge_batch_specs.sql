-- The grader spec a judge item of a batch was asked with, and what marks an attempt as a
-- batch's result and keeps the cost of a verdict not recorded (as
-- migrations/0016_judge_batch_specs.sql for SQLite).
ALTER TABLE batch_items ADD COLUMN spec_hash BIGINT;
ALTER TABLE attempts ADD COLUMN batch BIGINT;
ALTER TABLE attempts ADD COLUMN cost_pico_usd BIGINT;
