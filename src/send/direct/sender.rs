//! The one path every request takes: a job, a judge, a token count (and the batch calls to
//! come). [`RequestSender`] owns the client, the limiter, the retry policy, the budget
//! [`Budget`] and the shutdown tokens; each kind of request states only what differs: its
//! body, how its answer is read ([`Call`]), and which job its attempts belong to.
//!
//! Every attempt waits on the limiter, is timed, and is reported to the writer as a row of
//! `attempts` with its kind. Retries go through `backon` with full jitter, never earlier than
//! the server's `retry-after`, and a backoff ends early when the run stops. A 429 or 529 holds
//! back every request, not only the one refused.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{Retryable, Sleeper};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;

use super::pace::Pace;
use super::writer::Event;
use crate::client::{Answer, AttemptError, Client, RetryPolicy};
use crate::limiter::{Charge, Limiter};
use crate::send::Shutdown;
use crate::send::budget::Budget;
use crate::send::outcome::millis;
use crate::send::progress::Counters;
use crate::store::{AttemptRecord, now_ms};

/// What a request is for; stored with each of its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job,
    Judge,
    CountTokens,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Judge => "judge",
            Self::CountTokens => "count_tokens",
        }
    }
}

/// Called when a streamed answer's first content token arrives.
#[derive(Clone)]
pub struct FirstToken(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for FirstToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirstToken")
    }
}

/// The call a request makes, and so how its answer is read.
#[derive(Debug, Clone)]
pub enum Call {
    /// `POST …/messages`, read as a Message (rebuilt from events when `stream`).
    Message {
        body: Bytes,
        stream: bool,
        /// Told of the first content token (a cache warmer's signal that its prefix is
        /// readable).
        first_token: Option<FirstToken>,
    },
    /// `POST …/messages/count_tokens`, read as a count.
    CountTokens { body: Bytes },
}

/// A successful answer.
#[derive(Debug)]
pub enum Reply {
    Message(Box<Answer>),
    Tokens(u64),
}

/// One request: what it calls and whose attempts these are.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// The job the attempts are recorded against; `None` records none (a token count made
    /// before any run exists).
    pub job: Option<i64>,
    /// Attempts of this kind the job made in earlier sessions, so numbering carries on.
    pub attempts_before: i64,
    pub call: Call,
    /// What each attempt is charged against the token limits, when they are set.
    pub metered: Option<Metered>,
}

/// A request's charge against its pool's limits: one request against RPM, and against ITPM
/// and OTPM its estimate before each attempt, settled with its usage after (`None` while the
/// pool has no token limits, given or learnt). The answers teach `model`'s output forecast
/// and its pool's limits.
#[derive(Debug, Clone)]
pub struct Metered {
    pub model: String,
    pub charge: Option<Charge>,
    /// The request carries tokens to charge (a Messages request, not a token count).
    tokens: bool,
}

impl Metered {
    /// The metering of a Messages request (`body`, its JSON text) to `model`: charged with its
    /// input less the cache prefixes `cached` says it will read, and the output the run
    /// expects of the model, where the model's pool has token limits (the body is read only
    /// then).
    pub fn message(
        sender: &RequestSender,
        model: &str,
        body: &str,
        cached: impl Fn(u64) -> bool,
    ) -> Self {
        let pool = sender.limiter.pool(model);
        let charge = sender
            .limiter
            .limits_tokens(pool)
            .then(|| charge_of(sender, model, body.as_bytes(), cached));
        Self {
            model: model.to_owned(),
            charge,
            tokens: true,
        }
    }

    /// A request that counts against `model`'s request limit only (a token count).
    pub fn request_only(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            charge: None,
            tokens: false,
        }
    }

    /// What an attempt is charged: the charge made at dispatch, or, for a request dispatched
    /// before its pool knew its token limits and sent (or sent again) since they were learnt,
    /// a charge made now, reading none of its prefixes from the cache. Without it, retries of
    /// the first requests would pass a learnt limit uncharged.
    fn charge_now(&self, sender: &RequestSender, call: &Call) -> Option<Charge> {
        if self.charge.is_some() || !self.tokens {
            return self.charge;
        }
        let pool = sender.limiter.pool(&self.model);
        match call {
            Call::Message { body, .. } if sender.limiter.limits_tokens(pool) => {
                Some(charge_of(sender, &self.model, body, |_| false))
            }
            _ => None,
        }
    }
}

/// The charge of a Messages request: its input less the prefixes `cached` says it reads, and
/// the output the run expects of `model`.
fn charge_of(
    sender: &RequestSender,
    model: &str,
    body: &[u8],
    cached: impl Fn(u64) -> bool,
) -> Charge {
    let body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).unwrap_or_default();
    let max_tokens = body
        .get("max_tokens")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let (usage, _) = crate::tokens::input_usage_seen(&body, cached);
    Charge {
        input: usage.input_tokens + usage.cache_write_5m + usage.cache_write_1h,
        output: sender.forecast.expect(model, max_tokens),
    }
}

/// The output a model's next answer is expected to produce: a quarter above the mean of what
/// this run's answers from it produced (answers vary, and an answer longer than its charge
/// can empty the bucket under requests already sent; the settlement returns the surplus),
/// before any a quarter of `max_tokens`.
#[derive(Debug, Default)]
pub struct OutputForecast {
    means: Mutex<HashMap<String, (u64, u64)>>,
}

impl OutputForecast {
    pub fn expect(&self, model: &str, max_tokens: u64) -> u64 {
        let means = self.means.lock().unwrap_or_else(|e| e.into_inner());
        match means.get(model) {
            Some((total, n)) if *n > 0 => (total / n + total / n / 4).min(max_tokens),
            _ => max_tokens.div_ceil(4),
        }
    }

    fn learn(&self, model: &str, output: u64) {
        let mut means = self.means.lock().unwrap_or_else(|e| e.into_inner());
        let (total, n) = means.entry(model.to_owned()).or_default();
        *total += output;
        *n += 1;
    }
}

/// A job's place in the run's concurrency ([`Pace`]), from dispatch until its outcome is
/// decided. It is held while the job's request is on the wire and given up while the request
/// waits to be tried again, so that a request that a 503 sends back for a second leaves its
/// place to the jobs behind it. The default holds nothing and is never given up: its caller
/// bounds concurrency itself.
#[derive(Debug, Default)]
pub struct Place {
    pace: Option<Arc<Pace>>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Place {
    /// A place taken in `pace`.
    pub fn held(pace: Arc<Pace>, permit: OwnedSemaphorePermit) -> Self {
        Self {
            pace: Some(pace),
            permit: Mutex::new(Some(permit)),
        }
    }

    fn give_up(&self) {
        drop(self.lock().take());
    }

    /// Takes the place back after [`Place::give_up`]; false when the run stopped first.
    async fn regain(&self, stop: &CancellationToken) -> bool {
        let Some(pace) = &self.pace else {
            return true;
        };
        if self.lock().is_some() {
            return true;
        }
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            permit = pace.acquire() => permit,
        };
        match permit {
            Ok(permit) => {
                *self.lock() = Some(permit);
                true
            }
            Err(_) => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OwnedSemaphorePermit>> {
        self.permit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a request has no answer.
#[derive(Debug)]
pub enum SendError {
    /// The run stopped (or was abandoned) before an answer: nothing is known of the request.
    Stopped,
    /// The last attempt's error, after the attempts the policy allows.
    Failed(Box<AttemptError>),
}

/// How a request went.
#[derive(Debug)]
pub struct Sent {
    pub result: Result<Reply, SendError>,
    /// Attempts made in this call.
    pub attempts: u32,
    pub elapsed: Duration,
}

impl Sent {
    /// The Message of a `Call::Message` request.
    pub fn into_answer(self) -> Result<Answer, SendError> {
        match self.result {
            Ok(Reply::Message(answer)) => Ok(*answer),
            Ok(Reply::Tokens(_)) => Err(SendError::Stopped),
            Err(e) => Err(e),
        }
    }
}

/// Everything a request needs, shared by every request of a command.
pub struct RequestSender {
    pub client: Client,
    pub limiter: Limiter,
    pub policy: RetryPolicy,
    pub budget: Arc<Budget>,
    pub shutdown: Shutdown,
    pub counters: Arc<Counters>,
    /// Where attempt rows go: the writer of the run; `None` where no run exists.
    pub attempts: Option<mpsc::Sender<Event>>,
    /// The run's adaptive concurrency, told of clean answers and of overloads; `None` where
    /// the caller bounds concurrency itself.
    pub pace: Option<Arc<Pace>>,
    /// What answers produce, for the output forecast of token-limited requests.
    pub forecast: OutputForecast,
}

/// Why an attempt was not made or did not succeed, inside the retry loop.
#[derive(Debug)]
enum AttemptOutcome {
    Stopped,
    Error(AttemptError),
}

impl AttemptOutcome {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Error(e) if e.is_retryable())
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Error(e) => e.retry_after(),
            Self::Stopped => None,
        }
    }
}

/// Backoff sleeps that end early when the run stops, so a stopping run does not wait out a
/// long backoff only to give up.
struct StopAwareSleeper(CancellationToken);

impl Sleeper for StopAwareSleeper {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        let stop = self.0.clone();
        Box::pin(async move {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = stop.cancelled() => {}
            }
        })
    }
}

impl RequestSender {
    /// Sends a request until it is answered, fails for good, runs out of attempts, or the
    /// run stops.
    pub async fn send(&self, request: &Request) -> Sent {
        self.send_in(request, &Place::default()).await
    }

    /// Sends a request that holds `place` in the run's concurrency: it is given up while the
    /// request waits to be tried again and taken back before the next attempt.
    pub async fn send_in(&self, request: &Request, place: &Place) -> Sent {
        let made = AtomicU32::new(0);
        let started = Instant::now();
        let stop = &self.shutdown.stop;
        let attempt = || async {
            let number = made.fetch_add(1, Ordering::Relaxed);
            if number > 0 {
                Counters::sub(&self.counters.retrying, 1);
            }
            if stop.is_cancelled() || !place.regain(stop).await {
                made.fetch_sub(1, Ordering::Relaxed);
                return Err(AttemptOutcome::Stopped);
            }
            let number = request.attempts_before + i64::from(number) + 1;
            self.attempt(request, number)
                .await
                .map_err(AttemptOutcome::Error)
        };
        let retrying = attempt
            .retry(self.policy)
            .sleep(StopAwareSleeper(stop.clone()))
            .when(|e: &AttemptOutcome| e.is_retryable() && !stop.is_cancelled())
            .adjust(|e: &AttemptOutcome, delay| {
                // What the server asked, as the SDKs wait; the backoff only without it.
                delay.map(|d| crate::client::retry_delay(d, e.retry_after()))
            })
            .notify(|e: &AttemptOutcome, delay| {
                Counters::add(&self.counters.retrying, 1);
                let AttemptOutcome::Error(error) = e else {
                    return;
                };
                // A rate limit or an overload is the gateway's state, not this request's: the
                // pace adapts (runner/pace.rs). A 429 also holds every request back until its
                // retry-after (the bucket is empty: any request now would be refused too); a
                // 529 or a 5xx delays only its own retry.
                if let Some(pace) = &self.pace {
                    match error.http_status() {
                        Some(429) => pace.rate_limited(),
                        Some(529) => pace.overloaded(),
                        _ => {}
                    }
                }
                if error.http_status() == Some(429) {
                    self.limiter.pause_for(error.retry_after().unwrap_or(delay));
                }
                // A failure of this request leaves its place to the others while it waits
                // (after a 429's pause is set: the place given up first went to a job sent
                // at once, into the pause); one that may be the gateway's (unreachable, or
                // refusing the key) keeps it, so that no more jobs go out before the run knows
                // whether to stop.
                if !super::halt::is_run_level(error) {
                    place.give_up();
                }
            });
        let result = tokio::select! {
            biased;
            () = self.shutdown.abort.cancelled() => Err(SendError::Stopped),
            result = retrying => match result {
                Ok(reply) => {
                    if let Some(pace) = &self.pace {
                        pace.answered();
                    }
                    Ok(reply)
                }
                Err(AttemptOutcome::Stopped) => Err(SendError::Stopped),
                // The run stopped before the request had all its attempts: not a failure.
                Err(AttemptOutcome::Error(e)) if stop.is_cancelled() && e.is_retryable() => {
                    Err(SendError::Stopped)
                }
                Err(AttemptOutcome::Error(e)) => Err(SendError::Failed(Box::new(e))),
            },
        };
        Sent {
            result,
            attempts: made.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    }

    /// One attempt: wait for the limiter, call, and report the attempt to the writer.
    async fn attempt(&self, request: &Request, number: i64) -> Result<Reply, AttemptError> {
        let queued = Instant::now();
        self.limiter.until_unpaused().await;
        let charge = request
            .metered
            .as_ref()
            .and_then(|metered| metered.charge_now(self, &request.call));
        if let Some(metered) = &request.metered {
            let pool = self.limiter.pool(&metered.model);
            if charge.is_none() {
                self.limiter.uncharged(pool, true);
            }
            self.limiter.take(pool, charge).await;
            if let Some(binding) = self.limiter.binding(pool) {
                *self
                    .counters
                    .binding
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = binding;
            }
        }
        let queue_wait = queued.elapsed();
        let started_at_ms = now_ms();
        let sent = Instant::now();
        Counters::add(&self.counters.in_flight, 1);
        let (result, hint) = match &request.call {
            Call::Message {
                body,
                stream,
                first_token,
            } => {
                let exchange = self
                    .client
                    .send_observed(body.clone(), *stream, first_token.as_ref().map(|f| &*f.0))
                    .await;
                (
                    exchange
                        .result
                        .map(|answer| Reply::Message(Box::new(answer))),
                    exchange.rate_limit,
                )
            }
            Call::CountTokens { body } => (
                self.client
                    .count_tokens(body.clone())
                    .await
                    .map(Reply::Tokens),
                crate::client::RateLimitHint::default(),
            ),
        };
        Counters::sub(&self.counters.in_flight, 1);
        let latency = sent.elapsed();
        let reset = hint
            .exhausted_until
            .and_then(|until| until.duration_since(std::time::SystemTime::now()).ok());
        if let Some(until) = hint.exhausted_until {
            self.limiter.pause_until(until);
        }
        if let Some(metered) = &request.metered {
            let pool = self.limiter.pool(&metered.model);
            if charge.is_none() {
                self.limiter.uncharged(pool, false);
            }
            // What the answer used replaces the estimate; a refused or failed attempt used
            // nothing.
            let used = match &result {
                Ok(Reply::Message(answer)) => {
                    let usage = answer.summary.usage();
                    self.forecast.learn(&metered.model, usage.output_tokens);
                    Some(Charge {
                        input: usage.input_tokens + usage.cache_creation_input_tokens,
                        output: usage.output_tokens,
                    })
                }
                _ => None,
            };
            // What the gateway says of its limits, where none were given.
            self.limiter.learn(pool, &hint.observed, used);
            let used = used.unwrap_or_default();
            if let Some(charge) = charge {
                self.limiter.settle(pool, charge, used);
            }
        }
        if let (Some(sink), Some(job)) = (&self.attempts, request.job) {
            let mut record = AttemptRecord {
                job,
                kind: request.kind.as_str(),
                attempt: number,
                started_at_ms,
                queue_wait_ms: millis(queue_wait),
                latency_ms: millis(latency),
                ..AttemptRecord::default()
            };
            match &result {
                Ok(Reply::Message(answer)) => {
                    record.http_status = Some(i64::from(answer.status));
                    record.ttft_ms = answer.ttft.filter(|_| answer.streamed).map(millis);
                    record.request_id.clone_from(&answer.request_id);
                }
                Ok(Reply::Tokens(_)) => record.http_status = Some(200),
                Err(error) => {
                    record.http_status = error.http_status().map(i64::from);
                    record.error_type = Some(error.error_type());
                    record.error_message = Some(error.message());
                    record.error_body = error.body().map(str::to_owned);
                    record.retry_after_ms = error.retry_after().map(millis);
                    record.request_id = error.request_id().map(str::to_owned);
                }
            }
            // The writer outlives every request; a send fails only when it has died, and then
            // the run ends with the writer's error.
            let _ = sink.send(Event::Attempt(record)).await;
        }
        // The attempt is recorded as it was; what the request ends with is the refusal to
        // wait as long as the gateway asks, which is never slept on.
        let result =
            result.map_err(|error| self.policy.refuse_wait(&error, reset).unwrap_or(error));
        result.map(|reply| match reply {
            Reply::Message(mut answer) => {
                answer.ttft = answer.ttft.filter(|_| answer.streamed);
                // Latency of the successful attempt travels with the answer.
                answer.latency = latency;
                Reply::Message(answer)
            }
            tokens => tokens,
        })
    }
}
