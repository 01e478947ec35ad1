//! Runs the pending jobs of a run, then its judges: a dispatcher bounded by `--concurrency`
//! hands each job to a worker, every request goes through the one [`RequestSender`], and the
//! single [`writer`] commits every outcome and decides when the run cannot go on.
//!
//! ```text
//! store ─► dispatcher ─(semaphore, ledger)─► worker ─► RequestSender ─(limiter, client,
//!                                                        retries)─► mpsc ─► writer ─► store
//! ```
//!
//! Shutdown has two stages. `stop` (first Ctrl-C, or the writer deciding the run cannot
//! succeed) starts no new request and no new retry while requests already on the wire finish.
//! `abort` (second Ctrl-C) abandons those too. Either way the writer commits what it has, and
//! every unfinished job stays `pending` for `resume`.

mod halt;
pub mod judge;
pub mod sender;
mod worker;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use judge::Judged;
pub use sender::{Call, Kind, Ledger, Request, RequestSender, SendError};

use crate::client::{Client, RetryPolicy};
use crate::limiter::Limiter;
use crate::pricing::PriceTable;
use crate::progress::Progress;
use crate::store::{PendingJob, RunCounts, Store};

/// The two shutdown stages.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Start nothing new; let requests on the wire finish.
    pub stop: CancellationToken,
    /// Abandon requests on the wire.
    pub abort: CancellationToken,
}

/// Everything a run needs to send its jobs and judges.
pub struct Runner {
    pub store: Store,
    pub client: Client,
    pub limiter: Limiter,
    pub policy: RetryPolicy,
    pub prices: PriceTable,
    pub concurrency: usize,
    pub shutdown: Shutdown,
    pub show_progress: bool,
    /// The run's budget in pico-USD, over every session (what earlier sessions spent counts).
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
    /// The judges, when every job was settled and they could be asked.
    pub judged: Option<Judged>,
}

/// What a [`Pipeline`] is built from, and given back when it finishes.
struct Parts {
    store: Store,
    client: Client,
    limiter: Limiter,
    policy: RetryPolicy,
    shutdown: Shutdown,
    budget_pico_usd: Option<u64>,
}

/// The sender of a command and the writer behind it, running until every request is done.
struct Pipeline {
    sender: Arc<RequestSender>,
    store: Store,
    writer: JoinHandle<anyhow::Result<writer::Written>>,
}

impl Pipeline {
    async fn start(parts: Parts, run_id: i64, progress: &Progress) -> anyhow::Result<Self> {
        // What earlier sessions spent counts against the budget: results and judges alike.
        let spent_before = {
            let counts = parts.store.run_counts(run_id).await?;
            let judges = parts.store.judge_spend(run_id).await?;
            u64::try_from(counts.cost_pico_usd + judges).unwrap_or(0)
        };
        let ledger = Arc::new(Ledger::new(
            parts.budget_pico_usd,
            spent_before,
            Arc::clone(&progress.counters),
        ));
        // Room for a few writer batches; more would only hold memory while the writer commits.
        let (events, receiver) = mpsc::channel(2048);
        let halt = halt::Halt::new(parts.shutdown.stop.clone(), progress.clone());
        let writer = tokio::spawn(writer::run(
            parts.store.clone(),
            progress.clone(),
            Arc::clone(&ledger),
            halt,
            receiver,
        ));
        let sender = Arc::new(RequestSender {
            client: parts.client,
            limiter: parts.limiter,
            policy: parts.policy,
            ledger,
            shutdown: parts.shutdown,
            counters: Arc::clone(&progress.counters),
            attempts: Some(events),
        });
        Ok(Self {
            sender,
            store: parts.store,
            writer,
        })
    }

    /// Waits for the writer to commit everything, once every request is done, and gives the
    /// parts back.
    async fn finish(self) -> anyhow::Result<(writer::Written, Parts)> {
        let sender = Arc::into_inner(self.sender)
            .context("a request was still holding the sender when its pipeline finished")?;
        let budget_pico_usd = sender.ledger.limit();
        let RequestSender {
            client,
            limiter,
            policy,
            shutdown,
            attempts,
            ..
        } = sender;
        // The writer ends when its last sender is gone.
        drop(attempts);
        let written = self.writer.await.context("the writer task failed")??;
        let parts = Parts {
            store: self.store,
            client,
            limiter,
            policy,
            shutdown,
            budget_pico_usd,
        };
        Ok((written, parts))
    }
}

impl Runner {
    fn split(self) -> (Parts, PriceTable, usize, bool) {
        let parts = Parts {
            store: self.store,
            client: self.client,
            limiter: self.limiter,
            policy: self.policy,
            shutdown: self.shutdown,
            budget_pico_usd: self.budget_pico_usd,
        };
        (parts, self.prices, self.concurrency, self.show_progress)
    }

    /// Sends every pending job of `run_id`, then (when every job is settled) its pending
    /// judges, and waits for their outcomes to be committed.
    pub async fn execute(self, run_id: i64) -> anyhow::Result<Session> {
        let started = Instant::now();
        let (parts, prices, concurrency, show_progress) = self.split();
        let store = parts.store.clone();
        let stop = parts.shutdown.stop.clone();
        let prices = Arc::new(prices);
        let before = store.run_counts(run_id).await?;
        let total = u64::try_from(before.total - before.rejected).unwrap_or(0);
        let done_before = u64::try_from(before.succeeded + before.failed).unwrap_or(0);
        let progress = Progress::new(total, done_before, show_progress);
        let pipeline = Pipeline::start(parts, run_id, &progress).await?;
        let dispatched = dispatch(&store, run_id, &pipeline.sender, &prices, concurrency).await;
        // Every job's outcome is committed before judging starts: judges read the answers.
        let (written, parts) = pipeline.finish().await?;
        let budget_stop = dispatched?;
        progress.finish();
        let judged = if written.halt.is_none() && budget_stop.is_none() && !stop.is_cancelled() {
            Some(judge_with(parts, &prices, run_id, concurrency).await?)
        } else {
            None
        };
        let counts = store.run_counts(run_id).await?;
        let done_after = u64::try_from(counts.succeeded + counts.failed).unwrap_or(0);
        Ok(Session {
            interrupted: stop.is_cancelled() && written.halt.is_none(),
            halt: written.halt,
            budget_stop,
            counts,
            finished: done_after.saturating_sub(done_before),
            elapsed: started.elapsed(),
            judged,
        })
    }

    /// Asks the judges of `run_id` whose verdicts are pending, and nothing else.
    pub async fn judge(self, run_id: i64) -> anyhow::Result<Judged> {
        let (parts, prices, concurrency, _) = self.split();
        judge_with(parts, &prices, run_id, concurrency).await
    }
}

/// A judging round in a pipeline of its own.
async fn judge_with(
    parts: Parts,
    prices: &PriceTable,
    run_id: i64,
    concurrency: usize,
) -> anyhow::Result<Judged> {
    let store = parts.store.clone();
    let progress = Progress::new(0, 0, false);
    let pipeline = Pipeline::start(parts, run_id, &progress).await?;
    let judged = judge::run(&pipeline.sender, &store, prices, run_id, concurrency).await;
    pipeline.finish().await?;
    judged
}

/// Jobs read from the store per page.
const PAGE: i64 = 1024;

/// Starts a worker for each pending job, at most `concurrency` at once, until none is left,
/// the run is stopped, or the next job could pass the budget; then waits for the workers.
/// Returns why the budget stopped dispatching, if it did.
async fn dispatch(
    store: &Store,
    run_id: i64,
    sender: &Arc<RequestSender>,
    prices: &Arc<PriceTable>,
    concurrency: usize,
) -> anyhow::Result<Option<String>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut workers = JoinSet::new();
    let stop = sender.shutdown.stop.clone();
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
            let reserved = if sender.ledger.limit().is_some() {
                match sender.ledger.reserve(worst_case(prices, &job), "job") {
                    Ok(held) => held,
                    Err(over) => {
                        budget_stop = Some(over.0);
                        break 'pages;
                    }
                }
            } else {
                0
            };
            // Reap finished workers as we go so the set stays as small as the concurrency.
            while let Some(done) = workers.try_join_next() {
                done.context("a worker panicked")?;
            }
            let sender = Arc::clone(sender);
            let prices = Arc::clone(prices);
            workers.spawn(async move {
                worker::run_job(&sender, &prices, job, reserved).await;
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
