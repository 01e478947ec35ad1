//! Limits as a gateway applies them: retries wait what the server's `retry-after` says (as the
//! official SDKs wait), and a gateway that limits per key rather than per model is paced as
//! one pool.

use std::time::Duration;

use msgbatch::mock::{Fault, MockConfig};

use crate::common::*;

/// A run against `mock` with the test key and the given backoff, not the tests' short one.
fn run_with_backoff(
    ws: &Workspace,
    mock: &msgbatch::mock::MockServer,
    backoff: &str,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = ws.command(args);
    command.args([
        "--base-url",
        &mock.base_url(),
        "--api-key-env",
        KEY_ENV,
        "--retry-base-delay",
        backoff,
        "--retry-max-delay",
        backoff,
    ]);
    command
}

#[tokio::test]
async fn a_retry_waits_what_retry_after_says_not_a_longer_backoff() {
    let ws = Workspace::new();
    let asked = Duration::from_secs(1);
    let mock = mock(MockConfig {
        script: vec![Fault::Status(503), Fault::Status(529)],
        fault_retry_after: Some(asked),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 1);
    // A backoff of up to 30 s: taking the larger of it and `retry-after` would wait about
    // 15 s a retry on average.
    let output = run_with_backoff(&ws, &mock, "30s", &["run", file.to_str().unwrap()])
        .output()
        .await
        .expect("the binary runs");
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let log = mock.log();
    assert_eq!(log.len(), 3);
    for pair in log.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        // Never earlier than asked; later only by the machine's slowness, far below the
        // backoff's scale.
        assert!(
            gap >= asked && gap < asked * 4,
            "retried after {gap:?} where the server asked for {asked:?}"
        );
    }
}

#[tokio::test]
async fn two_models_on_a_gateway_that_limits_the_key_share_one_pool_and_get_no_429() {
    let ws = Workspace::new();
    // The mock keeps one set of buckets for every model, as a gateway limiting the key does.
    let rpm = 300;
    let mock = mock(MockConfig {
        limits: msgbatch::mock::limits::Limits {
            rpm: Some(rpm),
            ..Default::default()
        },
        ..MockConfig::default()
    })
    .await;
    // 170 jobs to each of two models: 340 requests against a bucket of 300. Two pools of
    // 300 each would send them all at once and 40 would be refused.
    let file = ws.jobs("jobs.jsonl", 170);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--models",
                "claude-haiku-4-5,claude-sonnet-4-6",
                "--rpm",
                &rpm.to_string(),
                "--limits",
                "key",
                "--concurrency",
                "64",
                "--no-warmup",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        340
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE http_status = 429"
        )
        .await,
        0,
        "a per-key gateway refused requests"
    );
    // The report shows the key's limit once, for both models together.
    let (stdout, _) = text(&output);
    assert!(
        stdout.contains("(key): RPM 300/min"),
        "no per-key pool in the report: {stdout}"
    );
    assert!(!stdout.contains("claude-haiku-4-5: RPM"), "{stdout}");
}
