//! msgbatch: a batch runner and evaluation harness for the Anthropic Messages API.
//!
//! [`run`] is the whole program behind a parsed [`cli::Cli`]; `main.rs` only builds the
//! runtime and maps the result to an exit code, and tests call [`run`] in-process.

pub mod cli;
pub mod client;
mod commands;
pub mod diff;
pub mod estimate;
pub mod eval;
#[doc(hidden)]
pub mod fuzz;
pub mod jobs;
pub mod limiter;
pub mod message;
pub mod mock;
pub mod output;
pub mod pricing;
pub mod report;
pub mod request;
pub mod send;
pub mod settings;
pub mod stats;
pub mod store;
pub mod textfile;
pub mod tokens;
pub mod view;

use std::process::ExitCode;

pub use send::{Shutdown, Signal};

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success = 0,
    /// The run finished, but some jobs failed after all their attempts.
    JobsFailed = 1,
    /// Bad input or settings, or a run that could not go on.
    Error = 2,
    /// Stopped before passing `--max-cost`; `msgbatch resume --max-cost` continues.
    BudgetExhausted = 3,
    /// `diff --fail-on-regression` found a job that passed before and fails now.
    Regressed = 4,
    /// `run --fail-under` (or `resume --fail-under`): fewer graded jobs passed than asked.
    BelowPassRate = 5,
    /// Stopped by SIGHUP (a closed terminal) as by Ctrl-C; `msgbatch resume` continues.
    HungUp = 129,
    /// Stopped by Ctrl-C; `msgbatch resume` continues.
    Interrupted = 130,
    /// Stopped by SIGTERM (`docker stop`, systemd, `timeout`) as by Ctrl-C; `msgbatch resume`
    /// continues.
    Terminated = 143,
}

/// The exit status of a command a signal stopped: 128 plus its number, as a shell reports a
/// process it ended.
impl From<Signal> for ExitStatus {
    fn from(signal: Signal) -> Self {
        match signal {
            Signal::Interrupt => Self::Interrupted,
            Signal::Terminate => Self::Terminated,
            Signal::HangUp => Self::HungUp,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        Self::from(status as u8)
    }
}

/// Runs one command. A command that sends stops on Ctrl-C, SIGTERM or SIGHUP alike: the
/// first stops sending and lets requests on the wire finish, the second abandons them, the
/// third exits at once; it then exits with the first signal's status (130, 143 or 129).
/// Commands that only read or print keep each signal's default, which ends them at once.
pub async fn run(cli: cli::Cli) -> anyhow::Result<ExitStatus> {
    let shutdown = Shutdown::default();
    let signals = commands::stops_gracefully(&cli.command)
        .then(|| tokio::spawn(watch_signals(shutdown.clone())));
    let status = run_with_shutdown(cli, shutdown.clone()).await;
    if let Some(signals) = signals {
        signals.abort();
    }
    match (status, shutdown.signal()) {
        (Ok(ExitStatus::Interrupted), Some(signal)) => Ok(signal.into()),
        (status, _) => status,
    }
}

/// [`run`] with the shutdown tokens given by the caller (tests cancel them directly).
pub async fn run_with_shutdown(cli: cli::Cli, shutdown: Shutdown) -> anyhow::Result<ExitStatus> {
    commands::dispatch(cli, shutdown).await
}

/// Folds Ctrl-C, SIGTERM and SIGHUP into the shutdown tokens, counting them together.
async fn watch_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    // Without a handler (which only a broken runtime refuses) a signal keeps its default.
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut hang_up = signal(SignalKind::hangup()).ok();
    let mut received = 0;
    loop {
        let signal = tokio::select! {
            pressed = tokio::signal::ctrl_c() => match pressed {
                Ok(()) => Signal::Interrupt,
                Err(_) => return,
            },
            Some(()) = next(&mut terminate) => Signal::Terminate,
            Some(()) = next(&mut hang_up) => Signal::HangUp,
        };
        received += 1;
        shutdown.signalled_by(signal);
        let again = match signal {
            Signal::Interrupt => "Ctrl-C again".to_owned(),
            other => format!("a second {}", other.name()),
        };
        let name = match signal {
            Signal::Interrupt => String::new(),
            other => format!("{} received; ", other.name()),
        };
        #[expect(
            clippy::print_stderr,
            reason = "the user must know what the signal did"
        )]
        match received {
            1 => {
                eprintln!(
                    "\nstopping: {name}no new requests; waiting for those in flight ({again} to abandon them)"
                );
                shutdown.stop.cancel();
            }
            2 => {
                eprintln!(
                    "\nabandoning requests in flight; they stay pending for `msgbatch resume`"
                );
                shutdown.abort.cancel();
            }
            _ => {
                let code = ExitStatus::from(shutdown.signal().unwrap_or(signal));
                #[expect(clippy::exit, reason = "a third signal means now")]
                std::process::exit(code as i32);
            }
        }
    }
}

/// The next delivery of a signal, or never when its handler could not be installed.
async fn next(stream: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match stream {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
}
