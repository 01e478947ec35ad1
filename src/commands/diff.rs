//! `msgbatch diff`: which answers changed between two runs, or between the models of one.

use super::Global;
use super::report::emit;
use crate::ExitStatus;
use crate::cli::{DiffArgs, ReportFormat};
use crate::diff::{self, Comparison};
use crate::output;

pub async fn diff(global: &Global, args: &DiffArgs) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let mut runs = Vec::new();
    for key in &args.runs {
        runs.push(store.find_run(key).await?);
    }
    let limit = args.limit.unwrap_or(diff::DEFAULT_LIMIT);
    let cluster_tag = cluster_tag(args.cluster.as_deref())?;
    if args.baseline.is_some() && runs.len() != 1 {
        anyhow::bail!(
            "--baseline is for the models of one run; a diff of two runs compares the second with the first"
        );
    }
    let options = diff::Options {
        cluster_tag,
        baseline: args.baseline.clone(),
    };
    let (comparison, name) = match runs.as_slice() {
        [before, after] => (
            Comparison::Runs(diff::compare(&store, before, after, limit, &options).await?),
            format!("{}-vs-{}", before.name, after.name),
        ),
        // One model makes a one-column matrix: the run's jobs, failures first, for the viewer.
        [run] => (
            Comparison::Models(diff::matrix(&store, run, &options).await?),
            run.name.clone(),
        ),
        _ => anyhow::bail!("diff takes one run or two"),
    };
    // Run names come from outside: the file name is their plain form, inside `--out`.
    let target = |ext: &str| {
        (args.out.as_os_str() != "-").then(|| {
            args.out
                .join(output::file_name(&format!("{name}-diff.{ext}")))
        })
    };
    match args.format {
        ReportFormat::Table => emit(&output::terminal_lines(&diff::table(&comparison)), None)?,
        ReportFormat::Md => emit(&diff::markdown(&comparison), target("md"))?,
        ReportFormat::Csv => emit(&diff::csv(&comparison)?, target("csv"))?,
        ReportFormat::Json => emit(
            &(serde_json::to_string_pretty(&comparison)? + "\n"),
            target("json"),
        )?,
        ReportFormat::Html => emit(&diff::html(&comparison), target("html"))?,
    }
    let regressed = match &comparison {
        Comparison::Runs(diff) => diff.regressions() > 0,
        Comparison::Models(_) => false,
    };
    let dropped = match &comparison {
        Comparison::Runs(diff) => diff.significant_drop(),
        Comparison::Models(matrix) => matrix.significant_drop(),
    };
    Ok(
        if (args.fail_on_regression && regressed) || (args.fail_on_significant_drop && dropped) {
            ExitStatus::Regressed
        } else {
            ExitStatus::Success
        },
    )
}

/// The tag NAME of `--cluster tag:NAME`.
pub(super) fn cluster_tag(cluster: Option<&str>) -> anyhow::Result<Option<String>> {
    match cluster {
        None => Ok(None),
        Some(text) => match text.strip_prefix("tag:") {
            Some(tag) if !tag.is_empty() => Ok(Some(tag.to_owned())),
            _ => anyhow::bail!("--cluster {text}: give a tag as `tag:NAME`"),
        },
    }
}
