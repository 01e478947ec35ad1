//! The calls to the Message Batches endpoints: retried as every call is, stopped by Ctrl-C in
//! any wait, and a create body too large for the gateway halved until it passes.

use std::time::Duration;

use msgbatch::mock::batches::{BatchConfig, Call, Oversized};
use msgbatch::mock::{Fault, MockConfig};

use crate::common::*;

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("a running child").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

/// The batch calls the mock saw, as `METHOD path`, with when each came and its status (0:
/// closed without an answer).
fn batch_calls(mock: &msgbatch::mock::MockServer) -> Vec<(String, tokio::time::Instant, u16)> {
    mock.log()
        .into_iter()
        .filter(|l| l.path.contains("/messages/batches"))
        .map(|l| (format!("{} {}", l.method, l.path), l.at, l.status))
        .collect()
}

#[tokio::test]
async fn a_poll_and_a_cancel_answered_529_are_retried_after_their_retry_after() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        fault_retry_after: Some(Duration::from_secs(1)),
        batches: BatchConfig {
            processing: Duration::from_secs(3600),
            faults: vec![
                (Call::Retrieve, Fault::Status(529)),
                (Call::Cancel, Fault::Status(529)),
            ],
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
        "o",
    ]);
    let mut child = ws.command_on(&mock, &args).spawn().unwrap();
    // The create call, the look answered 529, the look retried after it, and the next one
    // (which comes once the third is answered, and so logged).
    mock.wait_for_requests(4).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let calls = batch_calls(&mock);
    assert_eq!(calls[1].2, 529, "{calls:?}");
    assert!(calls[1].0.contains("/batches/msgbatch_"), "{calls:?}");
    assert_eq!(calls[2].0, calls[1].0, "the same look, again: {calls:?}");
    assert_eq!(calls[2].2, 200, "{calls:?}");
    assert!(
        calls[2].1 - calls[1].1 >= Duration::from_secs(1),
        "not before the retry-after: {calls:?}"
    );

    // The cancel call is refused once, retried, and the batch is canceled.
    let output = ws.run(&["cancel", "o"]).await;
    assert_eq!(code(&output), 130, "{:?}", text(&output));
    let cancels: Vec<u16> = batch_calls(&mock)
        .into_iter()
        .filter(|(path, _, _)| path.ends_with("/cancel"))
        .map(|(_, _, status)| status)
        .collect();
    assert_eq!(cancels, [529, 200]);
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
}

#[tokio::test]
async fn ctrl_c_during_the_wait_before_a_batch_call_is_retried_ends_the_run_at_once() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        // Ten minutes before the look may be retried, which the run may wait for.
        fault_retry_after: Some(Duration::from_secs(600)),
        batches: BatchConfig {
            processing: Duration::from_secs(3600),
            faults: vec![(Call::Retrieve, Fault::Status(529))],
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
        "w",
        "--max-retry-after",
        "1h",
    ]);
    let child = ws
        .command_on(&mock, &args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The create call, then the look answered 529: the run now waits to retry it.
    mock.wait_for_requests(2).await;
    interrupt(&child);
    // Far less than the ten minutes asked; only a run that does not listen gets here.
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("Ctrl-C ends the wait")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("1 batch is still running on the server"),
        "{stderr}"
    );
    let calls = batch_calls(&mock);
    assert_eq!(calls.len(), 2, "no call after Ctrl-C: {calls:?}");
    let (status, _) = text(&ws.run(&["status"]).await);
    assert!(status.contains("submitted (1)"), "{status}");
}

/// Runs 30 jobs through batches on a mock whose create bodies are bounded as `oversized`
/// says, and checks that every job went in exactly one batch under the bound and was
/// answered once.
async fn halves_until_the_gateway_takes_it(oversized: Oversized) {
    const BOUND: usize = 2_500;
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        record: true,
        batches: BatchConfig {
            max_body: Some(BOUND),
            oversized,
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 30);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "h",
    ]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("the gateway refused a batch of 30 requests"),
        "{stderr}"
    );
    let pool = ws.pool().await;
    let batches: Vec<(i64, i64)> =
        sqlx::query_as("SELECT requests, bytes FROM batches ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(batches.len() >= 3, "{batches:?}");
    assert_eq!(mock.batches_created(), batches.len(), "{batches:?}");
    assert!(
        batches.iter().all(|(_, bytes)| *bytes <= BOUND as i64),
        "{batches:?}"
    );
    assert_eq!(batches.iter().map(|(n, _)| n).sum::<i64>(), 30);
    assert_eq!(
        count(&pool, "SELECT COUNT(DISTINCT job) FROM batch_items").await,
        30,
        "each job in one batch"
    );
    let states = job_states(&pool).await;
    assert!(
        states.iter().all(|(_, s, n)| s == "succeeded" && *n == 1),
        "{states:?}"
    );
    // The bound learned from the first refusal holds for the rest of the run: the later
    // batches are not refused.
    let creates: Vec<u16> = batch_calls(&mock)
        .into_iter()
        .filter(|(call, _, _)| call.starts_with("POST") && call.ends_with("/messages/batches"))
        .map(|(_, _, status)| status)
        .collect();
    let refused = creates.iter().take_while(|s| **s != 200).count();
    assert!(refused >= 1, "{creates:?}");
    assert!(creates[refused..].iter().all(|s| *s == 200), "{creates:?}");
    if oversized == Oversized::Close {
        // A create whose connection closed is looked for in the list before it is packed
        // again.
        let calls = batch_calls(&mock);
        let first_list = calls
            .iter()
            .position(|(call, _, _)| call.starts_with("GET") && call.ends_with("/batches"));
        assert_eq!(first_list, Some(1), "{calls:?}");
        assert_eq!(calls[0].2, 0, "the mock closed it: {calls:?}");
    }
}

#[tokio::test]
async fn a_413_on_create_halves_the_batch_until_the_gateway_takes_it() {
    halves_until_the_gateway_takes_it(Oversized::Answer).await;
}

#[tokio::test]
async fn a_create_whose_connection_closes_while_its_body_is_sent_is_halved_too() {
    halves_until_the_gateway_takes_it(Oversized::Close).await;
}

#[tokio::test]
async fn a_single_request_the_gateway_refuses_stops_the_run_and_nothing_is_left_open() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        batches: BatchConfig {
            max_body: Some(100),
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 4);
    let args = polled(&["run", file.to_str().unwrap(), "--via", "batches"]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_ne!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("refuses a batch of the single request"),
        "{stderr}"
    );
    assert!(stderr.contains("--via direct"), "{stderr}");
    assert_eq!(mock.batches_created(), 0);
    let pool = ws.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM batches").await, 0);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        4
    );
}

/// The peak resident memory of a running process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a live process");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

#[tokio::test]
async fn a_large_batch_is_sent_without_its_body_in_memory() {
    const JOBS: usize = 8_000;
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        batches: BatchConfig {
            processing: Duration::from_secs(3600),
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    // 8,000 requests of 6 KB: a 48 MB create body.
    let filler = "lorem ipsum ".repeat(500);
    let lines: Vec<String> = (0..JOBS)
        .map(|i| {
            serde_json::json!({"custom_id": format!("m-{i}"), "params": {
                "model": "claude-haiku-4-5", "max_tokens": 16,
                "messages": [{"role": "user", "content": format!("{i} {filler}")}]}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    let args = polled(&["run", file.to_str().unwrap(), "--via", "batches"]);
    let mut child = ws.command_on(&mock, &args).spawn().unwrap();
    // Created: the whole body was sent, and the run now polls.
    mock.wait_for_batches(1).await;
    let peak = peak_rss(child.id().unwrap());
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let pool = ws.pool().await;
    let bytes: i64 = sqlx::query_scalar("SELECT bytes FROM batches")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(bytes > 48_000_000, "{bytes}");
    // About 60 MB on this machine's debug build, the loading of the file included; a body
    // built whole in memory adds its 46 MB to that.
    assert!(
        peak < 80 * 1024 * 1024,
        "peak RSS {} MB while sending a {} MB body",
        peak / 1024 / 1024,
        bytes / 1024 / 1024
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn on_postgres_bodies_are_streamed_from_the_store_and_halved_alike() {
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    let mock = mock(MockConfig {
        batches: BatchConfig {
            max_body: Some(2_500),
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 30);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--name",
        "pg",
    ]);
    let output = ws.run_on(&mock, &args).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("the gateway refused a batch"), "{stderr}");
    assert!(mock.batches_created() >= 3);
    let report = ws.report_json("pg").await;
    assert_eq!(report["totals"][0]["jobs"]["succeeded"], 30, "{report}");
    // Every batch call is a row on PostgreSQL too, the refused creates with their 413.
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT call, http_status FROM batch_calls ORDER BY id")
            .fetch_all(&mut db.connect().await)
            .await
            .unwrap();
    let kept: Vec<(&str, Option<i64>)> = rows.iter().map(|r| (r.0.as_str(), r.1)).collect();
    let seen: Vec<(&str, Option<i64>)> = batch_calls(&mock)
        .iter()
        .map(|c| (call_of(&c.0), Some(i64::from(c.2))))
        .collect();
    assert!(kept.contains(&("create", Some(413))), "{kept:?}");
    assert_eq!(kept, seen, "one row per call");
}

/// The calls to the batch endpoints a run recorded, in order: (call, attempt, status, retry
/// wait asked in ms).
async fn recorded_calls(ws: &Workspace) -> Vec<(String, i64, Option<i64>, Option<i64>)> {
    sqlx::query_as("SELECT call, attempt, http_status, retry_after_ms FROM batch_calls ORDER BY id")
        .fetch_all(&ws.pool().await)
        .await
        .unwrap()
}

/// What a batch endpoint's path and method are, as `batch_calls` names the call.
fn call_of(logged: &str) -> &'static str {
    match logged.split_once(' ') {
        Some(("POST", path)) if path.ends_with("/cancel") => "cancel",
        Some(("POST", _)) => "create",
        Some(("GET", path)) if path.ends_with("/results") => "results",
        Some(("GET", path)) if path.ends_with("/batches") => "list",
        _ => "retrieve",
    }
}

/// A key whose batch request bucket another client has just emptied: the first create is
/// refused with a 429, retried after exactly its retry-after, and from then on the run keeps
/// to what the gateway's headers say remains of 600 calls a minute, however many batches it
/// creates, looks at and reads: never another 429. Every call is a row of `batch_calls`.
#[tokio::test]
async fn batch_calls_keep_to_the_request_limit_the_gateway_says_remains() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        batches: BatchConfig {
            rpm: Some(600),
            rpm_left: Some(0),
            ..BatchConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 8);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--batch-max-requests",
        "1",
        "--name",
        "r",
    ]);
    let output = ws.run_on(&mock, &args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let calls = batch_calls(&mock);
    assert!(
        calls.len() > 8 * 3,
        "a refusal, eight creates, looks and reads: {calls:?}"
    );
    // The bucket was empty: one call a tenth of a second from then on. A create refused
    // with a 429 is looked for in the list before it is made again.
    assert_eq!(calls[0].2, 429, "{calls:?}");
    assert_eq!(call_of(&calls[1].0), "list", "{calls:?}");
    assert_eq!(calls[2].0, calls[0].0, "the create, again: {calls:?}");
    for (at, call) in calls.iter().enumerate().skip(1) {
        assert!(
            call.1 - calls[0].1 >= Duration::from_millis(100),
            "not before the retry-after: {calls:?}"
        );
        assert_eq!(call.2, 200, "call {at} past the limit: {calls:?}");
    }
    let rows = recorded_calls(&ws).await;
    assert_eq!(
        rows[0],
        ("create".to_owned(), 1, Some(429), Some(100)),
        "{rows:?}"
    );
    assert_eq!(
        rows[2],
        ("create".to_owned(), 2, Some(200), None),
        "{rows:?}"
    );
    let seen: Vec<(&str, Option<i64>)> = calls
        .iter()
        .map(|c| (call_of(&c.0), Some(i64::from(c.2))))
        .collect();
    let kept: Vec<(&str, Option<i64>)> = rows.iter().map(|r| (r.0.as_str(), r.2)).collect();
    assert_eq!(kept, seen, "one row per call");
}

/// A look at a batch answered 529 and retried is a row of `batch_calls`, with the API's error
/// type, its request id and the wait it asked, and it changes nothing a report or an export
/// says of the run: they read as those of a run whose looks all went through. No key is
/// stored with the calls.
#[tokio::test]
async fn a_529_on_a_look_is_recorded_as_a_call_and_reports_and_exports_are_unchanged() {
    let clean = Workspace::new();
    let faulty = Workspace::new();
    let mocks = [
        mock(MockConfig::default()).await,
        mock(MockConfig {
            fault_retry_after: Some(Duration::from_secs(1)),
            batches: BatchConfig {
                faults: vec![(Call::Retrieve, Fault::Status(529))],
                errored: vec!["job-1".into()],
                ..BatchConfig::default()
            },
            ..MockConfig::default()
        })
        .await,
    ];
    let mut reports = Vec::new();
    let mut exports = Vec::new();
    for (ws, mock, failed) in [(&clean, &mocks[0], 0), (&faulty, &mocks[1], 1)] {
        let file = ws.jobs("jobs.jsonl", 3);
        let args = polled(&[
            "run",
            file.to_str().unwrap(),
            "--via",
            "batches",
            "--name",
            "f",
        ]);
        let output = ws.run_on(mock, &args).await;
        assert_eq!(code(&output), failed, "{:?}", text(&output));
        let out = ws.path("results.jsonl");
        let output = ws
            .run(&["export", "f", "--out", out.to_str().unwrap()])
            .await;
        assert_eq!(code(&output), 0, "{:?}", text(&output));
        exports.push(std::fs::read_to_string(&out).unwrap());
        reports.push(ws.report_json("f").await);
    }
    let rows = recorded_calls(&faulty).await;
    let looks: Vec<_> = rows.iter().filter(|r| r.0 == "retrieve").collect();
    assert_eq!(looks[0], &("retrieve".to_owned(), 1, Some(529), Some(1000)));
    assert_eq!(looks[1], &("retrieve".to_owned(), 2, Some(200), None));
    let (error_type, request_id): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT error_type, request_id FROM batch_calls WHERE http_status = 529")
            .fetch_one(&faulty.pool().await)
            .await
            .unwrap();
    assert_eq!(error_type.as_deref(), Some("overloaded_error"));
    assert_eq!(request_id.as_deref(), Some("req_mock"));
    // The job's own attempts are its batch items, one each, whatever the looks went through.
    let pool = faulty.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM attempts").await, 3);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM attempts WHERE kind != 'batch'").await,
        0
    );
    // The errored item aside (made so in the faulty run only), the export is the same.
    // Message ids aside: each answer has its own, in both runs.
    let lines = |export: &str| -> Vec<serde_json::Value> {
        export
            .lines()
            .map(|l| {
                let mut line: serde_json::Value = serde_json::from_str(l).unwrap();
                if let Some(message) = line["result"]["message"].as_object_mut() {
                    assert!(message.remove("id").is_some());
                }
                line
            })
            .collect()
    };
    let (clean_lines, faulty_lines) = (lines(&exports[0]), lines(&exports[1]));
    assert_eq!(clean_lines.len(), 3);
    for (c, f) in clean_lines.iter().zip(&faulty_lines) {
        if f["custom_id"] == "job-1" {
            assert_eq!(f["result"]["error"]["error"]["type"], "api_error");
        } else {
            assert_eq!(c, f);
        }
    }
    // The report's errors are the errored item's alone: nothing of the 529.
    let errors = reports[1]["errors"].to_string();
    assert!(!errors.contains("529"), "{errors}");
    assert!(!errors.contains("overloaded"), "{errors}");
    assert_eq!(reports[1]["totals"][0]["jobs"]["failed"], 1);
    assert_eq!(
        reports[0]["totals"][0]["jobs"]["succeeded"],
        reports[1]["totals"][0]["jobs"]["succeeded"]
            .as_i64()
            .unwrap()
            + 1
    );
    // No key, nor anything holding it, in the calls' rows.
    let stored: Vec<(String,)> = sqlx::query_as(
        "SELECT COALESCE(error_message, '') || COALESCE(error_body, '') || COALESCE(request_id, '')
                || COALESCE(remote_id, '') FROM batch_calls",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(stored.iter().all(|(text,)| !text.contains(TEST_KEY)));
}

/// The Batches API caps the requests waiting in its processing queue: a run holds no more in
/// its open batches than `--batch-queue`, and creates the next batch once they have ended.
#[tokio::test]
async fn batches_wait_for_room_in_the_queue_before_more_are_created() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = ws.jobs("jobs.jsonl", 12);
    let args = polled(&[
        "run",
        file.to_str().unwrap(),
        "--via",
        "batches",
        "--batch-max-requests",
        "4",
        "--batch-queue",
        "8",
    ]);
    let output = ws.run_on(&mock, &args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(mock.batches_created(), 3);
    let calls: Vec<String> = sqlx::query_scalar(
        "SELECT call FROM batch_calls WHERE call IN ('create', 'results') ORDER BY id",
    )
    .fetch_all(&ws.pool().await)
    .await
    .unwrap();
    let at = |call: &str| -> Vec<usize> {
        calls
            .iter()
            .enumerate()
            .filter(|(_, c)| *c == call)
            .map(|(i, _)| i)
            .collect()
    };
    let (creates, results) = (at("create"), at("results"));
    assert_eq!((creates.len(), results.len()), (3, 3), "{calls:?}");
    // Two batches of 4 fill the queue of 8: the third is created once both were read.
    assert!(creates[2] > results[1], "{calls:?}");
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        12
    );
}
