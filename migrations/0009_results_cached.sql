-- The results that used a cache prefix, for the report's cache figures: a run without
-- caching costs the report nothing, where a scan of every job cost 0.3 s a million.
CREATE INDEX results_cached ON results (job) WHERE cache_prefix IS NOT NULL;
