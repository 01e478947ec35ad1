//! `msgbatch grade`: grade a finished run again from its stored answers (after changing a
//! regex, say), and send the judge requests that are still owed. No job is sent again.

use std::collections::HashMap;

use anyhow::Context;
use serde_json::Value;

use super::resume::{Given, run_settings};
use super::{Global, plan, sending};
use crate::cli::{GradeArgs, SendArgs};
use crate::eval;
use crate::jobs::{Line, LineReader, MAX_RECORD_BYTES};
use crate::store::GradeRecord;
use crate::{ExitStatus, Shutdown};

pub async fn grade(
    global: &Global,
    args: &GradeArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitStatus> {
    let store = global.existing_store().await?;
    let expects = match &args.expect {
        Some(path) => match read_expects(path)? {
            Ok(expects) => expects,
            Err(errors) => {
                for error in &errors {
                    crate::errln!("{error}");
                }
                crate::errln!("error: {} bad records; nothing was graded", errors.len());
                return Ok(ExitStatus::Error);
            }
        },
        None => Vec::new(),
    };
    let _lock = store.lock().await?;
    let run = store.find_run(&args.run).await?;
    // The gateway as judge requests reach it: the run's own, its credentials (never stored)
    // given again as `resume` takes them. What the command line gives is checked before
    // anything changes; what it leaves out is needed only once judges are owed.
    let sending = SendArgs {
        max_cost: args.max_cost,
        ..SendArgs::default()
    };
    let given = Given {
        base_url: args.base_url.as_deref(),
        messages_path: args.messages_path.as_deref(),
    };
    let settings_now =
        |run: &crate::store::RunRow| run_settings(global, run, &sending, &args.headers, given);
    let checked =
        if args.base_url.is_some() || args.messages_path.is_some() || !args.headers.is_empty() {
            Some(settings_now(&run)?)
        } else {
            None
        };
    let replaced: HashMap<&str, &str> = expects
        .iter()
        .map(|(id, e)| (id.as_str(), e.as_str()))
        .collect();
    // Judge verdicts whose spec has not changed still hold.
    let kept: HashMap<(i64, i64, String), GradeRecord> = store
        .judge_verdicts(run.id)
        .await?
        .into_iter()
        .map(|g| ((g.job, g.grader, g.spec.clone()), g))
        .collect();
    let mut grades = Vec::new();
    for job in store.gradable(run.id).await? {
        let expect = replaced
            .get(job.job_id.as_str())
            .copied()
            .or(job.expect.as_deref());
        let Some(expect) = expect else { continue };
        for grade in eval::grade_job(job.job, expect, &job.response, job.latency_ms) {
            let key = (grade.job, grade.grader, grade.spec.clone());
            grades.push(kept.get(&key).cloned().unwrap_or(grade));
        }
    }
    store.replace_grades(run.id, &expects, &grades).await?;
    replaced_in_open_batches(&store, &run, &grades).await?;
    let pending = store.pending_judges(run.id).await?.len();
    if pending > 0 {
        let settings = match checked {
            Some(settings) => settings,
            None => settings_now(&run)?,
        };
        let key = settings.gateway.api_key()?;
        if settings.mock.is_none() {
            plan::check_gateway(&settings.gateway, key.as_ref())?;
        }
        let (_mock, client) = plan::connect(&settings, key).await?;
        sending::judge(&store, run.id, &settings, client, &shutdown).await?;
    }
    let passed = grades.iter().filter(|g| g.passed == Some(true)).count();
    crate::outln!(
        "graded run {}: {} grades, {passed} passed before judging; see `msgbatch report {}`",
        run.name,
        grades.len(),
        run.name
    )?;
    Ok(ExitStatus::Success)
}

/// Says what becomes of the judges a batch still open asks with a spec their grades no
/// longer have: that batch cannot take a request back, so their verdicts are billed as it
/// ends, kept as attempts, and not recorded; the grades (if any) are asked with their new
/// specs once it has ended, by `resume` (or by `grade`, directly), never in between.
async fn replaced_in_open_batches(
    store: &crate::store::Store,
    run: &crate::store::RunRow,
    grades: &[GradeRecord],
) -> anyhow::Result<()> {
    let open = store.open_judge_items(run.id).await?;
    if open.is_empty() {
        return Ok(());
    }
    let now: HashMap<(i64, i64), i64> = grades
        .iter()
        .filter(|g| g.kind == "judge")
        .map(|g| ((g.job, g.grader), crate::store::spec_hash(&g.spec)))
        .collect();
    let replaced = open
        .iter()
        .filter(|(job, grader, asked)| {
            crate::store::replaced_since(*asked, now.get(&(*job, *grader)).copied())
        })
        .count();
    if replaced > 0 {
        crate::errln!(
            "note: {replaced} judge requests of run {} are in a batch still open, asked with the grader specs they had before; a batch cannot take them back: their verdicts are billed as it ends but not recorded, and the grades are asked with their new specs once it has ended (`msgbatch resume {}` waits for it; `msgbatch cancel {}` cancels what it has not yet processed, unbilled)",
            run.name,
            run.name,
            run.name
        );
    }
    Ok(())
}

/// New `expect` specs by job id, or every reason they cannot be used.
type ExpectFile = Result<Vec<(String, String)>, Vec<String>>;

/// Reads `{"custom_id", "expect"}` lines, checking every grader before anything changes.
fn read_expects(path: &std::path::Path) -> anyhow::Result<ExpectFile> {
    let file = fs_err::File::open(path)?;
    let display = path.display();
    let mut expects = Vec::new();
    let mut errors = Vec::new();
    // Lines are read within the bound of a job file's records: a longer one is refused
    // without being held.
    let mut reader = LineReader::new(std::io::BufReader::new(file));
    let mut buffer = Vec::new();
    loop {
        let read = reader
            .read_line(&mut buffer, MAX_RECORD_BYTES)
            .with_context(|| format!("failed to read {display}"))?;
        let number = reader.line;
        match read {
            Line::End => break,
            Line::Read => {}
            Line::TooLong => {
                anyhow::bail!(
                    "{display}: line {number}: larger than {} MB",
                    MAX_RECORD_BYTES >> 20
                );
            }
        }
        let Ok(line) = std::str::from_utf8(&buffer) else {
            errors.push(format!("{display}:{number}: not UTF-8"));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = match serde_json::from_str(line) {
            Ok(record) => record,
            Err(e) => {
                errors.push(format!("{display}:{number}: invalid JSON: {e}"));
                continue;
            }
        };
        let Some(id) = record.get("custom_id").and_then(Value::as_str) else {
            errors.push(format!("{display}:{number}: `custom_id` is missing"));
            continue;
        };
        let Some(expect) = record.get("expect") else {
            errors.push(format!("{display}:{number}: `expect` is missing"));
            continue;
        };
        match eval::parse(expect) {
            Ok(_) => expects.push((id.to_owned(), expect.to_string())),
            Err(e) => errors.push(format!("{display}:{number}: `{}` {}", e.field, e.reason)),
        }
    }
    Ok(if errors.is_empty() {
        Ok(expects)
    } else {
        Err(errors)
    })
}
