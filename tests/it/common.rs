//! Shared fixtures: a temporary workspace, the binary, the mock, and database reads.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;

use msgbatch::mock::{MockConfig, MockServer};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row, SqlitePool};

/// The key the tests send; it must never be found anywhere msgbatch writes.
pub const TEST_KEY: &str = "sk-ant-test-0123456789-SECRET-key-value";
pub const KEY_ENV: &str = "MSGBATCH_IT_KEY";

pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// A `postgres://` store for the commands instead of the workspace's SQLite file.
    pub database: Option<String>,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            database: None,
        }
    }

    /// A workspace whose commands use the PostgreSQL database at `url`.
    pub fn on_postgres(url: &str) -> Self {
        Self {
            database: Some(url.to_owned()),
            ..Self::new()
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("runs.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("a writable temp dir");
        path
    }

    /// Writes `count` simple jobs whose prompts are `prompt-<i>`.
    pub fn jobs(&self, name: &str, count: usize) -> PathBuf {
        let lines: Vec<String> = (0..count)
            .map(|i| {
                json!({"custom_id": format!("job-{i}"), "params": {
                    "model": "claude-haiku-4-5", "max_tokens": 200,
                    "messages": [{"role": "user", "content": format!("prompt-{i}")}]}})
                .to_string()
            })
            .collect();
        self.write(name, &(lines.join("\n") + "\n"))
    }

    /// A command for the real binary on this workspace's database, with the test key set.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgbatch"));
        command.arg("--db");
        match &self.database {
            Some(url) => command.arg(url),
            None => command.arg(self.db()),
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .env(KEY_ENV, TEST_KEY)
            .env("CI", "1")
            .env_remove("MSGBATCH_DB")
            .env_remove("ANTHROPIC_API_KEY")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// A command for the real binary sending to `mock` with the test key.
    pub fn command_on(&self, mock: &MockServer, args: &[&str]) -> tokio::process::Command {
        let mut command = self.command(args);
        command.args(gateway_args(mock));
        command
    }

    /// Runs the binary against `mock` to completion.
    pub async fn run_on(&self, mock: &MockServer, args: &[&str]) -> Output {
        self.command_on(mock, args)
            .output()
            .await
            .expect("the binary runs")
    }

    /// Runs the binary to completion.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("the binary runs")
    }

    /// `msgbatch report RUN --format json` on this workspace's database.
    pub async fn report_json(&self, run: &str) -> Value {
        let output = self
            .run(&["report", run, "--format", "json", "--out", "-"])
            .await;
        assert_eq!(code(&output), 0, "{:?}", text(&output));
        serde_json::from_slice(&output.stdout).expect("the report is JSON")
    }

    /// Opens the run database read-only for assertions.
    pub async fn pool(&self) -> SqlitePool {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", self.db().display()))
            .expect("a valid path")
            .read_only(true);
        SqlitePool::connect_with(options)
            .await
            .expect("the database opens")
    }
}

/// Arguments that point a run at `mock` with the test key.
pub fn gateway_args(mock: &MockServer) -> Vec<String> {
    vec![
        "--base-url".into(),
        mock.base_url(),
        "--api-key-env".into(),
        KEY_ENV.into(),
        "--retry-base-delay".into(),
        "1ms".into(),
        "--retry-max-delay".into(),
        "5ms".into(),
    ]
}

pub async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(MockConfig {
        record: true,
        ..config
    })
    .await
    .expect("the mock starts")
}

pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// (job id, state, attempts) of every job, in input order.
pub async fn job_states(pool: &SqlitePool) -> Vec<(String, String, i64)> {
    sqlx::query("SELECT job_id, state, attempts FROM jobs ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("jobs are readable")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// (job id, answer text) for every stored result.
pub async fn answers(pool: &SqlitePool) -> Vec<(String, String)> {
    sqlx::query(
        "SELECT j.job_id, b.body FROM responses b JOIN jobs j ON j.id = b.job ORDER BY j.id",
    )
    .fetch_all(pool)
    .await
    .expect("results are readable")
    .iter()
    .map(|r| {
        let body: Value = serde_json::from_str(r.get::<&str, _>(1)).expect("stored JSON");
        (
            r.get(0),
            body["content"][0]["text"].as_str().unwrap_or("").to_owned(),
        )
    })
    .collect()
}

pub async fn count(pool: &SqlitePool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("a count")
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// A command's arguments with a poll interval short enough for a test.
pub fn polled<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--poll-interval", "10ms"]);
    all
}
