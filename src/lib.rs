//! msgbatch: a batch runner and evaluation harness for the Anthropic Messages API.
//!
//! [`run`] is the whole program behind a parsed [`cli::Cli`]; `main.rs` only builds the
//! runtime and maps the result to an exit code, and tests call [`run`] in-process.

pub mod batching;
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
pub mod pricing;
pub mod progress;
pub mod report;
pub mod request;
pub mod runner;
pub mod settings;
pub mod store;
pub mod textfile;
pub mod tokens;

use std::process::ExitCode;

pub use runner::Shutdown;

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
    /// Stopped by Ctrl-C; `msgbatch resume` continues.
    Interrupted = 130,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        Self::from(status as u8)
    }
}

/// Runs one command, stopping on Ctrl-C: the first stops sending and lets requests on the
/// wire finish, the second abandons them, the third exits at once.
pub async fn run(cli: cli::Cli) -> anyhow::Result<ExitStatus> {
    let shutdown = Shutdown::default();
    let signals = tokio::spawn(watch_ctrl_c(shutdown.clone()));
    let status = run_with_shutdown(cli, shutdown).await;
    signals.abort();
    status
}

/// [`run`] with the shutdown tokens given by the caller (tests cancel them directly).
pub async fn run_with_shutdown(cli: cli::Cli, shutdown: Shutdown) -> anyhow::Result<ExitStatus> {
    commands::dispatch(cli, shutdown).await
}

async fn watch_ctrl_c(shutdown: Shutdown) {
    let mut presses = 0;
    while tokio::signal::ctrl_c().await.is_ok() {
        presses += 1;
        #[expect(clippy::print_stderr, reason = "the user must know what Ctrl-C did")]
        match presses {
            1 => {
                eprintln!(
                    "\nstopping: no new requests; waiting for those in flight (Ctrl-C again to abandon them)"
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
                #[expect(clippy::exit, reason = "a third Ctrl-C means now")]
                std::process::exit(ExitStatus::Interrupted as i32);
            }
        }
    }
}
