//! The single writer: it alone commits what requests learn, in short batched transactions,
//! and it alone owns the run's state, the decision to halt it included. A job counts as done
//! only once the transaction holding its result has committed, and a reservation on the
//! budget is released only then. A write that fails (a full disk) stops sending at once:
//! every answer bought after it would be lost, and bought again by `resume`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::halt::{self, Halt, Verdict};
use crate::client::AttemptError;
use crate::send::budget::Budget;
use crate::send::progress::{Counters, Progress};
use crate::store::{
    AttemptRecord, GradeRecord, JobState, JobUpdate, ResultRecord, Store, WriteBatch,
};

/// Events from requests to the writer.
#[derive(Debug)]
pub enum Event {
    Attempt(AttemptRecord),
    /// A job's outcome.
    Finished {
        job: i64,
        /// Attempts made on the job so far, over every session.
        attempts: i64,
        outcome: Outcome,
        /// The budget reservation this job held, released once its outcome is committed.
        reserved_pico_usd: u64,
        /// For a failure that may halt the run: told once the writer has decided, so that the
        /// job's worker starts nothing new before a halt has taken effect.
        decided: Option<oneshot::Sender<()>>,
    },
    /// A judge's verdict, or why it has none (`passed` left `None`, the reason said).
    Grade {
        grade: GradeRecord,
        reserved_pico_usd: u64,
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

/// How the writer ended.
#[derive(Debug, Default)]
pub struct Written {
    /// Why the writer halted the run, when it did.
    pub halt: Option<String>,
    /// Outcomes dropped because their jobs' leases had passed to another worker.
    pub lost: u64,
}

/// Commits events until every sender is gone. A final error that says the run cannot succeed
/// (the spend cap, or the same 401/403/404 or unreachable gateway on several jobs in a row)
/// halts the run here: the stop token is cancelled, and the jobs of the streak go back to
/// pending in the same place that recorded them. A failed commit cancels `stop` before the
/// writer ends with its error, so that no request starts after it.
pub async fn run(
    stop: CancellationToken,
    store: Store,
    progress: Progress,
    budget: Arc<Budget>,
    mut halt: Halt,
    mut events: mpsc::Receiver<Event>,
    claims: Option<Arc<super::Claims>>,
) -> anyhow::Result<Written> {
    let mut lost: u64 = 0;
    let mut buffer = Vec::with_capacity(MAX_BATCH_EVENTS);
    let counters = &progress.counters;
    while events.recv_many(&mut buffer, MAX_BATCH_EVENTS).await > 0 {
        let mut batch = WriteBatch::default();
        let mut succeeded = 0;
        let mut failed: i64 = 0;
        // (held, cost) of every request whose outcome this batch commits.
        let mut settled = Vec::new();
        for event in buffer.drain(..) {
            match event {
                Event::Attempt(attempt) => batch.attempts.push(attempt),
                Event::Grade {
                    grade,
                    reserved_pico_usd,
                } => {
                    let cost = grade
                        .judge_cost_pico_usd
                        .and_then(|c| u64::try_from(c).ok())
                        .unwrap_or(0);
                    settled.push((reserved_pico_usd, cost));
                    batch.grades.push(grade);
                }
                Event::Finished {
                    job,
                    attempts,
                    outcome,
                    reserved_pico_usd,
                    decided,
                } => {
                    // A worker records only the outcomes of jobs still in its hand; the copy
                    // of a job it claimed again after its lease ran out answers once.
                    let lease = match &claims {
                        Some(claims) => match claims.take(job) {
                            Some(token) => Some(token),
                            None => {
                                let cost = match &outcome {
                                    Outcome::Succeeded(result) => result.cost_pico_usd,
                                    _ => None,
                                };
                                settled.push((reserved_pico_usd, cost.unwrap_or(0)));
                                lost += 1;
                                if let Some(decided) = decided {
                                    let _ = decided.send(());
                                }
                                continue;
                            }
                        },
                        None => None,
                    };
                    let (state, error) = match outcome {
                        Outcome::Succeeded(result) => {
                            halt.reset();
                            succeeded += 1;
                            settled.push((reserved_pico_usd, result.cost_pico_usd.unwrap_or(0)));
                            batch.results.push(*result);
                            (JobState::Succeeded, None)
                        }
                        Outcome::Failed {
                            error,
                            attempts_this_session,
                            elapsed,
                        } => {
                            settled.push((reserved_pico_usd, 0));
                            let verdict = if halt::is_run_level(&error) {
                                halt.observe(job, attempts, &error)
                            } else {
                                halt.reset();
                                Verdict::Fail
                            };
                            match verdict {
                                Verdict::Fail => {
                                    failed += 1;
                                    let message =
                                        failure_message(&error, attempts_this_session, elapsed);
                                    (JobState::Failed, Some(message))
                                }
                                Verdict::Pending { revert } => {
                                    // The earlier jobs of the streak were recorded as failed,
                                    // in this batch or an earlier one: they go back to pending,
                                    // under the lease their failure was to be recorded with (a
                                    // job recorded failed before is in no one's hand).
                                    let mut leases = Vec::new();
                                    batch.updates.retain(|u| {
                                        let reverted = revert.iter().any(|(j, _)| *j == u.job);
                                        if reverted {
                                            leases.push((u.job, u.lease));
                                        }
                                        !reverted
                                    });
                                    for (job, attempts) in revert {
                                        failed -= 1;
                                        let lease = leases
                                            .iter()
                                            .find(|(j, _)| *j == job)
                                            .and_then(|(_, lease)| *lease);
                                        batch.updates.push(JobUpdate {
                                            job,
                                            state: JobState::Pending,
                                            attempts,
                                            error: None,
                                            lease,
                                        });
                                    }
                                    (JobState::Pending, None)
                                }
                            }
                        }
                        Outcome::Unfinished => {
                            settled.push((reserved_pico_usd, 0));
                            (JobState::Pending, None)
                        }
                    };
                    batch.updates.push(JobUpdate {
                        job,
                        state,
                        attempts,
                        error,
                        lease,
                    });
                    if let Some(decided) = decided {
                        let _ = decided.send(());
                    }
                }
            }
        }
        batch.worker = claims.as_ref().map(|claims| claims.worker);
        let dropped = match store.write(&batch).await {
            Ok(dropped) => dropped,
            Err(e) => {
                stop.cancel();
                return Err(e).context(
                    "failed to record answers in the store, so sending stopped; what was not \
                     recorded stays pending for `msgbatch resume`",
                );
            }
        };
        lost += u64::try_from(dropped.len()).unwrap_or(u64::MAX);
        // Settled only now: until the commit, a request's cost is not spent and its
        // reservation still holds.
        for (held, cost) in settled {
            budget.settle(held, cost);
        }
        Counters::add(&counters.succeeded, succeeded);
        let failed_total = Counters::get(&counters.failed).saturating_add_signed(failed);
        counters
            .failed
            .store(failed_total, std::sync::atomic::Ordering::Relaxed);
        progress.bar.set_position(
            progress.initial_done + Counters::get(&counters.succeeded) + failed_total,
        );
    }
    Ok(Written {
        halt: halt.reason().map(str::to_owned),
        lost,
    })
}

/// What a failed request says in the database: the last error, and the attempts spent when
/// they were more than one.
pub fn failure_message(error: &AttemptError, attempts: u32, elapsed: Duration) -> String {
    if attempts > 1 {
        format!(
            "request failed after {attempts} attempts in {:.1}s: {error}",
            elapsed.as_secs_f64()
        )
    } else {
        error.to_string()
    }
}
