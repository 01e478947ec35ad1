//! Workers: the processes that send one run together from a PostgreSQL store, each claiming
//! pending jobs under a lease (see `migrations/postgres/0002_workers.sql`). A SQLite store has
//! one sending process, which its lock file guarantees, and none of this.

use std::time::Duration;

use super::sql::Sql;
use super::{Dialect, PendingJob, Store, StoreError};

/// The database server's clock in ms since the epoch: every lease and heartbeat is timed by
/// it, so that workers on machines whose clocks disagree still agree on when a lease ends.
macro_rules! db_now {
    () => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}

/// The condition that the worker row prefixed `$w` (`"o."`, or `""` for unaliased) is alive:
/// not stopped, and heard from within its lease by the database's clock (or by `$now`). One
/// definition for every count of live workers: shares, budget grants and status agree.
macro_rules! alive {
    ($w:literal) => {
        concat!(
            "(",
            $w,
            "stopped_at_ms IS NULL AND ",
            $w,
            "heartbeat_at_ms + ",
            $w,
            "lease_ms > ",
            db_now!(),
            ")"
        )
    };
    ($w:literal, $now:literal) => {
        concat!(
            "(",
            $w,
            "stopped_at_ms IS NULL AND ",
            $w,
            "heartbeat_at_ms + ",
            $w,
            "lease_ms > ",
            $now,
            ")"
        )
    };
}

/// A worker of a run as `status` shows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct WorkerRow {
    pub id: i64,
    pub host: String,
    pub pid: i64,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub stopped_at_ms: Option<i64>,
    pub jobs_done: i64,
    pub spent_pico_usd: i64,
    /// Pending jobs under its lease now.
    pub in_hand: i64,
    /// Its last heartbeat is within its lease, and it has not stopped.
    pub alive: bool,
    /// Ms since its last heartbeat, by the database's clock.
    pub silent_ms: i64,
}

/// What is left of a run for its workers.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Unfinished {
    /// Jobs still pending, in anyone's hand or not.
    pub pending: i64,
    /// Every row of its input is stored.
    pub loaded: bool,
}

impl Store {
    fn workers_need_postgres(&self) -> Result<(), StoreError> {
        match self.dialect() {
            Dialect::Postgres => Ok(()),
            Dialect::Sqlite => Err(StoreError::NeedsPostgres),
        }
    }

    /// Registers this process as a worker of a run, its leases lasting `lease`. Returns its
    /// id, and the database's time once the registration is committed: every heartbeat of
    /// another worker after it counts this one.
    pub async fn register_worker(
        &self,
        run_id: i64,
        lease: Duration,
    ) -> Result<(i64, i64), StoreError> {
        self.workers_need_postgres()?;
        let id = self
            .value(
                Sql::new(concat!(
                "INSERT INTO workers (run_id, host, pid, started_at_ms, heartbeat_at_ms, lease_ms)
                 VALUES ($1, $2, $3, ",
                db_now!(),
                ", ",
                db_now!(),
                ", $4) RETURNING id"
            ))
                .bind(run_id)
                .bind(super::host_name())
                .bind(i64::from(std::process::id()))
                .bind(super::millis(lease)),
            )
            .await?;
        let committed = self.value(Sql::new(concat!("SELECT ", db_now!()))).await?;
        Ok((id, committed))
    }

    /// Whether no live worker of `worker`'s run registered before it.
    pub async fn first_live(&self, worker: i64) -> Result<bool, StoreError> {
        let before: i64 = self
            .value(
                Sql::new(concat!(
                    "SELECT COUNT(*) FROM workers o JOIN workers w ON w.run_id = o.run_id
                     WHERE w.id = $1 AND o.id < $1 AND ",
                    alive!("o.")
                ))
                .bind(worker),
            )
            .await?;
        Ok(before == 0)
    }

    /// Live workers of `worker`'s run, other than itself, whose last heartbeat came before
    /// `since` (by the database's clock): those that may not have counted it yet.
    pub async fn not_yet_counted(&self, worker: i64, since: i64) -> Result<i64, StoreError> {
        self.value(
            Sql::new(concat!(
                "SELECT COUNT(*) FROM workers o JOIN workers w ON w.run_id = o.run_id
                 WHERE w.id = $1 AND o.id != $1 AND ",
                alive!("o."),
                " AND o.heartbeat_at_ms <= $2"
            ))
            .bind(worker)
            .bind(since),
        )
        .await
    }

    /// Says the worker is alive and renews the leases of every job in its hand; returns how
    /// many workers of its run are alive now, itself included. Jobs whose rows the writer
    /// holds are skipped, not waited for: their outcome is being committed, and waiting on
    /// them while holding the worker's row (which the writer updates last) could deadlock.
    pub async fn heartbeat(&self, worker: i64) -> Result<i64, StoreError> {
        self.workers_need_postgres()?;
        let mut tx = self.begin().await?;
        let (run_id, lease_ms): (i64, i64) = tx
            .one(
                Sql::new(concat!(
                    "UPDATE workers SET heartbeat_at_ms = ",
                    db_now!(),
                    " WHERE id = $1 RETURNING run_id, lease_ms"
                ))
                .bind(worker),
            )
            .await?;
        tx.execute(
            Sql::new(concat!(
                "UPDATE jobs SET lease_until_ms = ",
                db_now!(),
                " + $2 WHERE id IN (SELECT id FROM jobs WHERE lease_worker = $1
                                       AND state = 'pending'
                                     FOR UPDATE SKIP LOCKED)"
            ))
            .bind(worker)
            .bind(lease_ms),
        )
        .await?;
        let (alive,): (i64,) = tx
            .one(
                Sql::new(concat!(
                    "SELECT COUNT(*) FROM workers WHERE run_id = $1 AND ",
                    alive!("")
                ))
                .bind(run_id),
            )
            .await?;
        tx.commit().await?;
        Ok(alive)
    }

    /// Claims up to `limit` pending jobs of a run that no live lease holds, in row order,
    /// under a new lease for `worker`. Each comes with its fencing token; rows another worker
    /// is claiming at the same moment are skipped, not waited for.
    pub async fn claim_jobs(
        &self,
        run_id: i64,
        worker: i64,
        limit: i64,
    ) -> Result<Vec<PendingJob>, StoreError> {
        self.workers_need_postgres()?;
        let mut jobs: Vec<PendingJob> = self
            .all(
                Sql::new(concat!(
                    "WITH now AS (SELECT ",
                    db_now!(),
                    " AS ms),
                     free AS (SELECT id FROM jobs, now
                              WHERE run_id = $1 AND state = 'pending'
                                AND (lease_until_ms IS NULL OR lease_until_ms < now.ms)
                              ORDER BY id LIMIT $3 FOR UPDATE OF jobs SKIP LOCKED)
                     UPDATE jobs SET lease_worker = $2, lease_token = nextval('lease_tokens'),
                                     lease_until_ms = now.ms
                                         + (SELECT lease_ms FROM workers WHERE id = $2)
                     FROM free, now WHERE jobs.id = free.id
                     RETURNING jobs.id, jobs.job_id, jobs.model, jobs.request, jobs.attempts,
                               jobs.expect, jobs.lease_token AS lease"
                ))
                .bind(run_id)
                .bind(worker)
                .bind(limit),
            )
            .await?;
        jobs.sort_unstable_by_key(|job| job.id);
        Ok(jobs)
    }

    /// How many jobs of a run are still pending, and whether all its rows are stored.
    pub async fn unfinished(&self, run_id: i64) -> Result<Unfinished, StoreError> {
        self.one(
            Sql::new(
                "SELECT (SELECT COUNT(*) FROM jobs WHERE run_id = $1 AND state = 'pending')
                            AS pending,
                        loaded
                 FROM runs WHERE id = $1",
            )
            .bind(run_id),
        )
        .await
    }

    /// Marks a worker stopped: the leases of jobs still in its hand are released for the
    /// others at once, and what it was granted of the budget and did not spend goes back.
    pub async fn stop_worker(&self, worker: i64) -> Result<(), StoreError> {
        self.workers_need_postgres()?;
        let mut tx = self.begin().await?;
        tx.execute(
            Sql::new(
                "UPDATE jobs SET lease_worker = NULL, lease_token = NULL, lease_until_ms = NULL
                 WHERE lease_worker = $1",
            )
            .bind(worker),
        )
        .await?;
        tx.execute(
            Sql::new(concat!(
                "UPDATE workers SET stopped_at_ms = ",
                db_now!(),
                ", granted_pico_usd = spent_pico_usd WHERE id = $1"
            ))
            .bind(worker),
        )
        .await?;
        tx.commit().await
    }

    /// Live workers of a run other than `worker`.
    pub async fn other_live_workers(&self, run_id: i64, worker: i64) -> Result<i64, StoreError> {
        self.value(
            Sql::new(concat!(
                "SELECT COUNT(*) FROM workers WHERE run_id = $1 AND id != $2 AND ",
                alive!("")
            ))
            .bind(run_id)
            .bind(worker),
        )
        .await
    }

    /// Every worker a run has had, live ones first, then by when they started. Empty on a
    /// SQLite store.
    pub async fn workers(&self, run_id: i64) -> Result<Vec<WorkerRow>, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            return Ok(Vec::new());
        }
        self.all(
            Sql::new(concat!(
                "WITH now AS (SELECT ",
                db_now!(),
                " AS ms)
                 SELECT w.id, w.host, w.pid, w.started_at_ms, w.heartbeat_at_ms, w.stopped_at_ms,
                        w.jobs_done, w.spent_pico_usd,
                        (SELECT COUNT(*) FROM jobs j WHERE j.lease_worker = w.id
                           AND j.state = 'pending' AND j.lease_until_ms >= now.ms) AS in_hand,
                        ",
                alive!("w.", "now.ms"),
                " AS alive,
                        now.ms - w.heartbeat_at_ms AS silent_ms
                 FROM workers w, now WHERE w.run_id = $1
                 ORDER BY 10 DESC, w.started_at_ms"
            ))
            .bind(run_id),
        )
        .await
    }

    /// Grants a worker up to `want` more of its run's budget (`limit`), and at least `need`,
    /// or nothing when `need` does not fit; returns what was added. What the run has
    /// committed is what its results and judges cost (as its report counts them: judges
    /// billed for no verdict included), and what each live worker was granted and has not
    /// spent; a worker that stopped or went silent holds nothing more.
    pub async fn grant_budget(
        &self,
        worker: i64,
        limit: i64,
        need: i64,
        want: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.workers_need_postgres()?;
        let mut tx = self.begin().await?;
        // One grant at a time per run: the run's row is the lock.
        let (run_id,): (i64,) = tx
            .one(
                Sql::new(
                    "SELECT r.id FROM runs r JOIN workers w ON w.run_id = r.id
                     WHERE w.id = $1 FOR UPDATE OF r",
                )
                .bind(worker),
            )
            .await?;
        let (committed,): (i64,) = tx
            .one(
                Sql::new(concat!(
                    "SELECT CAST(
                        COALESCE((SELECT SUM(r.cost_pico_usd) FROM results r
                                  JOIN jobs j ON j.id = r.job WHERE j.run_id = $1), 0)
                      + ",
                    judge_spend!(),
                    "
                      + COALESCE((SELECT SUM(GREATEST(granted_pico_usd - spent_pico_usd, 0))
                                  FROM workers WHERE run_id = $1 AND ",
                    alive!(""),
                    "), 0) AS BIGINT)"
                ))
                .bind(run_id),
            )
            .await?;
        let free = limit.saturating_sub(committed);
        if free < need {
            tx.commit().await?;
            return Ok(None);
        }
        let added = want.min(free).max(need);
        tx.execute(
            Sql::new(
                "UPDATE workers SET granted_pico_usd = GREATEST(granted_pico_usd, spent_pico_usd) + $2
                 WHERE id = $1",
            )
            .bind(worker)
            .bind(added),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(added))
    }
}
