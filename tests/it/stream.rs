//! Streaming: messages rebuilt from events, time to first token, broken streams retried.

use std::time::Duration;

use msgbatch::mock::{Fault, MockConfig};
use serde_json::{Value, json};
use sqlx::Row;

use crate::common::*;

fn request(stream: bool, tools: bool) -> Value {
    let mut body = json!({"model": "claude-sonnet-4-6", "max_tokens": 300, "stream": stream,
        "messages": [{"role": "user", "content": "Tell me about streams."}]});
    if tools {
        body["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    }
    body
}

#[tokio::test]
async fn a_streamed_answer_is_stored_exactly_as_the_plain_one() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let lines = [
        json!({"custom_id": "plain", "params": request(false, false)}),
        json!({"custom_id": "streamed", "params": request(true, false)}),
    ];
    ws.write("jobs.jsonl", &lines.map(|l| l.to_string()).join("\n"));
    let output = ws.run_on(&mock, &["run", "jobs.jsonl"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    let rows = sqlx::query("SELECT j.job_id, b.body, r.streamed, r.ttft_ms, r.output_tokens FROM results r JOIN responses b ON b.job = r.job JOIN jobs j ON j.id = r.job ORDER BY j.id")
        .fetch_all(&pool)
        .await
        .unwrap();
    // Each answer's id aside, which is its own as the API's is.
    let body = |i: usize| {
        let mut body = serde_json::from_str::<Value>(rows[i].get::<&str, _>(1)).unwrap();
        assert!(body.as_object_mut().unwrap().remove("id").is_some());
        body
    };
    assert_eq!(
        body(0),
        body(1),
        "the rebuilt message equals the non-streamed one"
    );
    assert_eq!(body(1)["stop_reason"], "end_turn");
    assert_eq!(
        (rows[0].get::<bool, _>(2), rows[1].get::<bool, _>(2)),
        (false, true)
    );
    assert!(
        rows[0].get::<Option<i64>, _>(3).is_none(),
        "no TTFT without a stream"
    );
    assert!(rows[1].get::<Option<i64>, _>(3).is_some());
    assert_eq!(rows[0].get::<i64, _>(4), rows[1].get::<i64, _>(4));
    assert!(mock.log().iter().any(|l| l.stream));
}

#[tokio::test]
async fn run_stream_streams_every_job_and_records_ttft_below_latency() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        first_token_delay: Duration::from_millis(150),
        token_delay: Duration::from_millis(10),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--stream"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert!(mock.log().iter().all(|l| l.stream));
    let pool = ws.pool().await;
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT ttft_ms, latency_ms FROM results")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for (ttft, latency) in rows {
        assert!(ttft >= 150, "TTFT {ttft} ms includes the first-token delay");
        assert!(
            ttft < latency,
            "TTFT {ttft} ms before the end at {latency} ms"
        );
    }
    let attempts: Vec<(Option<i64>,)> = sqlx::query_as("SELECT ttft_ms FROM attempts")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(attempts.iter().all(|(t,)| t.is_some_and(|t| t >= 150)));
}

#[tokio::test]
async fn error_events_and_cut_streams_are_retried_and_nothing_partial_is_stored() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        script: vec![Fault::StreamError, Fault::CutStream],
        ..MockConfig::default()
    })
    .await;
    ws.write(
        "jobs.jsonl",
        &json!({"custom_id": "s", "params": request(true, false)}).to_string(),
    );
    let output = ws.run_on(&mock, &["run", "jobs.jsonl"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    let kinds: Vec<(Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT http_status, error_type FROM attempts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        kinds,
        [
            (Some(200), Some("overloaded_error".into())),
            (Some(200), Some("stream_cut".into())),
            (Some(200), None),
        ]
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 1);
    let response: String = sqlx::query_scalar("SELECT body FROM responses")
        .fetch_one(&pool)
        .await
        .unwrap();
    let message: Value = serde_json::from_str(&response).unwrap();
    assert_eq!(message["stop_reason"], "end_turn");
    assert!(
        message["content"][0]["text"]
            .as_str()
            .unwrap()
            .ends_with('.')
    );
}

#[tokio::test]
async fn an_idle_stream_fails_the_attempt() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        first_token_delay: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await;
    ws.write(
        "jobs.jsonl",
        &json!({"custom_id": "s", "params": request(true, false)}).to_string(),
    );
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                "jobs.jsonl",
                "--stream-idle-timeout",
                "200ms",
                "--max-attempts",
                "2",
            ],
        )
        .await;
    assert_eq!(code(&output), 1, "{:?}", text(&output));
    let pool = ws.pool().await;
    let (error,): (String,) = sqlx::query_as("SELECT error FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(error.contains("stream_idle"), "{error}");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 0);
}
