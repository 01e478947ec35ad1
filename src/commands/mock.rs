//! `msgbatch mock`: the mock gateway as a server, for demos and for pointing real clients at.

use anyhow::Context;

use crate::cli::MockServeArgs;
use crate::mock::{MockConfig, serve_until};
use crate::{ExitStatus, Shutdown};

pub async fn mock(args: MockServeArgs, shutdown: Shutdown) -> anyhow::Result<ExitStatus> {
    let config = MockConfig {
        require_key: args.require_key,
        seed: args.seed,
        ..args.options.config("--")?
    };
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    crate::errln!("mock gateway listening on http://{addr} (Ctrl-C to stop)");
    serve_until(listener, config, shutdown.stop).await;
    Ok(ExitStatus::Success)
}
