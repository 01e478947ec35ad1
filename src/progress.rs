//! The progress bar and the live counters behind it.
//!
//! Workers and the writer update [`Counters`]; the bar reads them when it redraws. Whether a
//! bar is drawn at all is decided once, by [`show_bar`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::pricing::PICO_PER_USD;

/// Live figures of a run in progress.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests on the wire.
    pub in_flight: AtomicU64,
    /// Jobs waiting out a backoff before their next attempt.
    pub retrying: AtomicU64,
    /// Committed results.
    pub succeeded: AtomicU64,
    /// Jobs that failed after all their attempts (committed).
    pub failed: AtomicU64,
    /// Spend of committed results, in pico-USD.
    pub spend_pico_usd: AtomicU64,
    /// Worst-case cost of the jobs in flight, held against a budget until their outcome is
    /// committed, in pico-USD.
    pub reserved_pico_usd: AtomicU64,
    /// The rate limit that binds now and how much of it is in use (`ITPM 97%`), when the run
    /// has token limits.
    pub binding: std::sync::Mutex<String>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Whether to draw a bar: only on a terminal, never in CI, never when asked to be quiet.
pub fn show_bar(stderr_is_terminal: bool, in_ci: bool, quiet: bool) -> bool {
    stderr_is_terminal && !in_ci && !quiet
}

/// A bar over the jobs of one run (hidden when [`show_bar`] says so).
#[derive(Debug, Clone)]
pub struct Progress {
    pub bar: ProgressBar,
    pub counters: Arc<Counters>,
    /// Jobs that were finished before this session started.
    pub initial_done: u64,
}

impl Progress {
    pub fn new(total: u64, already_done: u64, visible: bool) -> Self {
        let counters = Arc::new(Counters::default());
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if visible {
                ProgressDrawTarget::stderr_with_hz(5)
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        let key = |read: fn(&Counters) -> u64| {
            let counters = Arc::clone(&counters);
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", read(&counters));
            }
        };
        let spend = {
            let counters = Arc::clone(&counters);
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let pico = Counters::get(&counters.spend_pico_usd);
                let done = Counters::get(&counters.succeeded) + Counters::get(&counters.failed);
                #[expect(clippy::cast_precision_loss, reason = "display only")]
                let usd = pico as f64 / PICO_PER_USD as f64;
                let _ = write!(w, "${usd:.4}");
                // Projected total: this session's cost per finished job over the jobs left.
                let left = state.len().unwrap_or(0).saturating_sub(state.pos());
                if done > 0 && left > 0 {
                    #[expect(clippy::cast_precision_loss, reason = "display only")]
                    let projected = usd + usd / done as f64 * left as f64;
                    let _ = write!(w, " (→ ${projected:.2})");
                }
            }
        };
        let style = ProgressStyle::with_template(
            "{elapsed_precise} {bar:30} {pos}/{len} ok {ok} failed {failed} retrying {retrying} \
             in flight {inflight}{binding} {rate} {spend} ETA {eta}",
        )
        .expect("the template is valid")
        .with_key("ok", key(|c| Counters::get(&c.succeeded)))
        .with_key("failed", key(|c| Counters::get(&c.failed)))
        .with_key("retrying", key(|c| Counters::get(&c.retrying)))
        .with_key("inflight", key(|c| Counters::get(&c.in_flight)))
        .with_key("spend", spend)
        .with_key("binding", {
            let counters = Arc::clone(&counters);
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let binding = counters.binding.lock().unwrap_or_else(|e| e.into_inner());
                if !binding.is_empty() {
                    let _ = write!(w, " {binding}");
                }
            }
        })
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate(state.per_sec()));
            },
        );
        bar.set_style(style);
        bar.set_position(already_done);
        bar.reset_eta();
        if visible {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Self {
            bar,
            counters,
            initial_done: already_done,
        }
    }

    /// Prints a line above the bar (or plainly when there is none). Messages quote gateways
    /// (a halt's reason): their control characters are escaped.
    pub fn println(&self, line: &str) {
        let line = crate::output::terminal_lines(line);
        if self.bar.is_hidden() {
            crate::errln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Jobs per second as a person reads it: `37/s`, `2.5/s`, `0.4/s`.
fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "0/s".to_owned()
    } else if per_sec < 10.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.0}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::{rate, show_bar};

    #[test]
    fn the_rate_reads_as_a_person_would_say_it() {
        assert_eq!(rate(36.9409), "37/s");
        assert_eq!(rate(2.46), "2.5/s");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(f64::NAN), "0/s");
        assert_eq!(rate(1234.4), "1234/s");
    }

    #[test]
    fn the_bar_shows_only_on_an_interactive_terminal() {
        assert!(show_bar(true, false, false));
        assert!(!show_bar(false, false, false));
        assert!(!show_bar(true, true, false));
        assert!(!show_bar(true, false, true));
    }
}
