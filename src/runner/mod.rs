//! Runs the pending jobs of a run: a dispatcher bounded by `--concurrency`, workers that wait
//! on the shared [`Limiter`] and retry through `backon`, and the single [`writer::Writer`]
//! that commits their outcomes.
//!
//! ```text
//! store ─► dispatcher ─(semaphore)─► worker ─(limiter, client, retries)─► mpsc ─► writer ─► store
//! ```
//!
//! Shutdown has two stages. `stop` (first Ctrl-C, or the writer deciding the run cannot
//! succeed) starts no new job and no new retry while requests already on the wire finish.
//! `abort` (second Ctrl-C) abandons those too. Either way the writer commits what it has, and
//! every unfinished job stays `pending` for `resume`.

mod halt;
pub mod judge;
mod worker;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, RetryPolicy};
use crate::limiter::Limiter;
use crate::pricing::{PriceTable, format_usd};
use crate::progress::{Counters, Progress};
use crate::store::{PendingJob, RunCounts, Store};

/// The two shutdown stages.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Start nothing new; let requests on the wire finish.
    pub stop: CancellationToken,
    /// Abandon requests on the wire.
    pub abort: CancellationToken,
}

/// Everything a run needs to send its jobs.
pub struct Runner {
    pub store: Store,
    pub client: Client,
    pub limiter: Limiter,
    pub policy: RetryPolicy,
    pub prices: PriceTable,
    pub concurrency: usize,
    pub shutdown: Shutdown,
    pub show_progress: bool,
    /// The run's budget in pico-USD, counting what earlier sessions spent.
    pub budget_pico_usd: Option<u64>,
}

/// How a session of a run ended.
#[derive(Debug)]
pub struct Session {
    /// The writer stopped the run because it cannot succeed.
    pub halt: Option<String>,
    /// Stopped before a job would have passed the budget; says why.
    pub budget_stop: Option<String>,
    /// Stopped by the user.
    pub interrupted: bool,
    pub counts: RunCounts,
    /// Jobs finished in this session.
    pub finished: u64,
    pub elapsed: Duration,
}

/// Jobs read from the store per page.
const PAGE: i64 = 1024;

impl Runner {
    /// Sends every pending job of `run_id` and waits for their outcomes to be committed.
    pub async fn execute(self, run_id: i64) -> anyhow::Result<Session> {
        let started = Instant::now();
        let before = self.store.run_counts(run_id).await?;
        let total = u64::try_from(before.total - before.rejected).unwrap_or(0);
        let done_before = u64::try_from(before.succeeded + before.failed).unwrap_or(0);
        let progress = Progress::new(total, done_before, self.show_progress);
        // Room for a few writer batches; more would only hold memory while the writer commits.
        let (events, receiver) = mpsc::channel(2048);
        let writer = tokio::spawn(writer::run(self.store.clone(), progress.clone(), receiver));

        let shared = Arc::new(worker::Shared {
            client: self.client,
            limiter: self.limiter,
            policy: self.policy,
            prices: self.prices,
            shutdown: self.shutdown.clone(),
            counters: Arc::clone(&progress.counters),
            halt: tokio::sync::Mutex::new(halt::Halt::new(
                self.shutdown.stop.clone(),
                progress.clone(),
            )),
            events,
        });
        let budget = self.budget_pico_usd.map(|limit| Budget {
            limit,
            spent_before: u64::try_from(before.cost_pico_usd).unwrap_or(0),
        });
        let dispatched = dispatch(&self.store, run_id, &shared, self.concurrency, budget).await;
        let halt = shared.halt.lock().await.reason().map(str::to_owned);
        // Every sender must be gone for the writer to see the end of the stream.
        drop(shared);
        writer.await.context("the writer task failed")??;
        let budget_stop = dispatched?;
        progress.finish();
        let counts = self.store.run_counts(run_id).await?;
        let done_after = u64::try_from(counts.succeeded + counts.failed).unwrap_or(0);
        Ok(Session {
            interrupted: self.shutdown.stop.is_cancelled() && halt.is_none(),
            halt,
            budget_stop,
            counts,
            finished: done_after.saturating_sub(done_before),
            elapsed: started.elapsed(),
        })
    }
}

/// The budget of a session.
#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: u64,
    /// What earlier sessions of the run spent.
    spent_before: u64,
}

/// Starts a worker for each pending job, at most `concurrency` at once, until none is left,
/// the run is stopped, or the next job could pass the budget; then waits for the workers.
/// Returns why the budget stopped dispatching, if it did.
async fn dispatch(
    store: &Store,
    run_id: i64,
    shared: &Arc<worker::Shared>,
    concurrency: usize,
    budget: Option<Budget>,
) -> anyhow::Result<Option<String>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut workers = JoinSet::new();
    let stop = shared.shutdown.stop.clone();
    let counters = &shared.counters;
    let mut after = 0;
    let mut budget_stop = None;
    'pages: while !stop.is_cancelled() {
        let page = store.pending_jobs(run_id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for job in page {
            let permit = tokio::select! {
                biased;
                () = stop.cancelled() => break 'pages,
                permit = Arc::clone(&permits).acquire_owned() => permit.context("the job semaphore closed")?,
            };
            let mut reserved = 0;
            if let Some(budget) = budget {
                match worst_case(&shared.prices, &job) {
                    Some(worst) => {
                        let committed =
                            budget.spent_before + Counters::get(&counters.spend_pico_usd);
                        let held = Counters::get(&counters.reserved_pico_usd);
                        if committed + held + worst > budget.limit {
                            budget_stop = Some(format!(
                                "the next job could pass the --max-cost budget of {} (spent {}, {} held for jobs in flight, up to {} for the next)",
                                format_usd(budget.limit),
                                format_usd(committed),
                                format_usd(held),
                                format_usd(worst)
                            ));
                            break 'pages;
                        }
                        reserved = worst;
                        Counters::add(&counters.reserved_pico_usd, worst);
                    }
                    None => {
                        budget_stop = Some(format!(
                            "model `{}` has no price, so --max-cost cannot bound its cost (give --prices)",
                            job.model
                        ));
                        break 'pages;
                    }
                }
            }
            // Reap finished workers as we go so the set stays as small as the concurrency.
            while let Some(done) = workers.try_join_next() {
                done.context("a worker panicked")?;
            }
            let shared = Arc::clone(shared);
            workers.spawn(async move {
                worker::run_job(&shared, job, reserved).await;
                drop(permit);
            });
        }
    }
    while let Some(done) = workers.join_next().await {
        done.context("a worker panicked")?;
    }
    Ok(budget_stop)
}

/// The most a job can cost, or `None` when its model has no price.
fn worst_case(prices: &PriceTable, job: &PendingJob) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        max_tokens: u64,
    }
    let max_tokens = serde_json::from_str::<Probe>(&job.request).map_or(0, |p| p.max_tokens);
    prices.worst_case_pico_usd(&job.model, job.request.len() as u64, max_tokens)
}
