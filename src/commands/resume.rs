//! `msgbatch resume`: send what a run is missing, from the database alone.

use anyhow::bail;

use super::{Global, sending};
use crate::cli::{ResumeArgs, SendArgs};
use crate::settings::{ConfigFile, RunSettings, parse_header};
use crate::store::{DbLock, RunRow};
use crate::{ExitStatus, Shutdown};

pub async fn resume(
    global: &Global,
    args: ResumeArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let _lock = DbLock::acquire(&global.db)?;
    let run = store.find_run(&args.run).await?;
    if run.status == "loading" {
        bail!(
            "run {} never finished loading its jobs, so nothing was sent; start it again with `msgbatch run`",
            run.name
        );
    }
    let settings = run_settings(global, &run, &args.sending, &args.headers)?;
    let key = settings.gateway.api_key()?;
    store
        .set_run_settings(run.id, &serde_json::to_string(&settings)?)
        .await?;
    if args.include_failed {
        let reset = store.reset_failed(run.id).await?;
        #[expect(clippy::print_stderr, reason = "what resume is about to do")]
        {
            eprintln!("{reset} failed jobs set back to pending");
        }
    }
    let counts = store.run_counts(run.id).await?;
    #[expect(clippy::print_stderr, reason = "what resume is about to do")]
    {
        eprintln!(
            "resuming run {} (id {}): {} pending of {} jobs",
            run.name, run.id, counts.pending, counts.total
        );
    }
    sending::send(global, &store, &run, &settings, key, shutdown).await
}

/// A run's stored settings, with what the command line overrides and the header values
/// (never stored) taken again from the gateway's profile and the command line.
pub(super) fn run_settings(
    global: &Global,
    run: &RunRow,
    sending: &SendArgs,
    headers: &[String],
) -> anyhow::Result<RunSettings> {
    let mut settings: RunSettings = serde_json::from_str(&run.settings)
        .map_err(|e| anyhow::anyhow!("run {} has unreadable settings: {e}", run.name))?;
    settings.send = settings.send.overridden(sending)?;
    // Header values are never stored: take them from the gateway's profile again, then from
    // the command line.
    if settings.mock.is_none() && !settings.gateway.header_names.is_empty() {
        let (config, _) = ConfigFile::load(global.config.as_deref())?;
        if let Some(profile) = config.gateways.get(&settings.gateway.name) {
            settings.gateway.headers = profile.headers.clone().into_iter().collect();
        }
    }
    for header in headers {
        let (name, value) = parse_header(header)?;
        settings
            .gateway
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        settings.gateway.headers.push((name, value));
    }
    let missing: Vec<&String> = settings
        .gateway
        .header_names
        .iter()
        .filter(|n| {
            !settings
                .gateway
                .headers
                .iter()
                .any(|(h, _)| h.eq_ignore_ascii_case(n))
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "run {} sent the header(s) {} whose values are not stored; give them again with --header",
            run.name,
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(settings)
}
