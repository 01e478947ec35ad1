//! What a new user trips over on the first evening: a second batches run on the mock, an
//! estimate without a key, a run that ends in failures, files in another tool's shape, and a
//! model name with a typo.

use msgbatch::mock::MockConfig;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn two_batches_runs_on_the_mock_share_a_store_and_resume_goes_on() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 4);
    let file = file.to_str().unwrap();
    for name in ["first", "second"] {
        let output = ws
            .run(&[
                "run",
                file,
                "--mock",
                "--via",
                "batches",
                "--name",
                name,
                "--poll-interval",
                "10ms",
            ])
            .await;
        let (stdout, stderr) = text(&output);
        assert_eq!(code(&output), 0, "{name}: {stdout}{stderr}");
        assert!(stdout.contains("completed"), "{name}: {stdout}");
    }
    // A budget for about one job; resume sends the rest in new batches, from a new
    // in-process mock.
    let output = ws
        .run(&[
            "run",
            file,
            "--mock",
            "--via",
            "batches",
            "--name",
            "third",
            "--poll-interval",
            "10ms",
            "--max-cost",
            "0.0006",
        ])
        .await;
    assert_eq!(code(&output), 3, "{:?}", text(&output));
    let output = ws
        .run(&[
            "resume",
            "third",
            "--poll-interval",
            "10ms",
            "--max-cost",
            "1",
        ])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        12
    );
    let ids: Vec<String> = sqlx::query_scalar("SELECT remote_id FROM batches ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(ids.len() >= 4, "{ids:?}");
    for id in &ids {
        assert!(
            id.starts_with("msgbatch_") && id.len() == "msgbatch_".len() + 24,
            "shaped like the API's ids: {id}"
        );
    }
}

#[tokio::test]
async fn estimate_without_count_tokens_needs_no_key() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run(&["estimate", file.to_str().unwrap(), "--no-count-tokens"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert!(!stderr.contains("no API key"), "{stderr}");
    assert!(stdout.contains("claude-haiku-4-5"), "{stdout}");
}

#[tokio::test]
async fn a_run_with_failures_ends_with_what_failed_and_the_command_that_sends_them_again() {
    use msgbatch::mock::Fault;
    let mock = mock(MockConfig {
        // The first job is answered, so that the 400s after it are about their own jobs.
        script_from: 1,
        script: vec![Fault::Status(400), Fault::Status(529), Fault::Status(400)],
        ..MockConfig::default()
    })
    .await;
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 6);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "night",
                "--concurrency",
                "1",
                "--max-attempts",
                "1",
            ],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("3 failed"),
        "the counts still come first: {stdout}"
    );
    assert!(
        stdout.contains("failed  2 × invalid_request_error (400), 1 × overloaded_error (529)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "e.g. job-1 (claude-haiku-4-5), job-2 (claude-haiku-4-5), job-3 (claude-haiku-4-5)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("msgbatch resume night --include-failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("msgbatch report night --format csv (writes reports/night-failures.csv)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_gateway_that_answers_every_job_with_the_same_400_stops_the_run_early() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 100);
    let output = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--mock",
            "--mock-reject",
            "400:no_db_connection",
            "--name",
            "wrong-key",
        ])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("the gateway answered 400 no_db_connection to the first 3 jobs"),
        "{stderr}"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        100,
        "every job stays pending for resume"
    );
    let sent = count(&pool, "SELECT COUNT(*) FROM attempts").await;
    assert!(sent < 40, "{sent} requests sent before stopping");
}

#[tokio::test]
async fn files_in_another_tools_shape_get_one_sentence_on_how_to_convert_them() {
    let ws = Workspace::new();
    let openai = json!({"custom_id": "q-1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}});
    let file = ws.write("openai.jsonl", &format!("{openai}\n"));
    let output = ws.run(&["run", file.to_str().unwrap(), "--mock"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("openai.jsonl:1: `body`"), "{stderr}");
    assert!(stderr.contains("OpenAI's batch shape"), "{stderr}");
    assert!(
        stderr.contains("jq -c '{custom_id, params: (.body | del(.model))}'"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("is missing"),
        "one sentence, not three: {stderr}"
    );

    let system = json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    let file = ws.write("system.jsonl", &format!("{system}\n"));
    let output = ws.run(&["run", file.to_str().unwrap(), "--mock"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("the system prompt goes in the top-level `system` field"),
        "{stderr}"
    );

    let record = json!({"model": "claude-haiku-4-5", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}]});
    let one_line = format!("[{record}, {record}]\n");
    let pretty = serde_json::to_string_pretty(&json!([record, record])).unwrap();
    for (name, content) in [("array.json", one_line), ("pretty.jsonl", pretty)] {
        let file = ws.write(name, &content);
        let output = ws.run(&["run", file.to_str().unwrap(), "--mock"]).await;
        let (_, stderr) = text(&output);
        assert_eq!(code(&output), 2, "{stderr}");
        assert!(
            stderr.contains(&format!("{name}:1: this file is a JSON array"))
                && stderr.contains("one JSON object per line")
                && stderr.contains("jq -c '.[]'"),
            "{name}: {stderr}"
        );
    }
}
