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

/// Headless Chromium, where it is installed. Without it the browser test is skipped with one
/// line, unless `MSGBATCH_REQUIRE_CHROMIUM` is set (as `.ci/run` sets it), which fails it.
fn chromium() -> Option<std::path::PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        });
    if found.is_none() {
        assert!(
            std::env::var_os("MSGBATCH_REQUIRE_CHROMIUM").is_none(),
            "MSGBATCH_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        #[expect(clippy::print_stderr, reason = "a skipped check says so once")]
        {
            eprintln!(
                "skipped: no chromium installed, so the HTML viewer was not checked in a browser"
            );
        }
    }
    found
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
async fn the_html_job_viewer_filters_its_rows_in_a_real_browser() {
    let Some(browser) = chromium() else {
        return;
    };
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
