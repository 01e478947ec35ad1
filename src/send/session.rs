//! A session of a run: the pending jobs sent the direct way or through batches, then the
//! judges, and the run's status recorded. What it decides, it returns; the command that
//! started it prints.

use anyhow::Context as _;

use super::Shutdown;
use super::batches::{BatchCalls, Batcher, DeadlineWatch, Source};
use super::direct::{Claims, Judged, Runner, Session};
use super::feed::Feed;
use crate::client::Client;
use crate::limiter::Limiter;
use crate::pricing::PriceTable;
use crate::settings::{LimitsPer, RunSettings, Via};
use crate::store::{Dialect, RunRow, RunStatus, RunTask, Store};

/// Everything a session of a run is given.
pub struct Sending<'a> {
    pub store: &'a Store,
    pub run: &'a RunRow,
    pub settings: &'a RunSettings,
    pub client: Client,
    /// The price table in force (read once per command).
    pub prices: PriceTable,
    /// The run's rows, when they are still being stored: its jobs are sent as they are.
    pub feed: Option<Feed>,
    pub shutdown: Shutdown,
    pub show_progress: bool,
}

/// How a session ended, as recorded with the run.
#[derive(Debug)]
pub struct Ended {
    pub session: Session,
    pub status: RunStatus,
    /// Other live workers still holding pending jobs of the run (a PostgreSQL store).
    pub others: i64,
}

impl Sending<'_> {
    /// Sends every pending job of the run and records how the session ended. An error has
    /// been recorded with the run as what stopped it.
    pub async fn run(self) -> anyhow::Result<Ended> {
        let Self {
            store,
            run,
            settings,
            client,
            prices,
            mut feed,
            shutdown,
            show_progress,
        } = self;
        // `--via auto` is decided once, at the run's first session, and kept with it.
        let decided;
        let settings = if settings.send.via == Via::Auto {
            let jobs = match &feed {
                Some(feed) => feed.loading().jobs,
                None => u64::try_from(store.run_counts(run.id).await?.pending).unwrap_or(0),
            };
            let (via, why) = auto_via(settings.gateway.batches, &settings.gateway.name, jobs);
            crate::errln!("{why}");
            let mut kept = settings.clone();
            kept.send.via = via;
            store
                .set_run_via(run.id, &kept.stored()?, via.as_str())
                .await?;
            decided = kept;
            &decided
        } else {
            settings
        };
        let via_batches = settings.send.via == Via::Batches;
        if via_batches && !settings.gateway.batches {
            anyhow::bail!(
                "gateway `{}` has no Message Batches endpoints (its profile says `batches = false`); send with `--via direct`",
                settings.gateway.name
            );
        }
        let batched = via_batches || !store.open_batches(run.id).await?.is_empty();
        if batched && let Some(feed) = feed.take() {
            // Batches are packed from stored rows: every row is stored first.
            feed.finish(false).await?;
        }
        let stop = shutdown.stop.clone();
        let cause = shutdown.clone();
        let mut runner = Runner {
            loading: feed.as_ref().map(Feed::loading),
            ..runner(store, settings, client, prices, shutdown, show_progress)
        };
        // On a PostgreSQL store every direct sender is a worker: others may share the run.
        // Batches are submitted and collected by one process at a time.
        let _batches_lock = if batched {
            let lock = store.lock_run(RunTask::Batches, run.id).await?;
            Some(lock.with_context(|| {
                format!(
                    "another process is sending the batches of run {}; wait for it to finish",
                    run.name
                )
            })?)
        } else {
            if store.dialect() == Dialect::Postgres {
                runner.claims = Some(join(store, run, settings, &runner).await?);
            }
            None
        };
        let worker = runner.claims.as_ref().map(|claims| claims.worker);
        store
            .set_run_status(run.id, RunStatus::Running, None)
            .await?;
        // A run with batches still open collects them first, whichever way it now sends:
        // their jobs must not go twice.
        let session = if batched {
            match batches(store, run, settings, runner, via_batches).await {
                Ok(session) => session,
                Err(e) => return Err(stopped_by(store, run, e).await),
            }
        } else {
            let session = runner.execute(run.id).await;
            if let Some(worker) = worker {
                // Whatever it still held goes back to the others at once.
                let stopped = store.stop_worker(worker).await;
                if session.is_ok() {
                    stopped?;
                }
            }
            if let Some(feed) = feed {
                // A session that stopped early stops the storing too: `resume` goes on from
                // the rows it committed.
                let stopped = session.as_ref().map_or(true, |s| {
                    s.halt.is_some() || s.budget_stop.is_some() || stop.is_cancelled()
                });
                let finished = feed.finish(stopped).await;
                if let (Ok(_), Err(e)) = (&session, finished) {
                    let e = e.context(format!("storing the jobs of {} stopped", run.input_path));
                    return Err(stopped_by(store, run, e).await);
                }
            }
            match session {
                Ok(session) => session,
                Err(e) => return Err(stopped_by(store, run, e).await),
            }
        };
        // Jobs left pending in the hands of other workers are theirs to finish: the run goes
        // on.
        let others = match worker {
            Some(worker) if session.counts.pending > 0 => {
                store.other_live_workers(run.id, worker).await?
            }
            _ => 0,
        };
        if !session.pool_limits.is_empty() {
            // Kept with the run, so that a report can say how much of each limit was used;
            // over the settings as stored now, with what the session learnt (a deadline's
            // switch, a gateway's body limit) and without a worker's own overrides.
            let mut kept = RunSettings::of(&store.find_run(&run.id.to_string()).await?)?;
            kept.send.pool_limits.extend(session.pool_limits.clone());
            store.set_run_settings(run.id, &kept.stored()?).await?;
        }
        let (status, reason) = if let Some(halt) = &session.halt {
            (RunStatus::Interrupted, Some(halt.as_str()))
        } else if let Some(running) = &session.batches_running {
            (RunStatus::Interrupted, Some(running.as_str()))
        } else if let (Some(budget), true) = (&session.budget_stop, session.counts.pending > 0) {
            (RunStatus::BudgetExhausted, Some(budget.as_str()))
        } else if others > 0 {
            (RunStatus::Running, None)
        } else if session.interrupted {
            (RunStatus::Interrupted, Some(cause.stopped_by()))
        } else if session.counts.pending > 0 {
            (RunStatus::Interrupted, Some("jobs are still pending"))
        } else {
            (RunStatus::Completed, None)
        };
        store.set_run_status(run.id, status, reason).await?;
        Ok(Ended {
            session,
            status,
            others,
        })
    }
}

/// The fewest jobs `--via auto` sends through batches. Below it, a run's saving is under 100
/// jobs' worth of half price, and a batch makes answers wait minutes to hours (the API
/// promises 24) where direct sending would finish in about as many seconds: the wait is not
/// worth cents. From it on, the discount is worth a wait, and a batch's fixed calls (create,
/// polls, results) are few against its requests.
pub const AUTO_MIN_JOBS: u64 = 100;

/// Which way `--via auto` sends `jobs` jobs to a gateway, and why, in one line.
pub fn auto_via(gateway_batches: bool, gateway: &str, jobs: u64) -> (Via, String) {
    if !gateway_batches {
        (
            Via::Direct,
            format!(
                "--via auto: sending directly: gateway `{gateway}` has no Message Batches endpoints (its profile says `batches = false`)"
            ),
        )
    } else if jobs < AUTO_MIN_JOBS {
        (
            Via::Direct,
            format!(
                "--via auto: sending directly: {jobs} jobs, fewer than the {AUTO_MIN_JOBS} a batch is worth waiting for"
            ),
        )
    } else {
        (
            Via::Batches,
            format!(
                "--via auto: sending through batches at half price: {jobs} jobs (at least {AUTO_MIN_JOBS}) and gateway `{gateway}` serves Message Batches"
            ),
        )
    }
}

/// Asks the judge model for every pending `judge` grade of a run (`msgbatch grade`).
pub async fn judge(
    store: &Store,
    run_id: i64,
    settings: &RunSettings,
    client: Client,
    prices: PriceTable,
    shutdown: &Shutdown,
) -> anyhow::Result<Judged> {
    runner(store, settings, client, prices, shutdown.clone(), false)
        .judge(run_id)
        .await
}

/// A runner for a run's settings, on `client`, at `prices`.
fn runner(
    store: &Store,
    settings: &RunSettings,
    client: Client,
    prices: PriceTable,
    shutdown: Shutdown,
    show_progress: bool,
) -> Runner {
    Runner {
        store: store.clone(),
        client,
        limiter: {
            let limiter = Limiter::with_tokens(
                settings.send.rpm,
                settings.send.itpm,
                settings.send.otpm,
                settings.gateway.pools.clone(),
            );
            match settings.gateway.limits_per {
                LimitsPer::Model => limiter,
                LimitsPer::Key => limiter.per_key(),
            }
        },
        policy: settings.send.retry_policy(),
        prices,
        concurrency: settings.send.concurrency,
        shutdown,
        show_progress,
        budget_pico_usd: settings.send.max_cost_pico_usd,
        warmup: settings.send.warmup,
        loading: None,
        claims: None,
    }
}

/// Records that `run` stopped on `error` and gives the error back. The store may be what
/// failed (a full disk), so recording is a best effort that never hides the cause.
async fn stopped_by(store: &Store, run: &RunRow, error: anyhow::Error) -> anyhow::Error {
    let reason = format!("{error:#}");
    let _ = store
        .set_run_status(run.id, RunStatus::Interrupted, Some(&reason))
        .await;
    error.context(format!(
        "run {} stopped; `msgbatch resume {}` goes on from what was recorded",
        run.name, run.name
    ))
}

/// Registers this process as a worker of `run` on a PostgreSQL store. A worker that joins
/// others starts with empty rate-limit buckets of its share, and waits until each of them has
/// had a heartbeat that counted it (and so lowered its own share) before it sends, so that
/// together they never send faster than the run's limits.
async fn join(
    store: &Store,
    run: &RunRow,
    settings: &RunSettings,
    runner: &Runner,
) -> anyhow::Result<std::sync::Arc<Claims>> {
    let lease = settings.send.lease;
    let (worker, joined_at) = store.register_worker(run.id, lease).await?;
    let alive = store.heartbeat(worker).await?;
    let first = store.first_live(worker).await?;
    runner.limiter.join(alive, first);
    if !first {
        crate::errln!(
            "joining {} other worker{} of run {}: sending at a {} share of its limits",
            alive - 1,
            if alive == 2 { "" } else { "s" },
            run.name,
            format_args!("1/{alive}")
        );
        // A worker whose heartbeats stop is no longer counted once its lease is over, so this
        // ends within a lease, and sooner as each heartbeats.
        while store.not_yet_counted(worker, joined_at).await? > 0 {
            tokio::select! {
                () = runner.shutdown.stop.cancelled() => break,
                () = tokio::time::sleep(lease / 20) => {}
            }
        }
        // Counted again at the start: others may have joined while this one waited.
        runner.limiter.join(store.heartbeat(worker).await?, first);
    }
    Ok(std::sync::Arc::new(Claims::new(worker, lease)))
}

/// A session through the Message Batches API: open batches collected, then (with `submit`)
/// the pending jobs sent in new batches; a run that now sends directly goes on directly once
/// its batches are in. Once every job is settled, the pending judges go in batches of their
/// own, or directly when the deadline is near.
async fn batches(
    store: &Store,
    run: &RunRow,
    settings: &RunSettings,
    runner: Runner,
    submit: bool,
) -> anyhow::Result<Session> {
    let started = std::time::Instant::now();
    let batch_prices = runner.prices.batch();
    let deadline = match settings.send.deadline {
        Some(deadline) => Some(DeadlineWatch {
            at_ms: deadline.at_ms,
            pace: super::deadline::pace(store, run.id, settings).await?,
            switched: deadline.switched_at_ms.is_some().into(),
        }),
        None => None,
    };
    let batcher = Batcher {
        store,
        client: &runner.client,
        prices: &batch_prices,
        run_id: run.id,
        settings: settings.send.batches,
        policy: runner.policy,
        stop: runner.shutdown.stop.clone(),
        show_progress: runner.show_progress,
        budget_pico_usd: runner.budget_pico_usd,
        calls: BatchCalls::new(settings.send.batches.rpm),
        deadline: deadline.as_ref(),
        judged: Default::default(),
    };
    let collected = batcher.execute(submit, Source::Answers).await?;
    let mut left = collected.left_running;
    let mut interrupted = left > 0 || runner.shutdown.stop.is_cancelled();
    if (!submit || collected.switched) && !interrupted {
        // Sending directly from here on: what the batches left pending goes now.
        let mut session = runner.execute(run.id).await?;
        session.finished += collected.recorded;
        session.elapsed = started.elapsed();
        return Ok(session);
    }
    let budget_stop = collected.budget_stop.filter(|_| !interrupted);
    let judged = if interrupted || budget_stop.is_some() {
        None
    } else {
        // The judges go through batches too, at half price, unless the deadline is near.
        let judging = batcher.execute(true, Source::Judges).await?;
        left = judging.left_running;
        interrupted = left > 0 || runner.shutdown.stop.is_cancelled();
        let mut judged = batcher.judged.judged();
        if judging.switched && !interrupted {
            let direct = runner.judge(run.id).await?;
            judged.verdicts += direct.verdicts;
            judged.unanswered += direct.unanswered;
            judged.over_budget += direct.over_budget;
            judged.cost_pico_usd += direct.cost_pico_usd;
        } else if judging.budget_stop.is_some() && !interrupted {
            let pending = store.pending_judge_count(run.id).await?;
            judged.over_budget = u64::try_from(pending)
                .unwrap_or(0)
                .saturating_sub(judged.unanswered);
        }
        Some(judged)
    };
    let (them, are) = if left == 1 {
        ("it", " is")
    } else {
        ("them", "es are")
    };
    Ok(Session {
        halt: None,
        budget_stop,
        interrupted,
        finished: collected.recorded,
        elapsed: started.elapsed(),
        judged,
        pool_limits: std::collections::BTreeMap::new(),
        outcomes_lost: 0,
        batches_running: (left > 0).then(|| {
            format!(
                "{left} batch{are} still running on the server: `msgbatch resume {}` collects {them}, `msgbatch cancel {}` cancels {them}",
                run.name, run.name,
            )
        }),
        counts: store.run_counts(run.id).await?,
    })
}
