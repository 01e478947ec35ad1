-- A run sent through the Message Batches API sends its judges through a batch too. `kind`
-- says what a batch's requests are: `answer` (a job's own request, every batch before this
-- column) or `judge` (a judge grader's request about a job's answer). A judge batch's item
-- names the grade it is for: its job, and `grader`, the grader's index in the job's expect
-- (NULL for an answer's item). Its body is made from the grade's spec and the job's request
-- and answer as it is sent, as a judge asked directly would be asked.
ALTER TABLE batches ADD COLUMN kind TEXT NOT NULL DEFAULT 'answer'
    CHECK (kind IN ('answer', 'judge'));
ALTER TABLE batch_items ADD COLUMN grader INTEGER;
