//! `msgbatch resume`: send what a run is missing, from the database alone.

use anyhow::{Context as _, bail};

use super::{Global, sending};
use crate::cli::{ResumeArgs, SendArgs};
use crate::output;
use crate::send::feed::{self, Feed};
use crate::settings::{ConfigFile, RunSettings, parse_header};
use crate::store::{RunRow, RunStatus, Store};
use crate::{ExitStatus, Shutdown};

pub async fn resume(
    global: &Global,
    args: ResumeArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let _lock = store.lock().await?;
    let run = store.find_run(&args.run).await?;
    if run.status == RunStatus::Loading {
        bail!(
            "run {} never finished loading its jobs, so nothing was sent; start it again with `msgbatch run`",
            run.name
        );
    }
    let settings = run_settings(
        global,
        &run,
        &args.sending,
        &args.headers,
        Given {
            base_url: args.base_url.as_deref(),
            messages_path: args.messages_path.as_deref(),
        },
    )?;
    if let Some(repeat) = args.repeat
        && repeat != settings.repeat
    {
        bail!(
            "run {} takes {} of each job; resume it without --repeat (or with --repeat {}), or start a new run for {repeat}",
            run.name,
            samples(settings.repeat),
            settings.repeat
        );
    }
    let key = settings.gateway.api_key()?;
    if settings.mock.is_none() {
        super::plan::check_gateway(&settings.gateway, key.as_ref())?;
    }
    store.set_run_settings(run.id, &settings.stored()?).await?;
    if args.include_failed {
        let reset = store.reset_failed(run.id).await?;
        crate::errln!("{reset} failed jobs set back to pending");
    }
    let feed = if run.loaded {
        None
    } else {
        Some(load_the_rest(&store, &run, &settings).await?)
    };
    let counts = store.run_counts(run.id).await?;
    let stored = if feed.is_some() {
        format!(
            " stored so far, of {} the file makes (the rest is being stored)",
            run.input_jobs.unwrap_or(0)
        )
    } else {
        String::new()
    };
    let samples = if settings.repeat > 1 {
        format!(" ({} samples of each job)", settings.repeat)
    } else {
        String::new()
    };
    crate::errln!(
        "resuming run {} (id {}): {} pending of {} jobs{stored}{samples}",
        run.name,
        run.id,
        counts.pending,
        counts.total
    );
    sending::send(
        global,
        &store,
        &run,
        &settings,
        key,
        feed,
        shutdown,
        args.summary,
    )
    .await
}

/// Goes on storing the rows of a run that stopped while loading its file, after the last one
/// stored. The file must be as it was checked when the run started.
async fn load_the_rest(
    store: &Store,
    run: &RunRow,
    settings: &RunSettings,
) -> anyhow::Result<Feed> {
    let Some(input) = &settings.input else {
        bail!(
            "run {} stopped before its jobs were all stored, and it does not say how to read {} again; start it anew with `msgbatch run {}`",
            run.name,
            run.input_path,
            run.input_path
        );
    };
    let mut options = input.load_options(settings);
    // The file passed its check when the run started (or its bad records were let through by
    // --skip-invalid, and are to be recorded again): a record past the size bound is one more
    // bad record here, not a reason to stop; a changed file is caught by its sha256.
    options.skip_invalid = true;
    let checked = feed::check(options.clone()).await.with_context(|| {
        format!(
            "run {} stopped before its jobs were all stored; the rest are read from {}",
            run.name,
            input.path.display()
        )
    })?;
    if checked.summary.sha256 != run.input_sha256 {
        let stored = store.run_counts(run.id).await?.total;
        bail!(
            "run {} stopped after storing {stored} of its jobs, and {} has changed since it started (its sha256 is not the one recorded), so the rest cannot be loaded; put the file back as it was and resume again, or send the file as it is now in a new run with `msgbatch run`",
            run.name,
            input.path.display()
        );
    }
    let after_line = store.last_stored_line(run.id).await?;
    // Bad records were let through only by --skip-invalid: record them again as rejected.
    let keep_rejected = checked.summary.bad_records > 0;
    Feed::start(store, run.id, options, checked, keep_rejected, after_line).await
}

/// Puts back the credentials of a base URL stored without them (`https://***@host`): from
/// `--base-url`, else from the gateway's profile, either only when it is the same URL.
fn restore_base_url(
    global: &Global,
    run: &RunRow,
    settings: &mut RunSettings,
    given: Option<&str>,
) -> anyhow::Result<()> {
    let stored = settings.gateway.base_url.clone();
    if let Some(url) = given {
        if output::redacted_url(url) != stored {
            bail!(
                "--base-url must be run {}'s own base URL ({stored}), with its credentials",
                run.name
            );
        }
        settings.gateway.base_url = url.to_owned();
        return Ok(());
    }
    if settings.mock.is_some() || !output::has_hidden_credentials(&stored) {
        return Ok(());
    }
    let (config, _) = ConfigFile::load(global.config.as_deref())?;
    let from_profile = config
        .gateways
        .get(&settings.gateway.name)
        .and_then(|profile| profile.base_url.clone())
        .filter(|url| output::redacted_url(url) == stored);
    match from_profile {
        Some(url) => {
            settings.gateway.base_url = url;
            Ok(())
        }
        None => bail!(
            "run {} sent to a base URL with credentials ({stored}), which are never stored; give it again with --base-url",
            run.name
        ),
    }
}

/// Puts back the keys of a messages path stored without them (`/v1/messages?key=***`): from
/// `--messages-path`, else from the gateway's profile, either only when it is the same path
/// with its keys.
fn restore_messages_path(
    global: &Global,
    run: &RunRow,
    settings: &mut RunSettings,
    given: Option<&str>,
) -> anyhow::Result<()> {
    let stored = settings.gateway.messages_path.clone();
    if let Some(path) = given {
        if output::redacted_path(path) != stored {
            bail!(
                "--messages-path must be run {}'s own messages path ({stored}), with its keys",
                run.name
            );
        }
        settings.gateway.messages_path = path.to_owned();
        return Ok(());
    }
    if settings.mock.is_some() || !output::has_hidden_query_credentials(&stored) {
        return Ok(());
    }
    let (config, _) = ConfigFile::load(global.config.as_deref())?;
    let from_profile = config
        .gateways
        .get(&settings.gateway.name)
        .and_then(|profile| profile.messages_path.clone())
        .filter(|path| output::redacted_path(path) == stored);
    match from_profile {
        Some(path) => {
            settings.gateway.messages_path = path;
            Ok(())
        }
        None => bail!(
            "run {} sent to a messages path with a key in its query ({stored}), which is never stored; give it again with --messages-path",
            run.name
        ),
    }
}

/// What the command line gives again of a run's gateway URL, whose credentials are never
/// stored.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Given<'a> {
    /// `--base-url`.
    pub base_url: Option<&'a str>,
    /// `--messages-path`.
    pub messages_path: Option<&'a str>,
}

/// A run's stored settings, with what the command line overrides and the header values
/// (never stored) taken again from the gateway's profile and the command line.
pub(super) fn run_settings(
    global: &Global,
    run: &RunRow,
    sending: &SendArgs,
    headers: &[String],
    given: Given<'_>,
) -> anyhow::Result<RunSettings> {
    let mut settings = RunSettings::of(run)?;
    if let Some(mock) = &settings.mock {
        mock.config(crate::cli::MOCK_FLAGS)
            .with_context(|| format!("run {} was made with a mock out of range", run.name))?;
    }
    settings.send = settings.send.overridden(sending)?;
    restore_base_url(global, run, &mut settings, given.base_url)?;
    restore_messages_path(global, run, &mut settings, given.messages_path)?;
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

/// `1 sample` or `3 samples`.
fn samples(k: u32) -> String {
    if k == 1 {
        "1 sample".to_owned()
    } else {
        format!("{k} samples")
    }
}
