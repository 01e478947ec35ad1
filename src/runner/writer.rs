//! The single writer: it alone commits what the workers learn, in short batched transactions.
//! A job counts as done only once the transaction holding its result has committed.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::client::AttemptError;
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
        /// The budget reservation this job held, released once its outcome is committed.
        reserved_pico_usd: u64,
    },
    /// Jobs recorded as failed that go back to pending: (job, attempts).
    Revert(Vec<(i64, i64)>),
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

/// Commits events until every sender is gone.
pub async fn run(
    store: Store,
    progress: Progress,
    mut events: mpsc::Receiver<Event>,
) -> anyhow::Result<()> {
    let mut buffer = Vec::with_capacity(MAX_BATCH_EVENTS);
    let counters = &progress.counters;
    while events.recv_many(&mut buffer, MAX_BATCH_EVENTS).await > 0 {
        let mut batch = WriteBatch::default();
        let mut succeeded = 0;
        let mut failed: i64 = 0;
        let mut spend = 0;
        let mut released = 0;
        for event in buffer.drain(..) {
            match event {
                Event::Attempt(attempt) => batch.attempts.push(attempt),
                Event::Finished {
                    job,
                    attempts,
                    outcome,
                    reserved_pico_usd,
                } => {
                    released += reserved_pico_usd;
                    let update = match outcome {
                        Outcome::Succeeded(result) => {
                            succeeded += 1;
                            spend += result.cost_pico_usd.unwrap_or(0);
                            batch.results.push(*result);
                            (JobState::Succeeded, None)
                        }
                        Outcome::Failed {
                            error,
                            attempts_this_session,
                            elapsed,
                        } => {
                            failed += 1;
                            let message = failure_message(&error, attempts_this_session, elapsed);
                            (JobState::Failed, Some(message))
                        }
                        Outcome::Unfinished => (JobState::Pending, None),
                    };
                    batch.updates.push(JobUpdate {
                        job,
                        state: update.0,
                        attempts,
                        error: update.1,
                    });
                }
                Event::Revert(jobs) => {
                    // A job updated twice in one statement would be ambiguous: the revert
                    // replaces any failure of the same batch.
                    batch
                        .updates
                        .retain(|update| !jobs.iter().any(|(job, _)| *job == update.job));
                    for (job, attempts) in jobs {
                        failed -= 1;
                        batch.updates.push(JobUpdate {
                            job,
                            state: JobState::Pending,
                            attempts,
                            error: None,
                        });
                    }
                }
            }
        }
        store.write(&batch).await?;
        Counters::add(&counters.succeeded, succeeded);
        Counters::add(&counters.spend_pico_usd, spend);
        // Released only now: until the commit, the job's spend is not in the spend counter.
        Counters::sub(&counters.reserved_pico_usd, released);
        let failed_total = Counters::get(&counters.failed).saturating_add_signed(failed);
        counters
            .failed
            .store(failed_total, std::sync::atomic::Ordering::Relaxed);
        progress.bar.set_position(
            progress.initial_done + Counters::get(&counters.succeeded) + failed_total,
        );
    }
    Ok(())
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
