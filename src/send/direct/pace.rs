//! How many requests a run keeps in flight: `--concurrency` is the most, not a constant. The
//! run starts at the most, as the user asked: the rate limits are kept by the limiter, and a
//! slow start would leave the first round-trips of every session idle (four of them, from four
//! requests, at concurrency 64). A 429 (a rate limit is reached, or the API's acceleration
//! limit) halves the pace at once, at most once per round; clean rounds then add one request
//! each. A 529 overloads one request: a round in which more than a fifth of the answers (and
//! more than two) were 529s halves the pace, while a 529 here and there changes nothing.
//! An overloaded gateway slows the run a little instead of pausing it for each answer.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Answers to wait for before the next decrease: the rest of the round in flight when the
    /// last one happened.
    hold_decrease: usize,
    /// 529s among the answers of the current round.
    overloads: usize,
}

impl Pace {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        let target = max;
        Self {
            permits: Arc::new(Semaphore::new(target)),
            max,
            state: Mutex::new(State {
                target,
                clean: 0,
                hold_decrease: 0,
                overloads: 0,
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

    /// A clean answer: after a round of them (as many as the target), the pace grows by one.
    pub fn answered(&self) {
        let mut state = self.lock();
        state.hold_decrease = state.hold_decrease.saturating_sub(1);
        state.clean += 1;
        if state.clean + state.overloads < state.target {
            return;
        }
        // A round has answered (it did not overload the gateway, or the pace would have been
        // cut): the pace grows.
        state.clean = 0;
        state.overloads = 0;
        if state.target >= self.max {
            return;
        }
        self.permits.add_permits(1);
        state.target += 1;
    }

    /// A 529: counted against the round; a round with more than a fifth of them halves the
    /// pace.
    pub fn overloaded(&self) {
        let mut state = self.lock();
        state.overloads += 1;
        state.hold_decrease = state.hold_decrease.saturating_sub(1);
        // More than a fifth of the round, and more than two: at a low pace one 529 is chance.
        if state.overloads > (state.target / 5).max(2) {
            state.overloads = 0;
            self.decrease(&mut state);
        }
    }

    /// A 429: the pace halves, once for the round that was in flight.
    pub fn rate_limited(&self) {
        let mut state = self.lock();
        self.decrease(&mut state);
    }

    fn decrease(&self, state: &mut State) {
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
    async fn the_pace_starts_at_the_most_halves_once_per_round_and_grows_by_one() {
        let pace = Pace::new(64);
        assert_eq!(pace.target(), 64, "no slow start");
        // A burst of refusals from one round is one step down.
        pace.rate_limited();
        pace.rate_limited();
        pace.rate_limited();
        assert_eq!(pace.target(), 32);
        // After the round in flight has answered, clean rounds add one each.
        for _ in 0..64 {
            pace.answered();
        }
        let after = pace.target();
        assert!((32..=33).contains(&after), "{after}");
        for _ in 0..after {
            pace.answered();
        }
        assert_eq!(pace.target(), after + 1);
        // Never below one, never above the most.
        for _ in 0..20 {
            pace.rate_limited();
            for _ in 0..64 {
                pace.answered();
            }
        }
        assert!(pace.target() >= 1 && pace.target() <= 64);
        for _ in 0..64 * 64 {
            pace.answered();
        }
        assert_eq!(pace.target(), 64, "never above the most");
    }

    #[tokio::test]
    async fn permits_follow_the_target() {
        let pace = Pace::new(4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pace.acquire().await.unwrap());
        }
        assert!(
            pace.permits.try_acquire().is_err(),
            "four in flight, the most"
        );
        pace.rate_limited();
        drop(held);
        tokio::task::yield_now().await;
        // Halved to two: two may start, not a third.
        let a = pace.acquire().await.unwrap();
        let b = pace.acquire().await.unwrap();
        assert!(pace.permits.try_acquire().is_err());
        drop((a, b));
    }

    #[tokio::test]
    async fn a_529_here_and_there_holds_the_pace_and_a_storm_halves_it() {
        let pace = Pace::new(64);
        // One 529 in a round of 64: no cut.
        pace.overloaded();
        for _ in 0..63 {
            pace.answered();
        }
        assert_eq!(pace.target(), 64);
        // Thirteen in a round of 64 (more than a fifth): halved.
        for _ in 0..13 {
            pace.overloaded();
        }
        assert_eq!(pace.target(), 32);
    }
}
