-- Cache warm-up: the longest cache prefix each answered request would write (a hash, NULL
-- without one), and whether the job waited for another job to warm it. Reports count the
-- cache writes per distinct prefix and what the jobs that waited saved.
ALTER TABLE results ADD COLUMN cache_prefix INTEGER;
ALTER TABLE results ADD COLUMN held_for_warmup INTEGER NOT NULL DEFAULT 0;
