//! The shared pace of a run: a requests-per-minute limit (governor), and a pause that every
//! worker honours when the gateway says to back off. One worker's 429 slows them all, so the
//! gateway sees the whole run back off, not just the request that was refused.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};

use crate::client::{LimitKind, Observed};
use tokio::time::Instant;

/// Longest pause a gateway's hint may impose at once; a reset time further out than this is
/// more likely a clock problem than a real limit.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// Input and output tokens a request is charged against the token limits: its estimate before
/// it is sent, its real usage once answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    /// Uncached input and cache writes (cache reads are free against ITPM).
    pub input: u64,
    pub output: u64,
}

/// A per-minute token limit as the API keeps it: a bucket of `limit` refilled continuously at
/// a sixtieth of it per second. Its level may go below empty when a request used more than
/// its estimate; requests then wait until it has refilled.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    pub limit: f64,
    pub level: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket of `limit` a minute.
    pub fn new(limit: u32) -> Self {
        Self::new_at(limit, Instant::now())
    }

    pub fn new_at(limit: u32, now: Instant) -> Self {
        Self {
            limit: f64::from(limit),
            level: f64::from(limit),
            at: now,
        }
    }

    pub fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + self.limit / 60.0 * elapsed).min(self.limit);
        self.at = now;
    }

    /// How long until the bucket holds `need` (at most a full bucket).
    pub fn wait_for(&self, need: f64) -> Duration {
        let short = need.min(self.limit) - self.level;
        if short <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(short / (self.limit / 60.0))
        }
    }
}

/// The buckets of one pool: the limits given on the command line or in the profile, and the
/// ones learnt from the gateway's `anthropic-ratelimit-*` headers.
#[derive(Debug, Default)]
struct TokenBuckets {
    /// Learnt only: a given `--rpm` is kept by governor for the whole run.
    requests: Option<TokenBucket>,
    input: Option<TokenBucket>,
    output: Option<TokenBucket>,
    /// Requests on the wire that were sent uncharged, before the pool had limits.
    uncharged: u64,
}

impl TokenBuckets {
    fn any(&self) -> bool {
        self.requests.is_some() || self.input.is_some() || self.output.is_some()
    }
}

/// A pool's per-minute limits as a run kept them: given, or learnt from the gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolLimits {
    pub rpm: Option<u64>,
    pub itpm: Option<u64>,
    pub otpm: Option<u64>,
}

#[derive(Debug)]
pub struct Limiter {
    rpm: Option<DefaultDirectRateLimiter>,
    /// `--rpm`, as given (governor keeps it for the whole run).
    rpm_given: Option<u32>,
    /// `--itpm` and `--otpm`: every pool starts with them.
    itpm: Option<u32>,
    otpm: Option<u32>,
    /// Models that share their limits: model → pool (by default each model is its own).
    pools: BTreeMap<String, String>,
    /// Buckets per pool, charged with each request's estimate and settled with its usage.
    tokens: Mutex<HashMap<String, TokenBuckets>>,
    /// Jitter added to each governor wait, so that queued workers do not wake together.
    jitter: Duration,
    /// No request starts before this instant.
    paused_until: Mutex<Option<Instant>>,
}

impl Limiter {
    pub fn new(rpm: Option<u32>) -> Self {
        Self::with_tokens(rpm, None, None, BTreeMap::new())
    }

    /// A limiter with input and output token limits per minute for each pool of models.
    pub fn with_tokens(
        rpm: Option<u32>,
        itpm: Option<u32>,
        otpm: Option<u32>,
        pools: BTreeMap<String, String>,
    ) -> Self {
        let rpm = rpm.and_then(NonZeroU32::new);
        Self {
            rpm_given: rpm.map(NonZeroU32::get),
            itpm: itpm.filter(|n| *n > 0),
            otpm: otpm.filter(|n| *n > 0),
            pools,
            tokens: Mutex::new(HashMap::new()),
            rpm: rpm.map(|n| RateLimiter::direct(quota(n))),
            jitter: rpm.map_or(Duration::ZERO, |n| Duration::from_secs(60) / n.get() / 10),
            paused_until: Mutex::new(None),
        }
    }

    /// Waits until a request may be sent.
    pub async fn until_ready(&self) {
        loop {
            let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match paused {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        if let Some(rpm) = &self.rpm {
            rpm.until_ready_with_jitter(Jitter::up_to(self.jitter))
                .await;
        }
    }

    /// Every pool's limits as they stand: those given, and those learnt from the gateway.
    pub fn limits_in_force(&self) -> BTreeMap<String, PoolLimits> {
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a limit from a u32"
        )]
        let limit = |b: &Option<TokenBucket>| b.as_ref().map(|b| b.limit as u64);
        map.iter()
            .map(|(pool, buckets)| {
                (
                    pool.clone(),
                    PoolLimits {
                        rpm: self.rpm_given.map(u64::from).or(limit(&buckets.requests)),
                        itpm: limit(&buckets.input),
                        otpm: limit(&buckets.output),
                    },
                )
            })
            .filter(|(_, l)| *l != PoolLimits::default())
            .collect()
    }

    /// The pool whose limits a model's requests count against.
    pub fn pool<'a>(&'a self, model: &'a str) -> &'a str {
        self.pools.get(model).map_or(model, String::as_str)
    }

    fn buckets<'m>(
        &self,
        map: &'m mut HashMap<String, TokenBuckets>,
        pool: &str,
    ) -> &'m mut TokenBuckets {
        map.entry(pool.to_owned()).or_insert_with(|| TokenBuckets {
            requests: None,
            input: self.itpm.map(TokenBucket::new),
            output: self.otpm.map(TokenBucket::new),
            uncharged: 0,
        })
    }

    /// Whether a pool has token limits (given, or learnt from the gateway), so that its
    /// requests need a [`Charge`].
    pub fn limits_tokens(&self, pool: &str) -> bool {
        if self.itpm.is_some() || self.otpm.is_some() {
            return true;
        }
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.get(pool).is_some_and(TokenBuckets::any)
    }

    /// Waits until the pool's buckets hold `charge` (and a request, where the gateway's
    /// request limit was learnt) and takes it. Output is taken as forecast; [`Limiter::settle`]
    /// corrects both once the answer says what was used.
    pub async fn take_tokens(&self, pool: &str, charge: Charge) {
        loop {
            let wait = {
                let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                let buckets = self.buckets(&mut map, pool);
                let now = Instant::now();
                #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
                let (input, output) = (charge.input as f64, charge.output as f64);
                let mut wait = Duration::ZERO;
                for (bucket, need) in [
                    (&mut buckets.requests, 1.0),
                    (&mut buckets.input, input),
                    (&mut buckets.output, output.max(1.0)),
                ] {
                    if let Some(b) = bucket {
                        b.refill(now);
                        wait = wait.max(b.wait_for(need));
                    }
                }
                if wait.is_zero() {
                    for (bucket, take) in [
                        (&mut buckets.requests, 1.0),
                        (&mut buckets.input, input),
                        (&mut buckets.output, output),
                    ] {
                        if let Some(b) = bucket {
                            b.level -= take.min(b.limit);
                        }
                    }
                    return;
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The limit closest to exhausted in a pool, and how much of it is in use: `ITPM 97%`
    /// (the share of its bucket taken).
    pub fn binding(&self, pool: &str) -> Option<String> {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = map.get_mut(pool)?;
        let now = Instant::now();
        let mut tightest: Option<(&str, f64)> = None;
        for (name, bucket) in [
            ("RPM", &mut buckets.requests),
            ("ITPM", &mut buckets.input),
            ("OTPM", &mut buckets.output),
        ] {
            if let Some(b) = bucket {
                b.refill(now);
                let used = 1.0 - b.level.max(0.0) / b.limit;
                if tightest.is_none_or(|(_, u)| used > u) {
                    tightest = Some((name, used));
                }
            }
        }
        tightest.map(|(name, used)| format!("{name} {:.0}%", used * 100.0))
    }

    /// Replaces what a request was charged with what it used (nothing, for a request that was
    /// refused or failed before an answer).
    pub fn settle(&self, pool: &str, charged: Charge, used: Charge) {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = self.buckets(&mut map, pool);
        #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
        let adjust = |b: &mut TokenBucket, charged: u64, used: u64| {
            let charged = (charged as f64).min(b.limit);
            b.level = (b.level + charged - used as f64).min(b.limit);
        };
        if let Some(b) = &mut buckets.input {
            adjust(b, charged.input, used.input);
        }
        if let Some(b) = &mut buckets.output {
            adjust(b, charged.output, used.output);
        }
    }

    /// A request of the pool goes out uncharged (the pool has no limits yet), or its answer
    /// is in.
    pub fn uncharged(&self, pool: &str, sent: bool) {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = self.buckets(&mut map, pool);
        if sent {
            buckets.uncharged += 1;
        } else {
            buckets.uncharged = buckets.uncharged.saturating_sub(1);
        }
    }

    /// Learns a pool's limits from the gateway's headers where none were given: a bucket of
    /// the limit it names, never fuller than what it says remains (the API rounds token counts
    /// to the thousand, so a bucket is lowered only when it is a thousand too full). A new
    /// bucket also leaves room for the requests still on the wire uncharged, each taken as half
    /// as much again as `typical` (the answer that brought the headers), or a twentieth of what
    /// remains when no answer came with them.
    pub fn learn(&self, pool: &str, observed: &[Observed], typical: Option<Charge>) {
        if observed.is_empty() {
            return;
        }
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let given = (self.rpm.is_some(), self.itpm.is_some(), self.otpm.is_some());
        let buckets = self.buckets(&mut map, pool);
        let now = Instant::now();
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let in_flight = buckets.uncharged as f64;
        for seen in observed {
            let (bucket, given, slack) = match seen.kind {
                LimitKind::Requests => (&mut buckets.requests, given.0, 0.0),
                LimitKind::InputTokens => (&mut buckets.input, given.1, 1000.0),
                LimitKind::OutputTokens => (&mut buckets.output, given.2, 1000.0),
            };
            let Ok(limit) = u32::try_from(seen.limit) else {
                continue;
            };
            if given || limit == 0 {
                continue;
            }
            #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
            let remaining = seen.remaining as f64;
            #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
            let each = typical.map(|t| match seen.kind {
                LimitKind::Requests => 1.0,
                LimitKind::InputTokens => t.input as f64,
                LimitKind::OutputTokens => t.output as f64,
            });
            let bucket = bucket.get_or_insert_with(|| {
                let mut fresh = TokenBucket::new(limit);
                // Requests differ: each one still on the wire is taken at half as much again as
                // this one, and the gateway's rounding to the thousand is allowed for.
                fresh.level = match each {
                    Some(each) => remaining - in_flight * each * 1.5 - slack / 2.0,
                    None => remaining * 0.95,
                };
                fresh
            });
            bucket.refill(now);
            bucket.limit = f64::from(limit);
            if bucket.level > remaining + slack {
                bucket.level = remaining;
            }
        }
    }

    /// Holds every worker back for `duration` from now (extending, never shortening, a pause
    /// already in force).
    pub fn pause_for(&self, duration: Duration) {
        let until = Instant::now() + duration.min(MAX_PAUSE);
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// Pauses until a wall-clock time given by the gateway's rate-limit headers.
    pub fn pause_until(&self, at: SystemTime) {
        if let Ok(wait) = at.duration_since(SystemTime::now()) {
            self.pause_for(wait);
        }
    }

    /// How long from now requests are held back, if at all.
    pub fn paused_for(&self) -> Option<Duration> {
        let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        paused
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|wait| !wait.is_zero())
    }
}

/// `rpm` requests a minute with a burst of one: 600 RPM is one request every 100 ms, which is
/// how the API's token bucket enforces it too.
fn quota(rpm: NonZeroU32) -> Quota {
    Quota::per_minute(rpm).allow_burst(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_caller_until_it_ends() {
        let limiter = Limiter::new(None);
        limiter.pause_for(Duration::from_secs(5));
        limiter.pause_for(Duration::from_secs(1));
        assert_eq!(limiter.paused_for(), Some(Duration::from_secs(5)));
        let start = Instant::now();
        tokio::join!(limiter.until_ready(), limiter.until_ready());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(limiter.paused_for(), None);
    }

    #[test]
    fn rpm_quota_admits_one_request_per_interval() {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let limiter =
            RateLimiter::direct_with_clock(quota(NonZeroU32::new(600).unwrap()), clock.clone());
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_err());
        clock.advance(Duration::from_millis(100));
        assert!(limiter.check().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn token_buckets_wait_for_refill_and_settle_to_real_usage() {
        let limiter = Limiter::with_tokens(None, Some(6_000), Some(600), BTreeMap::new());
        let start = Instant::now();
        let big = Charge {
            input: 6_000,
            output: 100,
        };
        limiter.take_tokens("m", big).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full bucket takes it at once"
        );
        // The next 1,000 input tokens wait for 10 s of refill (100 a second).
        limiter
            .take_tokens(
                "m",
                Charge {
                    input: 1_000,
                    output: 0,
                },
            )
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // The first request used only 2,000 of its 6,000: the rest comes back at once.
        limiter.settle(
            "m",
            big,
            Charge {
                input: 2_000,
                output: 100,
            },
        );
        let before = Instant::now();
        limiter
            .take_tokens(
                "m",
                Charge {
                    input: 4_000,
                    output: 0,
                },
            )
            .await;
        assert_eq!(before.elapsed(), Duration::ZERO);
        // Output used past its forecast puts the bucket below empty: the next waits.
        limiter.settle(
            "m",
            Charge {
                input: 0,
                output: 0,
            },
            Charge {
                input: 0,
                output: 1_100,
            },
        );
        let before = Instant::now();
        limiter.take_tokens("m", Charge::default()).await;
        // 500 below empty plus the one token it needs, at 10 a second.
        assert!(
            before.elapsed() >= Duration::from_secs(50),
            "{:?}",
            before.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn limits_are_learnt_per_pool_from_headers_and_pools_share_them() {
        let pools = BTreeMap::from([
            ("claude-opus-4-7".to_owned(), "opus".to_owned()),
            ("claude-opus-4-6".to_owned(), "opus".to_owned()),
        ]);
        let limiter = Limiter::with_tokens(None, None, None, pools);
        assert_eq!(limiter.pool("claude-opus-4-6"), "opus");
        assert_eq!(limiter.pool("claude-haiku-4-5"), "claude-haiku-4-5");
        assert!(!limiter.limits_tokens("opus"));
        limiter.learn(
            "opus",
            &[Observed {
                kind: LimitKind::InputTokens,
                limit: 60_000,
                remaining: 20_000,
            }],
            None,
        );
        assert!(limiter.limits_tokens("opus"));
        assert!(!limiter.limits_tokens("claude-haiku-4-5"), "another pool");
        // Started a twentieth under what remains (19,000): 19,000 go at once, then 1,000
        // tokens wait one second (1,000 a second come back).
        let start = Instant::now();
        let charge = |input| Charge { input, output: 0 };
        limiter.take_tokens("opus", charge(19_000)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.take_tokens("opus", charge(1_000)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // A later answer that says less remains lowers the bucket; one within the rounding of
        // a thousand does not.
        limiter.learn(
            "opus",
            &[Observed {
                kind: LimitKind::InputTokens,
                limit: 60_000,
                remaining: 0,
            }],
            None,
        );
        let before = Instant::now();
        limiter.take_tokens("opus", charge(500)).await;
        assert!(before.elapsed() <= Duration::from_millis(500));
    }
}
