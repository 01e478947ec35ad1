//! The judges of a run sent through batches: asked in a batch of their own once the answers
//! are in, at half price, never created twice across kill -9, and asked directly when the
//! deadline is near.

use std::time::Duration;

use msgbatch::mock::batches::{BatchConfig, Call};
use msgbatch::mock::{MockConfig, MockServer};
use serde_json::json;

use crate::common::*;

/// Four jobs, each with a judge grader; the mock's judge fails the answer to the prompt
/// with `FAIL` in it.
fn judged_jobs(ws: &Workspace) -> std::path::PathBuf {
    judged_jobs_of(ws, 300)
}

/// [`judged_jobs`] whose answers are at most `max_tokens` long.
fn judged_jobs_of(ws: &Workspace, max_tokens: u64) -> std::path::PathBuf {
    let lines: Vec<String> = ["alpha", "beta", "gamma FAIL", "delta"]
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            json!({"custom_id": format!("job-{i}"), "params": {"model": "claude-haiku-4-5",
                "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]},
                "expect": [{"contains": "Answer"},
                    {"judge": {"rubric": "The answer must address the prompt.",
                               "model": "claude-haiku-4-5"}}]})
            .to_string()
        })
        .collect();
    ws.write("judged.jsonl", &(lines.join("\n") + "\n"))
}

/// A logging mock whose batches after the first (the judges') run until `finish_batches`.
async fn slow_judges(processed_first: usize) -> MockServer {
    mock(MockConfig {
        record: true,
        batches: BatchConfig {
            later_processing: Some(Duration::from_secs(3600)),
            processed_first,
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await
}

/// Calls to the Messages endpoint itself: a direct answer or a direct judge.
fn direct_calls(mock: &MockServer) -> usize {
    mock.log()
        .iter()
        .filter(|l| l.path.ends_with("/v1/messages"))
        .count()
}

/// A judge grade: its job's id, whether it passed, why, and what the judge cost.
type Verdict = (String, Option<bool>, Option<String>, Option<i64>);

/// Each judge grade of the run's jobs, in job order: (job id, passed, reason, cost).
async fn verdicts(ws: &Workspace) -> Vec<Verdict> {
    sqlx::query_as(
        "SELECT j.job_id, g.passed, g.reason, g.judge_cost_pico_usd
         FROM grades g JOIN jobs j ON j.id = g.job WHERE g.kind = 'judge' ORDER BY j.id",
    )
    .fetch_all(&ws.pool().await)
    .await
    .unwrap()
}

/// The verdicts a run of the judged jobs sent directly records.
async fn direct_verdicts() -> Vec<Verdict> {
    let mock = mock(MockConfig::default()).await;
    let ws = Workspace::new();
    let file = judged_jobs(&ws);
    let output = ws.run_on(&mock, &["run", file.to_str().unwrap()]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    verdicts(&ws).await
}

/// The judge verdicts of a batched run are the direct run's, at half their cost.
fn assert_half_of_direct(batched: &[Verdict], direct: &[Verdict]) {
    assert_eq!(batched.len(), direct.len(), "{batched:?}");
    for (b, d) in batched.iter().zip(direct) {
        assert_eq!((&b.0, b.1, &b.2), (&d.0, d.1, &d.2), "the same verdict");
        let (b_cost, d_cost) = (b.3.unwrap(), d.3.unwrap());
        assert!(d_cost > 0);
        assert_eq!(b_cost, d_cost / 2, "{}: half the direct judge's price", b.0);
    }
}

#[tokio::test]
async fn judges_of_a_batches_run_go_through_a_batch_at_half_price() {
    let direct = direct_verdicts().await;
    let mock = mock(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await;
    let ws = Workspace::new();
    let file = judged_jobs(&ws);
    let args = polled(&["run", file.to_str().unwrap(), "--via", "batches"]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers for $"), "{stderr}");
    assert_eq!(mock.batches_created(), 2, "the answers', then the judges'");
    assert_eq!(direct_calls(&mock), 0, "no judge was asked directly");
    let batched = verdicts(&ws).await;
    assert_eq!(batched.len(), 4);
    assert_eq!(batched[2].1, Some(false), "the mock judged: {batched:?}");
    assert_half_of_direct(&batched, &direct);
    let pool = ws.pool().await;
    let items: Vec<(String, String)> = sqlx::query_as(
        "SELECT b.kind, i.custom_id FROM batch_items i JOIN batches b ON b.id = i.batch
         WHERE i.grader IS NOT NULL ORDER BY i.job",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(items.len(), 4, "{items:?}");
    assert!(
        items
            .iter()
            .all(|(kind, id)| kind == "judge" && id.starts_with("judge-")),
        "{items:?}"
    );
    // Each judge is an attempt of kind `judge` against the job it judges, as a direct one.
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE kind = 'judge' AND http_status = 200"
        )
        .await,
        4
    );
    // The answers are the jobs' results alone; the judges' cost is kept apart.
    let report = ws.report_json(&run_name(&ws).await).await;
    let grading = &report["totals"][0]["grading"];
    let judge_cost: i64 = verdicts(&ws).await.iter().map(|v| v.3.unwrap()).sum();
    assert_eq!(grading["judge_cost_pico_usd"].as_i64(), Some(judge_cost));
}

async fn run_name(ws: &Workspace) -> String {
    sqlx::query_scalar("SELECT name FROM runs")
        .fetch_one(&ws.pool().await)
        .await
        .unwrap()
}

/// Starts `run --via batches` of the judged jobs as run `j` (with `extra` arguments) and
/// kills it (-9) once the judges' batch is created and looked at: its id is committed.
async fn kill_while_the_judges_run(ws: &Workspace, mock: &MockServer, extra: &[&str]) {
    kill_once_the_judges_run(ws, mock, extra).await;
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM batches WHERE kind = 'judge' AND state = 'submitted'"
        )
        .await,
        1,
        "the judges' batch was created and recorded"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM grades WHERE kind = 'judge' AND passed IS NULL"
        )
        .await,
        4,
        "no verdict yet"
    );
    assert_eq!(direct_calls(mock), 0);
}

/// [`kill_while_the_judges_run`] on any store.
async fn kill_once_the_judges_run(ws: &Workspace, mock: &MockServer, extra: &[&str]) {
    kill_once_the_judges_of_run(ws, mock, &judged_jobs(ws), extra).await;
}

/// [`kill_once_the_judges_run`] with the jobs of `file`.
async fn kill_once_the_judges_of_run(
    ws: &Workspace,
    mock: &MockServer,
    file: &std::path::Path,
    extra: &[&str],
) {
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "j",
    ];
    args.extend(extra);
    let mut child = ws.command_on(mock, &polled(&args)).spawn().unwrap();
    tokio::select! {
        () = mock.wait_for_batches(2) => {}
        ended = child.wait() => panic!("the run ended ({ended:?}) with no batch for its judges"),
    }
    // A look at a batch after the judges' was created is a look at the judges' batch.
    let looked = mock.batch_calls(Call::Retrieve);
    mock.wait_for_batch_calls(Call::Retrieve, looked + 1).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn kill_9_while_the_judges_batch_runs_then_resume_polls_it_and_records_each_verdict_once() {
    let direct = direct_verdicts().await;
    let ws = Workspace::new();
    let mock = slow_judges(0).await;
    kill_while_the_judges_run(&ws, &mock, &[]).await;
    mock.finish_batches();
    let output = ws.run(&polled(&["resume", "j"])).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert_eq!(mock.batches_created(), 2, "no judge batch created again");
    assert_eq!(direct_calls(&mock), 0, "no judge was asked directly");
    assert_eq!(mock.batch_calls(Call::Results), 2, "each batch read once");
    assert_half_of_direct(&verdicts(&ws).await, &direct);
}

#[tokio::test]
async fn kill_9_between_the_judges_create_call_and_its_commit_then_resume_adopts_that_batch() {
    let direct = direct_verdicts().await;
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            // The judges' create call answers long after their batch exists: the run dies
            // in between.
            later_create_delay: Some(Duration::from_secs(600)),
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = judged_jobs(&ws);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "k",
    ]);
    let mut child = ws.command_on(&mock, &args).spawn().unwrap();
    tokio::select! {
        () = mock.wait_for_batches(2) => {}
        ended = child.wait() => panic!("the run ended ({ended:?}) with no batch for its judges"),
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM batches WHERE kind = 'judge' AND state = 'creating'"
        )
        .await,
        1,
        "the judges' intent was committed, their batch's id was not"
    );
    let output = tokio::time::timeout(Duration::from_secs(120), ws.run(&polled(&["resume", "k"])))
        .await
        .expect("resume creates no batch (whose answer the mock would hold)");
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers for $"), "{stderr}");
    assert_eq!(
        mock.batches_created(),
        2,
        "the judges' batch was found in the list, not created again"
    );
    assert!(mock.batch_calls(Call::List) >= 1, "the list was read");
    assert_eq!(direct_calls(&mock), 0, "no judge was asked directly");
    assert_eq!(mock.batch_calls(Call::Results), 2, "each batch read once");
    let judges: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state, remote_id FROM batches WHERE kind = 'judge'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(judges.len(), 1, "{judges:?}");
    assert_eq!(judges[0].0, "recorded", "{judges:?}");
    assert!(
        judges[0]
            .1
            .as_deref()
            .is_some_and(|id| id.starts_with("msgbatch_")),
        "{judges:?}"
    );
    // Each verdict recorded once, paid once: one answered judge attempt a grade.
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE kind = 'judge' AND http_status = 200"
        )
        .await,
        4
    );
    assert_half_of_direct(&verdicts(&ws).await, &direct);
    let report = ws.report_json("k").await;
    let judge_cost: i64 = direct.iter().map(|v| v.3.unwrap() / 2).sum();
    assert_eq!(
        report["totals"][0]["grading"]["judge_cost_pico_usd"].as_i64(),
        Some(judge_cost)
    );
}

#[tokio::test]
async fn a_deadline_near_once_the_answers_are_in_sends_the_judges_directly() {
    let ws = Workspace::new();
    // Canceled, the judges' batch has its first judge answered and the rest canceled.
    let mock = slow_judges(1).await;
    kill_while_the_judges_run(&ws, &mock, &["--deadline", "10h"]).await;
    // The night went by: a minute is left, inside the margin of any estimate.
    let output = ws.run(&polled(&["resume", "j", "--deadline", "1m"])).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("4 judges have no verdict yet"), "{stderr}");
    assert!(mock.batch_calls(Call::Cancel) >= 1);
    assert_eq!(mock.batches_created(), 2, "no judge batch created again");
    assert_eq!(
        direct_calls(&mock),
        3,
        "what the canceled batch had not judged was asked directly, once each"
    );
    // The judge the batch finished at half price; the others directly, at the full price.
    let direct = direct_verdicts().await;
    let verdicts = verdicts(&ws).await;
    assert_half_of_direct(&verdicts[..1], &direct[..1]);
    assert_eq!(verdicts[1..], direct[1..]);
}

/// New expects for the judged jobs: the same graders, the judge with another rubric.
fn new_rubrics(ws: &Workspace) -> std::path::PathBuf {
    let lines: Vec<String> = (0..4)
        .map(|i| {
            json!({"custom_id": format!("job-{i}"),
                "expect": [{"contains": "Answer"},
                    {"judge": {"rubric": "The answer must be polite.",
                               "model": "claude-haiku-4-5"}}]})
            .to_string()
        })
        .collect();
    ws.write("polite.jsonl", &(lines.join("\n") + "\n"))
}

/// Each judge grade's spec, in job order.
async fn judge_specs(ws: &Workspace) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT g.spec FROM grades g JOIN jobs j ON j.id = g.job
         WHERE g.kind = 'judge' ORDER BY j.id",
    )
    .fetch_all(&ws.pool().await)
    .await
    .unwrap()
}

/// `grade --expect` with a new rubric while the judges' batch still asks with the old one:
/// what that batch answers is billed but recorded as no grade's verdict, and resume asks the
/// new rubric in a batch of its own once it has ended.
async fn new_rubric_while_the_judges_batch_runs(ws: &Workspace, mock: &MockServer) {
    kill_once_the_judges_run(ws, mock, &[]).await;
    let expects = new_rubrics(ws);
    let output = ws
        .run(&["grade", "j", "--expect", expects.to_str().unwrap()])
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("note: 4 judge requests of run j are in a batch still open, asked with the grader specs they had before"),
        "{stderr}"
    );
    assert_eq!(direct_calls(mock), 0, "nothing asked directly meanwhile");
    mock.finish_batches();
    let output = ws.run(&polled(&["resume", "j"])).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers for $"), "{stderr}");
    assert_eq!(
        mock.batches_created(),
        3,
        "the answers', the old rubric's, then the new rubric's"
    );
    assert_eq!(direct_calls(mock), 0);
}

#[tokio::test]
async fn a_verdict_for_a_rubric_replaced_while_its_batch_ran_is_billed_and_not_recorded() {
    let ws = Workspace::new();
    let mock = slow_judges(0).await;
    new_rubric_while_the_judges_batch_runs(&ws, &mock).await;
    // Every verdict is the new rubric's, asked with it.
    let specs = judge_specs(&ws).await;
    assert_eq!(specs.len(), 4);
    assert!(specs.iter().all(|s| s.contains("polite")), "{specs:?}");
    let graded = verdicts(&ws).await;
    assert!(graded.iter().all(|v| v.1.is_some()), "{graded:?}");
    let pool = ws.pool().await;
    let new_items = count(
        &pool,
        "SELECT COUNT(*) FROM batch_items i JOIN batches b ON b.id = i.batch
         WHERE b.kind = 'judge' AND b.id = (SELECT MAX(id) FROM batches)",
    )
    .await;
    assert_eq!(new_items, 4, "the new rubric asked for every job");
    // The old rubric's verdicts were paid: kept as attempts with their cost.
    let stale: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT http_status, cost_pico_usd FROM attempts
         WHERE kind = 'judge' AND error_type = 'replaced_spec'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stale.len(), 4, "{stale:?}");
    assert!(
        stale
            .iter()
            .all(|(status, cost)| *status == 200 && cost.is_some_and(|c| c > 0))
    );
    let stale_cost: i64 = stale.iter().filter_map(|(_, c)| *c).sum();
    let verdict_cost: i64 = graded.iter().map(|v| v.3.unwrap()).sum();
    // The report's judging cost is all that judging was billed, with a warning of why.
    let report = ws.report_json("j").await;
    assert_eq!(
        report["totals"][0]["grading"]["judge_cost_pico_usd"].as_i64(),
        Some(verdict_cost + stale_cost)
    );
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("4 judge verdicts came back from a batch for grader specs that `msgbatch grade --expect` replaced while it was open"),
        "{warnings}"
    );
}

#[tokio::test]
async fn the_report_counts_judge_requests_that_ended_without_an_answer_with_the_jobs() {
    let ws = Workspace::new();
    let gateway = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            // An answer expires; the judge of the second job (row 2) errors.
            expired: vec!["job-3".to_owned()],
            errored: vec!["judge-2-1".to_owned()],
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = judged_jobs(&ws);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "u",
    ]);
    let output = ws.run_on(&gateway, &args).await;
    assert_eq!(code(&output), 1, "a job failed: {:?}", text(&output));
    let report = ws.report_json("u").await;
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("run u: 2 batch requests ended without an answer (1 api_error, 1 expired; 1 of them judge requests); none of them was billed, and `msgbatch resume u --include-failed` sends the jobs' again and `msgbatch grade u` asks the judges' still pending again"),
        "{warnings}"
    );
    // Judge requests alone: `grade` asks them again.
    let ws = Workspace::new();
    let gateway = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            errored: vec!["judge-1-1".to_owned()],
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = judged_jobs(&ws);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "v",
    ]);
    let output = ws.run_on(&gateway, &args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let warnings = ws.report_json("v").await["warnings"].to_string();
    assert!(
        warnings.contains("run v: 1 batch requests ended without an answer (1 api_error; 1 of them judge requests); none of them was billed, and `msgbatch grade v` asks those still pending again"),
        "{warnings}"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn judges_go_through_a_batch_on_postgres_as_on_sqlite() {
    let db = crate::postgres::TestDb::create().await;
    let mock = mock(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await;
    let mut grading = Vec::new();
    for ws in [Workspace::new(), Workspace::on_postgres(&db.url)] {
        let file = judged_jobs(&ws);
        let args = polled(&[
            "run",
            file.to_str().unwrap(),
            "--via",
            "batches",
            "--name",
            "j",
        ]);
        let output = ws.run_on(&mock, &args).await;
        let (_, stderr) = text(&output);
        assert_eq!(code(&output), 0, "{stderr}");
        assert!(stderr.contains("judged 4 answers for $"), "{stderr}");
        let mut graded = ws.report_json("j").await["totals"][0]["grading"].clone();
        // A timing, not a figure of the store.
        graded["passing_latency_ms"] = serde_json::Value::Null;
        grading.push(graded);
    }
    assert_eq!(mock.batches_created(), 4, "two batches a run");
    assert_eq!(direct_calls(&mock), 0, "no judge was asked directly");
    assert_eq!(grading[0], grading[1]);
    assert!(grading[1]["judge_cost_pico_usd"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn ctrl_c_leaves_the_judges_batch_running_and_resume_collects_it() {
    let ws = Workspace::new();
    let mock = slow_judges(0).await;
    let file = judged_jobs(&ws);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "c",
    ]);
    let mut child = ws
        .command_on(&mock, &args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::select! {
        () = mock.wait_for_batches(2) => {}
        ended = child.wait() => panic!("the run ended ({ended:?}) with no batch for its judges"),
    }
    let looked = mock.batch_calls(Call::Retrieve);
    mock.wait_for_batch_calls(Call::Retrieve, looked + 1).await;
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("1 batch is still running on the server"),
        "{stderr}"
    );
    assert!(!stderr.contains("judged"), "{stderr}");
    // Judges a batch still asks for are not asked directly as well.
    let output = ws.run(&["grade", "c"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(direct_calls(&mock), 0, "nothing paid for twice");
    mock.finish_batches();
    let output = ws.run(&polled(&["resume", "c"])).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers for $"), "{stderr}");
    assert_eq!(mock.batches_created(), 2, "no judge batch created again");
    assert_eq!(direct_calls(&mock), 0);
    assert!(verdicts(&ws).await.iter().all(|v| v.1.is_some()));
}

#[tokio::test]
async fn max_cost_counts_the_judges_batch_and_leaves_judges_it_cannot_hold_pending() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await;
    // Short answers hold little of the budget; a judge's worst case (300 tokens of verdict,
    // the answer and the rubric in) is more than what they leave.
    let file = judged_jobs_of(&ws, 16);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "m",
        "--max-cost",
        "0.0005",
    ]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("4 judge requests would pass --max-cost and stay pending"),
        "{stderr}"
    );
    assert_eq!(mock.batches_created(), 1, "the answers' batch alone");
    assert_eq!(direct_calls(&mock), 0, "nor any judge asked directly");
    assert!(verdicts(&ws).await.iter().all(|v| v.1.is_none()));
    let pool = ws.pool().await;
    let spent = count(&pool, "SELECT SUM(cost_pico_usd) FROM results").await;
    assert!(spent > 0 && spent <= 500_000_000, "{spent}");
}

#[tokio::test]
async fn an_errored_judge_stays_pending_with_why_and_grade_asks_it_directly() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            // The judge of the second job (row 2), its second grader.
            errored: vec!["judge-2-1".to_owned()],
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = judged_jobs(&ws);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "e",
    ]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("judged 3 answers for $")
            && stderr.contains("1 judge requests failed and stay pending for `msgbatch grade`"),
        "{stderr}"
    );
    let graded = verdicts(&ws).await;
    assert_eq!(graded[1].1, None, "{graded:?}");
    let reason = graded[1].2.as_deref().unwrap_or_default();
    assert!(
        reason.contains("errored in its batch: api_error"),
        "{reason}"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE kind = 'judge' AND error_type = 'api_error'"
        )
        .await,
        1
    );
    assert_eq!(direct_calls(&mock), 0);
    let output = ws.run(&["grade", "e"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 1 answers"), "{stderr}");
    assert_eq!(
        direct_calls(&mock),
        1,
        "the one pending judge, asked directly"
    );
    assert!(verdicts(&ws).await.iter().all(|v| v.1.is_some()));
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_rubric_replaced_while_the_judges_batch_runs_on_postgres_as_on_sqlite() {
    let db = crate::postgres::TestDb::create().await;
    let mut seen = Vec::new();
    for ws in [Workspace::new(), Workspace::on_postgres(&db.url)] {
        let mock = mock(MockConfig {
            record: true,
            batches: BatchConfig {
                later_processing: Some(Duration::from_secs(3600)),
                // In the old rubric's batch: a request unbilled as well as replaced.
                errored: vec!["judge-2-1".to_owned()],
                ..BatchConfig::default()
            },
            ..MockConfig::default()
        })
        .await;
        new_rubric_while_the_judges_batch_runs(&ws, &mock).await;
        let report = ws.report_json("j").await;
        let mut grading = report["totals"][0]["grading"].clone();
        // A timing, not a figure of the store.
        grading["passing_latency_ms"] = serde_json::Value::Null;
        let warnings = report["warnings"].to_string();
        assert!(
            warnings.contains("run j: 1 batch requests ended without an answer (1 api_error; 1 of them judge requests)"),
            "{warnings}"
        );
        assert!(
            warnings.contains("run j: 3 judge verdicts came back from a batch for grader specs that `msgbatch grade --expect` replaced while it was open: billed ($"),
            "{warnings}"
        );
        seen.push((grading, warnings));
    }
    assert_eq!(seen[0], seen[1]);
    assert!(seen[1].0["judge_cost_pico_usd"].as_i64().unwrap() > 0);
    let mut conn = db.connect().await;
    let specs: Vec<String> = sqlx::query_scalar(
        "SELECT g.spec FROM grades g WHERE g.kind = 'judge' AND g.passed IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(specs.len(), 4);
    assert!(specs.iter().all(|s| s.contains("polite")), "{specs:?}");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn kill_9_between_the_judges_create_call_and_its_commit_on_postgres() {
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    let mock = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            later_create_delay: Some(Duration::from_secs(600)),
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = judged_jobs(&ws);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "k",
    ]);
    let mut child = ws.command_on(&mock, &args).spawn().unwrap();
    tokio::select! {
        () = mock.wait_for_batches(2) => {}
        ended = child.wait() => panic!("the run ended ({ended:?}) with no batch for its judges"),
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(120), ws.run(&polled(&["resume", "k"])))
        .await
        .expect("resume creates no batch (whose answer the mock would hold)");
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers for $"), "{stderr}");
    assert_eq!(mock.batches_created(), 2, "no judge batch created again");
    assert_eq!(direct_calls(&mock), 0);
    let mut conn = db.connect().await;
    let answered: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM attempts WHERE kind = 'judge' AND http_status = 200",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(answered, 4, "each verdict paid once");
    let verdicts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM grades WHERE kind = 'judge' AND passed IS NOT NULL",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(verdicts, 4);
}

/// `count` jobs, each with a judge grader of `rubric`.
fn judged_by(ws: &Workspace, count: usize, rubric: &str) -> std::path::PathBuf {
    let lines: Vec<String> = (0..count)
        .map(|i| {
            json!({"custom_id": format!("job-{i}"), "params": {"model": "claude-haiku-4-5",
                "max_tokens": 100, "messages": [{"role": "user", "content": format!("prompt-{i}")}]},
                "expect": [{"judge": {"rubric": rubric, "model": "claude-haiku-4-5"}}]})
            .to_string()
        })
        .collect();
    ws.write(
        &format!("{count}-{}.jsonl", rubric.len()),
        &(lines.join("\n") + "\n"),
    )
}

/// kill -9 after a first part of the results of a judges' batch whose rubric was replaced is
/// committed: resume reads the results again and records only the verdicts not yet recorded,
/// so each billed verdict is counted once in the report.
#[tokio::test]
async fn kill_9_while_recording_replaced_verdicts_then_resume_counts_each_once() {
    use crate::batches::{PAST_ONE_COMMIT, kill_once_results_are_partly_recorded};
    let ws = Workspace::new();
    let mock = slow_judges(0).await;
    let file = judged_by(&ws, PAST_ONE_COMMIT, "The answer must address the prompt.");
    kill_once_the_judges_of_run(&ws, &mock, &file, &[]).await;
    let expects = judged_by(&ws, PAST_ONE_COMMIT, "The answer must be polite.");
    let output = ws
        .run(&["grade", "j", "--expect", expects.to_str().unwrap()])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    mock.finish_batches();
    let child = ws.command(&polled(&["resume", "j"])).spawn().unwrap();
    let recorded = kill_once_results_are_partly_recorded(
        (&ws, None),
        &mock,
        child,
        "SELECT COUNT(*) FROM attempts WHERE error_type = 'replaced_spec'",
    )
    .await;
    assert!(recorded < PAST_ONE_COMMIT as i64, "{recorded}");
    let output = ws.run(&polled(&["resume", "j"])).await;
    let pool = ws.pool().await;
    let stale: Vec<i64> =
        sqlx::query_scalar("SELECT cost_pico_usd FROM attempts WHERE error_type = 'replaced_spec'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        stale.len(),
        PAST_ONE_COMMIT,
        "each replaced verdict recorded once"
    );
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let verdicts: i64 = verdicts(&ws).await.iter().map(|v| v.3.unwrap()).sum();
    let report = ws.report_json("j").await;
    assert_eq!(
        report["totals"][0]["grading"]["judge_cost_pico_usd"].as_i64(),
        Some(verdicts + stale.iter().sum::<i64>())
    );
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&format!(
            "{PAST_ONE_COMMIT} judge verdicts came back from a batch"
        )),
        "{warnings}"
    );
}

/// A worker of a run shared through PostgreSQL is granted nothing of a `--max-cost` budget
/// that the run's report counts as spent, verdicts billed for a replaced rubric included.
#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_worker_is_granted_nothing_the_report_counts_as_spent_on_postgres() {
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    let mock = slow_judges(0).await;
    new_rubric_while_the_judges_batch_runs(&ws, &mock).await;
    let report = ws.report_json("j").await;
    let totals = &report["totals"][0];
    let replaced: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(cost_pico_usd) AS BIGINT) FROM attempts
         WHERE error_type = 'replaced_spec'",
    )
    .fetch_one(&mut db.connect().await)
    .await
    .unwrap();
    assert!(replaced > 0);
    let spent = totals["cost"]["total_pico_usd"].as_i64().unwrap()
        + totals["grading"]["judge_cost_pico_usd"].as_i64().unwrap();
    let store = msgbatch::store::Store::open(msgbatch::store::Location::Postgres(db.url.clone()))
        .await
        .unwrap();
    let run: i64 = sqlx::query_scalar("SELECT id FROM runs WHERE name = 'j'")
        .fetch_one(&mut db.connect().await)
        .await
        .unwrap();
    let (worker, _) = store
        .register_worker(run, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.grant_budget(worker, spent, 1, 1).await.unwrap(),
        None,
        "the whole budget is spent"
    );
    assert_eq!(
        store
            .grant_budget(worker, spent + 10, 10, 10)
            .await
            .unwrap(),
        Some(10),
        "what is left of it, and no more, is granted"
    );
}
