//! Today's models priced: the built-in table through a whole run, tiers in the report, and
//! models without a price named before anything is sent.

use msgbatch::mock::MockConfig;
use serde_json::{Value, json};
use sqlx::Row;

use crate::common::{Workspace, code, count, mock, text};

fn job(id: &str, model: &str, prompt: &str) -> String {
    json!({"custom_id": id, "params": {"model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}]}})
    .to_string()
}

#[tokio::test]
async fn current_models_are_priced_and_a_long_haiku_5_5_prompt_is_billed_at_its_tier() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // 400,000 bytes are 130,000 tokens with the newer tokenizer: over Haiku 5.5's 100K tier.
    let long = "w".repeat(400_000);
    let file = ws.write(
        "today.jsonl",
        &[
            job("opus", "claude-opus-5-5", "short question"),
            job("fable", "claude-fable-5-1", "short question"),
            job("haiku-short", "claude-haiku-5-5", "short question"),
            job("haiku-long", "claude-haiku-5-5", &long),
        ]
        .join("\n"),
    );
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--name", "today"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("no price"), "{stderr}");
    assert!(!stdout.contains("incomplete"), "{stdout}");

    // Each stored cost is the published rates times the stored usage, at the request's tier.
    let pool = ws.pool().await;
    let rows = sqlx::query(
        "SELECT j.job_id, r.input_tokens, r.cache_read_input_tokens, r.output_tokens,
                r.cost_pico_usd
         FROM results r JOIN jobs j ON j.id = r.job ORDER BY j.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected_rates = [
        ("opus", 4_000_000, 20_000_000),
        ("fable", 10_000_000, 50_000_000),
        ("haiku-short", 100_000, 500_000),
        ("haiku-long", 500_000, 2_500_000),
    ];
    for (row, (id, input_rate, output_rate)) in rows.iter().zip(expected_rates) {
        assert_eq!(row.get::<String, _>(0), id);
        let input: i64 = row.get(1);
        let output: i64 = row.get(3);
        assert_eq!(row.get::<i64, _>(2), 0, "no cache in these jobs");
        assert_eq!(
            row.get::<i64, _>(4),
            input * input_rate + output * output_rate,
            "{id}"
        );
    }
    let long_input: i64 = rows[3].get(1);
    assert!(
        long_input > 100_000,
        "the long prompt is {long_input} tokens"
    );

    // The report names the tier the long prompt was billed at.
    let output = ws.run(&["report", "today"]).await;
    let (report, _) = text(&output);
    assert!(
        report.contains(
            "claude-haiku-5-5: 1 result billed at the rate for prompts over 100,000 input tokens"
        ),
        "{report}"
    );
    let output = ws
        .run(&["report", "today", "--format", "json", "--out", "-"])
        .await;
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let haiku = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "claude-haiku-5-5")
        .unwrap();
    assert_eq!(
        haiku["cost"]["above_base"][0]["above_input_tokens"],
        100_000
    );
    assert_eq!(haiku["cost"]["above_base"][0]["results"], 1);
}

#[tokio::test]
async fn a_model_without_a_price_is_named_before_sending_and_its_tokens_still_show() {
    let ws = Workspace::new();
    // A gateway serving a model the price table does not know.
    let mock = mock(MockConfig {
        models: vec!["claude-nova-9".to_owned()],
        ..MockConfig::default()
    })
    .await;
    let file = ws.write(
        "mixed.jsonl",
        &[
            job("a", "claude-sonnet-5-5", "hello"),
            job("b", "claude-nova-9", "hello"),
            job("c", "claude-nova-9", "again"),
        ]
        .join("\n"),
    );
    let path = file.to_str().unwrap();

    // With a budget, nothing is sent: the cost of those answers could not be bounded.
    let output = ws
        .run_on(&mock, &["run", path, "--name", "capped", "--max-cost", "5"])
        .await;
    let (_, stderr) = text(&output);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("no price for `claude-nova-9`"), "{stderr}");
    assert!(stderr.contains("--prices FILE"), "{stderr}");
    assert_eq!(mock.requests(), 0, "nothing may be sent");

    // Without one, the run warns first, then runs, and says what its cost leaves out.
    let output = ws.run_on(&mock, &["run", path, "--name", "open"]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stdout}\n{stderr}");
    assert_eq!(
        stderr
            .matches("warning: no price for model `claude-nova-9` (2 jobs to send)")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("--prices FILE"), "{stderr}");
    let cost_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("cost"))
        .unwrap();
    assert!(
        cost_line.contains("incomplete: 2 results of `claude-nova-9` left out"),
        "{cost_line}"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM results r JOIN jobs j ON j.id = r.job
             WHERE j.model = 'claude-nova-9' AND r.cost_pico_usd IS NULL AND r.input_tokens > 0"
        )
        .await,
        2
    );
    let output = ws
        .run(&["report", "open", "--format", "json", "--out", "-"])
        .await;
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let nova = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "claude-nova-9")
        .unwrap();
    assert!(nova["tokens"]["input"].as_i64().unwrap() > 0);
    assert!(nova["tokens"]["output"].as_i64().unwrap() > 0);
    assert_eq!(nova["cost"]["complete"], false);
    assert_eq!(nova["cost"]["total_pico_usd"], 0);

    // The estimate warns too, and `prices` lists what a gateway file would have to add.
    let output = ws
        .run(&["estimate", path, "--no-count-tokens", "--mock"])
        .await;
    let (_, stderr) = text(&output);
    assert!(
        stderr.contains("warning: no price for model `claude-nova-9`"),
        "{stderr}"
    );
    let output = ws.run(&["prices", "--models", "claude-nova-9"]).await;
    assert_eq!(code(&output), 2);
}

#[tokio::test]
async fn prices_prints_the_table_in_force_with_its_tiers_and_source() {
    let ws = Workspace::new();
    let output = ws
        .run(&["prices", "--models", "claude-haiku-5-5,claude-opus-5-5"])
        .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stdout.contains("read 2026-11-28"), "{stdout}");
    let haiku = stdout
        .lines()
        .find(|l| l.starts_with("claude-haiku-5-5"))
        .unwrap();
    assert!(haiku.contains("$0.10") && haiku.contains("$0.125") && haiku.contains("$0.01"));
    assert!(
        stdout.contains("prompts over 100,000 input tokens"),
        "{stdout}"
    );

    // A gateway's own file replaces the built-in table.
    let file = ws.write(
        "gw.toml",
        "source = \"gateway rate card\"\n[models.claude-opus-5-5]\ninput = 3.0\ncache_write_5m = 3.75\ncache_write_1h = 6.0\ncache_read = 0.15\noutput = 15.0\n",
    );
    let output = ws
        .run(&[
            "prices",
            "--prices",
            file.to_str().unwrap(),
            "--format",
            "json",
        ])
        .await;
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["source"], "gateway rate card");
    assert_eq!(json["models"][0]["model"], "claude-opus-5-5");
    assert_eq!(json["models"][0]["rates"]["cache_read"], 150_000);
}
