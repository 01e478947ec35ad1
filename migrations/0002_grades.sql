-- Grader outcomes: one row per (job, grader), the grader being its index in the job's expect.
-- A judge's row has `passed` NULL until its verdict is in; its request's tokens and cost are
-- kept here, apart from the job's own.
CREATE TABLE grades (
    job                  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    grader               INTEGER NOT NULL,
    kind                 TEXT    NOT NULL,
    passed               INTEGER,
    reason               TEXT,
    -- The grader's spec, so a re-grade knows which judge verdicts still hold.
    spec                 TEXT    NOT NULL,
    judge_model          TEXT,
    judge_input_tokens   INTEGER,
    judge_output_tokens  INTEGER,
    judge_cost_pico_usd  INTEGER,
    graded_at_ms         INTEGER NOT NULL,
    PRIMARY KEY (job, grader)
);

CREATE INDEX grades_pending ON grades (job) WHERE passed IS NULL;
