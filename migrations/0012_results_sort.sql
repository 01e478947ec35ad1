-- The job list of `msgbatch view` sorted by cost or by latency: a page reads the results in the
-- order of one of these indexes (forwards for ascending, backwards for descending) and stops
-- once full, rather than sorting every result of the run (seconds for a million). Ties follow
-- in row order, as the index keeps them (the row id ends every SQLite index). Results without
-- a cost (unpriced) are not in the cost index: the list shows them after the priced ones.
CREATE INDEX results_cost ON results (cost_pico_usd) WHERE cost_pico_usd IS NOT NULL;
CREATE INDEX results_latency ON results (latency_ms);
