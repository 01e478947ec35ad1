//! The `--max-cost` budget of a run: what may be spent, what was spent, and what requests in
//! flight hold.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::pricing::format_usd;
use crate::store::Store;

/// The budget of a command: what may be spent, what was spent, and what requests in flight
/// hold. Jobs and judges reserve their worst case here before they are sent and settle with
/// their real cost once it is committed, so a run never passes `--max-cost`. The direct way
/// keeps one for each pipeline (jobs, then judges); the progress bar reads what it spent.
pub struct Budget {
    /// `None` when there is no budget: every reservation is granted and nothing is held.
    limit: Option<u64>,
    /// Spent in earlier sessions of the run (results and judges).
    spent_before: u64,
    /// Spent in this session (committed results and judges).
    spent: AtomicU64,
    /// Worst cases of the requests in flight.
    held: AtomicU64,
    /// Held while a reservation is checked and made, so two requests cannot both take the
    /// last of the budget.
    reserving: Mutex<()>,
    /// Counts settlements, for a dispatcher waiting for a reservation to be released.
    settled: tokio::sync::watch::Sender<u64>,
    /// A worker of a run shared through a PostgreSQL store holds only what it was granted of
    /// the run's budget, and asks the store for more as it goes.
    shared: Option<SharedBudget>,
}

/// A worker's part of a shared run's budget: its grant so far, over this session.
struct SharedBudget {
    store: Store,
    worker: i64,
    granted: AtomicU64,
}

/// A request that the budget cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget(pub String);

impl Budget {
    pub fn new(limit: Option<u64>, spent_before: u64) -> Self {
        Self {
            limit,
            spent_before,
            spent: AtomicU64::new(0),
            held: AtomicU64::new(0),
            reserving: Mutex::new(()),
            settled: tokio::sync::watch::Sender::new(0),
            shared: None,
        }
    }

    /// The budget of one worker of a shared run: it may spend what the store grants it of
    /// `limit`, which the store shares out among the run's workers (see
    /// [`crate::store::Store::grant_budget`]).
    pub fn shared(limit: Option<u64>, store: Store, worker: i64) -> Self {
        Self {
            shared: limit.map(|_| SharedBudget {
                store,
                worker,
                granted: AtomicU64::new(0),
            }),
            ..Self::new(limit, 0)
        }
    }

    /// [`Budget::reserve`], asking the store for a larger grant of a shared run's budget when
    /// this worker's is spent or held.
    pub async fn reserve_shared(&self, worst: Option<u64>, what: &str) -> Result<u64, OverBudget> {
        let refused = match self.reserve(worst, what) {
            Ok(held) => return Ok(held),
            Err(refused) => refused,
        };
        let (Some(shared), Some(limit), Some(worst)) = (&self.shared, self.limit, worst) else {
            return Err(refused);
        };
        let granted = shared.granted.load(Ordering::Relaxed);
        let spent = self.spent.load(Ordering::Relaxed);
        let held = self.held();
        let need = (spent + held + worst).saturating_sub(granted);
        // A fiftieth of the budget at a time, so that few grants are asked for, and little is
        // left in one worker's hand when the others run short.
        let want = need.max(limit / 50);
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        match shared
            .store
            .grant_budget(shared.worker, as_i64(limit), as_i64(need), as_i64(want))
            .await
        {
            Ok(Some(added)) => {
                shared
                    .granted
                    .fetch_add(u64::try_from(added).unwrap_or(0), Ordering::Relaxed);
                self.reserve(Some(worst), what)
            }
            Ok(None) => Err(OverBudget(format!(
                "the next {what} could pass the --max-cost budget of {} shared by the run's workers (the others hold or spent the rest; this one spent {} and holds {} for requests in flight)",
                format_usd(limit),
                format_usd(spent),
                format_usd(held)
            ))),
            Err(e) => Err(OverBudget(format!(
                "the run's budget could not be shared out ({e}); stopping rather than risk passing --max-cost"
            ))),
        }
    }

    /// The budget of a session of `run_id`: what earlier sessions spent (results and judges)
    /// counts against `limit`; a worker of a run shared through a PostgreSQL store (`worker`)
    /// spends what the store grants it instead, which counts every worker's spend.
    pub async fn for_run(
        limit: Option<u64>,
        store: &Store,
        run_id: i64,
        worker: Option<i64>,
    ) -> anyhow::Result<Self> {
        if let Some(worker) = worker {
            return Ok(Self::shared(limit, store.clone(), worker));
        }
        let spent_before = if limit.is_some() {
            spent_by(store, run_id).await?
        } else {
            0
        };
        Ok(Self::new(limit, spent_before))
    }

    /// What this session spent so far (committed results and judges).
    pub fn spent_this_session(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    /// What reservations hold now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Changes each time a reservation is settled.
    pub fn settlements(&self) -> tokio::sync::watch::Receiver<u64> {
        self.settled.subscribe()
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Holds `worst` (the most the request can cost; `None` for a model without a price)
    /// against the budget. Returns what is held, to be passed to [`Budget::settle`].
    pub fn reserve(&self, worst: Option<u64>, what: &str) -> Result<u64, OverBudget> {
        let Some(limit) = self.limit else {
            return Ok(0);
        };
        let Some(worst) = worst else {
            return Err(OverBudget(format!(
                "the next {what} is for a model with no price, so --max-cost cannot bound its cost (give --prices)"
            )));
        };
        let _guard = self.reserving.lock().unwrap_or_else(|e| e.into_inner());
        let spent = self.spent_before + self.spent.load(Ordering::Relaxed);
        let held = self.held();
        // A worker of a shared run may use what it was granted; the rest is the others'.
        let limit = self
            .shared
            .as_ref()
            .map_or(limit, |shared| shared.granted.load(Ordering::Relaxed));
        if spent + held + worst > limit {
            return Err(OverBudget(format!(
                "the next {what} could pass the --max-cost budget of {} (spent {}, {} held for requests in flight, up to {} for the next)",
                format_usd(limit),
                format_usd(spent),
                format_usd(held),
                format_usd(worst)
            )));
        }
        self.held.fetch_add(worst, Ordering::Relaxed);
        Ok(worst)
    }

    /// Releases a reservation once the request's real cost is committed, and counts the cost.
    pub fn settle(&self, held: u64, cost: u64) {
        self.spent.fetch_add(cost, Ordering::Relaxed);
        self.held.fetch_sub(held, Ordering::Relaxed);
        if held > 0 {
            self.settled.send_modify(|n| *n += 1);
        }
    }
}

/// What a run has spent over all its sessions: its results and its judges, as committed.
pub async fn spent_by(store: &Store, run_id: i64) -> anyhow::Result<u64> {
    let counts = store.run_counts(run_id).await?;
    let judges = store.judge_spend(run_id).await?;
    Ok(u64::try_from(counts.cost_pico_usd + judges).unwrap_or(0))
}

/// What a run sent through batches has spent, and the worst cases its open batches hold (at
/// the batch rates): the part of its budget that new batches cannot use. Open batches live on
/// the server between sessions, so this is read from the store, never kept in memory.
pub async fn held_by_batches(store: &Store, run_id: i64) -> anyhow::Result<u64> {
    let open: i64 = store
        .open_batches(run_id)
        .await?
        .iter()
        .map(|b| b.reserved_pico_usd)
        .sum();
    Ok(spent_by(store, run_id).await? + u64::try_from(open).unwrap_or(0))
}

/// Why the next job is not put in a batch: its worst case does not fit `limit` beside what is
/// `held` (see [`held_by_batches`]).
pub fn batch_over_budget(limit: u64, held: u64) -> String {
    format!(
        "the next job could pass the --max-cost budget of {} at the batch rates ({} spent or held by batches still open)",
        format_usd(limit),
        format_usd(held),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_worst_cases_until_they_settle_and_never_passes_the_limit() {
        let budget = Budget::new(Some(100), 20);
        assert_eq!(budget.reserve(Some(50), "job"), Ok(50));
        // 20 spent before + 50 held + 40 > 100.
        let refused = budget.reserve(Some(40), "job").unwrap_err();
        assert!(
            refused
                .0
                .starts_with("the next job could pass the --max-cost budget")
        );
        // The first request cost 10: 20 + 10 spent, 0 held, 70 fit exactly.
        budget.settle(50, 10);
        assert_eq!(budget.reserve(Some(70), "judge request"), Ok(70));
        assert!(budget.reserve(Some(1), "job").is_err());
        assert!(
            budget
                .reserve(None, "job")
                .unwrap_err()
                .0
                .contains("no price")
        );
        let unbounded = Budget::new(None, 0);
        assert_eq!(unbounded.reserve(None, "job"), Ok(0));
    }
}
