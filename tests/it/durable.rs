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

#[tokio::test]
async fn a_full_store_stops_sending_at_once_and_resume_buys_again_only_what_was_in_flight() {
    const JOBS: usize = 600;
    const CONCURRENCY: u64 = 4;
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
        latency: Duration::from_millis(20),
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
        bought <= recorded as u64 + 2 * CONCURRENCY,
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
        total <= JOBS as u64 + 2 * CONCURRENCY,
        "{total} answers bought over run and resume for {JOBS} jobs"
    );
}
