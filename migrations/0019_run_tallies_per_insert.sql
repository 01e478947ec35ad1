-- The jobs a run is given are counted into `run_tallies` once per insert statement, by the
-- store's one writer of new jobs (`Store::insert_jobs`), in the transaction of the rows it
-- counts, rather than by a trigger upserting the tally once per row: that upsert cost about
-- a third of storing each job, and a run of a million jobs stores a million rows. What the
-- trigger counted, the writer counts the same (the rows of each model and state, and the
-- least and greatest row ids). Every other change of jobs and results is still counted by
-- the triggers of 0015, one row at a time.
DROP TRIGGER run_tallies_job_added;
