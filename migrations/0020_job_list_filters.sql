-- The job list's filters read by index (`msgbatch view`), in row order, rather than row by row
-- over a run: the jobs a grader failed (`outcome = failed`), from the failed verdicts alone (a
-- small index: a verdict that passes is not in it), and the results of one stop reason. A
-- list of a thousand jobs a grader failed read the ten thousand jobs before them, and their
-- grades; one of a rare stop reason, every result before them.
CREATE INDEX grades_failed ON grades (job, grader) WHERE passed = FALSE;
-- (The row id ends every SQLite index: entries of one stop reason are in row order.)
CREATE INDEX results_stop ON results (stop_reason);
