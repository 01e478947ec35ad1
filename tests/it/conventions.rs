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
