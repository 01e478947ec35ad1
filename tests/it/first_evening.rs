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
                "run", file, "--mock", "--via", "batches", "--name", name, "--poll-interval",
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
            "run", file, "--mock", "--via", "batches", "--name", "third", "--poll-interval",
            "10ms", "--max-cost", "0.0006",
        ])
        .await;
    assert_eq!(code(&output), 3, "{:?}", text(&output));
    let output = ws
        .run(&[
            "resume", "third", "--poll-interval", "10ms", "--max-cost", "1",
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
