//! `msgbatch view`: the real binary serving a store made by real runs on the mock. Routes
//! answer with the right status, JSON and headers; filters and pages narrow the job list on
//! the server; hostile prompts and answers come back as text; beyond loopback a token is
//! needed. The browser tests drive headless Chromium against the server.

use std::time::Duration;

use msgbatch::mock::MockConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::common::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' \
                   data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// Markup a job file smuggles into prompts (and so into the mock's echoed answers).
const HOSTILE: &str = "say alpha <script>document.title='pwned'</script> \
                       <img src=x onerror=\"document.title='img'\"> </details><b>bold</b>";

/// A running `msgbatch view` and the URL it printed.
struct View {
    _child: tokio::process::Child,
    url: String,
}

impl View {
    async fn start(ws: &Workspace, extra: &[&str]) -> Self {
        let mut args = vec!["view", "--port", "0"];
        args.extend_from_slice(extra);
        let mut child = ws
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("view prints its URL")
            .expect("stdout reads")
            .expect("a line");
        let url = line
            .strip_prefix("msgbatch view: ")
            .unwrap_or_else(|| panic!("not a URL line: {line}"))
            .to_owned();
        Self { _child: child, url }
    }

    /// A view of a store that a run is still creating: started once the run is stored.
    /// `log` is the run's standard error, shown if it never is.
    async fn start_when_stored(ws: &Workspace, log: &std::path::Path) -> Self {
        let stored = tokio::time::timeout(Duration::from_secs(180), async {
            loop {
                if ws.db().exists() {
                    let pool = ws.pool().await;
                    let runs: Result<(i64,), _> = sqlx::query_as("SELECT COUNT(*) FROM runs")
                        .fetch_one(&pool)
                        .await;
                    pool.close().await;
                    if matches!(runs, Ok((1,))) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            stored.is_ok(),
            "the run did not store itself: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        Self::start(ws, &[]).await
    }

    /// The server's address without path or token: `http://host:port`.
    fn base(&self) -> String {
        let rest = self.url.strip_prefix("http://").expect("an http URL");
        format!("http://{}", &rest[..rest.find('/').expect("a path")])
    }

    /// The base on 127.0.0.1, for a server bound to every address.
    fn loopback_base(&self) -> String {
        let port = self.base().rsplit(':').next().unwrap().to_owned();
        format!("http://127.0.0.1:{port}")
    }
}

fn http() -> reqwest::Client {
    // The TLS backend needs a provider even for plain HTTP, as the client itself installs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = http().get(url).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn get_json(url: &str) -> Value {
    let (status, _, body) = get(url).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// The status line and headers a server answers `request` (sent as written) with.
async fn raw(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.strip_prefix("http://").expect("an http URL");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A run's page data once its report is computed (in the background: until then the page
/// says so and answers without it).
async fn run_with_report(base: &str, run: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let page = get_json(&format!("{base}/api/runs/{run}")).await;
        if page["report_status"] == "ready" {
            assert!(page["report"].is_object(), "{page}");
            return page;
        }
        assert_eq!(page["report_status"], "computing", "{page}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the report of {run} is still being computed after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A comparison's data (`/api/runs/{run}/models`, `/api/diff/{a}/{b}`, with their query) once
/// it is computed (in the background: until then the API says `computing` and has none).
async fn compared(base: &str, api: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let page = get_json(&format!("{base}{api}")).await;
        if page["status"] == "ready" {
            return page;
        }
        assert_eq!(page["status"], "computing", "{page}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{api} is still being computed after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run `hostile` of 12 jobs on two models: every third prompt is [`HOSTILE`], graded on
/// "alpha" (the mock echoes the prompt, so those pass and the others fail); tags say `odd` or
/// `even`.
async fn hostile_run(ws: &Workspace) {
    let mock = mock(MockConfig::default()).await;
    let lines: Vec<String> = (0..12)
        .map(|i| {
            let prompt = if i % 3 == 0 {
                HOSTILE.to_owned()
            } else {
                format!("plain prompt {i}")
            };
            json!({"custom_id": format!("j{i}"), "params": {
                "model": if i % 2 == 0 { "claude-haiku-4-5" } else { "claude-sonnet-4-6" },
                "max_tokens": 300, "messages": [{"role": "user", "content": prompt}]},
                "expect": {"contains": "alpha"},
                "tags": {"parity": if i % 2 == 0 { "even" } else { "odd" }}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--name", "hostile"])
        .await;
    assert!([0, 1].contains(&code(&output)), "{:?}", text(&output));
}

fn job_ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_view_serves_every_page_with_its_json_and_strict_headers() {
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let view = View::start(&ws, &[]).await;
    assert!(view.url.starts_with("http://127.0.0.1:"), "{}", view.url);
    let base = view.base();

    let runs = get_json(&format!("{base}/api/runs")).await;
    let run = &runs["runs"][0];
    assert_eq!(run["name"], "hostile");
    assert_eq!(run["status"], "completed");
    assert_eq!(run["jobs"]["total"], 12);
    assert_eq!(run["done"], 12);
    assert_eq!(
        run["models"],
        json!(["claude-haiku-4-5", "claude-sonnet-4-6"])
    );
    let id = run["id"].as_i64().unwrap();

    let report = run_with_report(&base, "hostile").await;
    assert_eq!(report["run"]["id"], id);
    assert_eq!(report["report"]["groups"].as_array().unwrap().len(), 2);
    assert_eq!(report["graders"], json!(["contains"]));

    // Pages of five: the first two are full, the third holds the last two.
    let mut seen = Vec::new();
    for (page, len, next) in [(1, 5, true), (2, 5, true), (3, 2, false)] {
        let list = get_json(&format!("{base}/api/runs/{id}/jobs?per_page=5&page={page}")).await;
        assert_eq!(list["matched"], 12);
        assert_eq!(list["has_next"], next, "page {page}");
        assert_eq!(list["jobs"].as_array().unwrap().len(), len, "page {page}");
        seen.extend(job_ids(&list));
    }
    let all: Vec<String> = (0..12).map(|i| format!("j{i}")).collect();
    assert_eq!(seen, all, "every job once, in input order");

    // Filters narrow on the server.
    let passed = get_json(&format!("{base}/api/runs/{id}/jobs?outcome=passed")).await;
    assert_eq!(job_ids(&passed), ["j0", "j3", "j6", "j9"]);
    assert_eq!(passed["matched"], 4);
    assert!(
        passed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["outcome"] == "passed")
    );
    let failed = get_json(&format!(
        "{base}/api/runs/{id}/jobs?outcome=failed&grader=contains&model=claude-haiku-4-5"
    ))
    .await;
    assert_eq!(job_ids(&failed), ["j2", "j4", "j8", "j10"]);
    let tagged = get_json(&format!("{base}/api/runs/{id}/jobs?tag=parity%3Dodd")).await;
    assert_eq!(tagged["matched"], 6);
    let text = get_json(&format!("{base}/api/runs/{id}/jobs?q=PLAIN%20PROMPT%201")).await;
    assert_eq!(job_ids(&text), ["j1", "j10", "j11"]);
    // Sorted through the same indexes, every job once, in order.
    for (sort, name) in [
        ("cost_desc", "cost_pico_usd"),
        ("latency_asc", "latency_ms"),
    ] {
        let jobs = all_pages(&base, id, &format!("sort={sort}"), 5).await;
        let keys: Vec<(i64, i64)> = jobs
            .iter()
            .map(|j| (j[name].as_i64().unwrap(), j["id"].as_i64().unwrap()))
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        if sort.ends_with("desc") {
            expected.reverse();
        }
        assert_eq!(keys, expected, "{sort}");
        assert_eq!(keys.len(), 12, "{sort}");
    }
    assert_eq!(text["search"]["rows"], 12, "a search says what it read");
    assert_eq!(text["search"]["last_read"], 12);
    assert_eq!(text["search"]["next_from"], Value::Null);
    let two = get_json(&format!(
        "{base}/api/runs/{id}/jobs?q=plain+prompt+1&per_page=2"
    ))
    .await;
    assert_eq!(job_ids(&two), ["j1", "j10"]);
    let from = two["search"]["next_from"].as_i64().expect("more to search");
    let rest = get_json(&format!(
        "{base}/api/runs/{id}/jobs?q=plain+prompt+1&per_page=2&from={from}"
    ))
    .await;
    assert_eq!(
        job_ids(&rest),
        ["j11"],
        "searching further goes on after the last"
    );
    let (_, _, html) = get(&format!(
        "{base}/runs/{id}/jobs?q=plain+prompt+1&per_page=2"
    ))
    .await;
    assert!(
        html.contains("A text search reads the jobs in input order, at most 20000 a page"),
        "the page says how far a search reads: {html}"
    );
    let literal = get_json(&format!("{base}/api/runs/{id}/jobs?q=%25")).await;
    assert_eq!(
        literal["jobs"].as_array().unwrap().len(),
        0,
        "a % is searched for, not a wildcard"
    );
    assert_eq!(
        literal["matched"],
        Value::Null,
        "a text search is not counted"
    );
    let stop = get_json(&format!("{base}/api/runs/{id}/jobs?stop_reason=end_turn")).await;
    assert_eq!(stop["matched"], 12);
    let costly = get_json(&format!("{base}/api/runs/{id}/jobs?sort=cost_desc")).await;
    let costs: Vec<i64> = costly["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["cost_pico_usd"].as_i64().unwrap())
        .collect();
    assert!(costs.windows(2).all(|w| w[0] >= w[1]), "{costs:?}");

    // One job whole.
    let job_row = passed["jobs"][0]["id"].as_i64().unwrap();
    let job = get_json(&format!("{base}/api/runs/{id}/jobs/{job_row}")).await;
    assert_eq!(job["job"]["job_id"], "j0");
    assert_eq!(job["outcome"], "passed");
    assert_eq!(job["grades"][0]["passed"], true);
    assert_eq!(job["attempts"][0]["attempt"], 1);
    assert!(job["result"]["input_tokens"].as_i64().unwrap() > 0);
    assert!(job["response"].as_str().unwrap().contains("<script>"));

    // The run's total row links to all its jobs, not to a model named after the run.
    let (_, _, page) = get(&format!("{base}/runs/{id}")).await;
    assert!(!page.contains("model=hostile"), "{page}");
    assert!(
        page.contains(&format!("<a href=\"/runs/{id}/jobs\">all</a>")),
        "{page}"
    );

    compared(&base, &format!("/api/runs/{id}/models")).await;
    compared(&base, &format!("/api/diff/{id}/{id}")).await;
    // Every page: 200, the headers, and no script but the one asset.
    let pages = [
        "/".to_owned(),
        format!("/runs/{id}"),
        "/runs/hostile".to_owned(),
        format!("/runs/{id}/jobs"),
        format!("/runs/{id}/jobs?outcome=failed&sort=latency_desc"),
        format!("/runs/{id}/jobs/{job_row}"),
        format!("/runs/{id}/models"),
        format!("/diff/{id}/{id}"),
    ];
    for page in &pages {
        let (status, headers, body) = get(&format!("{base}{page}")).await;
        assert_eq!(status, StatusCode::OK, "{page}: {body}");
        assert_eq!(headers["content-security-policy"], CSP, "{page}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(
            body.matches("<script").count(),
            1,
            "{page}: one script, the asset"
        );
        assert!(body.contains("<script src=\"/assets/view.js\"></script>"));
        assert!(!body.contains("style="), "{page}: no inline style");
        assert!(!body.contains(TEST_KEY));
        for hostile in ["<script>document", "<img src=x", "<b>bold"] {
            assert!(!body.contains(hostile), "{page} holds {hostile} as markup");
        }
        assert_eq!(
            body.matches("<details").count(),
            body.matches("</details>").count(),
            "{page}: a </details> in the data closes nothing"
        );
    }
    let (_, _, job_page) = get(&format!("{base}/runs/{id}/jobs/{job_row}")).await;
    assert!(
        job_page.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;")
            || job_page.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"),
        "the prompt shows as text"
    );
    assert!(job_page.contains("&lt;/details&gt;"));
    assert!(job_page.contains("Answer to: "), "the answer is shown");

    // Charts are images, assets come from the binary, unknowns are refused.
    for chart in ["latency", "cost", "stop", "spend"] {
        let (status, headers, body) = get(&format!("{base}/runs/{id}/charts/{chart}.svg")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "image/svg+xml");
        assert!(body.contains("<svg"));
    }
    let (status, headers, _) = get(&format!("{base}/assets/view.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    for (path, expected) in [
        ("/runs/nope", StatusCode::NOT_FOUND),
        ("/api/runs/nope", StatusCode::NOT_FOUND),
        (
            &format!("/runs/{id}/jobs/999999") as &str,
            StatusCode::NOT_FOUND,
        ),
        (
            &format!("/runs/{id}/jobs?outcome=bogus"),
            StatusCode::BAD_REQUEST,
        ),
        (
            &format!("/api/runs/{id}/jobs?page=x"),
            StatusCode::BAD_REQUEST,
        ),
        ("/nowhere", StatusCode::NOT_FOUND),
    ] {
        let (status, headers, _) = get(&format!("{base}{path}")).await;
        assert_eq!(status, expected, "{path}");
        assert_eq!(headers["content-security-policy"], CSP, "{path}");
    }
    let (status, _, body) = get(&format!("{base}/api/runs/{id}/jobs?outcome=bogus")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("outcome"), "the field is named: {body}");
}

/// Every job of `base`'s run `id`, page after page of `per_page` under `query`.
async fn all_pages(base: &str, id: i64, query: &str, per_page: usize) -> Vec<Value> {
    let mut jobs = Vec::new();
    for page in 1.. {
        let list = get_json(&format!(
            "{base}/api/runs/{id}/jobs?{query}&per_page={per_page}&page={page}"
        ))
        .await;
        let rows = list["jobs"].as_array().unwrap();
        assert!(rows.len() <= per_page, "{query} page {page}: {list}");
        jobs.extend(rows.iter().cloned());
        if list["has_next"] != true {
            break;
        }
        assert_eq!(rows.len(), per_page, "{query} page {page}: {list}");
    }
    jobs
}

#[tokio::test]
async fn a_list_sorted_by_cost_or_latency_shows_every_job_once_those_without_a_value_last() {
    sorted_lists_on(Workspace::new()).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_postgresql_list_sorted_by_cost_or_latency_shows_every_job_once_those_without_a_value_last()
 {
    let db = crate::postgres::TestDb::create().await;
    sorted_lists_on(Workspace::on_postgres(&db.url)).await;
}

/// Every order of the job list of a run with priced, unpriced and refused jobs, page by page.
async fn sorted_lists_on(ws: Workspace) {
    let mock = mock(MockConfig {
        models: vec!["house-model".to_owned()],
        ..MockConfig::default()
    })
    .await;
    // Priced answers of a few sizes (ties among them), unpriced answers (no cost) and jobs
    // the gateway refuses (no result at all).
    let lines: Vec<String> = (0..17)
        .map(|i| {
            let model = match i % 5 {
                3 => "house-model",
                4 => "no-such-model",
                _ => "claude-haiku-4-5",
            };
            json!({"custom_id": format!("j{i}"), "params": {"model": model, "max_tokens": 50,
                "messages": [{"role": "user", "content": "word ".repeat(1 + i % 3)}]}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--name", "sorted"])
        .await;
    assert!([0, 1].contains(&code(&output)), "{:?}", text(&output));
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let id = get_json(&format!("{base}/api/runs/sorted")).await["run"]["id"]
        .as_i64()
        .unwrap();
    let input = all_pages(&base, id, "", 200).await;
    assert_eq!(input.len(), 17);
    let field = |job: &Value, name: &str| job[name].as_i64();
    // In input order, page by page as in one.
    let in_order: Vec<String> = (0..17).map(|i| format!("j{i}")).collect();
    assert_eq!(job_ids(&json!({ "jobs": input })), in_order);
    for per_page in [2, 3] {
        let paged = all_pages(&base, id, "", per_page).await;
        assert_eq!(
            job_ids(&json!({ "jobs": paged })),
            in_order,
            "{per_page} a page"
        );
    }
    let past = get_json(&format!("{base}/api/runs/{id}/jobs?per_page=2&page=40")).await;
    assert_eq!(past["jobs"], json!([]), "past the last page");
    let haiku_in_order: Vec<String> = input
        .iter()
        .filter(|j| j["model"] == "claude-haiku-4-5")
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    for per_page in [2, 3] {
        let paged = all_pages(&base, id, "model=claude-haiku-4-5", per_page).await;
        assert_eq!(
            job_ids(&json!({ "jobs": paged })),
            haiku_in_order,
            "one model"
        );
    }
    assert!(
        input
            .iter()
            .any(|j| field(j, "cost_pico_usd").is_none() && field(j, "latency_ms").is_some())
    );
    assert!(input.iter().any(|j| field(j, "latency_ms").is_none()));
    for (sort, name, descending) in [
        ("cost_desc", "cost_pico_usd", true),
        ("cost_asc", "cost_pico_usd", false),
        ("latency_desc", "latency_ms", true),
        ("latency_asc", "latency_ms", false),
    ] {
        // Those with a value by it, ties in row order (reversed with the rest when descending),
        // then those without, in row order.
        let mut valued: Vec<(i64, i64)> = input
            .iter()
            .filter_map(|j| Some((field(j, name)?, field(j, "id")?)))
            .collect();
        valued.sort_unstable();
        if descending {
            valued.reverse();
        }
        let expected: Vec<i64> = valued
            .into_iter()
            .map(|(_, id)| id)
            .chain(
                input
                    .iter()
                    .filter(|j| field(j, name).is_none())
                    .filter_map(|j| field(j, "id")),
            )
            .collect();
        for per_page in [2, 3, 50] {
            let shown: Vec<i64> = all_pages(&base, id, &format!("sort={sort}"), per_page)
                .await
                .iter()
                .filter_map(|j| field(j, "id"))
                .collect();
            assert_eq!(shown, expected, "{sort}, {per_page} a page");
        }
        // A model's jobs alone, in the same order.
        let haiku: Vec<i64> =
            all_pages(&base, id, &format!("sort={sort}&model=claude-haiku-4-5"), 2)
                .await
                .iter()
                .filter_map(|j| field(j, "id"))
                .collect();
        let of_haiku: Vec<i64> = expected
            .iter()
            .copied()
            .filter(|e| {
                input
                    .iter()
                    .any(|j| field(j, "id") == Some(*e) && j["model"] == "claude-haiku-4-5")
            })
            .collect();
        assert_eq!(haiku, of_haiku, "{sort}, one model");
        let past = get_json(&format!(
            "{base}/api/runs/{id}/jobs?sort={sort}&per_page=2&page=40"
        ))
        .await;
        assert_eq!(past["jobs"], json!([]), "{sort}: past the last page");
    }
}

#[tokio::test]
async fn a_sorted_filtered_list_walked_by_its_links_shows_each_job_once_in_order_both_ways() {
    walked_lists_on(Workspace::new()).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_postgresql_list_walked_by_its_links_shows_each_job_once_in_order_both_ways() {
    let db = crate::postgres::TestDb::create().await;
    walked_lists_on(Workspace::on_postgres(&db.url)).await;
}

/// A run of 23 jobs, each tagged `half` `a` or `b`: priced answers of a few sizes (ties among
/// them), unpriced answers and jobs the gateway refuses. The view on it, and the run's id.
async fn tagged_sorted_run(ws: &Workspace) -> (View, String, i64) {
    let mock = mock(MockConfig {
        models: vec!["house-model".to_owned()],
        ..MockConfig::default()
    })
    .await;
    let lines: Vec<String> = (0..23)
        .map(|i| {
            let model = match i % 5 {
                3 => "house-model",
                4 => "no-such-model",
                _ => "claude-haiku-4-5",
            };
            json!({"custom_id": format!("j{i}"), "params": {"model": model, "max_tokens": 50,
                "messages": [{"role": "user", "content": "word ".repeat(1 + i % 3)}]},
                "tags": {"half": if i % 2 == 0 { "a" } else { "b" }}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    // One at a time: the refused jobs must not come back three in a row, which halts a run.
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "walked",
                "--concurrency",
                "1",
            ],
        )
        .await;
    assert!([0, 1].contains(&code(&output)), "{:?}", text(&output));
    let view = View::start(ws, &[]).await;
    let base = view.base();
    let id = get_json(&format!("{base}/api/runs/walked")).await["run"]["id"]
        .as_i64()
        .unwrap();
    (view, base, id)
}

/// The value of a link of a page's pager (`rel`), as a path and query.
fn pager_link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!("rel=\"{rel}\" href=\""))?;
    let rest = &html[at + rel.len() + 13..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

/// The row ids of the jobs a job list page shows, in order, and what it says it shows.
fn shown_jobs(html: &str, run: i64) -> (Vec<i64>, String) {
    let prefix = format!("href=\"/runs/{run}/jobs/");
    let ids = html
        .match_indices(&prefix)
        .map(|(at, _)| {
            let rest = &html[at + prefix.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect();
    let said = html
        .split("<p id=\"matched\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default()
        .to_owned();
    (ids, said)
}

/// Every order of a tagged list, walked page by page by its pages' next links from the
/// first, and back by their previous links from the last: each job once, in the list's order,
/// each page numbered as it is; the JSON API's cursors walk it the same way.
async fn walked_lists_on(ws: Workspace) {
    let (_view, base, id) = tagged_sorted_run(&ws).await;
    let input = get_json(&format!("{base}/api/runs/{id}/jobs?per_page=200")).await;
    let input = input["jobs"].as_array().unwrap().clone();
    assert_eq!(input.len(), 23);
    let field = |job: &Value, name: &str| job[name].as_i64();
    assert!(
        input
            .iter()
            .any(|j| field(j, "cost_pico_usd").is_none() && field(j, "latency_ms").is_some()),
        "an unpriced answer"
    );
    assert!(
        input.iter().any(|j| field(j, "latency_ms").is_none()),
        "a refused job"
    );
    for (sort, name, descending) in [
        ("input", "", false),
        ("cost_desc", "cost_pico_usd", true),
        ("cost_asc", "cost_pico_usd", false),
        ("latency_desc", "latency_ms", true),
        ("latency_asc", "latency_ms", false),
    ] {
        for (filter, keep) in [
            ("tag=half%3Da", Some("a")),
            ("model=claude-haiku-4-5", None),
            ("", None),
        ] {
            let kept: Vec<&Value> = input
                .iter()
                .filter(|j| match keep {
                    Some(half) => j["tags"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!("\"{half}\""))),
                    None if filter.starts_with("model") => j["model"] == "claude-haiku-4-5",
                    None => true,
                })
                .collect();
            // Those with a value by it, ties in row order (reversed with the rest when
            // descending), then those without, in row order.
            let mut valued: Vec<(i64, i64)> = kept
                .iter()
                .filter(|_| !name.is_empty())
                .filter_map(|j| Some((field(j, name)?, field(j, "id")?)))
                .collect();
            valued.sort_unstable();
            if descending {
                valued.reverse();
            }
            let expected: Vec<i64> = valued
                .into_iter()
                .map(|(_, id)| id)
                .chain(
                    kept.iter()
                        .filter(|j| name.is_empty() || field(j, name).is_none())
                        .filter_map(|j| field(j, "id")),
                )
                .collect();
            for per_page in [2, 3] {
                let what = format!("sort={sort} {filter}, {per_page} a page");
                let first = format!("/runs/{id}/jobs?sort={sort}&{filter}&per_page={per_page}");
                // Forwards by the next links.
                let mut pages: Vec<Vec<i64>> = Vec::new();
                let mut link = Some(first);
                let mut last = String::new();
                while let Some(path) = link {
                    let (status, _, html) = get(&format!("{base}{path}")).await;
                    assert_eq!(status, StatusCode::OK, "{what}: {path}: {html}");
                    let (ids, said) = shown_jobs(&html, id);
                    let from = pages.iter().map(Vec::len).sum::<usize>() + 1;
                    assert!(
                        said.starts_with(&format!("jobs {from}–{} of", from + ids.len() - 1)),
                        "{what}: {path} says {said}"
                    );
                    assert!(
                        html.contains(&format!("page {}", pages.len() + 1)),
                        "{what}: {path}"
                    );
                    assert!(pages.len() < 20, "{what}: the links go round");
                    pages.push(ids);
                    last = path;
                    link = pager_link(&html, "next");
                }
                let walked: Vec<i64> = pages.concat();
                assert_eq!(walked, expected, "{what}: forwards");
                // Backwards by the previous links, from the last page.
                let mut back: Vec<Vec<i64>> = Vec::new();
                let mut link = Some(last);
                while let Some(path) = link {
                    let (status, _, html) = get(&format!("{base}{path}")).await;
                    assert_eq!(status, StatusCode::OK, "{what}: {path}: {html}");
                    let number = pages.len() - back.len();
                    assert!(html.contains(&format!("page {number}")), "{what}: {path}");
                    assert!(back.len() < 20, "{what}: the links go round");
                    back.push(shown_jobs(&html, id).0);
                    link = pager_link(&html, "prev");
                }
                back.reverse();
                assert_eq!(back, pages, "{what}: backwards, page for page");
            }
            // The API: its next and previous cursors, as the links carry them.
            let api = format!("{base}/api/runs/{id}/jobs?sort={sort}&{filter}&per_page=2");
            let mut seen: Vec<i64> = Vec::new();
            let mut page = get_json(&api).await;
            loop {
                seen.extend(
                    page["jobs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|j| j["id"].as_i64()),
                );
                if page["has_next"] != true {
                    assert_eq!(page["next"], Value::Null);
                    break;
                }
                let next = page["next"].as_str().expect("a next cursor").to_owned();
                let number = page["page"].as_i64().unwrap() + 1;
                page = get_json(&format!("{api}&after={next}&page={number}")).await;
                assert_eq!(page["page"], number);
                assert_eq!(page["has_prev"], true);
                // The previous page, by its cursor, ends where this one starts.
                let prev = page["prev"].as_str().expect("a previous cursor").to_owned();
                let before = get_json(&format!("{api}&before={prev}&page={}", number - 1)).await;
                let before: Vec<i64> = before["jobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|j| j["id"].as_i64())
                    .collect();
                assert!(
                    seen.ends_with(&before) && before.len() == 2,
                    "sort={sort} {filter}"
                );
            }
            assert_eq!(seen, expected, "sort={sort} {filter}: by the API's cursors");
        }
    }
}

#[tokio::test]
async fn a_forged_or_malformed_cursor_is_refused_400_naming_it_and_the_server_goes_on() {
    let ws = Workspace::new();
    let (_view, base, id) = tagged_sorted_run(&ws).await;
    let jobs = get_json(&format!("{base}/api/runs/{id}/jobs?per_page=200")).await;
    let before = job_ids(&jobs);
    for (query, field) in [
        ("sort=cost_desc&after=abc", "after"),
        ("sort=cost_desc&after=12", "after"),
        ("sort=cost_desc&after=1.2.3", "after"),
        ("sort=cost_desc&after=1.-2", "after"),
        ("sort=cost_desc&after=%2B1.2", "after"),
        ("sort=cost_desc&after=0x10.2", "after"),
        ("sort=cost_desc&after=99999999999999999999.1", "after"),
        ("sort=cost_desc&after=1.99999999999999999999", "after"),
        (
            "sort=latency_asc&before=1%29%3BDROP%20TABLE%20jobs%3B--.1",
            "before",
        ),
        ("sort=latency_asc&before=%27%20OR%201%3D1%20--.1", "before"),
        ("sort=latency_asc&before=NaN.1", "before"),
        ("sort=latency_asc&before=none", "before"),
        ("after=5.6", "after"),
        ("after=none.6", "after"),
        ("after=-6", "after"),
        ("after=1&before=2", "after, before"),
        ("sort=cost_asc&after=5.6&page=1", "page"),
        ("sort=cost_asc&before=5.6&page=0", "page"),
        ("q=word&after=6", "after, before"),
    ] {
        for api in ["/api", ""] {
            let url = format!("{base}{api}/runs/{id}/jobs?{query}");
            let (status, _, body) = get(&url).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
            assert!(body.contains(&format!("{field}:")), "{url}: {body}");
        }
    }
    // Cursors at the ends of what 64 bits hold, and of rows no run has, are no one's rows:
    // pages of what lies past them, not failures.
    for query in [
        "sort=cost_desc&after=-9223372036854775808.0",
        "sort=cost_desc&after=9223372036854775807.9223372036854775807",
        "sort=cost_asc&before=-9223372036854775808.0",
        "sort=latency_desc&before=9223372036854775807.9223372036854775807",
        "sort=latency_desc&after=none.9223372036854775807",
        "sort=latency_desc&before=none.0",
        "after=9223372036854775807",
        "before=0&page=7",
    ] {
        for api in ["/api", ""] {
            let url = format!("{base}{api}/runs/{id}/jobs?{query}");
            let (status, _, body) = get(&url).await;
            assert_eq!(status, StatusCode::OK, "{url}: {body}");
        }
    }
    let all = get_json(&format!(
        "{base}/api/runs/{id}/jobs?sort=cost_desc&after=9223372036854775807.9223372036854775807&per_page=200"
    ))
    .await;
    assert_eq!(
        all["jobs"].as_array().unwrap().len(),
        23,
        "past a cursor before them all"
    );
    let none = get_json(&format!(
        "{base}/api/runs/{id}/jobs?after=9223372036854775807"
    ))
    .await;
    assert_eq!(none["jobs"], json!([]));
    // Nothing before it: the first page, numbered 1.
    let first = get_json(&format!(
        "{base}/api/runs/{id}/jobs?before=0&page=7&per_page=5"
    ))
    .await;
    assert_eq!(first["page"], 1);
    assert_eq!(first["has_prev"], false);
    assert_eq!(job_ids(&first), before[..5]);
    let again = get_json(&format!("{base}/api/runs/{id}/jobs?per_page=200")).await;
    assert_eq!(job_ids(&again), before, "the store is as it was");
}

#[tokio::test]
async fn a_page_by_number_read_job_by_job_past_its_reach_is_refused_400_naming_the_links() {
    let ws = Workspace::new();
    let (_view, base, id) = tagged_sorted_run(&ws).await;
    // Page 10,002 at one job a page lies 10,001 jobs into its list.
    let deep = "per_page=1&page=10002";
    // Found by a seek (every job, in input order or sorted), or read by row id and tested on
    // the row alone (a model, a state), or past the jobs with a value: an empty page.
    for query in [
        "",
        "sort=cost_desc",
        "sort=latency_asc",
        "model=claude-haiku-4-5",
        "outcome=no_answer&model=claude-haiku-4-5",
        "sort=cost_asc&model=claude-haiku-4-5",
    ] {
        for api in ["/api", ""] {
            let url = format!("{base}{api}/runs/{id}/jobs?{query}&{deep}");
            let (status, _, body) = get(&url).await;
            assert_eq!(status, StatusCode::OK, "{url}: {body}");
        }
        let page = get_json(&format!("{base}/api/runs/{id}/jobs?{query}&{deep}")).await;
        assert_eq!(page["jobs"], json!([]), "{query}");
    }
    // Read job by job up to it: refused, naming the field and what reaches the page.
    for query in [
        "tag=half%3Da",
        "outcome=passed",
        "sort=latency_desc&tag=half%3Db",
    ] {
        for api in ["/api", ""] {
            let url = format!("{base}{api}/runs/{id}/jobs?{query}&{deep}");
            let (status, _, body) = get(&url).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
            assert!(
                body.contains("page:") && body.contains("next and previous links"),
                "{url}: {body}"
            );
        }
    }
    // Within its reach, and by its links however deep: answered.
    let url = format!("{base}/api/runs/{id}/jobs?tag=half%3Da&per_page=1&page=10001");
    let (status, _, body) = get(&url).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    let url = format!("{base}/api/runs/{id}/jobs?tag=half%3Da&per_page=1&after=3&page=10002");
    let (status, _, body) = get(&url).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
}

/// `routes` served on a free loopback port as the command serves its own (guarded, with every
/// answer's layers), closing connections whose headers take over `header_read_timeout`:
/// the base URL and the token that stops it.
async fn serve_routes(
    routes: axum::Router,
    header_read_timeout: Duration,
) -> (String, tokio_util::sync::CancellationToken) {
    let limits = msgbatch::view::Limits {
        header_read_timeout,
        ..msgbatch::view::Limits::COMMAND
    };
    serve_limited(routes, limits, msgbatch::view::MAX_REQUESTS).await
}

/// [`serve_routes`] under `limits`, answering `requests` requests at once.
async fn serve_limited(
    routes: axum::Router,
    limits: msgbatch::view::Limits,
    requests: usize,
) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let access = msgbatch::view::Access::for_address(address, None);
    let app = msgbatch::view::guarded(routes, access, requests);
    tokio::spawn(msgbatch::view::serve(listener, app, stop.clone(), limits));
    (format!("http://{address}"), stop)
}

/// Routes whose `/hold` says it started on `entered` and answers once `release` gives it a
/// permit; `/fine` answers at once.
fn holding_routes(
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: std::sync::Arc<tokio::sync::Semaphore>,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/hold",
            axum::routing::get(move || {
                let (entered, release) = (entered.clone(), release.clone());
                async move {
                    let _ = entered.send(());
                    release.acquire().await.unwrap().forget();
                    "held"
                }
            }),
        )
        .route("/fine", axum::routing::get(|| async { "fine" }))
}

#[tokio::test]
async fn requests_beyond_those_answered_at_once_are_answered_503_until_one_ends() {
    let (entered, mut started) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let routes = holding_routes(entered, release.clone());
    let (base, stop) = serve_limited(routes, msgbatch::view::Limits::COMMAND, 3).await;
    let held: Vec<_> = (0..3)
        .map(|_| tokio::spawn(get_owned(format!("{base}/hold"))))
        .collect();
    for _ in 0..3 {
        started.recv().await.unwrap();
    }
    // Three are being answered: a fourth request is refused at once, on any page.
    let (status, headers, body) = get(&format!("{base}/fine")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["content-security-policy"], CSP);
    assert!(body.contains("try again"), "{body}");
    // One ends (whichever took the permit): the next request is answered.
    release.add_permits(1);
    let (first, _, rest) = futures_util::future::select_all(held).await;
    assert_eq!(first.unwrap(), (StatusCode::OK, "held".to_owned()));
    let (status, _, body) = get(&format!("{base}/fine")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
    release.add_permits(2);
    for answer in futures_util::future::join_all(rest).await {
        assert_eq!(answer.unwrap(), (StatusCode::OK, "held".to_owned()));
    }
    stop.cancel();
}

/// Sends `GET /fine` on `stream` and reads until its answer's body; `None` when the server
/// closed the connection (or reset it) first.
async fn fine_on(stream: &mut tokio::net::TcpStream, host: &str, close: bool) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connection = if close { "Connection: close\r\n" } else { "" };
    let request = format!("GET /fine HTTP/1.1\r\nHost: {host}\r\n{connection}\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    while !answer.ends_with(b"fine") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.starts_with("HTTP/1.1").then_some(answer)
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_unread_until_one_ends() {
    let routes = axum::Router::new().route("/fine", axum::routing::get(|| async { "fine" }));
    let limits = msgbatch::view::Limits {
        header_read_timeout: Duration::from_secs(120),
        connections: 2,
    };
    let (base, stop) = serve_limited(routes, limits, msgbatch::view::MAX_REQUESTS).await;
    let host = base.strip_prefix("http://").unwrap().to_owned();
    // Two connections answered and kept alive: the server holds both.
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let answer = fine_on(&mut stream, &host, false).await;
        assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
        kept.push(stream);
    }
    // A third is closed without an answer.
    let mut third = tokio::net::TcpStream::connect(&host).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), fine_on(&mut third, &host, true))
        .await
        .expect("the server closes the third connection");
    assert_eq!(answer, None, "a third connection was answered");
    // Once one of the two ends, a new one is answered (as soon as the server has seen it end),
    // and the other is still served.
    drop(kept.remove(0));
    let answered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
            if let Some(answer) = fine_on(&mut stream, &host, true).await {
                break answer;
            }
        }
    })
    .await
    .expect("a connection is answered once one of those open ended");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let again = fine_on(&mut kept[0], &host, false).await;
    assert!(again.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    stop.cancel();
}

async fn get_owned(url: String) -> (StatusCode, String) {
    let (status, _, body) = get(&url).await;
    (status, body)
}

async fn panics() -> &'static str {
    panic!("a handler's bug")
}

#[tokio::test]
async fn a_handler_that_panics_answers_a_500_page_and_the_server_goes_on() {
    let routes = axum::Router::new()
        .route("/panics", axum::routing::get(panics))
        .route("/fine", axum::routing::get(|| async { "fine" }));
    let (base, stop) = serve_routes(routes, Duration::from_secs(30)).await;
    for _ in 0..2 {
        let (status, headers, body) = get(&format!("{base}/panics")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert_eq!(headers["content-security-policy"], CSP);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(body.contains("500 Internal Server Error"), "{body}");
        assert!(!body.contains("a handler's bug"), "{body}");
        let (status, _, body) = get(&format!("{base}/fine")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
    }
    stop.cancel();
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_line_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let routes = axum::Router::new().route("/fine", axum::routing::get(|| async { "fine" }));
    let (base, stop) = serve_routes(routes, Duration::from_secs(1)).await;
    let address = base.strip_prefix("http://").unwrap().to_owned();
    // One connection that never finishes its request line, one that sends nothing.
    let mut half = tokio::net::TcpStream::connect(&address).await.unwrap();
    half.write_all(b"GET /fine HT").await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    for stream in [&mut half, &mut silent] {
        // Closed by the server: the read ends (with whatever it said first), or is reset.
        let mut answer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer)).await;
        assert!(
            closed.is_ok(),
            "the server still holds the connection after 60 s"
        );
        assert!(!String::from_utf8_lossy(&answer).contains("fine"));
    }
    // Meanwhile and after, requests are answered.
    let (status, _, body) = get(&format!("{base}/fine")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
    stop.cancel();
}

#[tokio::test]
async fn hostile_query_values_are_refused_by_field_and_the_server_goes_on() {
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let long = "a".repeat(1_001);
    for (query, field) in [
        (format!("page={}", i64::MAX), "page"),
        ("page=4611686018427387904&per_page=200".to_owned(), "page"),
        (format!("q={long}"), "q"),
        (format!("tag={long}"), "tag"),
        ("model=a%00b".to_owned(), "model"),
    ] {
        for api in ["/api", ""] {
            let url = format!("{base}{api}/runs/hostile/jobs?{query}");
            let response = http().get(&url).send().await;
            let response = response.unwrap_or_else(|e| panic!("{url}: no answer: {e}"));
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{url}");
            let body = response.text().await.unwrap();
            assert!(body.contains(&format!("{field}:")), "{url}: {body}");
        }
    }
    // The longest search taken, and pages far but in range, still answer.
    let (status, _, _) = get(&format!("{base}/api/runs/hostile/jobs?q={}", &long[1..])).await;
    assert_eq!(status, StatusCode::OK);
    let far = get_json(&format!("{base}/api/runs/hostile/jobs?page=1000000000")).await;
    assert_eq!(far["jobs"].as_array().unwrap().len(), 0);
    let (status, _, _) = get(&format!(
        "{base}/runs/hostile/jobs?page=1000000000&per_page=200"
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get_json(&format!("{base}/api/runs")).await["runs"][0]["name"],
        "hostile"
    );
}

#[tokio::test]
async fn another_site_s_page_can_open_a_page_but_not_fetch_or_embed_one() {
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    // Its chart is served once its report is computed.
    run_with_report(&base, "hostile").await;
    for (site, mode, dest, path, expected) in [
        (
            "cross-site",
            "no-cors",
            "image",
            "/api/runs/hostile/jobs?q=alpha",
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site",
            "no-cors",
            "script",
            "/api/runs",
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site",
            "cors",
            "empty",
            "/api/runs",
            StatusCode::FORBIDDEN,
        ),
        (
            "same-site",
            "no-cors",
            "image",
            "/runs/hostile/charts/cost.svg",
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site",
            "navigate",
            "iframe",
            "/runs/hostile",
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site",
            "navigate",
            "document",
            "/runs/hostile",
            StatusCode::OK,
        ),
        ("same-origin", "cors", "empty", "/api/runs", StatusCode::OK),
        (
            "same-origin",
            "no-cors",
            "image",
            "/runs/hostile/charts/cost.svg",
            StatusCode::OK,
        ),
        ("none", "navigate", "document", "/", StatusCode::OK),
    ] {
        let response = http()
            .get(format!("{base}{path}"))
            .header("sec-fetch-site", site)
            .header("sec-fetch-mode", mode)
            .header("sec-fetch-dest", dest)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{site} {mode} {dest} {path}");
        assert_eq!(
            response.headers()["cross-origin-resource-policy"],
            "same-origin"
        );
        assert_eq!(response.headers()["content-security-policy"], CSP);
    }
}

#[tokio::test]
async fn a_store_s_impossible_times_show_and_fail_no_page() {
    let ws = Workspace::new();
    hostile_run(&ws).await;
    // A doctored store: times past the year 9999.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", ws.db().display()))
        .await
        .unwrap();
    sqlx::query("UPDATE runs SET created_at_ms = ?, finished_at_ms = ?")
        .bind(i64::MAX)
        .bind(253_402_300_800_000_i64)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    for path in ["/api/runs", "/", "/api/runs/hostile", "/runs/hostile"] {
        let response = http().get(format!("{base}{path}")).send().await;
        let response = response.unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let runs = get_json(&format!("{base}/api/runs")).await;
    assert_eq!(
        runs["runs"][0]["created_at"],
        format!("{} ms after 1970", i64::MAX)
    );
}

#[tokio::test]
async fn a_loopback_view_refuses_other_host_names() {
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let view = View::start(&ws, &[]).await;
    let port = view.base().rsplit(':').next().unwrap().to_owned();
    for (host, expected) in [
        (format!("localhost:{port}"), StatusCode::OK),
        (format!("127.0.0.1:{port}"), StatusCode::OK),
        (format!("attacker.example:{port}"), StatusCode::FORBIDDEN),
        ("attacker.example".to_owned(), StatusCode::FORBIDDEN),
    ] {
        let response = http()
            .get(format!("{}/api/runs", view.base()))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{host}");
    }
    // An absolute-form target names the host in place of `Host`; two `Host`s name none.
    let base = view.base();
    for (request, expected) in [
        (
            format!("GET http://attacker.example/api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"),
            "403",
        ),
        (
            format!("GET http://127.0.0.1:{port}/api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"),
            "200",
        ),
        (
            format!(
                "GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: attacker.example\r\n"
            ),
            "403",
        ),
        ("GET /api/runs HTTP/1.0\r\n".to_owned(), "403"),
    ] {
        let head = raw(&base, &format!("{request}Connection: close\r\n\r\n")).await;
        let status = head.split(' ').nth(1).unwrap_or_default();
        assert_eq!(status, expected, "{request:?}: {head}");
    }
}

#[tokio::test]
async fn beyond_loopback_every_request_needs_the_token() {
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let view = View::start(&ws, &["--host", "0.0.0.0"]).await;
    let token = view
        .url
        .split_once("?token=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("a made-up token is printed in the URL: {}", view.url));
    assert!(token.len() >= 32, "{token}");
    let base = view.loopback_base();
    for path in ["/", "/api/runs", "/runs/hostile", "/assets/view.js"] {
        let (status, headers, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(headers["content-security-policy"], CSP);
        assert!(!body.contains("hostile"));
    }
    let wrong = http()
        .get(format!("{base}/api/runs"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let bearer = http()
        .get(format!("{base}/api/runs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);

    // The token in the URL once: a cookie, and the address without it.
    let (status, headers, _) = get(&format!("{base}/runs/hostile?token={token}&x=1")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/runs/hostile?x=1");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    let with_cookie = http()
        .get(format!("{base}/runs/hostile"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), StatusCode::OK);

    // The address it sends the browser on to is on this server, whatever the path.
    for path in [
        "//attacker.example/x",
        "/\\attacker.example",
        "/\\/attacker.example",
    ] {
        let head = raw(
            &base,
            &format!("GET {path}?token={token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let location = head
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("{path}: no location: {head}"));
        assert!(
            location.starts_with('/') && !location.starts_with("//") && !location.contains('\\'),
            "{path}: sent on to {location}"
        );
    }

    // A token a cookie or a query would cut or change is refused up front.
    for bad in ["a;b", "two words", "a+b", "naïve"] {
        let run = ws
            .command(&["view", "--port", "0", "--host", "0.0.0.0", "--token", bad])
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap_or_else(|_| panic!("{bad}: the server started"))
            .unwrap();
        assert_eq!(code(&output), 2, "{bad}: {:?}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--token"),
            "{bad}: {:?}",
            text(&output)
        );
    }

    // A token given is used, and not printed.
    let given = View::start(&ws, &["--host", "0.0.0.0", "--token", "s3cret-token"]).await;
    assert!(!given.url.contains("s3cret"), "{}", given.url);
    let ok = http()
        .get(format!("{}/api/runs", given.loopback_base()))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_diff_and_model_pages_carry_diff_s_figures_and_filters() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    for (name, prompt) in [("before", "say alpha"), ("after", "say nothing")] {
        let lines: Vec<String> = (0..4)
            .map(|i| {
                json!({"custom_id": format!("q{i}"), "params": {"model": "claude-haiku-4-5",
                    "max_tokens": 200, "messages": [{"role": "user",
                    "content": if i == 0 { prompt } else { "say alpha" }}]},
                    "expect": {"contains": "alpha"}})
                .to_string()
            })
            .collect();
        let file = ws.write(&format!("{name}.jsonl"), &(lines.join("\n") + "\n"));
        let output = ws
            .run_on(&mock, &["run", file.to_str().unwrap(), "--name", name])
            .await;
        assert!([0, 1].contains(&code(&output)), "{:?}", text(&output));
    }
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let diff = compared(&base, "/api/diff/before/after").await;
    assert_eq!(diff["totals"]["matched"], 4);
    assert_eq!(diff["totals"]["counts"]["regression"], 1);
    assert_eq!(diff["comparisons"][0]["metric"], "score");
    let regressions = get_json(&format!("{base}/api/diff/before/after?change=regression")).await;
    assert_eq!(regressions["rows"].as_array().unwrap().len(), 1);
    assert_eq!(regressions["rows"][0]["job_id"], "q0");
    let (status, _, page) = get(&format!("{base}/diff/before/after?change=regression")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("regression"));
    assert!(page.contains("job_id=q0"), "links into the job list");
    let matrix = compared(&base, "/api/runs/before/models").await;
    assert_eq!(matrix["models"], json!(["claude-haiku-4-5"]));
}

/// A diff of two big-ish runs lists one page of its changed jobs at a time, every changed
/// job a page away (the command's limit of 50 of a kind does not apply to the page).
#[tokio::test]
async fn a_diff_shows_one_page_of_changed_jobs_at_a_time() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // 120 jobs that all pass in `before`; in `after`, all but every tenth fail.
    for (name, failing) in [("before", false), ("after", true)] {
        let lines: Vec<String> = (0..120)
            .map(|i| {
                let prompt = if failing && i % 10 != 0 {
                    "say nothing"
                } else {
                    "say alpha"
                };
                json!({"custom_id": format!("q{i}"), "params": {"model": "claude-haiku-4-5",
                    "max_tokens": 200, "messages": [{"role": "user", "content": prompt}]},
                    "expect": {"contains": "alpha"}})
                .to_string()
            })
            .collect();
        let file = ws.write(&format!("{name}.jsonl"), &(lines.join("\n") + "\n"));
        let output = ws
            .run_on(&mock, &["run", file.to_str().unwrap(), "--name", name])
            .await;
        assert!([0, 1].contains(&code(&output)), "{:?}", text(&output));
    }
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    compared(&base, "/api/diff/before/after").await;

    let (status, _, page) = get(&format!("{base}/diff/before/after?change=regression")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.matches("<tr class=\"job\"").count(), 50, "one page");
    assert!(page.contains("of 108"), "every regression counted");
    assert!(page.contains("page=2"), "a link to the next page");

    let last = get_json(&format!(
        "{base}/api/diff/before/after?change=regression&page=3"
    ))
    .await;
    assert_eq!(last["totals"]["counts"]["regression"], 108);
    assert_eq!(last["matched"], 108);
    let rows = last["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "the last page");
    assert_eq!(rows[7]["job_id"], "q119");
    let small = get_json(&format!("{base}/api/diff/before/after?per_page=5&page=2")).await;
    assert_eq!(small["rows"].as_array().unwrap().len(), 5);
    assert_eq!(
        small["rows"][0]["job_id"], "q6",
        "q1 to q4 on the first page"
    );
    let (status, _, _) = get(&format!("{base}/diff/before/after?per_page=many")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A run's model comparison lists one page of its jobs, as the job list does: the figures
/// are over every job, the rows those of the page asked for, disagreements first.
#[tokio::test]
async fn a_model_comparison_shows_one_page_of_jobs_at_a_time() {
    let ws = Workspace::new();
    let mock = mock(MockConfig::default()).await;
    // 120 jobs on two models; every tenth fails its grader under both, so the models agree.
    let lines: Vec<String> = (0..120)
        .map(|i| {
            json!({"custom_id": format!("q{i}"), "params": {"max_tokens": 200,
                "messages": [{"role": "user",
                    "content": if i % 10 == 0 { "say nothing" } else { "say alpha" }}]},
                "expect": {"contains": "alpha"}})
            .to_string()
        })
        .collect();
    let file = ws.write("big.jsonl", &(lines.join("\n") + "\n"));
    let output = ws
        .run_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "big",
                "--models",
                "claude-haiku-4-5,claude-sonnet-4-6",
            ],
        )
        .await;
    assert!([0, 1].contains(&code(&output)), "{:?}", text(&output));
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    compared(&base, "/api/runs/big/models").await;

    let (status, _, page) = get(&format!("{base}/runs/big/models")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.matches("<tr class=\"job\"").count(), 50, "one page");
    assert!(page.contains("120 jobs"), "the figures are over every job");
    assert!(page.contains("page=2"), "a link to the next page");
    // The twelve jobs that failed come first.
    let first = page.find(">q0<").expect("q0 listed");
    let later = page.find(">q1<").expect("q1 listed");
    assert!(first < later && page.find(">q110<").is_some_and(|i| i < later));

    let api = get_json(&format!("{base}/api/runs/big/models?page=3")).await;
    assert_eq!(api["jobs"], 120);
    assert_eq!(api["matched"], 120);
    assert_eq!(api["rows"].as_array().unwrap().len(), 20, "the last page");
    let failed = get_json(&format!(
        "{base}/api/runs/big/models?outcome=fail&per_page=5"
    ))
    .await;
    assert_eq!(failed["matched"], 12);
    let rows = failed["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r["failed"] == true), "{rows:?}");
    let (status, _, _) = get(&format!("{base}/runs/big/models?page=x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn the_view_reads_a_postgresql_store_as_it_reads_sqlite() {
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    hostile_run(&ws).await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let runs = get_json(&format!("{base}/api/runs")).await;
    assert_eq!(runs["runs"][0]["status"], "completed");
    assert_eq!(runs["runs"][0]["done"], 12);
    let id = runs["runs"][0]["id"].as_i64().unwrap();
    let passed = get_json(&format!("{base}/api/runs/{id}/jobs?outcome=passed")).await;
    assert_eq!(job_ids(&passed), ["j0", "j3", "j6", "j9"]);
    assert!(
        passed["jobs"][0]["prompt"]
            .as_str()
            .unwrap()
            .starts_with("say alpha <script>")
    );
    let tagged = get_json(&format!("{base}/api/runs/{id}/jobs?tag=parity%3Dodd")).await;
    assert_eq!(tagged["matched"], 6);
    let text = get_json(&format!("{base}/api/runs/{id}/jobs?q=PLAIN%20PROMPT%201")).await;
    assert_eq!(job_ids(&text), ["j1", "j10", "j11"]);
    let job_row = passed["jobs"][0]["id"].as_i64().unwrap();
    let (status, _, page) = get(&format!("{base}/runs/{id}/jobs/{job_row}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<script>document"));
    let (status, _, _) = get(&format!("{base}/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    // PostgreSQL refuses a NUL in a parameter: the view refuses it first, as the client's.
    for (path, expected) in [
        ("/api/runs/a%00b".to_owned(), StatusCode::NOT_FOUND),
        (
            format!("/api/runs/{id}/jobs?q=a%00b"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/runs/{id}/jobs?model=%00"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, _, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, expected, "{path}: {body}");
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_run_page_answers_at_once_while_its_report_is_computed() {
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    hostile_run(&ws).await;
    // The report reads the attempts and the rest of the run's page does not: with the table
    // locked, the report is computed for as long as the test holds the lock.
    let mut lock = locked(&db.url, "attempts").await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let bound = Duration::from_secs(60);
    let page = tokio::time::timeout(bound, get_json(&format!("{base}/api/runs/hostile")))
        .await
        .expect("the run's data waits for the report");
    assert_eq!(page["report_status"], "computing", "{page}");
    assert_eq!(page["report"], Value::Null);
    assert_eq!(page["run"]["done"], 12);
    let (status, _, html) = tokio::time::timeout(bound, get(&format!("{base}/runs/hostile")))
        .await
        .expect("the run's page waits for the report");
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("data-report=\"computing\""), "{html}");
    assert!(html.contains("being computed"), "{html}");
    let list = tokio::time::timeout(bound, get_json(&format!("{base}/api/runs/hostile/jobs")))
        .await
        .expect("the job list waits for the report");
    assert_eq!(list["matched"], 12);
    let (status, headers, _) =
        tokio::time::timeout(bound, get(&format!("{base}/runs/hostile/charts/cost.svg")))
            .await
            .expect("a chart waits for the report");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "2");
    // Once the report can be read it is computed, and the page shows it.
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    let page = run_with_report(&base, "hostile").await;
    assert_eq!(page["report"]["groups"].as_array().unwrap().len(), 2);
    let (_, _, html) = get(&format!("{base}/runs/hostile")).await;
    assert!(!html.contains("data-report"), "{html}");
    assert!(html.contains("Latency (ms)"), "{html}");
}

/// A connection holding `table` locked against every read, until it commits.
async fn locked(url: &str, table: &'static str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let mut lock = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut lock)
    .await
    .unwrap();
    lock
}

/// A run's models compared, and two runs compared, take seconds over a million results: their
/// pages answer at once, say so, and show the comparison once it is computed, then kept.
#[tokio::test]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn a_comparison_page_answers_at_once_while_it_is_computed() {
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    hostile_run(&ws).await;
    // A comparison reads the verdicts and the rest of its page does not: with the table
    // locked, the comparison is computed for as long as the test holds the lock.
    let mut lock = locked(&db.url, "grades").await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let bound = Duration::from_secs(60);
    for (page, api) in [
        ("/runs/hostile/models", "/api/runs/hostile/models"),
        ("/diff/hostile/hostile", "/api/diff/hostile/hostile"),
    ] {
        let data = tokio::time::timeout(bound, get_json(&format!("{base}{api}")))
            .await
            .unwrap_or_else(|_| panic!("{api} waits for the comparison"));
        assert_eq!(data["status"], "computing", "{data}");
        assert_eq!(data["rows"], Value::Null, "{data}");
        let (status, _, html) = tokio::time::timeout(bound, get(&format!("{base}{page}")))
            .await
            .unwrap_or_else(|_| panic!("{page} waits for the comparison"));
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("data-report=\"computing\""), "{html}");
        assert!(html.contains("data-poll=\"/api/"), "{html}");
        assert!(html.contains("being compared"), "{html}");
    }
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    let models = compared(&base, "/api/runs/hostile/models").await;
    assert_eq!(models["jobs"], 12);
    assert_eq!(models["rows"].as_array().unwrap().len(), 12);
    let diff = compared(&base, "/api/diff/hostile/hostile").await;
    assert_eq!(diff["totals"]["matched"], 12);
    let (_, _, html) = get(&format!("{base}/runs/hostile/models")).await;
    assert!(!html.contains("data-report"), "{html}");
    assert!(html.contains("12 jobs"), "{html}");
}

/// Headless Chromium, or a failure naming what to install: the browser tests are marked
/// ignored, and once asked for they must not pass having opened nothing.
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

/// The DOM of `url` after its script ran for `budget_ms` of the page's (virtual) time.
async fn rendered(url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(chromium())
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
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The text of the first element holding `marker` in its start tag.
fn cell<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom.find(marker).unwrap_or_else(|| panic!("no {marker}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    &rest[open..open + close]
}

#[tokio::test]
#[ignore = "needs Chromium: Debian's `chromium` package on the PATH"]
async fn in_a_browser_hostile_prompts_and_answers_render_as_text_and_run_nothing() {
    chromium();
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let passed = get_json(&format!("{base}/api/runs/hostile/jobs?outcome=passed")).await;
    let job_row = passed["jobs"][0]["id"].as_i64().unwrap();
    compared(&base, "/api/runs/hostile/models").await;
    for page in [
        format!("/runs/hostile/jobs/{job_row}"),
        "/runs/hostile/jobs".to_owned(),
        "/runs/hostile/models".to_owned(),
    ] {
        let dom = rendered(&format!("{base}{page}"), 3_000).await;
        assert!(dom.contains("</html>"), "{page}: the page loaded");
        let title = cell(&dom, "<title");
        assert!(
            title.ends_with("· msgbatch view") && !title.contains("pwned"),
            "{page}: the injected script ran: {title}"
        );
        assert!(!title.contains("img"), "{page}: the injected handler ran");
        assert!(
            !dom.contains("<img src=\"x\""),
            "{page}: an injected element"
        );
        assert!(!dom.contains("<b>bold</b>"), "{page}: injected markup");
        assert!(dom.contains("&lt;script&gt;"), "{page}: the prompt as text");
        assert!(dom.contains("&lt;/details&gt;"), "{page}");
    }
}

#[tokio::test]
#[ignore = "needs Chromium: Debian's `chromium` package on the PATH"]
async fn in_a_browser_filters_narrow_the_job_list() {
    chromium();
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    for (query, shown) in [
        ("", 12),
        ("?outcome=passed", 4),
        ("?outcome=failed&model=claude-haiku-4-5", 4),
        ("?tag=parity%3Dodd", 6),
        ("?q=plain+prompt+1", 3),
        ("?per_page=5&page=3", 2),
    ] {
        let dom = rendered(&format!("{base}/runs/hostile/jobs{query}"), 1_000).await;
        assert_eq!(dom.matches("<tr class=\"job\"").count(), shown, "{query}");
        if query.starts_with("?outcome=passed") {
            assert_eq!(
                dom.matches("data-outcome=\"passed\"").count(),
                4,
                "only passed jobs"
            );
            assert!(
                dom.contains("<option value=\"passed\" selected"),
                "the form shows the filter"
            );
        }
    }
}

#[tokio::test]
#[ignore = "needs Chromium: Debian's `chromium` package on the PATH"]
async fn in_a_browser_a_running_run_s_counter_moves_without_reload() {
    chromium();
    let ws = Workspace::new();
    // Answers slow enough that the run lasts a while, fast enough to move between polls.
    let mock = mock(MockConfig {
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let file = ws.jobs("many.jsonl", 3_000);
    let _run = ws
        .command_on(
            &mock,
            &[
                "run",
                file.to_str().unwrap(),
                "--name",
                "live",
                "--concurrency",
                "2",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(ws.path("run.log")).unwrap())
        .spawn()
        .unwrap();
    let view = View::start_when_stored(&ws, &ws.path("run.log")).await;
    let base = view.base();
    // Wait for the run to be under way: running, and some jobs done but not all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let runs = get_json(&format!("{base}/api/runs")).await;
        let run = &runs["runs"][0];
        if run["status"] == "running" && run["done"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            run["done"].as_i64().unwrap_or(0) < 3_000,
            "finished too soon"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run is not under way: {run}; {}",
            std::fs::read_to_string(ws.path("run.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dom = rendered(&format!("{base}/"), 60_000).await;
    assert_eq!(cell(&dom, "data-field=\"status\""), "running");
    let first: i64 = {
        let at = dom.find("data-first=\"").unwrap() + "data-first=\"".len();
        dom[at..at + dom[at..].find('"').unwrap()].parse().unwrap()
    };
    let now: i64 = cell(&dom, "data-field=\"done\"")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        now > first,
        "the counter moved from {first} to {now} without a reload"
    );
    assert!(
        dom.contains("data-refreshed="),
        "the script refreshed the table"
    );
}

/// A `msgbatch` process on `ws`'s store, once it has said `what` on standard error; the rest
/// of what it says is read (and dropped) as it goes.
async fn started(command: &mut tokio::process::Command, what: &str) -> tokio::process::Child {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines.next_line().await.unwrap();
        let Some(line) = line else {
            panic!("the process ended without saying {what:?}: {seen:?}");
        };
        if line.contains(what) {
            break;
        }
        seen.push(line);
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// The runs page's counts of run `name`, as `/api/runs` gives them.
async fn listed(base: &str, name: &str) -> Value {
    let runs = get_json(&format!("{base}/api/runs")).await;
    runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no run {name}: {runs}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: a server on 127.0.0.1:5432 (trust auth, database `test`) or MSGBATCH_TEST_POSTGRES=postgres://user@host/db"]
async fn the_runs_page_counts_a_run_three_workers_write_at_once_as_its_rows_say() {
    use sqlx::Connection as _;
    const JOBS: i64 = 600;
    let db = crate::postgres::TestDb::create().await;
    let ws = Workspace::on_postgres(&db.url);
    // Answers slow enough for the workers to join and share the run; some fail for good.
    let mock = mock(MockConfig {
        latency: Duration::from_millis(20),
        fail_rate: 0.1,
        seed: 31,
        ..MockConfig::default()
    })
    .await;
    ws.jobs("jobs.jsonl", usize::try_from(JOBS).unwrap());
    let args = ["--concurrency", "4", "--max-attempts", "2", "-q"];
    let mut first = ws.command_on(
        &mock,
        &[&["run", "jobs.jsonl", "--name", "night"][..], &args].concat(),
    );
    let mut processes = vec![started(first.kill_on_drop(true), "sending to").await];
    for _ in 0..2 {
        let mut worker = ws.command(&[&["work", "night"][..], &args].concat());
        processes.push(started(worker.kill_on_drop(true), "worker for run").await);
    }
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    // While they write: every look adds up, and the run only moves forward.
    let mut done = 0;
    let mut looks = 0;
    loop {
        let run = listed(&base, "night").await;
        let jobs = &run["jobs"];
        let states =
            ["pending", "succeeded", "failed", "rejected"].map(|s| jobs[s].as_i64().unwrap());
        assert_eq!(jobs["total"], JOBS, "{run}");
        assert_eq!(states.iter().sum::<i64>(), JOBS, "{run}");
        let now = run["done"].as_i64().unwrap();
        assert!(now >= done, "done went from {done} to {now}: {run}");
        done = now;
        looks += 1;
        if now == JOBS {
            break;
        }
    }
    // 1: some jobs failed for good.
    for mut process in processes {
        let code = process.wait().await.unwrap().code();
        assert!(matches!(code, Some(0 | 1)), "{code:?}");
    }
    // Once they are done: what the rows say.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let truth: (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE j.state = 'pending'),
                COUNT(*) FILTER (WHERE j.state = 'succeeded'),
                COUNT(*) FILTER (WHERE j.state = 'failed'),
                COUNT(r.job), CAST(COALESCE(SUM(r.cost_pico_usd), 0) AS BIGINT),
                COUNT(r.job) - COUNT(r.cost_pico_usd),
                CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT),
                CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT)
         FROM jobs j LEFT JOIN results r ON r.job = j.id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let run = listed(&base, "night").await;
    let jobs = &run["jobs"];
    let shown = (
        jobs["pending"].as_i64().unwrap(),
        jobs["succeeded"].as_i64().unwrap(),
        jobs["failed"].as_i64().unwrap(),
        jobs["succeeded"].as_i64().unwrap(),
        jobs["cost_pico_usd"].as_i64().unwrap(),
        jobs["unpriced"].as_i64().unwrap(),
        jobs["input_tokens"].as_i64().unwrap(),
        jobs["output_tokens"].as_i64().unwrap(),
    );
    assert_eq!(shown, truth, "{run}");
    assert!(
        truth.1 > 0 && truth.2 > 0,
        "some answered, some failed: {truth:?}"
    );
    // Each worker counted on rows of its own.
    let (slots,): (i64,) = sqlx::query_as("SELECT COUNT(DISTINCT slot) FROM run_tallies")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(slots >= 3, "{slots} connections counted");
    assert!(looks > 1, "the run was looked at while it ran");
}

#[tokio::test]
async fn a_run_whose_figures_cannot_be_added_up_shows_why_in_its_row_and_the_others_list() {
    let ws = Workspace::new();
    hostile_run(&ws).await;
    let mock = mock(MockConfig::default()).await;
    let file = ws.write(
        "other.jsonl",
        "{\"custom_id\":\"o1\",\"params\":{\"model\":\"claude-haiku-4-5\",\"max_tokens\":16,\
         \"messages\":[{\"role\":\"user\",\"content\":\"say alpha\"}]}}\n",
    );
    let output = ws
        .run_on(&mock, &["run", file.to_str().unwrap(), "--name", "other"])
        .await;
    assert_eq!(code(&output), 0, "{:?}", text(&output));
    // A doctored store: two results of one model of `hostile` at 9e18 pico-USD each, which no
    // 64-bit sum holds.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", ws.db().display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE results SET cost_pico_usd = 9000000000000000000
         WHERE job IN (SELECT j.id FROM jobs j JOIN runs r ON r.id = j.run_id
                       WHERE r.name = 'hostile' AND j.model = 'claude-haiku-4-5')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let view = View::start(&ws, &[]).await;
    let base = view.base();
    let runs = get_json(&format!("{base}/api/runs")).await;
    let run = |name: &str| {
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} is listed: {runs}"))
            .clone()
    };
    let (hostile, other) = (run("hostile"), run("other"));
    assert!(
        hostile["problem"]
            .as_str()
            .is_some_and(|p| p.contains("beyond what msgbatch can add up")),
        "{hostile}"
    );
    assert_eq!(other["problem"], Value::Null, "{other}");
    assert_eq!(other["jobs"]["total"], 1, "{other}");
    assert_eq!(other["jobs"]["succeeded"], 1, "{other}");
    let (status, _, page) = get(&format!("{base}/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("beyond what msgbatch can add up"), "{page}");
    assert!(page.contains("1 of 1"), "the other run's counts: {page}");
}
