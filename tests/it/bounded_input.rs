//! Input that would take unbounded memory or time, or that breaks a store halfway: a record
//! past the size bound (plain, in a CSV row, from a decompression bomb or an endless stream),
//! an endless template, job files that are streams, directories or loops; and the errors for
//! `--db`, names, headers, tags and NUL characters, which must say the real cause before any
//! run is made.

use std::io::Write as _;
use std::process::Output;

use msgbatch::mock::MockConfig;
use serde_json::{Value, json};

use crate::common::*;
use crate::postgres::TestDb;

/// Past the bound: the 33 MB a record may take, and a little more.
const PAST_THE_BOUND: usize = 34 << 20;

fn job(id: &str, prompt: &str) -> String {
    json!({"custom_id": id, "params": {"model": "claude-haiku-4-5", "max_tokens": 20,
        "messages": [{"role": "user", "content": prompt}]}})
    .to_string()
}

/// (line, error) of the rejected jobs of the workspace's run.
async fn rejected(ws: &Workspace) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT line, error FROM jobs WHERE state = 'rejected' ORDER BY line")
        .fetch_all(&ws.pool().await)
        .await
        .expect("jobs are readable")
}

/// The standard error of a command refused before it did anything (exit 2), which must say
/// `why`.
fn refused(output: &Output, why: &str) -> String {
    let (_, stderr) = text(output);
    assert_eq!(code(output), 2, "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
    stderr
}

async fn runs(ws: &Workspace) -> i64 {
    if !ws.db().exists() {
        return 0;
    }
    count(&ws.pool().await, "SELECT COUNT(*) FROM runs").await
}

#[tokio::test]
async fn a_jsonl_line_past_the_bound_is_refused_by_its_line_or_skipped() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    ws.write(
        "big.jsonl",
        &[
            job("a", "one"),
            job("big", &"x".repeat(PAST_THE_BOUND)),
            job("b", "two"),
            String::new(),
        ]
        .join("\n"),
    );

    let output = ws.run_on(&mock, &["run", "big.jsonl"]).await;
    refused(&output, "big.jsonl: line 2: record larger than 33 MB");
    assert_eq!((mock.requests(), runs(&ws).await), (0, 0));

    let output = ws
        .run_on(&mock, &["run", "big.jsonl", "--skip-invalid"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stdout.contains("2 succeeded, 0 failed, 1 rejected"),
        "{stdout}"
    );
    assert_eq!(
        rejected(&ws).await,
        [(2, "record larger than 33 MB".to_owned())]
    );
}

#[tokio::test]
async fn a_csv_row_past_the_bound_is_skipped_to_its_end_and_the_lines_go_on() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // The long field is quoted and spans lines: the rows after it keep their own lines.
    let mut table = String::from("id,prompt,model,max_tokens\na,one,claude-haiku-4-5,20\nbig,\"");
    let chunk = "y".repeat(1 << 20);
    for _ in 0..(PAST_THE_BOUND >> 20) {
        table.push_str(&chunk);
        table.push('\n');
    }
    table.push_str(
        "\",claude-haiku-4-5,20\nc,three,claude-haiku-4-5,lots\nd,four,claude-haiku-4-5,20\n",
    );
    ws.write("big.csv", &table);
    let after = 4 + i64::try_from(PAST_THE_BOUND >> 20).expect("a small count");
    drop(table);

    let output = ws.run_on(&mock, &["run", "big.csv"]).await;
    refused(&output, "big.csv: line 3: record larger than 33 MB");
    assert_eq!(runs(&ws).await, 0);

    let output = ws
        .run_on(&mock, &["run", "big.csv", "--skip-invalid"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stdout.contains("2 succeeded, 0 failed, 2 rejected"),
        "{stdout}"
    );
    let found = rejected(&ws).await;
    assert_eq!(found[0], (3, "record larger than 33 MB".to_owned()));
    assert_eq!(found[1].0, after, "{found:?}");
    assert!(found[1].1.contains("max_tokens"), "{found:?}");
}

#[tokio::test]
async fn a_gzip_bomb_and_an_endless_stream_stop_at_the_bound() {
    let ws = Workspace::new();
    // 64 MB of one line, a few dozen KB compressed, written as a stream.
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(ws.path("bomb.jsonl.gz")).expect("a temp file"),
        flate2::Compression::best(),
    );
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&zeros).expect("written");
    }
    encoder.finish().expect("written");
    assert!(std::fs::metadata(ws.path("bomb.jsonl.gz")).unwrap().len() < 1 << 20);

    let output = ws.run(&["run", "bomb.jsonl.gz", "--mock"]).await;
    refused(&output, "bomb.jsonl.gz: line 1: record larger than 33 MB");
    assert_eq!(runs(&ws).await, 0);

    if std::path::Path::new("/dev/zero").exists() {
        let output = ws.run(&["run", "/dev/zero", "--mock"]).await;
        refused(&output, "/dev/zero: line 1: record larger than 33 MB");
        assert_eq!(runs(&ws).await, 0);
    }
}

#[tokio::test]
async fn an_endless_template_and_one_that_multiplies_a_column_are_refused() {
    let ws = Workspace::new();
    ws.write(
        "rows.csv",
        &format!("id,text\na,{}\nb,short\n", "z".repeat(300)),
    );
    if std::path::Path::new("/dev/zero").exists() {
        let output = ws
            .run(&[
                "run",
                "rows.csv",
                "--prompt-template",
                "/dev/zero",
                "--mock",
            ])
            .await;
        refused(
            &output,
            "failed to read the prompt template /dev/zero: larger than 1 MB",
        );
    }
    // 120,000 uses of a 300-byte column would make a 36 MB user turn.
    ws.write("many.txt", &"{{text}}".repeat(120_000));
    let output = ws
        .run(&[
            "run",
            "rows.csv",
            "--prompt-template",
            "many.txt",
            "--model",
            "claude-haiku-4-5",
            "--max-tokens",
            "20",
            "--mock",
        ])
        .await;
    refused(
        &output,
        "rows.csv:2: `prompt` the prompt template makes a user turn larger than 32 MB",
    );
}

#[tokio::test]
async fn a_fifo_is_read_once_and_a_directory_or_a_loop_is_named() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    ws.write(
        "jobs.jsonl",
        &[job("a", "one"), job("b", "two"), String::new()].join("\n"),
    );
    let fifo = ws.path("jobs.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // A writer that blocks until msgbatch opens the FIFO; killed if the test ends first.
    let mut writer = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("cat jobs.jsonl > jobs.fifo")
        .current_dir(ws.dir.path())
        .kill_on_drop(true)
        .spawn()
        .expect("sh runs");
    let output = ws.run_on(&mock, &["run", "jobs.fifo"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stdout.contains("2 succeeded"), "{stdout}");
    assert!(writer.wait().await.expect("the writer ends").success());

    std::fs::create_dir(ws.path("folder")).expect("a directory");
    let output = ws.run_on(&mock, &["run", "folder"]).await;
    refused(&output, "cannot read job file folder: it is a directory");

    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("loop-b", ws.path("loop-a")).expect("a link");
        std::os::unix::fs::symlink("loop-a", ws.path("loop-b")).expect("a link");
        let output = ws.run_on(&mock, &["run", "loop-a"]).await;
        refused(
            &output,
            "cannot read job file loop-a: its symbolic links make a loop",
        );
    }
    assert_eq!(mock.requests(), 2);
}

#[tokio::test]
async fn database_locations_that_cannot_work_say_why_once() {
    let ws = Workspace::new();
    ws.write("jobs.jsonl", &job("a", "one"));
    let run = |db: String| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgbatch"));
        command
            .args(["--db", &db, "run", "jobs.jsonl", "--mock"])
            .current_dir(ws.dir.path())
            .env_remove("MSGBATCH_DB")
            .kill_on_drop(true);
        async move { command.output().await.expect("the binary runs") }
    };
    let output = run(String::new()).await;
    refused(&output, "the database path is empty");

    let output = run("no/such/dir/runs.db".to_owned()).await;
    refused(
        &output,
        "failed to open database no/such/dir/runs.db: the directory no/such/dir does not exist",
    );

    // A port that nothing listens on any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").port()
    };
    let output = run(format!("postgres://postgres@127.0.0.1:{port}/none")).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "the cause is printed once: {stderr}"
    );
}

#[tokio::test]
async fn bad_headers_keys_and_names_are_refused_before_a_run_is_made() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    ws.write("jobs.jsonl", &job("a", "one"));
    let output = ws
        .run_on(&mock, &["run", "jobs.jsonl", "--header", "x-team: a\u{1}b"])
        .await;
    refused(&output, "invalid header `x-team`");
    assert_eq!(runs(&ws).await, 0, "no run is left loading");

    let output = ws
        .command_on(&mock, &["run", "jobs.jsonl"])
        .env(KEY_ENV, "sk-ant-two\nlines")
        .output()
        .await
        .expect("the binary runs");
    let stderr = refused(&output, "the key has invalid characters");
    assert!(!stderr.contains("sk-ant-two"), "{stderr}");
    assert_eq!(runs(&ws).await, 0, "no run is left loading");

    for (name, why) in [
        ("", "a run name must not be empty"),
        ("3", "`3` is a number, and a number names a run by its id"),
        ("a\tb", "a run name must not hold control characters"),
    ] {
        let output = ws
            .run_on(&mock, &["run", "jobs.jsonl", "--name", name])
            .await;
        let (_, stderr) = text(&output);
        assert_eq!(code(&output), 2, "{stderr}");
        assert!(stderr.contains(why), "{name:?}: {stderr}");
    }
    assert_eq!((mock.requests(), runs(&ws).await), (0, 0));
}

/// Tag names with a quote and a backslash, and one nobody gave.
const TAGGED: &str = r#"{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"one"}]},"tags":{"a\"b":"quoted","a\\b":"slashed"}}
"#;

async fn tag_keys(ws: &Workspace, tag: &str) -> Vec<Value> {
    let by = format!("tag:{tag}");
    let output = ws
        .run(&["report", "1", "--by", &by, "--format", "json", "--out", "-"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report is JSON");
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["key"].clone())
        .collect()
}

async fn tags_group_by_any_name(ws: &Workspace) {
    ws.write("tagged.jsonl", TAGGED);
    let output = ws.run(&["run", "tagged.jsonl", "--mock"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(tag_keys(ws, "a\"b").await, [json!("quoted")]);
    assert_eq!(tag_keys(ws, "a\\b").await, [json!("slashed")]);
    assert_eq!(tag_keys(ws, "other").await, [json!("(no tag)")]);
}

#[tokio::test]
async fn tag_names_with_quotes_and_backslashes_group_by_their_tag() {
    tags_group_by_any_name(&Workspace::new()).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn tag_names_with_quotes_and_backslashes_group_the_same_on_postgres() {
    let db = TestDb::create().await;
    tags_group_by_any_name(&Workspace::on_postgres(&db.url)).await;
}

/// A NUL in a prompt and in a tag, then a good record.
const WITH_NUL: &str = r#"{"custom_id":"a","params":{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"one\u0000two"}]}}
{"custom_id":"b","params":{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"two"}]},"tags":{"t":"x\u0000"}}
{"custom_id":"c","params":{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"three"}]}}
"#;

async fn nul_is_refused_at_validation(ws: &Workspace) {
    ws.write("nul.jsonl", WITH_NUL);
    let output = ws.run(&["run", "nul.jsonl", "--mock"]).await;
    let stderr = refused(
        &output,
        "nul.jsonl:1: `messages[0].content` contains a NUL character",
    );
    assert!(
        stderr.contains("nul.jsonl:2: `tags.t` contains a NUL character"),
        "{stderr}"
    );
    let output = ws
        .run(&["run", "nul.jsonl", "--mock", "--skip-invalid"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stdout.contains("1 succeeded, 0 failed, 2 rejected"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_nul_in_a_prompt_or_tag_is_refused_at_validation() {
    nul_is_refused_at_validation(&Workspace::new()).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_nul_in_a_prompt_or_tag_is_refused_the_same_on_postgres() {
    let db = TestDb::create().await;
    nul_is_refused_at_validation(&Workspace::on_postgres(&db.url)).await;
}

#[tokio::test]
async fn confirm_above_refuses_a_stream_it_would_use_up() {
    use tokio::io::AsyncWriteExt as _;
    let ws = Workspace::new();
    let mut child = ws
        .command(&["run", "-", "--mock", "--confirm-above", "100"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut stdin = child.stdin.take().expect("a pipe");
    // The binary may refuse before reading: a write to a closed pipe is no failure here.
    let _ = stdin.write_all(job("a", "one").as_bytes()).await;
    drop(stdin);
    let output = child.wait_with_output().await.expect("the binary ends");
    refused(
        &output,
        "--confirm-above reads - before sending, and a stream can be read only once",
    );
    assert_eq!(runs(&ws).await, 0);
}

#[tokio::test]
async fn a_run_an_older_version_named_with_a_number_is_still_found_by_it() {
    let ws = Workspace::new();
    ws.write("jobs.jsonl", &job("a", "one"));
    let output = ws
        .run(&["run", "jobs.jsonl", "--mock", "--name", "first"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    // As an older msgbatch could name it.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", ws.db().display()))
        .await
        .expect("the database opens");
    sqlx::query("UPDATE runs SET name = '7'")
        .execute(&pool)
        .await
        .expect("renamed");
    pool.close().await;
    let output = ws.run(&["status", "7"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    let row: Vec<&str> = stdout
        .lines()
        .find(|line| line.contains("completed"))
        .map(|line| line.split_whitespace().take(3).collect())
        .unwrap_or_default();
    assert_eq!(row, ["1", "7", "completed"], "{stdout}");
}

/// The mock is a gateway others can send to (`msgbatch mock`): a body past the API's 32 MB
/// is answered 413 `request_too_large`, as the API answers it, and is not kept.
#[tokio::test]
async fn the_mock_answers_a_body_past_the_api_limit_with_413() {
    let mock = mock(MockConfig::default()).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let send = |prompt: String| {
        let body = json!({"model": "claude-haiku-4-5", "max_tokens": 20,
            "messages": [{"role": "user", "content": prompt}]});
        http.post(format!("{}/v1/messages", mock.base_url()))
            .header("x-api-key", "k")
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let small = send("w".repeat(1 << 20)).await.unwrap();
    assert_eq!(small.status().as_u16(), 200);
    let large = send("w".repeat(PAST_THE_BOUND)).await.unwrap();
    assert_eq!(large.status().as_u16(), 413);
    let error: Value = serde_json::from_slice(&large.bytes().await.unwrap()).unwrap();
    assert_eq!(error["error"]["type"], "request_too_large", "{error}");
}
