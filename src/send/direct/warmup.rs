//! Cache warm-up: pay for a shared prefix once, not once per worker.
//!
//! The API makes a prompt-cache entry readable only once the response that writes it has
//! begun, so jobs that share a `cache_control` prefix and start together all miss and all pay
//! the write. The dispatcher asks [`Warmup::decide`] before each job: a job whose prefixes are
//! warm goes; a job with a cold prefix goes alone as its warmer (streamed, so that its first
//! event says the entry is readable); a job with a prefix that another job is warming waits,
//! while jobs of other groups and jobs without a prefix keep every worker busy. A prefix stays
//! warm for its TTL (5 minutes, or an hour) after its last use, as a cache read refreshes it;
//! after that it is warmed again before its group fans out again.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::tokens::CachePrefix;

/// A cache entry lives this long after its last use, unless it was written with `ttl: 1h`.
const TTL_5M: Duration = Duration::from_secs(5 * 60);
const TTL_1H: Duration = Duration::from_secs(60 * 60);

/// What the dispatcher should do with a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it: every prefix is warm, or it has none.
    Go,
    /// Send it alone, streamed, as the warmer of its cold prefixes; report its first event
    /// (or its end without one) under this id.
    Warm(u64),
    /// Another job is warming one of its prefixes: hold it until that one has begun.
    Wait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Being written by the warmer with this id; readable once its response begins.
    Warming(u64),
    /// Readable until this instant, unless used again before.
    Warm(Instant),
}

/// The state of every prefix a run has met.
#[derive(Debug, Default)]
pub struct Warmup {
    prefixes: HashMap<u64, State>,
    next_id: u64,
}

fn ttl(prefix: &CachePrefix) -> Duration {
    if prefix.one_hour { TTL_1H } else { TTL_5M }
}

impl Warmup {
    /// Decides for a job with these prefixes (as [`crate::tokens::cache_prefixes`] finds them).
    pub fn decide(&mut self, prefixes: &[CachePrefix], now: Instant) -> Decision {
        let mut cold = false;
        for prefix in prefixes {
            match self.prefixes.get(&prefix.hash) {
                Some(State::Warming(_)) => return Decision::Wait,
                Some(State::Warm(until)) if *until > now => {}
                _ => cold = true,
            }
        }
        let decision = if cold {
            self.next_id += 1;
            Decision::Warm(self.next_id)
        } else {
            Decision::Go
        };
        for prefix in prefixes {
            let state = match decision {
                Decision::Warm(id) if !matches!(self.prefixes.get(&prefix.hash), Some(State::Warm(until)) if *until > now) => {
                    State::Warming(id)
                }
                // A read refreshes the entry.
                _ => State::Warm(now + ttl(prefix)),
            };
            self.prefixes.insert(prefix.hash, state);
        }
        decision
    }

    /// The warmer `id`'s response has begun: its prefixes are readable from `now`. `prefixes`
    /// are the warmer's own (for their TTLs).
    pub fn began(&mut self, id: u64, prefixes: &[CachePrefix], now: Instant) {
        for prefix in prefixes {
            if self.prefixes.get(&prefix.hash) == Some(&State::Warming(id)) {
                self.prefixes
                    .insert(prefix.hash, State::Warm(now + ttl(prefix)));
            }
        }
    }

    /// The warmer `id` ended without a response (it failed, or the run stopped): its prefixes
    /// are cold again, and the next job of the group warms them.
    pub fn failed(&mut self, id: u64) {
        self.prefixes
            .retain(|_, state| *state != State::Warming(id));
    }

    /// Whether any prefix is being warmed.
    #[cfg(test)]
    fn warming(&self) -> bool {
        self.prefixes
            .values()
            .any(|s| matches!(s, State::Warming(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(hash: u64, one_hour: bool) -> CachePrefix {
        CachePrefix {
            hash,
            tokens: 2000,
            one_hour,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_job_of_a_group_warms_it_alone_and_the_rest_wait_until_it_begins() {
        let mut warmup = Warmup::default();
        let system = [prefix(1, false)];
        let now = Instant::now();
        let Decision::Warm(id) = warmup.decide(&system, now) else {
            panic!("the first job warms");
        };
        assert_eq!(warmup.decide(&system, now), Decision::Wait);
        // Other groups and jobs without a prefix are not held.
        assert!(matches!(
            warmup.decide(&[prefix(2, false)], now),
            Decision::Warm(_)
        ));
        assert_eq!(warmup.decide(&[], now), Decision::Go);
        warmup.began(id, &system, now);
        assert_eq!(warmup.decide(&system, now), Decision::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_system_prompt_is_warmed_before_each_document_group() {
        let mut warmup = Warmup::default();
        let now = Instant::now();
        let doc_a = [prefix(1, false), prefix(10, false)];
        let doc_b = [prefix(1, false), prefix(20, false)];
        let Decision::Warm(first) = warmup.decide(&doc_a, now) else {
            panic!("the first job warms the system prompt and its document");
        };
        // The second document waits for the shared system prompt, not only its own.
        assert_eq!(warmup.decide(&doc_b, now), Decision::Wait);
        warmup.began(first, &doc_a, now);
        assert!(matches!(warmup.decide(&doc_b, now), Decision::Warm(_)));
        assert_eq!(warmup.decide(&doc_a, now), Decision::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_prefix_is_warmed_again_and_a_read_keeps_it_alive() {
        let mut warmup = Warmup::default();
        let short = [prefix(1, false)];
        let long = [prefix(2, true)];
        let start = Instant::now();
        for group in [&short, &long] {
            let Decision::Warm(id) = warmup.decide(group, start) else {
                panic!()
            };
            warmup.began(id, group, start);
        }
        // A read four minutes in keeps the 5-minute entry for five more.
        let later = start + Duration::from_secs(4 * 60);
        assert_eq!(warmup.decide(&short, later), Decision::Go);
        assert_eq!(
            warmup.decide(&short, later + Duration::from_secs(4 * 60)),
            Decision::Go
        );
        // Unused for more than five minutes, it is cold: the next job warms it again.
        let idle = later + Duration::from_secs(10 * 60);
        assert!(matches!(warmup.decide(&short, idle), Decision::Warm(_)));
        // The 1-hour entry is still warm.
        assert_eq!(warmup.decide(&long, idle), Decision::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_warmer_that_fails_hands_the_group_to_the_next_job() {
        let mut warmup = Warmup::default();
        let system = [prefix(1, false)];
        let now = Instant::now();
        let Decision::Warm(id) = warmup.decide(&system, now) else {
            panic!()
        };
        assert!(warmup.warming());
        warmup.failed(id);
        assert!(!warmup.warming());
        assert!(matches!(warmup.decide(&system, now), Decision::Warm(_)));
    }
}
