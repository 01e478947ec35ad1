//! One module per subcommand, and the session logic `run` and `resume` share.

mod cancel;
mod diff;
mod estimate;
mod export;

mod grade;
mod mock;
mod plan;
mod prices;
mod report;
mod resume;
mod run;
mod sending;
mod status;
mod view;
mod work;

use crate::cli::{Cli, Command};
use crate::{ExitStatus, Shutdown};

pub async fn dispatch(cli: Cli, shutdown: Shutdown) -> anyhow::Result<ExitStatus> {
    let global = Global {
        db: cli.db,
        config: cli.config,
        quiet: cli.quiet,
        opened: std::sync::Mutex::default(),
    };
    let status = match cli.command {
        Command::Run(args) => run::run(&global, *args, shutdown).await,
        Command::Resume(args) => resume::resume(&global, args, shutdown).await,
        Command::Work(args) => work::work(&global, args, shutdown).await,
        Command::Cancel(args) => cancel::cancel(&global, args, shutdown).await,
        Command::Status(args) => status::status(&global, &args).await,
        Command::Estimate(args) => estimate::estimate(&global, *args, shutdown).await,
        Command::Grade(args) => grade::grade(&global, &args, shutdown).await,
        Command::Report(args) => report::report(&global, &args).await,
        Command::Diff(args) => diff::diff(&global, &args).await,
        Command::Export(args) => export::export(&global, &args).await,
        Command::Mock(args) => mock::mock(args, shutdown).await,
        Command::Prices(args) => prices::prices(&global, &args),
        Command::View(args) => view::view(&global, &args, shutdown).await,
    };
    global.close().await;
    status
}

/// Whether a command hears the shutdown tokens (it sends, or serves) and so stops gracefully
/// on a signal; the others only read or print, and a signal ends them at once.
pub fn stops_gracefully(command: &Command) -> bool {
    match command {
        Command::Run(_)
        | Command::Resume(_)
        | Command::Work(_)
        | Command::Cancel(_)
        | Command::Estimate(_)
        | Command::Grade(_)
        | Command::Mock(_)
        | Command::View(_) => true,
        Command::Status(_)
        | Command::Report(_)
        | Command::Diff(_)
        | Command::Export(_)
        | Command::Prices(_) => false,
    }
}

/// Options that apply to every command.
pub struct Global {
    pub db: crate::store::Location,
    pub config: Option<std::path::PathBuf>,
    pub quiet: bool,
    /// Every store the command opened, closed (and checkpointed) when it ends, however.
    opened: std::sync::Mutex<Vec<crate::store::Store>>,
}

impl Global {
    /// Opens the database for commands that work on runs already in it, refusing to create an
    /// empty one where the user mistyped the path.
    pub async fn existing_store(&self) -> anyhow::Result<crate::store::Store> {
        self.existing_store_keeping(0).await
    }

    /// Opens the database as [`Global::existing_store`] does, keeping `connections` to a
    /// PostgreSQL server open all along (see [`crate::store::Store::open_keeping`]).
    pub async fn existing_store_keeping(
        &self,
        connections: u32,
    ) -> anyhow::Result<crate::store::Store> {
        if !self.db.exists() {
            anyhow::bail!("no database at {} (give --db or set MSGBATCH_DB)", self.db);
        }
        self.store_keeping(connections).await
    }

    /// Opens (or creates) the database, to be closed when the command ends.
    pub async fn store(&self) -> anyhow::Result<crate::store::Store> {
        self.store_keeping(0).await
    }

    /// Opens (or creates) the database as [`Global::store`] does, keeping `connections` to a
    /// PostgreSQL server open all along (see [`crate::store::Store::open_keeping`]).
    pub async fn store_keeping(&self, connections: u32) -> anyhow::Result<crate::store::Store> {
        let store = crate::store::Store::open_keeping(&self.db, connections).await?;
        if let Ok(mut opened) = self.opened.lock() {
            opened.push(store.clone());
        }
        Ok(store)
    }

    /// Closes every store the command opened: a SQLite file is left whole without its
    /// write-ahead log. Bounded, so that a connection a stuck task still holds cannot keep
    /// the command from ending.
    async fn close(&self) {
        let opened = match self.opened.lock() {
            Ok(mut opened) => std::mem::take(&mut *opened),
            Err(_) => return,
        };
        for store in opened {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), store.close()).await;
        }
    }
}
