//! Cost control: the estimate brackets the real cost, and --max-cost stops a run before the
//! budget is passed and lets it resume with a higher one.

use msgbatch::mock::MockConfig;
use serde_json::{Value, json};

use crate::common::*;

/// Jobs sharing a long cached system prompt, with varied questions and max_tokens.
fn cached_jobs(ws: &Workspace, name: &str, prefix: &str, count: usize) -> std::path::PathBuf {
    let system = "Answer from the handbook. ".repeat(300);
    let lines: Vec<String> = (0..count)
        .map(|i| {
            json!({"custom_id": format!("{prefix}-{i}"), "params": {
                "model": "claude-sonnet-4-6", "max_tokens": 150 + i % 3 * 50,
                "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": format!("{prefix} question number {i}?")}]}})
            .to_string()
        })
        .collect();
    ws.write(name, &(lines.join("\n") + "\n"))
}

async fn total_cost(ws: &Workspace, run: &str) -> f64 {
    let output = ws
        .run(&["report", run, "--format", "json", "--out", "-"])
        .await;
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    report["totals"][0]["cost"]["total_pico_usd"]
        .as_f64()
        .unwrap()
        / 1e12
}

fn dollars(text: &str, label: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(label))
        .expect("the total line");
    let amounts: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix('$'))
        .map(|w| w.trim_end_matches('+').parse().unwrap())
        .collect();
    amounts[0]
}

#[tokio::test]
async fn the_estimate_brackets_the_real_cost() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // An earlier run of the same model gives the estimate its output figures.
    let earlier = cached_jobs(&ws, "earlier.jsonl", "warm", 30);
    let output = ws
        .run_on(
            &mock,
            &["run", earlier.to_str().unwrap(), "--concurrency", "1"],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));

    let file = cached_jobs(&ws, "jobs.jsonl", "real", 40);
    let before = mock.requests();
    let estimate = ws
        .run_on(&mock, &["estimate", file.to_str().unwrap()])
        .await;
    let (stdout, stderr) = text(&estimate);
    assert_eq!(code(&estimate), 0, "{stderr}");
    assert!(
        stdout.contains("input counted by the gateway's count_tokens"),
        "{stdout}"
    );
    assert_eq!(
        mock.requests() - before,
        40,
        "one count_tokens request per job"
    );
    assert!(
        mock.log()[before as usize..]
            .iter()
            .all(|l| l.path.ends_with("/count_tokens"))
    );
    let line = stdout.lines().find(|l| l.starts_with("total")).unwrap();
    let amounts: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix('$'))
        .map(|w| w.parse().unwrap())
        .collect();
    let (expected, worst) = (amounts[0], amounts[1]);

    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "1",
                "--name",
                "real",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let real = total_cost(&ws, "real").await;
    assert!(
        (expected - real).abs() <= real * 0.25,
        "expected {expected} against real {real}"
    );
    assert!(worst >= real, "worst case {worst} below the real {real}");
}

#[tokio::test]
async fn without_count_tokens_the_estimate_falls_back_to_local_and_says_so() {
    let ws = Workspace::new();
    let mock = mock(MockConfig {
        no_count_tokens: true,
        ..MockConfig::default()
    })
    .await;
    let file = cached_jobs(&ws, "jobs.jsonl", "q", 5);
    let output = ws
        .run_on(&mock, &["estimate", file.to_str().unwrap()])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr.contains("warning: the gateway has no count_tokens endpoint (HTTP 404"),
        "{stderr}"
    );
    assert!(stdout.contains("input estimated locally"), "{stdout}");
    assert!(dollars(&stdout, "total") > 0.0);
}

#[tokio::test]
async fn max_cost_stops_under_the_budget_and_resume_with_more_finishes() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = cached_jobs(&ws, "jobs.jsonl", "b", 40);
    let budget = 0.04;
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "4",
                "--name",
                "capped",
                "--max-cost",
                "0.04",
            ],
        )
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 3, "{stderr}");
    assert!(
        stderr.contains("the next job could pass the --max-cost budget of $0.040000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("msgbatch resume capped --max-cost USD"),
        "{stderr}"
    );
    let spent = total_cost(&ws, "capped").await;
    assert!(
        spent > 0.0 && spent <= budget,
        "spent {spent} of a {budget} budget"
    );
    let status = ws.run(&["status", "capped"]).await;
    assert!(
        text(&status).0.contains("budget_exhausted"),
        "{:?}",
        text(&status)
    );

    let output = ws.run(&["resume", "capped", "--max-cost", "5"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        40
    );
    assert_eq!(mock.requests(), 40, "no job sent twice");
}

#[tokio::test]
async fn confirm_above_refuses_without_a_terminal_unless_yes() {
    let ws = Workspace::new();
    let file = cached_jobs(&ws, "jobs.jsonl", "c", 5);
    let output = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--mock",
            "--confirm-above",
            "0.0001",
        ])
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2);
    assert!(
        stderr.contains(
            "above --confirm-above $0.000100, and there is no terminal to ask; pass --yes"
        ),
        "{stderr}"
    );
    assert!(!ws.db().exists(), "nothing was loaded or sent");
    let output = ws
        .run(&[
            "run",
            file.to_str().unwrap(),
            "--mock",
            "--confirm-above",
            "0.0001",
            "--yes",
        ])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
}

#[tokio::test]
async fn near_the_budget_fewer_jobs_run_so_that_most_of_it_is_spent() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // Each Opus job may cost up to about $0.026 (1,024 tokens of output at $25), but costs
    // about a tenth of that. Stopping once 32 worst cases no longer fit would leave most of
    // the budget unspent.
    let lines: Vec<String> = (0..400)
        .map(|i| {
            json!({"custom_id": format!("o-{i}"), "params": {
                "model": "claude-opus-4-7", "max_tokens": 1024,
                "messages": [{"role": "user", "content": format!("question number {i}?")}]}})
            .to_string()
        })
        .collect();
    let file = ws.write("opus.jsonl", &(lines.join("\n") + "\n"));
    let budget = 0.50;
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--concurrency",
                "32",
                "--name",
                "opus",
                "--max-cost",
                "0.50",
            ],
        )
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 3, "{stderr}");
    let spent = total_cost(&ws, "opus").await;
    assert!(
        spent >= 0.9 * budget && spent <= budget,
        "spent {spent} of a {budget} budget"
    );
}
