-- Sending starts while a checked file is still being stored, so a run can stop (Ctrl-C, a
-- crash) with only part of its file stored. `loaded` says whether every row of the file is
-- stored; `resume` of a run that is not loads the rest first (the file must still have the
-- sha256 the run recorded). `input_jobs` is the number of jobs the whole file makes, bad
-- records left out, as the check before sending counted them.
ALTER TABLE runs ADD COLUMN loaded INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN input_jobs INTEGER;
