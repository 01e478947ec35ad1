-- The job list of `msgbatch view` sorted by cost or by latency, as migrations/0012_results_sort.sql
-- for SQLite: a page reads the results in the order of one of these indexes (forwards for
-- ascending, backwards for descending) and stops once full, rather than sorting every result of
-- the run. Ties follow in row order (`job`). Results without a cost are not in the cost index.
CREATE INDEX results_cost ON results (cost_pico_usd, job) WHERE cost_pico_usd IS NOT NULL;
CREATE INDEX results_latency ON results (latency_ms, job);
