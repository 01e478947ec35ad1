//! The mock's rate limits, as the API enforces them: token buckets for requests, input and
//! output tokens, a 429 with `retry-after` when one is short, and the `anthropic-ratelimit-*`
//! headers on every answer.

use msgbatch::mock::MockConfig;
use msgbatch::mock::limits::Limits;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn the_mock_refuses_input_past_its_itpm_bucket_with_retry_after_and_headers() {
    let mock = mock(MockConfig {
        limits: Limits {
            itpm: Some(5_000),
            otpm: Some(100_000),
            rpm: Some(1_000),
        },
        ..MockConfig::default()
    })
    .await;
    // The TLS backend needs a provider even for plain HTTP, as the client itself installs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    // About 2,000 input tokens each: two fit in a full bucket of 5,000, the third does not.
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 20,
        "messages": [{"role": "user", "content": "w".repeat(8_000)}]});
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = http
            .post(format!("{}/v1/messages", mock.base_url()))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        answers.push(response);
    }
    let header = |i: usize, name: &str| {
        answers[i]
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        answers
            .iter()
            .map(|a| a.status().as_u16())
            .collect::<Vec<_>>(),
        [200, 200, 429]
    );
    assert_eq!(header(0, "anthropic-ratelimit-input-tokens-limit"), "5000");
    assert_eq!(
        header(0, "anthropic-ratelimit-input-tokens-remaining"),
        "3000"
    );
    assert_eq!(
        header(1, "anthropic-ratelimit-input-tokens-remaining"),
        "1000"
    );
    assert_eq!(header(0, "anthropic-ratelimit-requests-limit"), "1000");
    // About 1,000 tokens short at 83 a second: 12 seconds.
    let wait: u64 = header(2, "retry-after").parse().unwrap();
    assert!((11..=13).contains(&wait), "retry-after {wait}");
    assert_eq!(
        header(2, "anthropic-ratelimit-input-tokens-remaining"),
        "1000"
    );
    assert!(header(2, "anthropic-ratelimit-tokens-reset").ends_with('Z'));
}

/// `count` jobs of about 630 input tokens each.
fn sized_jobs(ws: &Workspace, count: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..count)
        .map(|i| {
            json!({"custom_id": format!("t-{i}"), "params": {"model": "claude-sonnet-4-6",
                "max_tokens": 40,
                "messages": [{"role": "user", "content": format!("{i:04} {}", "w".repeat(2_510))}]}})
            .to_string()
        })
        .collect();
    ws.write("sized.jsonl", &(lines.join("\n") + "\n"))
}

async fn refused(ws: &Workspace) -> i64 {
    count(
        &ws.pool().await,
        "SELECT COUNT(*) FROM attempts WHERE http_status = 429",
    )
    .await
}

#[tokio::test]
async fn a_run_paced_by_itpm_given_or_learnt_from_headers_stays_under_the_limit() {
    // 52 jobs of about 630 tokens against 30,000 ITPM: the bucket holds all but about 2,760
    // of them, which come back at 500 a second, so the run is bound by the limit for about
    // five and a half seconds. The share of the limit it used is measured over the whole run,
    // so the time spent sending is kept small beside that: on a loaded machine, sending the
    // 190 jobs of a bucket of 120,000 took long enough to pull the share under 0.8.
    let paced_limits = Limits {
        itpm: Some(30_000),
        ..Limits::default()
    };
    let ws = Workspace::new();
    let file = sized_jobs(&ws, 52);
    let paced = mock(MockConfig {
        limits: paced_limits,
        ..MockConfig::default()
    })
    .await;
    let output = ws
        .run_on(
            &paced,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "16",
                "--itpm",
                "30000",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let with_limit = refused(&ws).await;
    assert!(with_limit <= 1, "{with_limit} of 52 requests were refused");
    // The report says how much of the limit the run used: bound by it, nearly all of it.
    let run: String = sqlx::query_scalar("SELECT name FROM runs")
        .fetch_one(&ws.pool().await)
        .await
        .unwrap();
    let used = &ws.report_json(&run).await["limits"][0];
    assert_eq!(used["pool"], "claude-sonnet-4-6");
    assert_eq!(used["limit"], "ITPM");
    assert_eq!(used["per_minute"], 30_000);
    assert_eq!(used["refused"].as_i64(), Some(with_limit));
    let share = used["share"].as_f64().unwrap();
    assert!(share > 0.8 && share <= 1.05, "share {share}");

    // 200 jobs of about 630 tokens against 120,000 ITPM: the bucket holds all but about
    // 6,000 of them, which come back at 2,000 a second.
    let limits = Limits {
        itpm: Some(120_000),
        ..Limits::default()
    };
    // Without --itpm the run learns the limit from the gateway's headers after its first
    // answers, and paces itself as well.
    let ws = Workspace::new();
    let file = sized_jobs(&ws, 200);
    let unpaced = mock(MockConfig {
        limits,
        ..MockConfig::default()
    })
    .await;
    let output = ws
        .run_on(
            &unpaced,
            &["run", file.to_str().unwrap(), "--concurrency", "16"],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let learnt = refused(&ws).await;
    assert!(learnt <= 2, "{learnt} of 200 requests were refused");
    // The limit it learnt is kept with the run, and the report measures against it.
    let run: String = sqlx::query_scalar("SELECT name FROM runs")
        .fetch_one(&ws.pool().await)
        .await
        .unwrap();
    let used = &ws.report_json(&run).await["limits"][0];
    assert_eq!(
        (used["limit"].as_str(), used["per_minute"].as_i64()),
        (Some("ITPM"), Some(120_000))
    );
}
