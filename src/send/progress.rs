//! The progress bar and the live counters behind it.
//!
//! Workers and the writer update [`Counters`]; the bar reads them, and what the session's
//! [`Budget`] spent, when it redraws. Whether a
//! bar is drawn at all is decided once, by [`show_bar`]. A line never runs past the terminal's
//! width (100 columns when it cannot be told): a wrapped bar redraws as a new line each time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::budget::Budget;
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
    pub fn new(total: u64, already_done: u64, visible: bool, budget: Arc<Budget>) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        };
        Self::drawn_on(total, already_done, target, line_width(), budget)
    }

    /// A bar drawn on `target`, whose lines are at most `width` columns.
    pub fn drawn_on(
        total: u64,
        already_done: u64,
        target: ProgressDrawTarget,
        width: usize,
        budget: Arc<Budget>,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let style = ProgressStyle::with_template("{line}")
            .expect("the template is valid")
            .with_key("line", {
                let counters = Arc::clone(&counters);
                move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&line(width, &figures(state, &counters, &budget)));
                }
            });
        bar.set_style(style);
        bar.set_position(already_done);
        bar.reset_eta();
        if !bar.is_hidden() {
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

/// Columns a progress line may take: the terminal's (standard error's), or 100 when it cannot
/// be told.
pub fn line_width() -> usize {
    terminal_size::terminal_size_of(std::io::stderr()).map_or(100, |(w, _)| usize::from(w.0))
}

/// The bar of a run sent through the Message Batches API: its message (the API's counts) is
/// cut to what the terminal has room for.
pub fn batches_style() -> ProgressStyle {
    ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// What the progress line shows, each part already written out.
#[derive(Debug, Clone, Default)]
struct Figures {
    elapsed: String,
    /// Share of the jobs done, 0 to 1.
    done: f64,
    position: String,
    outcomes: String,
    retrying: String,
    in_flight: String,
    binding: String,
    rate: String,
    spend: String,
    eta: String,
}

fn figures(state: &ProgressState, counters: &Counters, budget: &Budget) -> Figures {
    let pico = budget.spent_this_session();
    let finished = Counters::get(&counters.succeeded) + Counters::get(&counters.failed);
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let usd = pico as f64 / PICO_PER_USD as f64;
    let total = state.len().unwrap_or(0);
    let left = total.saturating_sub(state.pos());
    let mut spend = format!("${usd:.4}");
    // Projected total: this session's cost per finished job over the jobs left.
    if finished > 0 && left > 0 {
        #[expect(clippy::cast_precision_loss, reason = "display only")]
        let projected = usd + usd / finished as f64 * left as f64;
        spend.push_str(&format!(" (→ ${projected:.2})"));
    }
    let elapsed = state.elapsed().as_secs();
    #[expect(clippy::cast_precision_loss, reason = "a share for display")]
    let done = if total == 0 {
        0.0
    } else {
        state.pos() as f64 / total as f64
    };
    Figures {
        elapsed: format!(
            "{:02}:{:02}:{:02}",
            elapsed / 3600,
            elapsed / 60 % 60,
            elapsed % 60
        ),
        done,
        position: format!("{}/{total}", state.pos()),
        outcomes: format!(
            "ok {} failed {}",
            Counters::get(&counters.succeeded),
            Counters::get(&counters.failed)
        ),
        retrying: format!("retrying {}", Counters::get(&counters.retrying)),
        in_flight: format!("in flight {}", Counters::get(&counters.in_flight)),
        binding: counters
            .binding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
        rate: rate(state.per_sec()),
        spend,
        eta: format!("ETA {}", HumanDuration(state.eta())),
    }
}

/// The progress line in at most `width` columns: the parts that matter least (the binding
/// limit, then retries, jobs in flight, the ETA, the rate, the bar) are left out first, and the
/// bar takes what room is left (10 to 30 cells).
fn line(width: usize, f: &Figures) -> String {
    const BAR_MIN: usize = 12;
    const BAR_MAX: usize = 32;
    // (part, rank: the lower, the longer it stays), in the order shown; `None` is the bar.
    let parts: [(Option<&str>, u8); 10] = [
        (Some(&f.elapsed), 0),
        (None, 3),
        (Some(&f.position), 0),
        (Some(&f.outcomes), 1),
        (Some(&f.retrying), 5),
        (Some(&f.in_flight), 4),
        (Some(&f.binding), 6),
        (Some(&f.rate), 3),
        (Some(&f.spend), 2),
        (Some(&f.eta), 3),
    ];
    let mut shown: Vec<(Option<&str>, u8)> = parts
        .into_iter()
        .filter(|(p, _)| p.is_none_or(|p| !p.is_empty()))
        .collect();
    let length = |shown: &[(Option<&str>, u8)]| -> usize {
        shown
            .iter()
            .map(|(p, _)| p.map_or(BAR_MIN, |p| p.chars().count()) + 1)
            .sum::<usize>()
            .saturating_sub(1)
    };
    while length(&shown) > width {
        let Some(least) = shown
            .iter()
            .enumerate()
            .filter(|(_, (_, rank))| *rank > 0)
            .max_by_key(|(i, (_, rank))| (*rank, *i))
            .map(|(i, _)| i)
        else {
            break;
        };
        shown.remove(least);
    }
    let bar_width = (BAR_MIN + width.saturating_sub(length(&shown))).min(BAR_MAX);
    let mut out = String::new();
    for (i, (part, _)) in shown.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match part {
            Some(part) => out.push_str(part),
            None => {
                let cells = bar_width - 2;
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss,
                    reason = "a share of at most 30 cells"
                )]
                let full = ((f.done.clamp(0.0, 1.0) * cells as f64).round() as usize).min(cells);
                out.push('[');
                out.push_str(&"#".repeat(full));
                out.push_str(&"-".repeat(cells - full));
                out.push(']');
            }
        }
    }
    // Two essential parts wider than a tiny terminal: cut rather than wrap.
    out.chars().take(width).collect()
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
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressDrawTarget, TermLike};

    use super::{Counters, Progress, batches_style, rate, show_bar};

    /// A terminal of a given width that keeps every line drawn on it.
    #[derive(Debug, Clone)]
    struct Screen {
        width: u16,
        lines: Arc<Mutex<Vec<String>>>,
    }

    impl Screen {
        fn new(width: u16) -> Self {
            Self {
                width,
                lines: Arc::default(),
            }
        }

        fn widest(&self) -> (usize, String) {
            let lines = self.lines.lock().expect("no panics while drawing");
            lines
                .iter()
                .map(|l| (l.chars().count(), l.clone()))
                .max()
                .expect("something was drawn")
        }

        fn last(&self) -> String {
            let lines = self.lines.lock().expect("no panics while drawing");
            lines.last().cloned().expect("something was drawn")
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            self.width
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.trim().is_empty() {
                self.lines.lock().expect("one writer").push(s.to_owned());
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_run_line_fits_the_terminal_and_keeps_what_matters() {
        for width in [60_u16, 80, 100, 120, 200] {
            let screen = Screen::new(width);
            let budget = Arc::new(super::Budget::new(None, 0));
            budget.settle(0, 1_234_567_890_000_000);
            let progress = Progress::drawn_on(
                1_000_000,
                0,
                ProgressDrawTarget::term_like(Box::new(screen.clone())),
                usize::from(width),
                Arc::clone(&budget),
            );
            let c = &progress.counters;
            Counters::add(&c.succeeded, 123_456);
            Counters::add(&c.failed, 7_890);
            Counters::add(&c.retrying, 321);
            Counters::add(&c.in_flight, 256);
            *c.binding.lock().expect("unpoisoned") = "ITPM 97%".to_owned();
            progress.bar.set_position(131_346);
            // Drawn now, where it stands (a tick may fall within the draw rate's interval).
            progress.bar.abandon();
            let (widest, line) = screen.widest();
            assert!(widest <= usize::from(width), "{widest} > {width}: {line}");
            let line = screen.last();
            assert!(line.contains("131346/1000000"), "{line}");
            assert!(line.contains("ok 123456 failed 7890"), "{line}");
            if width >= 100 {
                assert!(line.contains("$1234.5679"), "{width}: {line}");
                assert!(line.contains('['), "no bar at {width}: {line}");
            }
            if width >= 200 {
                assert!(
                    line.contains("ITPM 97%") && line.contains("in flight 256"),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn the_batches_line_fits_the_terminal() {
        let screen = Screen::new(100);
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(250_000),
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_style(batches_style());
        bar.set_message(
            "3 batches running · 100000 processing · 12345 succeeded · 12 errored · 0 canceled · 0 expired",
        );
        bar.set_position(100_000);
        bar.abandon();
        let (widest, line) = screen.widest();
        assert!(widest <= 100, "{widest} > 100: {line}");
    }

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
