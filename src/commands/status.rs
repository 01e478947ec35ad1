//! `msgbatch status`: runs with their progress and spend.

use super::Global;
use crate::ExitStatus;
use crate::pricing::format_usd;
use crate::store::RunRow;

#[expect(clippy::print_stdout, reason = "the status is the command's output")]
pub async fn status(global: &Global, args: &crate::cli::StatusArgs) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let runs = match &args.run {
        Some(key) => vec![store.find_run(key).await?],
        None => store.runs().await?,
    };
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(ExitStatus::Success);
    }
    println!(
        "{:>4}  {:<32} {:<16} {:>8} {:>9} {:>7} {:>8} {:>8} {:>12}",
        "id", "name", "status", "jobs", "succeeded", "failed", "rejected", "pending", "spend"
    );
    // A run still marked running while no process holds the database died without a word
    // (kill -9, a crash, a reboot).
    let sending = store.is_locked().await?;
    let mut counts = Vec::with_capacity(runs.len());
    for run in &runs {
        let c = store.run_counts(run.id).await?;
        // Batches left running on the server when no process is collecting them: the run is
        // submitted, whatever it was doing when its last session ended.
        let submitted = store
            .open_batches(run.id)
            .await?
            .iter()
            .filter(|b| b.remote_id.is_some())
            .count();
        let status = if submitted > 0 && !(run.status == "running" && sending) {
            format!("submitted ({submitted})")
        } else if run.status == "running" && !sending {
            "died".to_owned()
        } else {
            run.status.clone()
        };
        let spend = format_usd(u64::try_from(c.cost_pico_usd).unwrap_or(0));
        let spend = if c.unpriced > 0 {
            format!("{spend}+")
        } else {
            spend
        };
        println!(
            "{:>4}  {:<32} {:<16} {:>8} {:>9} {:>7} {:>8} {:>8} {:>12}",
            run.id, run.name, status, c.total, c.succeeded, c.failed, c.rejected, c.pending, spend
        );
        counts.push(c);
    }
    if let ([run], [stored]) = (runs.as_slice(), counts.as_slice()) {
        print_details(run);
        if !run.loaded && run.status != "loading" {
            println!(
                "  loading  {} of the {} jobs of its file stored; `msgbatch resume {}` stores the rest as it sends",
                stored.total - stored.rejected,
                run.input_jobs.unwrap_or(0),
                run.name
            );
        }
        let (failed, reason) = store.judge_failures(run.id).await?;
        if failed > 0 {
            println!(
                "  judges   {failed} verdicts pending after failed requests (latest: {}); `msgbatch grade {}` asks again",
                reason.as_deref().unwrap_or("no reason recorded"),
                run.name
            );
        }
    }
    Ok(ExitStatus::Success)
}

#[expect(clippy::print_stdout, reason = "the status is the command's output")]
fn print_details(run: &RunRow) {
    let when = |ms: i64| {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        humantime::format_rfc3339_seconds(at).to_string()
    };
    println!();
    let format = if run.input_format.is_empty() {
        String::new()
    } else {
        format!(", {}", run.input_format)
    };
    println!(
        "  input    {}{format} (sha256 {})",
        run.input_path, run.input_sha256
    );
    println!(
        "  gateway  {} {}{}",
        run.gateway_name, run.base_url, run.messages_path
    );
    println!("  started  {}", when(run.created_at_ms));
    if let Some(finished) = run.finished_at_ms {
        println!("  ended    {}", when(finished));
    }
    if let Some(reason) = &run.stop_reason {
        println!("  stopped  {reason}");
    }
    if run.status != "completed" && run.status != "loading" {
        println!("  resume   msgbatch resume {}", run.name);
    }
}
