//! Reading a finished batch's results into the store as they stream in: each line priced at
//! the batch rates and committed in groups, with bounded memory whatever the batch's size.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::Value;

use super::calls::{About, Endpoint};
use super::{BatchError, Batcher, MAX_POLL, warn};
use crate::client::batches::{MessageBatch, RequestCounts};
use crate::client::{Answer, SHOWN_FIELD_BYTES, SHOWN_MESSAGE_BYTES, Unanswered, one_line};
use crate::message::{MessageSummary, RequestBounds};
use crate::send::direct::judge::{judge_of, verdict};
use crate::send::outcome::{CacheUse, result_record};
use crate::store::{
    AttemptRecord, BatchKind, BatchRow, BatchWaiting, GradeRecord, JobState, JobUpdate,
    JudgeWaiting, REPLACED_SPEC, WriteBatch, now_ms,
};

/// What an item of a batch waits to record: a job's answer, or a judge's verdict.
enum Waiting {
    Job(BatchWaiting),
    Judge(JudgeWaiting),
}

/// Lines of a batch's results read, looked up and committed together.
const RESULTS_PER_COMMIT: usize = 2_000;

/// What the reading of a batch's results recorded so far.
#[derive(Default)]
struct Recorded {
    /// Items of any kind.
    items: i64,
    /// Jobs' answers (judges are counted in [`Batcher::judged`]).
    jobs: u64,
}

impl Batcher<'_> {
    /// Polls every submitted batch, with a wait that doubles up to a minute, and records the
    /// results of each as it ends, until none is open or the user stops. Returns the jobs
    /// recorded.
    pub(super) async fn collect(&self) -> anyhow::Result<u64> {
        let mut recorded = 0;
        let mut wait = self.settings.poll_interval;
        let bar = self.progress_bar().await?;
        'polls: loop {
            let open: Vec<BatchRow> = self
                .store
                .open_batches(self.run_id)
                .await?
                .into_iter()
                .filter(|b| b.remote_id.is_some())
                .collect();
            if open.is_empty() || self.stop.is_cancelled() {
                break;
            }
            if !self.switched() && self.watch_deadline().await? {
                // Canceled: each batch ends soon, with what it finished.
                wait = self.settings.poll_interval;
            }
            let mut counts = RequestCounts::default();
            let mut ended_any = false;
            for row in &open {
                let id = row.remote_id.as_deref().unwrap_or_default();
                let batch = match self
                    .patiently(Endpoint::Retrieve, About::row(row), || {
                        self.client.retrieve_batch(id)
                    })
                    .await?
                {
                    Ok(batch) => batch,
                    Err(Unanswered::Stopped) => break 'polls,
                    Err(Unanswered::Failed(e)) => {
                        return Err(BatchError(format!("looking at batch {id} failed: {e}")).into());
                    }
                };
                self.store
                    .batch_counts(row.id, &serde_json::to_string(&batch.request_counts)?)
                    .await?;
                add(&mut counts, batch.request_counts);
                if batch.ended() {
                    let Some(done) = self.record(row, &batch).await? else {
                        break 'polls;
                    };
                    recorded += done;
                    ended_any = true;
                    bar.inc(u64::try_from(row.requests).unwrap_or(0));
                }
            }
            bar.set_message(format!(
                "{} batch{} running · {} processing · {} succeeded · {} errored · {} canceled · {} expired",
                open.len(),
                if open.len() == 1 { "" } else { "es" },
                counts.processing,
                counts.succeeded,
                counts.errored,
                counts.canceled,
                counts.expired
            ));
            if ended_any {
                wait = self.settings.poll_interval;
                continue;
            }
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(MAX_POLL.max(self.settings.poll_interval));
        }
        bar.finish_and_clear();
        Ok(recorded)
    }

    async fn progress_bar(&self) -> anyhow::Result<ProgressBar> {
        if !self.show_progress {
            return Ok(ProgressBar::hidden());
        }
        let total: i64 = self
            .store
            .open_batches(self.run_id)
            .await?
            .iter()
            .map(|b| b.requests)
            .sum();
        let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
        bar.set_style(crate::send::progress::batches_style());
        bar.enable_steady_tick(Duration::from_secs(1));
        Ok(bar)
    }

    /// Reads an ended batch's results as a stream and records each item whose job (or judge
    /// grade) still waits for it, committing as it goes; then marks the batch recorded.
    /// Returns the jobs recorded (judges are counted in [`Batcher::judged`]), or `None` when the user stopped the run before the results could be read
    /// (the batch stays open for the next session).
    async fn record(&self, row: &BatchRow, batch: &MessageBatch) -> anyhow::Result<Option<u64>> {
        let kind = if row.kind == BatchKind::Judge.as_str() {
            BatchKind::Judge
        } else {
            BatchKind::Answer
        };
        let waiting = self.store.batch_items_waiting(row.id, kind).await?;
        let submitted_at = row.submitted_at_ms.unwrap_or(row.intent_at_ms);
        let mut recorded = Recorded::default();
        if waiting > 0 {
            let url = batch.results_url.as_deref().ok_or_else(|| {
                BatchError(format!(
                    "batch {} ended, but the gateway gave no results_url to read its results from; `msgbatch resume` asks again",
                    batch.id
                ))
            })?;
            let results = match self
                .patiently(Endpoint::Results, About::row(row), || {
                    self.client.batch_results(url)
                })
                .await?
            {
                Ok(results) => results,
                Err(Unanswered::Stopped) => return Ok(None),
                Err(Unanswered::Failed(e)) => {
                    return Err(BatchError(format!(
                        "reading the results of {} failed: {e}",
                        batch.id
                    ))
                    .into());
                }
            };
            if let Some(note) = &results.note {
                warn(note);
            }
            let mut lines = results.lines;
            let mut unreadable = 0_usize;
            // A download that stalls fails like an idle stream, rather than hang the night.
            let idle = self.client.stream_idle_timeout();
            let mut ended = false;
            while !ended {
                // The results a part at a time, each part's waiting items looked up in one
                // go: what is in memory is one part, whatever the batch's size.
                let mut items = Vec::with_capacity(RESULTS_PER_COMMIT);
                while items.len() < RESULTS_PER_COMMIT {
                    let Ok(next) = tokio::time::timeout(idle, lines.next()).await else {
                        return Err(BatchError(format!(
                            "reading the results of {} stalled for {idle:?}; `msgbatch resume` reads them again",
                            batch.id
                        ))
                        .into());
                    };
                    let Some(line) = next else {
                        ended = true;
                        break;
                    };
                    let line = line.map_err(|e| {
                        BatchError(format!("reading the results of {} failed: {e}", batch.id))
                    })?;
                    match Item::read(&line) {
                        Some(item) => items.push(item),
                        // Not even a custom id to tell whose it is: its request stays waiting,
                        // counted with those the results lack, and the other lines are read.
                        None => unreadable += 1,
                    }
                }
                self.record_part(row.id, kind, submitted_at, items, &mut recorded)
                    .await?;
            }
            if unreadable > 0 {
                crate::errln!(
                    "warning: {unreadable} lines of batch {}'s results are not results and name no request; they are left out",
                    batch.id
                );
            }
        }
        if recorded.items < waiting {
            // Items the results file did not have: their jobs stay pending for another batch.
            warn_missing(&batch.id, waiting - recorded.items);
        }
        self.store
            .write_batch_results(row.id, &WriteBatch::default(), &[], true)
            .await?;
        Ok(Some(recorded.jobs))
    }

    /// Records the items of a part of a batch's results whose job (or judge grade) still
    /// waits for them, in one commit.
    async fn record_part(
        &self,
        batch: i64,
        kind: BatchKind,
        submitted_at: i64,
        items: Vec<Item>,
        recorded: &mut Recorded,
    ) -> anyhow::Result<()> {
        let ids: Vec<String> = items.iter().map(|item| item.custom_id.clone()).collect();
        let mut waiting: HashMap<String, Waiting> = match kind {
            BatchKind::Judge => self
                .store
                .judges_waiting(batch, &ids)
                .await?
                .into_iter()
                .map(|(k, w)| (k, Waiting::Judge(w)))
                .collect(),
            BatchKind::Answer => self
                .store
                .batch_waiting(batch, &ids)
                .await?
                .into_iter()
                .map(|(k, w)| (k, Waiting::Job(w)))
                .collect(),
        };
        let mut pending = WriteBatch::default();
        // The custom ids of the items `pending` records.
        let mut done = Vec::with_capacity(waiting.len());
        for Item { custom_id, result } in items {
            // An item is recorded once, even if the results repeat it.
            match waiting.remove(&custom_id) {
                Some(Waiting::Job(job)) => {
                    self.item(&mut pending, &job, result, (batch, submitted_at))?;
                    recorded.jobs += 1;
                }
                // Counted apart: judges are no jobs.
                Some(Waiting::Judge(judge)) => {
                    self.judge_item(&mut pending, judge, result, (batch, submitted_at));
                }
                None => continue,
            }
            done.push(custom_id);
        }
        recorded.items += i64::try_from(done.len()).unwrap_or(i64::MAX);
        self.store
            .write_batch_results(batch, &pending, &done, false)
            .await?;
        Ok(())
    }

    /// One result item into the writer batch: a result, or why the job has none.
    fn item(
        &self,
        pending: &mut WriteBatch,
        waiting: &BatchWaiting,
        result: ItemResult,
        (batch, submitted_at_ms): (i64, i64),
    ) -> anyhow::Result<()> {
        let job = waiting.job;
        let attempts = waiting.attempts + 1;
        let completed = now_ms();
        let turnaround = completed - submitted_at_ms;
        let mut attempt = AttemptRecord {
            job,
            kind: "batch",
            attempt: attempts,
            started_at_ms: submitted_at_ms,
            latency_ms: turnaround,
            batch: Some(batch),
            ..AttemptRecord::default()
        };
        let (state, error) = match result {
            ItemResult::Succeeded { message } => {
                // Read once, with the line: checked as a direct answer's body is, and stored
                // as its JSON text.
                let parsed =
                    MessageSummary::parse_value(&message).and_then(|summary| {
                        match summary.impossible_usage(&waiting.bounds) {
                            Some(impossible) => Err(impossible),
                            None => Ok(summary),
                        }
                    });
                match parsed {
                    Ok(summary) => {
                        let answer = Answer {
                            body: Bytes::from(serde_json::to_vec(&message)?),
                            summary,
                            status: 200,
                            request_id: None,
                            ttft: None,
                            latency: Duration::from_millis(u64::try_from(turnaround).unwrap_or(0)),
                            streamed: false,
                            note: None,
                        };
                        match result_record(
                            self.prices,
                            job,
                            &waiting.model,
                            waiting.expect.as_deref(),
                            answer,
                            CacheUse::default(),
                        ) {
                            Ok(mut result) => {
                                // Priced at the batch rates of `self.prices`.
                                result.batch = true;
                                pending.results.push(result);
                                attempt.http_status = Some(200);
                                (JobState::Succeeded, None)
                            }
                            // Usage no request could produce: a bad answer, not a figure.
                            Err(overflow) => {
                                let message = format!(
                                    "the answer's usage is refused: its cost is {overflow}"
                                );
                                attempt.http_status = Some(200);
                                attempt.error_type = Some("invalid_response".to_owned());
                                attempt.error_message = Some(message.clone());
                                (JobState::Failed, Some(format!("batch: {message}")))
                            }
                        }
                    }
                    Err(message) => {
                        attempt.error_type = Some("invalid_response".to_owned());
                        attempt.error_message = Some(message.clone());
                        (JobState::Failed, Some(format!("batch: {message}")))
                    }
                }
            }
            ItemResult::Unreadable(message) => {
                attempt.http_status = Some(200);
                attempt.error_type = Some("invalid_response".to_owned());
                attempt.error_message = Some(message.clone());
                (JobState::Failed, Some(format!("batch: {message}")))
            }
            ItemResult::Errored { error } => {
                let (kind, message) = errored(&mut attempt, &error);
                let again = if kind == "invalid_request_error" {
                    "the request itself was refused: fix it before sending it again"
                } else {
                    "worth sending again: `msgbatch resume RUN --include-failed`"
                };
                (
                    JobState::Failed,
                    Some(format!(
                        "errored in the batch: {kind}: {message} (not billed; {again})"
                    )),
                )
            }
            // Canceled for the deadline: the job goes directly, in this session or the next.
            ItemResult::Canceled if self.switched() => {
                attempt.error_type = Some("canceled".to_owned());
                (JobState::Pending, None)
            }
            ItemResult::Canceled => {
                attempt.error_type = Some("canceled".to_owned());
                (
                    JobState::Failed,
                    Some(
                        "canceled with its batch before it was processed (not billed; `msgbatch resume RUN --include-failed` sends it again)"
                            .to_owned(),
                    ),
                )
            }
            ItemResult::Expired => {
                attempt.error_type = Some("expired".to_owned());
                (
                    JobState::Failed,
                    Some(
                        "expired: its batch ended (24 hours) before it was processed (not billed; `msgbatch resume RUN --include-failed` sends it again)"
                            .to_owned(),
                    ),
                )
            }
        };
        pending.attempts.push(attempt);
        pending.updates.push(JobUpdate {
            job,
            state,
            attempts,
            error,
            lease: None,
        });
        Ok(())
    }
}

impl Batcher<'_> {
    /// One judge's result into the writer batch: its verdict, priced at the batch rates, or
    /// the judge left pending with why, and its attempt (kind `judge`), as a judge asked
    /// directly would be recorded. A judge canceled for the deadline is left pending as it
    /// was, to be asked directly. A result asked with a spec the grade no longer has
    /// (`msgbatch grade --expect` while the batch was open) is no verdict of the grade's: it
    /// is kept as an attempt, with what it was billed, and the grade stays pending, to be
    /// asked with its own spec.
    fn judge_item(
        &self,
        pending: &mut WriteBatch,
        waiting: JudgeWaiting,
        result: ItemResult,
        (batch, submitted_at_ms): (i64, i64),
    ) {
        let stale = waiting.stale();
        let JudgeWaiting {
            job, grader, spec, ..
        } = waiting;
        let spec = spec.unwrap_or_default();
        let model = judge_of(&spec).map(|(_, model)| model);
        let failed = |reason: String| GradeRecord {
            job,
            grader,
            kind: "judge".to_owned(),
            passed: None,
            reason: Some(reason),
            spec: spec.clone(),
            judge_model: model.clone(),
            ..GradeRecord::default()
        };
        let mut attempt = AttemptRecord {
            job,
            kind: "judge",
            attempt: 1,
            started_at_ms: submitted_at_ms,
            latency_ms: now_ms() - submitted_at_ms,
            batch: Some(batch),
            ..AttemptRecord::default()
        };
        let grade = match result {
            ItemResult::Succeeded { message } => {
                attempt.http_status = Some(200);
                // A judge request's max_tokens is the one every judge request has.
                let bounds = RequestBounds {
                    max_tokens: Some(crate::eval::JUDGE_MAX_TOKENS),
                    thinking_budget: None,
                };
                let judged = MessageSummary::parse_value(&message).and_then(|summary| {
                    if let Some(impossible) = summary.impossible_usage(&bounds) {
                        return Err(impossible);
                    }
                    let mut model = model.clone().unwrap_or_default();
                    // The spec it was asked with is gone: it is priced as the model that
                    // answered, when the table has it.
                    if stale
                        && let Some(answered) = summary.model.as_deref()
                        && matches!(
                            self.prices.cost_pico_usd(answered, &summary.usage()),
                            Some(Ok(_))
                        )
                    {
                        answered.clone_into(&mut model);
                    }
                    let about = (job, grader, spec.clone());
                    let body = serde_json::to_vec(&message).unwrap_or_default();
                    verdict(self.prices, about, model, &body, &summary.usage())
                });
                match judged {
                    Ok(grade) if stale => {
                        attempt.error_type = Some(REPLACED_SPEC.to_owned());
                        attempt.error_message = Some(
                            "the verdict came back for a grader spec that `msgbatch grade --expect` replaced while its batch was open: billed, and not recorded as the verdict of the grade's spec now, which is asked for itself"
                                .to_owned(),
                        );
                        attempt.cost_pico_usd = grade.judge_cost_pico_usd;
                        None
                    }
                    Ok(grade) => Some(grade),
                    Err(reason) => {
                        attempt.error_type = Some("invalid_response".to_owned());
                        attempt.error_message = Some(reason.clone());
                        Some(failed(format!("the judge request failed: {reason}")))
                    }
                }
            }
            ItemResult::Unreadable(reason) => {
                attempt.http_status = Some(200);
                attempt.error_type = Some("invalid_response".to_owned());
                attempt.error_message = Some(reason.clone());
                Some(failed(format!("the judge request failed: {reason}")))
            }
            ItemResult::Errored { error } => {
                let (kind, message) = errored(&mut attempt, &error);
                Some(failed(format!(
                    "the judge request errored in its batch: {kind}: {message} (not billed)"
                )))
            }
            ItemResult::Canceled => {
                attempt.error_type = Some("canceled".to_owned());
                (!self.switched()).then(|| {
                    failed(
                        "the judge request was canceled with its batch before it was processed (not billed)"
                            .to_owned(),
                    )
                })
            }
            ItemResult::Expired => {
                attempt.error_type = Some("expired".to_owned());
                Some(failed(
                    "the judge request expired: its batch ended (24 hours) before it was processed (not billed)"
                        .to_owned(),
                ))
            }
        };
        pending.attempts.push(attempt);
        // What the request said is not about the grade's spec now: the grade is left as it is.
        if stale {
            self.judged.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(grade) = grade {
            self.judged.add(&grade);
            pending.grades.push(grade);
        }
    }
}

/// One line of a batch's results.
#[derive(Debug, Deserialize)]
pub(super) struct Item {
    custom_id: String,
    result: ItemResult,
}

impl Item {
    /// A line of the results as the item it is; a line that is no item but names its request
    /// as [`ItemResult::Unreadable`], so that one bad line fails its own request and not the
    /// reading of every result after it; `None` for a line that names none.
    fn read(line: &[u8]) -> Option<Self> {
        /// The request a line names. Its other fields are skipped unread, however deep.
        #[derive(Deserialize)]
        struct Named {
            custom_id: String,
        }
        match serde_json::from_slice::<Self>(line) {
            Ok(item) => Some(item),
            Err(e) => serde_json::from_slice::<Named>(line)
                .ok()
                .map(|named| Self {
                    custom_id: named.custom_id,
                    // Where, not what: serde's words quote the line's values, which are the
                    // gateway's and may hold what scrubbing found under an escape.
                    result: ItemResult::Unreadable(format!(
                        "its line of the batch's results is not a result (at byte {} of {})",
                        e.column(),
                        line.len()
                    )),
                }),
        }
    }
}

/// What became of a request: `{"type": "succeeded", "message": …}`, `{"type": "errored",
/// "error": …}`, `{"type": "canceled"}` or `{"type": "expired"}`.
#[derive(Debug)]
pub(super) enum ItemResult {
    Succeeded {
        message: Value,
    },
    Errored {
        error: Value,
    },
    Canceled,
    Expired,
    /// A line that names its request but is not a result (never read from a line: see
    /// [`Item::read`]): the request's answer is refused as invalid, as a direct one would be.
    Unreadable(String),
}

impl<'de> Deserialize<'de> for ItemResult {
    /// Read as the internally tagged enum it is, without buffering the whole result (a
    /// message included) before it is read again into place, as serde's tagged enums do.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;

        #[derive(Deserialize)]
        struct Fields {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default, deserialize_with = "present")]
            message: Option<Value>,
            #[serde(default, deserialize_with = "present")]
            error: Option<Value>,
        }
        /// A field given, even as `null`.
        fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
            Value::deserialize(d).map(Some)
        }

        let Fields {
            kind,
            message,
            error,
        } = Fields::deserialize(deserializer)?;
        match kind.as_str() {
            "succeeded" => Ok(Self::Succeeded {
                message: message.ok_or_else(|| D::Error::missing_field("message"))?,
            }),
            "errored" => Ok(Self::Errored {
                error: error.ok_or_else(|| D::Error::missing_field("error"))?,
            }),
            "canceled" => Ok(Self::Canceled),
            "expired" => Ok(Self::Expired),
            other => Err(D::Error::unknown_variant(
                other,
                &["succeeded", "errored", "canceled", "expired"],
            )),
        }
    }
}

/// An errored item's error on its attempt: the gateway's type and message, one bounded line
/// each, as for any error it answers, its body and its request id. Returns the type and the
/// message.
fn errored(attempt: &mut AttemptRecord, error: &Value) -> (String, String) {
    let inner = error.get("error").unwrap_or(error);
    let kind = one_line(
        inner.get("type").and_then(Value::as_str).unwrap_or("error"),
        SHOWN_FIELD_BYTES,
    );
    let message = one_line(
        inner.get("message").and_then(Value::as_str).unwrap_or(""),
        SHOWN_MESSAGE_BYTES,
    );
    attempt.error_type = Some(kind.clone());
    attempt.error_message = Some(message.clone());
    attempt.error_body = Some(error.to_string());
    attempt.request_id = error
        .get("request_id")
        .and_then(Value::as_str)
        .map(|id| one_line(id, SHOWN_FIELD_BYTES));
    (kind, message)
}

/// Says that a batch's results lacked some of its requests (their jobs stay pending).
fn warn_missing(batch: &str, missing: i64) {
    crate::errln!(
        "warning: the results of batch {batch} lack {missing} of its requests; their jobs stay pending and go in the next batch"
    );
}

fn add(total: &mut RequestCounts, counts: RequestCounts) {
    total.processing += counts.processing;
    total.succeeded += counts.succeeded;
    total.errored += counts.errored;
    total.canceled += counts.canceled;
    total.expired += counts.expired;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(line: &str) -> Result<ItemResult, String> {
        serde_json::from_str::<Item>(line)
            .map(|item| item.result)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_of_result_is_read_and_a_malformed_one_refused() {
        let ok = result(
            r#"{"custom_id":"a","result":{"message":{"id":"m","n":[1,2.5]},"type":"succeeded","x":1}}"#,
        );
        match ok {
            Ok(ItemResult::Succeeded { message }) => {
                assert_eq!(message.to_string(), r#"{"id":"m","n":[1,2.5]}"#);
            }
            other => panic!("{other:?}"),
        }
        let errored = result(
            r#"{"custom_id":"a","result":{"type":"errored","error":{"type":"error","error":{"type":"overloaded_error"}}}}"#,
        );
        assert!(
            matches!(errored, Ok(ItemResult::Errored { error }) if error["error"]["type"] == "overloaded_error")
        );
        assert!(matches!(
            result(r#"{"custom_id":"a","result":{"type":"canceled"}}"#),
            Ok(ItemResult::Canceled)
        ));
        assert!(matches!(
            result(r#"{"custom_id":"a","result":{"type":"expired","message":null}}"#),
            Ok(ItemResult::Expired)
        ));
        // A message given as null is a message, as the tagged enum read it.
        assert!(matches!(
            result(r#"{"custom_id":"a","result":{"type":"succeeded","message":null}}"#),
            Ok(ItemResult::Succeeded {
                message: Value::Null
            })
        ));
        let missing = result(r#"{"custom_id":"a","result":{"type":"succeeded"}}"#).unwrap_err();
        assert!(missing.contains("missing field `message`"), "{missing}");
        let missing = result(r#"{"custom_id":"a","result":{"type":"errored"}}"#).unwrap_err();
        assert!(missing.contains("missing field `error`"), "{missing}");
        let unknown = result(r#"{"custom_id":"a","result":{"type":"lost"}}"#).unwrap_err();
        assert!(unknown.contains("unknown variant `lost`"), "{unknown}");
        let untyped = result(r#"{"custom_id":"a","result":{"message":{}}}"#).unwrap_err();
        assert!(untyped.contains("missing field `type`"), "{untyped}");
    }
}
