-- The job list's filters read by index (`msgbatch view`), in row order, rather than row by row
-- over a run: the jobs a grader failed (`outcome = failed`), from the failed verdicts alone (a
-- small index: a verdict that passes is not in it), and the results of one stop reason (as
-- SQLite's migration 0020).
CREATE INDEX grades_failed ON grades (job, grader) WHERE passed = FALSE;
CREATE INDEX results_stop ON results (stop_reason, job);
