//! Evaluation: graders on real answers from the mock, judges through the gateway, re-grading
//! without resending, and what reports say about it.

use msgbatch::mock::{Fault, MockConfig};
use serde_json::{Value, json};

use crate::common::*;

/// Four jobs: the mock answers "Answer to: <prompt>. …", so graders can be aimed at that.
fn graded_jobs(ws: &Workspace, judge: bool) -> std::path::PathBuf {
    let job = |id: &str, prompt: &str, expect: Value| {
        json!({"custom_id": id, "params": {"model": "claude-haiku-4-5", "max_tokens": 300,
            "messages": [{"role": "user", "content": prompt}]}, "expect": expect})
        .to_string()
    };
    let judge_spec = |expect: Value| {
        if judge {
            json!([expect, {"judge": {"rubric": "The answer must address the prompt.", "model": "claude-haiku-4-5"}}])
        } else {
            expect
        }
    };
    let lines = [
        job(
            "ok-1",
            "alpha",
            judge_spec(json!({"contains": "alpha", "stop_reason": "end_turn"})),
        ),
        job(
            "ok-2",
            "beta",
            judge_spec(json!({"regex": "^Answer to: beta\\.", "not_contains": "zeta"})),
        ),
        job(
            "bad-1",
            "gamma FAIL",
            judge_spec(json!({"contains": "delta"})),
        ),
        job("bad-2", "epsilon", judge_spec(json!({"json": true}))),
    ];
    ws.write("graded.jsonl", &(lines.join("\n") + "\n"))
}

#[tokio::test]
async fn graders_and_the_judge_grade_every_answer_and_reports_show_pass_rates() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = graded_jobs(&ws, true);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "eval",
                "--concurrency",
                "1",
            ],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers for $"), "{stderr}");
    // Four jobs, then four judge requests marked as such.
    let log = mock.log();
    assert_eq!(log.len(), 8);
    assert!(log[4..].iter().all(|l| {
        l.body.as_ref().unwrap()["system"]
            .as_str()
            .unwrap()
            .contains("judge")
    }));
    assert!(stdout.contains("GRADES"), "{stdout}");

    let report = ws.report_json("eval").await;
    let grading = &report["totals"][0]["grading"];
    assert_eq!(
        (grading["graded"].as_i64(), grading["passed"].as_i64()),
        (Some(4), Some(2))
    );
    assert_eq!(grading["pass_rate"], 0.5);
    let ci = grading["pass_rate_ci95"].as_array().unwrap();
    assert!(
        (ci[0].as_f64().unwrap() - 0.1500).abs() < 1e-3
            && (ci[1].as_f64().unwrap() - 0.8500).abs() < 1e-3,
        "{ci:?}"
    );
    let cost = report["totals"][0]["cost"]["total_pico_usd"]
        .as_i64()
        .unwrap();
    assert_eq!(grading["cost_per_pass_pico_usd"].as_i64(), Some(cost / 2));
    // The judge's cost is apart from the jobs' own.
    let judge_cost = grading["judge_cost_pico_usd"].as_i64().unwrap();
    assert!(judge_cost > 0);
    let pool = ws.pool().await;
    let stored: i64 = count(&pool, "SELECT SUM(cost_pico_usd) FROM results").await;
    assert_eq!(stored, cost, "judging did not add to the jobs' cost");
    let verdicts: Vec<(String, Option<bool>, Option<String>)> = sqlx::query_as(
        "SELECT j.job_id, g.passed, g.reason FROM grades g JOIN jobs j ON j.id = g.job WHERE g.kind = 'judge' ORDER BY j.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        verdicts[2],
        (
            "bad-1".into(),
            Some(false),
            Some("the answer contains FAIL".into())
        )
    );
    assert_eq!(verdicts[0].1, Some(true));

    // The failures CSV names every failing job and why.
    let out = ws.path("reports");
    let output = ws
        .run(&[
            "report",
            "eval",
            "--format",
            "csv",
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&output), 0);
    let failures = std::fs::read_to_string(ws.path("reports/eval-failures.csv")).unwrap();
    assert!(
        failures.contains("eval,bad-1,claude-haiku-4-5,3,failed contains,does not contain `delta`"),
        "{failures}"
    );
    assert!(
        failures.contains("eval,bad-2,claude-haiku-4-5,4,failed json,not JSON"),
        "{failures}"
    );
    assert!(
        failures.contains("failed judge,the answer contains FAIL"),
        "{failures}"
    );
}

#[tokio::test]
async fn regrading_changes_outcomes_without_sending_anything() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = graded_jobs(&ws, false);
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--name", "eval"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(
        ws.report_json("eval").await["totals"][0]["grading"]["passed"],
        2
    );
    let sent = mock.requests();

    ws.write(
        "fixed.jsonl",
        &[
            json!({"custom_id": "bad-1", "expect": {"contains": "gamma"}}).to_string(),
            json!({"custom_id": "bad-2", "expect": {"regex": "epsilon"}}).to_string(),
        ]
        .join("\n"),
    );
    let output = ws.run(&["grade", "eval", "--expect", "fixed.jsonl"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(
        ws.report_json("eval").await["totals"][0]["grading"]["passed"],
        4
    );
    assert_eq!(mock.requests(), sent, "re-grading sent nothing");

    ws.write(
        "broken.jsonl",
        &json!({"custom_id": "ok-1", "expect": {"regex": "(oops"}}).to_string(),
    );
    let output = ws.run(&["grade", "eval", "--expect", "broken.jsonl"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2);
    assert!(
        stderr.contains("broken.jsonl:1: `expect.regex` invalid regex"),
        "{stderr}"
    );
    assert_eq!(
        ws.report_json("eval").await["totals"][0]["grading"]["passed"],
        4,
        "nothing changed"
    );
}

#[tokio::test]
async fn judge_requests_that_fail_stay_pending_and_grade_sends_them_later() {
    let ws = Workspace::new();
    // The four jobs are answered; the four judge requests after them fail.
    let mock = mock(MockConfig {
        script_from: 4,
        script: vec![Fault::Status(500); 4],
        ..MockConfig::default()
    })
    .await;
    let file = graded_jobs(&ws, true);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "eval",
                "--concurrency",
                "1",
                "--max-attempts",
                "1",
            ],
        )
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("4 judge requests failed and stay pending for `msgbatch grade`"),
        "{stderr}"
    );
    let grading = &ws.report_json("eval").await["totals"][0]["grading"];
    assert_eq!(grading["pending"], 4);

    // A budget too small for any judge request sends none of them.
    let output = ws.run(&["grade", "eval", "--max-cost", "0.000001"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("4 judge requests would pass --max-cost and stay pending"),
        "{stderr}"
    );
    assert_eq!(mock.requests(), 8);

    let output = ws.run(&["grade", "eval"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers"), "{stderr}");
    let log = mock.log();
    assert_eq!(
        log.len(),
        12,
        "only the four judge requests were sent again"
    );
    assert!(log[8..].iter().all(|l| {
        l.body.as_ref().unwrap()["system"]
            .as_str()
            .unwrap()
            .contains("judge")
    }));
    let grading = &ws.report_json("eval").await["totals"][0]["grading"];
    assert_eq!(
        (grading["pending"].as_i64(), grading["passed"].as_i64()),
        (Some(0), Some(2))
    );
}

#[tokio::test]
async fn bad_grader_specs_are_reported_by_line_before_anything_is_sent() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let lines = [
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}], "expect": {"equals": "x"}}).to_string(),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "b"}], "expect": {"regex": "[z-a]"}}).to_string(),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "c"}], "expect": {"vibes": true}}).to_string(),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "d"}], "expect": {"json_schema": {"type": "nope"}}}).to_string(),
    ];
    ws.write("bad.jsonl", &lines.join("\n"));
    let output = ws.run_on(&mock, &["run", "bad.jsonl"]).await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(
        stderr.contains("bad.jsonl:2: `expect.regex` invalid regex"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.jsonl:3: `expect.vibes` unknown grader `vibes`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.jsonl:4: `expect.json_schema` invalid JSON Schema"),
        "{stderr}"
    );
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn the_csv_expected_column_grades_with_the_chosen_mode() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    ws.write(
        "p.csv",
        "id,prompt,expected\na,alpha,Answer to: alpha\nb,beta,nothing like it\n",
    );
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                "p.csv",
                "--model",
                "claude-haiku-4-5",
                "--max-tokens",
                "100",
                "--expect-mode",
                "contains",
                "--name",
                "csv",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let grading = &ws.report_json("csv").await["totals"][0]["grading"];
    assert_eq!(
        (grading["graded"].as_i64(), grading["passed"].as_i64()),
        (Some(2), Some(1))
    );
}

#[tokio::test]
async fn a_failed_judge_says_why_in_the_report_and_status_and_its_attempts_are_recorded() {
    let ws = Workspace::new();
    // The four jobs are answered; each judge request then fails twice (two attempts each).
    let mock = mock(MockConfig {
        script_from: 4,
        script: vec![Fault::Status(500); 8],
        ..MockConfig::default()
    })
    .await;
    let file = graded_jobs(&ws, true);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "eval",
                "--concurrency",
                "1",
                "--max-attempts",
                "2",
            ],
        )
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    let pool = ws.pool().await;
    // Every judge attempt is a row, with its kind, against the job it judges.
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE kind = 'judge' AND http_status = 500"
        )
        .await,
        8
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM attempts WHERE kind = 'job'").await,
        4
    );
    let report = ws.report_json("eval").await;
    // The job's own figures are untouched by the judge's failures.
    assert!(report["totals"][0]["errors"].as_array().unwrap().is_empty());
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains("4 judge verdicts are pending because their requests failed")
                && w.contains("request failed after 2 attempts")
                && w.contains("msgbatch grade eval")
        }),
        "{warnings:?}"
    );
    let (status, _) = text(&ws.run(&["status", "eval"]).await);
    assert!(
        status.contains("judges   4 verdicts pending after failed requests"),
        "{status}"
    );
    // `grade` asks again, and the reasons go once the verdicts are in.
    let output = ws.run(&["grade", "eval"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let (status, _) = text(&ws.run(&["status", "eval"]).await);
    assert!(!status.contains("judges "), "{status}");
}

#[tokio::test]
async fn grade_takes_the_gateway_credentials_again_and_refuses_another_gateway() {
    const PASSWORD: &str = "pa55-grade-judge-secret";
    const PATH_KEY: &str = "qk-grade-judge-path-key";
    const HEADER_VALUE: &str = "hv-grade-judge-header";
    let ws = Workspace::new();
    // The four jobs are answered; the four judge requests after them fail.
    let mock = mock(MockConfig {
        script_from: 4,
        script: vec![Fault::Status(500); 4],
        ..MockConfig::default()
    })
    .await;
    let base = mock
        .base_url()
        .replace("http://", &format!("http://judge:{PASSWORD}@"));
    let path = format!("/v1/messages?key={PATH_KEY}");
    let header = format!("x-gateway-token: {HEADER_VALUE}");
    let file = graded_jobs(&ws, true);
    let mut outputs = Vec::new();
    let run = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--name",
            "eval",
            "--concurrency",
            "1",
            "--max-attempts",
            "1",
            "--base-url",
            &base,
            "--messages-path",
            &path,
            "--header",
            &header,
            "--api-key-env",
            KEY_ENV,
        ])
        .await;
    assert_eq!(code(&run), 0, "{:?}", text(&run));
    assert_eq!(mock.requests(), 8);
    outputs.push(run);
    let refused = |output: &std::process::Output, why: &str| {
        let (_, stderr) = text(output);
        assert_eq!(code(output), 2, "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    };
    // Without the credentials, or with another gateway's, nothing is sent.
    let grade = ws.run(&["grade", "eval"]).await;
    refused(&grade, "give it again with --base-url");
    outputs.push(grade);
    // Another host (a password is never stored, so it cannot be told from the run's own).
    let other = base.replace("127.0.0.1", "localhost");
    let grade = ws.run(&["grade", "eval", "--base-url", &other]).await;
    refused(&grade, "--base-url must be run eval's own base URL");
    outputs.push(grade);
    let grade = ws
        .run(&[
            "grade",
            "eval",
            "--base-url",
            &base,
            "--messages-path",
            "/v2/messages?key=other",
        ])
        .await;
    refused(
        &grade,
        "--messages-path must be run eval's own messages path",
    );
    outputs.push(grade);
    let grade = ws
        .run(&[
            "grade",
            "eval",
            "--base-url",
            &base,
            "--messages-path",
            &path,
        ])
        .await;
    refused(&grade, "give them again with --header");
    outputs.push(grade);
    assert_eq!(
        mock.requests(),
        8,
        "nothing was sent to a gateway not the run's"
    );

    let grade = ws
        .run(&[
            "grade",
            "eval",
            "--base-url",
            &base,
            "--messages-path",
            &path,
            "--header",
            &header,
        ])
        .await;
    let (_, stderr) = text(&grade);
    assert_eq!(code(&grade), 0, "{stderr}");
    assert!(stderr.contains("judged 4 answers"), "{stderr}");
    assert_eq!(mock.requests(), 12);
    assert_eq!(
        ws.report_json("eval").await["totals"][0]["grading"]["pending"],
        0
    );
    outputs.push(grade);
    for output in &outputs {
        let (stdout, stderr) = text(output);
        for secret in [PASSWORD, PATH_KEY, HEADER_VALUE] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{stdout}{stderr}"
            );
        }
    }
    drop(ws.pool().await);
    for suffix in ["", "-wal", "-shm"] {
        let mut db = ws.db().into_os_string();
        db.push(suffix);
        let bytes = file_bytes(std::path::Path::new(&db));
        for secret in [PASSWORD, PATH_KEY, HEADER_VALUE] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {db:?}"
            );
        }
    }
}
