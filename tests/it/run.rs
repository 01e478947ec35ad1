//! A run from file to database: answers, shapes, gateways.

use msgbatch::mock::MockConfig;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn every_job_is_recorded_with_its_own_answer() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = ws.jobs("jobs.jsonl", 40);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "8",
                "--name",
                "night",
            ],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("run night (id 1): completed"), "{stdout}");
    assert!(stdout.contains("40 succeeded, 0 failed"), "{stdout}");

    let pool = ws.pool().await;
    let answers = answers(&pool).await;
    assert_eq!(answers.len(), 40);
    for (id, text) in &answers {
        let i = id.strip_prefix("job-").unwrap();
        assert!(
            text.starts_with(&format!("Answer to: prompt-{i}.")),
            "{id}: {text}"
        );
    }
    assert_eq!(mock.requests(), 40);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE http_status = 200"
        )
        .await,
        40
    );
    // Usage and cost are stored with every result.
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM results WHERE cost_pico_usd > 0 AND output_tokens > 0"
        )
        .await,
        40
    );
}

#[tokio::test]
async fn both_shapes_csv_and_fan_out_reach_the_gateway_intact() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let jsonl = ws.write(
        "mixed.jsonl",
        &[
            json!({"model": "ignored", "max_tokens": 20, "messages": [{"role": "user", "content": "bare"}],
                   "metadata": {"user_id": "u-1"}, "tags": {"set": "a"}})
            .to_string(),
            json!({"custom_id": "batch-shape", "params": {"max_tokens": 20,
                   "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "shaped"}]}],
                   "some_future_field": {"x": 1}}})
            .to_string(),
        ]
        .join("\n"),
    );
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                jsonl.to_str().unwrap(),
                "--models",
                "claude-haiku-4-5,claude-sonnet-4-6",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let log = mock.log();
    assert_eq!(log.len(), 4);
    let mut models: Vec<String> = log
        .iter()
        .map(|l| {
            l.body.as_ref().unwrap()["model"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    models.sort();
    assert_eq!(
        models,
        [
            "claude-haiku-4-5",
            "claude-haiku-4-5",
            "claude-sonnet-4-6",
            "claude-sonnet-4-6"
        ]
    );
    let shaped = log
        .iter()
        .find(|l| l.body.as_ref().unwrap().get("some_future_field").is_some())
        .expect("the batch-shaped record was sent");
    let body = shaped.body.as_ref().unwrap();
    assert_eq!(body["system"][0]["cache_control"]["ttl"], "1h");
    assert!(body.get("custom_id").is_none() && body.get("tags").is_none());
    assert!(
        log.iter()
            .all(|l| l.anthropic_version.as_deref() == Some("2023-06-01"))
    );

    let csv = ws.write(
        "prompts.csv",
        "id,prompt,system,max_tokens,tag:team\nc1,\"Hello, CSV\",Be brief.,30,evals\nc2,Second row,,,evals\n",
    );
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                csv.to_str().unwrap(),
                "--model",
                "claude-haiku-4-5",
                "--max-tokens",
                "64",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let log = mock.log();
    let body = |prompt: &str| {
        log.iter()
            .find(|l| l.prompt().as_deref() == Some(prompt))
            .and_then(|l| l.body.clone())
            .expect("the row was sent")
    };
    let c1 = body("Hello, CSV");
    assert_eq!(c1["system"], "Be brief.");
    assert_eq!(c1["max_tokens"], 30);
    assert_eq!(body("Second row")["max_tokens"], 64);
}

#[tokio::test]
async fn bearer_auth_and_a_path_prefix_are_sent_as_configured() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        require_key: Some(TEST_KEY.to_owned()),
        ..MockConfig::default()
    })
    .await;
    ws.write(
        "msgbatch.toml",
        &format!(
            "[gateways.corp]\nbase_url = \"{}\"\nmessages_path = \"/rest/anthropic-models-api/2025-03-05/v1/messages\"\nauth = \"bearer\"\napi_key_env = \"{KEY_ENV}\"\nheaders = {{ \"x-team\" = \"evals\" }}\n",
            mock.base_url()
        ),
    );
    let file = ws.jobs("jobs.jsonl", 2);
    let output = ws
        .run(&["run", file.to_str().unwrap(), "--gateway", "corp"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let log = mock.log();
    assert_eq!(log.len(), 2);
    for entry in &log {
        assert_eq!(entry.auth, "bearer");
        assert_eq!(
            entry.path,
            "/rest/anthropic-models-api/2025-03-05/v1/messages"
        );
    }
}

#[tokio::test]
async fn export_writes_batch_results_lines_for_every_outcome() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        script: vec![msgbatch::mock::Fault::Status(400)],
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "1",
                "--name",
                "r",
            ],
        )
        .await;
    assert_eq!(code(&output), 1, "one job failed: {:?}", text(&output));
    let out = ws.path("out/results.jsonl");
    let output = ws
        .run(&["export", "r", "--out", out.to_str().unwrap()])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["custom_id"], "job-0");
    assert_eq!(lines[0]["result"]["type"], "errored");
    assert_eq!(
        lines[0]["result"]["error"]["error"]["type"],
        "invalid_request_error"
    );
    assert_eq!(lines[1]["result"]["type"], "succeeded");
    assert_eq!(lines[1]["result"]["message"]["type"], "message");
    assert_eq!(lines[1]["model"], "claude-haiku-4-5");
}

/// The mock's options are checked wherever they are given: on `run --mock` before a run is
/// made, and on `resume` of a run whose stored options are out of range.
#[tokio::test]
async fn mock_options_out_of_range_are_refused_naming_the_flag() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 2);
    let file = file.to_str().unwrap();
    for (flag, value) in [
        ("--mock-fail-rate", "5"),
        ("--mock-fail-rate", "-0.5"),
        ("--mock-rate-limit-rpm", "0"),
    ] {
        let given = format!("{flag}={value}");
        let output = ws.run(&["run", file, "--mock", &given]).await;
        let (stdout, stderr) = text(&output);
        assert_eq!(code(&output), 2, "{flag} {value}: {stdout}\n{stderr}");
        assert!(stderr.contains(&format!("{flag} must be")), "{stderr}");
    }
    assert!(!ws.db().exists(), "no run is made");

    let output = ws.run(&["run", file, "--mock", "--name", "m"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool =
        sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(ws.db()))
            .await
            .unwrap();
    sqlx::query(
        "UPDATE runs SET status = 'interrupted',
                settings = json_set(settings, '$.mock.fail_rate', 5.0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let output = ws.run(&["resume", "m"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--mock-fail-rate must be between 0 and 1"),
        "{stderr}"
    );
}
