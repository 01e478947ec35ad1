//! Cache warm-up: a prefix shared by many jobs is written once, by the first job of its group,
//! and read by the rest, against a mock that (like the API) makes an entry readable only once
//! the response that writes it has begun.

use std::time::Duration;

use msgbatch::mock::MockConfig;
use serde_json::json;

use crate::common::*;

/// `groups` shared system prompts of about 2,300 tokens, `per_group` questions each, and
/// `plain` jobs without a cache prefix.
fn file(ws: &Workspace, groups: usize, per_group: usize, plain: usize) -> std::path::PathBuf {
    let mut lines = Vec::new();
    for g in 0..groups {
        let system = format!("Document {g}: {}", "policy text ".repeat(770));
        for q in 0..per_group {
            lines.push(
                json!({"custom_id": format!("g{g}-q{q}"), "params": {
                    "model": "claude-sonnet-4-6", "max_tokens": 50,
                    "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
                    "messages": [{"role": "user", "content": format!("question {q}")}]}})
                .to_string(),
            );
        }
    }
    for p in 0..plain {
        lines.push(
            json!({"custom_id": format!("plain-{p}"), "params": {"model": "claude-sonnet-4-6",
                "max_tokens": 50, "messages": [{"role": "user", "content": format!("plain {p}")}]}})
            .to_string(),
        );
    }
    ws.write("cached.jsonl", &(lines.join("\n") + "\n"))
}

/// A gateway slow to begin its answers. What the tests count (writes, reads, jobs held, the
/// first requests) is settled by the order of two events: the run reading and sending its
/// first jobs, and the warmer's first token. Half a second to that token keeps the first event
/// ahead on a loaded machine, where 100 ms was a narrow margin; the counts are unchanged.
fn slow_mock() -> MockConfig {
    MockConfig {
        latency: Duration::from_millis(250),
        first_token_delay: Duration::from_millis(250),
        ..MockConfig::default()
    }
}

/// (results that wrote the prefix, results that read it, jobs held for a warmer) of a run.
async fn writes(ws: &Workspace, run: &str) -> (i64, i64, i64) {
    let row: (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(r.cache_creation_input_tokens > 0), 0),
                COALESCE(SUM(r.cache_read_input_tokens > 0), 0),
                COALESCE(SUM(r.held_for_warmup), 0)
         FROM results r JOIN jobs j ON j.id = r.job JOIN runs u ON u.id = j.run_id
         WHERE u.name = ?1",
    )
    .bind(run)
    .fetch_one(&ws.pool().await)
    .await
    .unwrap();
    row
}

#[tokio::test]
async fn a_shared_prefix_is_written_once_and_read_by_the_rest_of_its_group() {
    let ws = Workspace::new();
    let file = file(&ws, 1, 40, 0);
    let path = file.to_str().unwrap();

    let warm_gateway = mock(slow_mock()).await;
    let output = ws
        .run_on(
            &warm_gateway,
            &["run", path, "--name", "warm", "--concurrency", "16"],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let (written, read, held) = writes(&ws, "warm").await;
    assert_eq!((written, read), (1, 39), "one write, then reads");
    assert!(held >= 15, "the first wave waited for the warmer: {held}");
    // The report counts the writes per prefix and prices what waiting saved: each held job
    // read its ~2,300 tokens at $0.30 instead of writing them at $3.75 (Sonnet 4.6).
    let cache = &ws.report_json("warm").await["totals"][0]["cache"];
    assert_eq!(
        (cache["prefixes"].as_i64(), cache["writes"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(cache["writes_avoided"].as_i64(), Some(held));
    let saved = cache["warmup_saved_pico_usd"].as_i64().unwrap();
    assert!(saved > held * 2_000 * 3_450_000, "saved {saved}");
    let (table, _) = text(&ws.run(&["report", "warm"]).await);
    assert!(
        table.contains(&format!(
            "claude-sonnet-4-6: 1 writes over 1 prefix: 1.0 per prefix; warm-up avoided {held} writes"
        )),
        "{table}"
    );

    // The same file without warm-up, on a fresh gateway cache: the first requests all write.
    let cold_gateway = mock(slow_mock()).await;
    let output = ws
        .run_on(
            &cold_gateway,
            &[
                "run",
                path,
                "--name",
                "cold",
                "--concurrency",
                "16",
                "--no-warmup",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let (written, _, held) = writes(&ws, "cold").await;
    // A run starts with four requests in flight: without warm-up all four write.
    assert!(
        written >= 4,
        "without warm-up {written} jobs wrote the prefix"
    );
    assert_eq!(held, 0);
    let cache = &ws.report_json("cold").await["totals"][0]["cache"];
    assert_eq!(cache["writes"].as_i64(), Some(written));
    assert_eq!(cache["writes_avoided"].as_i64(), Some(0));
}

#[tokio::test]
async fn each_group_is_warmed_once_while_other_jobs_keep_the_workers_busy() {
    let ws = Workspace::new();
    let file = file(&ws, 3, 6, 12);
    let mock = mock(slow_mock()).await;
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "groups",
                "--concurrency",
                "8",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let (written, read, _) = writes(&ws, "groups").await;
    assert_eq!((written, read), (3, 15));
    // The plain jobs did not wait behind the warmers: the mock saw one of them among the
    // first requests, with the three warmers.
    let first_wave: Vec<String> = mock.log()[..8]
        .iter()
        .map(|l| l.prompt().unwrap_or_default())
        .collect();
    assert!(
        first_wave.iter().any(|t| t.starts_with("plain")),
        "{first_wave:?}"
    );
}
