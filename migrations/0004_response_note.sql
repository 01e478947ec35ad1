-- What rebuilding a streamed answer could not apply cleanly (tool input that is not JSON, a
-- delta of an unknown type), said on the result rather than silently dropped.
ALTER TABLE responses ADD COLUMN note TEXT;
