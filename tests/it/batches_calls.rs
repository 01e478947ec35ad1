//! The calls to the Message Batches endpoints: retried as every call is, stopped by Ctrl-C in
//! any wait, and a create body too large for the gateway halved until it passes.

use std::time::Duration;

use msgbatch::mock::batches::{BatchConfig, Call};
use msgbatch::mock::{Fault, MockConfig};

use crate::common::*;

/// A command's arguments with a poll interval short enough for a test.
fn polled<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--poll-interval", "10ms"]);
    all
}

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("a running child").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

/// The paths of the batch calls the mock saw, with when each came and its status.
fn batch_calls(mock: &msgbatch::mock::MockServer) -> Vec<(String, tokio::time::Instant, u16)> {
    mock.log()
        .into_iter()
        .filter(|l| l.path.contains("/messages/batches"))
        .map(|l| (l.path, l.at, l.status))
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
