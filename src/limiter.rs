//! The shared pace of a run: per pool of models, the API's three per-minute limits (requests,
//! input tokens, output tokens) as token buckets, given or learnt from the gateway's headers;
//! and a pause that every worker honours when the gateway says to back off. One worker's 429
//! slows them all, so the gateway sees the whole run back off, not just the request that was
//! refused.
//!
//! The three buckets are one type, taken together: a request waits until its pool holds a
//! request *and* its tokens, and takes all at once, so that waiting on one limit never spends
//! another (a request permit taken while the input bucket refills would be wasted). Token
//! charges are settled with real usage, and learnt buckets are lowered to what the gateway
//! says remains; a rate limiter that cannot give back or be corrected cannot do either.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::client::{LimitKind, Observed};
use tokio::time::Instant;

/// The pool's name when the gateway limits the key: reports show the limits under it.
pub const KEY_POOL: &str = "(key)";

/// Longest pause a gateway's hint may impose at once; a reset time further out than this is
/// more likely a clock problem than a real limit.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// The share of each bucket kept back when taking from it: a tenth of a second of refill.
/// The gateway's bucket starts draining when the first request reaches it, a connection set-up
/// after ours did, so its bucket has refilled that much less than ours; without this room a
/// run that keeps its buckets empty sees a 429 every few hundred requests.
const HEADROOM: f64 = 0.1 / 60.0;

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
        self.at = self.at.max(now);
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
    requests: Option<TokenBucket>,
    input: Option<TokenBucket>,
    output: Option<TokenBucket>,
    /// Requests on the wire that were sent uncharged, before the pool had token limits.
    uncharged: u64,
    /// Output tokens charged to requests on the wire and not settled yet. The gateway counts
    /// output once it is produced, so what its headers say remains does not yet hold these:
    /// a bucket set from those headers has to keep them back.
    reserved_output: f64,
    /// The workers its limits were last divided among.
    shared_by: u64,
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
    /// `--rpm`, `--itpm` and `--otpm`: every pool starts with full buckets of them.
    rpm: Option<u32>,
    itpm: Option<u32>,
    otpm: Option<u32>,
    /// Models that share their limits: model → pool (by default each model is its own).
    pools: BTreeMap<String, String>,
    /// The one pool of every model, when the gateway limits the key rather than each model.
    one_pool: Option<String>,
    /// Buckets per pool, charged with each request's estimate and settled with its usage.
    tokens: Mutex<HashMap<String, TokenBuckets>>,
    /// No request starts before this instant.
    paused_until: Mutex<Option<Instant>>,
    /// How many workers share the limits (1 but for workers of a shared store).
    share: std::sync::Arc<Share>,
}

/// The workers among which a run's limits are divided equally, each keeping a bucket of its
/// share. Each worker's buckets refill at its share of the rate, so together they refill at
/// the rate the gateway allows; a worker that joins starts with empty buckets, so that the
/// levels of all never add up to more than the gateway's own bucket holds.
#[derive(Debug)]
pub struct Share {
    /// The workers, and since when: buckets refill at the old share until then.
    workers: Mutex<(u64, Instant)>,
    start_empty: std::sync::atomic::AtomicBool,
}

impl Share {
    /// Divides the limits among `workers` (at least 1) from now on.
    pub fn set(&self, workers: i64) {
        let workers = u64::try_from(workers).unwrap_or(1).max(1);
        let mut current = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != workers {
            *current = (workers, Instant::now());
        }
    }

    fn get(&self) -> (u64, Instant) {
        *self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Limiter {
    pub fn new(rpm: Option<u32>) -> Self {
        Self::with_tokens(rpm, None, None, BTreeMap::new())
    }

    /// A limiter with request, input and output token limits per minute for each pool of
    /// models.
    pub fn with_tokens(
        rpm: Option<u32>,
        itpm: Option<u32>,
        otpm: Option<u32>,
        pools: BTreeMap<String, String>,
    ) -> Self {
        Self {
            rpm: rpm.filter(|n| *n > 0),
            itpm: itpm.filter(|n| *n > 0),
            otpm: otpm.filter(|n| *n > 0),
            pools,
            one_pool: None,
            tokens: Mutex::new(HashMap::new()),
            paused_until: Mutex::new(None),
            share: std::sync::Arc::new(Share {
                workers: Mutex::new((1, Instant::now())),
                start_empty: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Every model counts against one pool: the gateway limits the key, not each model, so
    /// the given limits and those learnt from any answer hold for all models together.
    #[must_use]
    pub fn per_key(mut self) -> Self {
        self.one_pool = Some(KEY_POOL.to_owned());
        self
    }

    /// How the limits are divided among workers, for the heartbeat that counts them.
    pub fn share(&self) -> std::sync::Arc<Share> {
        std::sync::Arc::clone(&self.share)
    }

    /// This worker sends with `workers - 1` others. The first of them starts with full
    /// buckets of its share, as a lone sender would; one that joins others (`first` false)
    /// starts with empty ones that fill at its share of the rate, so that the levels of all
    /// never add up to more than the gateway's own bucket holds.
    pub fn join(&self, workers: i64, first: bool) {
        self.share.set(workers);
        if !first {
            self.share
                .start_empty
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits until no pause holds requests back.
    pub async fn until_unpaused(&self) {
        loop {
            let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match paused {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
    }

    /// Every pool's limits as they stand: those given, and those learnt from the gateway.
    pub fn limits_in_force(&self) -> BTreeMap<String, PoolLimits> {
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a limit from a u32, times a count of workers"
        )]
        let limit = |b: &Option<TokenBucket>, shared_by: u64| {
            b.as_ref()
                .map(|b| (b.limit * shared_by as f64).round() as u64)
        };
        map.iter()
            .map(|(pool, buckets)| {
                (
                    pool.clone(),
                    PoolLimits {
                        rpm: limit(&buckets.requests, buckets.shared_by),
                        itpm: limit(&buckets.input, buckets.shared_by),
                        otpm: limit(&buckets.output, buckets.shared_by),
                    },
                )
            })
            .filter(|(_, l)| *l != PoolLimits::default())
            .collect()
    }

    /// The pool whose limits a model's requests count against.
    pub fn pool<'a>(&'a self, model: &'a str) -> &'a str {
        if let Some(pool) = &self.one_pool {
            return pool;
        }
        self.pools.get(model).map_or(model, String::as_str)
    }

    /// A pool's buckets, made on first use, at this worker's share of the limits.
    fn buckets<'m>(
        &self,
        map: &'m mut HashMap<String, TokenBuckets>,
        pool: &str,
    ) -> &'m mut TokenBuckets {
        let buckets = map.entry(pool.to_owned()).or_insert_with(|| {
            let empty = self
                .share
                .start_empty
                .load(std::sync::atomic::Ordering::Relaxed);
            let bucket = |limit: u32| {
                let mut bucket = TokenBucket::new(limit);
                if empty {
                    bucket.level = 0.0;
                }
                bucket
            };
            TokenBuckets {
                requests: self.rpm.map(bucket),
                input: self.itpm.map(bucket),
                output: self.otpm.map(bucket),
                uncharged: 0,
                reserved_output: 0.0,
                shared_by: 1,
            }
        });
        let (workers, since) = self.share.get();
        if buckets.shared_by != workers {
            #[expect(clippy::cast_precision_loss, reason = "a count of workers")]
            let scale = buckets.shared_by as f64 / workers as f64;
            for bucket in [
                &mut buckets.requests,
                &mut buckets.input,
                &mut buckets.output,
            ]
            .into_iter()
            .flatten()
            {
                // At the old rate until the share changed; at the new one from then on.
                bucket.refill(since);
                bucket.limit *= scale;
                // A smaller share holds less at once; a larger one fills from where it is.
                bucket.level = bucket.level.min(bucket.limit);
            }
            buckets.shared_by = workers;
        }
        buckets
    }

    /// Whether a pool has token limits (given, or learnt from the gateway), so that its
    /// requests need a [`Charge`].
    pub fn limits_tokens(&self, pool: &str) -> bool {
        if self.itpm.is_some() || self.otpm.is_some() {
            return true;
        }
        let map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        map.get(pool)
            .is_some_and(|b| b.input.is_some() || b.output.is_some())
    }

    /// Waits until the pool's buckets hold a request and `charge`, and takes them together.
    /// Output is taken as forecast; [`Limiter::settle`] corrects both token counts once the
    /// answer says what was used. A request without a charge (its pool had no token limits
    /// when it was planned) takes a request only.
    pub async fn take(&self, pool: &str, charge: Option<Charge>) {
        let tokens = charge.is_some();
        let charge = charge.unwrap_or_default();
        loop {
            let wait = {
                let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                let buckets = self.buckets(&mut map, pool);
                let now = Instant::now();
                #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
                let (input, output) = (charge.input as f64, charge.output as f64);
                let mut wait = Duration::ZERO;
                for (bucket, need, counts) in [
                    (&mut buckets.requests, 1.0, true),
                    (&mut buckets.input, input, tokens),
                    (&mut buckets.output, output.max(1.0), tokens),
                ] {
                    if let (Some(b), true) = (bucket, counts) {
                        b.refill(now);
                        wait = wait.max(b.wait_for(need + b.limit * HEADROOM));
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
                    if tokens {
                        buckets.reserved_output += output;
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
        #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
        let charged_output = charged.output as f64;
        buckets.reserved_output = (buckets.reserved_output - charged_output).max(0.0);
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
        // The gateway speaks of the whole key; this worker holds its share of it.
        #[expect(clippy::cast_precision_loss, reason = "a count of workers")]
        let share = 1.0 / buckets.shared_by as f64;
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let in_flight = buckets.uncharged as f64;
        let reserved_output = buckets.reserved_output;
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
            let remaining = seen.remaining as f64 * share;
            #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
            let each = typical.map(|t| match seen.kind {
                LimitKind::Requests => 1.0,
                LimitKind::InputTokens => t.input as f64,
                LimitKind::OutputTokens => t.output as f64,
            });
            let start_empty = self
                .share
                .start_empty
                .load(std::sync::atomic::Ordering::Relaxed);
            let bucket = bucket.get_or_insert_with(|| {
                let mut fresh = TokenBucket::new(limit);
                fresh.limit *= share;
                // A worker that joined others has no part of what remains yet: it fills at its
                // share of the rate like theirs.
                let remaining = if start_empty { 0.0 } else { remaining };
                // Requests differ: each one still on the wire is taken at half as much again as
                // this one, and the gateway's rounding to the thousand is allowed for.
                fresh.level = match each {
                    Some(each) => remaining - in_flight * each * 1.5 - slack / 2.0,
                    None => remaining * 0.95,
                };
                fresh
            });
            bucket.refill(now);
            bucket.limit = f64::from(limit) * share;
            // Output still being produced has not reached the gateway's count: what remains
            // for new requests is what it says less what those on the wire were charged.
            // Forgetting them let the bucket fill again under answers still to be counted,
            // and the gateway's went into debt (429s).
            let remaining = match seen.kind {
                LimitKind::OutputTokens => remaining - reserved_output,
                LimitKind::Requests | LimitKind::InputTokens => remaining,
            };
            if bucket.level > remaining + slack * share {
                bucket.level = remaining;
            }
            // A bucket started with the uncharged requests taken at half as much again as
            // they produce stays that far under the gateway's for good, and the gateway's
            // refills past its top unused: once the gateway says clearly more remains for new
            // output (beyond its rounding) than the bucket holds, the bucket comes up to it.
            if seen.kind == LimitKind::OutputTokens
                && let Some(each) = each
            {
                let free = remaining - in_flight * each * 1.5 - slack / 2.0;
                if bucket.level < free - slack * share {
                    bucket.level = free.min(bucket.limit);
                }
            }
        }
    }

    /// Starts a pool with a request limit the gateway's headers may replace: a default from
    /// the docs, where none was given and none is known yet.
    pub fn assume_rpm(&self, pool: &str, rpm: u32) {
        if self.rpm.is_some() || rpm == 0 {
            return;
        }
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = self.buckets(&mut map, pool);
        buckets
            .requests
            .get_or_insert_with(|| TokenBucket::new(rpm));
    }

    /// A 429 the pool's request limit did not foresee: the limit in force is halved (to no
    /// less than one request a minute), until the gateway's headers say what it is. What the
    /// bucket holds is kept under the new limit but not emptied: the refused request waits
    /// the gateway's `retry-after`, and no longer.
    pub fn slow_down(&self, pool: &str) {
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = self.buckets(&mut map, pool);
        if let Some(bucket) = &mut buckets.requests {
            bucket.refill(Instant::now());
            bucket.limit = (bucket.limit / 2.0).max(1.0);
            bucket.level = bucket.level.min(bucket.limit);
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
        tokio::join!(limiter.until_unpaused(), limiter.until_unpaused());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(limiter.paused_for(), None);
    }

    /// Asserts that `elapsed` is `expected`, to the millisecond (bucket waits are computed in
    /// floating point).
    #[track_caller]
    fn about(elapsed: Duration, expected: Duration) {
        assert!(
            elapsed.abs_diff(expected) < Duration::from_millis(1),
            "{elapsed:?}, not {expected:?}"
        );
    }

    fn input(input: u64) -> Option<Charge> {
        Some(Charge { input, output: 0 })
    }

    /// Requests `limiter` lets through in `over` from now.
    async fn taken_in(limiter: &Limiter, over: Duration) -> u32 {
        let end = Instant::now() + over;
        let mut taken = 0;
        loop {
            tokio::select! {
                () = limiter.take("m", None) => taken += 1,
                () = tokio::time::sleep_until(end) => return taken,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn workers_sharing_a_limit_together_send_no_more_than_it() {
        // The first worker starts with a full bucket; it sends it, then two more join.
        let first = Limiter::new(Some(600));
        first.join(1, true);
        // Its full 600, and a second of refill less the tenth it keeps back.
        let burst = taken_in(&first, Duration::from_secs(1)).await;
        assert!((607..=609).contains(&burst), "{burst}");
        first.share().set(3);
        let joiners = [Limiter::new(Some(600)), Limiter::new(Some(600))];
        for joiner in &joiners {
            joiner.join(3, false);
        }
        // Each fills at a third of 10 a second, from empty: 200 a minute between them all,
        // less the tenth of a second each keeps back.
        let (a, b, c) = tokio::join!(
            taken_in(&first, Duration::from_secs(60)),
            taken_in(&joiners[0], Duration::from_secs(60)),
            taken_in(&joiners[1], Duration::from_secs(60)),
        );
        assert!((198..=202).contains(&a), "{a}");
        assert!(b.abs_diff(c) <= 1, "{b} and {c}");
        assert!(a + b + c <= 600 + 2, "{a} + {b} + {c}");
        assert!(a + b + c >= 600 - 6, "{a} + {b} + {c}");
        // One leaves: the others take its share from then on.
        joiners[1].share().set(1);
        first.share().set(2);
        joiners[0].share().set(2);
        let (a, b) = tokio::join!(
            taken_in(&first, Duration::from_secs(60)),
            taken_in(&joiners[0], Duration::from_secs(60)),
        );
        assert!(a + b <= 600 && a + b >= 594, "{a} + {b}");
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_is_a_bucket_per_pool_taken_together_with_tokens() {
        let limiter = Limiter::with_tokens(Some(600), Some(6_000), None, BTreeMap::new());
        let start = Instant::now();
        // A full bucket, less its headroom of a tenth of a second (one request): 599 requests
        // go at once, the next waits 100 ms for one more.
        for _ in 0..599 {
            limiter.take("a", None).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.take("a", None).await;
        about(start.elapsed(), Duration::from_millis(100));
        // Another pool has its own buckets.
        limiter.take("b", input(6_000)).await;
        about(start.elapsed(), Duration::from_millis(100));
        // Waiting 10.1 s for 1,000 input tokens and their headroom does not spend a request
        // while it waits: after it, the request bucket is full again and 598 more go at once.
        limiter.take("b", input(1_000)).await;
        about(start.elapsed(), Duration::from_millis(10_200));
        let before = Instant::now();
        for _ in 0..598 {
            limiter.take("b", None).await;
        }
        assert_eq!(before.elapsed(), Duration::ZERO);
        assert_eq!(
            limiter.limits_in_force()["b"],
            PoolLimits {
                rpm: Some(600),
                itpm: Some(6_000),
                otpm: None
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn token_buckets_wait_for_refill_and_settle_to_real_usage() {
        let limiter = Limiter::with_tokens(None, Some(6_000), Some(600), BTreeMap::new());
        let start = Instant::now();
        let big = Charge {
            input: 6_000,
            output: 100,
        };
        limiter.take("m", Some(big)).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "a full bucket takes it");
        // The next 1,000 input tokens wait for 10.1 s of refill (100 a second): the tokens
        // and the bucket's headroom of 10.
        limiter.take("m", input(1_000)).await;
        about(start.elapsed(), Duration::from_millis(10_100));
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
        limiter.take("m", input(4_000)).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
        // Output used past its forecast puts the bucket below empty: the next waits.
        limiter.settle(
            "m",
            Charge::default(),
            Charge {
                input: 0,
                output: 1_100,
            },
        );
        let before = Instant::now();
        limiter.take("m", Some(Charge::default())).await;
        // 500 below empty, plus the one token it needs and the headroom, at 10 a second.
        about(before.elapsed(), Duration::from_millis(50_200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_learnt_otpm_keeps_back_the_output_of_requests_still_on_the_wire() {
        let limiter = Limiter::with_tokens(None, None, None, BTreeMap::new());
        let output = |remaining: u64| Observed {
            kind: LimitKind::OutputTokens,
            limit: 60_000,
            remaining,
        };
        let charge = |output: u64| Some(Charge { input: 0, output });
        limiter.learn("m", &[output(60_000)], Some(Charge::default()));
        // Three requests go out, charged 10,000 each.
        for _ in 0..3 {
            limiter.take("m", charge(10_000)).await;
        }
        // Another answer says 20,000 remain: the gateway has not counted the 30,000 the three
        // will produce, so its bucket is headed for 10,000 of debt, and nothing may go out
        // before 10,000 and more have come back (ten seconds and more, at 1,000 a second).
        limiter.learn("m", &[output(20_000)], Some(Charge::default()));
        let before = Instant::now();
        limiter.take("m", charge(100)).await;
        assert!(
            before.elapsed() >= Duration::from_secs(10),
            "sent after {:?}, into the gateway's debt",
            before.elapsed()
        );
        // Once they are answered (and settled) the bucket no longer keeps them back.
        for _ in 0..3 {
            limiter.settle(
                "m",
                Charge {
                    input: 0,
                    output: 10_000,
                },
                Charge::default(),
            );
        }
        limiter.learn("m", &[output(20_000)], Some(Charge::default()));
        let before = Instant::now();
        limiter.take("m", charge(100)).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_learnt_otpm_comes_up_to_what_the_gateway_says_once_the_first_answers_are_in() {
        let limiter = Limiter::with_tokens(None, None, None, BTreeMap::new());
        let output = |remaining: u64| Observed {
            kind: LimitKind::OutputTokens,
            limit: 60_000,
            remaining,
        };
        let answer = |output: u64| Some(Charge { input: 0, output });
        // Three requests go out before any limit is known; the first answer (10,000 tokens)
        // says 50,000 remain, and the two still on the wire are kept back at 15,000 each.
        for _ in 0..3 {
            limiter.uncharged("m", true);
        }
        limiter.uncharged("m", false);
        limiter.learn("m", &[output(50_000)], answer(10_000));
        // They produce 10,000 each: the gateway says 30,000 remain, 10,000 more than the
        // bucket kept. Without coming up to it, the bucket would stay 10,000 under the gateway's
        // for the whole run, and the gateway's would refill past its top unused.
        for _ in 0..2 {
            limiter.uncharged("m", false);
        }
        limiter.learn("m", &[output(30_000)], answer(10_000));
        let before = Instant::now();
        limiter.take("m", answer(28_000)).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limiter_per_key_puts_every_model_in_one_pool_whatever_the_profile_pools() {
        let pools = BTreeMap::from([("claude-opus-4-7".to_owned(), "opus".to_owned())]);
        let limiter = Limiter::with_tokens(Some(60), None, None, pools).per_key();
        assert_eq!(limiter.pool("claude-opus-4-7"), KEY_POOL);
        assert_eq!(limiter.pool("claude-haiku-4-5"), KEY_POOL);
        // One bucket of 60 for both models (less a tenth of a second kept back): the 61st
        // request waits a second more, whichever model.
        let before = Instant::now();
        for i in 0..60 {
            let model = if i % 2 == 0 {
                "claude-opus-4-7"
            } else {
                "claude-haiku-4-5"
            };
            limiter.take(limiter.pool(model), None).await;
        }
        assert!(before.elapsed() <= Duration::from_millis(100));
        limiter.take(limiter.pool("claude-haiku-4-5"), None).await;
        assert!(before.elapsed() >= Duration::from_secs(1));
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
        // Started a twentieth under what remains (19,000), with a headroom of 100: 18,900 go
        // at once, then 1,000 tokens wait one second (1,000 a second come back).
        let start = Instant::now();
        limiter.take("opus", input(18_900)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.take("opus", input(1_000)).await;
        about(start.elapsed(), Duration::from_secs(1));
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
        limiter.take("opus", input(500)).await;
        about(before.elapsed(), Duration::from_millis(500));
    }
}
