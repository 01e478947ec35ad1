//! Sending a run through the Message Batches API (`run --via batches`): the run's pending jobs
//! packed into batches of at most 100,000 requests and 256 MB, each batch's intent committed
//! before its create call and its id right after, the batches polled with a growing interval,
//! and their results read as a stream into the store, priced at the batch rates (half of
//! every price).
//!
//! Creating a batch is the one call that is not idempotent. A crash between the create call
//! and the commit of its id leaves an intent without an id; before anything is submitted
//! again, the batches the API lists are searched for one created in that window with as many
//! requests, and adopted. Only when none is found is the intent dropped and its jobs sent
//! again.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use backon::Retryable;
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::client::batches::{MessageBatch, RequestCounts};
use crate::client::{Answer, AttemptError, Client, RetryPolicy};
use crate::message::MessageSummary;
use crate::pricing::PriceTable;
use crate::runner::worker::{CacheUse, result_record};
use crate::settings::BatchSettings;
use crate::store::{
    AttemptRecord, BatchRow, BatchWaiting, JobState, JobUpdate, PendingJob, Store, WriteBatch,
    now_ms,
};

/// Results committed per transaction while a batch's results are read.
const RESULTS_PER_COMMIT: usize = 2_000;

/// Jobs read from the store per page while batches are packed.
const PAGE: i64 = 4_096;

/// How long before and after its intent a batch found in the API's list may have been
/// created and still be the one a crash left without an id.
const INTENT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The longest wait between two looks at a running batch.
const MAX_POLL: Duration = Duration::from_secs(60);

/// What a session of batches did.
#[derive(Debug, Default)]
pub struct Collected {
    /// Batches created in this session (adopted ones included).
    pub submitted: usize,
    /// Jobs whose outcome was recorded in this session.
    pub recorded: u64,
    /// Stopped by the user while batches were still running on the server.
    pub left_running: usize,
    /// Why no more batches were submitted, when the budget stopped them.
    pub budget_stop: Option<String>,
}

/// Everything a session of batches needs.
pub struct Batcher<'a> {
    pub store: &'a Store,
    pub client: &'a Client,
    pub prices: &'a PriceTable,
    pub run_id: i64,
    pub settings: BatchSettings,
    pub policy: RetryPolicy,
    pub stop: CancellationToken,
    pub show_progress: bool,
    /// The run's budget in pico-USD; earlier spend and open batches count against it.
    pub budget_pico_usd: Option<u64>,
}

/// Why a batch session cannot go on, in one sentence for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

impl Batcher<'_> {
    /// Resolves intents a crash left, submits the pending jobs (when `submit`), and collects
    /// every open batch of the run until all are recorded or the user stops.
    pub async fn execute(&self, submit: bool) -> anyhow::Result<Collected> {
        let mut collected = Collected {
            submitted: self.recover().await?,
            ..Collected::default()
        };
        loop {
            if submit {
                let (made, budget_stop) = self.submit_pending().await?;
                collected.submitted += made;
                collected.budget_stop = budget_stop;
            }
            let recorded = self.collect().await?;
            collected.recorded += recorded;
            // Under a budget, batches are sized to the worst case that fits; once they are
            // in, what they did not spend of it is free for the next.
            if !submit || collected.budget_stop.is_none() || recorded == 0 {
                break;
            }
        }
        collected.left_running = self
            .store
            .open_batches(self.run_id)
            .await?
            .iter()
            .filter(|b| b.remote_id.is_some())
            .count();
        Ok(collected)
    }

    /// A call retried as the run's policy says, never earlier than `retry-after`.
    async fn patiently<T, F, Fut>(&self, call: F) -> Result<T, AttemptError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        // A gateway asking to wait longer than --max-retry-after is not slept on.
        call.retry(self.policy)
            .sleep(tokio::time::sleep)
            .when(|e: &AttemptError| {
                e.is_retryable()
                    && !self.stop.is_cancelled()
                    && self.policy.refuse_wait(e, None).is_none()
            })
            .adjust(|e: &AttemptError, delay| {
                delay.map(|d| crate::client::retry_delay(d, e.retry_after()))
            })
            .await
            .map_err(|e| self.policy.refuse_wait(&e, None).unwrap_or(e))
    }

    /// Intents left without an id: adopts the batch each one created, if the API lists one,
    /// and drops the others. Returns how many were adopted.
    async fn recover(&self) -> anyhow::Result<usize> {
        let intents: Vec<BatchRow> = self
            .store
            .open_batches(self.run_id)
            .await?
            .into_iter()
            .filter(|b| b.remote_id.is_none())
            .collect();
        if intents.is_empty() {
            return Ok(0);
        }
        let known = self.store.known_batch_ids().await?;
        let earliest = intents.iter().map(|b| b.intent_at_ms).min().unwrap_or(0);
        let mut candidates: Vec<MessageBatch> = Vec::new();
        let mut after: Option<String> = None;
        // Newest first: page until the batches are older than the earliest intent's window.
        loop {
            let page = self
                .patiently(|| self.client.list_batches(after.as_deref(), 100))
                .await
                .map_err(|e| BatchError(format!("listing the gateway's batches failed: {e}")))?;
            let mut older = false;
            for batch in page.data {
                let created = created_ms(&batch);
                if created.is_some_and(|c| c < earliest - window_ms()) {
                    older = true;
                }
                if !known.contains(&batch.id) {
                    candidates.push(batch);
                }
            }
            match page.last_id {
                Some(last) if page.has_more && !older => after = Some(last),
                _ => break,
            }
        }
        let mut adopted = 0;
        for intent in intents {
            let found = candidates.iter().position(|b| {
                let near =
                    created_ms(b).is_none_or(|c| (c - intent.intent_at_ms).abs() <= window_ms());
                near && i64::try_from(b.request_counts.total()).ok() == Some(intent.requests)
            });
            match found {
                Some(i) => {
                    let batch = candidates.swap_remove(i);
                    let at = created_ms(&batch).unwrap_or(intent.intent_at_ms);
                    self.store.batch_submitted(intent.id, &batch.id, at).await?;
                    adopted += 1;
                }
                None => self.store.drop_batch_intent(intent.id).await?,
            }
        }
        Ok(adopted)
    }

    /// Packs the run's unbatched pending jobs into batches and creates them, as long as the
    /// budget allows. Returns the batches created and why the budget stopped them, if it did.
    async fn submit_pending(&self) -> anyhow::Result<(usize, Option<String>)> {
        let mut made = 0;
        let mut after = self.store.before_first_job(self.run_id).await?;
        let room = match self.budget_pico_usd {
            Some(budget) => Some(budget.saturating_sub(self.held().await?)),
            None => None,
        };
        let mut packer = Packer::new(self.settings, self.prices, room);
        loop {
            if self.stop.is_cancelled() {
                return Ok((made, None));
            }
            let page = self.store.unbatched_jobs(self.run_id, after, PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id;
            for job in page {
                if let Some(full) = packer.add(&job)? {
                    if let Some(stop) = self.create(full).await? {
                        return Ok((made, Some(stop)));
                    }
                    made += 1;
                }
                if packer.over_budget {
                    return Ok((made, Some(self.over_budget().await?)));
                }
            }
        }
        if let Some(rest) = packer.finish() {
            if let Some(stop) = self.create(rest).await? {
                return Ok((made, Some(stop)));
            }
            made += 1;
        }
        Ok((made, None))
    }

    /// Creates one batch: the intent first, then the call, then its id. Returns why the
    /// budget refused it, if it did.
    async fn create(&self, packed: Packed) -> anyhow::Result<Option<String>> {
        let worst: u64 = packed
            .worst_cases
            .iter()
            .map(|w| w.div_ceil(2))
            .sum::<u64>();
        if let Some(budget) = self.budget_pico_usd {
            let held = self.held().await?;
            if held.saturating_add(worst) > budget {
                return Ok(Some(format!(
                    "the next batch of {} requests could cost up to {} at the batch rates, over what is left of --max-cost {} ({} spent or held by batches already submitted)",
                    packed.items.len(),
                    crate::pricing::format_usd(worst),
                    crate::pricing::format_usd(budget),
                    crate::pricing::format_usd(held),
                )));
            }
        }
        let intent_at_ms = now_ms();
        let intent = self
            .store
            .batch_intent(
                self.run_id,
                &packed.items,
                packed.body.len(),
                worst,
                intent_at_ms,
            )
            .await?;
        let body = Bytes::from(packed.body);
        let created = self.client.create_batch(body.clone()).await;
        let created = match created {
            Ok(batch) => Ok(batch),
            // A refusal with a status other than a server error never created the batch.
            Err(e @ AttemptError::Http { status, .. }) if status < 500 && status != 429 => Err(e),
            // Otherwise it may have been created before the answer was lost: look before
            // sending it again.
            Err(first) => {
                if let Some(found) = self.recover_one(intent_at_ms, packed.items.len()).await? {
                    Ok(found)
                } else if first.is_retryable() {
                    self.patiently(|| self.client.create_batch(body.clone()))
                        .await
                } else {
                    Err(first)
                }
            }
        };
        match created {
            Ok(batch) => {
                self.store
                    .batch_submitted(intent, &batch.id, now_ms())
                    .await?;
                Ok(None)
            }
            Err(error) => {
                self.store.drop_batch_intent(intent).await?;
                if error.http_status() == Some(404) {
                    return Err(BatchError(format!(
                        "the gateway has no Message Batches endpoint (it answered 404 to the create call: {error}); nothing was submitted. Send directly with `--via direct`, or set `batches = false` in its msgbatch.toml profile"
                    ))
                    .into());
                }
                Err(BatchError(format!("creating a batch failed: {error}")).into())
            }
        }
    }

    /// After a create call whose answer was lost: the batch it created, if the API lists one
    /// made since the intent (written at `intent_at_ms`) with as many requests.
    async fn recover_one(
        &self,
        intent_at_ms: i64,
        requests: usize,
    ) -> anyhow::Result<Option<MessageBatch>> {
        let known = self.store.known_batch_ids().await?;
        let Ok(page) = self.patiently(|| self.client.list_batches(None, 100)).await else {
            return Ok(None);
        };
        Ok(page.data.into_iter().find(|b| {
            !known.contains(&b.id)
                && created_ms(b).is_none_or(|c| c >= intent_at_ms - window_ms())
                && usize::try_from(b.request_counts.total()).ok() == Some(requests)
        }))
    }

    /// What the run spent, and the worst cases its open batches hold.
    async fn held(&self) -> anyhow::Result<u64> {
        let open: i64 = self
            .store
            .open_batches(self.run_id)
            .await?
            .iter()
            .map(|b| b.reserved_pico_usd)
            .sum();
        Ok(self.committed_spend().await? + u64::try_from(open).unwrap_or(0))
    }

    /// Why the next job is not submitted: its worst case does not fit what is left.
    async fn over_budget(&self) -> anyhow::Result<String> {
        let budget = self.budget_pico_usd.unwrap_or(0);
        Ok(format!(
            "the next job could pass the --max-cost budget of {} at the batch rates ({} spent or held by batches still open)",
            crate::pricing::format_usd(budget),
            crate::pricing::format_usd(self.held().await?),
        ))
    }

    /// Spend committed by the run: its results and its judges.
    async fn committed_spend(&self) -> anyhow::Result<u64> {
        let counts = self.store.run_counts(self.run_id).await?;
        let judges = self.store.judge_spend(self.run_id).await?;
        Ok(u64::try_from(counts.cost_pico_usd + judges).unwrap_or(0))
    }

    /// Polls every submitted batch, with a wait that doubles up to a minute, and records the
    /// results of each as it ends, until none is open or the user stops. Returns the jobs
    /// recorded.
    async fn collect(&self) -> anyhow::Result<u64> {
        let mut recorded = 0;
        let mut wait = self.settings.poll_interval;
        let bar = self.progress_bar().await?;
        loop {
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
            let mut counts = RequestCounts::default();
            let mut ended_any = false;
            for row in &open {
                let id = row.remote_id.as_deref().unwrap_or_default();
                let batch = self
                    .patiently(|| self.client.retrieve_batch(id))
                    .await
                    .map_err(|e| BatchError(format!("looking at batch {id} failed: {e}")))?;
                self.store
                    .batch_counts(row.id, &serde_json::to_string(&batch.request_counts)?)
                    .await?;
                add(&mut counts, batch.request_counts);
                if batch.ended() {
                    recorded += self.record(row, &batch).await?;
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
        bar.set_style(crate::progress::batches_style());
        bar.enable_steady_tick(Duration::from_secs(1));
        Ok(bar)
    }

    /// Reads an ended batch's results as a stream and records each item whose job still
    /// waits for it, committing as it goes; then marks the batch recorded. Returns the jobs
    /// recorded.
    async fn record(&self, row: &BatchRow, batch: &MessageBatch) -> anyhow::Result<u64> {
        let mut waiting = self.store.batch_waiting(row.id).await?;
        let submitted_at = row.submitted_at_ms.unwrap_or(row.intent_at_ms);
        let mut recorded = 0;
        if !waiting.is_empty() {
            let url = batch.results_url.as_deref().ok_or_else(|| {
                BatchError(format!(
                    "batch {} ended, but the gateway gave no results_url to read its results from; `msgbatch resume` asks again",
                    batch.id
                ))
            })?;
            let results = self
                .patiently(|| self.client.batch_results(url))
                .await
                .map_err(|e| {
                    BatchError(format!("reading the results of {} failed: {e}", batch.id))
                })?;
            if let Some(note) = &results.note {
                warn(note);
            }
            let mut lines = results.lines;
            let mut pending = WriteBatch::default();
            // A download that stalls fails like an idle stream, rather than hang the night.
            let idle = self.client.stream_idle_timeout();
            loop {
                let Ok(next) = tokio::time::timeout(idle, lines.next()).await else {
                    return Err(BatchError(format!(
                        "reading the results of {} stalled for {idle:?}; `msgbatch resume` reads them again",
                        batch.id
                    ))
                    .into());
                };
                let Some(line) = next else {
                    break;
                };
                let line = line.map_err(|e| {
                    BatchError(format!("reading the results of {} failed: {e}", batch.id))
                })?;
                let item: Item = serde_json::from_slice(&line).with_context(|| {
                    format!(
                        "a line of batch {}'s results is not a result: {}",
                        batch.id,
                        String::from_utf8_lossy(&line[..line.len().min(200)])
                    )
                })?;
                let Some(job) = waiting.remove(&item.custom_id) else {
                    continue;
                };
                self.item(&mut pending, &job, item, submitted_at)?;
                recorded += 1;
                if pending.updates.len() >= RESULTS_PER_COMMIT {
                    self.store
                        .write_batch_results(row.id, &std::mem::take(&mut pending), false)
                        .await?;
                }
            }
            self.store
                .write_batch_results(row.id, &pending, false)
                .await?;
        }
        if !waiting.is_empty() {
            // Items the results file did not have: their jobs stay pending for another batch.
            warn_missing(&batch.id, waiting.len());
        }
        self.store
            .write_batch_results(row.id, &WriteBatch::default(), true)
            .await?;
        Ok(recorded)
    }

    /// One result item into the writer batch: a result, or why the job has none.
    fn item(
        &self,
        pending: &mut WriteBatch,
        waiting: &BatchWaiting,
        item: Item,
        submitted_at_ms: i64,
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
            ..AttemptRecord::default()
        };
        let (state, error) = match item.result {
            ItemResult::Succeeded { message } => {
                let body = Bytes::from(serde_json::to_vec(&message)?);
                match MessageSummary::parse(&body) {
                    Ok(summary) => {
                        let answer = Answer {
                            body,
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
                                // Every token of a batch is billed at half the standard price.
                                result.cost_pico_usd = result.cost_pico_usd.map(|c| c / 2);
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
            ItemResult::Errored { error } => {
                let inner = error.get("error").unwrap_or(&error);
                let kind = inner
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_owned();
                let message = inner
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let again = if kind == "invalid_request_error" {
                    "the request itself was refused: fix it before sending it again"
                } else {
                    "worth sending again: `msgbatch resume RUN --include-failed`"
                };
                attempt.error_type = Some(kind.clone());
                attempt.error_message = Some(message.clone());
                attempt.error_body = Some(error.to_string());
                attempt.request_id = error
                    .get("request_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (
                    JobState::Failed,
                    Some(format!(
                        "errored in the batch: {kind}: {message} (not billed; {again})"
                    )),
                )
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

/// A warning about what a gateway did, escaped for the terminal.
fn warn(note: &str) {
    crate::errln!("warning: {note}");
}

/// Says that a batch's results lacked some of its requests (their jobs stay pending).
fn warn_missing(batch: &str, missing: usize) {
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

fn window_ms() -> i64 {
    i64::try_from(INTENT_WINDOW.as_millis()).unwrap_or(i64::MAX)
}

/// When the API says a batch was created, in Unix milliseconds.
fn created_ms(batch: &MessageBatch) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(batch.created_at.as_deref()?).ok()?;
    let ms = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// One line of a batch's results.
#[derive(Debug, Deserialize)]
struct Item {
    custom_id: String,
    result: ItemResult,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ItemResult {
    Succeeded { message: Value },
    Errored { error: Value },
    Canceled,
    Expired,
}

/// A batch ready to create: its body, and which job each request is.
struct Packed {
    body: Vec<u8>,
    items: Vec<(String, i64)>,
    /// Each request's worst case at the standard rates.
    worst_cases: Vec<u64>,
}

/// Fills batches up to the request and byte bounds, and to what is left of the budget.
struct Packer<'a> {
    settings: BatchSettings,
    prices: &'a PriceTable,
    current: Packed,
    ids: HashSet<String>,
    /// What is left of the budget for worst cases at the batch rates, when there is one.
    room: Option<u64>,
    /// The worst case of the current batch at the batch rates.
    current_worst: u64,
    /// The last job offered did not fit what is left of the budget, even alone.
    over_budget: bool,
}

/// The wrapper around a batch's requests: `{"requests":[` … `]}`.
const WRAPPER_BYTES: usize = 15;

impl<'a> Packer<'a> {
    fn new(settings: BatchSettings, prices: &'a PriceTable, room: Option<u64>) -> Self {
        Self {
            settings,
            prices,
            current: Self::empty(),
            ids: HashSet::new(),
            room,
            current_worst: 0,
            over_budget: false,
        }
    }

    fn empty() -> Packed {
        Packed {
            body: b"{\"requests\":[".to_vec(),
            items: Vec::new(),
            worst_cases: Vec::new(),
        }
    }

    /// Adds a job; returns the batch it filled, if adding it would have passed a bound (the
    /// job then starts the next batch).
    fn add(&mut self, job: &PendingJob) -> anyhow::Result<Option<Packed>> {
        let mut params: Map<String, Value> = serde_json::from_str(&job.request)
            .with_context(|| format!("job {} is not a JSON object", job.job_id))?;
        // A batch answers whole Messages; a streamed request goes without `stream`.
        params.remove("stream");
        let request = |custom_id: &str| {
            serde_json::json!({"custom_id": custom_id, "params": params}).to_string()
        };
        let probe = request(&job.job_id);
        if probe.len() + WRAPPER_BYTES + 1 > self.settings.max_bytes {
            return Err(BatchError(format!(
                "job {} is {} bytes, more than a batch may hold ({} bytes)",
                job.job_id,
                probe.len(),
                self.settings.max_bytes
            ))
            .into());
        }
        let worst = crate::runner::worst_case(self.prices, job)
            .map_err(|overflow| {
                BatchError(format!(
                    "job {} cannot be bounded by --max-cost: its worst case is {overflow}",
                    job.job_id
                ))
            })?
            .unwrap_or(0);
        let worst_half = worst.div_ceil(2);
        let over_room = self
            .room
            .is_some_and(|room| self.current_worst + worst_half > room);
        let full = self.current.items.len() >= self.settings.max_requests
            || self.current.body.len() + probe.len() + 2 > self.settings.max_bytes
            || over_room;
        let filled = if full { self.take() } else { None };
        if self.room.is_some_and(|room| worst_half > room) {
            self.over_budget = true;
            return Ok(filled);
        }
        self.current_worst += worst_half;
        let custom_id = self.custom_id(job);
        let line = if custom_id == job.job_id {
            probe
        } else {
            request(&custom_id)
        };
        if !self.current.items.is_empty() {
            self.current.body.push(b',');
        }
        self.current.body.extend_from_slice(line.as_bytes());
        self.current.items.push((custom_id, job.id));
        self.current.worst_cases.push(worst);
        Ok(filled)
    }

    /// The job's own id where the API accepts it and it is not taken in this batch (a run
    /// over several models has one id per model), else one made from its row id.
    fn custom_id(&mut self, job: &PendingJob) -> String {
        if valid_custom_id(&job.job_id) && self.ids.insert(job.job_id.clone()) {
            return job.job_id.clone();
        }
        let mut made = format!("job-{}", job.id);
        let mut n = 0;
        while !self.ids.insert(made.clone()) {
            n += 1;
            made = format!("job-{}-{n}", job.id);
        }
        made
    }

    fn take(&mut self) -> Option<Packed> {
        if self.current.items.is_empty() {
            return None;
        }
        self.ids.clear();
        if let Some(room) = &mut self.room {
            *room = room.saturating_sub(self.current_worst);
        }
        self.current_worst = 0;
        let mut packed = std::mem::replace(&mut self.current, Self::empty());
        packed.body.extend_from_slice(b"]}");
        Some(packed)
    }

    fn finish(mut self) -> Option<Packed> {
        self.take()
    }
}

/// Whether the API accepts `id` as a batch's `custom_id`: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_custom_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, job_id: &str, model: &str) -> PendingJob {
        PendingJob {
            id,
            job_id: job_id.to_owned(),
            model: model.to_owned(),
            request: serde_json::json!({"model": model, "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "hello there"}]})
            .to_string(),
            attempts: 0,
            expect: None,
            lease: None,
        }
    }

    fn settings(max_requests: usize, max_bytes: usize) -> BatchSettings {
        BatchSettings {
            max_requests,
            max_bytes,
            ..BatchSettings::default()
        }
    }

    fn requests(packed: &Packed) -> Vec<Value> {
        let body: Value = serde_json::from_slice(&packed.body).expect("a batch body is JSON");
        body["requests"].as_array().expect("requests").clone()
    }

    #[test]
    fn batches_fill_up_to_the_request_bound_and_drop_stream() {
        let prices = PriceTable::builtin();
        let mut packer = Packer::new(settings(2, BATCH_BYTES), &prices, None);
        let mut filled = Vec::new();
        for i in 0..5 {
            filled.extend(
                packer
                    .add(&job(i, &format!("j{i}"), "claude-haiku-4-5"))
                    .unwrap(),
            );
        }
        filled.extend(packer.finish());
        let sizes: Vec<usize> = filled.iter().map(|p| p.items.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let first = requests(&filled[0]);
        assert_eq!(first[0]["custom_id"], "j0");
        assert!(first[0]["params"].get("stream").is_none(), "{first:?}");
        assert_eq!(first[0]["params"]["max_tokens"], 100);
    }

    const BATCH_BYTES: usize = crate::settings::BATCH_MAX_BYTES;

    #[test]
    fn batches_stay_under_the_byte_bound() {
        let prices = PriceTable::builtin();
        let one = job(1, "a", "claude-haiku-4-5");
        let line = serde_json::json!({"custom_id": "a", "params": {}})
            .to_string()
            .len();
        // Room for about two requests of this size, not three.
        let bound = WRAPPER_BYTES + 2 * (one.request.len() + line + 1) + 10;
        let mut packer = Packer::new(settings(100, bound), &prices, None);
        let mut filled = Vec::new();
        for i in 0..3 {
            filled.extend(
                packer
                    .add(&job(i, &format!("b{i}"), "claude-haiku-4-5"))
                    .unwrap(),
            );
        }
        filled.extend(packer.finish());
        assert_eq!(filled.len(), 2);
        assert!(filled.iter().all(|p| p.body.len() <= bound), "{bound}");
    }

    #[test]
    fn custom_ids_the_api_refuses_or_repeats_are_replaced() {
        let prices = PriceTable::builtin();
        let mut packer = Packer::new(settings(100, BATCH_BYTES), &prices, None);
        for (id, job_id, model) in [
            (1, "same", "claude-haiku-4-5"),
            (2, "same", "claude-sonnet-4-6"),
            (3, "has space", "claude-haiku-4-5"),
            (4, &"x".repeat(65), "claude-haiku-4-5"),
            (5, "job-7", "claude-haiku-4-5"),
            (6, "ok_id-1", "claude-haiku-4-5"),
            (7, "bad id", "claude-haiku-4-5"),
        ] {
            assert!(packer.add(&job(id, job_id, model)).unwrap().is_none());
        }
        let packed = packer.finish().unwrap();
        let ids: Vec<&str> = packed.items.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            ids,
            [
                "same", "job-2", "job-3", "job-4", "job-7", "ok_id-1", "job-7-1"
            ]
        );
        // `job-7` was a job's own id before job 7 needed one: made ids never clash.
        let unique: HashSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| valid_custom_id(id)));
    }

    #[test]
    fn a_budget_bounds_each_batch_and_stops_at_a_job_that_cannot_fit() {
        let prices = PriceTable::builtin();
        let one = job(1, "a", "claude-haiku-4-5");
        let half = crate::runner::worst_case(&prices, &one)
            .unwrap()
            .unwrap()
            .div_ceil(2);
        let mut packer = Packer::new(settings(100, BATCH_BYTES), &prices, Some(half * 5 / 2));
        let mut filled = Vec::new();
        for i in 0..5 {
            filled.extend(
                packer
                    .add(&job(i, &format!("c{i}"), "claude-haiku-4-5"))
                    .unwrap(),
            );
            if packer.over_budget {
                break;
            }
        }
        assert!(packer.over_budget);
        let sizes: Vec<usize> = filled.iter().map(|p| p.items.len()).collect();
        assert_eq!(sizes, [2], "two worst cases fit the room, a third does not");
    }
}
