//! The store on a real PostgreSQL server: every command as on SQLite, and the same figures
//! from the same jobs. The server is the one `MSGBATCH_TEST_POSTGRES` names (a URL to an
//! existing database), by default `postgres://postgres:postgres@127.0.0.1:5432/test`; each test
//! makes a database of its own there and drops it after. The tests are marked ignored, so that
//! `cargo test` lists them as such where no server runs; `cargo test -- --include-ignored`
//! runs them, and then a server that cannot be reached fails them, never skips them.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use msgbatch::mock::MockConfig;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

use crate::common::{Workspace, code, mock, text};

/// A database of one test's own on the test server, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    name: String,
    admin: String,
}

/// The server the tests run on when `MSGBATCH_TEST_POSTGRES` does not name one.
pub const DEFAULT_SERVER: &str = "postgres://postgres:postgres@127.0.0.1:5432/test";

/// The server's URL: `MSGBATCH_TEST_POSTGRES`, or the local default.
fn server() -> &'static str {
    static URL: LazyLock<String> = LazyLock::new(|| {
        std::env::var("MSGBATCH_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
    });
    &URL
}

impl TestDb {
    /// Makes the database, or fails the test with what to provide: a test that needs the
    /// server and runs without one has checked nothing, so it must not pass.
    pub async fn create() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = server().to_owned();
        let name = format!(
            "msgbatch_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "this test needs PostgreSQL, and the server at {} cannot be reached ({e}): \
                 start one on 127.0.0.1:5432 (trust auth, database `test`) or set \
                 MSGBATCH_TEST_POSTGRES=postgres://user@host/db",
                without_password(&admin)
            )
        });
        for statement in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .expect("a test database can be made");
        }
        let mut url = reqwest::Url::parse(&admin).expect("MSGBATCH_TEST_POSTGRES is a URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            name,
            admin,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("the test database opens")
    }
}

/// `url` with any password replaced, for messages.
fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(MSGBATCH_TEST_POSTGRES, not a URL)".to_owned(),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// What a report says of each model that does not depend on timing.
fn figures(report: &Value) -> Vec<Value> {
    rows(&report["groups"])
}

/// What a report says of each of its runs in all (`totals`), as [`figures`] of each model.
fn totals(report: &Value) -> Vec<Value> {
    rows(&report["totals"])
}

fn rows(groups: &Value) -> Vec<Value> {
    groups
        .as_array()
        .expect("an array of groups")
        .iter()
        .map(|g| {
            serde_json::json!({
                "key": g["key"], "jobs": g["jobs"], "tokens": g["tokens"],
                "cost": g["cost"]["total_pico_usd"], "stored": g["cost"]["stored_pico_usd"],
                "stop_reasons": g["stop_reasons"], "attempts": g["attempts_per_job"],
                "graded": g["grading"]["graded"], "passed": g["grading"]["passed"],
            })
        })
        .collect()
}

const JOBS: &str = r#"{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":200,"messages":[{"role":"user","content":"Say hello"}]},"tags":{"suite":"greet"},"expect":{"contains":"mock"}}
{"custom_id":"b","params":{"model":"claude-sonnet-4-6","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"Write a long story"}]}]},"tags":{"suite":"story"},"expect":{"stop_reason":"end_turn"}}
{"custom_id":"c","params":{"model":"claude-haiku-4-5","max_tokens":300,"messages":[{"role":"user","content":"Count to ten"}]},"tags":{"suite":"greet"}}
{"custom_id":"d","params":{"model":"claude-sonnet-4-6","max_tokens":300,"messages":[{"role":"user","content":"Name three rivers"}]}}
not json at all
"#;

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn every_command_works_on_postgres_and_reports_what_sqlite_reports() {
    let db = TestDb::create().await;
    let mock = mock(MockConfig::default()).await;
    let on_sqlite = Workspace::new();
    let on_postgres = Workspace::on_postgres(&db.url);
    for ws in [&on_sqlite, &on_postgres] {
        ws.write("jobs.jsonl", JOBS);
        let out = ws
            .run_on(
                &mock,
                &["run", "jobs.jsonl", "--name", "night", "--skip-invalid"],
            )
            .await;
        assert_eq!(code(&out), 0, "{:?}", text(&out));
    }
    let sqlite = on_sqlite.report_json("night").await;
    let postgres = on_postgres.report_json("night").await;
    assert_eq!(figures(&postgres), figures(&sqlite));
    let summed = totals(&postgres);
    assert_eq!(summed, totals(&sqlite));
    assert_eq!(summed.len(), 1, "{summed:?}");
    assert!(
        summed[0]["cost"].as_u64().is_some_and(|cost| cost > 0),
        "{summed:?}"
    );
    let by_tag = |ws: &Workspace| {
        let ws = ws.command(&["report", "night", "--by", "tag:suite", "--format", "json"]);
        async move {
            let mut ws = ws;
            let out = ws.args(["--out", "-"]).output().await.unwrap();
            assert_eq!(code(&out), 0, "{:?}", text(&out));
            figures(&serde_json::from_slice(&out.stdout).unwrap())
        }
    };
    let tagged = by_tag(&on_postgres).await;
    assert_eq!(tagged, by_tag(&on_sqlite).await);
    assert!(tagged.iter().any(|g| g["key"] == "greet"), "{tagged:?}");

    // status, export, grade, diff and a second run under the same name all behave alike.
    let status = on_postgres.run(&["status", "night"]).await;
    assert_eq!(code(&status), 0, "{:?}", text(&status));
    assert!(text(&status).0.contains("completed"), "{:?}", text(&status));
    for ws in [&on_sqlite, &on_postgres] {
        let out = ws.run(&["export", "night", "-o", "out.jsonl"]).await;
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let out = ws.run(&["grade", "night"]).await;
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let out = ws.run(&["diff", "night"]).await;
        assert_eq!(code(&out), 0, "{:?}", text(&out));
    }
    let exported = |ws: &Workspace| {
        let lines: Vec<Value> = std::fs::read_to_string(ws.path("out.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
            .iter()
            .map(|l| {
                (
                    l["custom_id"].clone(),
                    l["result"]["type"].clone(),
                    l["model"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(exported(&on_postgres), exported(&on_sqlite));
    assert_eq!(
        exported(&on_postgres).len(),
        5,
        "the bad line is a rejected job"
    );
    let again = on_postgres
        .run_on(&mock, &["run", "jobs.jsonl", "--name", "night"])
        .await;
    assert_ne!(code(&again), 0, "a run name is taken once");

    // Nothing of the key reaches the database.
    let mut conn = db.connect().await;
    let leaked: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE settings LIKE '%' || $1 || '%'")
            .bind(crate::common::TEST_KEY)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_password_in_the_database_url_is_never_shown() {
    let db = TestDb::create().await;
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    url.set_port(Some(1)).unwrap();
    url.set_password(Some("hunter2-secret")).unwrap();
    let ws = Workspace::on_postgres(url.as_str());
    let out = ws.run(&["status"]).await;
    assert_ne!(code(&out), 0);
    let (stdout, stderr) = text(&out);
    assert!(stderr.contains("failed to open database"), "{stderr}");
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

/// A `msgbatch` process whose standard error is read line by line.
struct Worker {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
}

impl Worker {
    fn spawn(mut command: tokio::process::Command) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        Self {
            child,
            lines: tokio::io::BufReader::new(stderr).lines(),
        }
    }

    /// Reads standard error until a line contains `what`.
    async fn said(&mut self, what: &str) {
        let mut seen = Vec::new();
        while let Some(line) = self.lines.next_line().await.expect("stderr reads") {
            if line.contains(what) {
                return;
            }
            seen.push(line);
        }
        panic!("the process ended without saying {what:?}: {seen:?}");
    }

    /// Waits for the process to end; its exit code and the rest of what it said.
    async fn finish(mut self) -> (Option<i32>, String) {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = self.lines.next_line().await {
            rest.push(line);
        }
        let status = self.child.wait().await.expect("the process ends");
        (status.code(), rest.join("\n"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn four_workers_share_a_run_and_lose_nothing_when_one_is_killed() {
    let db = TestDb::create().await;
    // The gateway's bucket starts full, and the first worker sends from a full bucket of its
    // own until it counts the others and keeps only its share: the last few hundred jobs go at
    // 20 a second, shared by the workers.
    const JOBS: u64 = 1_300;
    const RPM: u32 = 1_200;
    let mock = mock(MockConfig {
        latency: std::time::Duration::from_millis(1),
        limits: msgbatch::mock::limits::Limits {
            rpm: Some(RPM),
            ..Default::default()
        },
        ..MockConfig::default()
    })
    .await;
    let ws = Workspace::on_postgres(&db.url);
    ws.jobs("jobs.jsonl", usize::try_from(JOBS).unwrap());
    let rpm = RPM.to_string();
    let worker_args = [
        "--concurrency",
        "4",
        "--lease",
        "3s",
        "--rpm",
        rpm.as_str(),
        "-q",
    ];
    let mut first = {
        let mut args = vec!["run", "jobs.jsonl", "--name", "night"];
        args.extend(worker_args);
        Worker::spawn(ws.command_on(&mock, &args))
    };
    first.said("sending to").await;
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut args = vec!["work", "night"];
        args.extend(worker_args);
        let mut worker = Worker::spawn(ws.command(&args));
        worker.said("worker for run").await;
        others.push(worker);
    }

    // Mid-run, under the limit, a joined worker dies without a word, jobs in its hand: the
    // first seen holding some as the last jobs are sent.
    let mut conn = db.connect().await;
    let in_hand = |pid: i64| {
        let url = db.url.clone();
        async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            sqlx::query_scalar::<_, i64>(
                "SELECT j.id FROM jobs j JOIN workers w ON w.id = j.lease_worker
                 WHERE w.pid = $1 AND j.state = 'pending' ORDER BY j.id",
            )
            .bind(pid)
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
    };
    let pids: Vec<i64> = others
        .iter()
        .map(|w| i64::from(w.child.id().expect("running")))
        .collect();
    let mut victim = None;
    'watch: for seen in JOBS - 150..JOBS {
        mock.wait_for_requests(seen).await;
        for (i, pid) in pids.iter().enumerate() {
            if !in_hand(*pid).await.is_empty() {
                victim = Some(i);
                break 'watch;
            }
        }
    }
    let victim = victim.expect("a joined worker held jobs before the last were sent");
    let pid = pids[victim];
    let mut victim = others.remove(victim);
    victim.child.start_kill().expect("kill -9");
    victim.child.wait().await.expect("the worker dies");
    let orphaned = in_hand(pid).await;
    assert!(!orphaned.is_empty(), "the killed worker held jobs");

    for worker in std::iter::once(first).chain(others) {
        let (code, said) = worker.finish().await;
        assert_eq!(code, Some(0), "{said}");
    }

    // Every job is recorded exactly once, the dead worker's jobs by the others.
    let (jobs, succeeded, results, distinct): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'),
                (SELECT COUNT(*) FROM results), (SELECT COUNT(DISTINCT job) FROM results)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let all = i64::try_from(JOBS).unwrap();
    assert_eq!((jobs, succeeded, results, distinct), (all, all, all, all));
    let finished: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = ANY($1) AND state = 'succeeded'")
            .bind(&orphaned)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(finished, i64::try_from(orphaned.len()).unwrap());
    let (status,): (String,) = sqlx::query_as("SELECT status FROM runs WHERE name = 'night'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "completed");
    let done_by_workers: i64 =
        sqlx::query_scalar("SELECT CAST(SUM(jobs_done) AS BIGINT) FROM workers")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        done_by_workers, all,
        "each outcome is counted by the worker that recorded it"
    );

    // Together they kept under the gateway's limit: it never had to refuse one of them.
    let refused = mock.log().iter().filter(|l| l.status == 429).count();
    assert_eq!(refused, 0, "the mock answered 429 {refused} times");
    // The dead worker shows as such.
    let status = ws.run(&["status", "night"]).await;
    let (out, _) = text(&status);
    assert!(out.contains("workers  0 alive of 4"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn workers_share_one_budget_and_spend_it_without_passing_it() {
    let db = TestDb::create().await;
    // Slow enough answers that both workers send most of what the budget buys.
    let mock = mock(MockConfig {
        latency: std::time::Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let ws = Workspace::on_postgres(&db.url);
    ws.jobs("jobs.jsonl", 300);
    // About half of what the 300 answers cost.
    let budget = 0.025;
    let worker_args = [
        "--concurrency",
        "2",
        "--lease",
        "4s",
        "--max-cost",
        "0.025",
        "-q",
    ];
    let mut first = {
        let mut args = vec!["run", "jobs.jsonl", "--name", "capped"];
        args.extend(worker_args);
        Worker::spawn(ws.command_on(&mock, &args))
    };
    first.said("sending to").await;
    let mut args = vec!["work", "capped"];
    args.extend(worker_args);
    let second = Worker::spawn(ws.command(&args));
    for worker in [first, second] {
        let (code, said) = worker.finish().await;
        assert!(matches!(code, Some(0 | 3)), "{code:?}: {said}");
    }
    let mut conn = db.connect().await;
    let (spent, pending, workers_spent): (i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(r.cost_pico_usd), 0) AS BIGINT),
                (SELECT COUNT(*) FROM jobs WHERE state = 'pending'),
                (SELECT CAST(SUM(spent_pico_usd) AS BIGINT) FROM workers)
         FROM results r",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let spent_usd = spent as f64 / 1e12;
    assert!(spent_usd <= budget, "spent {spent_usd} of {budget}");
    assert!(
        spent_usd >= budget * 0.6,
        "spent only {spent_usd} of {budget}"
    );
    assert!(pending > 0, "the budget stopped the run before its end");
    assert_eq!(
        workers_spent, spent,
        "each answer's cost counted by its worker"
    );
    let status = ws.run(&["status", "capped"]).await;
    assert!(
        text(&status).0.contains("budget_exhausted"),
        "{:?}",
        text(&status)
    );
}
