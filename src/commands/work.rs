//! `msgbatch work`: one more worker for a run on a PostgreSQL store. It sends the run with the
//! settings it was started with (what the command line gives overrides them for this worker
//! only), claiming jobs under leases beside the other workers; see [`crate::send::direct::Claims`].

use anyhow::bail;

use super::resume::{Given, run_settings};
use super::{Global, sending};
use crate::cli::WorkArgs;
use crate::settings::Via;
use crate::store::{Dialect, StoreError};
use crate::{ExitStatus, Shutdown};

pub async fn work(
    global: &Global,
    args: WorkArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    if store.dialect() != Dialect::Postgres {
        return Err(StoreError::NeedsPostgres.into());
    }
    let run = store.find_run(&args.run).await?;
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
    if settings.send.via == Via::Batches || !store.open_batches(run.id).await?.is_empty() {
        bail!(
            "run {} is sent through the Message Batches API, by one process at a time: `msgbatch resume {}` collects it",
            run.name,
            run.name
        );
    }
    let key = settings.gateway.api_key()?;
    let left = store.unfinished(run.id).await?;
    if left.pending == 0 && left.loaded {
        crate::errln!("run {} has no pending jobs: nothing to do", run.name);
        return Ok(ExitStatus::Success);
    }
    crate::errln!(
        "worker for run {} (id {}): {} jobs pending{}",
        run.name,
        run.id,
        left.pending,
        if left.loaded {
            ""
        } else {
            " so far (the rest are still being stored)"
        }
    );
    sending::send(
        global,
        &store,
        &run,
        &settings,
        key,
        None,
        shutdown,
        crate::cli::SummaryArgs::default(),
    )
    .await
}
