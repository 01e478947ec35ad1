-- A judge's verdict that comes back from a batch is recorded only for the grader spec it was
-- asked with. `spec_hash` is the first 8 bytes of the SHA-256 of that spec, as a signed
-- big-endian integer (NULL for an answer's item, and for judge items written before this
-- column, whose verdicts are recorded as before). A verdict whose grade was given another
-- spec since (`msgbatch grade --expect` while the batch was open) is kept as an attempt only.
ALTER TABLE batch_items ADD COLUMN spec_hash INTEGER;

-- `batch`: the batch row whose result an attempt is (an answer's item, kind `batch`, or a
-- judge's item, kind `judge`); NULL for a request sent directly, and for every attempt
-- written before this column. `cost_pico_usd`: what an attempt was billed when no result or
-- grade holds its cost: a judge's verdict that came back for a spec since replaced.
ALTER TABLE attempts ADD COLUMN batch INTEGER;
ALTER TABLE attempts ADD COLUMN cost_pico_usd INTEGER;
