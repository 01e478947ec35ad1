//! Runs through the Message Batches API: recorded as the same run sent directly, at half the
//! price; never submitted twice across kill -9; failed items sent again; a gateway without
//! the endpoints.

use std::time::Duration;

use msgbatch::mock::MockConfig;
use msgbatch::mock::batches::BatchConfig;
use serde_json::json;

use crate::common::*;

/// A mock whose Message Batches endpoints behave as `batches` says.
async fn batch_mock(batches: BatchConfig) -> msgbatch::mock::MockServer {
    mock(MockConfig {
        batches,
        ..MockConfig::default()
    })
    .await
}

/// Jobs over two models, one with an id the Batches API refuses (a space), so that ids are
/// mapped both ways.
fn fan_out_file(ws: &Workspace) -> std::path::PathBuf {
    let lines: Vec<String> = (0..6)
        .map(|i| {
            let id = if i == 0 {
                "first job".to_owned()
            } else {
                format!("job-{i}")
            };
            json!({"custom_id": id, "params": {"max_tokens": 100,
                "messages": [{"role": "user", "content": format!("prompt-{i}")}]}})
            .to_string()
        })
        .collect();
    ws.write("jobs.jsonl", &(lines.join("\n") + "\n"))
}

async fn results(ws: &Workspace) -> Vec<(String, String, i64, i64, i64, i64, Option<String>)> {
    sqlx::query_as(
        "SELECT j.job_id, j.model, r.input_tokens, r.output_tokens, r.cost_pico_usd, r.batch,
                r.service_tier
         FROM results r JOIN jobs j ON j.id = r.job ORDER BY j.id",
    )
    .fetch_all(&ws.pool().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_run_through_batches_is_recorded_like_a_direct_run_at_half_the_price() {
    let mock = mock(MockConfig::default()).await;
    let direct = Workspace::new();
    let batched = Workspace::new();
    let models = "claude-haiku-4-5,claude-sonnet-4-6";
    for (ws, via) in [(&direct, "direct"), (&batched, "batches")] {
        let file = fan_out_file(ws);
        let args = polled(&[
            "run",
            file.to_str().unwrap(),
            "--models",
            models,
            "--via",
            via,
        ]);
        let output = ws.run_on(&mock, &args).await;
        assert_eq!(code(&output), 0, "{via}: {:?}", text(&output));
    }
    assert_eq!(mock.batches_created(), 1, "twelve jobs fit one batch");
    let pool = batched.pool().await;
    assert_eq!(answers(&direct.pool().await).await, answers(&pool).await);
    let (direct, batched) = (results(&direct).await, results(&batched).await);
    assert_eq!(batched.len(), 12);
    for (d, b) in direct.iter().zip(&batched) {
        assert_eq!(
            (&d.0, &d.1, d.2, d.3),
            (&b.0, &b.1, b.2, b.3),
            "same job, same usage"
        );
        assert_eq!(b.4, d.4 / 2, "{}: half the direct price", b.0);
        assert_eq!((d.5, b.5), (0, 1));
        assert_eq!(b.6.as_deref(), Some("batch"));
    }
    // The job whose id the API refuses went under another and came back under its own.
    assert!(batched.iter().any(|r| r.0 == "first job"));
    let custom_ids: Vec<String> = sqlx::query_scalar("SELECT custom_id FROM batch_items")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        custom_ids.iter().all(|id| !id.contains(' ')),
        "{custom_ids:?}"
    );
}

/// A price file whose rates are odd in micro-USD per million tokens, so that half of them is
/// not a whole micro-USD: the one case where the batch discount rounds.
#[tokio::test]
async fn a_batch_at_odd_rates_bills_each_token_its_half_rate_rounded_up_and_the_report_agrees() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // $0.000003 input and $0.000005 output per million tokens: 3 and 5 pico-USD a token, at
    // the batch rates 2 and 3 (1.5 and 2.5 rounded up).
    ws.write(
        "odd-prices.toml",
        "source = \"odd\"\n[models.claude-haiku-4-5]\ninput = 0.000003\ncache_write_5m = 0.000005\ncache_write_1h = 0.000007\ncache_read = 0.000001\noutput = 0.000005\n",
    );
    // Answers cut at odd and even max_tokens.
    let lines: Vec<String> = (0..6)
        .map(|i| {
            json!({"custom_id": format!("job-{i}"), "params": {"max_tokens": 7 + i,
                "messages": [{"role": "user", "content": "word ".repeat(i + 1)}]}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--name",
        "odd",
        "--models",
        "claude-haiku-4-5",
        "--via",
        "batches",
        "--prices",
        "odd-prices.toml",
    ]);
    let output = ws.run_on(&mock, &args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let results = results(&ws).await;
    assert_eq!(results.len(), 6);
    for (job, _, input, output, cost, batch, _) in &results {
        assert_eq!(*batch, 1);
        assert_eq!(
            *cost,
            input * 2 + output * 3,
            "{job}: {input} in, {output} out"
        );
    }
    // Some result has an odd direct cost, whose half a per-result rounding would round.
    assert!(
        results.iter().any(|r| (r.2 * 3 + r.3 * 5) % 2 == 1),
        "{results:?}"
    );
    let stored: i64 = results.iter().map(|r| r.4).sum();

    let output = ws
        .run(&[
            "report",
            "odd",
            "--format",
            "json",
            "--out",
            "-",
            "--prices",
            "odd-prices.toml",
        ])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let cost = &report["totals"][0]["cost"];
    assert_eq!(cost["total_pico_usd"], stored, "{cost}");
    assert_eq!(cost["stored_pico_usd"], stored, "{cost}");
    let (input, out): (i64, i64) = results.iter().fold((0, 0), |(i, o), r| (i + r.2, o + r.3));
    assert_eq!(cost["direct_pico_usd"], input * 3 + out * 5, "{cost}");
    assert_eq!(cost["batch_api_pico_usd"], stored, "{cost}");
    assert_eq!(
        cost["input_pico_usd"].as_i64().unwrap() + cost["output_pico_usd"].as_i64().unwrap(),
        stored
    );
    // The costs stored with the results and the table's figure agree: no warning of a change.
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| !w.as_str().unwrap().contains("costs stored")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn kill_9_between_the_create_call_and_its_commit_never_submits_twice() {
    let ws = Workspace::new();
    let mock = batch_mock(BatchConfig {
        // The create call answers long after the batch exists: the run dies in between.
        create_delay: Duration::from_secs(600),
        ..BatchConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 8);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "b",
    ]);
    let mut child = ws.command_on(&mock, &args).spawn().unwrap();
    mock.wait_for_batches(1).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM batches WHERE state = 'creating'"
        )
        .await,
        1,
        "the intent was committed, the id was not"
    );
    let args = polled(&["resume", "b"]);
    let output = ws.run(&args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(
        mock.batches_created(),
        1,
        "the batch was found, not created again"
    );
    let states = job_states(&pool).await;
    assert!(
        states.iter().all(|(_, s, n)| s == "succeeded" && *n == 1),
        "{states:?}"
    );
    let remote: Vec<String> = sqlx::query_scalar("SELECT remote_id FROM batches")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert!(remote[0].starts_with("msgbatch_"), "{remote:?}");
}

#[tokio::test]
async fn kill_9_while_polling_then_resume_reattaches_to_the_running_batch() {
    let ws = Workspace::new();
    let mock = batch_mock(BatchConfig {
        processing: Duration::from_secs(3600),
        ..BatchConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 5);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "p",
    ]);
    let mut child = ws.command_on(&mock, &args).spawn().unwrap();
    // The create call, then a look at the running batch: its id is committed by then.
    mock.wait_for_requests(2).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let status = ws.run(&["status"]).await;
    let (stdout, _) = text(&status);
    assert!(stdout.contains("submitted"), "{stdout}");
    mock.finish_batches();
    let args = polled(&["resume", "p"]);
    let output = ws.run(&args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(mock.batches_created(), 1);
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        5
    );
}

#[tokio::test]
async fn expired_and_errored_items_are_not_billed_and_go_again_with_include_failed() {
    let ws = Workspace::new();
    let mock = batch_mock(BatchConfig {
        expired: vec!["job-1".into()],
        errored: vec!["job-2".into()],
        ..BatchConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 4);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "e",
    ]);
    let output = ws.run_on(&mock, &args).await;
    assert_eq!(code(&output), 1, "jobs failed: {:?}", text(&output));
    let pool = ws.pool().await;
    let failed: Vec<(String, String)> =
        sqlx::query_as("SELECT job_id, error FROM jobs WHERE state = 'failed' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].1.starts_with("expired") && failed[0].1.contains("not billed"));
    assert!(failed[1].1.contains("api_error") && failed[1].1.contains("worth sending again"));
    let report = ws.report_json("e").await;
    assert_eq!(report["totals"][0]["jobs"]["failed"], 2);
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("2 batch requests ended without an answer (1 api_error, 1 expired); none of them was billed"),
        "{warnings}"
    );
    // One in a new batch, as the run sends; the mock expires and errors each id only once.
    let args = polled(&["resume", "e", "--include-failed"]);
    let output = ws.run(&args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(mock.batches_created(), 2);
    let states = job_states(&pool).await;
    assert!(
        states.iter().all(|(_, s, _)| s == "succeeded"),
        "{states:?}"
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM batch_items").await,
        6,
        "the second batch held only the two that failed"
    );
}

/// `export` of a run sent through batches writes each errored item's error as the API gave
/// it (its type, message and request id), as it does for a job sent directly, and an item
/// that expired as `expired`.
#[tokio::test]
async fn export_keeps_the_apis_error_of_an_errored_batch_item() {
    let ws = Workspace::new();
    let mock = batch_mock(BatchConfig {
        errored: vec!["job-1".into()],
        expired: vec!["job-2".into()],
        ..BatchConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 3);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "b",
    ]);
    let output = ws.run_on(&mock, &args).await;
    assert_eq!(code(&output), 1, "two jobs failed: {:?}", text(&output));
    let out = ws.path("results.jsonl");
    let output = ws
        .run(&["export", "b", "--out", out.to_str().unwrap()])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["custom_id"], "job-1");
    assert_eq!(
        lines[1]["result"],
        json!({"type": "errored", "error": {"type": "error",
            "error": {"type": "api_error", "message": "Internal server error"},
            "request_id": "req_mock"}})
    );
    assert_eq!(lines[2]["result"], json!({"type": "expired"}));
    assert_eq!(lines[0]["result"]["type"], "succeeded");
}

#[tokio::test]
async fn a_gateway_without_batches_gets_one_sentence_and_nothing_is_submitted() {
    let ws = Workspace::new();
    let mock = batch_mock(BatchConfig {
        unsupported: true,
        ..BatchConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--via", "batches"])
        .await;
    let (_, stderr) = text(&output);
    assert_ne!(code(&output), 0);
    assert!(stderr.contains("no Message Batches endpoint"), "{stderr}");
    assert!(stderr.contains("--via direct"), "{stderr}");
    let pool = ws.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM batches").await, 0);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        3
    );
}

#[tokio::test]
async fn max_cost_sizes_batches_to_the_budget_and_refills_it_as_they_end() {
    let mock = mock(MockConfig::default()).await;
    // A job's worst case at the batch rates is about $0.0005 (200 output tokens of Haiku 4.5
    // at half price), its real cost about a quarter of that: two worst cases fit at first,
    // and what the first batch did not spend makes room for another.
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 6);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "capped",
        "--max-cost",
        "0.0012",
    ]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 3, "{stderr}");
    assert!(
        stderr.contains("could pass the --max-cost budget"),
        "{stderr}"
    );
    let pool = ws.pool().await;
    let sizes: Vec<i64> = sqlx::query_scalar("SELECT requests FROM batches ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        sizes.len() >= 2 && sizes.iter().all(|n| *n <= 2),
        "no batch holds more worst cases than the budget: {sizes:?}"
    );
    let spent: i64 = sqlx::query_scalar("SELECT SUM(cost_pico_usd) FROM results")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        spent > 600_000_000 && spent <= 1_200_000_000,
        "spent {spent} pico-USD of 1.2e9"
    );

    // A budget below one job's worst case submits nothing.
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 2);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--max-cost",
        "0.0001",
    ]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 3, "{stderr}");
    assert!(
        stderr.contains("could pass the --max-cost budget"),
        "{stderr}"
    );
    assert_eq!(
        count(&ws.pool().await, "SELECT COUNT(*) FROM batches").await,
        0
    );
}

#[tokio::test]
async fn ctrl_c_leaves_the_batch_running_and_cancel_records_what_it_did() {
    let ws = Workspace::new();
    let mock = batch_mock(BatchConfig {
        processing: Duration::from_secs(3600),
        ..BatchConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 3);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "c",
    ]);
    let child = ws
        .command_on(&mock, &args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    mock.wait_for_requests(2).await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("1 batch is still running on the server"),
        "{stderr}"
    );
    assert!(stderr.contains("msgbatch cancel c"), "{stderr}");
    let (status, _) = text(&ws.run(&["status"]).await);
    assert!(status.contains("submitted (1)"), "{status}");

    // Cancel before the batch processed anything: every request comes back canceled, unbilled.
    let output = ws.run(&["cancel", "c"]).await;
    assert_eq!(code(&output), 130, "{:?}", text(&output));
    let pool = ws.pool().await;
    let errors: Vec<String> = sqlx::query_scalar("SELECT error FROM jobs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.starts_with("canceled with its batch")),
        "{errors:?}"
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 0);

    // Sent again in a new batch, which the mock now ends at once.
    mock.finish_batches();
    let args = polled(&["resume", "c", "--include-failed"]);
    let output = ws.run(&args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(mock.batches_created(), 2);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        3
    );
}

#[tokio::test]
async fn what_a_batch_left_can_be_sent_directly() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            expired: vec!["job-1".into()],
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 3);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "d",
    ]);
    let output = ws.run_on(&mock, &args).await;
    assert_eq!(code(&output), 1, "one expired: {:?}", text(&output));
    let output = ws
        .run(&["resume", "d", "--include-failed", "--via", "direct"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(mock.batches_created(), 1, "no second batch");
    let direct: Vec<String> = mock
        .log()
        .iter()
        .filter(|l| l.path.ends_with("/v1/messages"))
        .filter_map(|l| l.prompt())
        .collect();
    assert_eq!(direct, ["prompt-1"], "only the expired job went directly");
    let pool = ws.pool().await;
    let batched: Vec<(String, i64)> = sqlx::query_as(
        "SELECT j.job_id, r.batch FROM results r JOIN jobs j ON j.id = r.job ORDER BY j.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        batched,
        [
            ("job-0".into(), 1),
            ("job-1".into(), 0),
            ("job-2".into(), 1)
        ],
        "priced at the batch rate only where answered in a batch"
    );
}

#[tokio::test]
async fn estimate_via_batches_gives_half_of_every_price() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = ws.jobs("jobs.jsonl", 10);
    let output = ws
        .run_on(
            &mock,
            &["estimate", file.to_str().unwrap(), "--via", "batches"],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    let dollars = |line: &str| -> Vec<f64> {
        line.split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').strip_prefix('$'))
            .map(|w| w.parse().unwrap())
            .collect()
    };
    let total = dollars(stdout.lines().find(|l| l.starts_with("total")).unwrap());
    let batch = dollars(
        stdout
            .lines()
            .find(|l| l.starts_with("through the Message Batches API"))
            .unwrap_or_else(|| panic!("{stdout}")),
    );
    assert_eq!(batch.len(), 2, "{stdout}");
    for (direct, half) in total.iter().zip(&batch) {
        assert!((direct / 2.0 - half).abs() < 2e-6, "{direct} → {half}");
    }
}

/// The body limit a gateway showed with a 413 is kept with the run: `resume` packs its
/// batches under it from the start, and is refused no more.
#[tokio::test]
async fn a_body_limit_learnt_from_a_413_is_kept_for_resume() {
    const BOUND: usize = 2_500;
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            max_body: Some(BOUND),
            // Every job expires in its first batch: resume sends all of them again.
            expired: (0..30).map(|i| format!("job-{i}")).collect(),
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let refused = |mock: &msgbatch::mock::MockServer| {
        mock.log()
            .iter()
            .filter(|l| l.method == "POST" && l.path.ends_with("/messages/batches"))
            .filter(|l| l.status == 413)
            .count()
    };
    let file = ws.jobs("jobs.jsonl", 30);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "l",
    ]);
    let output = ws.run_on(&mock, &args).await;
    assert_eq!(code(&output), 1, "all expired: {:?}", text(&output));
    let first = refused(&mock);
    assert!(first >= 1, "the first create was refused");
    let pool = ws.pool().await;
    let settings: String = sqlx::query_scalar("SELECT settings FROM runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
    let learnt = settings["send"]["batches"]["learnt_max_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{settings}"));
    assert!(learnt <= BOUND as u64, "{learnt}");

    let made = mock.batches_created();
    let output = ws.run(&polled(&["resume", "l", "--include-failed"])).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(refused(&mock), first, "resume was refused no more");
    assert!(mock.batches_created() > made + 1, "packed small again");
    let states = job_states(&pool).await;
    assert!(
        states.iter().all(|(_, s, _)| s == "succeeded"),
        "{states:?}"
    );
}

/// More requests than one commit of a batch's results holds, so that a run can die with part
/// of a batch's results recorded.
pub(crate) const PAST_ONE_COMMIT: usize = 2_050;

/// A count from the store of `ws`: its SQLite file, or the PostgreSQL database `db`.
pub(crate) async fn count_in(
    ws: &Workspace,
    db: Option<&crate::postgres::TestDb>,
    sql: &'static str,
) -> i64 {
    match db {
        Some(db) => sqlx::query_scalar(sql)
            .fetch_one(&mut db.connect().await)
            .await
            .expect("a count"),
        None => count(&ws.pool().await, sql).await,
    }
}

/// Waits until `child` has committed some of a batch's results (what `recorded` counts) and
/// kills it (-9) before it reads the rest, which the mock holds back: the batch stays open.
/// Returns what was recorded.
pub(crate) async fn kill_once_results_are_partly_recorded(
    (ws, db): (&Workspace, Option<&crate::postgres::TestDb>),
    mock: &msgbatch::mock::MockServer,
    mut child: tokio::process::Child,
    recorded: &'static str,
) -> i64 {
    use msgbatch::mock::batches::Call;
    let asked = mock.batch_calls(Call::Results);
    mock.hold_results(PAST_ONE_COMMIT - 10);
    tokio::select! {
        () = mock.wait_for_batch_calls(Call::Results, asked + 1) => {}
        ended = child.wait() => panic!("the run ended ({ended:?}) before it read results"),
    }
    let done = loop {
        let done = count_in(ws, db, recorded).await;
        if done > 0 {
            break done;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            ended = child.wait() => panic!("the run ended ({ended:?}) with the results held back"),
        }
    };
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    mock.release_results();
    done
}

/// kill -9 after a first part of a batch's results is committed, with an item errored in it
/// whose job `--include-failed` makes pending again: resume reads the results again and
/// records only the items not yet recorded, and the errored job goes in a new batch (in the
/// next session: this one packed while it was in the open batch), so that each item of a
/// batch has one attempt.
async fn resume_after_kill_9_while_recording_results(
    ws: &Workspace,
    db: Option<&crate::postgres::TestDb>,
) {
    // The results come last request first: the last job's error is in the first commit.
    let mock = batch_mock(BatchConfig {
        errored: vec![format!("job-{}", PAST_ONE_COMMIT - 1)],
        ..BatchConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", PAST_ONE_COMMIT);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "r",
    ]);
    let child = ws.command_on(&mock, &args).spawn().unwrap();
    let recorded = kill_once_results_are_partly_recorded(
        (ws, db),
        &mock,
        child,
        "SELECT COUNT(*) FROM attempts WHERE batch IS NOT NULL",
    )
    .await;
    assert!(recorded < PAST_ONE_COMMIT as i64, "{recorded}");
    let count = async |sql| count_in(ws, db, sql).await;
    assert_eq!(
        count("SELECT COUNT(*) FROM batches WHERE state = 'submitted'").await,
        1,
        "the batch is not recorded yet"
    );
    let output = ws.run(&polled(&["resume", "r", "--include-failed"])).await;
    let twice = count(
        "SELECT COUNT(*) FROM (SELECT 1 FROM attempts WHERE batch IS NOT NULL
                               GROUP BY job, batch HAVING COUNT(*) > 1) AS twice",
    )
    .await;
    assert_eq!(twice, 0, "no item of a batch recorded twice");
    let (_, stderr) = text(&output);
    // It was in the open batch when this session packed: it goes in the next.
    assert!(
        stderr.contains("resume with: msgbatch resume r"),
        "{stderr}"
    );
    let output = ws.run(&polled(&["resume", "r"])).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(mock.batches_created(), 2, "the errored job went again");
    assert_eq!(
        count("SELECT COUNT(*) FROM jobs WHERE state != 'succeeded'").await,
        0
    );
    // The errored job: errored in the first batch, answered in the second.
    assert_eq!(
        count("SELECT attempts FROM jobs WHERE job_id = 'job-2049'").await,
        2
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM attempts").await,
        PAST_ONE_COMMIT as i64 + 1
    );
}

#[tokio::test]
async fn kill_9_while_recording_results_then_resume_records_each_item_once() {
    resume_after_kill_9_while_recording_results(&Workspace::new(), None).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn kill_9_while_recording_results_on_postgres() {
    let db = crate::postgres::TestDb::create().await;
    resume_after_kill_9_while_recording_results(&Workspace::on_postgres(&db.url), Some(&db)).await;
}
