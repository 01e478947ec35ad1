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
    /// Why the last computation failed, for the requests that waited for it.
    failed: Option<String>,
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
                        let computed = computation.await;
                        let mut slots = kept.lock();
                        let slot = slots.entry(key.clone()).or_insert_with(Slot::new);
                        match computed {
                            Ok(value) => {
                                slot.done = Some((stamp, Instant::now(), Arc::new(value)));
                                slot.failed = None;
                            }
                            Err(e) => slot.failed = Some(format!("{e:#}")),
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
            && let Some(failed) = &slot.failed
        {
            return Err(ViewError::Internal(anyhow::anyhow!("{failed}")));
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
    /// budget; `kept` (just computed) stays whatever it weighs.
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
            let oldest = slots
                .iter()
                .filter(|(k, s)| *k != kept && s.done.is_some())
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
