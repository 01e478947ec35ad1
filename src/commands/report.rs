//! `msgbatch report`: cost and latency of one or more runs, in the format asked for.

use std::path::Path;

use anyhow::{Context, bail};

use super::Global;
use crate::ExitStatus;
use crate::cli::{ReportArgs, ReportFormat};
use crate::output;
use crate::pricing::PriceTable;
use crate::report::{self, Report};
use crate::store::{GroupBy, RunRow};

pub fn parse_group_by(text: &str) -> anyhow::Result<GroupBy> {
    match text {
        "model" => Ok(GroupBy::Model),
        "run" => Ok(GroupBy::Run),
        other => match other.strip_prefix("tag:") {
            Some(name) if !name.is_empty() => Ok(GroupBy::Tag(name.to_owned())),
            _ => bail!("--by takes `model`, `run` or `tag:NAME`, not `{other}`"),
        },
    }
}

/// The price table a run was costed with: its gateway's file, else the built-in table.
pub fn run_prices(run: &RunRow) -> anyhow::Result<PriceTable> {
    crate::settings::run_prices(run)
}

pub async fn report(global: &Global, args: &ReportArgs) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let by = parse_group_by(&args.by)?;
    let mut runs = Vec::new();
    for key in &args.runs {
        runs.push(store.find_run(key).await?);
    }
    let prices = match &args.prices {
        Some(path) => PriceTable::from_file(path)?,
        None => run_prices(&runs[0])?,
    };
    let reprice = args
        .reprice
        .as_deref()
        .map(PriceTable::from_file)
        .transpose()?;
    let report = Report::build(
        &store,
        &runs,
        &report::Options {
            by,
            prices,
            reprice,
            charts: args.format == ReportFormat::Html,
            cluster_tag: super::diff::cluster_tag(args.cluster.as_deref())?,
        },
    )
    .await?;
    let name = runs
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join("-vs-");
    let kind = args.by.replace(':', "-");
    match args.format {
        ReportFormat::Table => emit(&output::terminal_lines(&report::table(&report)), None)?,
        ReportFormat::Md => emit(&report::markdown(&report), target(args, &name, &kind, "md"))?,
        ReportFormat::Json => emit(
            &(serde_json::to_string_pretty(&report)? + "\n"),
            target(args, &name, &kind, "json"),
        )?,
        ReportFormat::Html => emit(&report::html(&report)?, target(args, &name, &kind, "html"))?,
        ReportFormat::Csv => {
            emit(
                &report::groups_csv(&report)?,
                target(args, &name, &kind, "csv"),
            )?;
            let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
            let mut failures = store.report_failures(&ids).await?;
            failures.extend(store.report_failed_grades(&ids).await?);
            if args.out.as_os_str() != "-" {
                emit(
                    &report::failures_csv(&failures)?,
                    target(args, &name, "failures", "csv"),
                )?;
            }
        }
    }
    Ok(ExitStatus::Success)
}

/// `<out>/<runs>-<kind>.<ext>`, or `None` for standard output. Run names and tag names come
/// from outside: the file name is built from their [`output::file_name`] form, so that it
/// stays inside `--out`.
fn target(args: &ReportArgs, name: &str, kind: &str, ext: &str) -> Option<std::path::PathBuf> {
    (args.out.as_os_str() != "-").then(|| {
        args.out
            .join(output::file_name(&format!("{name}-{kind}.{ext}")))
    })
}

/// Writes a rendered report to standard output, or to `path` whole: under a temporary name
/// renamed into place once written, so that an interrupted command never leaves a truncated
/// file that looks complete.
pub(super) fn emit(text: &str, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    match path {
        None => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            // What a job file or a gateway wrote reaches the terminal inert, JSON still JSON.
            stdout.write_all(output::document(text).as_bytes())?;
            stdout.flush()?;
        }
        Some(path) => {
            output::AtomicFile::write(&path, text)
                .with_context(|| format!("failed to write {}", path.display()))?;
            crate::errln!("wrote {}", Path::new(&path).display());
        }
    }
    Ok(())
}
