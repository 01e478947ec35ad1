//! `msgbatch mock`: the mock gateway as a server, for demos and for pointing real clients at.

use std::time::Duration;

use anyhow::Context;

use crate::cli::MockServeArgs;
use crate::mock::limits::Limits;
use crate::mock::{MockConfig, serve_until};
use crate::{ExitStatus, Shutdown};

pub async fn mock(args: MockServeArgs, shutdown: Shutdown) -> anyhow::Result<ExitStatus> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        anyhow::bail!("--fail-rate must be between 0 and 1");
    }
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    crate::errln!("mock gateway listening on http://{addr} (Ctrl-C to stop)");
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        fail_rate: args.fail_rate,
        fault_retry_after: args.fault_retry_after.map(Duration::from_secs),
        batches: crate::mock::batches::BatchConfig {
            processing: Duration::from_millis(args.batch_ms),
            ..crate::mock::batches::BatchConfig::default()
        },
        limits: Limits {
            rpm: args.rate_limit_rpm,
            itpm: args.rate_limit_itpm,
            otpm: args.rate_limit_otpm,
        },
        first_token_delay: Duration::from_millis(args.first_token_ms),
        token_delay: Duration::from_millis(args.token_ms),
        require_key: args.require_key,
        seed: args.seed,
        reject: args.reject.as_deref().map(str::parse).transpose()?,
        ..MockConfig::default()
    };
    serve_until(listener, config, shutdown.stop).await;
    Ok(ExitStatus::Success)
}
