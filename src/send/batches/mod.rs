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

use std::future::Future;
use std::time::{Duration, SystemTime};

use backon::Retryable;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::client::batches::MessageBatch;
use crate::client::{AttemptError, Client, RetryPolicy};
use crate::pricing::PriceTable;
use crate::settings::BatchSettings;
use crate::store::{BatchRow, Store, now_ms};

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
    /// The table at the batch rates ([`PriceTable::batch`]): results and worst cases alike.
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
        let worst: u64 = packed.worst_cases.iter().sum::<u64>();
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
}

/// A warning about what a gateway did, escaped for the terminal.
fn warn(note: &str) {
    crate::errln!("warning: {note}");
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

mod pack;
mod results;

use pack::{Packed, Packer};
