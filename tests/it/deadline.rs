//! `--deadline`: a slow batch canceled once sending the rest directly would only just be in
//! time, what it finished kept, the rest sent directly, each job answered once, across a kill
//! -9 between the cancel and the direct sends; and `--via auto`.

use std::time::Duration;

use msgbatch::mock::batches::{BatchConfig, Call};
use msgbatch::mock::{MockConfig, MockServer};

use crate::common::*;

/// A mock that logs its requests and whose batches never end unless canceled; canceled,
/// each has its first two requests answered and the rest canceled.
async fn slow_batches(first_results_delay: Duration) -> MockServer {
    mock(MockConfig {
        record: true,
        batches: BatchConfig {
            processing: Duration::from_secs(3600),
            processed_first: 2,
            first_results_delay,
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await
}

/// The prompts the mock was sent directly (`POST /v1/messages`), sorted.
fn direct_prompts(mock: &MockServer) -> Vec<String> {
    let mut prompts: Vec<String> = mock
        .log()
        .iter()
        .filter(|l| l.path.ends_with("/v1/messages"))
        .filter_map(|l| l.prompt())
        .collect();
    prompts.sort();
    prompts
}

/// Starts `run --via batches` of six jobs as run `name` and kills it (-9) once its batch is
/// created and looked at: the batch runs on at the mock, its id committed.
async fn leave_a_batch_running(ws: &Workspace, mock: &MockServer, name: &str) {
    let file = ws.jobs("jobs.jsonl", 6);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--deadline",
        "10h",
        "--name",
        name,
    ]);
    let mut child = ws.command_on(mock, &args).spawn().unwrap();
    // The create call, then a look at the running batch: its id is committed by then.
    mock.wait_for_batch_calls(Call::Retrieve, 1).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(mock.batches_created(), 1);
    assert!(
        direct_prompts(mock).is_empty(),
        "ten hours: through a batch"
    );
}

/// Every job answered once: the two the batch finished through it, the four it had not
/// through the direct way, each sent once.
async fn each_job_answered_once(ws: &Workspace, mock: &MockServer) {
    assert_eq!(mock.batches_created(), 1, "no batch made again");
    assert_eq!(
        direct_prompts(mock),
        ["prompt-2", "prompt-3", "prompt-4", "prompt-5"],
        "only what the batch had not finished went directly, once each"
    );
    let pool = ws.pool().await;
    let results: Vec<(String, i64)> = sqlx::query_as(
        "SELECT j.job_id, r.batch FROM results r JOIN jobs j ON j.id = r.job ORDER BY j.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = (0..6)
        .map(|i| (format!("job-{i}"), i64::from(i < 2)))
        .collect();
    assert_eq!(
        results, expected,
        "one result each, at the batch rate where batched"
    );
    let states = job_states(&pool).await;
    assert!(
        states.iter().all(|(_, s, _)| s == "succeeded"),
        "{states:?}"
    );
    // The canceled requests are attempts of their jobs, unbilled, before the direct one.
    let canceled = count(
        &pool,
        "SELECT COUNT(*) FROM attempts WHERE kind = 'batch' AND error_type = 'canceled'",
    )
    .await;
    assert!(canceled >= 4, "{canceled}");
    let report = ws.report_json("d").await;
    let cost = &report["totals"][0]["cost"];
    assert_eq!(cost["batch_results"], 2, "{cost}");
    assert!(
        cost["total_pico_usd"].as_i64().unwrap() > cost["batch_api_pico_usd"].as_i64().unwrap(),
        "the direct answers cost more than a batch would have: {cost}"
    );
}

#[tokio::test]
async fn a_deadline_reached_cancels_the_slow_batch_keeps_what_it_did_and_sends_the_rest_directly() {
    let ws = Workspace::new();
    let mock = slow_batches(Duration::ZERO).await;
    leave_a_batch_running(&ws, &mock, "d").await;
    // The night went by: a minute is left, inside the margin of any estimate.
    let output = ws.run(&polled(&["resume", "d", "--deadline", "1m"])).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert!(stderr.contains("the deadline"), "{stderr}");
    assert!(stderr.contains("6 jobs have no answer yet"), "{stderr}");
    assert!(mock.batch_calls(Call::Cancel) >= 1);
    assert!(
        stdout.contains("2 through batches, 4 directly"),
        "the summary says how many went each way: {stdout}"
    );
    assert!(stdout.contains("over an all-batch run"), "{stdout}");
    each_job_answered_once(&ws, &mock).await;
    let settings: String = sqlx::query_scalar("SELECT settings FROM runs")
        .fetch_one(&ws.pool().await)
        .await
        .unwrap();
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
    assert!(
        settings["send"]["deadline"]["switched_at_ms"].is_i64(),
        "{settings}"
    );
}

#[tokio::test]
async fn kill_9_after_the_cancel_and_before_the_direct_sends_neither_pays_twice_nor_loses_a_job() {
    let ws = Workspace::new();
    // The first read of the canceled batch's results hangs: the run dies there.
    let mock = slow_batches(Duration::from_secs(600)).await;
    leave_a_batch_running(&ws, &mock, "d").await;
    let args = polled(&["resume", "d", "--deadline", "1m"]);
    let mut child = ws.command(&args).spawn().unwrap();
    mock.wait_for_batch_calls(Call::Results, 1).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(
        direct_prompts(&mock).is_empty(),
        "killed before any direct send"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM results").await,
        0,
        "killed before the batch was recorded"
    );
    // Resumed without --deadline: the run keeps it, and that it switched.
    let output = ws.run(&polled(&["resume", "d"])).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    each_job_answered_once(&ws, &mock).await;
}

#[tokio::test]
async fn a_deadline_already_too_near_sends_everything_directly_and_a_far_one_changes_nothing() {
    let slow = slow_batches(Duration::ZERO).await;
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 3);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--deadline",
        "2m",
    ]);
    let output = ws.run_on(&slow, &args).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert_eq!(
        slow.batches_created(),
        0,
        "no batch for a deadline too near"
    );
    assert_eq!(direct_prompts(&slow).len(), 3);
    assert!(stdout.contains("0 through batches, 3 directly"), "{stdout}");

    // A far deadline: the batch ends on its own, and nothing goes directly.
    let mock = mock(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await;
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 3);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--deadline",
        "10h",
    ]);
    let output = ws.run_on(&mock, &args).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert_eq!(mock.batches_created(), 1);
    assert!(direct_prompts(&mock).is_empty());
    assert!(stdout.contains("3 through batches, 0 directly"), "{stdout}");
    assert!(stdout.contains("met through batches"), "{stdout}");
}

#[tokio::test]
async fn a_bad_deadline_is_refused_naming_the_flag() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 1);
    for bad in ["25:00", "soon", "0s"] {
        let output = ws
            .run(&["run", file.to_str().unwrap(), "--mock", "--deadline", bad])
            .await;
        let (_, stderr) = text(&output);
        assert_eq!(code(&output), 2, "{bad}: {stderr}");
        assert!(stderr.contains("--deadline"), "{stderr}");
    }
}

/// `--via auto` with `jobs` jobs on `mock`, through a profile that says `batches`; returns
/// its standard error.
async fn auto(mock: &MockServer, jobs: usize, batches: bool) -> String {
    let ws = Workspace::new();
    ws.write(
        "msgbatch.toml",
        &format!(
            "[gateways.gw]\nbase_url = \"{}\"\napi_key_env = \"{KEY_ENV}\"\nbatches = {batches}\n",
            mock.base_url()
        ),
    );
    let file = ws.jobs("jobs.jsonl", jobs);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--gateway",
        "gw",
        "--via",
        "auto",
        "--name",
        "a",
    ]);
    let output = ws.run(&args).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    let (settings, column): (String, String) = sqlx::query_as("SELECT settings, via FROM runs")
        .fetch_one(&ws.pool().await)
        .await
        .unwrap();
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
    let via = settings["send"]["via"].as_str().unwrap().to_owned();
    assert!(
        via == "batches" || via == "direct",
        "decided once, kept: {via}"
    );
    // What status, the view and the runs table show is the way taken, not `auto`.
    assert_eq!(column, via);
    stderr
}

#[tokio::test]
async fn via_auto_batches_a_large_run_where_the_gateway_allows_it_and_says_why() {
    let mock = mock(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await;
    let stderr = auto(&mock, 100, true).await;
    assert!(
        stderr.contains("--via auto: sending through batches at half price: 100 jobs"),
        "{stderr}"
    );
    assert_eq!(mock.batches_created(), 1);
    assert!(direct_prompts(&mock).is_empty());
}

#[tokio::test]
async fn via_auto_sends_a_small_run_or_one_to_a_gateway_without_batches_directly() {
    let mock = mock(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await;
    let stderr = auto(&mock, 3, true).await;
    assert!(
        stderr.contains("--via auto: sending directly: 3 jobs, fewer than the 100"),
        "{stderr}"
    );
    let stderr = auto(&mock, 100, false).await;
    assert!(
        stderr.contains("--via auto: sending directly: gateway `gw` has no Message Batches"),
        "{stderr}"
    );
    assert_eq!(mock.batches_created(), 0);
    assert_eq!(direct_prompts(&mock).len(), 103);
}

/// On PostgreSQL: a slow batch canceled for the deadline, what it finished kept, the rest
/// sent directly, the switch and the latency read from the store as on SQLite.
#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_deadline_reached_on_postgres_answers_each_job_once() {
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    let mock = slow_batches(Duration::ZERO).await;
    leave_a_batch_running(&ws, &mock, "d").await;
    let output = ws.run(&polled(&["resume", "d", "--deadline", "1m"])).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert!(stdout.contains("2 through batches, 4 directly"), "{stdout}");
    assert_eq!(mock.batches_created(), 1);
    assert_eq!(
        direct_prompts(&mock),
        ["prompt-2", "prompt-3", "prompt-4", "prompt-5"]
    );
}
