-- What packing a job into a batch needs of its request, known when the job is stored: set when
-- the stored request is its batch params as sent, byte for byte (no `stream` to drop, written
-- as msgbatch writes JSON), to the request's `max_tokens` as worst cases read it (0 unless an
-- integer of 0 or more). NULL for a request with `stream`, and for every job stored before
-- this column: packing reads such a request again.
ALTER TABLE jobs ADD COLUMN params_max_tokens INTEGER;
