//! One module per subcommand, and the session logic `run` and `resume` share.

mod cancel;
mod diff;
mod estimate;
mod export;
mod feed;
mod grade;
mod mock;
mod plan;
mod prices;
mod report;
mod resume;
mod run;
mod sending;
mod status;
mod work;

use crate::cli::{Cli, Command};
use crate::{ExitStatus, Shutdown};

pub async fn dispatch(cli: Cli, shutdown: Shutdown) -> anyhow::Result<ExitStatus> {
    let global = Global {
        db: cli.db,
        config: cli.config,
        quiet: cli.quiet,
    };
    match cli.command {
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
    }
}

/// Options that apply to every command.
pub struct Global {
    pub db: crate::store::Location,
    pub config: Option<std::path::PathBuf>,
    pub quiet: bool,
}

impl Global {
    /// Opens the database for commands that work on runs already in it, refusing to create an
    /// empty one where the user mistyped the path.
    pub async fn existing_store(&self) -> anyhow::Result<crate::store::Store> {
        if !self.db.exists() {
            anyhow::bail!("no database at {} (give --db or set MSGBATCH_DB)", self.db);
        }
        Ok(crate::store::Store::open(&self.db).await?)
    }
}
