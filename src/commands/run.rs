//! `msgbatch run`: load a job file into a new run, then send it.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};

use super::{Global, plan, sending};
use crate::cli::RunArgs;
use crate::jobs::{self, LoadOptions, LoadSummary};
use crate::pricing::format_usd;
use crate::send::feed::{self, Feed, LOAD_CHUNK};
use crate::settings::{InputSettings, RunSettings, usd_to_pico};
use crate::store::{CheckedInput, NewRun, Store};
use crate::{ExitStatus, Shutdown};

/// Bad records printed before the rest are only counted.
const SHOWN_ERRORS: usize = 50;

pub async fn run(global: &Global, args: RunArgs, shutdown: Shutdown) -> anyhow::Result<ExitStatus> {
    let (settings, mut options, key) = plan::plan(
        global,
        &args.jobs,
        &args.gateway,
        &args.mock,
        &args.sending,
        true,
    )?;
    options.skip_invalid = args.skip_invalid;
    if let Some(threshold) = args.confirm_above
        && !args.yes
    {
        // The estimate reads the file once before the run reads it again: a stream would be
        // used up (or a FIFO wait for a writer that is gone).
        if !rereadable(&options.path) {
            bail!(
                "--confirm-above reads {} before sending, and a stream can be read only once; give a file, or pass --yes",
                args.jobs.file.display()
            );
        }
        if !confirm(global, &options, &settings, threshold).await? {
            return Ok(ExitStatus::Error);
        }
    }

    // A file that can be read twice is checked whole first (nothing is stored or sent when
    // it is bad), then stored while the run sends. Standard input and pipes are read once:
    // stored whole, then sent.
    let started = std::time::Instant::now();
    let check = rereadable(&options.path).then(|| feed::check(options.clone()));
    let store = global.store().await?;
    let _lock = store.lock().await?;
    let checked = match check {
        Some(check) => {
            let checked = check.await?;
            if checked.summary.bad_records > 0 && !args.skip_invalid {
                report_bad_records(&checked.summary);
                return Ok(ExitStatus::Error);
            }
            if checked.summary.jobs == 0 {
                bail!("{} holds no jobs to send", args.jobs.file.display());
            }
            Some(checked)
        }
        None => None,
    };
    let name = match args.name {
        Some(name) => {
            if store.run_name_taken(&name).await? {
                bail!(
                    "a run named `{name}` exists already; choose another --name or `msgbatch resume {name}`"
                );
            }
            name
        }
        None => unique_name(&store, &args.jobs.file).await?,
    };
    let mut settings = settings;
    if checked.is_some() {
        settings.input = Some(InputSettings::of(&options)?);
    }
    let run_id = store
        .create_run(&NewRun {
            name: name.clone(),
            input_path: args.jobs.file.display().to_string(),
            gateway_name: settings.gateway.name.clone(),
            // Credentials in the URL are never stored, as a key is not.
            base_url: crate::output::redacted_url(&settings.gateway.base_url).into_owned(),
            messages_path: crate::output::redacted_path(&settings.gateway.messages_path)
                .into_owned(),
            settings_json: settings.stored()?,
            via: settings.send.via.as_str(),
            checked: checked.as_ref().map(|c| CheckedInput {
                sha256: c.summary.sha256.clone(),
                format: c.summary.format.clone(),
                jobs: c.summary.jobs,
            }),
        })
        .await?;
    let Some(checked) = checked else {
        let keep_rejected = args.skip_invalid;
        let load = feed::store_chunks(
            &store,
            run_id,
            move |sink| jobs::load(&options, keep_rejected, LOAD_CHUNK, sink),
            || {},
        );
        let summary = match load.await {
            Ok(summary) => summary,
            Err(e) => {
                store.delete_run(run_id).await?;
                return Err(e);
            }
        };
        if summary.bad_records > 0 && !args.skip_invalid {
            store.delete_run(run_id).await?;
            report_bad_records(&summary);
            return Ok(ExitStatus::Error);
        }
        if summary.jobs == 0 {
            store.delete_run(run_id).await?;
            bail!("{} holds no jobs to send", args.jobs.file.display());
        }
        store
            .set_input(run_id, &summary.sha256, &summary.format)
            .await?;
        store.set_loaded(run_id).await?;
        warn_skipped(&summary);
        let run = store.find_run(&run_id.to_string()).await?;
        announce(
            &run.name,
            run_id,
            &summary,
            "loaded",
            &settings,
            started.elapsed(),
        );
        return sending::send(
            global,
            &store,
            &run,
            &settings,
            key,
            None,
            shutdown,
            args.summary,
        )
        .await;
    };
    warn_skipped(&checked.summary);
    let run = store.find_run(&run_id.to_string()).await?;
    announce(
        &run.name,
        run_id,
        &checked.summary,
        "checked",
        &settings,
        started.elapsed(),
    );
    let feed = Feed::start(&store, run_id, options, checked, args.skip_invalid, 0).await?;
    sending::send(
        global,
        &store,
        &run,
        &settings,
        key,
        Some(feed),
        shutdown,
        args.summary,
    )
    .await
}

/// Whether the job file can be read a second time: a file, not standard input or a pipe.
fn rereadable(path: &Path) -> bool {
    path.as_os_str() != "-" && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

fn warn_skipped(summary: &LoadSummary) {
    if summary.bad_records > 0 {
        crate::errln!(
            "warning: {} bad records recorded as rejected (--skip-invalid); the first: {}",
            summary.bad_records,
            summary.errors[0]
        );
    }
}

fn announce(
    name: &str,
    id: i64,
    summary: &LoadSummary,
    done: &str,
    settings: &RunSettings,
    took: std::time::Duration,
) {
    let target = if settings.mock.is_some() {
        "the built-in mock gateway".to_owned()
    } else {
        format!(
            "{} ({})",
            settings.gateway.name,
            crate::output::redacted_url(&settings.gateway.messages_url())
        )
    };
    let seconds = took.as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    let rate = if seconds > 0.0 {
        summary.jobs as f64 / seconds
    } else {
        0.0
    };
    crate::errln!(
        "run {name} (id {id}): {} {done} in {seconds:.2}s ({rate:.0}/s), sending to {target}",
        jobs_and_samples(summary.jobs, settings.repeat)
    );
}

/// `400 jobs`, or with repeated samples `400 jobs × 3 samples (1200 requests)`: `rows` counts
/// every sample.
pub(super) fn jobs_and_samples(rows: u64, repeat: u32) -> String {
    if repeat > 1 {
        format!(
            "{} jobs × {repeat} samples ({rows} requests)",
            rows / u64::from(repeat)
        )
    } else {
        format!("{rows} jobs")
    }
}

fn report_bad_records(summary: &LoadSummary) {
    for error in summary.errors.iter().take(SHOWN_ERRORS) {
        crate::errln!("{error}");
    }
    if summary.bad_records > SHOWN_ERRORS as u64 {
        crate::errln!("… and {} more", summary.bad_records - SHOWN_ERRORS as u64);
    }
    crate::errln!(
        "error: {} bad records; nothing was sent. Fix them, or pass --skip-invalid to record them as rejected and run the rest",
        summary.bad_records
    );
}

/// Estimates the file locally and, when the expected cost is above `threshold` USD, asks the
/// user. Never asks without a terminal: the run is refused instead.
async fn confirm(
    global: &Global,
    options: &LoadOptions,
    settings: &RunSettings,
    threshold: f64,
) -> anyhow::Result<bool> {
    let threshold_pico =
        usd_to_pico(threshold).context("--confirm-above must be a positive number of USD")?;
    let mean_output = plan::mean_output(&global.db).await?;
    let prices = plan::prices_for(&settings.gateway)?;
    let options = options.clone();
    let estimate = tokio::task::spawn_blocking(move || {
        crate::estimate::local_estimate(&options, &prices, &mean_output, 0.5)
    })
    .await
    .context("the estimate panicked")??;
    if estimate.expected_pico_usd <= threshold_pico {
        return Ok(true);
    }
    let figures = format!(
        "the estimated cost is {} (worst case {}), above --confirm-above {}",
        format_usd(estimate.expected_pico_usd),
        format_usd(estimate.worst_pico_usd),
        format_usd(threshold_pico)
    );
    if !std::io::stdin().is_terminal() {
        bail!("{figures}, and there is no terminal to ask; pass --yes to run unattended");
    }
    #[expect(clippy::print_stderr, reason = "the question is for the user")]
    {
        eprint!("{figures}. Send? [y/N] ");
    }
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let yes = matches!(answer.trim(), "y" | "Y" | "yes");
    if !yes {
        crate::errln!("nothing sent");
    }
    Ok(yes)
}

/// `<file stem>-<UTC date and time>`, with a suffix if that is taken. The stem leaves out a
/// compression extension too: `prompts.jsonl.zst` makes `prompts-…`.
async fn unique_name(store: &Store, file: &Path) -> anyhow::Result<String> {
    let inner = match jobs::Compression::from_extension(file) {
        jobs::Compression::None => file.to_path_buf(),
        _ => file.with_extension(""),
    };
    let stem = inner
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| *s != "-")
        .unwrap_or("stdin");
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = stamp
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    let base = format!("{stem}-{}-{}", &stamp[..8], &stamp[8..]);
    let mut name = base.clone();
    let mut n = 2;
    while store.run_name_taken(&name).await? {
        name = format!("{base}-{n}");
        n += 1;
    }
    Ok(name)
}
