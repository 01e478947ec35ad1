-- When a batch item's result was recorded: set in the transaction that commits its attempt
-- (and its result or grade), so that results read again after msgbatch died half way through
-- a batch skip the items already recorded, and none is recorded, or counted as spent, twice.
-- NULL for an item not recorded yet, and for the items of batches recorded before this column.
ALTER TABLE batch_items ADD COLUMN recorded_at_ms INTEGER;
