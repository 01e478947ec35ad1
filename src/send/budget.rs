//! The `--max-cost` budget of a run: what may be spent, what was spent, and what requests in
//! flight hold.

use std::sync::{Arc, Mutex};

use super::progress::Counters;
use crate::pricing::format_usd;

/// The budget of a command: what may be spent, what was spent, and what requests in flight
/// hold. Jobs and judges reserve their worst case here before they are sent and settle with
/// their real cost once it is committed, so a run never passes `--max-cost`. The progress bar
/// reads the same counters.
pub struct Ledger {
    /// `None` when there is no budget: every reservation is granted and nothing is held.
    limit: Option<u64>,
    /// Spent in earlier sessions of the run (results and judges).
    spent_before: u64,
    counters: Arc<Counters>,
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
    store: crate::store::Store,
    worker: i64,
    granted: std::sync::atomic::AtomicU64,
}

/// A request that the budget cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget(pub String);

impl Ledger {
    pub fn new(limit: Option<u64>, spent_before: u64, counters: Arc<Counters>) -> Self {
        Self {
            limit,
            spent_before,
            counters,
            reserving: Mutex::new(()),
            settled: tokio::sync::watch::Sender::new(0),
            shared: None,
        }
    }

    /// The ledger of one worker of a shared run: it may spend what the store grants it of
    /// `limit`, which the store shares out among the run's workers (see
    /// [`crate::store::Store::grant_budget`]).
    pub fn shared(
        limit: Option<u64>,
        counters: Arc<Counters>,
        store: crate::store::Store,
        worker: i64,
    ) -> Self {
        Self {
            shared: limit.map(|_| SharedBudget {
                store,
                worker,
                granted: std::sync::atomic::AtomicU64::new(0),
            }),
            ..Self::new(limit, 0, counters)
        }
    }

    /// [`Ledger::reserve`], asking the store for a larger grant of a shared run's budget when
    /// this worker's is spent or held.
    pub async fn reserve_shared(&self, worst: Option<u64>, what: &str) -> Result<u64, OverBudget> {
        let refused = match self.reserve(worst, what) {
            Ok(held) => return Ok(held),
            Err(refused) => refused,
        };
        let (Some(shared), Some(limit), Some(worst)) = (&self.shared, self.limit, worst) else {
            return Err(refused);
        };
        let granted = shared.granted.load(std::sync::atomic::Ordering::Relaxed);
        let spent = Counters::get(&self.counters.spend_pico_usd);
        let held = Counters::get(&self.counters.reserved_pico_usd);
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
                shared.granted.fetch_add(
                    u64::try_from(added).unwrap_or(0),
                    std::sync::atomic::Ordering::Relaxed,
                );
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

    /// What reservations hold now.
    pub fn held(&self) -> u64 {
        Counters::get(&self.counters.reserved_pico_usd)
    }

    /// Changes each time a reservation is settled.
    pub fn settlements(&self) -> tokio::sync::watch::Receiver<u64> {
        self.settled.subscribe()
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Holds `worst` (the most the request can cost; `None` for a model without a price)
    /// against the budget. Returns what is held, to be passed to [`Ledger::settle`].
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
        let spent = self.spent_before + Counters::get(&self.counters.spend_pico_usd);
        let held = Counters::get(&self.counters.reserved_pico_usd);
        // A worker of a shared run may use what it was granted; the rest is the others'.
        let limit = self.shared.as_ref().map_or(limit, |shared| {
            shared.granted.load(std::sync::atomic::Ordering::Relaxed)
        });
        if spent + held + worst > limit {
            return Err(OverBudget(format!(
                "the next {what} could pass the --max-cost budget of {} (spent {}, {} held for requests in flight, up to {} for the next)",
                format_usd(limit),
                format_usd(spent),
                format_usd(held),
                format_usd(worst)
            )));
        }
        Counters::add(&self.counters.reserved_pico_usd, worst);
        Ok(worst)
    }

    /// Releases a reservation once the request's real cost is committed, and counts the cost.
    pub fn settle(&self, held: u64, cost: u64) {
        Counters::add(&self.counters.spend_pico_usd, cost);
        Counters::sub(&self.counters.reserved_pico_usd, held);
        if held > 0 {
            self.settled.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_holds_worst_cases_until_they_settle_and_never_passes_the_limit() {
        let counters = Arc::new(Counters::default());
        let ledger = Ledger::new(Some(100), 20, Arc::clone(&counters));
        assert_eq!(ledger.reserve(Some(50), "job"), Ok(50));
        // 20 spent before + 50 held + 40 > 100.
        let refused = ledger.reserve(Some(40), "job").unwrap_err();
        assert!(
            refused
                .0
                .starts_with("the next job could pass the --max-cost budget")
        );
        // The first request cost 10: 20 + 10 spent, 0 held, 70 fit exactly.
        ledger.settle(50, 10);
        assert_eq!(ledger.reserve(Some(70), "judge request"), Ok(70));
        assert!(ledger.reserve(Some(1), "job").is_err());
        assert!(
            ledger
                .reserve(None, "job")
                .unwrap_err()
                .0
                .contains("no price")
        );
        let unbounded = Ledger::new(None, 0, counters);
        assert_eq!(unbounded.reserve(None, "job"), Ok(0));
    }
}
