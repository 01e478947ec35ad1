//! Nothing lost, nothing paid twice: a store whose writes fail part-way, SIGTERM and SIGHUP,
//! a store reached through a symlink, and a store file that holds every committed run alone.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use msgbatch::mock::MockConfig;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::common::*;

async fn open(db: &Path, read_only: bool) -> SqlitePool {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .expect("a valid path")
        .read_only(read_only);
    SqlitePool::connect_with(options)
        .await
        .expect("the database opens")
}

async fn page_count(pool: &SqlitePool) -> i64 {
    count(pool, "PRAGMA page_count").await
}

/// Results committed so far in `db`, or 0 while it cannot be read yet.
async fn committed(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    let pool = open(db, true).await;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM results")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    pool.close().await;
    n
}

/// Polls the store until at least `n` results are committed (the run is slow enough that it
/// is still sending then).
async fn wait_for_results(db: &Path, n: i64) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while committed(db).await < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("results were committed");
}

/// The binary on the store at `db` (another spelling of the workspace's), with the test key.
async fn run_with_db(ws: &Workspace, db: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_msgbatch"))
        .arg("--db")
        .arg(db)
        .args(args)
        .current_dir(ws.dir.path())
        .env(KEY_ENV, TEST_KEY)
        .env("CI", "1")
        .env_remove("MSGBATCH_DB")
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs")
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the child is running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn a_full_store_stops_sending_at_once_and_resume_buys_again_only_what_was_in_flight() {
    const JOBS: usize = 600;
    const CONCURRENCY: u64 = 8;
    // Answers that arrive while the failing commit runs are bought and lost with it: a few
    // commits' worth at this latency, however loaded the machine.
    const LOST_AT_MOST: u64 = 4 * CONCURRENCY;
    // How many pages the run's jobs take, and its answers, from a run of the same file
    // into a store of its own.
    let calibration = Workspace::new();
    let file = calibration.jobs("jobs.jsonl", JOBS);
    let free = mock(MockConfig::default()).await;
    let output = calibration
        .run_on(&free, &["run", file.to_str().unwrap(), "--quiet"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = open(&calibration.db(), false).await;
    let full = page_count(&pool).await;
    for table in ["grades", "responses", "results", "attempts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("VACUUM").execute(&pool).await.unwrap();
    let loaded = page_count(&pool).await;
    pool.close().await;
    assert!(
        full > loaded + 100,
        "answers take pages: {loaded} then {full}"
    );

    // The same file against a store that fills up halfway through the answers.
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", JOBS);
    let mock = mock(MockConfig {
        latency: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let limit = loaded + (full - loaded) / 2;
    let output = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "full",
                "--concurrency",
                &CONCURRENCY.to_string(),
            ],
        )
        .env(msgbatch::store::MAX_PAGE_COUNT_ENV, limit.to_string())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("database or disk is full"), "{stderr}");
    assert!(
        stderr.contains("sending stopped") && stderr.contains("msgbatch resume full"),
        "{stderr}"
    );
    let recorded = committed(&ws.db()).await;
    assert!(
        recorded > 0 && recorded < JOBS as i64,
        "{recorded} recorded before the store filled up"
    );
    let bought = mock.requests();
    assert!(
        bought <= recorded as u64 + LOST_AT_MOST,
        "{bought} answers bought for {recorded} recorded: sending went on after the store failed"
    );
    let status = ws.run(&["status", "full"]).await;
    assert!(
        text(&status).0.contains("database or disk is full"),
        "{:?}",
        text(&status)
    );

    // With room again, resume sends what was not recorded, and nothing else.
    let output = ws.run(&["resume", "full"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(committed(&ws.db()).await, JOBS as i64);
    let total = mock.requests();
    assert!(
        total <= JOBS as u64 + LOST_AT_MOST,
        "{total} answers bought over run and resume for {JOBS} jobs"
    );
}

#[tokio::test]
async fn a_full_store_while_batch_results_are_recorded_stops_the_run_and_resume_buys_nothing_again()
{
    // Batch results are committed 2,000 at a time: the first commit fits, the second not.
    const JOBS: usize = 3000;
    let calibration = Workspace::new();
    let file = calibration.jobs("jobs.jsonl", JOBS);
    let free = mock(MockConfig::default()).await;
    let batches = ["--via", "batches", "--poll-interval", "10ms", "--quiet"];
    let mut args = vec!["run", file.to_str().unwrap()];
    args.extend(batches);
    let output = calibration.run_on(&free, &args).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = open(&calibration.db(), false).await;
    let full = page_count(&pool).await;
    for table in ["grades", "responses", "results", "attempts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("VACUUM").execute(&pool).await.unwrap();
    let loaded = page_count(&pool).await;
    pool.close().await;

    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", JOBS);
    let mock = mock(MockConfig::default()).await;
    let mut args = vec!["run", file.to_str().unwrap(), "--name", "full"];
    args.extend(batches);
    let limit = loaded + (full - loaded) * 4 / 5;
    let output = ws
        .command_on(&mock, &args)
        .env(msgbatch::store::MAX_PAGE_COUNT_ENV, limit.to_string())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("database or disk is full"), "{stderr}");
    assert!(stderr.contains("msgbatch resume full"), "{stderr}");
    let recorded = committed(&ws.db()).await;
    assert!(
        recorded > 0 && recorded < JOBS as i64,
        "{recorded} recorded before the store filled up"
    );
    let status = ws.run(&["status", "full"]).await;
    assert!(
        text(&status).0.contains("database or disk is full"),
        "{:?}",
        text(&status)
    );

    // Resume reads the rest of the same batch's results: nothing is bought twice.
    let output = ws.run(&["resume", "full", "--poll-interval", "10ms"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(committed(&ws.db()).await, JOBS as i64);
    assert_eq!(mock.batches_created(), 1, "one batch, submitted once");
    let direct = mock
        .log()
        .iter()
        .filter(|l| l.path.ends_with("/v1/messages"))
        .count();
    assert_eq!(direct, 0, "no job sent directly");
}

/// Runs 60 slow jobs, sends `name` once some are committed, and checks that the run stops as
/// on Ctrl-C with exit `code`, and that resume then sends each job exactly once in all.
async fn a_signal_stops_the_run_as_ctrl_c_does(name: &str, exit: i32) {
    const JOBS: u64 = 60;
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        latency: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", JOBS as usize);
    let child = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "4",
                "--name",
                "night",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_results(&ws.db(), 8).await;
    signal(&child, name);
    let output = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), exit, "{stdout}\n{stderr}");
    assert!(stdout.contains("run night (id 1): interrupted"), "{stdout}");
    assert!(
        stderr.contains(&format!("stopping: SIG{name} received")),
        "{stderr}"
    );
    assert!(
        stderr.contains("resume with: msgbatch resume night"),
        "{stderr}"
    );
    // Every request that left was answered and committed before the process ended.
    let sent = mock.requests();
    assert!(sent < JOBS, "{sent}");
    assert_eq!(committed(&ws.db()).await as u64, sent);
    let status = ws.run(&["status", "night"]).await;
    assert!(
        text(&status).0.contains(&format!("stopped by SIG{name}")),
        "{:?}",
        text(&status)
    );

    let output = ws.run(&["resume", "night"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(
        mock.requests(),
        JOBS,
        "each job bought once over both sessions"
    );
    assert_eq!(committed(&ws.db()).await as u64, JOBS);
}

#[tokio::test]
async fn sigterm_stops_a_run_as_ctrl_c_does_and_nothing_is_bought_twice() {
    a_signal_stops_the_run_as_ctrl_c_does("TERM", 143).await;
}

#[tokio::test]
async fn sighup_stops_a_run_as_ctrl_c_does_and_nothing_is_bought_twice() {
    a_signal_stops_the_run_as_ctrl_c_does("HUP", 129).await;
}

#[tokio::test]
async fn a_store_reached_through_a_symlink_is_the_same_store_and_its_lock_holds() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        latency: Duration::from_millis(200),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 40);
    let mut child = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "2",
                "--name",
                "live",
            ],
        )
        .spawn()
        .unwrap();
    wait_for_results(&ws.db(), 2).await;
    // Another spelling of the same file: a symlink in another directory.
    let elsewhere = ws.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let link = elsewhere.join("link.db");
    std::os::unix::fs::symlink(ws.db(), &link).unwrap();
    let output = run_with_db(&ws, &link, &["resume", "live"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("in use by another msgbatch run"),
        "{stderr}"
    );
    // The directory holding the store, reached through a symlink, too.
    let dir_link = ws.path("dirlink");
    std::os::unix::fs::symlink(ws.dir.path(), &dir_link).unwrap();
    let through_dir = dir_link.join("runs.db");
    let output = run_with_db(
        &ws,
        &through_dir,
        &["run", file.to_str().unwrap(), "--mock"],
    )
    .await;
    assert_eq!(code(&output), 2, "{:?}", text(&output));
    assert!(
        text(&output).1.contains("in use by another msgbatch run"),
        "{:?}",
        text(&output)
    );
    // A second name of the same file (a hard link): SQLite would keep a log per name.
    let hard = ws.path("hard.db");
    std::fs::hard_link(ws.db(), &hard).unwrap();
    let output = run_with_db(&ws, &hard, &["resume", "live"]).await;
    assert_eq!(code(&output), 2, "{:?}", text(&output));
    assert!(
        text(&output).1.contains("hard links"),
        "{:?}",
        text(&output)
    );
    std::fs::remove_file(&hard).unwrap();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let prompts: Vec<String> = mock.log().iter().filter_map(|l| l.prompt()).collect();
    let distinct: std::collections::BTreeSet<&String> = prompts.iter().collect();
    assert_eq!(distinct.len(), prompts.len(), "no job was sent twice");
}

#[tokio::test]
async fn the_store_file_alone_holds_every_committed_run() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = ws.jobs("jobs.jsonl", 12);
    // Another process has the store open meanwhile (a `status` watcher, say): the run's
    // connections are then not the last, and closing them alone checkpoints nothing.
    msgbatch::store::Store::open(&ws.db())
        .await
        .unwrap()
        .close()
        .await;
    let reader = open(&ws.db(), true).await;
    let mut held = reader.acquire().await.unwrap();
    sqlx::query("SELECT COUNT(*) FROM runs")
        .fetch_one(&mut *held)
        .await
        .unwrap();
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--name", "small"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let wal = ws.path("runs.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the write-ahead log was checkpointed into the store"
    );

    // The `.db` copied alone, as a user copies "the database".
    let copy = Workspace::new();
    std::fs::copy(ws.db(), copy.db()).unwrap();
    let output = copy.run(&["status"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("small"), "{stdout}");
    let report = copy.report_json("small").await;
    assert_eq!(report["totals"][0]["jobs"]["succeeded"], 12, "{report}");
    drop(held);
    reader.close().await;
}

/// A gateway of the test's own on `127.0.0.1:0` that answers every Messages request with a
/// well-formed answer carrying `usage`, whatever it asked.
async fn gateway_answering(usage: serde_json::Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let usage = usage.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0_u8; 8192];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                let body = serde_json::json!({
                    "id": "msg_hostile", "type": "message", "role": "assistant",
                    "model": "claude-opus-4-1-20250805",
                    "content": [{"type": "text", "text": "fine"}],
                    "stop_reason": "end_turn", "stop_sequence": null, "usage": usage
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// `count` jobs to Opus 4.1 ($15 per million input tokens, one tier).
fn opus_jobs(ws: &Workspace, count: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..count)
        .map(|i| {
            serde_json::json!({"custom_id": format!("job-{i}"), "params": {
                "model": "claude-opus-4-1-20250805", "max_tokens": 100,
                "messages": [{"role": "user", "content": format!("prompt-{i}")}]}})
            .to_string()
        })
        .collect();
    ws.write("opus.jsonl", &(lines.join("\n") + "\n"))
}

#[tokio::test]
async fn a_usage_whose_cost_cannot_be_counted_is_refused_not_priced() {
    // 2^52 input tokens pass a bound of 2^53 on usage, but at $15 per million they cost
    // $67 billion: more than a pico-USD count holds.
    let ws = Workspace::new();
    let url = gateway_answering(serde_json::json!({
        "input_tokens": 1_u64 << 52, "output_tokens": 1
    }))
    .await;
    let file = opus_jobs(&ws, 2);
    let mut command = ws.command(&[
        "run",
        file.to_str().unwrap(),
        "--name",
        "hostile",
        "--base-url",
        &url,
        "--api-key-env",
        KEY_ENV,
        "--max-attempts",
        "1",
    ]);
    let output = command.output().await.unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 1, "the jobs failed: {stdout}\n{stderr}");
    assert!(stdout.contains("2 failed"), "{stdout}");
    assert!(stdout.contains("cost    $0.000000"), "{stdout}");
    let pool = ws.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 0);
    let errors: Vec<String> = sqlx::query_scalar("SELECT error FROM jobs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("impossible usage") || e.contains("the answer's usage is refused")),
        "{errors:?}"
    );
    let report = ws.report_json("hostile").await;
    assert_eq!(report["totals"][0]["cost"]["total_pico_usd"], 0, "{report}");
    assert_eq!(report["totals"][0]["jobs"]["failed"], 2, "{report}");
}

#[tokio::test]
async fn a_run_whose_sums_overflow_breaks_neither_status_nor_the_other_runs() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--name", "fine"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let fine = ws.report_json("fine").await["totals"][0]["cost"]["total_pico_usd"].clone();

    // No answer a gateway sends can hold such usage any more (the client refuses it), but a
    // store written by an older version, or by hand, can: each result's cost fits ($9.0M),
    // their sum does not.
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                ws.jobs("more.jsonl", 2).to_str().unwrap(),
                "--name",
                "huge",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", ws.db().display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE results SET cost_pico_usd = 9000000000000000000, input_tokens = 600000000000
         WHERE job IN (SELECT j.id FROM jobs j JOIN runs r ON r.id = j.run_id WHERE r.name = 'huge')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let output = ws.run(&["status"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("fine") && l.contains("completed") && l.contains(" 3 ")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("huge") && l.contains("beyond what msgbatch can add up")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("$9223372"),
        "no saturated figure: {stdout}"
    );
    assert_eq!(
        ws.report_json("fine").await["totals"][0]["cost"]["total_pico_usd"],
        fine
    );
    let output = ws
        .run(&["report", "huge", "--format", "json", "--out", "-"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("beyond what msgbatch can add up") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
