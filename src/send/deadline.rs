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
    /// The deadline this gives when typed at `now`, in Unix milliseconds.
    pub fn resolve(self, now: SystemTime) -> i64 {
        let now_s = unix_s(now);
        let now_ms = unix_ms(now);
        match self {
            Self::In(d) => now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Self::Clock { hour, minute } => {
                let offset = |at_s: i64| i64::from(local::offset_s(at_s).unwrap_or(0));
                let local_now = now_s + offset(now_s);
                let day = local_now.div_euclid(86_400) * 86_400;
                let mut target = day + i64::from(hour) * 3600 + i64::from(minute) * 60;
                if target <= local_now {
                    target += 86_400;
                }
                // The offset at the target itself, which a change of summer time in between
                // makes another than now's.
                let guess = target - offset(now_s);
                (target - offset(guess)) * 1000
            }
        }
    }
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn unix_s(at: SystemTime) -> i64 {
    unix_ms(at) / 1000
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

/// The local time zone's offset from UTC, read from the zone file the system uses
/// (`$TZ` naming one under /usr/share/zoneinfo, else /etc/localtime). Without one, or with
/// one this cannot read, clock times are UTC.
mod local {
    use std::path::PathBuf;

    /// Zone files are a few kilobytes; anything larger is not one.
    const MAX_ZONE_FILE: u64 = 256 * 1024;

    /// The offset in seconds east of UTC at Unix time `at_s`.
    pub fn offset_s(at_s: i64) -> Option<i32> {
        let path = match std::env::var("TZ") {
            Ok(tz) if tz.is_empty() || tz == "UTC" || tz == "UTC0" || tz == ":UTC" => {
                return Some(0);
            }
            Ok(tz) => {
                let name = tz.trim_start_matches(':');
                if name.starts_with('/') {
                    PathBuf::from(name)
                } else if name.split('/').all(|p| !p.is_empty() && p != "..") {
                    PathBuf::from("/usr/share/zoneinfo").join(name)
                } else {
                    return None;
                }
            }
            Err(_) => PathBuf::from("/etc/localtime"),
        };
        let file = std::fs::File::open(path).ok()?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_ZONE_FILE), &mut bytes)
            .ok()?;
        tzif_offset(&bytes, at_s)
    }

    /// The offset a TZif file (RFC 8536) gives at `at_s`: that of the last transition at or
    /// before it, else of the first local time type. Past the last transition the last
    /// offset holds (the file's footer rule is not read).
    pub fn tzif_offset(bytes: &[u8], at_s: i64) -> Option<i32> {
        let header = |at: usize| -> Option<(u8, [usize; 6])> {
            let head = bytes.get(at..at + 44)?;
            if &head[..4] != b"TZif" {
                return None;
            }
            let mut counts = [0; 6];
            for (i, count) in counts.iter_mut().enumerate() {
                let b = &head[20 + 4 * i..24 + 4 * i];
                *count = usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()?;
            }
            Some((head[4], counts))
        };
        let (version, counts) = header(0)?;
        let size = |c: [usize; 6], time: usize| -> usize {
            let [isut, isstd, leap, times, types, chars] = c;
            times * time + times + types * 6 + chars + leap * (time + 4) + isstd + isut
        };
        let (start, counts, time) = if version >= b'2' {
            let second = 44 + size(counts, 4);
            (second + 44, header(second)?.1, 8)
        } else {
            (44, counts, 4)
        };
        let [_, _, _, times, types, _] = counts;
        if types == 0 {
            return None;
        }
        let data = bytes.get(start..start + size(counts, time))?;
        let transition = |i: usize| -> i64 {
            let b = &data[i * time..(i + 1) * time];
            if time == 8 {
                i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            } else {
                i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
        };
        let indices = &data[times * time..times * time + times];
        let ttinfo = &data[times * time + times..];
        let kind = (0..times)
            .take_while(|&i| transition(i) <= at_s)
            .last()
            .map_or(0, |i| usize::from(indices[i]));
        let info = ttinfo.get(kind * 6..kind * 6 + 4)?;
        Some(i32::from_be_bytes([info[0], info[1], info[2], info[3]]))
    }
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
        let offset = i64::from(local::offset_s(unix_s(now)).unwrap_or(0));
        let ahead = at / 1000 - unix_s(now);
        assert!(ahead > 0 && ahead <= 86_400, "{ahead}");
        assert_eq!((at / 1000 + offset).rem_euclid(86_400), 7 * 3600);
        let at = DeadlineArg::In(Duration::from_secs(60)).resolve(now);
        assert_eq!(at, unix_ms(now) + 60_000);
    }

    #[test]
    fn a_zone_file_gives_the_offset_of_its_last_transition() {
        // Version 1, two types (+0 and +3600), one transition at t = 1000 to the second.
        let mut tzif = b"TZif".to_vec();
        tzif.push(0);
        tzif.extend([0; 15]);
        for count in [0_u32, 0, 0, 1, 2, 4] {
            tzif.extend(count.to_be_bytes());
        }
        tzif.extend(1000_i32.to_be_bytes());
        tzif.push(1);
        tzif.extend(0_i32.to_be_bytes());
        tzif.extend([0, 0]);
        tzif.extend(3600_i32.to_be_bytes());
        tzif.extend([1, 0]);
        tzif.extend(b"UTC\0");
        assert_eq!(local::tzif_offset(&tzif, 999), Some(0));
        assert_eq!(local::tzif_offset(&tzif, 1000), Some(3600));
        assert_eq!(local::tzif_offset(&tzif, 1 << 40), Some(3600));
        assert_eq!(local::tzif_offset(b"TZif", 0), None);
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
