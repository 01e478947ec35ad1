//! `--deadline TIME`: when a run's answers must be in. Jobs go through batches for the price;
//! the batch session looks at the time left at every poll, and once it is no more than what
//! sending the rest directly would take ([`Pace::needed`]), the run switches: the open
//! batches are canceled, what they finished is recorded, and the rest goes directly.
//!
//! The switch is written with the run's settings ([`Deadline::switched_at_ms`]) before any
//! batch is canceled, so that a session that dies in between resumes on the direct way:
//! its canceled batches are collected (their requests that were canceled go back to pending,
//! unbilled), and nothing is packed into a batch again.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A run's deadline, as its settings keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    /// When the answers must be in, in Unix milliseconds.
    pub at_ms: i64,
    /// When the run gave up on batches to meet it, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at_ms: Option<i64>,
}

/// `--deadline` as typed: a local clock time or a duration from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineArg {
    /// The next `hour:minute` to come, local time.
    Clock { hour: u32, minute: u32 },
    /// This long from now.
    In(Duration),
}

/// The longest deadline taken: beyond it a run has no use for one (a batch ends within 24
/// hours), and its arithmetic stays far from any overflow.
const MAX_AHEAD: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reads `--deadline`: `HH:MM` (24-hour, local) or a duration (`8h`, `90m`, `1h30m`).
pub fn parse_arg(text: &str) -> Result<DeadlineArg, String> {
    let text = text.trim();
    if let Some((h, m)) = text.split_once(':') {
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 2 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u32>().ok())
                .flatten()
        };
        return match (number(h), number(m)) {
            (Some(hour), Some(minute)) if hour < 24 && minute < 60 && m.len() == 2 => {
                Ok(DeadlineArg::Clock { hour, minute })
            }
            _ => Err(format!(
                "`{text}` is not a clock time: give HH:MM on a 24-hour clock (07:00) or a duration (8h, 90m)"
            )),
        };
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            Err("a deadline must be later than now: give a duration longer than zero".to_owned())
        }
        Ok(d) if d > MAX_AHEAD => Err(format!(
            "`{text}` is more than 30 days away; a batch ends within 24 hours"
        )),
        Ok(d) => Ok(DeadlineArg::In(d)),
        Err(e) => Err(format!(
            "`{text}` is neither a clock time (07:00) nor a duration (8h, 90m): {e}"
        )),
    }
}

impl DeadlineArg {
    /// The deadline this gives when typed at `now`, in Unix milliseconds. Clock times are in
    /// the system's zone (`$TZ`, else /etc/localtime; UTC without either).
    pub fn resolve(self, now: SystemTime) -> i64 {
        self.resolve_in(&jiff::tz::TimeZone::system(), now)
    }

    /// [`Self::resolve`] with clock times in `zone`. A clock time that the day's change to
    /// summer time skips (02:30 when 02:00 becomes 03:00) is taken as long after the change
    /// as it would have been after 02:00 (03:30); one that the change back gives twice, as
    /// the first.
    fn resolve_in(self, zone: &jiff::tz::TimeZone, now: SystemTime) -> i64 {
        let now_ms = unix_ms(now);
        match self {
            Self::In(d) => now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            // Out of jiff's range (years beyond ±9999) or not a clock time: already due.
            Self::Clock { hour, minute } => next_clock(zone, now, hour, minute).unwrap_or(now_ms),
        }
    }
}

/// The first `hour:minute` in `zone` later than `now`, in Unix milliseconds.
fn next_clock(zone: &jiff::tz::TimeZone, now: SystemTime, hour: u32, minute: u32) -> Option<i64> {
    let time =
        jiff::civil::Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0).ok()?;
    let now = jiff::Timestamp::try_from(now).ok()?;
    let at = |day: jiff::civil::Date| {
        jiff::civil::DateTime::from_parts(day, time)
            .to_zoned_datetime(zone.clone())
            .map(|at| at.timestamp())
            .ok()
    };
    let today = now.to_zoned_datetime(zone.clone()).date();
    let mut target = at(today)?;
    if target <= now {
        target = at(today.tomorrow().ok()?)?;
    }
    Some(target.as_millisecond())
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What one job sent directly is taken to take when no direct answer of the run was seen:
/// long answers take tens of seconds, and an estimate that is too long only costs the
/// discount on a few more jobs, one too short costs the deadline.
pub const DEFAULT_LATENCY: Duration = Duration::from_secs(30);

/// The fixed part of the margin: canceling the open batches, reading what they finished,
/// and the first direct requests finding the gateway's pace.
pub const FIXED_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How the rest of a run would go if sent directly: the pace its limits and the gateway
/// allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// The fewest requests a minute any pool of the run is allowed (given, in the gateway's
    /// profile, or learnt from its answers), when one is known.
    pub rpm: Option<u64>,
    /// Requests in flight at once (`--concurrency`).
    pub concurrency: usize,
    /// The mean latency of the run's direct answers, when it had any.
    pub latency: Option<Duration>,
}

impl Pace {
    /// How long sending `jobs` directly would take, the margin included:
    ///
    /// ```text
    /// by_rate        = jobs × 60 s / rpm                      (0 when no rpm is known)
    /// by_concurrency = ⌈jobs / concurrency⌉ × latency         (latency seen, else 30 s)
    /// needed         = 1.5 × max(by_rate, by_concurrency) + 5 min
    /// ```
    ///
    /// Every job may have to go through the slowest pool, at its rate; the half again covers
    /// retries and waits for rate limits, and the five minutes the switch itself.
    pub fn needed(&self, jobs: u64) -> Duration {
        let by_rate = match self.rpm {
            Some(rpm) if rpm > 0 => Duration::from_secs(jobs.saturating_mul(60) / rpm),
            _ => Duration::ZERO,
        };
        let rounds = jobs.div_ceil(u64::try_from(self.concurrency.max(1)).unwrap_or(1));
        let latency = self.latency.unwrap_or(DEFAULT_LATENCY);
        let by_concurrency = latency.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX));
        let longest = by_rate.max(by_concurrency);
        (longest.saturating_add(longest / 2)).saturating_add(FIXED_MARGIN)
    }

    /// Whether, at `now_ms`, the rest (`jobs`) must go directly to be in by `at_ms`.
    pub fn due(&self, now_ms: i64, at_ms: i64, jobs: u64) -> bool {
        let needed = i64::try_from(self.needed(jobs).as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_add(needed) >= at_ms
    }
}

/// The pace of a run sent directly from here: the fewest requests a minute of its limits
/// (given on the command line, in the gateway's profile, or learnt by earlier sessions), its
/// concurrency, and the mean latency of its direct answers so far.
pub async fn pace(
    store: &crate::store::Store,
    run_id: i64,
    settings: &crate::settings::RunSettings,
) -> anyhow::Result<Pace> {
    let rpm = [settings.send.rpm, settings.gateway.limits.rpm]
        .into_iter()
        .flatten()
        .map(u64::from)
        .chain(settings.send.pool_limits.values().filter_map(|p| p.rpm))
        .min();
    let latency = store
        .direct_latency_ms(run_id)
        .await?
        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    Ok(Pace {
        rpm,
        concurrency: settings.send.concurrency,
        latency,
    })
}

/// A deadline in Unix milliseconds as the user reads it: UTC, to the second.
pub fn describe(at_ms: i64) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times_and_durations_are_read_and_bad_ones_refused() {
        assert_eq!(
            parse_arg("07:00"),
            Ok(DeadlineArg::Clock { hour: 7, minute: 0 })
        );
        assert_eq!(
            parse_arg("7:05"),
            Ok(DeadlineArg::Clock { hour: 7, minute: 5 })
        );
        assert_eq!(
            parse_arg("8h"),
            Ok(DeadlineArg::In(Duration::from_secs(8 * 3600)))
        );
        assert_eq!(
            parse_arg("90m"),
            Ok(DeadlineArg::In(Duration::from_secs(90 * 60)))
        );
        for bad in [
            "24:00", "07:60", "07:5", "7", "tomorrow", "0s", "", "-1h", "40d",
        ] {
            assert!(parse_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_clock_time_is_the_next_one_to_come() {
        // Whatever the machine's zone, the deadline is the next 07:00 of it.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 86_400 + 8 * 3600);
        let at = DeadlineArg::Clock { hour: 7, minute: 0 }.resolve(now);
        let ahead = at - unix_ms(now);
        assert!(ahead > 0 && ahead <= 86_400_000, "{ahead}");
        let local = jiff::Timestamp::from_millisecond(at)
            .unwrap()
            .to_zoned_datetime(jiff::tz::TimeZone::system());
        assert_eq!((local.hour(), local.minute(), local.second()), (7, 0, 0));
        let at = DeadlineArg::In(Duration::from_secs(60)).resolve(now);
        assert_eq!(at, unix_ms(now) + 60_000);
    }

    /// `zone`'s `local` (`YYYY-MM-DDTHH:MM`) as a `SystemTime`.
    fn local_time(zone: &jiff::tz::TimeZone, local: &str) -> SystemTime {
        let local: jiff::civil::DateTime = local.parse().unwrap();
        SystemTime::try_from(local.to_zoned_datetime(zone.clone()).unwrap().timestamp()).unwrap()
    }

    /// Unix milliseconds of a UTC time (`YYYY-MM-DDTHH:MM:SSZ`).
    fn utc_ms(utc: &str) -> i64 {
        utc.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    /// New York's rule, as the footer of its zone file gives it.
    fn new_york() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap()
    }

    #[test]
    fn a_clock_time_is_local_summer_or_winter_and_tomorrow_once_past() {
        let ny = new_york();
        let seven = DeadlineArg::Clock { hour: 7, minute: 0 };
        let at = |local: &str| seven.resolve_in(&ny, local_time(&ny, local));
        // Summer time, UTC−4; winter, UTC−5.
        assert_eq!(at("2026-07-01T06:00"), utc_ms("2026-07-01T11:00:00Z"));
        assert_eq!(at("2026-01-15T06:00"), utc_ms("2026-01-15T12:00:00Z"));
        // Past 07:00, or exactly at it: the next day's.
        assert_eq!(at("2026-07-01T08:00"), utc_ms("2026-07-02T11:00:00Z"));
        assert_eq!(at("2026-07-01T07:00"), utc_ms("2026-07-02T11:00:00Z"));
        // Typed the evening before the change to summer time (8 March 2026), 07:00 is in it.
        assert_eq!(at("2026-03-07T22:00"), utc_ms("2026-03-08T11:00:00Z"));
        // A fixed offset and UTC.
        let fixed = jiff::tz::TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(
            seven.resolve_in(&fixed, local_time(&fixed, "2026-07-01T06:59")),
            utc_ms("2026-07-01T05:00:00Z")
        );
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(
            seven.resolve_in(&utc, local_time(&utc, "2026-07-01T07:01")),
            utc_ms("2026-07-02T07:00:00Z")
        );
    }

    #[test]
    fn a_clock_time_the_change_to_summer_time_skips_is_as_long_after_it() {
        // 8 March 2026 in New York: 02:00 EST becomes 03:00 EDT, so 02:30 is not a time of
        // that day; it is taken as 03:30 EDT (07:30 UTC), half an hour past the change.
        let ny = new_york();
        let half_past_two = DeadlineArg::Clock {
            hour: 2,
            minute: 30,
        };
        let now = local_time(&ny, "2026-03-08T01:00");
        assert_eq!(
            half_past_two.resolve_in(&ny, now),
            utc_ms("2026-03-08T07:30:00Z")
        );
        // The change back (1 November 2026) gives 01:30 twice: the first (EDT) is taken.
        let half_past_one = DeadlineArg::Clock {
            hour: 1,
            minute: 30,
        };
        let now = local_time(&ny, "2026-11-01T00:00");
        assert_eq!(
            half_past_one.resolve_in(&ny, now),
            utc_ms("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn a_slim_zone_file_follows_its_footer_rule_past_its_last_transition() {
        // A "slim" TZif file (version 2) as Alpine and Fedora ship: one transition, in 2007,
        // and New York's rule in the footer for every time after it. A reader that stops at
        // the last transition keeps EST all year, an hour off in summer.
        let header = |types: u32, times: u32| {
            let mut h = b"TZif2".to_vec();
            h.extend([0; 15]);
            for count in [0_u32, 0, 0, times, types, 4] {
                h.extend(count.to_be_bytes());
            }
            h
        };
        let mut tzif = header(1, 0);
        tzif.extend((-18_000_i32).to_be_bytes());
        tzif.extend([0, 0]);
        tzif.extend(b"EST\0");
        tzif.extend(header(1, 1));
        // 2007-01-01T05:00:00Z, to EST.
        tzif.extend(1_167_627_600_i64.to_be_bytes());
        tzif.push(0);
        tzif.extend((-18_000_i32).to_be_bytes());
        tzif.extend([0, 0]);
        tzif.extend(b"EST\0");
        tzif.extend(b"\nEST5EDT,M3.2.0,M11.1.0\n");
        let slim = jiff::tz::TimeZone::tzif("America/New_York", &tzif).unwrap();
        let seven = DeadlineArg::Clock { hour: 7, minute: 0 };
        let now = local_time(&new_york(), "2026-07-01T06:00");
        assert_eq!(seven.resolve_in(&slim, now), utc_ms("2026-07-01T11:00:00Z"));
    }

    #[test]
    fn the_switch_comes_when_the_time_left_is_what_the_rest_needs() {
        let pace = Pace {
            rpm: Some(600),
            concurrency: 10,
            latency: Some(Duration::from_secs(2)),
        };
        // 6,000 jobs: 10 minutes at 600 rpm, 20 minutes at 10 × 2 s: 30 minutes and 5.
        assert_eq!(pace.needed(6000), Duration::from_secs(35 * 60));
        let at = 100 * 60_000;
        assert!(!pace.due(at - 36 * 60_000, at, 6000));
        assert!(pace.due(at - 35 * 60_000, at, 6000));
        assert!(pace.due(at + 1, at, 0), "a deadline passed is due");
        // Without a latency seen, 30 s a round; without a rate, the concurrency alone.
        let unknown = Pace {
            rpm: None,
            concurrency: 16,
            latency: None,
        };
        assert_eq!(unknown.needed(32), Duration::from_secs(90 + 300));
    }
}
