//! The store on a real PostgreSQL server: every command as on SQLite, and the same figures
//! from the same jobs. The server is the one `MSGBATCH_TEST_POSTGRES` names (a URL to an
//! existing database, such as `postgres://postgres@127.0.0.1:5432/test`); each test makes a
//! database of its own there and drops it after. Without the variable the tests are skipped
//! with one line, unless `MSGBATCH_REQUIRE_POSTGRES` is set (as `.ci/run` sets it), which
//! fails them.

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{LazyLock, Once};

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

/// The server's URL, or `None` (said once) when the tests are to be skipped.
fn server() -> Option<&'static str> {
    static URL: LazyLock<Option<String>> =
        LazyLock::new(|| std::env::var("MSGBATCH_TEST_POSTGRES").ok());
    static SKIPPED: Once = Once::new();
    if URL.is_none() {
        assert!(
            std::env::var_os("MSGBATCH_REQUIRE_POSTGRES").is_none(),
            "MSGBATCH_REQUIRE_POSTGRES is set but MSGBATCH_TEST_POSTGRES is not"
        );
        // Written to the process's stderr, past the test harness's capture, so that it shows.
        SKIPPED.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the PostgreSQL tests need MSGBATCH_TEST_POSTGRES=postgres://user@host/db"
            );
        });
    }
    URL.as_deref()
}

impl TestDb {
    pub async fn create() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin = server()?.to_owned();
        let name = format!(
            "msgbatch_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("the test PostgreSQL server accepts connections");
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
        Some(Self {
            url: url.to_string(),
            name,
            admin,
        })
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("the test database opens")
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
    report["groups"]
        .as_array()
        .expect("groups")
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
async fn every_command_works_on_postgres_and_reports_what_sqlite_reports() {
    let Some(db) = TestDb::create().await else {
        return;
    };
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
    assert_eq!(postgres["totals"]["cost"], sqlite["totals"]["cost"]);
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
async fn a_password_in_the_database_url_is_never_shown() {
    let Some(db) = TestDb::create().await else {
        return;
    };
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
