-- What `msgbatch view` lists of each run (its jobs by state, its results' spend and tokens, its
-- models, its stretch of rows), kept per run and model as the rows are written, rather than
-- counted over every job of the run on each look (seconds for a million). The triggers below
-- keep them in the same transaction as the rows they count, whichever command writes them,
-- so that they are always the counts of the rows as they are.
--
-- A job never changes its run or its model (a trigger refuses it), and results are counted
-- under their job's run and model. `first_job` and `last_job` are the least and greatest row
-- ids the run's jobs of that model were given.
CREATE TABLE run_tallies (
    run_id                       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    model                        TEXT    NOT NULL,
    jobs                         INTEGER NOT NULL DEFAULT 0,
    pending                      INTEGER NOT NULL DEFAULT 0,
    succeeded                    INTEGER NOT NULL DEFAULT 0,
    failed                       INTEGER NOT NULL DEFAULT 0,
    rejected                     INTEGER NOT NULL DEFAULT 0,
    results                      INTEGER NOT NULL DEFAULT 0,
    -- Spend of the priced results; `unpriced`: results without a cost.
    cost_pico_usd                INTEGER NOT NULL DEFAULT 0,
    unpriced                     INTEGER NOT NULL DEFAULT 0,
    input_tokens                 INTEGER NOT NULL DEFAULT 0,
    output_tokens                INTEGER NOT NULL DEFAULT 0,
    cache_creation_input_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_read_input_tokens      INTEGER NOT NULL DEFAULT 0,
    first_job                    INTEGER,
    last_job                     INTEGER,
    PRIMARY KEY (run_id, model)
) WITHOUT ROWID;

-- The runs already stored. Each sum is taken in two halves of 32 bits, which cannot overflow,
-- and put together by arithmetic, which goes to REAL past 2^63 as the triggers' additions do:
-- a store holding usage no request could produce (kept before such answers were refused)
-- still opens, and its figures are refused where they are read.
INSERT INTO run_tallies (run_id, model, jobs, pending, succeeded, failed, rejected, results,
                         cost_pico_usd, unpriced, input_tokens, output_tokens,
                         cache_creation_input_tokens, cache_read_input_tokens, first_job,
                         last_job)
SELECT j.run_id, j.model, COUNT(*), COUNT(*) FILTER (WHERE j.state = 'pending'),
       COUNT(*) FILTER (WHERE j.state = 'succeeded'), COUNT(*) FILTER (WHERE j.state = 'failed'),
       COUNT(*) FILTER (WHERE j.state = 'rejected'), COUNT(r.job),
       COALESCE(SUM(r.cost_pico_usd >> 32), 0) * 4294967296
           + COALESCE(SUM(r.cost_pico_usd & 4294967295), 0),
       COUNT(r.job) - COUNT(r.cost_pico_usd),
       COALESCE(SUM(r.input_tokens >> 32), 0) * 4294967296
           + COALESCE(SUM(r.input_tokens & 4294967295), 0),
       COALESCE(SUM(r.output_tokens >> 32), 0) * 4294967296
           + COALESCE(SUM(r.output_tokens & 4294967295), 0),
       COALESCE(SUM(r.cache_creation_input_tokens >> 32), 0) * 4294967296
           + COALESCE(SUM(r.cache_creation_input_tokens & 4294967295), 0),
       COALESCE(SUM(r.cache_read_input_tokens >> 32), 0) * 4294967296
           + COALESCE(SUM(r.cache_read_input_tokens & 4294967295), 0),
       MIN(j.id), MAX(j.id)
FROM jobs j LEFT JOIN results r ON r.job = j.id
GROUP BY j.run_id, j.model;

CREATE TRIGGER jobs_keep_run_and_model BEFORE UPDATE OF run_id, model ON jobs
WHEN OLD.run_id IS NOT NEW.run_id OR OLD.model IS NOT NEW.model
BEGIN
    SELECT RAISE(ABORT, 'a job stays in its run, with its model');
END;

CREATE TRIGGER run_tallies_job_added AFTER INSERT ON jobs
BEGIN
    INSERT INTO run_tallies (run_id, model, jobs, pending, succeeded, failed, rejected,
                             first_job, last_job)
    VALUES (NEW.run_id, NEW.model, 1, NEW.state = 'pending', NEW.state = 'succeeded',
            NEW.state = 'failed', NEW.state = 'rejected', NEW.id, NEW.id)
    ON CONFLICT (run_id, model) DO UPDATE SET
        jobs = jobs + 1,
        pending = pending + excluded.pending,
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        rejected = rejected + excluded.rejected,
        first_job = min(coalesce(first_job, excluded.first_job), excluded.first_job),
        last_job = max(coalesce(last_job, excluded.last_job), excluded.last_job);
END;

CREATE TRIGGER run_tallies_job_moved AFTER UPDATE OF state ON jobs
WHEN OLD.state IS NOT NEW.state
BEGIN
    UPDATE run_tallies SET
        pending = pending + (NEW.state = 'pending') - (OLD.state = 'pending'),
        succeeded = succeeded + (NEW.state = 'succeeded') - (OLD.state = 'succeeded'),
        failed = failed + (NEW.state = 'failed') - (OLD.state = 'failed'),
        rejected = rejected + (NEW.state = 'rejected') - (OLD.state = 'rejected')
    WHERE run_id = NEW.run_id AND model = NEW.model;
END;

-- Before the row goes: its result (deleted after it, by the cascade) is still there to count.
CREATE TRIGGER run_tallies_job_deleted BEFORE DELETE ON jobs
BEGIN
    UPDATE run_tallies SET
        jobs = jobs - 1,
        pending = pending - (OLD.state = 'pending'),
        succeeded = succeeded - (OLD.state = 'succeeded'),
        failed = failed - (OLD.state = 'failed'),
        rejected = rejected - (OLD.state = 'rejected'),
        results = results - (SELECT COUNT(*) FROM results WHERE job = OLD.id),
        cost_pico_usd = cost_pico_usd
            - coalesce((SELECT cost_pico_usd FROM results WHERE job = OLD.id), 0),
        unpriced = unpriced
            - (SELECT COUNT(*) FROM results WHERE job = OLD.id AND cost_pico_usd IS NULL),
        input_tokens = input_tokens
            - coalesce((SELECT input_tokens FROM results WHERE job = OLD.id), 0),
        output_tokens = output_tokens
            - coalesce((SELECT output_tokens FROM results WHERE job = OLD.id), 0),
        cache_creation_input_tokens = cache_creation_input_tokens
            - coalesce((SELECT cache_creation_input_tokens FROM results WHERE job = OLD.id), 0),
        cache_read_input_tokens = cache_read_input_tokens
            - coalesce((SELECT cache_read_input_tokens FROM results WHERE job = OLD.id), 0)
    WHERE run_id = OLD.run_id AND model = OLD.model;
END;

CREATE TRIGGER run_tallies_result_added AFTER INSERT ON results
BEGIN
    UPDATE run_tallies SET
        results = results + 1,
        cost_pico_usd = cost_pico_usd + coalesce(NEW.cost_pico_usd, 0),
        unpriced = unpriced + (NEW.cost_pico_usd IS NULL),
        input_tokens = input_tokens + NEW.input_tokens,
        output_tokens = output_tokens + NEW.output_tokens,
        cache_creation_input_tokens = cache_creation_input_tokens
            + NEW.cache_creation_input_tokens,
        cache_read_input_tokens = cache_read_input_tokens + NEW.cache_read_input_tokens
    WHERE (run_id, model) = (SELECT run_id, model FROM jobs WHERE id = NEW.job);
END;

CREATE TRIGGER run_tallies_result_changed AFTER UPDATE OF job, cost_pico_usd, input_tokens,
    output_tokens, cache_creation_input_tokens, cache_read_input_tokens ON results
BEGIN
    UPDATE run_tallies SET
        results = results - 1,
        cost_pico_usd = cost_pico_usd - coalesce(OLD.cost_pico_usd, 0),
        unpriced = unpriced - (OLD.cost_pico_usd IS NULL),
        input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens,
        cache_creation_input_tokens = cache_creation_input_tokens
            - OLD.cache_creation_input_tokens,
        cache_read_input_tokens = cache_read_input_tokens - OLD.cache_read_input_tokens
    WHERE (run_id, model) = (SELECT run_id, model FROM jobs WHERE id = OLD.job);
    UPDATE run_tallies SET
        results = results + 1,
        cost_pico_usd = cost_pico_usd + coalesce(NEW.cost_pico_usd, 0),
        unpriced = unpriced + (NEW.cost_pico_usd IS NULL),
        input_tokens = input_tokens + NEW.input_tokens,
        output_tokens = output_tokens + NEW.output_tokens,
        cache_creation_input_tokens = cache_creation_input_tokens
            + NEW.cache_creation_input_tokens,
        cache_read_input_tokens = cache_read_input_tokens + NEW.cache_read_input_tokens
    WHERE (run_id, model) = (SELECT run_id, model FROM jobs WHERE id = NEW.job);
END;

-- A result deleted by itself; one deleted with its job was counted off with the job (its job
-- is gone by then, and this finds no run to count it off).
CREATE TRIGGER run_tallies_result_deleted BEFORE DELETE ON results
BEGIN
    UPDATE run_tallies SET
        results = results - 1,
        cost_pico_usd = cost_pico_usd - coalesce(OLD.cost_pico_usd, 0),
        unpriced = unpriced - (OLD.cost_pico_usd IS NULL),
        input_tokens = input_tokens - OLD.input_tokens,
        output_tokens = output_tokens - OLD.output_tokens,
        cache_creation_input_tokens = cache_creation_input_tokens
            - OLD.cache_creation_input_tokens,
        cache_read_input_tokens = cache_read_input_tokens - OLD.cache_read_input_tokens
    WHERE (run_id, model) = (SELECT run_id, model FROM jobs WHERE id = OLD.job);
END;
