//! The `msgbatch` binary: parse, build the runtime, run, map the outcome to an exit code.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[expect(
    clippy::print_stderr,
    reason = "main reports the error that ended the program"
)]
fn main() -> ExitCode {
    let cli = msgbatch::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return msgbatch::ExitStatus::Error.into();
        }
    };
    let result = runtime.block_on(msgbatch::run(cli));
    // Whatever is still running (an abandoned request) gets a moment, not forever.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(status) => status.into(),
        Err(error) => {
            // A closed pipe (`msgbatch export … | head`) is the reader's choice, not a failure.
            let broken_pipe = error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            // Errors quote job files and gateways: their control characters are escaped.
            eprintln!(
                "error: {}",
                msgbatch::output::terminal_lines(&format!("{error:#}"))
            );
            msgbatch::ExitStatus::Error.into()
        }
    }
}
