//! `--repeat K`: each job (each model of a fan-out) sent K times as samples of their own,
//! resumed without sending a sample twice, exported with `sample` and `passed`, and compared by
//! `diff` over jobs scored as the mean of their samples.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use msgbatch::mock::MockConfig;
use serde_json::{Value, json};

use crate::common::*;

const HAIKU: &str = "claude-haiku-4-5";
const SONNET: &str = "claude-sonnet-4-6";

/// `n` jobs whose prompt is the text their grader looks for, tagged with one of four documents.
fn graded_file(ws: &Workspace, n: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            json!({"custom_id": format!("q{i}"),
                "params": {"max_tokens": 200,
                    "messages": [{"role": "user", "content": format!("needle-{i}")}]},
                "expect": {"contains": format!("needle-{i}")},
                "tags": {"doc": format!("d{}", i % 4)}})
            .to_string()
        })
        .collect();
    ws.write("graded.jsonl", &(lines.join("\n") + "\n"))
}

async fn count_of(ws: &Workspace, sql: &'static str) -> i64 {
    let pool = ws.pool().await;
    let n = count(&pool, sql).await;
    pool.close().await;
    n
}

#[tokio::test]
async fn samples_are_sent_once_each_resumed_exported_and_scored_per_job() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        latency: Duration::from_millis(30),
        pass: vec![(HAIKU.to_owned(), 0.5), (SONNET.to_owned(), 1.0)],
        ..MockConfig::default()
    })
    .await;
    let file = graded_file(&ws, 20);
    let models = format!("{HAIKU},{SONNET}");
    let mut child = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--models",
                &models,
                "--repeat",
                "3",
                "--concurrency",
                "4",
                "--name",
                "rep",
            ],
        )
        .spawn()
        .unwrap();
    mock.wait_for_requests(30).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // 20 jobs × 2 models × 3 samples, each its own row.
    assert_eq!(count_of(&ws, "SELECT count(*) FROM jobs").await, 120);
    assert_eq!(
        count_of(
            &ws,
            "SELECT count(*) FROM (SELECT DISTINCT job_id, model, sample FROM jobs)"
        )
        .await,
        120
    );
    let pending = count_of(&ws, "SELECT count(*) FROM jobs WHERE state = 'pending'").await;
    assert!(pending > 0 && pending < 120, "{pending} pending");

    let refused = ws.run(&["resume", "rep", "--repeat", "2"]).await;
    assert_eq!(code(&refused), 2, "{:?}", text(&refused));
    assert!(
        text(&refused).1.contains("takes 3 samples"),
        "{:?}",
        text(&refused)
    );

    let before = mock.log().len();
    let output = ws.run(&["resume", "rep", "--repeat", "3"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("completed"), "{stdout}");
    let resent = mock.log()[before..]
        .iter()
        .filter(|l| l.path == "/v1/messages")
        .count();
    assert_eq!(
        i64::try_from(resent).unwrap(),
        pending,
        "resume sends exactly the samples without a result"
    );
    assert_eq!(count_of(&ws, "SELECT count(*) FROM results").await, 120);
    assert_eq!(
        count_of(&ws, "SELECT count(DISTINCT message_id) FROM results").await,
        120,
        "every answer has an id of its own"
    );
    assert_eq!(
        count_of(&ws, "SELECT count(*) FROM jobs WHERE state = 'succeeded'").await,
        120
    );

    // The export: one line per sample, with its number and whether it passed.
    let export = ws.run(&["export", "rep", "--out", "-"]).await;
    assert_eq!(code(&export), 0, "{:?}", text(&export));
    let lines: Vec<Value> = String::from_utf8(export.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 120);
    let mut passes: BTreeMap<(String, String), Vec<bool>> = BTreeMap::new();
    let mut samples: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for line in &lines {
        let key = (
            line["custom_id"].as_str().unwrap().to_owned(),
            line["model"].as_str().unwrap().to_owned(),
        );
        samples
            .entry(key.clone())
            .or_default()
            .insert(line["sample"].as_u64().unwrap());
        passes
            .entry(key)
            .or_default()
            .push(line["passed"].as_bool().expect("every sample is graded"));
    }
    assert!(samples.values().all(|s| *s == BTreeSet::from([0, 1, 2])));
    let score = |model: &str| {
        let jobs: Vec<f64> = passes
            .iter()
            .filter(|((_, m), _)| m == model)
            .map(|(_, p)| p.iter().filter(|&&p| p).count() as f64 / p.len() as f64)
            .collect();
        jobs.iter().sum::<f64>() / jobs.len() as f64
    };
    assert_eq!(score(SONNET), 1.0);
    let haiku = score(HAIKU);
    assert!(haiku > 0.0 && haiku < 1.0, "{haiku}");
    assert!(
        passes
            .iter()
            .any(|((_, m), p)| m == HAIKU && p.iter().collect::<BTreeSet<_>>().len() == 2),
        "the samples of a job are drawn apart"
    );

    // diff scores each job as the mean of its samples, as the export allows anyone to redo.
    let diff = ws
        .run(&[
            "diff",
            "rep",
            "--format",
            "json",
            "--out",
            "-",
            "--cluster",
            "tag:doc",
        ])
        .await;
    assert_eq!(code(&diff), 0, "{:?}", text(&diff));
    let diff: Value = serde_json::from_slice(&diff.stdout).unwrap();
    assert_eq!(diff["samples"], 3);
    let comparison = &diff["comparisons"][0];
    assert_eq!(comparison["metric"], "score");
    assert_eq!(
        (comparison["a"].as_str(), comparison["b"].as_str()),
        (Some(HAIKU), Some(SONNET))
    );
    assert_eq!(comparison["n"], 20);
    assert_eq!(comparison["clusters"], 4);
    assert_eq!(comparison["method"], "paired_clustered");
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&comparison["mean_a"], haiku), "{comparison}");
    assert!(close(&comparison["mean_b"], 1.0), "{comparison}");
    assert!(close(&comparison["diff"], 1.0 - haiku), "{comparison}");
    let per_model = &diff["per_model"];
    assert_eq!(per_model[0]["graded"], 60, "the totals count every sample");

    // report: the mean score over jobs, pass@3 and pass^3, and no Wilson interval over
    // samples that are not independent.
    let report = ws.report_json("rep").await;
    let sonnet = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == SONNET)
        .unwrap_or_else(|| panic!("{report}"));
    let grading = &sonnet["grading"];
    assert_eq!(grading["score"]["jobs"], 20);
    assert_eq!(grading["score"]["samples_per_job"], 3);
    assert!(close(&grading["score"]["mean"], 1.0));
    assert!(close(&grading["score"]["pass_at_k"], 1.0));
    assert!(close(&grading["score"]["pass_hat_k"], 1.0));
    assert!(grading["pass_rate_ci95"].is_null());
}

#[tokio::test]
async fn samples_of_one_prefix_write_the_cache_once() {
    let ws = Workspace::new();
    let system = format!("Document: {}", "policy text ".repeat(770));
    let lines: Vec<String> = (0..4)
        .map(|q| {
            json!({"custom_id": format!("q{q}"), "params": {
                "model": SONNET, "max_tokens": 50,
                "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": format!("question {q}")}]}})
            .to_string()
        })
        .collect();
    let file = ws.write("cached.jsonl", &(lines.join("\n") + "\n"));
    let mock = mock(MockConfig {
        latency: Duration::from_millis(250),
        first_token_delay: Duration::from_millis(250),
        ..MockConfig::default()
    })
    .await;
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--repeat",
                "3",
                "--concurrency",
                "16",
                "--name",
                "warm",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert!(
        text(&output).1.contains("4 jobs × 3 samples (12 requests)"),
        "{:?}",
        text(&output)
    );
    let writes = count_of(
        &ws,
        "SELECT count(*) FROM results WHERE cache_creation_input_tokens > 0",
    )
    .await;
    let reads = count_of(
        &ws,
        "SELECT count(*) FROM results WHERE cache_read_input_tokens > 0",
    )
    .await;
    assert_eq!((writes, reads), (1, 11));
}

#[tokio::test]
async fn samples_sent_through_batches_come_back_each_to_its_own_row() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        pass: vec![(HAIKU.to_owned(), 0.5)],
        ..MockConfig::default()
    })
    .await;
    let file = graded_file(&ws, 10);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--model",
                HAIKU,
                "--repeat",
                "3",
                "--via",
                "batches",
                "--poll-interval",
                "10ms",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    assert_eq!(
        count_of(&ws, "SELECT count(*) FROM jobs WHERE state = 'succeeded'").await,
        30
    );
    assert_eq!(count_of(&ws, "SELECT count(*) FROM results").await, 30);
    // As the API's, every answer has an id of its own, samples of one request included.
    assert_eq!(
        count_of(&ws, "SELECT count(DISTINCT message_id) FROM results").await,
        30
    );
    assert_eq!(
        count_of(&ws, "SELECT count(DISTINCT custom_id) FROM batch_items").await,
        30,
        "each sample went under an id of its own"
    );
    assert_eq!(
        count_of(&ws, "SELECT count(DISTINCT job) FROM batch_items").await,
        30
    );
    // Each sample drew on its own: some job has a passing and a failing sample.
    let mixed = count_of(
        &ws,
        "SELECT count(*) FROM (SELECT j.job_id FROM jobs j JOIN grades g ON g.job = j.id
                               GROUP BY j.job_id HAVING min(g.passed) <> max(g.passed))",
    )
    .await;
    assert!(mixed > 0);
}

#[tokio::test]
async fn estimate_counts_jobs_and_samples_apart_and_zero_samples_are_refused() {
    let ws = Workspace::new();
    let file = graded_file(&ws, 5);
    let path = file.to_str().unwrap();
    let estimate = |repeat: &'static str| {
        let ws = &ws;
        async move {
            let output = ws
                .run(&[
                    "estimate", path, "--model", HAIKU, "--repeat", repeat, "--mock", "--format",
                    "json",
                ])
                .await;
            assert_eq!(code(&output), 0, "{:?}", text(&output));
            serde_json::from_slice::<Value>(&output.stdout).unwrap()
        }
    };
    let once = estimate("1").await;
    let thrice = estimate("3").await;
    assert_eq!(once["models"][0]["jobs"], 5, "{once}");
    assert_eq!(once["models"][0]["samples"], 5, "{once}");
    // Jobs and samples apart: five jobs, fifteen requests, priced as fifteen.
    assert_eq!(thrice["models"][0]["jobs"], 5, "{thrice}");
    assert_eq!(thrice["models"][0]["samples"], 15, "{thrice}");
    assert_eq!(thrice["counted_jobs"], 5, "{thrice}");
    let worst = |v: &Value| v["worst_pico_usd"].as_u64().unwrap();
    assert_eq!(worst(&thrice), 3 * worst(&once), "{once} {thrice}");
    let table = ws
        .run(&[
            "estimate", path, "--model", HAIKU, "--repeat", "3", "--mock",
        ])
        .await;
    let (shown, _) = text(&table);
    let header = shown.lines().find(|l| l.starts_with("model")).unwrap();
    assert!(
        header.contains("jobs") && header.contains("samples"),
        "{shown}"
    );
    let total: Vec<&str> = shown
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(total[1..3], ["5", "15"], "{shown}");
    for k in ["0", "1001", "two"] {
        let output = ws
            .run(&["run", path, "--model", HAIKU, "--mock", "--repeat", k])
            .await;
        assert_eq!(code(&output), 2, "{k}: {:?}", text(&output));
        assert!(text(&output).1.contains("--repeat"), "{:?}", text(&output));
    }
}
