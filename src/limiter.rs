//! The shared pace of a run: a requests-per-minute limit (governor), and a pause that every
//! worker honours when the gateway says to back off. One worker's 429 slows them all, so the
//! gateway sees the whole run back off, not just the request that was refused.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use tokio::time::Instant;

/// Longest pause a gateway's hint may impose at once; a reset time further out than this is
/// more likely a clock problem than a real limit.
const MAX_PAUSE: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Limiter {
    rpm: Option<DefaultDirectRateLimiter>,
    /// Jitter added to each governor wait, so that queued workers do not wake together.
    jitter: Duration,
    /// No request starts before this instant.
    paused_until: Mutex<Option<Instant>>,
}

impl Limiter {
    pub fn new(rpm: Option<u32>) -> Self {
        let rpm = rpm.and_then(NonZeroU32::new);
        Self {
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
}
