//! Reports from a fixture database with known usage: costs checked against hand-computed
//! figures, percentiles against their definition, and every format produced and read back.

use msgbatch::cli::SendArgs;
use msgbatch::jobs::Defaults;
use msgbatch::message::Usage;
use msgbatch::pricing::PriceTable;
use msgbatch::report::{Options, Report};
use msgbatch::settings::{Gateway, RunSettings, SendSettings};
use msgbatch::store::{
    AttemptRecord, GroupBy, JobState, JobUpdate, NewJob, NewRun, ResultRecord, RunStatus, Store,
    WriteBatch,
};
use serde_json::Value;

use crate::common::*;

struct Fixture {
    job: &'static str,
    model: &'static str,
    /// input, 5m write, 1h write, cache read, output
    usage: [u64; 5],
    latency_ms: i64,
    ttft_ms: Option<i64>,
    stop_reason: &'static str,
}

const FIXTURES: [Fixture; 4] = [
    Fixture {
        job: "a",
        model: "claude-sonnet-4-6",
        usage: [1000, 2000, 3000, 4000, 500],
        latency_ms: 100,
        ttft_ms: None,
        stop_reason: "end_turn",
    },
    Fixture {
        job: "b",
        model: "claude-sonnet-4-6",
        usage: [100, 0, 0, 0, 100],
        latency_ms: 300,
        ttft_ms: Some(40),
        stop_reason: "end_turn",
    },
    Fixture {
        job: "c",
        model: "claude-haiku-4-5",
        usage: [10, 0, 0, 1000, 20],
        latency_ms: 200,
        ttft_ms: None,
        stop_reason: "max_tokens",
    },
    Fixture {
        job: "d",
        model: "mystery-model",
        usage: [50, 0, 0, 0, 50],
        latency_ms: 400,
        ttft_ms: None,
        stop_reason: "end_turn",
    },
];

/// A run with the four results above and one job that failed after a 429 and a 500.
async fn fixture_db(ws: &Workspace, name: &str) -> Store {
    let store = Store::open(&ws.db()).await.unwrap();
    let run = store
        .create_run(&NewRun {
            name: name.to_owned(),
            input_path: "fixture.jsonl".into(),
            gateway_name: "mock".into(),
            base_url: "mock://".into(),
            messages_path: "/v1/messages".into(),
            settings_json: RunSettings {
                gateway: Gateway::mock("mock://".into()),
                send: SendSettings::from_args(&SendArgs::default()).unwrap(),
                mock: None,
                models: Vec::new(),
                repeat: 1,
                defaults: Defaults::default(),
                input: None,
            }
            .stored()
            .unwrap(),
            via: "direct",
            checked: None,
        })
        .await
        .unwrap();
    let new_job = |job_id: &str, model: &str, line: u64| NewJob {
        job_id: job_id.to_owned(),
        model: model.to_owned(),
        sample: 0,
        line,
        request: "{}".into(),
        request_sha256: String::new(),
        tags: Some(format!(
            "{{\"set\":\"{}\"}}",
            if line.is_multiple_of(2) {
                "even"
            } else {
                "odd"
            }
        )),
        expect: None,
        state: JobState::Pending,
        error: None,
        params_max_tokens: None,
    };
    let mut jobs: Vec<NewJob> = FIXTURES
        .iter()
        .zip(1..)
        .map(|(f, line)| new_job(f.job, f.model, line))
        .collect();
    jobs.push(new_job("e", "claude-haiku-4-5", 5));
    store.insert_jobs(run, jobs).await.unwrap();
    let first_id: i64 = sqlx::query_scalar("SELECT min(id) FROM jobs WHERE run_id = ?1")
        .bind(run)
        .fetch_one(&ws.pool().await)
        .await
        .unwrap();
    let prices = PriceTable::builtin();
    let mut batch = WriteBatch::default();
    for (i, f) in FIXTURES.iter().enumerate() {
        let job = first_id + i as i64;
        let [input, w5, w1, read, output] = f.usage;
        let usage = Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: w5 + w1,
            cache_write_5m_tokens: w5,
            cache_write_1h_tokens: w1,
            cache_read_input_tokens: read,
        };
        batch.results.push(ResultRecord {
            job,
            response: "{\"type\":\"message\"}".into(),
            note: None,
            cache_prefix: None,
            held_for_warmup: false,
            batch: false,
            message_id: None,
            response_model: Some(f.model.into()),
            stop_reason: Some(f.stop_reason.into()),
            stop_sequence: None,
            usage,
            service_tier: None,
            latency_ms: f.latency_ms,
            ttft_ms: f.ttft_ms,
            streamed: f.ttft_ms.is_some(),
            cost_pico_usd: prices.cost_pico_usd(f.model, &usage).map(Result::unwrap),
            completed_at_ms: 0,
            grades: Vec::new(),
        });
        batch.updates.push(JobUpdate {
            job,
            state: JobState::Succeeded,
            attempts: 1,
            error: None,
            lease: None,
        });
    }
    let failed = first_id + 4;
    for (attempt, (status, kind)) in [(429, "rate_limit_error"), (500, "api_error")]
        .into_iter()
        .enumerate()
    {
        batch.attempts.push(AttemptRecord {
            job: failed,
            kind: "job",
            attempt: attempt as i64 + 1,
            http_status: Some(status),
            error_type: Some(kind.into()),
            ..AttemptRecord::default()
        });
    }
    batch.updates.push(JobUpdate {
        job: failed,
        state: JobState::Failed,
        attempts: 2,
        error: Some("request failed after 2 attempts".into()),
        lease: None,
    });
    store.write(&batch).await.unwrap();
    store
        .set_run_status(run, RunStatus::Completed, None)
        .await
        .unwrap();
    store
}

async fn build(store: &Store, names: &[&str], by: GroupBy) -> Report {
    let mut runs = Vec::new();
    for name in names {
        runs.push(store.find_run(name).await.unwrap());
    }
    Report::build(
        store,
        &runs,
        &Options {
            by,
            prices: PriceTable::builtin(),
            reprice: None,
            charts: true,
            cluster_tag: None,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn costs_match_hand_computed_figures_and_unpriced_models_are_flagged() {
    let ws = Workspace::new();
    let store = fixture_db(&ws, "fx").await;
    let report = build(&store, &["fx"], GroupBy::Model).await;
    let group = |key: &str| report.groups.iter().find(|g| g.key == key).unwrap();
    // Sonnet 4.6 (3.00 / 3.75 / 6.00 / 0.30 / 15.00 per MTok):
    //   a: 1000·3 + 2000·3.75 + 3000·6 + 4000·0.3 + 500·15 = 37,200 µUSD·tokens/MTok = $0.0372
    //   b:  100·3 + 100·15 = $0.0018
    let sonnet = group("claude-sonnet-4-6");
    assert_eq!(sonnet.cost.total_pico_usd, 37_200_000_000 + 1_800_000_000);
    assert_eq!(
        sonnet.cost.cache_write_pico_usd,
        2000 * 3_750_000 + 3000 * 6_000_000
    );
    assert_eq!(sonnet.cost.cache_read_pico_usd, 4000 * 300_000);
    // Cached tokens at the input price, less what they cost: 9000·3 − (7500 + 18000 + 1200).
    assert_eq!(sonnet.cost.caching_saved_pico_usd, 300_000_000);
    // Haiku 4.5: 10·1 + 1000·0.1 + 20·5 = $0.00021.
    assert_eq!(group("claude-haiku-4-5").cost.total_pico_usd, 210_000_000);
    let mystery = group("mystery-model");
    assert!(!mystery.cost.complete);
    assert_eq!(
        mystery.cost.total_pico_usd, 0,
        "unpriced is not $0 worth of tokens: it is left out"
    );
    assert_eq!(mystery.tokens.input, 50);
    let total = &report.totals[0];
    assert_eq!(total.cost.total_pico_usd, 39_210_000_000);
    assert_eq!(total.cost.batch_api_pico_usd, 19_605_000_000);
    assert!(!total.cost.complete);
    assert_eq!(total.cost.stored_pico_usd, total.cost.total_pico_usd);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no price for model `mystery-model`"))
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("claude-haiku-4-5: 100% of answers stopped at max_tokens"))
    );
    // The failed job: two attempts, one retry, both errors counted.
    let haiku = group("claude-haiku-4-5");
    assert_eq!((haiku.jobs.failed, haiku.retries), (1, 1));
    assert_eq!(haiku.errors.len(), 2);
}

#[tokio::test]
async fn percentiles_are_nearest_rank_over_the_stored_latencies() {
    let ws = Workspace::new();
    let store = fixture_db(&ws, "fx").await;
    let report = build(&store, &["fx"], GroupBy::Run).await;
    // Latencies 100, 200, 300, 400: rank ceil(p·4/100) → p50 = 2nd, p90/p95/p99 = 4th.
    let latency = report.totals[0].latency_ms.unwrap();
    assert_eq!(
        (
            latency.count,
            latency.p50,
            latency.p90,
            latency.p95,
            latency.p99,
            latency.max
        ),
        (4, 200, 400, 400, 400, 400)
    );
    let ttft = report.totals[0].ttft_ms.unwrap();
    assert_eq!((ttft.count, ttft.p50, ttft.max), (1, 40, 40));
    // Grouped by tag, the odd lines (a, c) have 100 and 200 ms.
    let by_tag = build(&store, &["fx"], GroupBy::Tag("set".into())).await;
    let odd = by_tag
        .groups
        .iter()
        .find(|g| g.key == "odd")
        .unwrap()
        .latency_ms
        .unwrap();
    assert_eq!((odd.p50, odd.p99), (100, 200));
}

#[tokio::test]
async fn every_format_carries_the_figures_and_reads_back() {
    let ws = Workspace::new();
    let store = fixture_db(&ws, "fx").await;
    store.close().await;
    let out = ws.path("reports");
    let out = out.to_str().unwrap();

    let table = ws.run(&["report", "fx"]).await;
    let (stdout, _) = text(&table);
    assert_eq!(code(&table), 0);
    assert!(stdout.contains("$0.039210+"), "{stdout}");
    assert!(stdout.lines().all(|l| l.chars().count() <= 100), "{stdout}");

    let md = ws
        .run(&["report", "fx", "--format", "md", "--out", "-"])
        .await;
    let (md, _) = text(&md);
    assert!(
        md.contains("| claude-sonnet-4-6 | 2 | 0 | 1100 | 2000 | 3000 | 4000 | 600 | $0.039000 |"),
        "{md}"
    );

    let output = ws
        .run(&["report", "fx", "--format", "csv", "--out", out])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let mut csv = csv::Reader::from_path(ws.path("reports/fx-model.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let all = rows
        .iter()
        .find(|r| &r[column("group")] == "(all)")
        .unwrap();
    assert_eq!(&all[column("cost_usd")], "0.039210");
    assert_eq!(&all[column("cost_complete")], "false");
    assert_eq!(&all[column("latency_p50_ms")], "200");
    let failures = std::fs::read_to_string(ws.path("reports/fx-failures.csv")).unwrap();
    assert!(
        failures.contains("fx,e,claude-haiku-4-5,5,failed,request failed after 2 attempts"),
        "{failures}"
    );

    let output = ws
        .run(&["report", "fx", "--format", "json", "--out", out])
        .await;
    assert_eq!(code(&output), 0);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("reports/fx-model.json")).unwrap())
            .unwrap();
    for key in [
        "generated_at",
        "group_by",
        "prices",
        "runs",
        "groups",
        "totals",
        "differences",
        "warnings",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(
        json["totals"][0]["cost"]["total_pico_usd"],
        39_210_000_000_i64
    );
    assert_eq!(json["totals"][0]["latency_ms"]["p50"], 200);

    let output = ws
        .run(&["report", "fx", "--format", "html", "--out", out])
        .await;
    assert_eq!(code(&output), 0);
    let html = std::fs::read_to_string(ws.path("reports/fx-model.html")).unwrap();
    assert!(html.contains("$0.039210") && html.matches("<svg").count() == 4);
    for external in ["<script", "<link", "src=", "url(", "@import", "href="] {
        assert!(
            !html.contains(external),
            "the page references something outside: {external}"
        );
    }
}

#[tokio::test]
async fn two_runs_side_by_side_show_their_differences() {
    let ws = Workspace::new();
    let store = fixture_db(&ws, "first").await;
    store.close().await;
    let store = fixture_db(&ws, "second").await;
    let report = build(&store, &["first", "second"], GroupBy::Model).await;
    assert_eq!(report.totals.len(), 2);
    let cost = report
        .differences
        .iter()
        .find(|d| d.metric == "cost_usd")
        .unwrap();
    assert_eq!(
        (cost.run.as_str(), cost.against.as_str(), cost.change),
        ("second", "first", 0.0)
    );
    assert!(
        report
            .groups
            .iter()
            .any(|g| g.run == "second" && g.key == "claude-sonnet-4-6")
    );
}

#[tokio::test]
async fn errors_are_counted_by_type_and_status_and_latency_is_binned() {
    let ws = Workspace::new();
    let store = fixture_db(&ws, "fx").await;
    let report = build(&store, &["fx"], GroupBy::Model).await;
    let haiku = report
        .groups
        .iter()
        .find(|g| g.key == "claude-haiku-4-5")
        .unwrap();
    let mut errors: Vec<(String, Option<i64>, i64)> = haiku
        .errors
        .iter()
        .map(|e| (e.error_type.clone(), e.http_status, e.attempts))
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            ("api_error".into(), Some(500), 1),
            ("rate_limit_error".into(), Some(429), 1)
        ]
    );
    // Sonnet's two results took 100 and 300 ms: half of them by 100 ms, all by 300.
    let sonnet = &report.histogram.cdf[&("fx".to_owned(), "claude-sonnet-4-6".to_owned())];
    assert_eq!(sonnet, &[(100, 0.5), (300, 1.0)]);
    // Spend over time: every result at time 0 in the fixture, so one slice holds it all.
    let spend = &report.spend_over_time["fx"];
    assert_eq!(
        spend.last().unwrap().1,
        report.totals[0].cost.stored_pico_usd
    );
}

#[tokio::test]
async fn a_gateways_own_prices_cost_the_run_and_reprice_compares_another_table() {
    let ws = Workspace::new();
    let mock = crate::common::mock(msgbatch::mock::MockConfig::default()).await;
    // Every kind of token at $1,000 per million, so a token costs 1e9 pico-USD.
    ws.write(
        "gateway-prices.toml",
        "source = \"test gateway\"\n[models.claude-haiku-4-5]\ninput = 1000\ncache_write_5m = 1000\ncache_write_1h = 1000\ncache_read = 1000\noutput = 1000\n",
    );
    let file = ws.jobs("jobs.jsonl", 5);
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "own",
                "--prices",
                "gateway-prices.toml",
            ],
        )
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let pool = ws.pool().await;
    let tokens = count(
        &pool,
        "SELECT SUM(input_tokens + cache_creation_input_tokens + cache_read_input_tokens + output_tokens) FROM results",
    )
    .await;
    assert_eq!(
        count(&pool, "SELECT SUM(cost_pico_usd) FROM results").await,
        tokens * 1_000_000_000
    );

    std::fs::write(ws.path("builtin.toml"), include_str!("../../prices.toml")).unwrap();
    let output = ws
        .run(&[
            "report",
            "own",
            "--format",
            "json",
            "--out",
            "-",
            "--reprice",
            "builtin.toml",
        ])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["prices"], "test gateway");
    let cost = &report["totals"][0]["cost"];
    assert_eq!(
        cost["total_pico_usd"].as_i64(),
        Some(tokens * 1_000_000_000)
    );
    let repriced = cost["reprice_pico_usd"].as_i64().unwrap();
    assert!(
        repriced > 0 && repriced < tokens * 1_000_000_000 / 100,
        "{repriced}"
    );
}

/// A run whose process died (its row still says `running`, and no process holds the store)
/// is `died` in `report`, as `status` says, in text and in JSON.
#[tokio::test]
async fn a_run_whose_process_died_is_died_in_report_as_in_status() {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 3);
    let output = ws
        .run(&["run", file.to_str().unwrap(), "--mock", "--name", "gone"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    // What a kill -9 in the middle of sending leaves behind.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(ws.db());
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::query("UPDATE runs SET status = 'running', finished_at_ms = NULL")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let (status, _) = text(&ws.run(&["status"]).await);
    assert!(
        status
            .lines()
            .any(|l| l.contains("gone") && l.contains(" died ")),
        "{status}"
    );
    let report = ws.run(&["report", "gone"]).await;
    let (table, stderr) = text(&report);
    assert_eq!(code(&report), 0, "{stderr}");
    assert!(table.contains("runs: gone (died)"), "{table}");
    let json = ws.report_json("gone").await;
    assert_eq!(json["runs"][0]["status"], "died", "{json}");
}

/// Each model's judging cost fits an `i64`, the run's sum of them does not (a store written by
/// hand; no judge answer can hold such usage): the report says so, and does not panic or
/// show a wrapped figure.
#[tokio::test]
async fn a_judging_cost_that_only_overflows_over_the_models_is_said_not_wrapped() {
    let ws = Workspace::new();
    let lines: Vec<String> = ["claude-haiku-4-5", "claude-sonnet-4-6"]
        .iter()
        .map(|model| {
            serde_json::json!({"custom_id": format!("for-{model}"), "params": {
                "model": model, "max_tokens": 50,
                "messages": [{"role": "user", "content": "say alpha"}]},
                "expect": {"contains": "alpha"}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    let output = ws
        .run(&["run", file.to_str().unwrap(), "--mock", "--name", "judged"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(ws.db());
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let graded = sqlx::query("UPDATE grades SET judge_cost_pico_usd = 5000000000000000000")
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(graded, 2);
    pool.close().await;

    for format in ["table", "json"] {
        let output = ws
            .run(&["report", "judged", "--format", format, "--out", "-"])
            .await;
        let (stdout, stderr) = text(&output);
        assert_eq!(code(&output), 2, "{stdout}\n{stderr}");
        assert!(
            stderr.contains("beyond what msgbatch can add up") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

/// A run of one model whose results have `reasons` distinct stop reasons, every third through a
/// batch and every fourth above Haiku 5.5's 100K tier: the report counts each reason and prices
/// each result at its tier and way, as result-by-result sums say.
async fn mixed_results_add_up_result_by_result(reasons: usize) {
    let ws = Workspace::new();
    let store = Store::open(&ws.db()).await.unwrap();
    let run = store
        .create_run(&NewRun {
            name: "mixed".to_owned(),
            input_path: "mixed.jsonl".into(),
            gateway_name: "mock".into(),
            base_url: "mock://".into(),
            messages_path: "/v1/messages".into(),
            settings_json: RunSettings {
                gateway: Gateway::mock("mock://".into()),
                send: SendSettings::from_args(&SendArgs::default()).unwrap(),
                mock: None,
                models: Vec::new(),
                repeat: 1,
                defaults: Defaults::default(),
                input: None,
            }
            .stored()
            .unwrap(),
            via: "direct",
            checked: None,
        })
        .await
        .unwrap();
    let model = "claude-haiku-5-5";
    let n: i64 = 40;
    let jobs = (0..n)
        .map(|i| NewJob {
            job_id: format!("j{i}"),
            model: model.to_owned(),
            sample: 0,
            line: u64::try_from(i).unwrap() + 1,
            request: "{}".into(),
            request_sha256: String::new(),
            tags: None,
            expect: None,
            state: JobState::Pending,
            error: None,
            params_max_tokens: None,
        })
        .collect();
    store.insert_jobs(run, jobs).await.unwrap();
    let first_id: i64 = sqlx::query_scalar("SELECT min(id) FROM jobs WHERE run_id = ?1")
        .bind(run)
        .fetch_one(&ws.pool().await)
        .await
        .unwrap();
    let prices = PriceTable::builtin();
    let price = prices.lookup(model).unwrap();
    let mut batch = WriteBatch::default();
    let (mut total, mut above, mut above_cost, mut batched) = (0i64, 0i64, 0i64, 0i64);
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    for i in 0..n {
        let input = if i % 4 == 0 {
            100_000 + 1_000 * i as u64
        } else {
            10 + i as u64
        };
        let usage = Usage {
            input_tokens: input,
            output_tokens: 7 * i as u64 + 1,
            cache_creation_input_tokens: 0,
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            cache_read_input_tokens: 3 * i as u64,
        };
        let through_batch = i % 3 == 0;
        let (tier, rates) = price.tier(usage.total_input_tokens());
        let rates = if through_batch { rates.batch() } else { *rates };
        let cost = i64::try_from(rates.cost_pico_usd(&usage).unwrap()).unwrap();
        total += cost;
        if tier.is_some() {
            above += 1;
            above_cost += cost;
        }
        batched += i64::from(through_batch);
        let reason = format!("reason-{}", i as usize % reasons);
        *counts.entry(reason.clone()).or_default() += 1;
        batch.results.push(ResultRecord {
            job: first_id + i,
            response: "{\"type\":\"message\"}".into(),
            note: None,
            cache_prefix: None,
            held_for_warmup: false,
            batch: through_batch,
            message_id: None,
            response_model: Some(model.into()),
            stop_reason: Some(reason),
            stop_sequence: None,
            usage,
            service_tier: None,
            latency_ms: 100 + i,
            ttft_ms: None,
            streamed: false,
            cost_pico_usd: Some(cost.unsigned_abs()),
            completed_at_ms: i,
            grades: Vec::new(),
        });
        batch.updates.push(JobUpdate {
            job: first_id + i,
            state: JobState::Succeeded,
            attempts: 1,
            error: None,
            lease: None,
        });
    }
    store.write(&batch).await.unwrap();
    for by in [GroupBy::Model, GroupBy::Run] {
        let report = build(&store, &["mixed"], by).await;
        for group in report.groups.iter().chain(&report.totals) {
            assert_eq!(group.cost.total_pico_usd, total, "{}", group.key);
            assert_eq!(group.cost.stored_pico_usd, total, "{}", group.key);
            assert_eq!(group.cost.batch_results, batched, "{}", group.key);
            let tiers: Vec<(i64, i64)> = group
                .cost
                .above_base
                .iter()
                .map(|t| (t.results, t.cost_pico_usd))
                .collect();
            assert_eq!(tiers, [(above, above_cost)], "{}", group.key);
            let stops: std::collections::BTreeMap<String, i64> =
                group.stop_reasons.iter().cloned().collect();
            assert_eq!(stops, counts, "{}", group.key);
        }
    }
}

#[tokio::test]
async fn a_few_stop_reasons_batches_and_long_prompts_add_up_result_by_result() {
    mixed_results_add_up_result_by_result(3).await;
}

#[tokio::test]
async fn many_stop_reasons_batches_and_long_prompts_add_up_result_by_result() {
    mixed_results_add_up_result_by_result(20).await;
}
