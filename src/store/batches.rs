//! The batches of runs sent through the Message Batches API: the intent written before each
//! create call, the API's id once it answers, the map from each request's `custom_id` to its
//! job, and the state of each batch until its results are recorded.

use std::collections::HashMap;

use super::sql::{Dialect, Sql, block_rows};
use super::{PendingJob, PendingJudge, Store, StoreError, WriteBatch, now_ms};

/// What the requests of a batch are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// The jobs' own requests.
    Answer,
    /// Judge graders' requests about the jobs' answers.
    Judge,
}

impl BatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Judge => "judge",
        }
    }
}

/// One request of a batch: its `custom_id` as sent, the job it is for, and for a judge's
/// request the grader (its index in the job's expect) whose verdict it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    pub custom_id: String,
    pub job: i64,
    pub grader: Option<i64>,
    /// For a judge's request, the [`spec_hash`] of the grader spec it asks with.
    pub spec_hash: Option<i64>,
}

/// The error type of the attempt of a judge's verdict that came back from a batch for a
/// grader spec since replaced: billed, and not recorded as the grade's verdict.
pub const REPLACED_SPEC: &str = "replaced_spec";

/// What a judge item of a batch keeps of the grader spec it was asked with: the first 8
/// bytes of the spec's SHA-256, as a signed big-endian integer.
pub fn spec_hash(spec: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(spec.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A batch of a run as the store keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: i64,
    pub remote_id: Option<String>,
    /// `answer` or `judge` ([`BatchKind`]).
    pub kind: String,
    /// `creating` (the create call may or may not have happened), `submitted` or `recorded`.
    pub state: String,
    pub requests: i64,
    pub reserved_pico_usd: i64,
    pub intent_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
}

/// One HTTP call to a Message Batches endpoint, as `batch_calls` keeps it: never an attempt
/// at a job's answer, so nothing that counts a job's attempts sees it.
#[derive(Debug, Clone, Default)]
pub struct BatchCallRecord {
    pub run_id: i64,
    /// The batch row the call was about (`None` for a list call).
    pub batch: Option<i64>,
    pub remote_id: Option<String>,
    /// `create`, `retrieve`, `list`, `results` or `cancel`.
    pub call: &'static str,
    pub attempt: i64,
    pub started_at_ms: i64,
    pub queue_wait_ms: i64,
    pub latency_ms: i64,
    pub http_status: Option<i64>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub error_body: Option<String>,
    pub retry_after_ms: Option<i64>,
    pub request_id: Option<String>,
}

/// A job of a batch that waits for its result.
#[derive(Debug, Clone)]
pub struct BatchWaiting {
    pub job: i64,
    /// Attempts made on the job before this batch.
    pub attempts: i64,
    pub model: std::sync::Arc<str>,
    pub expect: Option<String>,
    /// What the job's request allows its answer to use, for a result's usage to be checked
    /// against as a direct answer's is.
    pub bounds: crate::message::RequestBounds,
}

/// A judge grade of a batch that waits for its verdict.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JudgeWaiting {
    pub job: i64,
    pub grader: i64,
    /// The grade's spec now: `None` once the grade is gone (`msgbatch grade --expect` took
    /// its grader away).
    pub spec: Option<String>,
    /// The [`spec_hash`] of the spec the request was asked with (`None` for an item written
    /// before it was kept).
    pub asked: Option<i64>,
}

impl JudgeWaiting {
    /// The grade was given another spec since its request was asked (`msgbatch grade
    /// --expect` while its batch was open): the verdict is not this grade's.
    pub fn stale(&self) -> bool {
        replaced_since(self.asked, self.spec.as_deref().map(spec_hash))
    }
}

/// Whether a judge item asked with the spec of hash `asked` (`None`: written before hashes
/// were kept) is not about its grade's spec now, of hash `now` (`None`: the grade is gone).
pub fn replaced_since(asked: Option<i64>, now: Option<i64>) -> bool {
    match now {
        Some(now) => asked.is_some_and(|asked| asked != now),
        None => true,
    }
}

/// The condition that an item of `batch_items i JOIN jobs j ON j.id = i.job` is of the batch
/// bound as `$1` and waits to be recorded: not recorded yet, and its job still pending.
macro_rules! answer_waits {
    () => {
        "i.batch = $1 AND i.recorded_at_ms IS NULL AND j.state = 'pending'"
    };
}

/// Appends `texts` as a list of arguments.
fn push_texts<'s>(sql: &'s mut Sql, texts: &[String]) -> &'s mut Sql {
    for (at, text) in texts.iter().enumerate() {
        if at > 0 {
            sql.push(", ");
        }
        sql.push_bind(text.as_str());
    }
    sql
}

impl Store {
    /// Pending jobs of a run that are in no batch still to be recorded, with row id above
    /// `after` (at least [`Store::before_first_job`]), in row order.
    pub async fn unbatched_jobs(
        &self,
        run_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PendingJob>, StoreError> {
        self.all(
            Sql::new(
                "SELECT id, job_id, model, request, attempts, expect, params_max_tokens
                 FROM jobs NOT INDEXED
                 WHERE id > $2 AND run_id = $1 AND state = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM batch_items i JOIN batches b ON b.id = i.batch
                                   WHERE i.job = jobs.id AND b.state != 'recorded')
                 ORDER BY id LIMIT $3",
            )
            .bind(run_id)
            .bind(after)
            .bind(limit),
        )
        .await
    }

    /// Pending judge grades of a run (their answers in) that are in no batch still to be
    /// recorded, after the grade `after` (job, grader), in that order.
    pub async fn unbatched_judges(
        &self,
        run_id: i64,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<PendingJudge>, StoreError> {
        self.all(
            Sql::new(
                "SELECT g.job, g.grader, g.spec, j.request, b.body AS response
                 FROM grades g INDEXED BY grades_pending
                 JOIN jobs j ON j.id = g.job JOIN responses b ON b.job = g.job
                 WHERE g.passed IS NULL AND j.run_id = $1
                   AND (g.job > $2 OR (g.job = $2 AND g.grader > $3))
                   AND NOT EXISTS (SELECT 1 FROM batch_items i JOIN batches t ON t.id = i.batch
                                   WHERE i.job = g.job AND i.grader = g.grader
                                     AND t.state != 'recorded')
                 ORDER BY g.job, g.grader LIMIT $4",
            )
            .bind(run_id)
            .bind(after.0)
            .bind(after.1)
            .bind(limit),
        )
        .await
    }

    /// Judge grades of a run still waiting for a verdict.
    pub async fn pending_judge_count(&self, run_id: i64) -> Result<i64, StoreError> {
        self.value(
            Sql::new(
                "SELECT COUNT(*) FROM grades g INDEXED BY grades_pending
                 CROSS JOIN jobs j ON j.id = g.job
                 WHERE g.passed IS NULL AND j.run_id = $1",
            )
            .bind(run_id),
        )
        .await
    }

    /// What the judge requests of the grades of `jobs` (at most a few thousand) are made of:
    /// every grade of theirs with its spec, the job's request and its answer.
    pub async fn judge_inputs(&self, jobs: &[i64]) -> Result<Vec<PendingJudge>, StoreError> {
        let mut sql = Sql::new(
            "SELECT g.job, g.grader, g.spec, j.request, b.body AS response
             FROM grades g JOIN jobs j ON j.id = g.job JOIN responses b ON b.job = g.job
             WHERE g.kind = 'judge' AND g.job IN (",
        )
        .once();
        sql.push_list(jobs).push(") ORDER BY g.job, g.grader");
        self.all(sql).await
    }

    /// Writes the intent, made at `at_ms`, to create a batch of `kind` of `items`, before
    /// the create call.
    pub async fn batch_intent(
        &self,
        run_id: i64,
        kind: BatchKind,
        items: &[BatchItem],
        bytes: usize,
        reserved_pico_usd: u64,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        let (id,): (i64,) = tx
            .one(
                Sql::new(
                    "INSERT INTO batches (run_id, state, requests, bytes, reserved_pico_usd,
                                          intent_at_ms, gateway, kind)
                     VALUES ($1, 'creating', $2, $3, $4, $5,
                             (SELECT base_url FROM runs WHERE id = $1), $6) RETURNING id",
                )
                .bind(run_id)
                .bind(i64::try_from(items.len()).unwrap_or(i64::MAX))
                .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
                .bind(i64::try_from(reserved_pico_usd).unwrap_or(i64::MAX))
                .bind(at_ms)
                .bind(kind.as_str()),
            )
            .await?;
        for chunk in items.chunks(block_rows(5)) {
            let mut sql =
                Sql::new("INSERT INTO batch_items (batch, custom_id, job, grader, spec_hash) ");
            sql.push_values(chunk, |row, item| {
                row.bind(id)
                    .bind(item.custom_id.as_str())
                    .bind(item.job)
                    .bind(item.grader)
                    .bind(item.spec_hash);
            });
            tx.execute(sql.block(chunk.len(), 5)).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The requests of jobs by row id (at most a few thousand), in row order: what a batch's
    /// create body is made of as it is sent.
    pub async fn job_requests(&self, ids: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        let mut requests = Vec::with_capacity(ids.len());
        for block in ids.chunks(block_rows(1)) {
            let mut sql = Sql::new("SELECT id, request FROM jobs WHERE id IN (");
            sql.push_list(block).push(") ORDER BY id");
            requests.extend(self.all(sql.block(block.len(), 1)).await?);
        }
        requests.sort_unstable_by_key(|(id, _)| *id);
        Ok(requests)
    }

    /// The API created the batch: its id is kept, and from now on it is polled.
    pub async fn batch_submitted(
        &self,
        batch: i64,
        remote_id: &str,
        submitted_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            Sql::new(
                "UPDATE batches SET remote_id = $2, state = 'submitted', submitted_at_ms = $3
                 WHERE id = $1",
            )
            .bind(batch)
            .bind(remote_id)
            .bind(submitted_at_ms),
        )
        .await?;
        Ok(())
    }

    /// Records one call to a batch endpoint.
    pub async fn record_batch_call(&self, call: &BatchCallRecord) -> Result<(), StoreError> {
        self.execute(
            Sql::new(
                "INSERT INTO batch_calls (run_id, batch, remote_id, call, attempt, started_at_ms,
                    queue_wait_ms, latency_ms, http_status, error_type, error_message,
                    error_body, retry_after_ms, request_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(call.run_id)
            .bind(call.batch)
            .bind(call.remote_id.clone())
            .bind(call.call)
            .bind(call.attempt)
            .bind(call.started_at_ms)
            .bind(call.queue_wait_ms)
            .bind(call.latency_ms)
            .bind(call.http_status)
            .bind(call.error_type.clone())
            .bind(call.error_message.clone())
            .bind(call.error_body.clone())
            .bind(call.retry_after_ms)
            .bind(call.request_id.clone()),
        )
        .await?;
        Ok(())
    }

    /// The create call did not create the batch: the intent and its items go.
    pub async fn drop_batch_intent(&self, batch: i64) -> Result<(), StoreError> {
        self.execute(
            Sql::new("DELETE FROM batches WHERE id = $1 AND state = 'creating'").bind(batch),
        )
        .await?;
        Ok(())
    }

    /// The batches of a run that are not yet recorded, oldest first.
    pub async fn open_batches(&self, run_id: i64) -> Result<Vec<BatchRow>, StoreError> {
        self.all(
            Sql::new(
                "SELECT id, remote_id, kind, state, requests, reserved_pico_usd, intent_at_ms,
                        submitted_at_ms
                 FROM batches WHERE run_id = $1 AND state != 'recorded' ORDER BY id",
            )
            .bind(run_id),
        )
        .await
    }

    /// Keeps the counts the API last gave for a batch.
    pub async fn batch_counts(&self, batch: i64, counts: &str) -> Result<(), StoreError> {
        self.execute(
            Sql::new("UPDATE batches SET counts = $2 WHERE id = $1")
                .bind(batch)
                .bind(counts),
        )
        .await?;
        Ok(())
    }

    /// How many items of a batch of `kind` still wait to be recorded: those of
    /// [`Store::batch_waiting`], or of [`Store::judges_waiting`].
    pub async fn batch_items_waiting(
        &self,
        batch: i64,
        kind: BatchKind,
    ) -> Result<i64, StoreError> {
        match kind {
            BatchKind::Answer => {
                self.value(
                    Sql::new(concat!(
                        "SELECT COUNT(*) FROM batch_items i JOIN jobs j ON j.id = i.job WHERE ",
                        answer_waits!()
                    ))
                    .bind(batch),
                )
                .await
            }
            BatchKind::Judge => {
                let mut waiting = 0;
                self.judges_waiting_each(batch, None, |_, _| waiting += 1)
                    .await?;
                Ok(waiting)
            }
        }
    }

    /// The jobs of a batch, among the items of `custom_ids` (at most a few thousand: a part
    /// of its results), still waiting for their result, by custom id.
    pub async fn batch_waiting(
        &self,
        batch: i64,
        custom_ids: &[String],
    ) -> Result<HashMap<String, BatchWaiting>, StoreError> {
        // The request's integer `max_tokens` and thinking budget, read where the request is
        // (whole requests, up to a batch of them, would not fit in memory).
        let bounds = match self.dialect() {
            Dialect::Sqlite => {
                "CASE json_type(j.request, '$.max_tokens') WHEN 'integer'
                     THEN json_extract(j.request, '$.max_tokens') END,
                 CASE json_type(j.request, '$.thinking.budget_tokens') WHEN 'integer'
                     THEN json_extract(j.request, '$.thinking.budget_tokens') END"
            }
            Dialect::Postgres => {
                "CASE WHEN r.body ->> 'max_tokens' ~ '^[0-9]{1,18}$'
                     THEN (r.body ->> 'max_tokens')::bigint END,
                 CASE WHEN r.body #>> '{thinking,budget_tokens}' ~ '^[0-9]{1,18}$'
                     THEN (r.body #>> '{thinking,budget_tokens}')::bigint END"
            }
        };
        let request = match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " JOIN LATERAL (SELECT j.request::jsonb AS body) r ON TRUE",
        };
        type Row = (
            String,
            i64,
            i64,
            String,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let tokens = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
        // The jobs of a batch share a few models, held once each.
        let mut waiting = HashMap::with_capacity(custom_ids.len());
        let mut models: std::collections::HashSet<std::sync::Arc<str>> =
            std::collections::HashSet::new();
        for block in custom_ids.chunks(block_rows(1)) {
            let mut sql = Sql::new(format!(
                "SELECT i.custom_id, j.id, j.attempts, j.model, j.expect, {bounds}
                 FROM batch_items i JOIN jobs j ON j.id = i.job{request}
                 WHERE {} AND i.custom_id IN (",
                answer_waits!()
            ))
            .bind(batch);
            push_texts(&mut sql, block).push(")");
            self.each(
                sql.block(block.len(), 1),
                |(custom_id, job, attempts, model, expect, max_tokens, thinking_budget): Row| {
                    let model = match models.get(model.as_str()) {
                        Some(shared) => std::sync::Arc::clone(shared),
                        None => {
                            let shared: std::sync::Arc<str> = model.into();
                            models.insert(std::sync::Arc::clone(&shared));
                            shared
                        }
                    };
                    waiting.insert(
                        custom_id,
                        BatchWaiting {
                            job,
                            attempts,
                            model,
                            expect,
                            bounds: crate::message::RequestBounds {
                                max_tokens: tokens(max_tokens),
                                thinking_budget: tokens(thinking_budget),
                            },
                        },
                    );
                    Ok::<_, StoreError>(())
                },
            )
            .await?;
        }
        Ok(waiting)
    }

    /// The judge items of a batch, among those of `custom_ids` (at most a few thousand: a part
    /// of its results), still to be recorded, by custom id: those whose grade waits for a
    /// verdict, and those whose grade was given another spec (or removed) since they were
    /// asked, whose results are billed and recorded as attempts only. An item whose grade has
    /// the spec it was asked with and a verdict already is recorded.
    pub async fn judges_waiting(
        &self,
        batch: i64,
        custom_ids: &[String],
    ) -> Result<HashMap<String, JudgeWaiting>, StoreError> {
        let mut waiting = HashMap::with_capacity(custom_ids.len());
        for block in custom_ids.chunks(block_rows(1)) {
            self.judges_waiting_each(batch, Some(block), |custom_id, judge| {
                waiting.insert(custom_id, judge);
            })
            .await?;
        }
        Ok(waiting)
    }

    /// Each judge item of a batch still to be recorded (see [`Store::judges_waiting`]), of
    /// those of `custom_ids` (at most [`block_rows`]`(1)`) or of the whole batch, to `sink`.
    async fn judges_waiting_each(
        &self,
        batch: i64,
        custom_ids: Option<&[String]>,
        mut sink: impl FnMut(String, JudgeWaiting),
    ) -> Result<(), StoreError> {
        type Row = (String, i64, i64, Option<String>, Option<bool>, Option<i64>);
        let mut sql = Sql::new(
            "SELECT i.custom_id, i.job, i.grader, g.spec, g.passed IS NULL, i.spec_hash
             FROM batch_items i
             LEFT JOIN grades g ON g.job = i.job AND g.grader = i.grader
             WHERE i.batch = $1 AND i.recorded_at_ms IS NULL",
        )
        .bind(batch);
        if let Some(block) = custom_ids {
            sql.push(" AND i.custom_id IN (");
            push_texts(&mut sql, block).push(")");
            sql = sql.block(block.len(), 1);
        }
        self.each(sql, |(custom_id, job, grader, spec, waits, asked): Row| {
            let waiting = JudgeWaiting {
                job,
                grader,
                spec,
                asked,
            };
            if waits == Some(true) || waiting.stale() {
                sink(custom_id, waiting);
            }
            Ok::<_, StoreError>(())
        })
        .await?;
        Ok(())
    }

    /// The judge items of a run's batches not yet recorded: (job, grader, [`spec_hash`] of
    /// the spec asked). As many as the run's open batches hold (`--batch-queue`).
    pub async fn open_judge_items(
        &self,
        run_id: i64,
    ) -> Result<Vec<(i64, i64, Option<i64>)>, StoreError> {
        self.all(
            Sql::new(
                "SELECT i.job, i.grader, i.spec_hash
                 FROM batches b JOIN batch_items i ON i.batch = b.id
                 WHERE b.run_id = $1 AND b.kind = 'judge' AND b.state != 'recorded'",
            )
            .bind(run_id),
        )
        .await
    }

    /// The API ids of every batch the store knows, of any run.
    pub async fn known_batch_ids(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let ids: Vec<(String,)> = self
            .all(Sql::new(
                "SELECT remote_id FROM batches WHERE remote_id IS NOT NULL",
            ))
            .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// Commits part of a batch's results: what they make of the items of `recorded` (their
    /// custom ids), which are marked recorded in the same transaction, so that results read
    /// again (msgbatch died before the batch was) skip them. With `last`, the batch is
    /// recorded too, so that its jobs are free for another batch only once all are written.
    pub async fn write_batch_results(
        &self,
        batch: i64,
        results: &WriteBatch,
        recorded: &[String],
        last: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        if !results.is_empty() {
            Self::write_in(&mut tx, results).await?;
        }
        let now = now_ms();
        for block in recorded.chunks(block_rows(1)) {
            let mut sql = Sql::new(
                "UPDATE batch_items SET recorded_at_ms = $1 WHERE batch = $2 AND custom_id IN (",
            )
            .bind(now)
            .bind(batch);
            push_texts(&mut sql, block).push(")");
            tx.execute(sql.block(block.len(), 1)).await?;
        }
        if last {
            tx.execute(
                Sql::new("UPDATE batches SET state = 'recorded', ended_at_ms = $2 WHERE id = $1")
                    .bind(batch)
                    .bind(now),
            )
            .await?;
        }
        tx.commit().await
    }

    /// Batch requests of a run that ended without an answer, by what they asked for
    /// ([`BatchKind`]: a job's answer or a judge's verdict) and how (`errored`-class error
    /// type, or `canceled`, `expired`), with their count. None of them is billed. A judge's
    /// verdict that came back for a spec since replaced is billed: it is counted by
    /// [`Store::replaced_judge_verdicts`] instead.
    pub async fn unbilled_batch_items(
        &self,
        run_id: i64,
    ) -> Result<Vec<(BatchKind, String, i64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = self
            .all(
                Sql::new(
                    "SELECT a.kind, a.error_type, COUNT(*)
                     FROM attempts a INDEXED BY attempts_failed CROSS JOIN jobs j ON j.id = a.job
                     WHERE a.error_type IS NOT NULL AND j.run_id = $1
                       AND (a.kind = 'batch'
                            OR (a.kind = 'judge' AND a.batch IS NOT NULL AND a.error_type != $2))
                     GROUP BY 1, 2 ORDER BY 1, 2",
                )
                .bind(run_id)
                .bind(REPLACED_SPEC),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, how, n)| {
                let kind = if kind == "judge" {
                    BatchKind::Judge
                } else {
                    BatchKind::Answer
                };
                (kind, how, n)
            })
            .collect())
    }

    /// Every job of a run that is in a batch not yet recorded.
    pub async fn jobs_in_open_batches(&self, run_id: i64) -> Result<i64, StoreError> {
        self.value(
            Sql::new(
                "SELECT COUNT(*) FROM batch_items i JOIN batches b ON b.id = i.batch
                 WHERE b.run_id = $1 AND b.state != 'recorded'",
            )
            .bind(run_id),
        )
        .await
    }

    /// The mean latency of a run's direct answers (attempts of kind `job` answered 200), in
    /// milliseconds, or `None` before it has any: what a `--deadline` estimates the rest by.
    pub async fn direct_latency_ms(&self, run_id: i64) -> Result<Option<i64>, StoreError> {
        let mean: i64 = self
            .value(
                Sql::new(
                    "SELECT CAST(COALESCE(AVG(a.latency_ms), -1) AS BIGINT)
                     FROM attempts a JOIN jobs j ON j.id = a.job
                     WHERE j.run_id = $1 AND a.kind = 'job' AND a.http_status = 200",
                )
                .bind(run_id),
            )
            .await?;
        Ok((mean >= 0).then_some(mean))
    }
}
