-- A batch's id is the gateway's, unique only among that gateway's batches (as
-- migrations/0010_batch_ids_per_gateway.sql for SQLite): `gateway` is the base URL of the
-- batch's run, and (gateway, remote_id) is unique in place of remote_id alone.
ALTER TABLE batches ADD COLUMN gateway TEXT;
UPDATE batches b SET gateway = r.base_url FROM runs r WHERE r.id = b.run_id;
ALTER TABLE batches ALTER COLUMN gateway SET NOT NULL;
ALTER TABLE batches DROP CONSTRAINT batches_remote_id_key;
CREATE UNIQUE INDEX batches_remote_id ON batches (gateway, remote_id);
