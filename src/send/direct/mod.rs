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

pub mod claims;
mod halt;
pub mod judge;
mod pace;
pub mod sender;
mod warmup;
pub(crate) mod worker;
pub mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use crate::send::Shutdown;
pub use claims::Claims;
pub use judge::Judged;
pub use sender::{Call, Kind, Request, RequestSender, SendError};

use crate::client::{Client, RetryPolicy};
use crate::limiter::Limiter;
use crate::pricing::PriceTable;
use crate::send::budget::Budget;
use crate::send::feed::{Loading, Stored};
use crate::send::outcome::{CacheUse, worst_case};
use crate::send::progress::Progress;
use crate::store::{PendingJob, RunCounts, Store};
use crate::tokens::CachePrefix;
use pace::Pace;
use warmup::{Decision, Warmup};

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
    /// Warm each shared cache prefix with one request before its group fans out.
    pub warmup: bool,
    /// The run's rows are still being stored: send them as they come.
    pub loading: Option<Loading>,
    /// This process is one of the workers sharing the run through a PostgreSQL store: jobs
    /// are claimed under leases rather than read.
    pub claims: Option<Arc<Claims>>,
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
    /// Each pool's limits as the session kept them.
    pub pool_limits: std::collections::BTreeMap<String, crate::limiter::PoolLimits>,
    /// Batches left running on the server when the session stopped, in one sentence.
    pub batches_running: Option<String>,
    /// Outcomes not recorded because another worker had claimed their jobs by then.
    pub outcomes_lost: u64,
}

/// What a [`Pipeline`] is built from, and given back when it finishes.
struct Parts {
    /// The most requests in flight, for a pipeline that paces itself (`None`: the caller
    /// bounds concurrency).
    concurrency: Option<usize>,
    store: Store,
    client: Client,
    limiter: Limiter,
    policy: RetryPolicy,
    shutdown: Shutdown,
    budget_pico_usd: Option<u64>,
    claims: Option<Arc<Claims>>,
}

impl Parts {
    /// The budget of a pipeline of `run_id` (see [`Budget::for_run`]).
    async fn budget(&self, run_id: i64) -> anyhow::Result<Budget> {
        let worker = self.claims.as_ref().map(|claims| claims.worker);
        Budget::for_run(self.budget_pico_usd, &self.store, run_id, worker).await
    }
}

/// The sender of a command and the writer behind it, running until every request is done.
struct Pipeline {
    sender: Arc<RequestSender>,
    store: Store,
    writer: JoinHandle<anyhow::Result<writer::Written>>,
    claims: Option<Arc<Claims>>,
}

impl Pipeline {
    fn start(parts: Parts, progress: &Progress, budget: Arc<Budget>) -> Self {
        // Room for a few writer batches; more would only hold memory while the writer commits.
        let (events, receiver) = mpsc::channel(2048);
        let halt = halt::Halt::new(parts.shutdown.stop.clone(), progress.clone());
        let writer = tokio::spawn(writer::run(
            parts.shutdown.stop.clone(),
            parts.store.clone(),
            progress.clone(),
            Arc::clone(&budget),
            halt,
            receiver,
            parts.claims.clone(),
        ));
        let sender = Arc::new(RequestSender {
            client: parts.client,
            limiter: parts.limiter,
            policy: parts.policy,
            budget,
            shutdown: parts.shutdown,
            counters: Arc::clone(&progress.counters),
            attempts: Some(events),
            pace: parts.concurrency.map(|most| Arc::new(Pace::new(most))),
            forecast: sender::OutputForecast::default(),
        });
        Self {
            sender,
            store: parts.store,
            writer,
            claims: parts.claims,
        }
    }

    /// Waits for the writer to commit everything, once every request is done, and gives the
    /// parts back.
    async fn finish(self) -> anyhow::Result<(writer::Written, Parts)> {
        let sender = Arc::into_inner(self.sender)
            .context("a request was still holding the sender when its pipeline finished")?;
        let budget_pico_usd = sender.budget.limit();
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
            concurrency: None,
            store: self.store,
            client,
            limiter,
            policy,
            shutdown,
            budget_pico_usd,
            claims: self.claims,
        };
        Ok((written, parts))
    }
}

impl Runner {
    fn split(self) -> (Parts, PriceTable, usize, bool, bool, Option<Loading>) {
        let parts = Parts {
            concurrency: Some(self.concurrency),
            store: self.store,
            client: self.client,
            limiter: self.limiter,
            policy: self.policy,
            shutdown: self.shutdown,
            budget_pico_usd: self.budget_pico_usd,
            claims: self.claims,
        };
        (
            parts,
            self.prices,
            self.concurrency,
            self.show_progress,
            self.warmup,
            self.loading,
        )
    }

    /// Sends every pending job of `run_id`, then (when every job is settled) its pending
    /// judges, and waits for their outcomes to be committed.
    pub async fn execute(self, run_id: i64) -> anyhow::Result<Session> {
        let started = Instant::now();
        let (parts, prices, concurrency, show_progress, warmup, loading) = self.split();
        let store = parts.store.clone();
        let stop = parts.shutdown.stop.clone();
        let prices = Arc::new(prices);
        let before = store.run_counts(run_id).await?;
        let total = match &loading {
            Some(loading) => loading.jobs,
            None => u64::try_from(before.total - before.rejected).unwrap_or(0),
        };
        let done_before = u64::try_from(before.succeeded + before.failed).unwrap_or(0);
        let budget = Arc::new(parts.budget(run_id).await?);
        let progress = Progress::new(total, done_before, show_progress, Arc::clone(&budget));
        // A worker says it is alive and renews its leases for the whole session, judging
        // included.
        let beating = CancellationToken::new();
        let heartbeat = parts.claims.clone().map(|claims| {
            tokio::spawn(claims.heartbeat(
                store.clone(),
                parts.limiter.share(),
                stop.clone(),
                beating.clone(),
            ))
        });
        let claims = parts.claims.clone();
        let pipeline = Pipeline::start(parts, &progress, budget);
        let dispatched = dispatch(
            &store,
            run_id,
            &pipeline.sender,
            &prices,
            concurrency,
            warmup,
            Source {
                stored: loading.map(|l| l.stored),
                claims: claims.as_deref(),
            },
        )
        .await;
        // Every job's outcome is committed before judging starts: judges read the answers.
        // When dispatching failed, its error is the one to report, not what it left behind.
        let finished = pipeline.finish().await;
        let budget_stop = dispatched?;
        let (written, parts) = finished?;
        progress.finish();
        let pool_limits = parts.limiter.limits_in_force();
        let judging = if written.halt.is_none() && budget_stop.is_none() && !stop.is_cancelled() {
            store
                .lock_run(crate::store::RunTask::Judging, run_id)
                .await?
        } else {
            None
        };
        let judged = match judging {
            Some(_judging) => Some(judge_with(parts, &prices, run_id, concurrency).await?),
            None => None,
        };
        beating.cancel();
        let lost_leases = match heartbeat {
            Some(heartbeat) => heartbeat.await.context("the heartbeat task failed")?,
            None => None,
        };
        let counts = store.run_counts(run_id).await?;
        let done_after = u64::try_from(counts.succeeded + counts.failed).unwrap_or(0);
        Ok(Session {
            interrupted: stop.is_cancelled() && written.halt.is_none() && lost_leases.is_none(),
            halt: written.halt.or(lost_leases),
            outcomes_lost: written.lost,
            budget_stop,
            counts,
            finished: done_after.saturating_sub(done_before),
            elapsed: started.elapsed(),
            judged,
            pool_limits,
            batches_running: None,
        })
    }

    /// Asks the judges of `run_id` whose verdicts are pending, and nothing else.
    pub async fn judge(self, run_id: i64) -> anyhow::Result<Judged> {
        let (parts, prices, concurrency, ..) = self.split();
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
    let pending = store.pending_judges(run_id).await?;
    if pending.is_empty() {
        return Ok(Judged::default());
    }
    let budget = Arc::new(parts.budget(run_id).await?);
    let progress = Progress::new(0, 0, false, Arc::clone(&budget));
    let pipeline = Pipeline::start(parts, &progress, budget);
    let judged = judge::run(&pipeline.sender, prices, pending, concurrency).await;
    pipeline.finish().await?;
    judged
}

/// Jobs read from the store per page.
const PAGE: i64 = 256;

/// Jobs in hand per place in the run's concurrency: room for the jobs waiting to be tried
/// again (under 15% failures with `retry-after: 1`, about one and a half per place) beside the
/// ones on the wire.
const JOBS_PER_PLACE: usize = 4;

/// Jobs held for a warming prefix, at most; past this the dispatcher reads no further page
/// until a warmer's answer begins.
const MAX_HELD: usize = 4 * PAGE as usize;

/// A pending job with the cache prefixes it would write.
struct Candidate {
    job: PendingJob,
    prefixes: Vec<CachePrefix>,
    /// It waited for another job to warm one of its prefixes.
    held: bool,
}

impl Candidate {
    fn new(job: PendingJob) -> Self {
        // Only a request that marks a breakpoint has a prefix: most jobs skip the parse.
        let prefixes = if job.request.contains("\"cache_control\"") {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&job.request)
                .map(|body| crate::tokens::cache_prefixes(&body))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Self {
            job,
            prefixes,
            held: false,
        }
    }
}

/// A cache warmer's news: its answer began, or it ended without one.
enum WarmSignal {
    Began(u64),
    Ended(u64),
}

/// Starts a worker for each pending job, at most `concurrency` at once, until none is left,
/// the run is stopped, or the next job could pass the budget; then waits for the workers.
/// With `warmup`, a job whose cache prefix another job is warming waits for that job's answer
/// to begin ([`warmup`]), while the jobs behind it go on. With `stored`, the run's rows are
/// still being stored: when the stored ones run out it waits for more until the last is in
/// (or the storing stops). Returns why the budget stopped dispatching, if it did.
/// Where the dispatcher finds jobs: the run's stored rows (news of more while they are still
/// being stored), or, for a worker of a shared store, claims.
struct Source<'a> {
    stored: Option<tokio::sync::watch::Receiver<Stored>>,
    claims: Option<&'a Claims>,
}

async fn dispatch(
    store: &Store,
    run_id: i64,
    sender: &Arc<RequestSender>,
    prices: &Arc<PriceTable>,
    concurrency: usize,
    warm: bool,
    source: Source<'_>,
) -> anyhow::Result<Option<String>> {
    let Source { mut stored, claims } = source;
    let pace = sender
        .pace
        .clone()
        .unwrap_or_else(|| Arc::new(Pace::new(concurrency)));
    // A job holds a slot from dispatch to its outcome, and a place in the pace while its
    // request is on the wire (sender::Place). The slots bound the jobs in hand (and the worst
    // cases reserved for them) while leaving room beside them for the jobs that wait to be
    // tried again.
    let slots = Arc::new(Semaphore::new(concurrency.max(1) * JOBS_PER_PLACE));
    let mut workers = JoinSet::new();
    let stop = sender.shutdown.stop.clone();
    let mut warmup = Warmup::default();
    let (signal, mut signals) = mpsc::unbounded_channel::<WarmSignal>();
    let mut warmers: HashMap<u64, Vec<CachePrefix>> = HashMap::new();
    let mut queue: VecDeque<Candidate> = VecDeque::new();
    let mut held: Vec<Candidate> = Vec::new();
    let mut after = store.before_first_job(run_id).await?;
    let mut exhausted = false;
    let mut budget_stop = None;
    loop {
        if stop.is_cancelled() {
            break;
        }
        // News from warmers: their groups may go now, ahead of the jobs read after them.
        let mut news = false;
        while let Ok(message) = signals.try_recv() {
            apply(&mut warmup, &mut warmers, message);
            news = true;
        }
        if news {
            for candidate in held.drain(..).rev() {
                queue.push_front(candidate);
            }
        }
        let Some(mut candidate) = queue.pop_front() else {
            let mut rows_coming = false;
            let mut leases_pending = false;
            if !exhausted && held.len() < MAX_HELD {
                // Whether more rows may come, seen before the read: rows committed after it
                // are news that wakes the wait below.
                let more_coming = stored
                    .as_mut()
                    .is_some_and(|stored| !stored.borrow_and_update().done);
                let page = match claims {
                    // A worker takes no more than it can send soon: what it holds, others
                    // cannot.
                    Some(claims) => claims.claim(store, run_id, concurrency.max(1)).await?,
                    None => store.pending_jobs(run_id, after, PAGE).await?,
                };
                match page.last() {
                    Some(last) => {
                        after = last.id;
                        queue.extend(page.into_iter().map(Candidate::new));
                        continue;
                    }
                    None if more_coming => rows_coming = true,
                    None if let Some(claims) = claims => {
                        // Nothing to claim now. Jobs still pending are in other workers'
                        // hands (or this one's) and come back if their leases end; rows may
                        // still be stored by the worker that loads the run, while it lives.
                        let left = store.unfinished(run_id).await?;
                        let loading = !left.loaded
                            && (stored.is_some()
                                || store.other_live_workers(run_id, claims.worker).await? > 0);
                        if left.pending > 0 || loading {
                            leases_pending = true;
                        } else {
                            exhausted = true;
                        }
                    }
                    None => exhausted = true,
                }
            }
            if held.is_empty() && !rows_coming && !leases_pending {
                break;
            }
            let poll = claims.map_or(Duration::MAX, Claims::poll);
            // Wait for what lets a job go: a warmer's news for the jobs held for it (a warmer
            // tells it before its worker ends; a worker that panicked ends the run here), or
            // more stored rows.
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                ended = rows_news(&mut stored), if rows_coming => {
                    // The storing ended without its last row (its error is the caller's to
                    // report): what is stored is all there is.
                    if ended {
                        stored = None;
                    }
                }
                () = tokio::time::sleep(poll), if leases_pending => {}
                message = signals.recv(), if !held.is_empty() => {
                    if let Some(message) = message {
                        apply(&mut warmup, &mut warmers, message);
                    }
                    queue.extend(held.drain(..));
                }
                Some(done) = workers.join_next() => {
                    done.context("a worker panicked")?;
                }
            }
            continue;
        };
        let decision = if warm && !candidate.prefixes.is_empty() {
            warmup.decide(&candidate.prefixes, tokio::time::Instant::now())
        } else {
            Decision::Go
        };
        let warmer = match decision {
            Decision::Wait => {
                candidate.held = true;
                held.push(candidate);
                continue;
            }
            Decision::Warm(id) => {
                warmers.insert(id, candidate.prefixes.clone());
                Some(id)
            }
            Decision::Go => None,
        };
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.context("the job semaphore closed")?,
        };
        let place = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            permit = pace.acquire() => {
                sender::Place::held(Arc::clone(&pace), permit.context("the pace closed")?)
            }
        };
        let reserved = if sender.budget.limit().is_some() {
            // Near the budget, fewer jobs run at once: while jobs in flight hold worst cases
            // that their real costs will mostly release, wait for them rather than stop, so
            // that the run spends its budget rather than the sum of worst cases.
            let worst = match worst_case(prices, &candidate.job) {
                Ok(worst) => worst,
                Err(overflow) => {
                    budget_stop = Some(format!(
                        "job {} cannot be bounded by --max-cost: its worst case is {overflow}",
                        candidate.job.job_id
                    ));
                    break;
                }
            };
            let mut settlements = sender.budget.settlements();
            loop {
                settlements.borrow_and_update();
                match sender.budget.reserve_shared(worst, "job").await {
                    Ok(held) => break Some(held),
                    Err(_) if sender.budget.held() > 0 => {
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => break None,
                            _ = settlements.changed() => {}
                        }
                    }
                    Err(over) => {
                        budget_stop = Some(over.0);
                        break None;
                    }
                }
            }
        } else {
            Some(0)
        };
        let Some(reserved) = reserved else {
            break;
        };
        // Reap finished workers as we go so the set stays as small as the concurrency.
        while let Some(done) = workers.try_join_next() {
            done.context("a worker panicked")?;
        }
        // The limits are charged with what the job is expected to use: its input less the
        // prefixes it will read from the cache, and the output the run has seen.
        let metered = {
            let warm_prefixes = matches!(decision, Decision::Go) && warm;
            Some(sender::Metered::message(
                sender,
                &candidate.job.model,
                &candidate.job.request,
                |hash| warm_prefixes && candidate.prefixes.iter().any(|p| p.hash == hash),
            ))
        };
        let sender = Arc::clone(sender);
        let prices = Arc::clone(prices);
        let signal = signal.clone();
        let mut job = worker::Dispatched {
            job: candidate.job,
            reserved_pico_usd: reserved,
            cache: CacheUse {
                prefix: candidate.prefixes.last().map(|p| p.hash),
                held: candidate.held,
            },
            first_token: None,
            metered,
            place,
        };
        workers.spawn(async move {
            match warmer {
                Some(id) => {
                    let began = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    job.first_token = {
                        let began = Arc::clone(&began);
                        let signal = signal.clone();
                        Some(sender::FirstToken(Arc::new(move || {
                            if !began.swap(true, std::sync::atomic::Ordering::SeqCst) {
                                let _ = signal.send(WarmSignal::Began(id));
                            }
                        })))
                    };
                    let answered = worker::run_job(&sender, &prices, job).await;
                    // An answer that came without a content token still wrote its prefix.
                    if !began.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        let _ = signal.send(if answered {
                            WarmSignal::Began(id)
                        } else {
                            WarmSignal::Ended(id)
                        });
                    }
                }
                None => {
                    worker::run_job(&sender, &prices, job).await;
                }
            }
            drop(slot);
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a worker panicked")?;
    }
    Ok(budget_stop)
}

/// Waits for news of more stored rows; `true` when the storing ended without saying it was
/// done. Never ready without a storing to follow.
async fn rows_news(stored: &mut Option<tokio::sync::watch::Receiver<Stored>>) -> bool {
    match stored {
        Some(stored) => stored.changed().await.is_err(),
        None => std::future::pending().await,
    }
}

fn apply(warmup: &mut Warmup, warmers: &mut HashMap<u64, Vec<CachePrefix>>, message: WarmSignal) {
    match message {
        WarmSignal::Began(id) => {
            if let Some(prefixes) = warmers.remove(&id) {
                warmup.began(id, &prefixes, tokio::time::Instant::now());
            }
        }
        WarmSignal::Ended(id) => {
            warmers.remove(&id);
            warmup.failed(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Timeouts;
    use crate::mock::{MockConfig, MockServer};
    use crate::settings::Gateway;
    use crate::store::{JobState, NewJob, NewRun};
    use tokio::sync::watch;

    fn jobs(lines: std::ops::Range<u64>) -> Vec<NewJob> {
        lines
            .map(|line| {
                let request = serde_json::json!({
                    "model": "claude-haiku-4-5", "max_tokens": 16,
                    "messages": [{"role": "user", "content": format!("prompt-{line}")}]
                })
                .to_string();
                NewJob {
                    job_id: format!("job-{line}"),
                    model: "claude-haiku-4-5".to_owned(),
                    sample: 0,
                    line,
                    request_sha256: crate::jobs::sha256_hex(request.as_bytes()),
                    request,
                    tags: None,
                    expect: None,
                    state: JobState::Pending,
                    error: None,
                    params_max_tokens: None,
                }
            })
            .collect()
    }

    async fn runner(store: &Store, mock: &MockServer, loading: Loading) -> Runner {
        let gateway = Gateway::mock(mock.base_url());
        let timeouts = Timeouts {
            total: Duration::from_secs(30),
            stream_idle: Duration::from_secs(30),
        };
        Runner {
            store: store.clone(),
            client: Client::new(gateway.endpoint(), None, timeouts, 4).unwrap(),
            limiter: Limiter::new(None),
            policy: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
                max_retry_after: Duration::from_secs(60),
            },
            prices: PriceTable::builtin(),
            concurrency: 4,
            shutdown: Shutdown::default(),
            show_progress: false,
            budget_pico_usd: None,
            warmup: false,
            loading: Some(loading),
            claims: None,
        }
    }

    async fn new_run(store: &Store) -> i64 {
        store
            .create_run(&NewRun {
                name: "feed".to_owned(),
                input_path: "jobs.jsonl".to_owned(),
                gateway_name: "mock".to_owned(),
                base_url: "mock://".to_owned(),
                messages_path: "/v1/messages".to_owned(),
                settings_json: "{}".to_owned(),
                via: "direct",
                checked: None,
            })
            .await
            .unwrap()
    }

    /// Fails a test that would otherwise wait forever.
    async fn soon<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), future)
            .await
            .unwrap_or_else(|_| panic!("{what} did not happen"))
    }

    #[tokio::test]
    async fn stored_jobs_are_sent_while_the_rest_of_the_file_is_being_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("runs.db")).await.unwrap();
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let run_id = new_run(&store).await;
        store.insert_jobs(run_id, jobs(1..4)).await.unwrap();
        let (progress, stored) = watch::channel(Stored {
            chunks: 1,
            done: false,
        });
        let runner = runner(&store, &mock, Loading { stored, jobs: 6 }).await;
        let session = tokio::spawn(runner.execute(run_id));

        // The three stored jobs go out while the file is not all stored; the run waits for
        // the rest rather than ending.
        soon("sending the stored jobs", mock.wait_for_requests(3)).await;
        store.insert_jobs(run_id, jobs(4..6)).await.unwrap();
        progress.send_modify(|s| s.chunks += 1);
        soon("sending the next chunk", mock.wait_for_requests(5)).await;
        assert!(!session.is_finished(), "the run ended before its last row");
        store.insert_jobs(run_id, jobs(6..7)).await.unwrap();
        progress.send_modify(|s| {
            s.chunks += 1;
            s.done = true;
        });

        let session = soon("the end of the run", session).await.unwrap().unwrap();
        assert_eq!(session.counts.succeeded, 6);
        assert_eq!(session.counts.pending, 0);
        assert_eq!(mock.requests(), 6, "each job once");
    }

    #[tokio::test]
    async fn storing_that_stops_midway_ends_the_run_with_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("runs.db")).await.unwrap();
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let run_id = new_run(&store).await;
        store.insert_jobs(run_id, jobs(1..3)).await.unwrap();
        let (progress, stored) = watch::channel(Stored {
            chunks: 1,
            done: false,
        });
        let runner = runner(&store, &mock, Loading { stored, jobs: 10 }).await;
        let session = tokio::spawn(runner.execute(run_id));
        soon("sending the stored jobs", mock.wait_for_requests(2)).await;
        // The loader failed: its error is reported by whoever started it.
        drop(progress);
        let session = soon("the end of the run", session).await.unwrap().unwrap();
        assert_eq!(session.counts.succeeded, 2);
        assert_eq!(mock.requests(), 2);
    }
}
