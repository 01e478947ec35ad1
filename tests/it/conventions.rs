//! Command-line conventions a user meets on the first evening: list flags that take one value
//! each, JSON output for scripts, help grouped under headings, a pass-rate gate for CI, and a
//! README whose sample output and toolchain are those of the code.

use msgbatch::cli::{Cli, Command};
use msgbatch::mock::MockConfig;
use serde_json::{Value, json};

use crate::common::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    use clap::Parser as _;
    Cli::try_parse_from(std::iter::once("msgbatch").chain(args.iter().copied()))
}

fn run_models(cli: &Cli) -> (Vec<String>, String) {
    match &cli.command {
        Command::Run(args) => (
            args.jobs.models.clone(),
            args.jobs.file.display().to_string(),
        ),
        other => panic!("not a run: {other:?}"),
    }
}

#[test]
fn models_take_one_list_per_flag_and_leave_the_file_alone() {
    let cli = parse(&["run", "--models", "a,b", "prompts.jsonl"]).expect("a comma list parses");
    assert_eq!(
        run_models(&cli),
        (vec!["a".into(), "b".into()], "prompts.jsonl".into())
    );

    let cli = parse(&["run", "--models", "a", "--models", "b", "prompts.jsonl"])
        .expect("a repeated flag parses");
    assert_eq!(
        run_models(&cli),
        (vec!["a".into(), "b".into()], "prompts.jsonl".into())
    );

    // Space-separated models: the second is taken as the file, and the real file is refused
    // by name instead of being swallowed as a model.
    let error = parse(&["run", "--models", "a", "b", "prompts.jsonl"])
        .expect_err("space-separated models are refused");
    assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
    assert!(error.to_string().contains("prompts.jsonl"), "{error}");

    let cli = parse(&["estimate", "--models", "a,b", "prompts.jsonl"]).expect("estimate too");
    match cli.command {
        Command::Estimate(args) => {
            assert_eq!(args.jobs.models, ["a", "b"]);
            assert_eq!(args.jobs.file.display().to_string(), "prompts.jsonl");
        }
        other => panic!("not an estimate: {other:?}"),
    }
}

/// Four jobs graded on the mock's answer ("Answer to: <prompt>. …"): two pass, two fail.
fn half_passing(ws: &Workspace) -> std::path::PathBuf {
    let job = |id: &str, expect: Value| {
        json!({"custom_id": id, "params": {"model": "claude-haiku-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": id}]}, "expect": expect})
        .to_string()
    };
    let lines = [
        job("pass-1", json!({"contains": "pass-1"})),
        job("pass-2", json!({"contains": "pass-2"})),
        job("fail-1", json!({"contains": "never said"})),
        job("fail-2", json!({"equals": "nope"})),
    ];
    ws.write("graded.jsonl", &(lines.join("\n") + "\n"))
}

fn json_stdout(output: &std::process::Output) -> Value {
    let (stdout, stderr) = text(output);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{stdout}\n{stderr}"))
}

#[tokio::test]
async fn run_status_and_estimate_print_json_alone_on_stdout() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = half_passing(&ws);
    let file = file.to_str().unwrap();

    let output = ws
        .run_on(&mock, &["run", file, "--name", "night", "--format", "json"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let summary = json_stdout(&output);
    assert_eq!(summary["run"]["name"], "night");
    assert_eq!(summary["run"]["id"], 1);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["jobs"]["succeeded"], 4);
    assert_eq!(summary["jobs"]["failed"], 0);
    assert_eq!(summary["jobs"]["total"], 4);
    assert!(
        summary["tokens"]["input"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["tokens"]["output"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["cost"]["total_pico_usd"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(summary["grading"]["graded"], 4);
    assert_eq!(summary["grading"]["passed"], 2);
    assert_eq!(summary["grading"]["pass_rate"], 0.5);
    assert!(summary["elapsed_ms"].is_u64(), "{summary}");
    assert_eq!(summary["exit_code"], 0);

    let output = ws.run(&["status", "--format", "json"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let status = json_stdout(&output);
    let runs = status["runs"].as_array().expect("a list of runs");
    assert_eq!(runs.len(), 1, "{status}");
    assert_eq!(runs[0]["name"], "night");
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[0]["jobs"]["succeeded"], 4);
    assert_eq!(runs[0]["jobs"]["pending"], 0);
    assert_eq!(
        runs[0]["spend_pico_usd"], summary["cost"]["total_pico_usd"],
        "{status}"
    );

    let output = ws.run(&["status", "night", "--format", "json"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let one = json_stdout(&output);
    assert_eq!(one["runs"][0]["input"]["format"], "JSONL");
    assert!(one["runs"][0]["input"]["sha256"].is_string(), "{one}");

    let output = ws
        .run(&["estimate", file, "--mock", "--format", "json"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let estimate = json_stdout(&output);
    assert_eq!(estimate["input_source"], "count_tokens");
    let models = estimate["models"].as_array().expect("a list of models");
    assert_eq!(models.len(), 1, "{estimate}");
    assert_eq!(models[0]["model"], "claude-haiku-4-5");
    assert_eq!(models[0]["jobs"], 4);
    assert!(
        models[0]["input_tokens"].as_u64().unwrap() > 0,
        "{estimate}"
    );
    assert!(
        estimate["expected_pico_usd"].as_u64().unwrap()
            <= estimate["worst_pico_usd"].as_u64().unwrap(),
        "{estimate}"
    );
    assert_eq!(estimate["complete"], true);
}

fn help(output: &std::process::Output) -> String {
    assert_eq!(code(output), 0, "{:?}", text(output));
    text(output).0
}

#[tokio::test]
async fn help_is_grouped_and_lists_only_what_the_command_uses() {
    let ws = Workspace::new();
    let run = help(&ws.run(&["run", "--help"]).await);
    for heading in [
        "Input:", "Gateway:", "Limits:", "Budget:", "Batches:", "Mock:", "Output:",
    ] {
        assert!(
            run.lines().any(|line| line == heading),
            "no `{heading}` heading in run --help:\n{run}"
        );
    }
    assert!(run.contains("--fail-under"), "{run}");

    let estimate = help(&ws.run(&["estimate", "--help"]).await);
    // Flags an estimate never reads: budget, token limits, warm-up, leases, batch packing
    // and polling, streaming delays of a mock that only counts tokens.
    for unused in [
        "--max-cost",
        "--itpm",
        "--otpm",
        "--no-warmup",
        "--lease",
        "--batch-max-requests",
        "--batch-max-mb",
        "--poll-interval",
        "--batch-rpm",
        "--batch-queue",
        "--stream-idle-timeout",
        "--mock-first-token-ms",
        "--mock-token-ms",
        "--fail-under",
        "--stream ",
        "--expect-mode",
    ] {
        assert!(
            !estimate.contains(unused),
            "estimate --help lists {unused}, which does nothing for it:\n{estimate}"
        );
    }
    for used in ["--concurrency", "--rpm", "--via", "--format", "--models"] {
        assert!(estimate.contains(used), "{used} missing:\n{estimate}");
    }
    assert!(
        estimate.lines().count() < run.lines().count(),
        "estimate --help is no shorter than run --help"
    );
}

#[tokio::test]
async fn fail_under_gates_the_exit_code_on_the_pass_rate() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = half_passing(&ws);
    let file = file.to_str().unwrap();

    // Two of four pass: 50% meets a 50% gate and misses a 0.75 one.
    let output = ws
        .run_on(
            &mock,
            &["run", file, "--name", "met", "--fail-under", "50%"],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));

    let output = ws
        .run_on(
            &mock,
            &["run", file, "--name", "missed", "--fail-under", "0.75"],
        )
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 5, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("pass rate 50.0% (2 of 4 graded) is below --fail-under 75.0%"),
        "{stderr}"
    );
    // The run itself completed: only the gate failed.
    assert!(stdout.contains("run missed (id 2): completed"), "{stdout}");

    // Resume takes the same gate, over the whole run.
    let output = ws.run(&["resume", "missed", "--fail-under", "80%"]).await;
    assert_eq!(code(&output), 5, "{:?}", text(&output));
    let output = ws.run(&["resume", "missed", "--fail-under", "0.5"]).await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));

    // A rate that is neither a fraction nor a percentage is refused before anything is sent.
    let output = ws
        .run_on(&mock, &["run", file, "--name", "bad", "--fail-under", "75"])
        .await;
    assert_eq!(code(&output), 2, "{:?}", text(&output));
    assert!(
        text(&output).1.contains("--fail-under"),
        "{:?}",
        text(&output)
    );
}

/// The README as the repository holds it.
fn readme() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(path).expect("the README is readable")
}

/// Run names carry their start time, and the time line the session's: both change each run.
fn steady(line: &str) -> String {
    let stamp = regex::Regex::new(r"example-\d{8}-\d{6}").expect("a valid pattern");
    let line = stamp.replace_all(line, "example-[STAMP]");
    if line.starts_with("  time    ") {
        "  time    [TIME]".to_owned()
    } else {
        line.into_owned()
    }
}

#[tokio::test]
async fn the_readme_sample_is_what_its_first_command_prints() {
    let readme = readme();
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|line| *line == "```sh")
        .expect("the README has a shell block");
    let command = lines.next().expect("a first command");
    let (cargo, args) = command
        .split_once(" -- ")
        .expect("the first command is `cargo run … -- ARGS`");
    assert!(cargo.starts_with("cargo run"), "{command}");
    let args: Vec<&str> = args
        .split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // The end of the shell block, then the start of the sample's.
    lines
        .by_ref()
        .find(|line| *line == "```")
        .expect("the shell block ends");
    lines
        .by_ref()
        .find(|line| *line == "```")
        .expect("a sample output block after the command");
    let sample: Vec<String> = lines
        .take_while(|line| *line != "```")
        .take_while(|line| *line != "…")
        .map(steady)
        .collect();
    assert!(sample.len() > 10, "the sample is too short: {sample:?}");

    let ws = Workspace::new();
    let output = ws
        .command(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("the binary runs");
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    let printed: Vec<String> = stdout.lines().take(sample.len()).map(steady).collect();
    assert_eq!(
        printed, sample,
        "the README's sample output is stale: it should read\n{stdout}"
    );
}

#[test]
fn the_readme_states_the_toolchain_cargo_toml_needs() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    )
    .expect("Cargo.toml is readable");
    let field = |name: &str| {
        manifest
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("Cargo.toml has no {name}"))
    };
    let readme = readme();
    let version = field("rust-version");
    assert!(
        readme.contains(&format!("Rust {version} or later")),
        "the README does not say the crate needs Rust {version}"
    );
    assert!(
        readme.contains(&format!("edition {}", field("edition"))),
        "the README does not name the edition"
    );
    assert!(
        readme.contains("C compiler"),
        "the README does not say a C compiler is needed"
    );
    assert!(
        !readme.contains("Rust (stable)"),
        "the README still says any stable Rust will do"
    );
}

/// A job of the mock's (which echoes the prompt), optionally tagged and graded.
fn echo_job(id: &str, prompt: &str, max_tokens: u64, tag: &str, expect: Option<Value>) -> String {
    let mut line = json!({"custom_id": id, "params": {"model": "claude-haiku-4-5",
        "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]},
        "tags": {"set": tag}});
    if let Some(expect) = expect {
        line["expect"] = expect;
    }
    line.to_string()
}

async fn run_file(ws: &Workspace, mock: &msgbatch::mock::MockServer, name: &str, lines: &[String]) {
    let file = ws.write(&format!("{name}.jsonl"), &(lines.join("\n") + "\n"));
    let output = ws
        .run_on(
            mock,
            &["run", file.to_str().unwrap(), "--name", name, "--quiet"],
        )
        .await;
    assert!(
        [0, 1].contains(&code(&output)),
        "{name}: {:?}",
        text(&output)
    );
}

#[tokio::test]
async fn the_report_table_names_groups_in_full_counts_whole_and_warns_once_per_run() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let long_tag = "customer-support-escalations-2026";
    // Every answer is cut at 3 tokens, in both runs: one warning each, naming its run.
    let lines: Vec<String> = (0..4)
        .map(|i| echo_job(&format!("j{i}"), "tell me everything", 3, long_tag, None))
        .collect();
    run_file(&ws, &mock, "first", &lines).await;
    let more: Vec<String> = (0..6)
        .map(|i| echo_job(&format!("j{i}"), "tell me everything", 3, long_tag, None))
        .collect();
    run_file(&ws, &mock, "second", &more).await;

    let output = ws
        .run(&[
            "report", "first", "second", "--by", "tag:set", "--format", "table",
        ])
        .await;
    let (table, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{table}\n{stderr}");
    let cost: Vec<&str> = table
        .lines()
        .skip_while(|line| !line.starts_with("COST"))
        .take_while(|line| !line.is_empty())
        .collect();
    assert!(
        cost.iter().any(|line| line.contains(long_tag)),
        "the COST table cuts the group name:\n{table}"
    );
    // Output tokens compared between runs read as counts, not as 12.0000.
    let compared = table
        .lines()
        .find(|line| line.contains("output_tokens"))
        .unwrap_or_else(|| panic!("no output_tokens difference:\n{table}"));
    assert!(
        compared.contains(" 12 → ") && compared.contains("18") && !compared.contains(".0000"),
        "{compared}"
    );

    let output = ws
        .run(&[
            "report", "first", "second", "--format", "json", "--out", "-",
        ])
        .await;
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(Value::as_str)
        .filter(|w| w.contains("stopped at max_tokens"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("run first"), "{warnings:?}");
    assert!(warnings[1].contains("run second"), "{warnings:?}");
}

#[tokio::test]
async fn diff_json_spells_each_change_once_and_a_grade_flip_outranks_its_stop_reason() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let stop = json!({"stop_reason": "end_turn"});
    // `flip` is cut at 3 tokens and fails before, answers in full and passes after: its stop
    // reason changed too, but what matters is that it now passes. `cut` is newly truncated.
    let before = [
        echo_job("flip", "say it all", 3, "a", Some(stop.clone())),
        echo_job(
            "cut",
            "a long prompt that the answer repeats",
            200,
            "a",
            None,
        ),
    ];
    let after = [
        echo_job("flip", "say it all", 200, "a", Some(stop)),
        echo_job("cut", "a long prompt that the answer repeats", 3, "a", None),
    ];
    run_file(&ws, &mock, "before", &before).await;
    run_file(&ws, &mock, "after", &after).await;

    let output = ws
        .run(&["diff", "before", "after", "--format", "json", "--out", "-"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let diff: Value = serde_json::from_slice(&output.stdout).expect("a JSON diff");
    let change = |id: &str| {
        diff["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["job_id"] == id)
            .map(|r| r["change"].clone())
            .unwrap_or_else(|| panic!("{id} not listed: {diff}"))
    };
    assert_eq!(change("flip"), "improvement", "{diff}");
    assert_eq!(change("cut"), "newly_truncated", "{diff}");
    let counts = diff["totals"]["counts"].as_object().expect("counts");
    assert_eq!(counts.get("improvement"), Some(&json!(1)), "{diff}");
    assert_eq!(counts.get("newly_truncated"), Some(&json!(1)), "{diff}");
    assert!(
        counts.keys().all(|k| !k.contains(' ')),
        "counts are keyed in another spelling than the rows: {diff}"
    );
}

#[tokio::test]
async fn streams_that_arrive_at_once_do_not_make_millions_of_tokens_a_second() {
    let ws = Workspace::new();
    // Every answer waits 100 ms and then streams in one go.
    let mock = mock(MockConfig {
        latency: std::time::Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let lines: Vec<String> = (0..6)
        .map(|i| {
            json!({"custom_id": format!("s{i}"), "params": {"model": "claude-haiku-4-5",
                "max_tokens": 400, "stream": true,
                "messages": [{"role": "user", "content": format!("stream number {i} please")}]}})
            .to_string()
        })
        .collect();
    run_file(&ws, &mock, "streamed", &lines).await;
    let report = ws.report_json("streamed").await;
    let total = &report["totals"][0];
    assert!(total["ttft_ms"]["count"].as_u64().unwrap() > 0, "{total}");
    let rate = total["output_tokens_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no rate: {total}"));
    // Answers of tens of tokens, each taking 100 ms or more: a few hundred a second at most.
    assert!(rate < 5_000.0, "{rate} output tokens/s: {total}");
}

#[tokio::test]
async fn html_charts_keep_legends_off_the_data_and_labels_apart() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // Eight groups with names too long to sit side by side under their bars.
    let lines: Vec<String> = (0..16)
        .map(|i| {
            let max_tokens = if i % 3 == 0 { 400 } else { 20 };
            echo_job(
                &format!("j{i}"),
                &format!("prompt {i}"),
                max_tokens,
                &format!("support-escalations-{}", i % 8),
                None,
            )
        })
        .collect();
    run_file(&ws, &mock, "eight", &lines).await;
    let output = ws
        .run(&[
            "report", "eight", "--by", "tag:set", "--format", "html", "--out", "-",
        ])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let page = String::from_utf8_lossy(&output.stdout).into_owned();
    let text_at = |content: &str| -> Vec<(i64, String)> {
        let pattern = regex::Regex::new(&format!(
            r#"<text x="-?\d+" y="(-?\d+)"([^>]*)>\s*{}\s*</text>"#,
            regex::escape(content)
        ))
        .expect("a valid pattern");
        pattern
            .captures_iter(&page)
            .map(|c| (c[1].parse().expect("a number"), c[2].to_owned()))
            .collect()
    };
    // The cost chart's legend ("cache write") sits under its 380-pixel plot, not inside it.
    let legend = text_at("cache write");
    assert!(!legend.is_empty(), "no cost legend");
    assert!(
        legend.iter().all(|(y, _)| *y >= 380),
        "the legend is drawn over the plot: {legend:?}"
    );
    // Each bar's label runs downwards, so that eight of them do not run into each other.
    let labels = text_at("support-escalations-3");
    let turned = labels
        .iter()
        .filter(|(_, attributes)| attributes.contains("rotate(90"))
        .count();
    assert!(turned >= 2, "bar labels are not turned: {labels:?}");
    // A run of a second or so is drawn over seconds, not squashed into a minute.
    assert!(
        page.contains("seconds since the run"),
        "the spend chart is not scaled to the run"
    );
}

#[tokio::test]
async fn a_json_summary_of_a_stopped_run_still_says_how_to_go_on() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "tight",
                "--max-cost",
                "0.0000001",
                "--format",
                "json",
            ],
        )
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 3, "{:?}", text(&output));
    let summary = json_stdout(&output);
    assert_eq!(summary["status"], "budget_exhausted", "{summary}");
    assert_eq!(summary["exit_code"], 3);
    assert_eq!(summary["resume"], "msgbatch resume tight");
    assert!(
        stderr.contains("resume with a higher budget: msgbatch resume tight --max-cost USD"),
        "{stderr}"
    );
}
