//! Retries: what is retried, what is not, and how long the runner waits.

use std::time::Duration;

use msgbatch::mock::{Fault, MockConfig};

use crate::common::*;

#[tokio::test]
async fn transient_failures_are_retried_to_success_and_every_attempt_is_recorded() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        script: vec![
            Fault::RateLimited(Duration::from_millis(20)),
            Fault::Status(500),
            Fault::Status(529),
            Fault::Drop,
            Fault::Garbage,
            Fault::Status(503),
        ],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 2);
    let output = ws
        .run_on(
            &mock,
            &["run", file.to_str().unwrap(), "--concurrency", "1"],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    // While one job waits to be tried again, the other may take its place: the six faults
    // fall on either, and both end answered after eight attempts in all.
    let states = job_states(&pool).await;
    assert!(
        states.iter().all(|(_, state, _)| state == "succeeded"),
        "{states:?}"
    );
    assert_eq!(
        states.iter().map(|(_, _, n)| n).sum::<i64>(),
        8,
        "{states:?}"
    );
    let kinds: Vec<(Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT http_status, error_type FROM attempts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        kinds,
        [
            (Some(429), Some("rate_limit_error".into())),
            (Some(500), Some("api_error".into())),
            (Some(529), Some("overloaded_error".into())),
            (None, Some("connection_error".into())),
            (Some(200), Some("invalid_response".into())),
            (Some(503), Some("api_error".into())),
            (Some(200), None),
            (Some(200), None),
        ]
    );
    assert_eq!(mock.requests(), 8);
}

#[tokio::test]
async fn retry_after_is_a_floor_for_the_next_attempt() {
    let ws = Workspace::new();
    let wait = Duration::from_millis(1200);
    let mock = mock(MockConfig {
        script: vec![Fault::RateLimited(wait)],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 1);
    // Backoff alone would retry within 5 ms.
    let output = ws.run_on(&mock, &["run", file.to_str().unwrap()]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let log = mock.log();
    assert_eq!(log.len(), 2);
    let gap = log[1].at.duration_since(log[0].at);
    assert!(
        gap >= wait,
        "retried after {gap:?}, before the {wait:?} the server asked for"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT retry_after_ms FROM attempts WHERE http_status = 429"
        )
        .await,
        1200
    );
}

#[tokio::test]
async fn a_429_holds_back_every_worker_not_only_the_one_refused() {
    let ws = Workspace::new();
    let wait = Duration::from_millis(800);
    let latency = Duration::from_millis(200);
    let mock = mock(MockConfig {
        latency,
        script: vec![Fault::RateLimited(wait)],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 12);
    // Four workers: the first request is refused while three others are answered at the same
    // moment. Those three may send their next jobs in the instant before the refused worker
    // sets the pause, but after that nothing is sent until the 429's retry-after has passed.
    // Without a shared pause, the workers would go on sending every 200 ms in the meantime.
    let output = ws
        .run_on(
            &mock,
            &["run", file.to_str().unwrap(), "--concurrency", "4"],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let log = mock.log();
    assert_eq!(log.len(), 13);
    assert_eq!(log[0].status, 429);
    // The attempts as msgbatch recorded them, (started, ended) in ms, in the order sent. What
    // is checked is an order of events, not a margin of time, so that a loaded machine, which
    // only stretches the gaps, cannot fail it: every attempt started within the retry-after
    // comes straight out of the first wave's answers, none follows an answer to an attempt
    // sent after the 429 (as a worker not held back would send, one latency later).
    let pool = ws.pool().await;
    let attempts: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT started_at_ms, started_at_ms + latency_ms, http_status FROM attempts
         ORDER BY started_at_ms, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts.len(), 13);
    let (first_wave, later) = attempts.split_at(4);
    let refused = first_wave
        .iter()
        .find(|(_, _, status)| *status == Some(429))
        .expect("the 429 is in the first wave");
    let refused_end = refused.1;
    let pause_end = refused_end + i64::try_from(wait.as_millis()).unwrap();
    let during: Vec<&(i64, i64, Option<i64>)> = later
        .iter()
        .filter(|(started, _, _)| (refused_end..pause_end).contains(started))
        .collect();
    assert!(
        during.len() <= 3,
        "{} requests were sent after the 429: {attempts:?}",
        during.len()
    );
    for (started, _, _) in &during {
        assert!(
            !later.iter().any(|(_, ended, _)| ended <= started),
            "a request went {} ms after the 429, within its retry-after of {wait:?}, after the \
             answer to another request sent after the 429: {attempts:?}",
            started - refused_end
        );
    }
}

#[tokio::test]
async fn a_400_is_not_retried_and_fails_the_job() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        script: vec![Fault::Status(400)],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 2);
    let output = ws
        .run_on(
            &mock,
            &["run", file.to_str().unwrap(), "--concurrency", "1"],
        )
        .await;
    let (stdout, _) = text(&output);
    assert_eq!(code(&output), 1, "exit 1 means some jobs failed");
    assert!(stdout.contains("1 succeeded, 1 failed"), "{stdout}");
    assert_eq!(mock.requests(), 2);
    let pool = ws.pool().await;
    let (error,): (String,) = sqlx::query_as("SELECT error FROM jobs WHERE state = 'failed'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(error, "HTTP 400 invalid_request_error: Invalid request");
}

#[tokio::test]
async fn attempts_run_out_and_the_job_fails_with_the_count_and_last_cause() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        script: vec![Fault::Status(529); 3],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 1);
    let output = ws
        .run_on(
            &mock,
            &["run", file.to_str().unwrap(), "--max-attempts", "3"],
        )
        .await;
    assert_eq!(code(&output), 1, "{:?}", text(&output));
    let pool = ws.pool().await;
    let (error, attempts): (String, i64) = sqlx::query_as("SELECT error, attempts FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 3);
    assert!(
        error.starts_with("request failed after 3 attempts in "),
        "{error}"
    );
    assert!(
        error.ends_with("HTTP 529 overloaded_error: Overloaded"),
        "{error}"
    );
}

#[tokio::test]
async fn the_spend_limit_stops_the_run_at_once_and_keeps_jobs_pending() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        script: vec![Fault::SpendLimit],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 20);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "1",
                "--name",
                "capped",
            ],
        )
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("spend limit is reached"), "{stderr}");
    assert!(stderr.contains("msgbatch resume capped"), "{stderr}");
    assert_eq!(
        mock.requests(),
        1,
        "the spend cap is final: no retry, no next job"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        20
    );
}

#[tokio::test]
async fn a_529_storm_is_retried_through_without_stopping_the_run() {
    let ws = Workspace::new();
    // After 10 answers, 40 overloaded answers in a row: the pace is cut (runner/pace.rs tests
    // how), every job is retried until answered, and nothing halts the run.
    let mock = mock(MockConfig {
        latency: Duration::from_millis(20),
        script_from: 10,
        script: vec![Fault::Status(529); 40],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 60);
    let output = ws
        .run_on(
            &mock,
            &["run", file.to_str().unwrap(), "--concurrency", "16"],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("60 succeeded, 0 failed"), "{stdout}");
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE http_status = 529"
        )
        .await,
        40
    );
}

#[tokio::test]
async fn a_request_waiting_to_be_retried_leaves_its_place_to_the_others() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        script: vec![Fault::Status(503)],
        fault_retry_after: Some(Duration::from_secs(1)),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run_on(
            &mock,
            &["run", file.to_str().unwrap(), "--concurrency", "1"],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    // With one request in flight at most, the two other jobs are answered while the first
    // waits out its `retry-after`, and its retry comes no earlier than the gateway asked.
    let attempts: Vec<(String, Option<i64>, i64, i64)> = sqlx::query_as(
        "SELECT j.job_id, a.http_status, a.started_at_ms, a.latency_ms
         FROM attempts a JOIN jobs j ON j.id = a.job ORDER BY a.started_at_ms, a.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let order: Vec<(&str, Option<i64>)> = attempts
        .iter()
        .map(|(id, status, _, _)| (id.as_str(), *status))
        .collect();
    assert_eq!(
        order,
        [
            ("job-0", Some(503)),
            ("job-1", Some(200)),
            ("job-2", Some(200)),
            ("job-0", Some(200)),
        ]
    );
    let (_, _, refused_at, refused_latency) = attempts[0];
    let (_, _, retried_at, _) = attempts[3];
    assert!(
        retried_at - (refused_at + refused_latency) >= 1000,
        "retried {} ms after the 503",
        retried_at - (refused_at + refused_latency)
    );
}
