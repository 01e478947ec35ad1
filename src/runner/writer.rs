//! The single writer: it alone commits what the workers learn, in short batched transactions,
//! and it alone decides when a run cannot succeed and must stop.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{AttemptError, SPEND_LIMIT_CODE};
use crate::progress::{Counters, Progress};
use crate::store::{AttemptRecord, JobState, JobUpdate, ResultRecord, Store, WriteBatch};

/// Events from workers to the writer.
#[derive(Debug)]
pub enum Event {
    Attempt(AttemptRecord),
    Finished {
        job: i64,
        /// Attempts made on the job so far, over every session.
        attempts: i64,
        outcome: Outcome,
    },
}

#[derive(Debug)]
pub enum Outcome {
    Succeeded(Box<ResultRecord>),
    Failed {
        error: AttemptError,
        attempts_this_session: u32,
        elapsed: Duration,
    },
    /// Stopped or abandoned before an answer: the job stays pending.
    Unfinished,
}

/// Most events folded into one transaction.
const MAX_BATCH_EVENTS: usize = 4096;
/// The same final 401, 403 or 404 on this many jobs in a row stops the run.
pub const HALT_STREAK: usize = 3;

/// Final errors that say something about the run rather than the job: (status, error type).
type ErrorClass = (u16, String);

pub struct Writer {
    store: Store,
    progress: Progress,
    /// Cancelled by the writer when the run cannot succeed.
    stop: CancellationToken,
    /// Consecutive jobs that failed with the same run-level error.
    streak: Vec<(i64, i64)>,
    streak_class: Option<ErrorClass>,
    /// The error that stopped the run; later jobs failing with it stay pending.
    halted_on: Option<ErrorClass>,
    halt: Option<String>,
}

impl Writer {
    pub fn new(store: Store, progress: Progress, stop: CancellationToken) -> Self {
        Self {
            store,
            progress,
            stop,
            streak: Vec::new(),
            streak_class: None,
            halted_on: None,
            halt: None,
        }
    }

    /// Commits events until every sender is gone; returns why the run was halted, if it was.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
    ) -> anyhow::Result<Option<String>> {
        let mut buffer = Vec::with_capacity(MAX_BATCH_EVENTS);
        while events.recv_many(&mut buffer, MAX_BATCH_EVENTS).await > 0 {
            let mut batch = WriteBatch::default();
            let mut succeeded = 0;
            let mut failed: i64 = 0;
            let mut spend = 0;
            for event in buffer.drain(..) {
                match event {
                    Event::Attempt(attempt) => batch.attempts.push(attempt),
                    Event::Finished {
                        job,
                        attempts,
                        outcome,
                    } => match outcome {
                        Outcome::Succeeded(result) => {
                            self.streak.clear();
                            self.streak_class = None;
                            succeeded += 1;
                            spend += result.cost_pico_usd.unwrap_or(0);
                            batch.updates.push(JobUpdate {
                                job,
                                state: JobState::Succeeded,
                                attempts,
                                error: None,
                            });
                            batch.results.push(*result);
                        }
                        Outcome::Failed {
                            error,
                            attempts_this_session,
                            elapsed,
                        } => {
                            let message = failure_message(&error, attempts_this_session, elapsed);
                            failed +=
                                self.absorb_failure(job, attempts, &error, message, &mut batch);
                        }
                        Outcome::Unfinished => batch.updates.push(pending(job, attempts)),
                    },
                }
            }
            self.store.write(&batch).await?;
            let counters = &self.progress.counters;
            Counters::add(&counters.succeeded, succeeded);
            Counters::add(&counters.spend_pico_usd, spend);
            let failed_total = Counters::get(&counters.failed).saturating_add_signed(failed);
            counters
                .failed
                .store(failed_total, std::sync::atomic::Ordering::Relaxed);
            self.progress.bar.set_position(
                self.progress.initial_done + Counters::get(&counters.succeeded) + failed_total,
            );
        }
        Ok(self.halt)
    }

    /// Records a final failure; returns the change in the count of failed jobs (negative when
    /// a halt puts earlier failures back to pending).
    fn absorb_failure(
        &mut self,
        job: i64,
        attempts: i64,
        error: &AttemptError,
        message: String,
        batch: &mut WriteBatch,
    ) -> i64 {
        if error.is_spend_limit() {
            self.halt_with(format!(
                "the gateway says the spend limit is reached ({SPEND_LIMIT_CODE}); no request can \
                 succeed until the limit is raised or the month turns"
            ));
            batch.updates.push(pending(job, attempts));
            return 0;
        }
        let class = error
            .http_status()
            .filter(|status| matches!(status, 401 | 403 | 404))
            .map(|status| (status, error.error_type()));
        let Some(class) = class else {
            self.streak.clear();
            self.streak_class = None;
            batch.updates.push(failed(job, attempts, message));
            return 1;
        };
        if self.halted_on.as_ref() == Some(&class) {
            batch.updates.push(pending(job, attempts));
            return 0;
        }
        if self.streak_class.as_ref() != Some(&class) {
            self.streak.clear();
            self.streak_class = Some(class.clone());
        }
        self.streak.push((job, attempts));
        if self.streak.len() < HALT_STREAK {
            batch.updates.push(failed(job, attempts, message));
            return 1;
        }
        // The error is the run's, not these jobs': put them all back to be sent after a fix.
        let streak = std::mem::take(&mut self.streak);
        batch
            .updates
            .retain(|update| !streak.iter().any(|(j, _)| *j == update.job));
        for (job, attempts) in &streak {
            batch.updates.push(pending(*job, *attempts));
        }
        let (status, kind) = &class;
        let hint = match status {
            401 => "check the API key and the gateway's auth style (--auth)",
            403 => "the key lacks access to this model or feature",
            _ => "check the base URL, the messages path and the model name",
        };
        self.halt_with(format!(
            "the gateway answered {status} {kind} to {HALT_STREAK} jobs in a row ({}); {hint}",
            error.message()
        ));
        self.halted_on = Some(class);
        -i64::try_from(streak.len() - 1).unwrap_or(0)
    }

    fn halt_with(&mut self, reason: String) {
        if self.halt.is_none() {
            self.progress.println(&format!("stopping: {reason}"));
            self.halt = Some(reason);
        }
        self.stop.cancel();
    }
}

fn pending(job: i64, attempts: i64) -> JobUpdate {
    JobUpdate {
        job,
        state: JobState::Pending,
        attempts,
        error: None,
    }
}

fn failed(job: i64, attempts: i64, message: String) -> JobUpdate {
    JobUpdate {
        job,
        state: JobState::Failed,
        attempts,
        error: Some(message),
    }
}

/// What a failed job says in the database: the last error, and the attempts spent when they
/// were more than one.
fn failure_message(error: &AttemptError, attempts: u32, elapsed: Duration) -> String {
    if attempts > 1 {
        format!(
            "request failed after {attempts} attempts in {:.1}s: {error}",
            elapsed.as_secs_f64()
        )
    } else {
        error.to_string()
    }
}
