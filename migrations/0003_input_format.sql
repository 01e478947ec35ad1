-- The format the job file was read as (`JSONL`, `CSV (delimiter ';'), gzip`, …), for status.
ALTER TABLE runs ADD COLUMN input_format TEXT NOT NULL DEFAULT '';
