//! `msgbatch status`: runs with their progress and spend.

use super::Global;
use crate::ExitStatus;
use crate::output::Terminal;
use crate::pricing::format_usd;
use std::time::Duration;

use crate::cli::OutputFormat;
use crate::store::{RunRow, RunStatus, Store, WorkerRow};

pub async fn status(global: &Global, args: &crate::cli::StatusArgs) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let runs = match &args.run {
        Some(key) => vec![store.find_run(key).await?],
        None => store.runs().await?,
    };
    if args.format == OutputFormat::Json {
        return print_json(&store, &runs, args.run.is_some()).await;
    }
    if runs.is_empty() {
        crate::outln!("no runs yet")?;
        return Ok(ExitStatus::Success);
    }
    crate::outln!(
        "{:>4}  {:<32} {:<16} {:>8} {:>9} {:>7} {:>8} {:>8} {:>12}",
        "id",
        "name",
        "status",
        "jobs",
        "succeeded",
        "failed",
        "rejected",
        "pending",
        "spend"
    )?;
    let mut counts = Vec::with_capacity(runs.len());
    let mut workers = Vec::new();
    for run in &runs {
        // One run whose figures cannot be added up is said so on its line; the others show.
        let c = match store.run_counts(run.id).await {
            Ok(c) => c,
            Err(e @ crate::store::StoreError::Overflow(_)) => {
                crate::outln!(
                    "{:>4}  {:<32} {}: {e}",
                    run.id,
                    Terminal(&run.name),
                    run.status
                )?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        workers = store.workers(run.id).await?;
        let status = store.run_state(run).await?.to_string();
        let spend = format_usd(u64::try_from(c.cost_pico_usd).unwrap_or(0));
        let spend = if c.unpriced > 0 {
            format!("{spend}+")
        } else {
            spend
        };
        crate::outln!(
            "{:>4}  {:<32} {:<16} {:>8} {:>9} {:>7} {:>8} {:>8} {:>12}",
            run.id,
            Terminal(&run.name),
            Terminal(&status),
            c.total,
            c.succeeded,
            c.failed,
            c.rejected,
            c.pending,
            spend
        )?;
        counts.push(c);
    }
    if let ([run], [stored]) = (runs.as_slice(), counts.as_slice()) {
        print_details(run)?;
        print_workers(&workers)?;
        if !run.loaded && run.status != RunStatus::Loading {
            crate::outln!(
                "  loading  {} of the {} jobs of its file stored; `msgbatch resume {}` stores the rest as it sends",
                stored.total - stored.rejected,
                run.input_jobs.unwrap_or(0),
                Terminal(&run.name)
            )?;
        }
        let (failed, reason) = store.judge_failures(run.id).await?;
        if failed > 0 {
            crate::outln!(
                "  judges   {failed} verdicts pending after failed requests (latest: {}); `msgbatch grade {}` asks again",
                Terminal(reason.as_deref().unwrap_or("no reason recorded")),
                Terminal(&run.name)
            )?;
        }
    }
    Ok(ExitStatus::Success)
}

/// Every run as one JSON object, `{"runs": [...]}`, with stable keys: `id`, `name`,
/// `status` (as the table shows it), `stored_status`, `stop_reason`, `via`, `created_at`,
/// `finished_at` (RFC 3339), `input` {`path`, `format`, `sha256`, `jobs`, `loaded`},
/// `gateway` {`name`, `url`}, `jobs` {`total`, `succeeded`, `failed`, `rejected`,
/// `pending`}, `tokens` {`input`, `cache_write`, `cache_read`, `output`}, `spend_pico_usd`,
/// `unpriced_results`, and `workers` [{`id`, `host`, `pid`, `in_hand`, `done`,
/// `spend_pico_usd`, `alive`, `stopped`, `silent_ms`}]. With one run named, also
/// `judges_failed` and `judge_failure`.
async fn print_json(store: &Store, runs: &[RunRow], one: bool) -> anyhow::Result<ExitStatus> {
    let when = |ms: i64| {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    let mut shown = Vec::with_capacity(runs.len());
    for run in runs {
        let c = store.run_counts(run.id).await?;
        let workers = store.workers(run.id).await?;
        let status = store.run_state(run).await?;
        let mut value = serde_json::json!({
            "id": run.id,
            "name": run.name,
            "status": status,
            "stored_status": run.status,
            "stop_reason": run.stop_reason,
            "via": run.via,
            "created_at": when(run.created_at_ms),
            "finished_at": run.finished_at_ms.map(when),
            "input": {
                "path": run.input_path,
                "format": run.input_format,
                "sha256": run.input_sha256,
                "jobs": run.input_jobs,
                "loaded": run.loaded,
            },
            "gateway": {
                "name": run.gateway_name,
                "url": run.shown_url(),
            },
            "jobs": super::sending::jobs_json(&c),
            "tokens": super::sending::tokens_json(&c),
            "spend_pico_usd": c.cost_pico_usd,
            "unpriced_results": c.unpriced,
            "workers": workers.iter().map(|w| serde_json::json!({
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "in_hand": w.in_hand,
                "done": w.jobs_done,
                "spend_pico_usd": w.spent_pico_usd,
                "alive": w.alive,
                "stopped": w.stopped_at_ms.is_some(),
                "silent_ms": w.silent_ms,
            })).collect::<Vec<_>>(),
        });
        if one {
            let (failed, reason) = store.judge_failures(run.id).await?;
            value["judges_failed"] = failed.into();
            value["judge_failure"] = reason.into();
        }
        shown.push(value);
    }
    // JSON escapes its own strings: it is printed as it is, never terminal-escaped.
    super::report::emit(
        &(serde_json::to_string_pretty(&serde_json::json!({ "runs": shown }))? + "\n"),
        None,
    )?;
    Ok(ExitStatus::Success)
}

/// The workers of a run on a PostgreSQL store: where each runs, the jobs in its hand, what it
/// has done, and when it was last heard from.
fn print_workers(workers: &[WorkerRow]) -> std::io::Result<()> {
    if workers.is_empty() {
        return Ok(());
    }
    let alive = workers.iter().filter(|w| w.alive).count();
    crate::outln!("  workers  {alive} alive of {}", workers.len())?;
    crate::outln!(
        "    {:>4}  {:<24} {:>8} {:>8} {:>8} {:>12}  last heartbeat",
        "id",
        "host",
        "pid",
        "in hand",
        "done",
        "spend"
    )?;
    for w in workers {
        let heard = Duration::from_millis(u64::try_from(w.silent_ms).unwrap_or(0));
        let state = match (w.stopped_at_ms, w.alive) {
            (Some(_), _) => "stopped".to_owned(),
            (None, true) => format!("{:.1}s ago", heard.as_secs_f64()),
            (None, false) => format!(
                "{:.0}s ago: gone, its jobs go to the others",
                heard.as_secs_f64()
            ),
        };
        crate::outln!(
            "    {:>4}  {:<24} {:>8} {:>8} {:>8} {:>12}  {state}",
            w.id,
            Terminal(&w.host),
            w.pid,
            w.in_hand,
            w.jobs_done,
            format_usd(u64::try_from(w.spent_pico_usd).unwrap_or(0)),
        )?;
    }
    Ok(())
}

/// A run's own lines. Each field is one line of text, even where a job file's path, a
/// profile or a gateway's message holds line breaks: those are shown escaped, so that they
/// cannot add a line that reads as one of these.
fn print_details(run: &RunRow) -> std::io::Result<()> {
    let when = |ms: i64| {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    crate::outln!()?;
    let format = if run.input_format.is_empty() {
        String::new()
    } else {
        format!(", {}", run.input_format)
    };
    crate::outln!(
        "  input    {}{format} (sha256 {})",
        Terminal(&run.input_path),
        run.input_sha256
    )?;
    crate::outln!(
        "  gateway  {} {}",
        Terminal(&run.gateway_name),
        Terminal(&run.shown_url())
    )?;
    crate::outln!("  started  {}", when(run.created_at_ms))?;
    if let Some(finished) = run.finished_at_ms {
        crate::outln!("  ended    {}", when(finished))?;
    }
    if let Some(reason) = &run.stop_reason {
        crate::outln!("  stopped  {}", Terminal(reason))?;
    }
    if !matches!(run.status, RunStatus::Completed | RunStatus::Loading) {
        crate::outln!("  resume   msgbatch resume {}", Terminal(&run.name))?;
    }
    Ok(())
}
