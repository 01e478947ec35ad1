//! How many requests a run keeps in flight: `--concurrency` is the most, not a constant. The
//! run starts gently (the API has acceleration limits as well as rate limits) and doubles its
//! pace each round of clean answers until the first sign of overload; after that it adds one
//! request per round of clean answers. A 429 or 529 halves it, at most once per round, so one
//! burst of refusals is one step down, not a collapse. An overloaded request is the gateway's
//! state: slowing everyone a little replaces pausing everyone for each overloaded answer.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests in flight when a run starts, at most.
const START: usize = 4;

/// The run's concurrency, additive increase and multiplicative decrease.
#[derive(Debug)]
pub struct Pace {
    permits: Arc<Semaphore>,
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Requests allowed in flight now.
    target: usize,
    /// Clean answers since the target last changed.
    clean: usize,
    /// Still doubling: no overload seen yet.
    slow_start: bool,
    /// Answers to wait for before the next decrease: the rest of the round in flight when the
    /// last one happened.
    hold_decrease: usize,
}

impl Pace {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        let target = START.min(max);
        Self {
            permits: Arc::new(Semaphore::new(target)),
            max,
            state: Mutex::new(State {
                target,
                clean: 0,
                slow_start: true,
                hold_decrease: 0,
            }),
        }
    }

    /// Waits for room for one more request in flight.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
        Arc::clone(&self.permits).acquire_owned().await
    }

    /// Requests allowed in flight now.
    pub fn target(&self) -> usize {
        self.lock().target
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A clean answer: after a round of them (as many as the target), the pace rises: it
    /// doubles in slow start, else grows by one.
    pub fn answered(&self) {
        let mut state = self.lock();
        state.hold_decrease = state.hold_decrease.saturating_sub(1);
        state.clean += 1;
        if state.clean < state.target || state.target >= self.max {
            return;
        }
        state.clean = 0;
        let grown = if state.slow_start {
            (state.target * 2).min(self.max)
        } else {
            state.target + 1
        };
        self.permits.add_permits(grown - state.target);
        state.target = grown;
    }

    /// A 429 or 529: the pace halves, once for the round that was in flight.
    pub fn overloaded(&self) {
        let mut state = self.lock();
        state.slow_start = false;
        state.clean = 0;
        if state.hold_decrease > 0 || state.target == 1 {
            return;
        }
        let halved = (state.target / 2).max(1);
        let cut = state.target - halved;
        state.target = halved;
        state.hold_decrease = halved + cut;
        // Permits come back as requests finish; the cut ones are taken out as they do.
        let cut = u32::try_from(cut).unwrap_or(u32::MAX);
        if let Ok(taken) = self.permits.try_acquire_many(cut) {
            taken.forget();
            return;
        }
        let permits = Arc::clone(&self.permits);
        tokio::spawn(async move {
            if let Ok(taken) = permits.acquire_many_owned(cut).await {
                taken.forget();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pace_doubles_until_overload_then_halves_once_and_grows_by_one() {
        let pace = Pace::new(64);
        assert_eq!(pace.target(), 4);
        for _ in 0..4 {
            pace.answered();
        }
        assert_eq!(pace.target(), 8);
        for _ in 0..8 {
            pace.answered();
        }
        assert_eq!(pace.target(), 16);
        // A burst of refusals from one round is one step down.
        pace.overloaded();
        pace.overloaded();
        pace.overloaded();
        assert_eq!(pace.target(), 8);
        // After the round in flight has answered, clean rounds add one each.
        for _ in 0..16 {
            pace.answered();
        }
        let after = pace.target();
        assert!((8..=9).contains(&after), "{after}");
        for _ in 0..after {
            pace.answered();
        }
        assert_eq!(pace.target(), after + 1);
        // Never below one, never above the most.
        for _ in 0..20 {
            pace.overloaded();
            for _ in 0..64 {
                pace.answered();
            }
        }
        assert!(pace.target() >= 1 && pace.target() <= 64);
    }

    #[tokio::test]
    async fn permits_follow_the_target() {
        let pace = Pace::new(8);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pace.acquire().await.unwrap());
        }
        assert!(
            pace.permits.try_acquire().is_err(),
            "four in flight at the start"
        );
        pace.overloaded();
        drop(held);
        tokio::task::yield_now().await;
        // Halved to two: two may start, not a third.
        let a = pace.acquire().await.unwrap();
        let b = pace.acquire().await.unwrap();
        assert!(pace.permits.try_acquire().is_err());
        drop((a, b));
    }
}
