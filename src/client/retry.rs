//! The retry policy: how many attempts, and how long to wait between them.
//!
//! Which failures are retried is [`super::AttemptError::is_retryable`]; `backon` runs the
//! loop with the [`FullJitter`] backoff built here, and the caller replaces each delay with the
//! server's `retry-after` when it gave one ([`retry_delay`]), as the official SDKs do.
//! [`retried`] is that loop for a call made on its own (the Message Batches endpoints): each
//! wait ends when the run stops, and no attempt starts after that.

use std::future::Future;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, Retryable};
use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use super::AttemptError;

/// Retry settings, as data; `backon` is built from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per job, the first included.
    pub max_attempts: u32,
    /// The first backoff ceiling; it doubles per retry.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest wait a server may ask for (`retry-after`, `retry-after-ms`, a rate-limit
    /// reset). A longer one is not slept: the request fails with
    /// [`super::AttemptError::WaitTooLong`].
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The error to end with instead of `error` when the wait it asks for (its
    /// `retry-after`, or `reset`, a rate-limit reset from the same answer) is longer than
    /// the policy allows; `None` when it may be waited for, or is not retried anyway.
    pub fn refuse_wait(
        &self,
        error: &super::AttemptError,
        reset: Option<Duration>,
    ) -> Option<super::AttemptError> {
        if !error.is_retryable() {
            return None;
        }
        let asked = error.retry_after().max(reset)?;
        (asked > self.max_retry_after).then(|| super::AttemptError::WaitTooLong {
            asked,
            limit: self.max_retry_after,
            status: error.http_status(),
            request_id: error.request_id().map(str::to_owned),
        })
    }
}

impl BackoffBuilder for RetryPolicy {
    type Backoff = FullJitter;

    fn build(self) -> FullJitter {
        FullJitter {
            policy: self,
            retries: 0,
        }
    }
}

/// Exponential backoff with full jitter: before retry `n` (from 0) it waits a uniformly random
/// time in `[0, min(max_delay, base_delay · 2ⁿ)]`. Full jitter spreads a crowd of workers that
/// failed together, which matters when they all hit the same 429.
#[derive(Debug, Clone)]
pub struct FullJitter {
    policy: RetryPolicy,
    retries: u32,
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retries + 1 >= self.policy.max_attempts {
            return None;
        }
        let ceiling = self
            .policy
            .base_delay
            .saturating_mul(1u32.checked_shl(self.retries).unwrap_or(u32::MAX))
            .min(self.policy.max_delay);
        self.retries += 1;
        Some(ceiling.mul_f64(fastrand::f64()))
    }
}

/// The wait before a retry: what the server's `retry-after` says when it gave a positive one,
/// else the backoff. This is how the official SDKs wait (`_calculate_retry_timeout` in the
/// Python SDK): the server knows when its bucket has room again, so waiting longer only
/// stretches the run (taking the larger of the two made a run under 15% faults with
/// `retry-after: 1` twice as long as the retries the gateway forced), and waiting less is
/// refused again. A zero `retry-after` says nothing about when, so the backoff spreads the
/// retries.
pub fn retry_delay(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(wait) if !wait.is_zero() => wait,
        _ => backoff,
    }
}

/// Why a call made through [`retried`] has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unanswered {
    /// The run stopped (Ctrl-C) before the call was answered or had all its attempts.
    #[error("stopped before the gateway answered")]
    Stopped,
    /// The call failed for good, ran out of attempts, or the gateway asked to wait longer
    /// than `--max-retry-after`.
    #[error(transparent)]
    Failed(AttemptError),
}

impl Unanswered {
    /// The failure, unless the run stopped first.
    pub fn failure(&self) -> Option<&AttemptError> {
        match self {
            Self::Stopped => None,
            Self::Failed(error) => Some(error),
        }
    }
}

/// Makes `call` until it is answered, fails for good, runs out of the policy's attempts, or
/// `stop` is cancelled: between attempts it waits exactly the server's `retry-after` when it
/// gave one, the backoff otherwise ([`retry_delay`]), and a wait longer than
/// `--max-retry-after` is refused rather than slept on. A wait ends as soon as `stop` is
/// cancelled, and no attempt starts after that.
pub async fn retried<T, F, Fut>(
    policy: RetryPolicy,
    stop: &CancellationToken,
    mut call: F,
) -> Result<T, Unanswered>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let attempt = || {
        let started = (!stop.is_cancelled()).then(&mut call);
        async move {
            match started {
                Some(answer) => answer.await.map_err(Unanswered::Failed),
                None => Err(Unanswered::Stopped),
            }
        }
    };
    let waits_for = stop.clone();
    let sleep = move |wait: Duration| {
        let stop = waits_for.clone();
        async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => {}
            }
        }
    };
    let result = attempt
        .retry(policy)
        .sleep(sleep)
        .when(|e: &Unanswered| {
            e.failure()
                .is_some_and(|e| e.is_retryable() && policy.refuse_wait(e, None).is_none())
        })
        .adjust(|e: &Unanswered, delay| {
            let asked = e.failure().and_then(AttemptError::retry_after);
            delay.map(|d| retry_delay(d, asked))
        })
        .await;
    result.map_err(|e| match e {
        // Stopped before the attempts ran out: not a failure of the call.
        Unanswered::Failed(e) if stop.is_cancelled() && e.is_retryable() => Unanswered::Stopped,
        Unanswered::Failed(e) => Unanswered::Failed(policy.refuse_wait(&e, None).unwrap_or(e)),
        stopped @ Unanswered::Stopped => stopped,
    })
}

/// Reads the server's retry hint: `retry-after-ms`, then `retry-after` as seconds, then as an
/// HTTP date. A value that is negative, not finite or not a number is ignored (and the next
/// form read, as the SDKs do); one too large for a [`Duration`] is [`Duration::MAX`], which no
/// cap allows, rather than no wait at all.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let seconds = |value: f64| {
        (value.is_finite() && value >= 0.0)
            .then(|| Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX))
    };
    if let Some(wait) = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(wait);
    }
    let value = header("retry-after")?;
    if let Ok(number) = value.parse::<f64>() {
        return seconds(number);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Reads `x-should-retry`.
pub fn parse_should_retry(headers: &HeaderMap) -> Option<bool> {
    match headers.get("x-should-retry")?.to_str().ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn full_jitter_stays_under_a_doubling_ceiling_and_stops_at_max_attempts() {
        let policy = RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(60),
        };
        let delays: Vec<Duration> = policy.build().collect();
        assert_eq!(delays.len(), 5, "six attempts means five waits");
        let ceilings = [100, 200, 400, 500, 500];
        for (delay, ceiling) in delays.iter().zip(ceilings) {
            assert!(
                *delay <= Duration::from_millis(ceiling),
                "{delay:?} > {ceiling}ms"
            );
        }
        let single = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert_eq!(single.build().next(), None);
    }

    #[test]
    fn a_wait_past_the_cap_is_refused_whoever_asks_for_it() {
        let policy = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_retry_after: Duration::from_secs(60),
        };
        let http = |status: u16, retry_after: Option<u64>| super::super::AttemptError::Http {
            status,
            error_type: None,
            message: String::new(),
            error_code: None,
            body: None,
            retry_after: retry_after.map(Duration::from_secs),
            should_retry: None,
            request_id: None,
        };
        assert!(policy.refuse_wait(&http(429, Some(60)), None).is_none());
        let refused = policy
            .refuse_wait(&http(429, Some(999_999_999)), None)
            .unwrap();
        assert!(!refused.is_retryable());
        assert_eq!(refused.error_type(), "wait_too_long");
        assert!(
            refused
                .to_string()
                .starts_with("the gateway asks to wait 31years 8months"),
            "{refused}"
        );
        // A rate-limit reset far away asks the same, even without a retry-after.
        let reset = Some(Duration::from_secs(3600));
        assert!(policy.refuse_wait(&http(529, None), reset).is_some());
        // A failure that is not retried waits for nothing.
        assert!(policy.refuse_wait(&http(400, Some(999)), reset).is_none());
    }

    #[test]
    fn the_wait_is_the_servers_retry_after_when_given_and_the_backoff_otherwise() {
        let second = Duration::from_secs(1);
        // A backoff longer or shorter than the server's hint: the hint wins both ways.
        assert_eq!(retry_delay(Duration::from_secs(7), Some(second)), second);
        assert_eq!(retry_delay(Duration::from_millis(10), Some(second)), second);
        assert_eq!(
            retry_delay(Duration::from_secs(7), Some(Duration::from_millis(1_500))),
            Duration::from_millis(1_500)
        );
        // No hint, or `retry-after: 0`: the backoff.
        assert_eq!(
            retry_delay(Duration::from_secs(7), None),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(Duration::from_millis(300), Some(Duration::ZERO)),
            Duration::from_millis(300)
        );
    }

    fn overloaded(retry_after: Option<Duration>) -> AttemptError {
        AttemptError::Http {
            status: 529,
            error_type: Some("overloaded_error".into()),
            message: String::new(),
            error_code: None,
            body: None,
            retry_after,
            should_retry: None,
            request_id: None,
        }
    }

    fn patient() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(100),
            max_delay: Duration::from_secs(100),
            max_retry_after: Duration::from_secs(3600),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_exactly_the_retry_after_it_is_given_then_is_answered() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let stop = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let answer = retried(patient(), &stop, || async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0 => Err(overloaded(Some(Duration::from_secs(7)))),
                _ => Ok("answered"),
            }
        })
        .await;
        assert_eq!(answer.unwrap(), "answered");
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        // A wait past --max-retry-after is refused, not slept on.
        let refused = retried(patient(), &stop, || async {
            Err::<(), _>(overloaded(Some(Duration::from_secs(7200))))
        })
        .await;
        let Err(Unanswered::Failed(error)) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(error.error_type(), "wait_too_long");
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_and_no_attempt_starts_after_it() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let stop = CancellationToken::new();
        let waiting = retried(patient(), &stop, || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err::<(), _>(overloaded(Some(Duration::from_secs(3000))))
        });
        let stopper = async {
            // The first attempt has failed once the call waits; then the stop comes.
            tokio::task::yield_now().await;
            stop.cancel();
        };
        let started = tokio::time::Instant::now();
        let (result, ()) = tokio::join!(waiting, stopper);
        assert!(matches!(result, Err(Unanswered::Stopped)), "{result:?}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(started.elapsed() < Duration::from_secs(3000));
    }

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500.5"));
        assert_eq!(
            parse_retry_after(&headers),
            Some(Duration::from_micros(1_500_500))
        );
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("-3"));
        assert_eq!(parse_retry_after(&headers), None);
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&headers), None);
    }

    #[test]
    fn an_absurd_retry_after_is_past_any_cap_and_a_meaningless_one_is_ignored() {
        let parsed = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            parse_retry_after(&headers)
        };
        // Too large for a duration: a wait no cap allows, not none at all.
        for huge in ["1e308", "18446744073709551616"] {
            assert_eq!(
                parsed(&[("retry-after", huge)]),
                Some(Duration::MAX),
                "{huge}"
            );
        }
        for huge in ["1e308", "1e23"] {
            assert_eq!(
                parsed(&[("retry-after-ms", huge)]),
                Some(Duration::MAX),
                "{huge}"
            );
        }
        let far = parsed(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]).unwrap();
        assert!(far > Duration::from_secs(7_000 * 365 * 86_400), "{far:?}");
        for meaningless in ["-1", "-1e308", "NaN", "inf", "-inf", "infinity"] {
            assert_eq!(
                parsed(&[("retry-after", meaningless)]),
                None,
                "{meaningless}"
            );
        }
        // A `retry-after-ms` that says nothing leaves `retry-after` to speak.
        assert_eq!(
            parsed(&[("retry-after-ms", "NaN"), ("retry-after", "3")]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parsed(&[("retry-after-ms", "-5"), ("retry-after", "1e308")]),
            Some(Duration::MAX)
        );
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            max_retry_after: Duration::from_secs(300),
        };
        let overloaded = super::super::AttemptError::Http {
            status: 429,
            error_type: None,
            message: String::new(),
            error_code: None,
            body: None,
            retry_after: parsed(&[("retry-after", "1e308")]),
            should_retry: None,
            request_id: None,
        };
        let refused = policy.refuse_wait(&overloaded, None).unwrap();
        assert_eq!(refused.error_type(), "wait_too_long");
    }
}
