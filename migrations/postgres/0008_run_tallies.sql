-- What `msgbatch view` lists of each run, kept per run and model as the rows are written (as
-- migrations/0015_run_tallies.sql for SQLite). Several workers write one run at once here, so
-- each connection adds to rows of its own (`slot`, its server process id): no writer waits on
-- another's transaction to count, and a run's figures are the sum of its rows. A connection
-- that reuses a process id after another ended adds to the same rows, which is as good.
--
-- The triggers run once per statement, over the rows it changed, in the transaction of the
-- rows they count. A job never changes its run or its model (a trigger refuses it). A job is
-- deleted only with its run (whose rows here go with it): a job deleted alone is counted off,
-- and its result, deleted after it by the cascade, is not (it no longer has a run to count it
-- off from).
CREATE TABLE run_tallies (
    run_id                       BIGINT  NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    model                        TEXT    NOT NULL,
    slot                         BIGINT  NOT NULL,
    jobs                         BIGINT  NOT NULL DEFAULT 0,
    pending                      BIGINT  NOT NULL DEFAULT 0,
    succeeded                    BIGINT  NOT NULL DEFAULT 0,
    failed                       BIGINT  NOT NULL DEFAULT 0,
    rejected                     BIGINT  NOT NULL DEFAULT 0,
    results                      BIGINT  NOT NULL DEFAULT 0,
    -- The sums are NUMERIC: a sum past a BIGINT (usage no request could produce, stored
    -- before such answers were refused) is kept, and refused only where it is read, as the
    -- sums over the rows are; it never fails a write.
    cost_pico_usd                NUMERIC NOT NULL DEFAULT 0,
    unpriced                     BIGINT  NOT NULL DEFAULT 0,
    input_tokens                 NUMERIC NOT NULL DEFAULT 0,
    output_tokens                NUMERIC NOT NULL DEFAULT 0,
    cache_creation_input_tokens  NUMERIC NOT NULL DEFAULT 0,
    cache_read_input_tokens      NUMERIC NOT NULL DEFAULT 0,
    first_job                    BIGINT,
    last_job                     BIGINT,
    PRIMARY KEY (run_id, model, slot)
);

INSERT INTO run_tallies (run_id, model, slot, jobs, pending, succeeded, failed, rejected,
                         results, cost_pico_usd, unpriced, input_tokens, output_tokens,
                         cache_creation_input_tokens, cache_read_input_tokens, first_job,
                         last_job)
SELECT j.run_id, j.model, 0, COUNT(*), COUNT(*) FILTER (WHERE j.state = 'pending'),
       COUNT(*) FILTER (WHERE j.state = 'succeeded'), COUNT(*) FILTER (WHERE j.state = 'failed'),
       COUNT(*) FILTER (WHERE j.state = 'rejected'), COUNT(r.job),
       COALESCE(SUM(r.cost_pico_usd), 0), COUNT(r.job) - COUNT(r.cost_pico_usd),
       COALESCE(SUM(r.input_tokens), 0), COALESCE(SUM(r.output_tokens), 0),
       COALESCE(SUM(r.cache_creation_input_tokens), 0),
       COALESCE(SUM(r.cache_read_input_tokens), 0), MIN(j.id), MAX(j.id)
FROM jobs j LEFT JOIN results r ON r.job = j.id
GROUP BY j.run_id, j.model;

CREATE FUNCTION jobs_keep_run_and_model() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a job stays in its run, with its model';
END
$$;

CREATE TRIGGER jobs_keep_run_and_model BEFORE UPDATE OF run_id, model ON jobs
FOR EACH ROW WHEN (OLD.run_id IS DISTINCT FROM NEW.run_id OR OLD.model IS DISTINCT FROM NEW.model)
EXECUTE FUNCTION jobs_keep_run_and_model();

-- Adds what a statement changed of `jobs` to this connection's rows (a job deleted with its
-- run is left out: its run's rows are gone).
CREATE FUNCTION run_tallies_add_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO run_tallies AS t (run_id, model, slot, jobs, pending, succeeded, failed,
                                      rejected, first_job, last_job)
        SELECT n.run_id, n.model, pg_backend_pid(), COUNT(*),
               COUNT(*) FILTER (WHERE n.state = 'pending'),
               COUNT(*) FILTER (WHERE n.state = 'succeeded'),
               COUNT(*) FILTER (WHERE n.state = 'failed'),
               COUNT(*) FILTER (WHERE n.state = 'rejected'), MIN(n.id), MAX(n.id)
        FROM new_jobs n GROUP BY n.run_id, n.model
        ON CONFLICT (run_id, model, slot) DO UPDATE SET
            jobs = t.jobs + EXCLUDED.jobs,
            pending = t.pending + EXCLUDED.pending,
            succeeded = t.succeeded + EXCLUDED.succeeded,
            failed = t.failed + EXCLUDED.failed,
            rejected = t.rejected + EXCLUDED.rejected,
            first_job = LEAST(t.first_job, EXCLUDED.first_job),
            last_job = GREATEST(t.last_job, EXCLUDED.last_job);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO run_tallies AS t (run_id, model, slot, pending, succeeded, failed, rejected)
        SELECT n.run_id, n.model, pg_backend_pid(),
               COUNT(*) FILTER (WHERE n.state = 'pending')
                   - COUNT(*) FILTER (WHERE o.state = 'pending'),
               COUNT(*) FILTER (WHERE n.state = 'succeeded')
                   - COUNT(*) FILTER (WHERE o.state = 'succeeded'),
               COUNT(*) FILTER (WHERE n.state = 'failed')
                   - COUNT(*) FILTER (WHERE o.state = 'failed'),
               COUNT(*) FILTER (WHERE n.state = 'rejected')
                   - COUNT(*) FILTER (WHERE o.state = 'rejected')
        FROM new_jobs n JOIN old_jobs o ON o.id = n.id
        WHERE n.state IS DISTINCT FROM o.state
        GROUP BY n.run_id, n.model
        ON CONFLICT (run_id, model, slot) DO UPDATE SET
            pending = t.pending + EXCLUDED.pending,
            succeeded = t.succeeded + EXCLUDED.succeeded,
            failed = t.failed + EXCLUDED.failed,
            rejected = t.rejected + EXCLUDED.rejected;
    ELSE
        INSERT INTO run_tallies AS t (run_id, model, slot, jobs, pending, succeeded, failed,
                                      rejected)
        SELECT o.run_id, o.model, pg_backend_pid(), -COUNT(*),
               -COUNT(*) FILTER (WHERE o.state = 'pending'),
               -COUNT(*) FILTER (WHERE o.state = 'succeeded'),
               -COUNT(*) FILTER (WHERE o.state = 'failed'),
               -COUNT(*) FILTER (WHERE o.state = 'rejected')
        FROM old_jobs o JOIN runs ON runs.id = o.run_id GROUP BY o.run_id, o.model
        ON CONFLICT (run_id, model, slot) DO UPDATE SET
            jobs = t.jobs + EXCLUDED.jobs,
            pending = t.pending + EXCLUDED.pending,
            succeeded = t.succeeded + EXCLUDED.succeeded,
            failed = t.failed + EXCLUDED.failed,
            rejected = t.rejected + EXCLUDED.rejected;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_tallies_jobs_added AFTER INSERT ON jobs
REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add_jobs();
CREATE TRIGGER run_tallies_jobs_changed AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add_jobs();
CREATE TRIGGER run_tallies_jobs_deleted AFTER DELETE ON jobs
REFERENCING OLD TABLE AS old_jobs FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add_jobs();

-- Results added, changed or deleted, counted under their job's run and model.
CREATE FUNCTION run_tallies_add_results() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO run_tallies AS t (run_id, model, slot, results, cost_pico_usd, unpriced,
                                      input_tokens, output_tokens,
                                      cache_creation_input_tokens, cache_read_input_tokens)
        SELECT j.run_id, j.model, pg_backend_pid(), -COUNT(*),
               -COALESCE(SUM(o.cost_pico_usd), 0),
               -COUNT(*) FILTER (WHERE o.cost_pico_usd IS NULL), -SUM(o.input_tokens),
               -SUM(o.output_tokens), -SUM(o.cache_creation_input_tokens),
               -SUM(o.cache_read_input_tokens)
        FROM old_results o JOIN jobs j ON j.id = o.job GROUP BY j.run_id, j.model
        ON CONFLICT (run_id, model, slot) DO UPDATE SET
            results = t.results + EXCLUDED.results,
            cost_pico_usd = t.cost_pico_usd + EXCLUDED.cost_pico_usd,
            unpriced = t.unpriced + EXCLUDED.unpriced,
            input_tokens = t.input_tokens + EXCLUDED.input_tokens,
            output_tokens = t.output_tokens + EXCLUDED.output_tokens,
            cache_creation_input_tokens =
                t.cache_creation_input_tokens + EXCLUDED.cache_creation_input_tokens,
            cache_read_input_tokens = t.cache_read_input_tokens + EXCLUDED.cache_read_input_tokens;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO run_tallies AS t (run_id, model, slot, results, cost_pico_usd, unpriced,
                                      input_tokens, output_tokens,
                                      cache_creation_input_tokens, cache_read_input_tokens)
        SELECT j.run_id, j.model, pg_backend_pid(), COUNT(*),
               COALESCE(SUM(n.cost_pico_usd), 0),
               COUNT(*) FILTER (WHERE n.cost_pico_usd IS NULL), SUM(n.input_tokens),
               SUM(n.output_tokens), SUM(n.cache_creation_input_tokens),
               SUM(n.cache_read_input_tokens)
        FROM new_results n JOIN jobs j ON j.id = n.job GROUP BY j.run_id, j.model
        ON CONFLICT (run_id, model, slot) DO UPDATE SET
            results = t.results + EXCLUDED.results,
            cost_pico_usd = t.cost_pico_usd + EXCLUDED.cost_pico_usd,
            unpriced = t.unpriced + EXCLUDED.unpriced,
            input_tokens = t.input_tokens + EXCLUDED.input_tokens,
            output_tokens = t.output_tokens + EXCLUDED.output_tokens,
            cache_creation_input_tokens =
                t.cache_creation_input_tokens + EXCLUDED.cache_creation_input_tokens,
            cache_read_input_tokens = t.cache_read_input_tokens + EXCLUDED.cache_read_input_tokens;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_tallies_results_added AFTER INSERT ON results
REFERENCING NEW TABLE AS new_results
FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add_results();
CREATE TRIGGER run_tallies_results_changed AFTER UPDATE ON results
REFERENCING OLD TABLE AS old_results NEW TABLE AS new_results
FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add_results();
CREATE TRIGGER run_tallies_results_deleted AFTER DELETE ON results
REFERENCING OLD TABLE AS old_results
FOR EACH STATEMENT EXECUTE FUNCTION run_tallies_add_results();
