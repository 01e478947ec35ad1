//! One job from pending to an outcome: wait for the limiter, send, retry what is worth
//! retrying, and report every attempt and the final outcome to the writer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{Retryable, Sleeper};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Shutdown;
use super::halt::{self, Halt, Verdict};
use super::writer::{Event, Outcome};
use crate::client::{Answer, AttemptError, Client, RetryPolicy};
use crate::limiter::Limiter;
use crate::pricing::PriceTable;
use crate::progress::Counters;
use crate::store::{AttemptRecord, PendingJob, ResultRecord, now_ms};

/// What every worker shares.
pub struct Shared {
    pub client: Client,
    pub limiter: Limiter,
    pub policy: RetryPolicy,
    pub prices: PriceTable,
    pub shutdown: Shutdown,
    pub counters: Arc<Counters>,
    pub halt: tokio::sync::Mutex<Halt>,
    pub events: mpsc::Sender<Event>,
}

/// Why an attempt was not made or did not succeed.
#[derive(Debug)]
enum SendError {
    /// The run is stopping: no new attempt starts.
    Stopped,
    Attempt(AttemptError),
}

impl SendError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Attempt(e) if e.is_retryable())
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Attempt(e) => e.retry_after(),
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

/// Whether a request body asks for a streamed answer.
fn wants_stream(request: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        stream: bool,
    }
    serde_json::from_str::<Probe>(request).is_ok_and(|p| p.stream)
}

pub async fn run_job(shared: &Shared, job: PendingJob, reserved_pico_usd: u64) {
    let stream = wants_stream(&job.request);
    let body = Bytes::from(job.request);
    let previous_attempts = job.attempts;
    let made = AtomicU32::new(0);
    let started = Instant::now();
    let stop = &shared.shutdown.stop;

    let attempt = || {
        let body = body.clone();
        async {
            let number = made.fetch_add(1, Ordering::Relaxed);
            if number > 0 {
                Counters::sub(&shared.counters.retrying, 1);
            }
            if stop.is_cancelled() {
                made.fetch_sub(1, Ordering::Relaxed);
                return Err(SendError::Stopped);
            }
            send_once(
                shared,
                &shared.client,
                job.id,
                previous_attempts + i64::from(number) + 1,
                body,
                stream,
            )
            .await
            .map_err(SendError::Attempt)
        }
    };
    let retrying = attempt
        .retry(shared.policy)
        .sleep(StopAwareSleeper(stop.clone()))
        .when(|e: &SendError| e.is_retryable() && !stop.is_cancelled())
        .adjust(|e: &SendError, delay| {
            // Never earlier than the server asked.
            delay.map(|d| e.retry_after().map_or(d, |floor| d.max(floor)))
        })
        .notify(|e: &SendError, delay| {
            Counters::add(&shared.counters.retrying, 1);
            // A rate limit or an overload is the gateway's state, not this request's: hold
            // every worker back, not only this one.
            if let SendError::Attempt(error) = e
                && matches!(error.http_status(), Some(429 | 529))
            {
                shared
                    .limiter
                    .pause_for(error.retry_after().unwrap_or(delay));
            }
        });
    let result = tokio::select! {
        biased;
        () = shared.shutdown.abort.cancelled() => None,
        result = retrying => Some(result),
    };
    let made = made.load(Ordering::Relaxed);
    let attempts = previous_attempts + i64::from(made);
    let outcome = match result {
        None | Some(Err(SendError::Stopped)) => Outcome::Unfinished,
        Some(Ok(answer)) => Outcome::Succeeded(Box::new(result_record(
            &shared.prices,
            job.id,
            &job.model,
            job.expect.as_deref(),
            answer,
        ))),
        Some(Err(SendError::Attempt(error))) => {
            if stop.is_cancelled() && error.is_retryable() {
                // The run stopped before this job had all its attempts: it is not a failure.
                Outcome::Unfinished
            } else {
                Outcome::Failed {
                    error,
                    attempts_this_session: made,
                    elapsed: started.elapsed(),
                }
            }
        }
    };
    report(shared, job.id, attempts, outcome, reserved_pico_usd).await;
}

/// Hands a job's outcome to the writer, through the halt check when it is a final failure.
async fn report(
    shared: &Shared,
    job: i64,
    attempts: i64,
    outcome: Outcome,
    reserved_pico_usd: u64,
) {
    // The lock is held until the event is queued, so that events reach the writer in the
    // order the halt check saw them and a revert never overtakes the failure it reverts.
    let mut halt = shared.halt.lock().await;
    let mut revert = Vec::new();
    let outcome = match outcome {
        Outcome::Failed {
            error,
            attempts_this_session,
            elapsed,
        } if halt::is_run_level(&error) => match halt.observe(job, attempts, &error) {
            Verdict::Fail => Outcome::Failed {
                error,
                attempts_this_session,
                elapsed,
            },
            Verdict::Pending { revert: jobs } => {
                revert = jobs;
                Outcome::Unfinished
            }
        },
        Outcome::Unfinished => Outcome::Unfinished,
        other => {
            halt.reset();
            other
        }
    };
    // The writer outlives every worker; a send fails only when it has died, and then the
    // run ends with the writer's error.
    if !revert.is_empty() {
        let _ = shared.events.send(Event::Revert(revert)).await;
    }
    let _ = shared
        .events
        .send(Event::Finished {
            job,
            attempts,
            outcome,
            reserved_pico_usd,
        })
        .await;
}

/// One attempt: wait for the limiter, send, and report the attempt to the writer.
async fn send_once(
    shared: &Shared,
    client: &Client,
    job: i64,
    number: i64,
    body: Bytes,
    stream: bool,
) -> Result<Answer, AttemptError> {
    let queued = Instant::now();
    shared.limiter.until_ready().await;
    let queue_wait = queued.elapsed();
    let started_at_ms = now_ms();
    let sent = Instant::now();
    Counters::add(&shared.counters.in_flight, 1);
    let exchange = client.send(body, stream).await;
    Counters::sub(&shared.counters.in_flight, 1);
    let latency = sent.elapsed();
    if let Some(until) = exchange.rate_limit.exhausted_until {
        shared.limiter.pause_until(until);
    }
    let mut record = AttemptRecord {
        job,
        attempt: number,
        started_at_ms,
        queue_wait_ms: millis(queue_wait),
        latency_ms: millis(latency),
        ..AttemptRecord::default()
    };
    match &exchange.result {
        Ok(answer) => {
            record.http_status = Some(i64::from(answer.status));
            record.ttft_ms = answer.ttft.map(millis);
            record.request_id.clone_from(&answer.request_id);
        }
        Err(error) => {
            record.http_status = error.http_status().map(i64::from);
            record.error_type = Some(error.error_type());
            record.error_message = Some(error.message());
            record.error_body = error.body().map(str::to_owned);
            record.retry_after_ms = error.retry_after().map(millis);
            record.request_id = error.request_id().map(str::to_owned);
        }
    }
    let _ = shared.events.send(Event::Attempt(record)).await;
    exchange.result.map(|mut answer| {
        answer.ttft = answer.ttft.filter(|_| answer.streamed);
        // Latency of the successful attempt travels with the answer.
        answer.latency = latency;
        answer
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn result_record(
    prices: &PriceTable,
    job: i64,
    model: &str,
    expect: Option<&str>,
    answer: Answer,
) -> ResultRecord {
    let response = String::from_utf8_lossy(&answer.body).into_owned();
    let grades = match expect {
        Some(expect) => crate::eval::grade_job(job, expect, &response, millis(answer.latency)),
        None => Vec::new(),
    };
    let usage = answer.summary.usage();
    // Price by the model asked for; a gateway may answer with a dated id of the same model.
    let cost = prices.cost_pico_usd(model, &usage).or_else(|| {
        answer
            .summary
            .model
            .as_deref()
            .and_then(|m| prices.cost_pico_usd(m, &usage))
    });
    ResultRecord {
        job,
        response,
        note: answer.note,
        message_id: answer.summary.id,
        response_model: answer.summary.model,
        stop_reason: answer.summary.stop_reason,
        stop_sequence: answer.summary.stop_sequence,
        service_tier: answer.summary.usage.and_then(|u| u.service_tier),
        usage,
        latency_ms: millis(answer.latency),
        ttft_ms: answer.ttft.map(millis),
        streamed: answer.streamed,
        cost_pico_usd: cost,
        completed_at_ms: now_ms(),
        grades,
    }
}
