//! What a new user trips over on the first evening: a second batches run on the mock, an
//! estimate without a key, a run that ends in failures, files in another tool's shape, and a
//! model name with a typo.

use msgbatch::mock::MockConfig;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn two_batches_runs_on_the_mock_share_a_store_and_resume_goes_on() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 4);
    let file = file.to_str().unwrap();
    for name in ["first", "second"] {
        let output = ws
            .run(&[
                "run",
                file,
                "--mock",
                "--via",
                "batches",
                "--name",
                name,
                "--poll-interval",
                "10ms",
            ])
            .await;
        let (stdout, stderr) = text(&output);
        assert_eq!(code(&output), 0, "{name}: {stdout}{stderr}");
        assert!(stdout.contains("completed"), "{name}: {stdout}");
    }
    // A budget for about one job; resume sends the rest in new batches, from a new
    // in-process mock.
    let output = ws
        .run(&[
            "run",
            file,
            "--mock",
            "--via",
            "batches",
            "--name",
            "third",
            "--poll-interval",
            "10ms",
            "--max-cost",
            "0.0006",
        ])
        .await;
    assert_eq!(code(&output), 3, "{:?}", text(&output));
    let output = ws
        .run(&[
            "resume",
            "third",
            "--poll-interval",
            "10ms",
            "--max-cost",
            "1",
        ])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        12
    );
    let ids: Vec<String> = sqlx::query_scalar("SELECT remote_id FROM batches ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(ids.len() >= 4, "{ids:?}");
    for id in &ids {
        assert!(
            id.starts_with("msgbatch_") && id.len() == "msgbatch_".len() + 24,
            "shaped like the API's ids: {id}"
        );
    }
}

#[tokio::test]
async fn estimate_without_count_tokens_needs_no_key() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run(&["estimate", file.to_str().unwrap(), "--no-count-tokens"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert!(!stderr.contains("no API key"), "{stderr}");
    assert!(stdout.contains("claude-haiku-4-5"), "{stdout}");

    // A typo in the model is named with the model meant, as a run names it.
    let file = ws.write("typo.jsonl", &modelless("q-1"));
    let output = ws
        .run(&[
            "estimate",
            file.to_str().unwrap(),
            "--no-count-tokens",
            "--model",
            "claude-sonet-4-6",
        ])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("unknown model `claude-sonet-4-6`: did you mean `claude-sonnet-4-6`?"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_run_with_failures_ends_with_what_failed_and_the_command_that_sends_them_again() {
    use msgbatch::mock::Fault;
    let mock = mock(MockConfig {
        // The first job is answered, so that the 400s after it are about their own jobs.
        script_from: 1,
        script: vec![Fault::Status(400), Fault::Status(529), Fault::Status(400)],
        ..MockConfig::default()
    })
    .await;
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 6);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "night",
                "--concurrency",
                "1",
                "--max-attempts",
                "1",
            ],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("3 failed"),
        "the counts still come first: {stdout}"
    );
    assert!(
        stdout.contains("failed  2 × invalid_request_error (400), 1 × overloaded_error (529)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "e.g. job-1 (claude-haiku-4-5), job-2 (claude-haiku-4-5), job-3 (claude-haiku-4-5)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("msgbatch resume night --include-failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("msgbatch report night --format csv (writes reports/night-failures.csv)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_gateway_that_answers_every_job_with_the_same_400_stops_the_run_early() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 100);
    let output = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--mock",
            "--mock-reject",
            "400:no_db_connection",
            "--name",
            "wrong-key",
        ])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("the gateway answered 400 no_db_connection to the first 3 jobs"),
        "{stderr}"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        100,
        "every job stays pending for resume"
    );
    let sent = count(&pool, "SELECT COUNT(*) FROM attempts").await;
    assert!(sent < 40, "{sent} requests sent before stopping");
}

#[tokio::test]
async fn files_in_another_tools_shape_get_one_sentence_on_how_to_convert_them() {
    let ws = Workspace::new();
    let openai = json!({"custom_id": "q-1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}});
    let file = ws.write("openai.jsonl", &format!("{openai}\n"));
    let output = ws.run(&["run", file.to_str().unwrap(), "--mock"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("openai.jsonl:1: `body`"), "{stderr}");
    assert!(stderr.contains("OpenAI's batch shape"), "{stderr}");
    assert!(
        stderr.contains("jq -c '{custom_id, params: (.body | del(.model))}'"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("is missing"),
        "one sentence, not three: {stderr}"
    );

    let system = json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]});
    let file = ws.write("system.jsonl", &format!("{system}\n"));
    let output = ws.run(&["run", file.to_str().unwrap(), "--mock"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("the system prompt goes in the top-level `system` field"),
        "{stderr}"
    );

    let record = json!({"model": "claude-haiku-4-5", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}]});
    let one_line = format!("[{record}, {record}]\n");
    let pretty = serde_json::to_string_pretty(&json!([record, record])).unwrap();
    for (name, content) in [("array.json", one_line), ("pretty.jsonl", pretty)] {
        let file = ws.write(name, &content);
        let output = ws.run(&["run", file.to_str().unwrap(), "--mock"]).await;
        let (_, stderr) = text(&output);
        assert_eq!(code(&output), 2, "{stderr}");
        assert!(
            stderr.contains(&format!("{name}:1: this file is a JSON array"))
                && stderr.contains("one JSON object per line")
                && stderr.contains("jq -c '.[]'"),
            "{name}: {stderr}"
        );
    }
}

/// A record without a model, for `--model` to fill.
fn modelless(id: &str) -> String {
    json!({"custom_id": id, "params": {"max_tokens": 100,
        "messages": [{"role": "user", "content": format!("question {id}")}]}})
    .to_string()
}

#[tokio::test]
async fn a_typo_in_the_model_is_named_with_the_model_meant_and_the_mock_refuses_it() {
    let ws = Workspace::new();
    let lines: Vec<String> = (0..50).map(|i| modelless(&format!("q-{i}"))).collect();
    let file = ws.write("jobs.jsonl", &lines.join("\n"));
    let output = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--mock",
            "--model",
            "claude-sonet-4-6",
        ])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}{stderr}");
    let warned = stderr
        .find("warning: unknown model `claude-sonet-4-6`: did you mean `claude-sonnet-4-6`?")
        .unwrap_or_else(|| panic!("{stderr}"));
    let stopped = stderr
        .find("404 not_found_error to 3 jobs in a row (model: claude-sonet-4-6)")
        .unwrap_or_else(|| panic!("the mock refuses the model as the API does: {stderr}"));
    assert!(warned < stopped, "warned before sending: {stderr}");
    let pool = ws.pool().await;
    let sent = count(&pool, "SELECT COUNT(*) FROM attempts").await;
    assert!(sent < 40, "{sent} of 50 jobs sent");

    // Through batches, the items of an unknown model error as the API errors them.
    let output = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--mock",
            "--via",
            "batches",
            "--poll-interval",
            "10ms",
            "--model",
            "claude-sonet-4-6",
            "--name",
            "batched",
        ])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 1, "{stdout}{stderr}");
    assert!(stdout.contains("50 × invalid_request_error"), "{stdout}");
    let errored = count(
        &pool,
        "SELECT COUNT(*) FROM attempts WHERE kind = 'batch'
           AND error_type = 'invalid_request_error' AND error_message = 'model: claude-sonet-4-6'",
    )
    .await;
    assert_eq!(errored, 50);
}

#[tokio::test]
async fn the_mock_calls_a_forced_tool_and_thinks_when_asked_streamed_or_not() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let schema = json!({"type": "object", "required": ["city", "units", "days", "when"],
        "properties": {"city": {"type": "string"}, "units": {"enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1}, "optional": {"type": "string"},
            "when": {"type": "object", "required": ["hour"],
                "properties": {"hour": {"type": ["integer", "null"]}}}}});
    let tools = json!([{"name": "lookup", "input_schema": {"type": "object"}},
        {"name": "weather", "description": "the weather", "input_schema": schema}]);
    let body = |choice: Value, stream: bool| {
        json!({"model": "claude-sonnet-4-6", "max_tokens": 200, "stream": stream,
            "tools": tools, "tool_choice": choice,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    };
    let thinking = |stream: bool| {
        json!({"model": "claude-sonnet-4-6", "max_tokens": 2048, "stream": stream,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "Think first"}]})
    };
    let records = [
        (
            "tool",
            body(json!({"type": "tool", "name": "weather"}), false),
        ),
        (
            "tool-streamed",
            body(json!({"type": "tool", "name": "weather"}), true),
        ),
        ("any", body(json!({"type": "any"}), false)),
        ("think", thinking(false)),
        ("think-streamed", thinking(true)),
    ];
    let lines: Vec<String> = records
        .iter()
        .map(|(id, params)| json!({"custom_id": id, "params": params}).to_string())
        .collect();
    let file = ws.write("jobs.jsonl", &lines.join("\n"));
    let output = ws.run_on(&mock, &["run", file.to_str().unwrap()]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT j.job_id, r.stop_reason, b.body FROM jobs j JOIN results r ON r.job = j.id
         JOIN responses b ON b.job = j.id ORDER BY j.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let body_of = |id: &str| -> (String, Value) {
        let (_, stop, body) = rows.iter().find(|r| r.0 == id).unwrap();
        (stop.clone(), serde_json::from_str(body).unwrap())
    };

    let (stop, tool) = body_of("tool");
    assert_eq!(stop, "tool_use");
    let content = tool["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "{tool}");
    assert_eq!(content[0]["type"], "tool_use");
    assert_eq!(content[0]["name"], "weather");
    assert!(content[0]["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(
        content[0]["input"],
        json!({"city": "", "units": "c", "days": 1, "when": {"hour": 0}}),
        "the least input the schema allows"
    );
    let (_, streamed) = body_of("tool-streamed");
    assert_eq!(streamed["content"], tool["content"], "streamed alike");
    assert_eq!(
        streamed["usage"]["output_tokens"],
        tool["usage"]["output_tokens"]
    );
    let (stop, any) = body_of("any");
    assert_eq!(stop, "tool_use");
    assert_eq!(any["content"][0]["name"], "lookup", "the first tool");
    assert_eq!(any["content"][0]["input"], json!({}));

    let (stop, think) = body_of("think");
    assert_eq!(stop, "end_turn");
    let content = think["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "thinking", "{think}");
    assert!(!content[0]["thinking"].as_str().unwrap().is_empty());
    assert!(!content[0]["signature"].as_str().unwrap().is_empty());
    assert_eq!(content[1]["type"], "text");
    let (_, streamed) = body_of("think-streamed");
    assert_eq!(streamed["content"], think["content"], "streamed alike");
    assert_eq!(
        mock.log().iter().filter(|l| l.stream).count(),
        2,
        "two of them were streamed"
    );
}

#[tokio::test]
async fn two_gateways_may_give_the_same_batch_id_in_one_store() {
    use msgbatch::mock::batches::BatchConfig;
    let same = || BatchConfig {
        ids: Some("SameIdsFromTwoGws0".to_owned()),
        ..BatchConfig::default()
    };
    let first = mock(MockConfig {
        batches: same(),
        ..MockConfig::default()
    })
    .await;
    let second = mock(MockConfig {
        batches: same(),
        ..MockConfig::default()
    })
    .await;
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 3);
    for (name, gateway) in [("one", &first), ("two", &second)] {
        let output = ws
            .run_on(
                gateway,
                &[
                    "run",
                    file.to_str().unwrap(),
                    "--via",
                    "batches",
                    "--name",
                    name,
                    "--poll-interval",
                    "10ms",
                ],
            )
            .await;
        assert_eq!(code(&output), 0, "{name}: {:?}", text(&output));
    }
    let ids: Vec<String> = sqlx::query_scalar("SELECT remote_id FROM batches ORDER BY id")
        .fetch_all(&ws.pool().await)
        .await
        .unwrap();
    assert_eq!(
        ids, ["msgbatch_SameIdsFromTwoGws0000001"; 2],
        "one id, from two gateways"
    );
}

/// After a run, the commands that look at one take the latest run without its name:
/// `report` and `export` with none, `last` anywhere a run is named.
#[tokio::test]
async fn report_and_export_look_at_the_latest_run_without_its_name_and_last_names_it() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 2);
    let file = file.to_str().unwrap();
    for name in ["first", "second"] {
        let output = ws.run(&["run", file, "--mock", "--name", name]).await;
        assert_eq!(code(&output), 0, "{name}: {:?}", text(&output));
    }
    let output = ws.run(&["report", "--format", "json", "--out", "-"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["runs"][0]["name"], "second", "{report}");
    let output = ws.run(&["diff", "last"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("run second:"), "{stdout}");
    // A regression check given no run fails, rather than compare nothing and pass.
    let output = ws.run(&["diff", "--fail-on-regression"]).await;
    assert_eq!(code(&output), 2, "{:?}", text(&output));
    let output = ws.run(&["diff", "first", "last"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}{stderr}");
    assert!(stdout.contains("second"), "{stdout}");
    let output = ws.run(&["export", "--out", "-"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let lines = String::from_utf8(output.stdout).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    let output = ws.run(&["status", "last"]).await;
    let (stdout, _) = text(&output);
    assert!(
        stdout.contains("second") && !stdout.contains("first"),
        "{stdout}"
    );
}

/// `last` cannot name a new run: it would stop meaning the latest one.
#[tokio::test]
async fn a_run_cannot_be_named_last() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 1);
    let output = ws
        .run(&["run", file.to_str().unwrap(), "--mock", "--name", "last"])
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("names the latest run"), "{stderr}");
    assert!(!ws.db().exists(), "nothing is made for a refused run");
}
