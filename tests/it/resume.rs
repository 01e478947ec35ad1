//! Interruptions: kill -9, Ctrl-C once and twice, and resume sending exactly what is missing.

use std::collections::BTreeSet;
use std::time::Duration;

use msgbatch::mock::{MockConfig, MockServer};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("the child is running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn succeeded_ids(ws: &Workspace) -> BTreeSet<String> {
    let pool = ws.pool().await;
    let ids = job_states(&pool)
        .await
        .into_iter()
        .filter(|(_, state, _)| state == "succeeded")
        .map(|(id, _, _)| id)
        .collect();
    pool.close().await;
    ids
}

#[tokio::test]
async fn after_kill_9_resume_sends_exactly_the_jobs_without_a_committed_result() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        latency: Duration::from_millis(40),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 60);
    let mut child = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "4",
                "--name",
                "crash",
            ],
        )
        .spawn()
        .unwrap();
    mock.wait_for_requests(20).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let committed = succeeded_ids(&ws).await;
    assert!(
        !committed.is_empty() && committed.len() < 60,
        "{} committed",
        committed.len()
    );
    let before = mock.log().len();
    let output = ws.run(&["resume", "crash"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("run crash (id 1): completed"), "{stdout}");

    let resent: BTreeSet<String> = mock.log()[before..]
        .iter()
        .map(|l| l.prompt().unwrap())
        .collect();
    let missing: BTreeSet<String> = (0..60)
        .filter(|i| !committed.contains(&format!("job-{i}")))
        .map(|i| format!("prompt-{i}"))
        .collect();
    assert_eq!(
        resent, missing,
        "resume sent exactly the jobs without a committed result"
    );
    assert_eq!(mock.log().len() - before, missing.len(), "each once");
    let pool = ws.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 60);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        60
    );
}

#[tokio::test]
async fn ctrl_c_lets_requests_in_flight_finish_then_resume_completes() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        latency: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 30);
    let child = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "3",
                "--name",
                "night",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    mock.wait_for_requests(6).await;
    interrupt(&child);
    let output = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 130, "{stdout}\n{stderr}");
    assert!(stdout.contains("run night (id 1): interrupted"), "{stdout}");
    assert!(
        stderr.contains("resume with: msgbatch resume night"),
        "{stderr}"
    );
    // Every request that left was answered and committed; nothing failed.
    let sent = mock.requests();
    assert!(sent < 30);
    assert_eq!(succeeded_ids(&ws).await.len() as u64, sent);
    let status = ws.run(&["status", "night"]).await;
    assert!(
        text(&status).0.contains("interrupted"),
        "{:?}",
        text(&status)
    );

    let output = ws.run(&["resume", "night"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(mock.requests(), 30, "each job sent once over both sessions");
    assert_eq!(succeeded_ids(&ws).await.len(), 30);
}

#[tokio::test]
async fn a_second_ctrl_c_abandons_requests_in_flight_and_keeps_them_pending() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        latency: Duration::from_secs(60),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 5);
    let mut child = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "2",
                "--name",
                "slow",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    mock.wait_for_requests(2).await;
    interrupt(&child);
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = stderr.next_line().await.unwrap() {
        if line.starts_with("stopping:") {
            break;
        }
    }
    interrupt(&child);
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(code(&output), 130, "{:?}", text(&output));
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        5
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 0);
}

#[tokio::test]
async fn status_tells_a_dead_run_and_include_failed_sends_failures_again() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        latency: Duration::from_millis(40),
        script: vec![msgbatch::mock::Fault::Status(400)],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 20);
    let mut child = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "1",
                "--name",
                "dead",
            ],
        )
        .spawn()
        .unwrap();
    mock.wait_for_requests(5).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let status = ws.run(&["status"]).await;
    let (stdout, _) = text(&status);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("dead") && l.contains(" died ")),
        "{stdout}"
    );

    let output = ws.run(&["resume", "dead"]).await;
    assert_eq!(
        code(&output),
        1,
        "the 400 job is still failed: {:?}",
        text(&output)
    );
    let output = ws.run(&["resume", "dead", "--include-failed"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("1 failed jobs set back to pending"),
        "{stderr}"
    );
    assert_eq!(succeeded_ids(&ws).await.len(), 20);
}

/// A run of ten jobs made to look as a run stopped while loading leaves it: only the records
/// of its first four lines stored (and sent), the rest of its file not.
async fn stopped_while_loading(ws: &Workspace, mock: &MockServer) -> std::path::PathBuf {
    let file = ws.jobs("jobs.jsonl", 10);
    let output = ws
        .run_on(mock, &["run", file.to_str().unwrap(), "--name", "part"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(ws.db())
        .foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::query("DELETE FROM jobs WHERE line > 4")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE runs SET loaded = 0, status = 'interrupted'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    file
}

#[tokio::test]
async fn a_run_stopped_while_loading_stores_the_rest_on_resume_and_sends_each_job_once() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    stopped_while_loading(&ws, &mock).await;
    let output = ws.run(&["status", "part"]).await;
    let (stdout, _) = text(&output);
    assert!(
        stdout.contains("loading  4 of the 10 jobs of its file stored"),
        "{stdout}"
    );
    let report = ws.report_json("part").await;
    let warned = report["warnings"].as_array().unwrap().iter().any(|w| {
        w.as_str()
            .unwrap()
            .contains("stopped before all the jobs of its file were stored (4 of 10)")
    });
    assert!(warned, "{}", report["warnings"]);

    // Another run made meanwhile: the rest of `part` is stored after its rows.
    let other = ws.jobs("other.jsonl", 3);
    let output = ws
        .run_on(&mock, &["run", other.to_str().unwrap(), "--name", "other"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));

    let before = mock.log().len();
    let output = ws.run(&["resume", "part"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("run part (id 1): completed"), "{stdout}");
    assert!(
        stdout.contains("10 succeeded, 0 failed, 0 rejected, 0 pending (of 10)"),
        "{stdout}"
    );
    let resent: BTreeSet<String> = mock.log()[before..]
        .iter()
        .map(|l| l.prompt().unwrap())
        .collect();
    let rest: BTreeSet<String> = (4..10).map(|i| format!("prompt-{i}")).collect();
    assert_eq!(
        resent, rest,
        "the jobs of the lines never stored, once each"
    );
    assert_eq!(mock.log().len() - before, 6);
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT loaded FROM runs WHERE name = 'part'").await,
        1
    );
    // Its rows are in two stretches now, around the other run's: its spend over time still
    // adds up to its own results' costs, and no others.
    let store = msgbatch::store::Store::open(&ws.db()).await.unwrap();
    let span = store.job_span(1).await.unwrap().unwrap();
    assert!(!span.contiguous);
    let charted: i64 = store
        .spend_over_time(&store.job_spans(&[1]).await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|p| p.cost_pico_usd)
        .sum();
    let own = count(
        &pool,
        "SELECT SUM(r.cost_pico_usd) FROM results r JOIN jobs j ON j.id = r.job WHERE j.run_id = 1",
    )
    .await;
    assert_eq!(charted, own);
}

#[tokio::test]
async fn a_run_stopped_while_loading_refuses_to_resume_from_a_changed_file() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = stopped_while_loading(&ws, &mock).await;
    let mut text_now = std::fs::read_to_string(&file).unwrap();
    text_now = text_now.replace("prompt-7", "prompt-seven");
    std::fs::write(&file, text_now).unwrap();

    let before = mock.log().len();
    let output = ws.run(&["resume", "part"]).await;
    let (stdout, stderr) = text(&output);
    assert_ne!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("stopped after storing 4 of its jobs")
            && stderr.contains("jobs.jsonl has changed since it started"),
        "{stderr}"
    );
    assert_eq!(mock.log().len(), before, "nothing sent");
}
