//! Deciding that a run cannot succeed. A spend-cap 429, or a gateway asking to wait longer than
//! `--max-retry-after`, stops it at once; the same 401, 403 or
//! 404, or a gateway that cannot be reached, on [`HALT_STREAK`] jobs in a row stops it too,
//! since the key, the gateway or the model is wrong rather than those jobs. Any other 4xx that
//! is not worth retrying stops it only when the same one (status and error type) answers the
//! first [`HALT_STREAK`] jobs of the session, before anything else: a gateway that answers a
//! wrong key with a 400 (LiteLLM's `no_db_connection`) refuses every job, while a 400 after
//! answers is about its own job. Either way the jobs that hit it go back to pending, so a
//! `resume` after the fix sends them, and nothing is recorded as a million failures. The
//! writer alone owns a [`Halt`], and observes outcomes in the order it commits them.

use tokio_util::sync::CancellationToken;

use crate::client::{AttemptError, SPEND_LIMIT_CODE};
use crate::send::progress::Progress;

/// The same final 401, 403 or 404, or connection failure, on this many jobs in a row stops
/// the run; so does the same other 4xx on the session's first this many jobs.
pub const HALT_STREAK: usize = 3;

/// A final error that says something about the run rather than the job: (status, type), with
/// status 0 for a gateway that could not be reached.
type ErrorClass = (u16, String);

/// What becomes of a job whose final error was observed.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An ordinary failure of this job.
    Fail,
    /// The run is stopping because of this error: the job stays pending, and so do the
    /// earlier jobs of the streak, which were recorded as failed and must be put back.
    Pending { revert: Vec<(i64, i64)> },
}

/// Streak tracking, owned by the writer: it sees every outcome in order, so the jobs of a
/// streak it puts back to pending are exactly those it recorded as failed.
pub struct Halt {
    stop: CancellationToken,
    progress: Progress,
    streak: Vec<(i64, i64)>,
    streak_class: Option<ErrorClass>,
    halted_on: Option<ErrorClass>,
    reason: Option<String>,
    /// No outcome but the current streak has been seen: a streak of any 4xx may still stop
    /// the run.
    opening: bool,
}

/// Whether an error may stop the run (and so must go through [`Halt::observe`]).
pub fn is_run_level(error: &AttemptError) -> bool {
    error.is_spend_limit()
        || matches!(error, AttemptError::WaitTooLong { .. })
        || matches!(error, AttemptError::Connection(_))
        || matches!(error, AttemptError::Http { status, .. }
            if (400..500).contains(status) && !error.is_retryable())
}

/// Whether a status stops the run from any streak, not only from the opening one.
fn halts_anywhere(status: u16) -> bool {
    matches!(status, 0 | 401 | 403 | 404)
}

impl Halt {
    pub fn new(stop: CancellationToken, progress: Progress) -> Self {
        Self {
            stop,
            progress,
            streak: Vec::new(),
            streak_class: None,
            halted_on: None,
            reason: None,
            opening: true,
        }
    }

    /// Any other outcome breaks a streak, and ends the session's opening.
    pub fn reset(&mut self) {
        self.streak.clear();
        self.streak_class = None;
        self.opening = false;
    }

    /// Observes a job's final, run-level error.
    pub fn observe(&mut self, job: i64, attempts: i64, error: &AttemptError) -> Verdict {
        if error.is_spend_limit() {
            self.stop_with(format!(
                "the gateway says the spend limit is reached ({SPEND_LIMIT_CODE}); no request can \
                 succeed until the limit is raised or the month turns"
            ));
            return Verdict::Pending { revert: Vec::new() };
        }
        if let AttemptError::WaitTooLong { .. } = error {
            // The gateway's own state, not the job's: every request would be told the same.
            self.stop_with(error.to_string());
            return Verdict::Pending { revert: Vec::new() };
        }
        let status = match error {
            AttemptError::Connection(_) => 0,
            _ => match error.http_status() {
                Some(status) => status,
                None => {
                    self.reset();
                    return Verdict::Fail;
                }
            },
        };
        let class = (status, error.error_type());
        if self.halted_on.as_ref() == Some(&class) {
            return Verdict::Pending { revert: Vec::new() };
        }
        if self.streak_class.as_ref() != Some(&class) {
            if !self.streak.is_empty() {
                // Another error broke the streak the session opened with.
                self.opening = false;
            }
            self.streak.clear();
            self.streak_class = Some(class.clone());
        }
        if !halts_anywhere(status) && !self.opening {
            self.reset();
            return Verdict::Fail;
        }
        self.streak.push((job, attempts));
        if self.streak.len() < HALT_STREAK {
            return Verdict::Fail;
        }
        let mut revert = std::mem::take(&mut self.streak);
        revert.pop();
        let reason = match status {
            0 => format!(
                "the gateway could not be reached for {HALT_STREAK} jobs in a row ({}); check \
                 the base URL and the network",
                error.message()
            ),
            401 | 403 | 404 => {
                let hint = match status {
                    401 => "check the API key and the gateway's auth style (--auth)",
                    403 => "the key lacks access to this model or feature",
                    _ => "check the base URL, the messages path and the model name",
                };
                format!(
                    "the gateway answered {status} {} to {HALT_STREAK} jobs in a row ({}); {hint}",
                    class.1,
                    error.message()
                )
            }
            _ => format!(
                "the gateway answered {status} {} to the first {HALT_STREAK} jobs ({}): it \
                 refuses every request rather than these jobs; check the API key, the gateway's \
                 auth style (--auth) and what its message says",
                class.1,
                error.message()
            ),
        };
        self.stop_with(reason);
        self.halted_on = Some(class);
        Verdict::Pending { revert }
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    fn stop_with(&mut self, reason: String) {
        if self.reason.is_none() {
            self.progress.println(&format!("stopping: {reason}"));
            self.reason = Some(reason);
        }
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, kind: &str) -> AttemptError {
        AttemptError::Http {
            status,
            error_type: Some(kind.to_owned()),
            message: "no".to_owned(),
            error_code: None,
            body: None,
            retry_after: None,
            should_retry: None,
            request_id: None,
        }
    }

    fn halt() -> Halt {
        let budget = std::sync::Arc::new(crate::send::budget::Budget::new(None, 0));
        Halt::new(CancellationToken::new(), Progress::new(0, 0, false, budget))
    }

    #[test]
    fn three_in_a_row_stop_the_run_and_revert_the_streak() {
        let mut halt = halt();
        let error = http(401, "authentication_error");
        assert_eq!(halt.observe(1, 1, &error), Verdict::Fail);
        assert_eq!(halt.observe(2, 1, &error), Verdict::Fail);
        assert_eq!(
            halt.observe(3, 1, &error),
            Verdict::Pending {
                revert: vec![(1, 1), (2, 1)]
            }
        );
        assert!(halt.stop.is_cancelled());
        assert!(
            halt.reason()
                .unwrap()
                .starts_with("the gateway answered 401 authentication_error to 3 jobs in a row")
        );
        // Jobs still in flight that hit the same error stay pending too.
        assert_eq!(
            halt.observe(4, 1, &error),
            Verdict::Pending { revert: vec![] }
        );
    }

    #[test]
    fn a_success_or_another_error_breaks_the_streak() {
        let mut halt = halt();
        let not_found = http(404, "not_found_error");
        halt.observe(1, 1, &not_found);
        halt.observe(2, 1, &not_found);
        halt.reset();
        assert_eq!(halt.observe(3, 1, &not_found), Verdict::Fail);
        halt.observe(4, 1, &http(403, "permission_error"));
        assert_eq!(halt.observe(5, 1, &not_found), Verdict::Fail);
        assert!(!halt.stop.is_cancelled());
    }

    #[test]
    fn the_same_other_4xx_stops_the_run_only_on_the_first_jobs() {
        let no_db = http(400, "no_db_connection");
        assert!(is_run_level(&no_db));
        assert!(!is_run_level(&http(429, "rate_limit_error")));
        let mut halt = halt();
        assert_eq!(halt.observe(1, 1, &no_db), Verdict::Fail);
        assert_eq!(halt.observe(2, 1, &no_db), Verdict::Fail);
        assert_eq!(
            halt.observe(3, 1, &no_db),
            Verdict::Pending {
                revert: vec![(1, 1), (2, 1)]
            }
        );
        assert!(
            halt.reason()
                .unwrap()
                .starts_with("the gateway answered 400 no_db_connection to the first 3 jobs"),
            "{:?}",
            halt.reason()
        );

        // After an answer, a 400 is about its own job.
        let mut halt = self::halt();
        halt.reset();
        let invalid = http(400, "invalid_request_error");
        for job in 1..=5 {
            assert_eq!(halt.observe(job, 1, &invalid), Verdict::Fail);
        }
        assert!(!halt.stop.is_cancelled());
        // ... and so after another error first.
        let mut halt = self::halt();
        halt.observe(1, 1, &http(413, "request_too_large"));
        for job in 2..=5 {
            assert_eq!(halt.observe(job, 1, &invalid), Verdict::Fail);
        }
        assert!(!halt.stop.is_cancelled());
    }
}
