//! The summary that ends a session of `run`, `resume` and `work`: what the session decided
//! ([`crate::send::session`]), printed, so that a resumed run reads exactly like a fresh one.

use std::io::IsTerminal;

use super::Global;
use super::plan::{closest_model, connect, prices_for};
use crate::ExitStatus;
use crate::cli::{OutputFormat, SummaryArgs};
use crate::client::Client;
use crate::pricing::{PriceTable, format_usd};
use crate::report::{self, Report};
use crate::send::Shutdown;
use crate::send::direct::{Judged, Session};
use crate::send::feed::Feed;
use crate::send::progress;
use crate::send::session::{self, Ended, Sending};
use crate::settings::{ApiKey, RunSettings};
use crate::store::{GroupBy, RunRow, RunStatus, Store};

/// Asks the judge model for every pending `judge` grade of a run (`msgbatch grade`).
pub async fn judge(
    store: &Store,
    run_id: i64,
    settings: &RunSettings,
    client: Client,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let prices = prices_for(&settings.gateway)?;
    let judged = session::judge(store, run_id, settings, client, prices, shutdown).await?;
    print_judged(&judged);
    Ok(())
}

fn print_judged(judged: &Judged) {
    let asked = judged.verdicts + judged.unanswered + judged.over_budget;
    if asked == 0 {
        return;
    }
    let mut line = format!(
        "judged {} answers for {}",
        judged.verdicts,
        format_usd(judged.cost_pico_usd)
    );
    if judged.unanswered > 0 {
        line.push_str(&format!(
            "; {} judge requests failed and stay pending for `msgbatch grade` (the report says why)",
            judged.unanswered
        ));
    }
    if judged.over_budget > 0 {
        line.push_str(&format!(
            "; {} judge requests would pass --max-cost and stay pending for `msgbatch grade`",
            judged.over_budget
        ));
    }
    crate::errln!("{line}");
}

/// The models of a run with jobs still to send and no price in `prices`, each named once in a
/// warning before anything is sent, so that a night is not spent on answers no report can
/// price. `models` are the run's models with their jobs to send.
fn unpriced_models(models: Vec<(String, i64)>, prices: &PriceTable) -> Vec<String> {
    let mut unpriced = Vec::new();
    for (model, pending) in models {
        if prices.lookup(&model).is_some() {
            continue;
        }
        if pending > 0 {
            // The name comes from a job file: shown without control characters.
            let shown = printable(&model, 100);
            if let Some(known) = closest_model(prices, &model) {
                crate::errln!(
                    "warning: unknown model `{shown}`: did you mean `{known}`? (a gateway answers a model it does not serve with 404 not_found_error)"
                );
            }
            crate::errln!(
                "warning: no price for model `{shown}` ({pending} job{} to send) in {}: its cost will be reported as unpriced, never as $0; give its rates with --prices FILE or `prices` in the gateway's msgbatch.toml profile (`msgbatch prices` shows the table in force)",
                if pending == 1 { "" } else { "s" },
                prices.describe()
            );
        }
        unpriced.push(model);
    }
    unpriced
}

/// `a`, `` `a` and `b` ``, `` `a`, `b` and `c` ``.
fn quoted(models: &[String]) -> String {
    let quoted: Vec<String> = models.iter().map(|m| format!("`{m}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// Sends every pending job of `run`, records how the session ended and prints a summary. With
/// `feed`, the run's rows are still being stored, and its jobs are sent as they are.
#[expect(
    clippy::too_many_arguments,
    reason = "what run, resume and work each resolved, handed over once"
)]
pub async fn send(
    global: &Global,
    store: &Store,
    run: &RunRow,
    settings: &RunSettings,
    key: Option<ApiKey>,
    feed: Option<Feed>,
    shutdown: Shutdown,
    ending: SummaryArgs,
) -> anyhow::Result<ExitStatus> {
    let prices = prices_for(&settings.gateway)?;
    let models = match &feed {
        Some(feed) => feed.models.clone(),
        None => store.run_models(run.id).await?,
    };
    let unpriced = unpriced_models(models, &prices);
    if !unpriced.is_empty() && settings.send.max_cost_pico_usd.is_some() {
        anyhow::bail!(
            "no price for {}: --max-cost cannot bound what {} cost; give {} rates with --prices FILE or `prices` in the gateway's msgbatch.toml profile",
            quoted(&unpriced),
            if unpriced.len() == 1 {
                "its answers"
            } else {
                "their answers"
            },
            if unpriced.len() == 1 { "its" } else { "their" },
        );
    }
    // Held until the session ends: a mock run's gateway lives as long as this session.
    let (_mock, client) = connect(settings, key).await?;
    let show_progress = progress::show_bar(
        std::io::stderr().is_terminal(),
        std::env::var_os("CI").is_some(),
        global.quiet,
    );
    let Ended {
        session,
        status,
        others,
    } = Sending {
        store,
        run,
        settings,
        client,
        prices: prices.clone(),
        feed,
        shutdown,
        show_progress,
    }
    .run()
    .await?;
    if let Some(judged) = &session.judged {
        print_judged(judged);
    }
    if others > 0 || session.outcomes_lost > 0 {
        if session.outcomes_lost > 0 {
            crate::errln!(
                "{} answers of this worker were not recorded: their jobs' leases had passed to another worker, which records its own",
                session.outcomes_lost
            );
        }
        if others > 0 {
            crate::errln!(
                "{} jobs are still pending with {others} other worker{} of run {}; `msgbatch status {}` follows them",
                session.counts.pending,
                if others == 1 { "" } else { "s" },
                run.name,
                run.name
            );
        }
    }
    let wants_table = ending.format == OutputFormat::Table
        && !global.quiet
        && session.counts.succeeded + session.counts.failed > 0;
    // The run as it stands now, with the status just recorded, reported once by model: for
    // the table below, and for how a deadline split it.
    let report = if wants_table || settings.send.deadline.is_some() {
        let run = store.find_run(&run.id.to_string()).await?;
        let options = report::Options {
            by: GroupBy::Model,
            prices,
            reprice: None,
            charts: false,
            cluster_tag: None,
        };
        Some((
            Report::build(store, std::slice::from_ref(&run), &options).await?,
            run,
        ))
    } else {
        None
    };
    let split = match (&settings.send.deadline, &report) {
        (Some(_), Some((report, run))) => DeadlineSplit::of(run, report)?,
        _ => None,
    };
    let grading = pass_rate(store, run.id).await?;
    let exit = if session.halt.is_some() {
        ExitStatus::Error
    } else if status == RunStatus::BudgetExhausted {
        ExitStatus::BudgetExhausted
    } else if status == RunStatus::Interrupted {
        ExitStatus::Interrupted
    } else if below_gate(&grading, ending.fail_under) {
        // A gate the user set outranks failed jobs: it is what the pipeline asked about.
        ExitStatus::BelowPassRate
    } else if session.counts.failed > 0 {
        ExitStatus::JobsFailed
    } else {
        ExitStatus::Success
    };
    if ending.format == OutputFormat::Json {
        print_summary_json(
            run,
            status,
            &session,
            &unpriced,
            &grading,
            ending,
            exit,
            split.as_ref(),
        )?;
        print_stopped(run, status, &session);
    } else {
        let failures = if session.counts.failed > 0 {
            Some(Failures {
                kinds: store.failure_kinds(run.id, FAILURE_KINDS_SHOWN).await?,
                jobs: store.failed_job_ids(run.id, FAILED_JOBS_SHOWN).await?,
            })
        } else {
            None
        };
        print_summary(run, status, &session, &unpriced)?;
        if let Some(split) = &split {
            split.print()?;
        }
        if let Some(failures) = &failures {
            print_failures(run, session.counts.failed, failures)?;
        }
    }
    if exit == ExitStatus::BelowPassRate
        && let Some(gate) = ending.fail_under
    {
        crate::errln!("{}", gate_failure(&grading, gate));
    }
    if wants_table && let Some((report, _)) = &report {
        crate::outln!("\n{}", report::table(report))?;
    }
    Ok(exit)
}

/// A run's jobs graded, passed (every grader), and still waiting for a judge, over all its
/// sessions.
#[derive(Debug, Clone, Copy, Default)]
struct PassRate {
    graded: i64,
    passed: i64,
    pending: i64,
}

impl PassRate {
    /// Passed over the graded jobs whose verdict is in, as the report computes it.
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    fn rate(self) -> Option<f64> {
        let decided = self.graded - self.pending;
        (decided > 0).then(|| self.passed as f64 / decided as f64)
    }
}

async fn pass_rate(store: &Store, run_id: i64) -> anyhow::Result<PassRate> {
    let rows = store.report_grading(&[run_id], &GroupBy::Run).await?;
    Ok(rows.iter().fold(PassRate::default(), |sum, row| PassRate {
        graded: sum.graded + row.graded,
        passed: sum.passed + row.passed,
        pending: sum.pending + row.pending,
    }))
}

/// Whether `--fail-under` fails the run: a pass rate below it, or none at all (a gate that
/// cannot be measured must not pass a pipeline).
fn below_gate(grading: &PassRate, gate: Option<f64>) -> bool {
    gate.is_some_and(|gate| grading.rate().is_none_or(|rate| rate < gate))
}

fn gate_failure(grading: &PassRate, gate: f64) -> String {
    match grading.rate() {
        Some(rate) => format!(
            "pass rate {:.1}% ({} of {} graded) is below --fail-under {:.1}%",
            rate * 100.0,
            grading.passed,
            grading.graded - grading.pending,
            gate * 100.0
        ),
        None => format!(
            "no job has a verdict from its graders, so the pass rate --fail-under {:.1}% asks for is unknown",
            gate * 100.0
        ),
    }
}

/// How a run with a `--deadline` went: its answers through batches and directly, and what
/// the direct ones cost over the batch price, from the run's results as the report prices
/// them.
#[derive(Debug, Clone, Copy)]
struct DeadlineSplit {
    at_ms: i64,
    switched: bool,
    batch_results: i64,
    direct_results: i64,
    /// What the run's answers cost less what they would have cost through batches.
    cost_pico_usd: i64,
}

impl DeadlineSplit {
    /// `None` for a run sent directly, for which a deadline means nothing. `run` is as the
    /// session left it, and `report` is of that run alone.
    fn of(run: &RunRow, report: &Report) -> anyhow::Result<Option<Self>> {
        // The settings as the session left them: the switch, and the way `--via auto`
        // chose, are recorded there.
        let settings = RunSettings::of(run)?;
        if settings.send.via == crate::settings::Via::Direct {
            return Ok(None);
        }
        let deadline = settings.send.deadline;
        let (results, batch_results, cost) = report.totals.iter().fold((0, 0, 0), |sum, g| {
            (
                sum.0 + g.jobs.succeeded,
                sum.1 + g.cost.batch_results,
                sum.2 + (g.cost.total_pico_usd - g.cost.batch_api_pico_usd),
            )
        });
        Ok(Some(Self {
            at_ms: deadline.map_or(0, |d| d.at_ms),
            switched: deadline.is_some_and(|d| d.switched_at_ms.is_some()),
            batch_results,
            direct_results: results - batch_results,
            cost_pico_usd: cost,
        }))
    }

    fn print(&self) -> std::io::Result<()> {
        crate::outln!(
            "  via     {} through batches, {} directly; deadline {}{}",
            self.batch_results,
            self.direct_results,
            crate::send::deadline::describe(self.at_ms),
            if self.switched {
                format!(
                    " (switched to direct): it cost {} over an all-batch run",
                    format_usd(u64::try_from(self.cost_pico_usd).unwrap_or(0))
                )
            } else {
                " (met through batches)".to_owned()
            }
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "at": crate::send::deadline::describe(self.at_ms),
            "switched": self.switched,
            "batch_results": self.batch_results,
            "direct_results": self.direct_results,
            "cost_over_batches_pico_usd": self.cost_pico_usd,
        })
    }
}

/// The summary as one JSON object on standard output, with stable keys: `run` {`id`,
/// `name`}, `status`, `stop_reason`, `jobs` {`total`, `succeeded`, `failed`, `rejected`,
/// `pending`}, `tokens` {`input`, `cache_write`, `cache_read`, `output`}, `cost`
/// {`total_pico_usd`, `complete`, `unpriced_results`, `unpriced_models`}, `elapsed_ms` and
/// `finished` (this session), `grading` {`graded`, `passed`, `pending`, `pass_rate`} (null
/// when nothing was graded), `fail_under`, `exit_code`, `resume` (the command that
/// continues the run, or null) and, for a run with a `--deadline`, `deadline` {`at`,
/// `switched`, `batch_results`, `direct_results`, `cost_over_batches_pico_usd`}.
#[expect(clippy::too_many_arguments, reason = "what the summary is made of")]
fn print_summary_json(
    run: &RunRow,
    status: RunStatus,
    session: &Session,
    unpriced: &[String],
    grading: &PassRate,
    ending: SummaryArgs,
    exit: ExitStatus,
    split: Option<&DeadlineSplit>,
) -> anyhow::Result<()> {
    let c = &session.counts;
    let stop_reason = session
        .halt
        .as_deref()
        .or(session.batches_running.as_deref())
        .or(session.budget_stop.as_deref());
    let mut value = serde_json::json!({
        "run": {"id": run.id, "name": run.name},
        "status": status.as_str(),
        "stop_reason": stop_reason,
        "jobs": jobs_json(c),
        "tokens": tokens_json(c),
        "cost": {
            "total_pico_usd": c.cost_pico_usd,
            "complete": c.unpriced == 0,
            "unpriced_results": c.unpriced,
            "unpriced_models": unpriced,
        },
        "elapsed_ms": u64::try_from(session.elapsed.as_millis()).unwrap_or(u64::MAX),
        "finished": session.finished,
        "grading": (grading.graded > 0).then(|| serde_json::json!({
            "graded": grading.graded,
            "passed": grading.passed,
            "pending": grading.pending,
            "pass_rate": grading.rate(),
        })),
        "fail_under": ending.fail_under,
        "exit_code": exit as u8,
        "resume": (status != RunStatus::Completed).then(|| format!("msgbatch resume {}", run.name)),
    });
    if let Some(split) = split {
        value["deadline"] = split.json();
    }
    // JSON escapes its own strings: it is printed as it is, never terminal-escaped.
    super::report::emit(&(serde_json::to_string_pretty(&value)? + "\n"), None)?;
    Ok(())
}

/// A run's job counts, as the summary's first lines.
/// A run's jobs by state, as the JSON of the summary and of `status` give them.
pub fn jobs_json(c: &crate::store::RunCounts) -> serde_json::Value {
    serde_json::json!({
        "total": c.total,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "rejected": c.rejected,
        "pending": c.pending,
    })
}

/// A run's tokens, as the JSON of the summary and of `status` give them.
pub fn tokens_json(c: &crate::store::RunCounts) -> serde_json::Value {
    serde_json::json!({
        "input": c.input_tokens,
        "cache_write": c.cache_creation_input_tokens,
        "cache_read": c.cache_read_input_tokens,
        "output": c.output_tokens,
    })
}

pub fn print_counts(run: &RunRow, counts: &crate::store::RunCounts) -> std::io::Result<()> {
    crate::outln!("run {} (id {})", run.name, run.id)?;
    print_jobs(counts)
}

fn print_jobs(c: &crate::store::RunCounts) -> std::io::Result<()> {
    crate::outln!(
        "  jobs    {} succeeded, {} failed, {} rejected, {} pending (of {})",
        c.succeeded,
        c.failed,
        c.rejected,
        c.pending,
        c.total
    )
}

/// How many error kinds and failed job ids the closing summary names.
const FAILURE_KINDS_SHOWN: i64 = 3;
const FAILED_JOBS_SHOWN: i64 = 5;

/// What a session's failures came to, read once it has ended.
struct Failures {
    kinds: Vec<crate::store::FailureKind>,
    /// (job id, model) of the first failed jobs.
    jobs: Vec<(String, String)>,
}

/// Text from a job file or a gateway, fit for a terminal line: no control characters, at most
/// `max` characters.
fn printable(text: &str, max: usize) -> String {
    let escaped = crate::output::terminal(text);
    let mut out: String = escaped.chars().take(max).collect();
    if escaped.chars().count() > max {
        out.push('…');
    }
    out
}

/// A run name as a shell word, quoted when it must be.
fn shell_word(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+'))
    {
        name.to_owned()
    } else {
        format!("'{}'", printable(name, 200).replace('\'', r"'\''"))
    }
}

/// The closing lines of a session with failed jobs: what failed most, which jobs, and the
/// commands that send them again and list every failure with its reason.
fn print_failures(run: &RunRow, failed: i64, failures: &Failures) -> std::io::Result<()> {
    let mut kinds: Vec<String> = failures
        .kinds
        .iter()
        .map(|k| {
            let kind = printable(&k.error_type, 64);
            match k.http_status {
                Some(status) if status > 0 => format!("{} × {kind} ({status})", k.count),
                _ => format!("{} × {kind}", k.count),
            }
        })
        .collect();
    let named: i64 = failures.kinds.iter().map(|k| k.count).sum();
    if named < failed {
        kinds.push(format!("{} other", failed - named));
    }
    crate::outln!("  failed  {}", kinds.join(", "))?;
    let mut jobs: Vec<String> = failures
        .jobs
        .iter()
        .map(|(job, model)| format!("{} ({})", printable(job, 64), printable(model, 64)))
        .collect();
    if usize::try_from(failed).unwrap_or(usize::MAX) > jobs.len() {
        jobs.push("…".to_owned());
    }
    crate::outln!("          e.g. {}", jobs.join(", "))?;
    let name = shell_word(&run.name);
    crate::outln!("send the failed jobs again: msgbatch resume {name} --include-failed")?;
    crate::outln!(
        "every failure with its reason: msgbatch report {name} --format csv (writes reports/{}-failures.csv)",
        crate::output::file_name(&run.name)
    )
}

fn print_summary(
    run: &RunRow,
    status: RunStatus,
    session: &Session,
    unpriced: &[String],
) -> std::io::Result<()> {
    let c = &session.counts;
    crate::outln!("run {} (id {}): {}", run.name, run.id, status.as_str())?;
    print_jobs(c)?;
    crate::outln!(
        "  tokens  input {} · cache write {} · cache read {} · output {}",
        report::count(c.input_tokens),
        report::count(c.cache_creation_input_tokens),
        report::count(c.cache_read_input_tokens),
        report::count(c.output_tokens)
    )?;
    let unpriced = if c.unpriced > 0 {
        format!(
            " (incomplete: {} result{} of {} left out; give a price with --prices FILE or `prices` in the gateway profile)",
            c.unpriced,
            if c.unpriced == 1 { "" } else { "s" },
            if unpriced.is_empty() {
                "unpriced models".to_owned()
            } else {
                quoted(unpriced)
            }
        )
    } else {
        String::new()
    };
    crate::outln!(
        "  cost    {}{unpriced}",
        format_usd(u64::try_from(c.cost_pico_usd).unwrap_or(0))
    )?;
    let seconds = session.elapsed.as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    let rate = if seconds > 0.0 {
        session.finished as f64 / seconds
    } else {
        0.0
    };
    crate::outln!("  time    {seconds:.1}s this session, {rate:.1} jobs/s")?;
    print_stopped(run, status, session);
    Ok(())
}

/// Why a session that did not complete stopped, and how to go on, on standard error (in
/// either format of the summary).
fn print_stopped(run: &RunRow, status: RunStatus, session: &Session) {
    if status != RunStatus::Completed {
        if let Some(halt) = &session.halt {
            crate::errln!("stopped: {halt}");
        }
        if let Some(running) = &session.batches_running {
            crate::errln!("{running}");
        }
        if status == RunStatus::BudgetExhausted {
            if let Some(reason) = &session.budget_stop {
                crate::errln!("stopped: {reason}");
            }
            crate::errln!(
                "resume with a higher budget: msgbatch resume {} --max-cost USD",
                run.name
            );
        } else {
            crate::errln!("resume with: msgbatch resume {}", run.name);
        }
    }
}
