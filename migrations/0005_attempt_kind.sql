-- What each attempt was for: `job` (every attempt before this column), `judge` (a judge
-- grader's request, recorded against the job it judges) or `count_tokens`.
ALTER TABLE attempts ADD COLUMN kind TEXT NOT NULL DEFAULT 'job';
