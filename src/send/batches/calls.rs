//! The one way to a Message Batches endpoint (create, retrieve, list, results, cancel): each
//! HTTP call waits its turn under the Batches API's own request limit (given with
//! `--batch-rpm`, else the docs' lowest standard tier until the gateway's
//! `anthropic-ratelimit-requests-*` headers say what it is), is retried with the run's policy
//! ([`retried`]: exactly the server's `retry-after` when it gives one, a stop ending any
//! wait), and is recorded as a row of `batch_calls`. A 429 holds every batch call back for its
//! `retry-after` and halves the pace until the gateway's headers say otherwise.
//!
//! These rows are the run's control calls, not attempts at a job's answer: they live in their
//! own table, so that what counts a job's attempts (its errors, its last error, `export`)
//! reads the same whichever way the run was sent.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::client::batches::MessageBatch;
use crate::client::{AttemptError, Called, LimitKind, Observed, Unanswered, retried};
use crate::limiter::Limiter;
use crate::send::outcome::millis;
use crate::settings::BATCH_DEFAULT_RPM;
use crate::store::{BatchCallRecord, BatchRow, now_ms};

use super::Batcher;

/// The limiter's pool for the batch endpoints: one bucket for all of them.
const POOL: &str = "(batches)";

/// A batch endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Create,
    Retrieve,
    List,
    Results,
    Cancel,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Retrieve => "retrieve",
            Self::List => "list",
            Self::Results => "results",
            Self::Cancel => "cancel",
        }
    }
}

/// What a call is about: the batch row and the API's id of it, when there is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct About<'a> {
    pub batch: Option<i64>,
    pub remote_id: Option<&'a str>,
}

impl<'a> About<'a> {
    /// A call about a batch the store holds.
    pub fn row(row: &'a BatchRow) -> Self {
        Self {
            batch: Some(row.id),
            remote_id: row.remote_id.as_deref(),
        }
    }
}

/// The pace of a session's batch calls, and the first of their rows the store refused.
#[derive(Debug)]
pub struct BatchCalls {
    limiter: Limiter,
    unrecorded: Mutex<Option<String>>,
}

impl BatchCalls {
    /// Batch calls at `rpm` a minute when given; otherwise at [`BATCH_DEFAULT_RPM`] until
    /// the gateway's headers say what its limit is.
    pub fn new(rpm: Option<u32>) -> Self {
        let limiter = Limiter::new(rpm);
        limiter.assume_rpm(POOL, BATCH_DEFAULT_RPM);
        Self {
            limiter,
            unrecorded: Mutex::new(None),
        }
    }

    /// Waits for a call's turn: until no 429 holds the calls back and the request limit has
    /// room. `None` when the run stops first.
    async fn turn(&self, stop: &tokio_util::sync::CancellationToken) -> Option<Duration> {
        let queued = Instant::now();
        let waited = async {
            self.limiter.until_unpaused().await;
            self.limiter.take(POOL, None).await;
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            () = waited => Some(queued.elapsed()),
        }
    }

    /// What a call's answer says of the pace: the request limit its headers give, and a 429
    /// that holds every call back for its `retry-after` and halves the pace.
    fn learn<T>(&self, called: &Called<T>) {
        let requests: Vec<Observed> = called
            .rate_limit
            .observed
            .iter()
            .filter(|o| o.kind == LimitKind::Requests)
            .copied()
            .collect();
        // A refusal's headers say the bucket is empty; its retry-after says when it holds
        // the call again, and the call is retried then, not a refill's headroom later.
        if let Err(error) = &called.result
            && error.http_status() == Some(429)
        {
            self.limiter.slow_down(POOL);
            if let Some(wait) = error.retry_after() {
                self.limiter.pause_for(wait);
            }
            return;
        }
        self.limiter.learn(POOL, &requests, None);
    }
}

impl Batcher<'_> {
    /// A call to a batch endpoint, paced and recorded, retried as every call of the run is
    /// ([`retried`]); [`Unanswered::Stopped`] when the user stops the run first. Fails only
    /// when the store refused to record a call.
    pub(super) async fn patiently<T, F, Fut>(
        &self,
        what: Endpoint,
        about: About<'_>,
        mut call: F,
    ) -> anyhow::Result<Result<T, Unanswered>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Called<T>>,
    {
        let made = AtomicI64::new(0);
        let answer = retried(self.policy, &self.stop, || {
            self.once(what, about, &made, call())
        })
        .await;
        self.recorded()?;
        Ok(answer)
    }

    /// One call in its turn, recorded; a stop while it waits for its turn is the error that
    /// [`retried`] reads as a stop (retryable, with the run stopped).
    pub(super) async fn once<T>(
        &self,
        what: Endpoint,
        about: About<'_>,
        made: &AtomicI64,
        call: impl Future<Output = Called<T>>,
    ) -> Result<T, AttemptError> {
        let Some(queued) = self.calls.turn(&self.stop).await else {
            return Err(AttemptError::Connection(
                "stopped before the call was sent".to_owned(),
            ));
        };
        self.call_in(queued, what, about, made, call).await
    }

    /// Makes a call whose turn came after `queued`, learns from its answer and records it.
    pub(super) async fn call_in<T>(
        &self,
        queued: Duration,
        what: Endpoint,
        about: About<'_>,
        made: &AtomicI64,
        call: impl Future<Output = Called<T>>,
    ) -> Result<T, AttemptError> {
        let started_at_ms = now_ms();
        let sent = Instant::now();
        let called = call.await;
        let latency = sent.elapsed();
        self.calls.learn(&called);
        let mut record = BatchCallRecord {
            run_id: self.run_id,
            batch: about.batch,
            remote_id: about.remote_id.map(str::to_owned),
            call: what.as_str(),
            attempt: made.fetch_add(1, Ordering::Relaxed) + 1,
            started_at_ms,
            queue_wait_ms: millis(queued),
            latency_ms: millis(latency),
            request_id: called.request_id.clone(),
            ..BatchCallRecord::default()
        };
        match &called.result {
            Ok(_) => record.http_status = Some(200),
            Err(error) => {
                record.http_status = error.http_status().map(i64::from);
                record.error_type = Some(error.error_type());
                record.error_message = Some(error.message());
                record.error_body = error.body().map(str::to_owned);
                record.retry_after_ms = error.retry_after().map(millis);
                if let Some(id) = error.request_id() {
                    record.request_id = Some(id.to_owned());
                }
            }
        }
        if let Err(e) = self.store.record_batch_call(&record).await {
            let mut unrecorded = self
                .calls
                .unrecorded
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            unrecorded.get_or_insert_with(|| format!("{e:#}"));
        }
        called.result
    }

    /// Waits for a create call's turn; `None` when the run stops first.
    pub(super) async fn create_turn(&self) -> Option<Duration> {
        self.calls.turn(&self.stop).await
    }

    /// Fails once the store has refused to record a batch call.
    pub(super) fn recorded(&self) -> anyhow::Result<()> {
        let unrecorded = self
            .calls
            .unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &*unrecorded {
            Some(e) => Err(super::BatchError(format!("recording a batch call failed: {e}")).into()),
            None => Ok(()),
        }
    }

    /// Cancels a submitted batch (`POST …/batches/{id}/cancel`), paced, retried and recorded
    /// as every batch call.
    pub async fn cancel(&self, row: &BatchRow) -> anyhow::Result<Result<MessageBatch, Unanswered>> {
        let id = row.remote_id.as_deref().unwrap_or_default();
        self.patiently(Endpoint::Cancel, About::row(row), || {
            self.client.cancel_batch(id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::RateLimitHint;

    fn refused(retry_after: Option<Duration>) -> Called<()> {
        Called {
            result: Err(AttemptError::Http {
                status: 429,
                error_type: Some("rate_limit_error".into()),
                message: String::new(),
                error_code: None,
                body: None,
                retry_after,
                should_retry: None,
                request_id: None,
            }),
            rate_limit: RateLimitHint::default(),
            request_id: None,
        }
    }

    fn answered(limit: u64, remaining: u64) -> Called<()> {
        Called {
            result: Ok(()),
            rate_limit: RateLimitHint {
                exhausted_until: None,
                observed: vec![Observed {
                    kind: LimitKind::Requests,
                    limit,
                    remaining,
                }],
            },
            request_id: None,
        }
    }

    /// Calls let through in `over` from now.
    async fn taken_in(calls: &BatchCalls, over: Duration) -> u32 {
        let stop = tokio_util::sync::CancellationToken::new();
        let end = tokio::time::Instant::now() + over;
        let mut taken = 0;
        loop {
            tokio::select! {
                turn = calls.turn(&stop) => {
                    assert!(turn.is_some());
                    taken += 1;
                }
                () = tokio::time::sleep_until(end) => return taken,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_is_the_docs_default_until_the_gateway_says_its_limit() {
        // A full bucket of 1,000 less the tenth of a second kept back, and a second of refill.
        let burst = taken_in(&BatchCalls::new(None), Duration::from_secs(1)).await;
        assert!((1_000..=1_016).contains(&burst), "{burst}");
        // The gateway says 60 a minute, 10 left: those 10 go within half a second, then one a
        // second.
        let calls = BatchCalls::new(None);
        calls.learn(&answered(60, 10));
        let ten = taken_in(&calls, Duration::from_millis(500)).await;
        assert_eq!(ten, 10);
        let minute = taken_in(&calls, Duration::from_secs(60)).await;
        assert!((59..=61).contains(&minute), "{minute}");
        // Given on the command line, the limit is kept whatever the headers say.
        let given = BatchCalls::new(Some(30));
        given.learn(&answered(6_000, 6_000));
        // 30, less the twentieth kept back: 29 at once.
        let burst = taken_in(&given, Duration::from_millis(50)).await;
        assert_eq!(burst, 29);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_holds_the_calls_for_its_retry_after_exactly_and_halves_the_pace() {
        let calls = BatchCalls::new(Some(120));
        let stop = tokio_util::sync::CancellationToken::new();
        calls.learn(&refused(Some(Duration::from_secs(3))));
        let start = tokio::time::Instant::now();
        calls.turn(&stop).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "exactly the retry-after"
        );
        // 60 a minute from now on: what was left of the bucket (59 more, less the one kept
        // back), then one a second.
        let minute = taken_in(&calls, Duration::from_secs(60)).await;
        assert!((116..=119).contains(&minute), "{minute}");
        let next = taken_in(&calls, Duration::from_secs(10)).await;
        assert!((9..=11).contains(&next), "{next}");
        // A stop ends the wait for a turn.
        calls.learn(&refused(Some(Duration::from_secs(100))));
        stop.cancel();
        assert_eq!(calls.turn(&stop).await, None);
    }
}
