//! `msgbatch cancel`: cancels the batches of a run sent through the Message Batches API, and
//! records what they finished before the cancel took effect.

use std::io::IsTerminal;

use super::plan::{connect, prices_for};
use super::resume::{Given, run_settings};
use super::{Global, sending};
use crate::cli::{CancelArgs, SendArgs};
use crate::client::Unanswered;
use crate::send::batches::{BatchCalls, Batcher};
use crate::send::progress;
use crate::store::{BatchRow, RunStatus};
use crate::{ExitStatus, Shutdown};

pub async fn cancel(
    global: &Global,
    args: CancelArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let _lock = store.lock().await?;
    let run = store.find_run(&args.run).await?;
    let settings = run_settings(
        global,
        &run,
        &SendArgs::default(),
        &args.headers,
        Given {
            base_url: args.base_url.as_deref(),
            messages_path: args.messages_path.as_deref(),
        },
    )?;
    let open: Vec<BatchRow> = store
        .open_batches(run.id)
        .await?
        .into_iter()
        .filter(|b| b.remote_id.is_some())
        .collect();
    if open.is_empty() {
        crate::errln!("run {} has no batch running: nothing to cancel", run.name);
        return Ok(ExitStatus::Success);
    }
    let key = settings.gateway.api_key()?;
    let (_mock, client) = connect(&settings, key).await?;
    let prices = prices_for(&settings.gateway)?.batch();
    let batcher = Batcher {
        store: &store,
        client: &client,
        prices: &prices,
        run_id: run.id,
        settings: settings.send.batches,
        policy: settings.send.retry_policy(),
        stop: shutdown.stop.clone(),
        show_progress: progress::show_bar(
            std::io::stderr().is_terminal(),
            std::env::var_os("CI").is_some(),
            global.quiet,
        ),
        budget_pico_usd: settings.send.max_cost_pico_usd,
        calls: BatchCalls::new(settings.send.batches.rpm),
        deadline: None,
        judged: Default::default(),
    };
    for (done, row) in open.iter().enumerate() {
        let id = row.remote_id.as_deref().unwrap_or_default();
        match batcher.cancel(row).await? {
            Ok(_) => {}
            Err(Unanswered::Failed(e)) => {
                anyhow::bail!("canceling batch {id} failed: {e}");
            }
            Err(Unanswered::Stopped) => {
                crate::errln!(
                    "stopped before batch {id} was canceled ({done} of {} canceled); `msgbatch cancel {}` cancels the rest",
                    open.len(),
                    run.name
                );
                return Ok(shutdown
                    .signal()
                    .map_or(ExitStatus::Interrupted, ExitStatus::from));
            }
        }
    }
    crate::errln!(
        "canceling {} batch{} of run {}; recording what {} finished (Ctrl-C leaves the rest to `msgbatch resume {}`)",
        open.len(),
        if open.len() == 1 { "" } else { "es" },
        run.name,
        if open.len() == 1 { "it" } else { "they" },
        run.name
    );
    let collected = batcher
        .execute(false, crate::send::batches::Source::Answers)
        .await?;
    let counts = store.run_counts(run.id).await?;
    let reason = if collected.left_running > 0 {
        format!(
            "canceling: `msgbatch resume {}` records what the canceled batches finished",
            run.name
        )
    } else {
        format!(
            "canceled: {} jobs were not processed; `msgbatch resume {} --include-failed` sends them again",
            counts.failed, run.name
        )
    };
    store
        .set_run_status(run.id, RunStatus::Interrupted, Some(&reason))
        .await?;
    sending::print_counts(&run, &counts)?;
    crate::errln!("{reason}");
    Ok(ExitStatus::Interrupted)
}
