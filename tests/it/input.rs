//! Bad input: every bad line reported with file, line and field; nothing sent unless asked.

use msgbatch::mock::MockConfig;
use serde_json::json;

use crate::common::*;

fn bad_file() -> String {
    [
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "fine"}]}).to_string(),
        "{\"model\": \"m\", oops".to_owned(),
        json!({"model": "m", "max_tokens": 5, "messages": []}).to_string(),
        json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}).to_string(),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}).to_string(),
        json!({"custom_id": "twice", "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}]}}).to_string(),
        json!({"custom_id": "twice", "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "b"}]}}).to_string(),
        json!({"model": "m", "max_tokens": 5, "temperature": 3, "messages": [{"role": "user", "content": "x"}]}).to_string(),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}).to_string(),
    ]
    .join("\n")
}

#[tokio::test]
async fn a_malformed_file_is_refused_with_every_bad_line_and_nothing_sent() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = ws.write("bad.jsonl", &bad_file());
    let output = ws.run_on(&mock, &["run", "bad.jsonl"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    let expected = [
        "bad.jsonl:2: invalid JSON: key must be a string at line 1 column 16",
        "bad.jsonl:3: `messages` is empty",
        "bad.jsonl:4: `max_tokens` must be an integer of at least 1 (got 0)",
        "bad.jsonl:5: `messages[0].role` `system` is not a message role: the system prompt goes in the top-level `system` field of the request (or --system)",
        "bad.jsonl:7: `custom_id` duplicate id `twice` (first used on line 6)",
        "bad.jsonl:8: `temperature` must be a number from 0 to 1 (got 3)",
        "bad.jsonl:9: `messages[0].content[0].text` text content blocks must be non-empty",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(&lines[..expected.len()], expected, "{stderr}");
    assert!(
        stderr.contains("error: 7 bad records; nothing was sent"),
        "{stderr}"
    );
    assert_eq!(mock.requests(), 0);
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM runs").await,
        0,
        "a refused run leaves no trace"
    );
    drop(file);
}

#[tokio::test]
async fn skip_invalid_records_bad_lines_as_rejected_and_runs_the_rest() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        models: vec!["m".to_owned()],
        ..MockConfig::default()
    })
    .await;
    ws.write("bad.jsonl", &bad_file());
    let output = ws
        .run_on(&mock, &["run", "bad.jsonl", "--skip-invalid"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stdout.contains("2 succeeded, 0 failed, 7 rejected"),
        "{stdout}"
    );
    assert_eq!(mock.requests(), 2);
    let pool = ws.pool().await;
    let rejected: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT job_id, line, error FROM jobs WHERE state = 'rejected' ORDER BY line",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rejected.len(), 7);
    assert_eq!(
        rejected[4],
        (
            "twice@line-7".into(),
            7,
            "`custom_id` duplicate id `twice` (first used on line 6)".into()
        )
    );
}

#[tokio::test]
async fn csv_rows_with_wrong_column_counts_are_named_by_line() {
    let ws = Workspace::new();
    ws.write(
        "p.csv",
        "id,prompt,max_tokens\na,hello,5\nb,short row\nc,fine,x\n",
    );
    let output = ws
        .run(&["run", "p.csv", "--mock", "--model", "claude-haiku-4-5"])
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2);
    assert!(
        stderr.contains("p.csv:3: row has 2 columns; the header has 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p.csv:4: `max_tokens` must be an integer of at least 1 (got `x`)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn unreadable_inputs_and_databases_are_one_sentence() {
    let ws = Workspace::new();
    let output = ws.run(&["run", "missing.jsonl", "--mock"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2);
    assert_eq!(
        stderr.trim(),
        "error: cannot read job file missing.jsonl: no such file"
    );

    let output = ws.run(&["resume", "nope"]).await;
    assert!(
        text(&output).1.trim().starts_with("error: no database at"),
        "{:?}",
        text(&output)
    );

    // A database another process is sending from.
    let file = ws.jobs("jobs.jsonl", 1);
    let _held = msgbatch::store::DbLock::acquire(&ws.db()).unwrap();
    let output = ws.run(&["run", file.to_str().unwrap(), "--mock"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2);
    assert!(
        stderr.contains("is in use by another msgbatch run"),
        "{stderr}"
    );
}
