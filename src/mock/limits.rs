//! The mock's rate limits, enforced as the API enforces them: a token bucket each for requests
//! (RPM), input tokens (ITPM: uncached input and cache writes; cache reads are free) and
//! output tokens (OTPM: the tokens actually produced, not `max_tokens`). Each bucket holds its
//! per-minute limit and refills continuously at a sixtieth of it per second. A request that
//! finds a bucket short is answered 429 with `retry-after`; every answer, 429s and successes,
//! carries the `anthropic-ratelimit-*` headers.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::limiter::TokenBucket;

/// Header names and values for an answer.
pub type Headers = Vec<(String, String)>;

/// Per-minute limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u32>,
    pub itpm: Option<u32>,
    pub otpm: Option<u32>,
}

/// The limiter's bucket, with what the headers say of it.
type Bucket = TokenBucket;

trait Reported {
    fn remaining(&self) -> u64;
    fn until_full(&self) -> Duration;
}

impl Reported for Bucket {
    fn remaining(&self) -> u64 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a level between 0 and a u32 limit"
        )]
        let level = self.level.max(0.0).floor() as u64;
        level
    }

    fn until_full(&self) -> Duration {
        self.wait_for(self.limit)
    }
}

/// The buckets of one mock gateway.
#[derive(Debug, Default)]
pub struct Buckets {
    requests: Option<Bucket>,
    input: Option<Bucket>,
    output: Option<Bucket>,
}

impl Buckets {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            requests: limits.rpm.map(|l| Bucket::new_at(l, now)),
            input: limits.itpm.map(|l| Bucket::new_at(l, now)),
            output: limits.otpm.map(|l| Bucket::new_at(l, now)),
        }
    }

    /// The request bucket holds only `left` now, as when another client of the key has just
    /// spent the rest.
    pub fn requests_left(&mut self, left: u32) {
        if let Some(bucket) = &mut self.requests {
            bucket.level = bucket.level.min(f64::from(left));
        }
    }

    pub fn any(&self) -> bool {
        self.requests.is_some() || self.input.is_some() || self.output.is_some()
    }

    fn each(&mut self) -> impl Iterator<Item = &mut Bucket> {
        [&mut self.requests, &mut self.input, &mut self.output]
            .into_iter()
            .flatten()
    }

    /// Takes one request and its input tokens, or says how long until they would fit. The
    /// output bucket only has to hold something: output is counted as it is produced.
    pub fn admit(&mut self, input_tokens: u64, now: Instant) -> Result<(), Duration> {
        for bucket in self.each() {
            bucket.refill(now);
        }
        #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
        let input = input_tokens as f64;
        let wait = [
            self.requests.as_ref().map(|b| b.wait_for(1.0)),
            self.input.as_ref().map(|b| b.wait_for(input)),
            self.output.as_ref().map(|b| b.wait_for(1.0)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = &mut self.requests {
            b.level -= 1.0;
        }
        if let Some(b) = &mut self.input {
            b.level -= input.min(b.limit);
        }
        Ok(())
    }

    /// Counts the output tokens an answer produced (the bucket may go below empty, and then
    /// refuses until it has refilled).
    pub fn produced(&mut self, output_tokens: u64, now: Instant) {
        if let Some(b) = &mut self.output {
            b.refill(now);
            #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
            let output = output_tokens as f64;
            b.level -= output;
        }
    }

    /// The `anthropic-ratelimit-*` headers: each bucket's limit, what remains (token counts
    /// rounded to the nearest thousand, as the API rounds them) and when it is full again;
    /// `tokens-*` repeats whichever token bucket is the more restrictive now.
    pub fn headers(&mut self, now: Instant) -> Headers {
        for bucket in self.each() {
            bucket.refill(now);
        }
        let wall = SystemTime::now();
        let mut headers = Vec::new();
        let mut push = |kind: &str, bucket: &Bucket, round: bool| {
            let remaining = if round {
                (bucket.remaining() + 500) / 1000 * 1000
            } else {
                bucket.remaining()
            };
            let reset = humantime::format_rfc3339_seconds(wall + bucket.until_full());
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a u32 limit"
            )]
            let limit = bucket.limit as u64;
            headers.push((
                format!("anthropic-ratelimit-{kind}-limit"),
                limit.to_string(),
            ));
            headers.push((
                format!("anthropic-ratelimit-{kind}-remaining"),
                remaining.min(limit).to_string(),
            ));
            headers.push((
                format!("anthropic-ratelimit-{kind}-reset"),
                reset.to_string(),
            ));
        };
        if let Some(b) = &self.requests {
            push("requests", b, false);
        }
        if let Some(b) = &self.input {
            push("input-tokens", b, true);
        }
        if let Some(b) = &self.output {
            push("output-tokens", b, true);
        }
        let tightest = [&self.input, &self.output]
            .into_iter()
            .flatten()
            .min_by(|a, b| (a.level / a.limit).total_cmp(&(b.level / b.limit)));
        if let Some(b) = tightest {
            push("tokens", b, true);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_refill_at_a_sixtieth_of_the_limit_per_second() {
        let start = Instant::now();
        let mut buckets = Buckets::new(
            Limits {
                rpm: Some(60),
                itpm: Some(6_000),
                otpm: Some(600),
            },
            start,
        );
        // A full input bucket takes 6,000 tokens at once, then refuses the next 1,000 for 10 s
        // (100 tokens a second come back).
        assert_eq!(buckets.admit(6_000, start), Ok(()));
        assert_eq!(buckets.admit(1_000, start), Err(Duration::from_secs(10)));
        let later = start + Duration::from_secs(10);
        assert_eq!(buckets.admit(1_000, later), Ok(()));
        // Output is counted as produced: 900 tokens put the bucket 300 below empty, and the
        // next request waits until it holds a token again (301 tokens at 10 a second).
        buckets.produced(900, later);
        assert_eq!(buckets.admit(0, later), Err(Duration::from_secs_f64(30.1)));
        let headers = buckets.headers(later);
        assert_eq!(value(&headers, "anthropic-ratelimit-requests-limit"), "60");
        assert_eq!(
            value(&headers, "anthropic-ratelimit-requests-remaining"),
            "59"
        );
        assert_eq!(
            value(&headers, "anthropic-ratelimit-input-tokens-limit"),
            "6000"
        );
        // 0 tokens left (1,000 came back and were taken): rounded to the thousand.
        assert_eq!(
            value(&headers, "anthropic-ratelimit-input-tokens-remaining"),
            "0"
        );
        assert_eq!(
            value(&headers, "anthropic-ratelimit-output-tokens-remaining"),
            "0"
        );
        assert_eq!(value(&headers, "anthropic-ratelimit-tokens-limit"), "600");
        assert!(value(&headers, "anthropic-ratelimit-input-tokens-reset").ends_with('Z'));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_bucket_waits_for_a_full_bucket_only() {
        let start = Instant::now();
        let mut buckets = Buckets::new(
            Limits {
                itpm: Some(1_000),
                ..Limits::default()
            },
            start,
        );
        assert_eq!(buckets.admit(5_000, start), Ok(()));
        assert_eq!(buckets.admit(5_000, start), Err(Duration::from_secs(60)));
    }
}
