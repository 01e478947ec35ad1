-- What packing a job into a batch needs of its request, known when the job is stored (as
-- migrations/0018_params_max_tokens.sql for SQLite).
ALTER TABLE jobs ADD COLUMN params_max_tokens BIGINT;
