//! What the server computes in the background and keeps: a run's report, its models compared,
//! two runs compared. Each takes seconds over a million results, so a request waits for it a
//! moment and, when it is not ready by then, answers without it and looks again later; the
//! computation goes on, one per key at a time. What was computed for a finished run is kept
//! while the run stays as it was; what was computed for a run still moving holds for
//! [`MOVING_AGE`].

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::store::{RunRow, RunStatus};

use super::data::ViewError;

/// How old a result computed for a run still moving may be and still be shown as current:
/// a later look has it computed again. (Its page's counters are read afresh every time.)
pub const MOVING_AGE: Duration = Duration::from_secs(5);

/// A computed result as a request finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Computed for the runs as they are.
    Ready,
    /// Being computed in the background; the one shown, if any, is the last one computed (of
    /// a run still moving).
    Computing,
}

/// What a result computed for a run holds for: the same finished run (a resumed run is
/// running again, and finishes later).
pub type Stamp = (RunStatus, Option<i64>);

/// The stamp of a finished run; `None` for a run that may still move.
pub fn stamp(run: &RunRow) -> Option<Stamp> {
    let settled = matches!(
        run.status,
        RunStatus::Completed | RunStatus::Interrupted | RunStatus::BudgetExhausted
    ) && run.loaded;
    settled.then_some((run.status, run.finished_at_ms))
}

/// A result's rough size in bytes, for what a cache keeps.
pub trait Weigh {
    fn weight(&self) -> usize;
}

/// Results computed in the background by key, each for its runs' stamp `S`.
pub struct Kept<K, S, V> {
    slots: Mutex<HashMap<K, Slot<S, V>>>,
    /// The most the finished results kept may weigh together; the least recently used go
    /// first, and the last one asked for always stays.
    budget: usize,
    /// Held while a result is computed for finished runs, or while anything is when
    /// `always_one_at_a_time`: shared by the caches whose computations are heavy.
    building: Arc<tokio::sync::Mutex<()>>,
    always_one_at_a_time: bool,
}

struct Slot<S, V> {
    /// The last result computed: for the runs as they were then (their stamp, `None` for
    /// runs that may still move), and when it was done.
    done: Option<(Option<S>, Instant, Arc<V>)>,
    /// A computation under way, which says `true` when it ends: at most one per key.
    computing: Option<tokio::sync::watch::Receiver<bool>>,
    /// Why the last computation failed, for the runs as they were then and when: it is
    /// said again, not computed again, while it holds as a result would.
    failed: Option<(Option<S>, Instant, String)>,
    /// When it was last asked for.
    used: Instant,
}

impl<S, V> Slot<S, V> {
    fn new() -> Self {
        Self {
            done: None,
            computing: None,
            failed: None,
            used: Instant::now(),
        }
    }
}

impl<S: PartialEq, V> Slot<S, V> {
    /// The result computed for `stamp`: for finished runs, the one of those runs; for runs
    /// that may still move, one done at most [`MOVING_AGE`] before `asked`.
    fn ready(&self, stamp: Option<&S>, asked: Instant) -> Option<Arc<V>> {
        let (at_stamp, at, value) = self.done.as_ref()?;
        let current = match stamp {
            Some(_) => at_stamp.as_ref() == stamp,
            None => *at + MOVING_AGE >= asked,
        };
        current.then(|| value.clone())
    }
}

impl<S: PartialEq, V> Slot<S, V> {
    /// Why the computation for `stamp` failed, while that holds as a result would (see
    /// [`Slot::ready`]).
    fn failure(&self, stamp: Option<&S>, asked: Instant) -> Option<ViewError> {
        let (at_stamp, at, why) = self.failed.as_ref()?;
        let current = match stamp {
            Some(_) => at_stamp.as_ref() == stamp,
            None => *at + MOVING_AGE >= asked,
        };
        current.then(|| ViewError::Internal(anyhow::anyhow!("{why}")))
    }
}

impl<K, S, V> Kept<K, S, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    S: PartialEq + Clone + Send + 'static,
    V: Weigh + Send + Sync + 'static,
{
    pub fn new(
        budget: usize,
        building: Arc<tokio::sync::Mutex<()>>,
        always_one_at_a_time: bool,
    ) -> Self {
        Self {
            slots: Mutex::default(),
            budget,
            building,
            always_one_at_a_time,
        }
    }

    /// The result for `key` computed for `stamp`, waiting no longer than `wait` (`None`: as
    /// long as it takes) for `compute` to make it when none is kept. The computation runs
    /// in the background and goes on when the request stops waiting: the next look finds it
    /// done. When it is not ready, the last result of runs still moving stands in.
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        key: K,
        stamp: Option<S>,
        wait: Option<Duration>,
        compute: F,
    ) -> Result<(Status, Option<Arc<V>>), ViewError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, ViewError>> + Send + 'static,
    {
        let asked = Instant::now();
        let settled = stamp.is_some();
        let current = stamp.clone();
        let mut done = {
            let mut slots = self.lock();
            let slot = slots.entry(key.clone()).or_insert_with(Slot::new);
            slot.used = asked;
            if let Some(value) = slot.ready(stamp.as_ref(), asked) {
                return Ok((Status::Ready, Some(value)));
            }
            if slot.computing.is_none()
                && let Some(failed) = slot.failure(stamp.as_ref(), asked)
            {
                return Err(failed);
            }
            match &slot.computing {
                Some(done) => done.clone(),
                None => {
                    let (tell, done) = tokio::sync::watch::channel(false);
                    slot.computing = Some(done.clone());
                    let kept = Arc::clone(self);
                    let key = key.clone();
                    let computation = compute();
                    tokio::spawn(async move {
                        let _one_at_a_time = if settled || kept.always_one_at_a_time {
                            Some(kept.building.lock().await)
                        } else {
                            None
                        };
                        // On a task of its own, so that a panic ends it as a failure
                        // rather than leaving it under way for good.
                        let computed = match tokio::spawn(computation).await {
                            Ok(computed) => computed,
                            Err(e) => Err(ViewError::Internal(anyhow::anyhow!(
                                "the computation stopped: {e}"
                            ))),
                        };
                        let mut slots = kept.lock();
                        let slot = slots.entry(key.clone()).or_insert_with(Slot::new);
                        match computed {
                            Ok(value) => {
                                slot.done = Some((stamp, Instant::now(), Arc::new(value)));
                                slot.failed = None;
                            }
                            Err(e) => slot.failed = Some((stamp, Instant::now(), format!("{e:#}"))),
                        }
                        slot.computing = None;
                        kept.trim(&mut slots, &key);
                        drop(slots);
                        tell.send_replace(true);
                    });
                    done
                }
            }
        };
        let ended = done.wait_for(|ended| *ended);
        match wait {
            Some(wait) => {
                let _ = tokio::time::timeout(wait, ended).await;
            }
            None => {
                let _ = ended.await;
            }
        }
        let slots = self.lock();
        let Some(slot) = slots.get(&key) else {
            return Ok((Status::Computing, None));
        };
        if let Some(value) = slot.ready(current.as_ref(), asked) {
            return Ok((Status::Ready, Some(value)));
        }
        if slot.computing.is_none()
            && let Some(failed) = slot.failure(current.as_ref(), asked)
        {
            return Err(failed);
        }
        // The last result of runs still moving stands in while the next one is computed.
        let shown = slot
            .done
            .as_ref()
            .filter(|_| !settled)
            .map(|(.., value)| value.clone());
        Ok((Status::Computing, shown))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<S, V>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the least recently asked-for results until those kept weigh no more than the
    /// budget; `kept` (just computed) and the one last asked for stay whatever they weigh.
    fn trim(&self, slots: &mut HashMap<K, Slot<S, V>>, kept: &K) {
        loop {
            let weight: usize = slots
                .values()
                .filter_map(|s| s.done.as_ref())
                .map(|(.., v)| v.weight())
                .sum();
            if weight <= self.budget {
                return;
            }
            let newest = slots
                .iter()
                .max_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            let oldest = slots
                .iter()
                .filter(|(k, s)| *k != kept && Some(*k) != newest.as_ref() && s.done.is_some())
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { return };
            if let Some(slot) = slots.get_mut(&oldest) {
                slot.done = None;
                if slot.computing.is_none() {
                    slots.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    impl Weigh for u64 {
        fn weight(&self) -> usize {
            usize::try_from(*self).unwrap_or(usize::MAX)
        }
    }

    fn kept(budget: usize) -> Arc<Kept<i64, i64, u64>> {
        Arc::new(Kept::new(
            budget,
            Arc::new(tokio::sync::Mutex::new(())),
            true,
        ))
    }

    /// A computation that failed for runs as they are is said again, not run again; one of
    /// runs still moving is run again once it is old.
    #[tokio::test]
    async fn a_failure_is_said_again_for_the_same_runs_not_computed_again() {
        let kept = kept(100);
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let counted = runs.clone();
            let got = kept
                .get(1, Some(7), None, move || async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Err::<u64, _>(ViewError::Internal(anyhow::anyhow!("cost overflow")))
                })
                .await;
            let Err(ViewError::Internal(why)) = got else {
                panic!("the failure is said: {got:?}", got = got.map(|(s, _)| s));
            };
            assert!(why.to_string().contains("cost overflow"), "{why}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "computed once");
        // Another stamp (the run resumed and finished again) is computed anew.
        let got = kept
            .get(1, Some(8), None, || async { Ok::<u64, ViewError>(5) })
            .await
            .map(|(status, value)| (status, value.map(|v| *v)));
        assert!(matches!(got, Ok((Status::Ready, Some(5)))));
    }

    /// A computation that panics ends as a failure; the next look computes again rather than
    /// waiting for it for good.
    #[tokio::test]
    async fn a_computation_that_panics_is_a_failure_not_one_under_way_for_good() {
        let kept = kept(100);
        let got = kept
            .get(2, None, None, || async {
                if true {
                    panic!("a bug");
                }
                Ok::<u64, ViewError>(1)
            })
            .await;
        assert!(got.is_err(), "the panic is said");
        tokio::time::pause();
        tokio::time::advance(MOVING_AGE + Duration::from_secs(1)).await;
        let got = kept
            .get(2, None, None, || async { Ok::<u64, ViewError>(3) })
            .await
            .map(|(status, value)| (status, value.map(|v| *v)));
        assert!(
            matches!(got, Ok((Status::Ready, Some(3)))),
            "computed again"
        );
    }

    /// Results beyond the budget are dropped least recently asked-for first, but never the
    /// one just computed nor the one last asked for.
    #[tokio::test]
    async fn the_budget_drops_the_least_recently_asked_for_first() {
        let kept = kept(10);
        for key in [1, 2] {
            let (status, _) = kept
                .get(key, Some(0), None, || async { Ok::<u64, ViewError>(6) })
                .await
                .unwrap();
            assert_eq!(status, Status::Ready);
        }
        let slots = kept.lock();
        assert!(slots.get(&1).is_none_or(|s| s.done.is_none()), "1 dropped");
        assert!(slots.get(&2).is_some_and(|s| s.done.is_some()), "2 kept");
    }
}
