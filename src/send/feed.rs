//! Storing a checked job file while its run sends: the rows go into the store chunk by chunk,
//! and the dispatcher reads each chunk once it is committed ([`Loading`]). A job is
//! never sent before it is stored, and a run stopped while loading keeps what it stored for
//! `resume` to go on from.

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::jobs::{self, Checked, LoadOptions, LoadSummary};
use crate::store::{NewJob, Store};

/// Jobs per insert transaction while loading.
pub const LOAD_CHUNK: usize = 5000;

/// A run's rows being stored in the background.
pub struct Feed {
    stored: watch::Receiver<Stored>,
    /// Jobs to send once every row is stored.
    jobs: u64,
    /// Jobs of each model in the whole file, bad records left out.
    pub models: Vec<(String, i64)>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Feed {
    /// Starts storing the rows of `options`' file (which `checked` passed) after line
    /// `after_line`, and returns once the first chunk is committed, so that the run has rows
    /// to start from.
    pub async fn start(
        store: &Store,
        run_id: i64,
        options: LoadOptions,
        checked: Checked,
        keep_rejected: bool,
        after_line: u64,
    ) -> anyhow::Result<Self> {
        let (progress, mut stored) = watch::channel(Stored::default());
        let to_send = checked.summary.jobs;
        let models = checked
            .models
            .iter()
            .map(|(model, n)| (model.clone(), i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        let store = store.clone();
        let task = tokio::spawn(async move {
            store_chunks(
                &store,
                run_id,
                move |sink| {
                    jobs::load_checked(
                        &options,
                        &checked,
                        keep_rejected,
                        after_line,
                        LOAD_CHUNK,
                        sink,
                    )
                },
                || progress.send_modify(|stored| stored.chunks += 1),
            )
            .await?;
            store.set_loaded(run_id).await?;
            progress.send_modify(|stored| stored.done = true);
            Ok(())
        });
        // Wait for the first rows (or the end of the storing, whichever way it ended).
        let _ = stored.wait_for(|s| s.chunks > 0 || s.done).await;
        Ok(Self {
            stored,
            jobs: to_send,
            models,
            task,
        })
    }

    /// What the dispatcher follows.
    pub fn loading(&self) -> Loading {
        Loading {
            stored: self.stored.clone(),
            jobs: self.jobs,
        }
    }

    /// Waits for every row to be stored; or, when the run `stopped`, stops storing at once
    /// (what is committed stays, for `resume`). Fails with the error that ended the storing.
    pub async fn finish(self, stopped: bool) -> anyhow::Result<()> {
        if stopped {
            self.task.abort();
        }
        match self.task.await {
            Ok(stored) => stored,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(anyhow::anyhow!("the job loader panicked: {e}")),
        }
    }
}

/// Starts checking a job file on a blocking thread ([`jobs::check`]): await the outcome.
pub fn check(options: LoadOptions) -> impl Future<Output = anyhow::Result<Checked>> {
    let task = tokio::task::spawn_blocking(move || jobs::check(&options));
    async move { task.await.context("the job check panicked")? }
}

/// Runs `read` on a blocking thread and inserts each chunk it hands to its sink while it reads
/// the next, so that parsing and SQLite overlap; `committed` hears of each stored chunk.
pub async fn store_chunks(
    store: &Store,
    run_id: i64,
    read: impl FnOnce(&mut dyn FnMut(Vec<NewJob>) -> anyhow::Result<()>) -> anyhow::Result<LoadSummary>
    + Send
    + 'static,
    mut committed: impl FnMut(),
) -> anyhow::Result<LoadSummary> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<NewJob>>(1);
    let reader = tokio::task::spawn_blocking(move || {
        read(&mut |chunk| {
            sender
                .blocking_send(chunk)
                .context("the job inserter stopped")
        })
    });
    let mut insert_error = None;
    while let Some(chunk) = receiver.recv().await {
        if let Err(e) = store.insert_jobs(run_id, chunk).await {
            insert_error = Some(e);
            break;
        }
        committed();
    }
    drop(receiver);
    let summary = reader.await.context("the job reader panicked")?;
    if let Some(e) = insert_error {
        return Err(e.into());
    }
    summary
}

/// A run whose checked file is being stored while it sends: the dispatcher reads the rows as
/// they are committed and waits for more until the last is in.
#[derive(Debug)]
pub struct Loading {
    pub stored: tokio::sync::watch::Receiver<Stored>,
    /// Jobs to send when every row is stored (the run's whole file, bad records left out).
    pub jobs: u64,
}

/// How far the storing of a run's rows has got.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored {
    /// Chunks committed so far.
    pub chunks: u64,
    /// Every row is stored.
    pub done: bool,
}
