//! `msgbatch diff`: two runs built to differ in known ways list exactly those differences,
//! and a run over several models compares them side by side.

use msgbatch::mock::MockConfig;
use serde_json::{Value, json};

use crate::common::*;

/// A job whose answer (the mock echoes the prompt) contains `word` or not, graded on it.
fn job(id: &str, prompt: &str, max_tokens: u64, expect: Option<&str>) -> String {
    let mut line = json!({"custom_id": id, "params": {"model": "claude-haiku-4-5",
        "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]}});
    if let Some(word) = expect {
        line["expect"] = json!({"contains": word});
    }
    line.to_string()
}

/// Run `before`: r passes, i fails, t answers in full, m exists, s passes.
/// Run `after`: r fails (a regression), i passes (an improvement), t is cut at max_tokens,
/// m is gone, s passes as before.
async fn two_runs(ws: &Workspace, regression: bool) {
    let mock = mock(MockConfig::default()).await;
    let long = "a fairly long prompt that the answer repeats word for word and then some more";
    let before = [
        job("r", "say alpha", 200, Some("alpha")),
        job("i", "say nothing", 200, Some("beta")),
        job("t", long, 200, None),
        job("m", "missing later", 200, None),
        job("s", "say gamma", 200, Some("gamma")),
    ];
    let after = [
        job(
            "r",
            if regression {
                "say nothing"
            } else {
                "say alpha"
            },
            200,
            Some("alpha"),
        ),
        job("i", "say beta", 200, Some("beta")),
        job("t", long, 3, None),
        job("s", "say gamma", 200, Some("gamma")),
    ];
    for (name, lines) in [("before", &before[..]), ("after", &after[..])] {
        let file = ws.write(&format!("{name}.jsonl"), &(lines.join("\n") + "\n"));
        let output = ws
            .run_on(&mock, &["run", file.to_str().unwrap(), "--name", name])
            .await;
        assert!(
            [0, 1].contains(&code(&output)),
            "{name}: {:?}",
            text(&output)
        );
    }
}

#[tokio::test]
async fn the_diff_of_two_runs_lists_exactly_what_changed() {
    let ws = Workspace::new();
    two_runs(&ws, true).await;
    let output = ws
        .run(&["diff", "before", "after", "--format", "json", "--out", "-"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let diff: Value = serde_json::from_str(&text(&output).0).unwrap();
    assert_eq!(diff["kind"], "runs");
    let listed: Vec<(String, String)> = diff["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !["cost", "latency"].contains(&r["change"].as_str().unwrap()))
        .map(|r| {
            (
                r["change"].as_str().unwrap().to_owned(),
                r["job_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("regression".to_owned(), "r".to_owned()),
            ("missing".to_owned(), "m".to_owned()),
            ("newly_truncated".to_owned(), "t".to_owned()),
            ("improvement".to_owned(), "i".to_owned()),
        ],
        "most important first"
    );
    assert_eq!(diff["totals"]["matched"], 4);
    assert_eq!(diff["totals"]["counts"]["regression"], 1);
    let regression = &diff["rows"][0];
    assert_eq!(regression["before"]["outcome"], "pass");
    assert_eq!(regression["after"]["outcome"], "fail");
    assert_eq!(regression["after"]["failed_graders"][0], "contains#0");

    let table = ws.run(&["diff", "before", "after"]).await;
    let (stdout, _) = text(&table);
    assert!(stdout.contains("1 regression"), "{stdout}");
    assert!(stdout.lines().all(|l| l.chars().count() <= 100), "{stdout}");

    let gate = ws
        .run(&["diff", "before", "after", "--fail-on-regression"])
        .await;
    assert_eq!(code(&gate), 4, "a regression fails the gate");
}

#[tokio::test]
async fn fail_on_regression_passes_when_nothing_regressed() {
    let ws = Workspace::new();
    two_runs(&ws, false).await;
    let gate = ws
        .run(&["diff", "before", "after", "--fail-on-regression"])
        .await;
    let (stdout, _) = text(&gate);
    assert_eq!(code(&gate), 0, "{stdout}");
    assert!(!stdout.contains("regression"), "{stdout}");
    assert!(stdout.contains("1 improvement"), "{stdout}");
}

#[tokio::test]
async fn a_run_over_several_models_compares_them_job_by_job() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // Two jobs fanned out over two models: one graded, one not.
    let lines = [
        json!({"custom_id": "short", "params": {"max_tokens": 200,
            "messages": [{"role": "user", "content": "hi"}]}, "expect": {"contains": "hi"}}),
        json!({"custom_id": "other", "params": {"max_tokens": 200,
            "messages": [{"role": "user", "content": "hello"}]}}),
    ]
    .map(|l| l.to_string());
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--models",
                "claude-haiku-4-5,claude-sonnet-4-6",
                "--name",
                "fan",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let output = ws
        .run(&["diff", "fan", "--format", "json", "--out", "-"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let matrix: Value = serde_json::from_str(&text(&output).0).unwrap();
    assert_eq!(matrix["kind"], "models");
    assert_eq!(
        matrix["models"],
        json!(["claude-haiku-4-5", "claude-sonnet-4-6"])
    );
    assert_eq!(matrix["jobs"], 2);
    assert_eq!(matrix["rows"][0]["cells"][0]["outcome"], "pass");
    assert_eq!(matrix["rows"][1]["cells"][1]["outcome"], "answered");
    let csv = ws
        .run(&["diff", "fan", "--format", "csv", "--out", "-"])
        .await;
    assert_eq!(
        text(&csv).0.lines().count(),
        5,
        "a header and one line per cell"
    );
    let single = ws.run(&["diff", "nope"]).await;
    assert_ne!(code(&single), 0);
}

/// Headless Chromium, or a failure naming what to install: the browser test is marked
/// ignored, and once asked for it must not pass having opened nothing.
fn chromium() -> std::path::PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
        .expect("this test needs headless Chromium on the PATH: `apt-get install chromium`")
}

/// The page's DOM after its script ran, opened at `fragment`.
async fn rendered(browser: &std::path::Path, page: &std::path::Path, fragment: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}{fragment}", page.display()))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
#[ignore = "needs Chromium: Debian's `chromium` package on the PATH"]
async fn the_html_job_viewer_filters_its_rows_in_a_real_browser() {
    let browser = chromium();
    let ws = Workspace::new();
    two_runs(&ws, true).await;
    let out = ws.path("reports");
    let output = ws
        .run(&[
            "diff",
            "before",
            "after",
            "--format",
            "html",
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let page = out.join("before-vs-after-diff.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["<script src", "<link", "http://", "https://", "@import"] {
        assert!(!html.contains(external), "the page loads {external}");
    }
    let all = html.matches("<tr class=\"job\"").count();
    for (fragment, shown) in [
        ("", all),
        ("#change=regression", 1),
        ("#outcome=fail", 2),
        ("#grader=contains", 2),
        ("#outcome=missing", 1),
        ("#model=claude-haiku-4-5&outcome=fail&change=improvement", 1),
    ] {
        let dom = rendered(&browser, &page, fragment).await;
        let visible = dom.matches("<tr class=\"job\"").count()
            - dom.matches("style=\"display: none;\"").count();
        assert_eq!(visible, shown, "{fragment}");
        assert!(
            dom.contains(&format!("{shown} of {all} jobs shown")),
            "{fragment}: {}",
            dom.lines()
                .find(|l| l.contains("id=\"shown\""))
                .unwrap_or("")
        );
    }
}

/// Two runs of 40 graded jobs in passages of four: all pass in `a`; in `b` the first 30 fail.
async fn a_clear_drop(ws: &Workspace) {
    let mock = mock(MockConfig::default()).await;
    for (name, failing) in [("a", 0), ("b", 30)] {
        let lines: Vec<String> = (0..40)
            .map(|i| {
                let prompt = if i < failing {
                    "say nothing"
                } else {
                    "say alpha"
                };
                let mut line: Value =
                    serde_json::from_str(&job(&format!("q{i}"), prompt, 200, Some("alpha")))
                        .unwrap();
                line["tags"] = json!({"passage": format!("p{}", i / 4)});
                line.to_string()
            })
            .collect();
        let file = ws.write(&format!("{name}.jsonl"), &(lines.join("\n") + "\n"));
        let output = ws
            .run_on(&mock, &["run", file.to_str().unwrap(), "--name", name])
            .await;
        assert_eq!(code(&output), 0, "{name}: {:?}", text(&output));
    }
}

#[tokio::test]
async fn a_diff_says_whether_the_difference_is_real_with_its_error_bars() {
    let ws = Workspace::new();
    a_clear_drop(&ws).await;

    let output = ws
        .run(&["diff", "a", "b", "--format", "json", "--out", "-"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let diff: Value = serde_json::from_str(&text(&output).0).unwrap();
    let score = &diff["comparisons"][0];
    assert_eq!(score["metric"], "score");
    assert_eq!(
        (score["a"].as_str(), score["b"].as_str()),
        (Some("a"), Some("b"))
    );
    assert_eq!(score["n"], 40);
    assert_eq!(score["mean_a"], 1.0);
    assert_eq!(score["mean_b"], 0.25);
    assert_eq!(score["diff"], -0.75);
    // 30 differences of −1 and 10 of 0: s² = (30·0.25² + 10·0.75²) / 39; SE = √(s² / 40).
    let se = ((30.0 * 0.0625 + 10.0 * 0.5625) / 39.0_f64 / 40.0).sqrt();
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&score["se"], se), "{score}");
    assert!(close(&score["ci95"][0], -0.75 - 1.959_963_984_540_054 * se));
    assert!(close(&score["ci95"][1], -0.75 + 1.959_963_984_540_054 * se));
    assert!(score["p_value"].as_f64().unwrap() < 1e-6);
    assert!(close(
        &score["mde80"],
        (1.959_963_984_540_054 + 0.841_621_233_572_914_3) * se
    ));
    assert_eq!(score["clusters"], Value::Null);
    assert_eq!(score["method"], "paired");
    let metrics: Vec<&str> = diff["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metric"].as_str().unwrap())
        .collect();
    assert_eq!(metrics, ["score", "cost_usd", "latency_ms"]);
    assert!(!text(&output).0.contains("NaN"));

    // Clustered on the passage: the cluster sums of d − d̄ are −1 (seven all-failing
    // passages), +1 (the mixed one) and +3 (two all-passing ones): SE = √26 / 40.
    let output = ws
        .run(&[
            "diff",
            "a",
            "b",
            "--format",
            "json",
            "--out",
            "-",
            "--cluster",
            "tag:passage",
        ])
        .await;
    let diff: Value = serde_json::from_str(&text(&output).0).unwrap();
    let score = &diff["comparisons"][0];
    assert!(close(&score["se"], 26.0_f64.sqrt() / 40.0), "{score}");
    assert_eq!(score["clusters"], 10);
    assert_eq!(score["method"], "paired_clustered");

    // The terminal says it in one sentence, and a CI gate can fail on it.
    let output = ws.run(&["diff", "a", "b"]).await;
    assert_eq!(code(&output), 0);
    assert!(
        text(&output)
            .0
            .contains("b − a: −75.0 pts (95% CI −88.6 to −61.4, p < 0.001)"),
        "{}",
        text(&output).0
    );
    let output = ws
        .run(&["diff", "a", "b", "--fail-on-significant-drop"])
        .await;
    assert_eq!(code(&output), 4, "{:?}", text(&output));
    let output = ws
        .run(&["diff", "b", "a", "--fail-on-significant-drop"])
        .await;
    assert_eq!(code(&output), 0, "a rise is no drop: {:?}", text(&output));
    let output = ws.run(&["diff", "a", "b", "--cluster", "passage"]).await;
    assert_eq!(code(&output), 2);
    assert!(text(&output).1.contains("tag:NAME"), "{:?}", text(&output));
}

#[tokio::test]
async fn the_models_of_one_run_are_compared_with_the_first_or_the_baseline() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let lines: Vec<String> = (0..30)
        .map(|i| job(&format!("q{i}"), "say alpha", 200, Some("alpha")))
        .collect();
    let file = ws.write("fan.jsonl", &(lines.join("\n") + "\n"));
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "fan",
                "--models",
                "claude-sonnet-4-6,claude-haiku-4-5",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let comparisons = |extra: &'static [&'static str]| {
        let ws = &ws;
        async move {
            let mut args = vec!["diff", "fan", "--format", "json", "--out", "-"];
            args.extend(extra);
            let output = ws.run(&args).await;
            assert_eq!(code(&output), 0, "{:?}", text(&output));
            let matrix: Value = serde_json::from_str(&text(&output).0).unwrap();
            matrix["comparisons"].as_array().unwrap().clone()
        }
    };
    // The first listed model is the baseline, not the first in alphabetical order.
    let by_default = comparisons(&[]).await;
    assert_eq!(by_default[0]["a"], "claude-sonnet-4-6");
    assert_eq!(by_default[0]["b"], "claude-haiku-4-5");
    // Every job passes under both: all ties, said in words, with null figures.
    assert_eq!(by_default[0]["n"], 30);
    assert_eq!(by_default[0]["se"], Value::Null);
    assert_eq!(by_default[0]["reason"], "all_ties");
    let swapped = comparisons(&["--baseline", "claude-haiku-4-5"]).await;
    assert_eq!(swapped[0]["a"], "claude-haiku-4-5");
    let output = ws
        .run(&["diff", "fan", "--baseline", "claude-opus-4-6"])
        .await;
    assert_eq!(code(&output), 2);
    assert!(
        text(&output).1.contains("no jobs of that model"),
        "{:?}",
        text(&output)
    );
}

/// Runs `before` and `after` of `jobs` jobs each, over haiku and sonnet, with `args` more.
async fn runs_over_two_models(ws: &Workspace, jobs: usize, args: &[&str]) {
    let mock = mock(MockConfig::default()).await;
    let lines: Vec<String> = (0..jobs)
        .map(|i| {
            json!({"custom_id": format!("job-{i}"), "params": {"max_tokens": 50,
                "messages": [{"role": "user", "content": "hi"}]}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    for name in ["before", "after"] {
        let mut run = vec!["run", file.to_str().unwrap()];
        run.extend([
            "--models",
            "claude-haiku-4-5,claude-sonnet-4-6",
            "--name",
            name,
        ]);
        run.extend(args);
        let output = ws.run_on(&mock, &run).await;
        assert_eq!(code(&output), 0, "{:?}", text(&output));
    }
}

/// Each answer's stored cost fits an `i64`, a run's sum of them does not (a store written by
/// hand; no answer can hold such usage): `diff` says so, for two runs and for one run's
/// models, and does not panic or show a wrapped figure.
#[tokio::test]
async fn a_sum_of_stored_costs_beyond_an_i64_is_said_not_wrapped() {
    let ws = Workspace::new();
    runs_over_two_models(&ws, 2, &[]).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", ws.db().display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE results SET cost_pico_usd = 5000000000000000000
         WHERE job IN (SELECT j.id FROM jobs j JOIN runs r ON r.id = j.run_id
                       WHERE r.name = 'after' AND j.model = 'claude-haiku-4-5')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    for args in [
        ["diff", "before", "after", "--format", "json", "--out", "-"].as_slice(),
        &["diff", "after", "--format", "json", "--out", "-"],
    ] {
        let output = ws.run(args).await;
        let (stdout, stderr) = text(&output);
        assert_ne!(code(&output), 0, "{args:?}\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("beyond what msgbatch counts") && !stderr.contains("panicked"),
            "{args:?}\n{stderr}"
        );
    }
}

/// A store whose rows of one job are not in one stretch (written by hand: msgbatch stores a
/// job's rows together) is said, naming the job, by a diff of two runs and by a run's models
/// compared, rather than counted as two jobs.
#[tokio::test]
async fn a_job_whose_rows_are_not_stored_together_is_said_not_miscounted() {
    let ws = Workspace::new();
    runs_over_two_models(&ws, 3, &["--repeat", "2"]).await;
    for args in [
        ["diff", "before", "after", "--format", "json", "--out", "-"].as_slice(),
        &["diff", "before", "--format", "json", "--out", "-"],
    ] {
        let output = ws.run(args).await;
        assert_eq!(code(&output), 0, "{args:?} {:?}", text(&output));
    }
    // The second sample of job-1 on haiku in `before` moved past every other row.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", ws.db().display()))
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    for sql in [
        "PRAGMA foreign_keys = OFF",
        "CREATE TEMP TABLE moved AS
         SELECT j.id AS old, (SELECT MAX(id) + 1 FROM jobs) AS new FROM jobs j
         JOIN runs r ON r.id = j.run_id
         WHERE r.name = 'before' AND j.job_id = 'job-1' AND j.model = 'claude-haiku-4-5'
           AND j.sample = 1",
        "UPDATE jobs SET id = (SELECT new FROM moved) WHERE id = (SELECT old FROM moved)",
        "UPDATE results SET job = (SELECT new FROM moved) WHERE job = (SELECT old FROM moved)",
        "UPDATE attempts SET job = (SELECT new FROM moved) WHERE job = (SELECT old FROM moved)",
        "UPDATE grades SET job = (SELECT new FROM moved) WHERE job = (SELECT old FROM moved)",
    ] {
        sqlx::query(sql).execute(&mut *conn).await.unwrap();
    }
    drop(conn);
    pool.close().await;

    for (args, said) in [
        (
            ["diff", "before", "after", "--format", "json", "--out", "-"].as_slice(),
            "the samples of job job-1 on claude-haiku-4-5 are not stored together",
        ),
        (
            &["diff", "before", "--format", "json", "--out", "-"],
            "the rows of job job-1 are not stored together",
        ),
    ] {
        let output = ws.run(args).await;
        let (stdout, stderr) = text(&output);
        assert_ne!(code(&output), 0, "{args:?}\n{stdout}\n{stderr}");
        assert!(stderr.contains(said), "{args:?}\n{stderr}");
    }
}
