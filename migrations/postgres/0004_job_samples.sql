-- Repeated samples (`--repeat K`), as migrations/0011_job_samples.sql for SQLite: each sample of
-- a job is its own row, numbered from 0 in `sample`, and (run_id, job_id, model, sample) is
-- unique in place of (run_id, job_id, model). Every row made before this column is sample 0.
ALTER TABLE jobs ADD COLUMN sample BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs DROP CONSTRAINT jobs_run_id_job_id_model_key;
ALTER TABLE jobs ADD CONSTRAINT jobs_run_id_job_id_model_sample_key
    UNIQUE (run_id, job_id, model, sample);
