//! `msgbatch diff`: which answers changed between two runs, or between the models of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Global;
use super::report::emit;
use crate::ExitStatus;
use crate::cli::{DiffArgs, ReportFormat};
use crate::diff::{self, Comparison, Flags};
use crate::output;
use crate::store::{RunRow, Store};

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
        [run] => (models(&store, run, &options, args).await?, run.name.clone()),
        _ => anyhow::bail!("diff takes one run or two"),
    };
    if let Comparison::Runs(_) = &comparison {
        let target = |ext: &str| target(args, &name, ext);
        match args.format {
            ReportFormat::Table => {
                emit(&output::terminal_lines(&diff::table(&comparison)), None)?;
            }
            ReportFormat::Md => emit(&diff::markdown(&comparison), target("md"))?,
            ReportFormat::Csv => emit(&diff::csv(&comparison)?, target("csv"))?,
            ReportFormat::Json => emit(
                &(serde_json::to_string_pretty(&comparison)? + "\n"),
                target("json"),
            )?,
            ReportFormat::Html => emit(&diff::html(&comparison), target("html"))?,
        }
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

/// Where a comparison named `name` is written in format `ext`: `None` for standard output.
/// Run names come from outside: the file name is their plain form, inside `--out`.
fn target(args: &DiffArgs, name: &str, ext: &str) -> Option<PathBuf> {
    (args.out.as_os_str() != "-").then(|| {
        args.out
            .join(output::file_name(&format!("{name}-diff.{ext}")))
    })
}

/// The models of one run compared: the table and the page hold the rows they show (a
/// bounded number), and are written by the caller; Markdown, CSV and JSON, which list every
/// job, are written here as the rows are read, none held longer than it takes to write it.
async fn models(
    store: &Store,
    run: &RunRow,
    options: &diff::Options,
    args: &DiffArgs,
) -> anyhow::Result<Comparison> {
    let mut models = diff::models(store, run, options).await?;
    let target = |ext: &str| target(args, &run.name, ext);
    match args.format {
        ReportFormat::Table => {
            models
                .load_rows(store, Flags::listed, 0, diff::DEFAULT_LIMIT)
                .await?;
            let comparison = Comparison::Models(models.matrix);
            emit(&output::terminal_lines(&diff::table(&comparison)), None)?;
            return Ok(comparison);
        }
        ReportFormat::Html => {
            models
                .load_rows(store, Flags::listed, 0, diff::HTML_MAX_ROWS)
                .await?;
            models
                .load_rows(store, |f| !f.listed(), 0, diff::HTML_AGREEING_ROWS)
                .await?;
            let comparison = Comparison::Models(models.matrix);
            emit(&diff::html(&comparison), target("html"))?;
            return Ok(comparison);
        }
        ReportFormat::Md | ReportFormat::Csv | ReportFormat::Json => {}
    }
    let ext = match args.format {
        ReportFormat::Md => "md",
        ReportFormat::Csv => "csv",
        _ => "json",
    };
    let path = target(ext);
    let mut out = Out::open(path.as_deref())?;
    let matrix = &models.matrix;
    match args.format {
        ReportFormat::Md => {
            out.write_all(diff::markdown_models_head(matrix).as_bytes())?;
            models
                .each_row(store, Flags::listed, 0, usize::MAX, |row| {
                    out.write_all(diff::markdown_models_row(&row).as_bytes())?;
                    Ok(())
                })
                .await?;
            out.write_all(diff::markdown_models_tail(matrix).as_bytes())?;
        }
        ReportFormat::Csv => {
            let mut writer = ::csv::Writer::from_writer(&mut out);
            diff::csv_models_header(&mut writer)?;
            models
                .each_row(
                    store,
                    |_| true,
                    0,
                    usize::MAX,
                    |row| Ok(diff::csv_models_row(&mut writer, &matrix.models, &row)?),
                )
                .await?;
            writer.flush()?;
        }
        _ => {
            out.write_all(diff::json_models_head(matrix)?.as_bytes())?;
            let mut rows = 0;
            // Each row serialized into one buffer, then written: serde writes a token at a
            // time, and each write to `out` goes through its own buffer.
            let mut buffer = Vec::new();
            models
                .each_row(
                    store,
                    |_| true,
                    0,
                    usize::MAX,
                    |row| {
                        buffer.clear();
                        diff::json_models_row(&mut buffer, &row, rows == 0)?;
                        out.write_all(&buffer)?;
                        rows += 1;
                        Ok(())
                    },
                )
                .await?;
            out.write_all((diff::json_models_tail(matrix, rows)? + "\n").as_bytes())?;
        }
    }
    out.finish(path.as_deref())?;
    Ok(Comparison::Models(models.matrix))
}

/// Standard output, or a file written whole or not at all (see [`output::AtomicFile`]).
enum Out {
    /// Escaped for a terminal as it goes, as every document printed is.
    Stdout(output::DocumentWriter<std::io::BufWriter<std::io::StdoutLock<'static>>>),
    File(output::AtomicFile),
}

impl Out {
    fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match path {
            None => Self::Stdout(output::DocumentWriter::new(
                std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock()),
            )),
            Some(path) => Self::File(
                output::AtomicFile::create(path)
                    .with_context(|| format!("failed to write {}", path.display()))?,
            ),
        })
    }

    fn finish(self, path: Option<&Path>) -> anyhow::Result<()> {
        match self {
            Self::Stdout(out) => {
                out.finish()?;
            }
            Self::File(file) => {
                let path = path.unwrap_or(Path::new("-"));
                file.commit()
                    .with_context(|| format!("failed to write {}", path.display()))?;
                crate::errln!("wrote {}", path.display());
            }
        }
        Ok(())
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Stdout(out) => out.write(buf),
            Self::File(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Stdout(out) => out.flush(),
            Self::File(file) => file.flush(),
        }
    }
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
