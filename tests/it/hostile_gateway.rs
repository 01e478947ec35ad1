//! Gateways that misbehave on purpose, each a small server of the test's own on
//! `127.0.0.1:0` that logs every request and its headers: redirects elsewhere, results files
//! on another origin, echoed secrets, answers without end, impossible usage, absurd waits and
//! bytes that are not UTF-8. The key and the extra headers must reach no one but the base
//! URL's origin, every read must stop at its bound, and nothing impossible may be stored.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use msgbatch::client::{ApiKey, AuthStyle, Client, Endpoint, Timeouts};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::*;

type Body = BoxBody<Bytes, Infallible>;

/// A request as a hostile server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    headers: HeaderMap,
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Response<Body> + Send + Sync>;

/// A server that answers every request with what its handler says (given the request and
/// how many came before it) and logs them all.
struct Hostile {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    async fn start(
        handler: impl Fn(&Seen, usize) -> Response<Body> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let task = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let log = Arc::clone(&log);
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                            let log = Arc::clone(&log);
                            let handler = Arc::clone(&handler);
                            async move {
                                let (parts, body) = request.into_parts();
                                // Read whole, as a server does before it answers.
                                let _ = body.collect().await;
                                let seen = Seen {
                                    method: parts.method.to_string(),
                                    target: parts
                                        .uri
                                        .path_and_query()
                                        .map(ToString::to_string)
                                        .unwrap_or_default(),
                                    headers: parts.headers,
                                };
                                let before = {
                                    let mut log = log.lock().unwrap();
                                    log.push(seen.clone());
                                    log.len() - 1
                                };
                                Ok::<_, Infallible>(handler(&seen, before))
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self { addr, log, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            hyper::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    response
}

fn json_response(value: &Value) -> Response<Body> {
    respond(
        200,
        &[("content-type", "application/json")],
        value.to_string(),
    )
}

/// A body of `first`, then `filler` repeated until `total` bytes have gone (or for ever when
/// the client keeps reading, up to `total`), then `last`; `produced` counts what the client
/// pulled. hyper asks for the next frame only once the previous one is written, so a client
/// that stops reading stops the count at what fits in the socket buffers.
fn pulled_body(
    first: &'static [u8],
    filler: &'static [u8],
    last: &'static [u8],
    total: u64,
    produced: Arc<AtomicU64>,
) -> Body {
    let chunk: Bytes = Bytes::from(filler.repeat((64 * 1024 / filler.len()).max(1)));
    let stream = futures_util::stream::unfold(0u8, move |stage| {
        let chunk = chunk.clone();
        let produced = Arc::clone(&produced);
        async move {
            let (bytes, next) = match stage {
                0 => (Bytes::from_static(first), 1),
                1 if produced.load(Ordering::Relaxed) < total => (chunk, 1),
                1 => (Bytes::from_static(last), 2),
                _ => return None,
            };
            produced.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Some((Ok::<_, Infallible>(Frame::data(bytes)), next))
        }
    });
    StreamBody::new(stream).boxed()
}

/// A server whose every answer `answer` makes (given how many requests came before) around
/// [`pulled_body`]s that share one count, and that count of the bytes the client pulled.
async fn pulling(
    answer: impl Fn(Arc<AtomicU64>, usize) -> Response<Body> + Send + Sync + 'static,
) -> (Hostile, Arc<AtomicU64>) {
    let produced = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&produced);
    let server = Hostile::start(move |_, before| answer(Arc::clone(&counted), before)).await;
    (server, produced)
}

/// `body` as a 200 answer with this `content-type`.
fn typed(content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// A Message with `usage`.
fn message(text: &str, usage: &Value) -> Value {
    json!({"id": "msg_h", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
        "stop_sequence": null, "usage": usage})
}

/// Runs `msgbatch run FILE ARGS…` on `server` with the test key. A run that would hang
/// (sleeping on an absurd wait, reading for ever) fails the test rather than holding it for
/// the night.
async fn run_file(ws: &Workspace, server: &Hostile, file: &Path, args: &[&str]) -> Output {
    let url = server.url();
    let mut all = vec!["run", file.to_str().expect("a UTF-8 temp path")];
    all.extend_from_slice(args);
    all.extend([
        "--base-url",
        &url,
        "--api-key-env",
        KEY_ENV,
        "--retry-base-delay",
        "1ms",
        "--retry-max-delay",
        "5ms",
    ]);
    let output = tokio::time::timeout(Duration::from_secs(180), ws.command(&all).output()).await;
    output
        .expect("the command ends instead of waiting for ever")
        .expect("the binary runs")
}

/// [`run_file`] on `count` jobs in a new workspace.
async fn run_jobs(server: &Hostile, count: usize, args: &[&str]) -> (Workspace, Output) {
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", count);
    let output = run_file(&ws, server, &file, args).await;
    (ws, output)
}

/// The standard error of a command that must have exited with `expected`.
fn exited(output: &Output, expected: i32) -> String {
    let (_, stderr) = text(output);
    assert_eq!(code(output), expected, "{stderr}");
    stderr
}

/// (error type, error message, error body) of every attempt, in order.
async fn attempts(ws: &Workspace) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT error_type, error_message, error_body FROM attempts ORDER BY id")
        .fetch_all(&ws.pool().await)
        .await
        .unwrap()
}

/// Whether `needle` is anywhere in the database files, the WAL included.
async fn in_database(ws: &Workspace, needle: &str) -> bool {
    drop(ws.pool().await);
    ["", "-wal", "-shm"].iter().any(|suffix| {
        let mut path = ws.db().into_os_string();
        path.push(suffix);
        file_bytes(std::path::Path::new(&path))
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    })
}

/// The header a test sends that must be treated like the key.
const HEADER_SECRET: &str = "hv-gateway-token-77e1f";

#[tokio::test]
async fn a_redirect_is_refused_and_the_key_reaches_no_other_origin() {
    let elsewhere = Hostile::start(|_, _| json_response(&message("stolen", &json!({})))).await;
    let target = format!("{}/v1/messages", elsewhere.url());
    let with_credentials = format!("http://user:pa55word@{}/v1/\tmessages", elsewhere.addr);
    let gateway = {
        let target = target.clone();
        Hostile::start(move |_, before| match before {
            0 => respond(307, &[("location", &target)], ""),
            1 => respond(308, &[("location", &with_credentials)], ""),
            2 => respond(
                302,
                &[("location", &target), ("x-should-retry", "true")],
                "",
            ),
            _ => respond(307, &[("location", "file:///etc/passwd")], ""),
        })
        .await
    };
    let header = format!("x-gateway-token: {HEADER_SECRET}");
    let (ws, output) = run_jobs(&gateway, 4, &["--concurrency", "1", "--header", &header]).await;
    let stderr = exited(&output, 1);
    assert!(elsewhere.log().is_empty(), "{:?}", elsewhere.log());
    // Not retried: a redirect would only be redirected again.
    assert_eq!(gateway.log().len(), 4);
    let attempts = attempts(&ws).await;
    let messages: Vec<String> = attempts
        .iter()
        .map(|(kind, message, _)| {
            assert_eq!(kind.as_deref(), Some("redirect"));
            message.clone().unwrap_or_default()
        })
        .collect();
    assert!(
        messages[0].starts_with(&format!("the gateway redirected to {target};")),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("http://****@127.0.0.1") && !messages[1].contains("pa55word"),
        "{messages:?}"
    );
    assert!(!messages[1].contains('\t'), "{messages:?}");
    assert!(
        messages[3].contains("file:///etc/passwd (a local file)"),
        "{messages:?}"
    );
    assert!(!stderr.contains(TEST_KEY) && !stderr.contains(HEADER_SECRET));
}

#[tokio::test]
async fn a_token_count_is_not_redirected_either() {
    let elsewhere = Hostile::start(|_, _| json_response(&json!({"input_tokens": 3}))).await;
    let target = format!("{}/v1/messages/count_tokens", elsewhere.url());
    let gateway = Hostile::start(move |_, _| respond(301, &[("location", &target)], "")).await;
    let client = client(&gateway, &[]);
    let counted = client.count_tokens(Bytes::from_static(b"{}")).await;
    assert!(counted.is_err(), "{counted:?}");
    assert!(elsewhere.log().is_empty(), "{:?}", elsewhere.log());
}

/// A client on `server`'s messages URL with the test key and `headers`.
fn client(server: &Hostile, headers: &'static [(String, String)]) -> Client {
    Client::new(
        Endpoint {
            url: format!("{}/v1/messages", server.url()),
            auth: AuthStyle::XApiKey,
            anthropic_version: "2023-06-01",
            headers,
        },
        Some(ApiKey::new(TEST_KEY.to_owned())),
        Timeouts {
            total: Duration::from_secs(60),
            stream_idle: Duration::from_secs(60),
        },
        4,
    )
    .unwrap()
}

/// A client on `url` with the test key.
fn client_at(url: String) -> Client {
    Client::new(
        Endpoint {
            url,
            auth: AuthStyle::XApiKey,
            anthropic_version: "2023-06-01",
            headers: &[],
        },
        Some(ApiKey::new(TEST_KEY.to_owned())),
        Timeouts {
            total: Duration::from_secs(60),
            stream_idle: Duration::from_secs(60),
        },
        4,
    )
    .unwrap()
}

#[tokio::test]
async fn every_endpoint_keeps_the_messages_query_and_no_error_shows_its_key() {
    const PATH_KEY: &str = "qk-0f3a9-path-key";
    let gateway = Hostile::start(|seen, _| {
        let target = &seen.target;
        if target.contains("/count_tokens") {
            json_response(&json!({"input_tokens": 3}))
        } else if target.starts_with("/v1/messages/batches?") {
            json_response(&json!({"data": [], "has_more": false}))
        } else if target.starts_with("/v1/messages/batches/") {
            json_response(&json!({"id": "b", "processing_status": "in_progress"}))
        } else if seen.headers.contains_key("x-echo") {
            // A gateway quoting the request it refuses.
            let error = json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": format!("no model at {target}")}});
            respond(
                400,
                &[("content-type", "application/json")],
                error.to_string(),
            )
        } else {
            // An http-to-https redirect repeats the URL asked for, query and all.
            let location = format!("https://127.0.0.1{target}");
            respond(301, &[("location", &location)], "")
        }
    })
    .await;
    let query = format!("api-version=2023-06-01&api-key={PATH_KEY}");
    let client = client_at(format!("{}/v1/messages?{query}", gateway.url()));
    assert_eq!(
        client
            .count_tokens(Bytes::from_static(b"{}"))
            .await
            .unwrap(),
        3
    );
    client.list_batches(Some("a&b c"), 20).await.result.unwrap();
    client.retrieve_batch("../../x?y#z").await.result.unwrap();
    let redirected = client.send(Bytes::from_static(b"{}"), false).await;
    let error = redirected.result.unwrap_err().to_string();
    assert!(
        error.contains("api-key=***") && !error.contains(PATH_KEY),
        "{error}"
    );
    static ECHO: std::sync::LazyLock<Vec<(String, String)>> =
        std::sync::LazyLock::new(|| vec![("x-echo".to_owned(), "please".to_owned())]);
    let echoed = Client::new(
        Endpoint {
            url: format!("{}/v1/messages?{query}", gateway.url()),
            auth: AuthStyle::XApiKey,
            anthropic_version: "2023-06-01",
            headers: &ECHO,
        },
        Some(ApiKey::new(TEST_KEY.to_owned())),
        Timeouts {
            total: Duration::from_secs(60),
            stream_idle: Duration::from_secs(60),
        },
        1,
    )
    .unwrap();
    let error = echoed
        .send(Bytes::from_static(b"{}"), false)
        .await
        .result
        .unwrap_err();
    let shown = format!("{error} {}", error.body().unwrap_or_default());
    assert!(
        shown.contains("no model at") && !shown.contains(PATH_KEY),
        "{shown}"
    );
    let targets: Vec<String> = gateway.log().into_iter().map(|seen| seen.target).collect();
    assert_eq!(
        targets,
        [
            format!("/v1/messages/count_tokens?{query}"),
            format!("/v1/messages/batches?{query}&limit=20&after_id=a%26b%20c"),
            format!("/v1/messages/batches/..%2F..%2Fx%3Fy%23z?{query}"),
            format!("/v1/messages?{query}"),
            format!("/v1/messages?{query}"),
        ]
    );
    // Nor does the error of a gateway that cannot be reached, whose host the HTTP client
    // writes otherwise than it was given.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = client_at(format!(
        "http://LOCALHOST:{}/v1/messages?{query}",
        closed.port()
    ));
    let error = down
        .count_tokens(Bytes::from_static(b"{}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(!error.contains(PATH_KEY), "{error}");
}

#[tokio::test]
async fn a_token_count_no_request_could_have_is_refused() {
    let gateway = Hostile::start(|_, before| {
        let count: u64 = if before == 0 { 1 << 40 } else { 12 };
        json_response(&json!({"input_tokens": count}))
    })
    .await;
    let client = client(&gateway, &[]);
    let error = client
        .count_tokens(Bytes::from_static(b"{}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("impossible token count"), "{error}");
    assert_eq!(
        client
            .count_tokens(Bytes::from_static(b"{}"))
            .await
            .unwrap(),
        12
    );
}

#[tokio::test]
async fn a_results_download_that_never_answers_fails_at_the_attempts_limit() {
    // A gateway that takes the connection and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let client = Client::new(
        Endpoint {
            url: format!("http://{addr}/v1/messages"),
            auth: AuthStyle::XApiKey,
            anthropic_version: "2023-06-01",
            headers: &[],
        },
        Some(ApiKey::new(TEST_KEY.to_owned())),
        Timeouts {
            total: Duration::from_secs(1),
            stream_idle: Duration::from_secs(1),
        },
        1,
    )
    .unwrap();
    let called = tokio::time::timeout(
        Duration::from_secs(120),
        client.batch_results("/v1/messages/batches/b/results"),
    )
    .await
    .expect("the call ends instead of waiting for ever");
    let error = called.result.err().expect("no answer is an error");
    assert!(
        matches!(error, msgbatch::client::AttemptError::Timeout(_)),
        "{error}"
    );
    assert!(error.is_retryable());
    held.abort();
}

#[tokio::test]
async fn batch_results_on_another_origin_are_read_from_the_base_origin() {
    let results: String = (0..3)
        .map(|i| {
            json!({"custom_id": format!("job-{i}"), "result": {"type": "succeeded",
                "message": message("from a batch", &json!({"input_tokens": 5, "output_tokens": 2}))}})
            .to_string()
                + "\n"
        })
        .collect();
    let results = Bytes::from(results);
    let elsewhere = {
        let results = results.clone();
        Hostile::start(move |_, _| respond(200, &[], results.clone())).await
    };
    let results_url = format!(
        "{}/v1/messages/batches/msgbatch_h/results?part=1",
        elsewhere.url()
    );
    let batch = json!({"id": "msgbatch_h", "type": "message_batch", "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 0, "expired": 0},
        "created_at": "2030-01-01T00:00:00Z", "results_url": results_url});
    let gateway = Hostile::start(move |seen, _| {
        if seen.target.contains("/results") {
            respond(200, &[], results.clone())
        } else if seen.target.starts_with("/v1/messages/batches?") {
            json_response(&json!({"data": [], "has_more": false}))
        } else {
            json_response(&batch)
        }
    })
    .await;
    let header = format!("x-gateway-token: {HEADER_SECRET}");
    let args = [
        "--via",
        "batches",
        "--poll-interval",
        "10ms",
        "--header",
        &header,
    ];
    let (ws, output) = run_jobs(&gateway, 3, &args).await;
    let stderr = exited(&output, 0);
    assert!(elsewhere.log().is_empty(), "{:?}", elsewhere.log());
    let read = gateway
        .log()
        .into_iter()
        .find(|seen| seen.target.contains("/results"))
        .expect("the results were read from the base URL's origin");
    assert_eq!(read.method, "GET");
    assert_eq!(
        read.target,
        "/v1/messages/batches/msgbatch_h/results?part=1"
    );
    assert_eq!(
        stderr.matches("results_url on another origin").count(),
        1,
        "{stderr}"
    );
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'").await,
        3
    );
}

#[tokio::test]
async fn header_values_a_gateway_echoes_are_stored_nowhere() {
    let gateway = Hostile::start(|seen, _| {
        let token = seen.headers["x-gateway-token"].to_str().unwrap().to_owned();
        let key = seen.headers["x-api-key"].to_str().unwrap().to_owned();
        let error = json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": format!("header x-gateway-token={token} is not valid for key {key}")}});
        respond(
            400,
            &[("content-type", "application/json")],
            error.to_string(),
        )
    })
    .await;
    let header = format!("x-gateway-token: {HEADER_SECRET}");
    let (ws, output) = run_jobs(&gateway, 2, &["--header", &header]).await;
    exited(&output, 1);
    let attempts = attempts(&ws).await;
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]
            .1
            .as_deref()
            .unwrap()
            .contains("header x-gateway-token=**** is not valid for key ****"),
        "{attempts:?}"
    );
    let export = ws.run(&["export", "1", "--out", "-"]).await;
    for output in [&output, &export] {
        let (stdout, stderr) = text(output);
        assert!(!stdout.contains(HEADER_SECRET) && !stderr.contains(HEADER_SECRET));
    }
    assert!(!in_database(&ws, HEADER_SECRET).await);
    assert!(!in_database(&ws, TEST_KEY).await);
}

#[tokio::test]
async fn an_answer_past_its_bound_fails_once_and_stops_the_download() {
    let (gateway, produced) = pulling(|produced, _| {
        // A valid Message of 40 MB: the text runs on until the end.
        typed(
            "application/json",
            pulled_body(
                br#"{"type":"message","usage":{"input_tokens":1,"output_tokens":1},"content":[{"type":"text","text":""#,
                b"lorem ipsum ",
                br#""}]}"#,
                40 * 1024 * 1024,
                produced,
            ),
        )
    })
    .await;
    let (ws, output) = run_jobs(&gateway, 1, &["--max-answer-mb", "1"]).await;
    exited(&output, 1);
    assert_eq!(
        gateway.log().len(),
        1,
        "a too-large answer is not asked for again"
    );
    let attempts = attempts(&ws).await;
    assert_eq!(
        attempts[0].0.as_deref(),
        Some("answer_too_large"),
        "{attempts:?}"
    );
    assert_eq!(
        attempts[0].1.as_deref(),
        Some("answer larger than 1 MB (see --max-answer-mb)")
    );
    // Reading stopped near the bound: the rest of the 40 MB was never pulled.
    let pulled = produced.load(Ordering::Relaxed);
    assert!(pulled < 20 * 1024 * 1024, "{pulled} bytes pulled");
}

#[tokio::test]
async fn an_endless_stream_fails_at_the_bound() {
    let (gateway, produced) = pulling(|produced, before| {
        // Pings without end, then one line without end.
        let (first, filler): (&[u8], &[u8]) = if before == 0 {
            (b"", b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
        } else {
            (b"data: ", b"xxxxxxxx")
        };
        typed(
            "text/event-stream",
            pulled_body(first, filler, b"", 200 * 1024 * 1024, produced),
        )
    })
    .await;
    let ws = Workspace::new();
    let lines: Vec<String> = (0..2)
        .map(|i| {
            json!({"custom_id": format!("s-{i}"), "params": {"model": "claude-haiku-4-5",
                "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "hi"}]}})
            .to_string()
        })
        .collect();
    let file = ws.write("jobs.jsonl", &(lines.join("\n") + "\n"));
    let output = run_file(
        &ws,
        &gateway,
        &file,
        &["--max-answer-mb", "2", "--concurrency", "1"],
    )
    .await;
    exited(&output, 1);
    assert_eq!(gateway.log().len(), 2);
    for (kind, message, _) in attempts(&ws).await {
        assert_eq!(kind.as_deref(), Some("answer_too_large"));
        assert_eq!(
            message.as_deref(),
            Some("streamed answer larger than 2 MB (see --max-answer-mb)")
        );
    }
    let pulled = produced.load(Ordering::Relaxed);
    assert!(pulled < 40 * 1024 * 1024, "{pulled} bytes pulled");
}

#[tokio::test]
async fn an_endless_error_body_is_cut_and_not_read_to_its_end() {
    let (gateway, produced) = pulling(|produced, _| {
        let mut response = Response::new(pulled_body(
            b"<html>",
            b"<p>upstream unavailable</p>",
            b"</html>",
            100 * 1024 * 1024,
            produced,
        ));
        *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        response
    })
    .await;
    let (ws, output) = run_jobs(&gateway, 1, &["--max-attempts", "1"]).await;
    exited(&output, 1);
    let attempts = attempts(&ws).await;
    assert_eq!(attempts[0].0.as_deref(), Some("http_502"), "{attempts:?}");
    assert!(
        attempts[0]
            .2
            .as_deref()
            .unwrap()
            .starts_with("<html><p>upstream")
    );
    let pulled = produced.load(Ordering::Relaxed);
    assert!(pulled < 20 * 1024 * 1024, "{pulled} bytes pulled");
}

#[tokio::test]
async fn a_token_count_answer_is_bounded() {
    let (gateway, produced) = pulling(|produced, _| {
        Response::new(pulled_body(
            br#"{"input_tokens":3,"padding":""#,
            b"padding ",
            br#""}"#,
            64 * 1024 * 1024,
            produced,
        ))
    })
    .await;
    let counted = client(&gateway, &[])
        .count_tokens(Bytes::from_static(b"{}"))
        .await;
    let error = counted.expect_err("a 64 MB token count is no token count");
    assert!(error.to_string().contains("larger than 4 MB"), "{error}");
    let pulled = produced.load(Ordering::Relaxed);
    assert!(pulled < 40 * 1024 * 1024, "{pulled} bytes pulled");
}

#[tokio::test]
async fn usage_no_request_could_produce_is_never_stored() {
    let gateway = Hostile::start(|_, _| {
        json_response(&message(
            "hi",
            &json!({"input_tokens": 5, "output_tokens": 11_000_000_000_000_u64}),
        ))
    })
    .await;
    let ws = Workspace::new();
    let line = json!({"custom_id": "q", "params": {"model": "claude-haiku-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}]}});
    let file = ws.write("jobs.jsonl", &format!("{line}\n"));
    let output = run_file(
        &ws,
        &gateway,
        &file,
        &["--max-cost", "0.01", "--max-attempts", "2"],
    )
    .await;
    exited(&output, 1);
    let pool = ws.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 0);
    let attempts = attempts(&ws).await;
    assert_eq!(attempts.len(), 2, "retried only within --max-attempts");
    assert_eq!(
        attempts[1].1.as_deref(),
        Some("impossible usage: output_tokens 11000000000000 for a request with max_tokens 16")
    );
    // The store stays readable for every command.
    let status = ws.run(&["status", "1"]).await;
    assert_eq!(code(&status), 0, "{:?}", text(&status));
    let report = ws.report_json("1").await;
    assert!(report["totals"].is_array() || report["totals"].is_object());
}

#[tokio::test]
async fn an_absurd_retry_after_stops_the_run_instead_of_sleeping() {
    absurd_retry_after_stops_the_run("999999999", "the gateway asks to wait 31years 8months").await;
}

#[tokio::test]
async fn a_retry_after_too_large_for_a_duration_stops_the_run_too() {
    absurd_retry_after_stops_the_run("1e308", "the gateway asks to wait 584542046090years").await;
}

/// A gateway that answers every request 429 with `retry-after: RETRY_AFTER` stops the run
/// at its first answer, saying `says`.
async fn absurd_retry_after_stops_the_run(retry_after: &'static str, says: &str) {
    let gateway = Hostile::start(move |_, _| {
        let error =
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "later"}});
        respond(
            429,
            &[
                ("retry-after", retry_after),
                ("content-type", "application/json"),
            ],
            error.to_string(),
        )
    })
    .await;
    let args = [
        "--max-attempts",
        "2",
        "--concurrency",
        "1",
        "--name",
        "patient",
    ];
    let (ws, output) = run_jobs(&gateway, 3, &args).await;
    let stderr = exited(&output, 2);
    assert!(stderr.contains(says), "{stderr}");
    assert!(stderr.contains("resume later"), "{stderr}");
    assert!(stderr.contains("msgbatch resume patient"), "{stderr}");
    assert_eq!(gateway.log().len(), 1);
    let pool = ws.pool().await;
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM jobs WHERE state = 'pending'").await,
        3
    );
}

#[tokio::test]
async fn an_answer_that_is_not_utf8_is_refused() {
    let gateway = Hostile::start(|_, _| {
        let text =
            message("caf\u{e9}", &json!({"input_tokens": 5, "output_tokens": 2})).to_string();
        // é as Latin-1: one byte that is no UTF-8.
        let bytes = text.replace('\u{e9}', "\u{1}").into_bytes();
        let bytes: Vec<u8> = bytes
            .into_iter()
            .map(|b| if b == 1 { 0xE9 } else { b })
            .collect();
        respond(200, &[("content-type", "application/json")], bytes)
    })
    .await;
    let (ws, output) = run_jobs(&gateway, 1, &["--max-attempts", "1"]).await;
    exited(&output, 1);
    let attempts = attempts(&ws).await;
    assert_eq!(attempts[0].0.as_deref(), Some("invalid_response"));
    assert!(
        attempts[0].1.as_deref().unwrap().contains("not UTF-8"),
        "{attempts:?}"
    );
    let pool = ws.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 0);
}

#[tokio::test]
async fn a_gateway_message_cannot_add_lines_to_what_status_says() {
    // A message with line breaks, each starting what looks like one of status's own lines.
    let forged = "no\n  resume   msgbatch resume forged\r  ended    never";
    let gateway = Hostile::start(move |_, _| {
        let error = json!({"type": "error",
            "error": {"type": "authentication_error", "message": forged}});
        respond(
            401,
            &[("content-type", "application/json")],
            error.to_string(),
        )
    })
    .await;
    let (ws, output) = run_jobs(&gateway, 4, &["--concurrency", "1", "--name", "night"]).await;
    let run_stderr = exited(&output, 2);
    assert!(
        run_stderr.contains("stopping: the gateway answered 401"),
        "{run_stderr}"
    );
    let status = ws.run(&["status", "night"]).await;
    let (stdout, stderr) = text(&status);
    assert_eq!(code(&status), 0, "{stderr}");
    // The message is kept as one line, its breaks made spaces.
    assert!(
        stdout.contains("(no resume msgbatch resume forged ended never)"),
        "{stdout}"
    );
    // Neither the run's own stderr (`stopping:`, `stopped:`) nor status has a line that
    // starts with the gateway's words.
    for line in stdout
        .lines()
        .chain(stderr.lines())
        .chain(run_stderr.lines())
    {
        assert!(
            !line.contains("forged") || line.contains("stopp"),
            "{stdout}\n{run_stderr}"
        );
        assert!(!line.contains('\r'), "{stdout:?}");
    }
}

#[tokio::test]
async fn a_stream_error_event_is_kept_as_one_bounded_line() {
    // An `error` event whose type and message run to megabytes, with line breaks that start
    // lines of their own.
    let kind = format!("overloaded_error\nstopped: forged {}", "t".repeat(1 << 20));
    let text = format!("no\n  resume   forged\r{}", "m".repeat(4 << 20));
    let event = json!({"type": "error", "error": {"type": kind, "message": text}});
    let body = Bytes::from(format!("event: error\ndata: {event}\n\n"));
    let gateway = Hostile::start(move |_, _| {
        respond(200, &[("content-type", "text/event-stream")], body.clone())
    })
    .await;
    let (ws, output) = run_jobs(
        &gateway,
        1,
        &["--stream", "--max-attempts", "2", "--concurrency", "1"],
    )
    .await;
    let stderr = exited(&output, 1);
    let attempts = attempts(&ws).await;
    assert_eq!(attempts.len(), 2, "{stderr}");
    for (kind, message, _) in &attempts {
        let (kind, message) = (kind.as_deref().unwrap(), message.as_deref().unwrap());
        assert!(
            kind.starts_with("overloaded_error stopped: forged"),
            "{kind:.200}"
        );
        assert!(message.starts_with("no resume forged m"), "{message:.200}");
        assert!(
            kind.len() <= 200 && message.len() <= 2000,
            "{} {}",
            kind.len(),
            message.len()
        );
        assert!(!format!("{kind}{message}").contains(['\n', '\r']));
    }
    assert!(stderr.len() < 20_000, "{}", stderr.len());
    for line in stderr.lines() {
        assert!(
            !line.starts_with("stopped: forged") && !line.starts_with("  resume"),
            "{line:.200}"
        );
    }
}

/// A gateway whose every batch is `id`, already ended with `(succeeded, errored)` items,
/// whose results file (on its own origin) is `results`; it lists no batches.
async fn ended_batch(
    id: &'static str,
    (succeeded, errored): (u32, u32),
    results: String,
) -> Hostile {
    let results = Bytes::from(results);
    Hostile::start(move |seen, _| {
        let host = seen
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let url = format!("http://{host}/v1/messages/batches/{id}/results");
        if seen.target.contains("/results") {
            respond(200, &[], results.clone())
        } else if seen.target.starts_with("/v1/messages/batches?") {
            json_response(&json!({"data": [], "has_more": false}))
        } else {
            json_response(&json!({"id": id, "type": "message_batch",
                "processing_status": "ended",
                "request_counts": {"processing": 0, "succeeded": succeeded,
                    "errored": errored, "canceled": 0, "expired": 0},
                "created_at": "2030-01-01T00:00:00Z", "results_url": url}))
        }
    })
    .await
}

#[tokio::test]
async fn an_errored_batch_item_cannot_add_lines_to_the_report_or_the_run() {
    // Each errored item's type and message hold line breaks that start a line of their own.
    let results: String = (0..3)
        .map(|i| {
            json!({"custom_id": format!("job-{i}"), "result": {"type": "errored",
                "error": {"type": "error", "error": {"type": "api_error\nforged type",
                    "message": "overloaded\r\nforged message"}}}})
            .to_string()
                + "\n"
        })
        .collect();
    let gateway = ended_batch("msgbatch_e", (0, 3), results).await;
    let args = [
        "--via",
        "batches",
        "--poll-interval",
        "10ms",
        "--name",
        "night",
    ];
    let (ws, output) = run_jobs(&gateway, 3, &args).await;
    let (_, run_stderr) = text(&output);
    let report = ws.run(&["report", "night"]).await;
    let (stdout, stderr) = text(&report);
    assert_eq!(code(&report), 0, "{stderr}");
    assert!(stdout.contains("3 api_error forged type"), "{stdout}");
    for line in stdout
        .lines()
        .chain(stderr.lines())
        .chain(run_stderr.lines())
    {
        assert!(
            !line.trim_start().starts_with("forged"),
            "{stdout}\n{run_stderr}"
        );
    }
    let pool = ws.pool().await;
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts WHERE error_message = 'overloaded forged message'"
        )
        .await,
        3
    );
}

#[tokio::test]
async fn a_batch_result_with_more_output_than_its_request_allows_is_refused_not_billed() {
    // job-0 claims ten million output tokens for a request of max_tokens 200 (below every
    // absolute bound, so only the request's own bound can tell); the others are plausible.
    let results: String = (0..3)
        .map(|i| {
            let output = if i == 0 { 10_000_000 } else { 150 };
            json!({"custom_id": format!("job-{i}"), "result": {"type": "succeeded",
                "message": message("from a batch",
                    &json!({"input_tokens": 5, "output_tokens": output}))}})
            .to_string()
                + "\n"
        })
        .collect();
    let gateway = ended_batch("msgbatch_u", (3, 0), results).await;
    let args = ["--via", "batches", "--poll-interval", "10ms", "--name", "u"];
    let (ws, output) = run_jobs(&gateway, 3, &args).await;
    exited(&output, 1);
    let pool = ws.pool().await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM results").await, 2);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM jobs WHERE job_id = 'job-0' AND state = 'failed'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM attempts
             WHERE error_message LIKE 'impossible usage: output_tokens 10000000%'"
        )
        .await,
        1
    );
    // The report bills the two plausible answers only.
    let report = ws
        .run(&["report", "u", "--format", "json", "--out", "-"])
        .await;
    let (stdout, stderr) = text(&report);
    assert_eq!(code(&report), 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["totals"][0]["tokens"]["output"], 300, "{report}");
}

#[tokio::test]
async fn a_stream_of_many_blocks_rebuilds_each_delta_into_its_block() {
    // Thousands of blocks, then deltas for an early one and for an index started twice: each
    // delta lands in the block its index names (the latest started with it).
    const BLOCKS: usize = 20_000;
    let mut stream = String::new();
    let mut event = |data: Value| {
        stream.push_str(&format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        ));
    };
    event(
        json!({"type": "message_start", "message": {"id": "msg_m", "type": "message",
        "role": "assistant", "model": "claude-haiku-4-5", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
    );
    for index in 0..BLOCKS {
        event(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}));
    }
    for _ in 0..BLOCKS {
        event(json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "text_delta", "text": "a"}}));
    }
    event(json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}}));
    event(json!({"type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": "again"}}));
    event(
        json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
        "usage": {"output_tokens": 16}}),
    );
    event(json!({"type": "message_stop"}));
    let stream = Bytes::from(stream);
    let gateway =
        Hostile::start(move |_, _| typed("text/event-stream", Full::new(stream.clone()).boxed()))
            .await;
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 16, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let answer = client(&gateway, &[])
        .send(Bytes::from(body.to_string()), true)
        .await
        .result
        .unwrap();
    let message: Value = serde_json::from_slice(&answer.body).unwrap();
    let content = message["content"].as_array().unwrap();
    assert_eq!(content.len(), BLOCKS + 1);
    assert_eq!(content[0]["text"], "");
    assert_eq!(content[1]["text"], "a".repeat(BLOCKS));
    assert_eq!(content[BLOCKS]["text"], "again");
    assert!(content[2..BLOCKS].iter().all(|block| block["text"] == ""));
}

/// Answer text that quotes the key, a credential header and a header that is no secret.
fn echoing(key: &str, token: &str) -> String {
    format!("debug: key={key} token={token} team=research-team-7")
}

/// What [`echoing`] is stored as: the secrets replaced, the other header's value kept.
const ECHOED_STORED: &str = "debug: key=**** token=**** team=research-team-7";

#[tokio::test]
async fn a_key_echoed_in_an_answer_or_its_request_id_is_stored_nowhere() {
    let gateway = Hostile::start(|seen, before| {
        let header = |name: &str| seen.headers[name].to_str().unwrap().to_owned();
        let (key, token) = (header("x-api-key"), header("x-gateway-token"));
        let mut answer = message(
            &echoing(&key, &token),
            &json!({"input_tokens": 5, "output_tokens": 3}),
        );
        // As an object key too, as a proxy's dump of the request headers has it.
        answer["debug"] = json!({ key.clone(): token });
        let request_id = if before == 0 {
            format!("req_{key}")
        } else {
            // An id as long as the HTTP client lets a header be.
            "r".repeat(300_000)
        };
        respond(
            200,
            &[
                ("content-type", "application/json"),
                ("request-id", &request_id),
            ],
            answer.to_string(),
        )
    })
    .await;
    let header = format!("x-gateway-token: {HEADER_SECRET}");
    let args = [
        "--header",
        &header,
        "--header",
        "x-team: research-team-7",
        "--concurrency",
        "1",
    ];
    let (ws, output) = run_jobs(&gateway, 2, &args).await;
    exited(&output, 0);
    let pool = ws.pool().await;
    let stored = answers(&pool).await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored.iter().all(|(_, text)| text == ECHOED_STORED),
        "{stored:?}"
    );
    let ids: Vec<Option<String>> =
        sqlx::query_scalar("SELECT request_id FROM attempts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ids[0].as_deref(), Some("req_****"));
    let long = ids[1].as_deref().unwrap();
    assert!(
        long.starts_with("rrrr") && long.len() <= 210,
        "{} bytes",
        long.len()
    );
    let export = ws.run(&["export", "1", "--out", "-"]).await;
    for output in [&output, &export] {
        let (stdout, stderr) = text(output);
        assert!(!stdout.contains(TEST_KEY) && !stderr.contains(TEST_KEY));
        assert!(!stdout.contains(HEADER_SECRET) && !stderr.contains(HEADER_SECRET));
    }
    assert!(!in_database(&ws, TEST_KEY).await);
    assert!(!in_database(&ws, HEADER_SECRET).await);
}

#[tokio::test]
async fn a_key_echoed_in_a_batch_result_is_stored_nowhere() {
    let results: String = (0..2)
        .map(|i| {
            json!({"custom_id": format!("job-{i}"), "result": {"type": "succeeded",
                "message": message(&echoing(TEST_KEY, HEADER_SECRET),
                    &json!({"input_tokens": 5, "output_tokens": 3}))}})
            .to_string()
                + "\n"
        })
        .collect();
    let gateway = ended_batch("msgbatch_k", (2, 0), results).await;
    let header = format!("x-gateway-token: {HEADER_SECRET}");
    let args = [
        "--via",
        "batches",
        "--poll-interval",
        "10ms",
        "--header",
        &header,
        "--header",
        "x-team: research-team-7",
    ];
    let (ws, output) = run_jobs(&gateway, 2, &args).await;
    exited(&output, 0);
    let stored = answers(&ws.pool().await).await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored.iter().all(|(_, text)| text == ECHOED_STORED),
        "{stored:?}"
    );
    assert!(!in_database(&ws, TEST_KEY).await);
    assert!(!in_database(&ws, HEADER_SECRET).await);
}

#[tokio::test]
async fn an_answer_nested_too_deep_to_read_back_is_refused_not_stored_ungradable() {
    let gateway = Hostile::start(|_, _| {
        let answer = message("hi", &json!({"input_tokens": 5, "output_tokens": 1})).to_string();
        // A field no one reads, nested 100,000 deep: serde skips it without counting.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = answer.replacen('{', &format!("{{\"extra\":{deep},"), 1);
        respond(200, &[("content-type", "application/json")], body)
    })
    .await;
    let (ws, output) = run_jobs(&gateway, 1, &["--max-attempts", "1"]).await;
    exited(&output, 1);
    let attempts = attempts(&ws).await;
    assert_eq!(attempts[0].0.as_deref(), Some("invalid_response"));
    assert!(
        attempts[0]
            .1
            .as_deref()
            .unwrap()
            .contains("nests deeper than 127 levels"),
        "{attempts:?}"
    );
    assert_eq!(
        count(&ws.pool().await, "SELECT COUNT(*) FROM responses").await,
        0
    );
}

#[tokio::test]
async fn a_results_line_that_is_no_result_fails_its_own_job_and_the_lines_after_it_are_recorded() {
    let ok = |i: u32| {
        json!({"custom_id": format!("job-{i}"), "result": {"type": "succeeded",
            "message": message("fine", &json!({"input_tokens": 5, "output_tokens": 3}))}})
        .to_string()
    };
    // job-1's message nests past what JSON is read to, and a line of junk names no request.
    let deep = format!("{}{}", "[".repeat(1_000), "]".repeat(1_000));
    let results = [
        ok(0),
        format!(
            "{{\"custom_id\":\"job-1\",\"result\":{{\"type\":\"succeeded\",\"message\":{deep}}}}}"
        ),
        "this is not a result".to_owned(),
        ok(2),
    ]
    .join("\n");
    let gateway = ended_batch("msgbatch_u", (3, 0), results).await;
    let args = ["--via", "batches", "--poll-interval", "10ms"];
    let (ws, output) = run_jobs(&gateway, 3, &args).await;
    let stderr = exited(&output, 1);
    assert!(
        stderr.contains("1 lines of batch msgbatch_u's results are not results"),
        "{stderr}"
    );
    let pool = ws.pool().await;
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT job_id, state FROM jobs ORDER BY job_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let states: Vec<(&str, &str)> = states
        .iter()
        .map(|(j, s)| (j.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("job-0", "succeeded"),
            ("job-1", "failed"),
            ("job-2", "succeeded")
        ]
    );
    let attempts = attempts(&ws).await;
    let refused: Vec<_> = attempts
        .iter()
        .filter(|(kind, ..)| kind.as_deref() == Some("invalid_response"))
        .collect();
    assert_eq!(refused.len(), 1, "{attempts:?}");
    assert!(
        refused[0].1.as_deref().unwrap().contains("is not a result"),
        "{attempts:?}"
    );
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM responses").await, 2);
}

/// `text` with every character written as a JSON `\uXXXX` escape.
fn all_escaped(text: &str) -> String {
    text.encode_utf16().map(|u| format!("\\u{u:04X}")).collect()
}

/// `text` with its first `a` written as `\u0061`.
fn one_escaped(text: &str) -> String {
    text.replacen('a', "\\u0061", 1)
}

/// What must be found nowhere once a gateway has echoed [`TEST_KEY`] and [`HEADER_SECRET`]
/// behind escapes: each written plainly, escaped, or cut (the tail of the key is enough to
/// say that most of it was kept).
fn escaped_secrets() -> Vec<String> {
    vec![
        TEST_KEY.to_owned(),
        HEADER_SECRET.to_owned(),
        all_escaped(TEST_KEY),
        all_escaped(HEADER_SECRET),
        "0123456789-SECRET".to_owned(),
        "gateway-token-77e1f".to_owned(),
    ]
}

/// None of [`escaped_secrets`] in what `outputs` printed, nor in the database's files.
async fn assert_no_secret_shown_or_stored(ws: &Workspace, outputs: &[&std::process::Output]) {
    for needle in escaped_secrets() {
        for output in outputs {
            let (stdout, stderr) = text(output);
            assert!(
                !stdout.contains(&needle) && !stderr.contains(&needle),
                "{needle} in {stdout}{stderr}"
            );
        }
        assert!(!in_database(ws, &needle).await, "{needle} is stored");
    }
}

/// A Message whose text is [`echoing`] with both secrets escaped as `escape` writes them,
/// as a JSON document that a JSON reader turns back into the plain secrets.
fn echoing_escaped(escape: fn(&str) -> String) -> String {
    message(
        &echoing("KEY-HERE", "TOKEN-HERE"),
        &json!({"input_tokens": 5, "output_tokens": 3}),
    )
    .to_string()
    .replace("KEY-HERE", &escape(TEST_KEY))
    .replace("TOKEN-HERE", &escape(HEADER_SECRET))
}

#[tokio::test]
async fn a_key_echoed_behind_json_escapes_is_stored_and_printed_nowhere() {
    let gateway = Hostile::start(|_, before| {
        let json = [("content-type", "application/json")];
        match before {
            // A proxy's page whose kept start ends inside the key.
            0 => {
                let page = format!(
                    "<html>{}{TEST_KEY} {HEADER_SECRET}</html>",
                    "x".repeat(16 * 1024 - 6 - 25)
                );
                respond(503, &[("content-type", "text/html")], page)
            }
            // An API error quoting the secrets escaped, in its message and its body.
            1 => {
                let body = format!(
                    r#"{{"type":"error","error":{{"type":"api_error","message":"bad key {} for {}"}},"echo":"{}"}}"#,
                    one_escaped(TEST_KEY),
                    all_escaped(HEADER_SECRET),
                    all_escaped(TEST_KEY)
                );
                respond(500, &json, body)
            }
            2 => {
                let id = format!("req_{}", one_escaped(TEST_KEY));
                respond(
                    200,
                    &[("content-type", "application/json"), ("request-id", &id)],
                    echoing_escaped(one_escaped),
                )
            }
            _ => respond(200, &json, echoing_escaped(all_escaped)),
        }
    })
    .await;
    let header = format!("x-gateway-token: {HEADER_SECRET}");
    let args = ["--header", &header, "--concurrency", "1"];
    let (ws, output) = run_jobs(&gateway, 2, &args).await;
    exited(&output, 0);
    let pool = ws.pool().await;
    let stored = answers(&pool).await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|(_, text)| text == "debug: key=**** token=**** team=research-team-7"),
        "{stored:?}"
    );
    let attempts = attempts(&ws).await;
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    let ids: Vec<Option<String>> =
        sqlx::query_scalar("SELECT request_id FROM attempts ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ids[2].as_deref(), Some("req_****"));
    let export = ws.run(&["export", "1", "--out", "-"]).await;
    let report = ws.run(&["report", "1"]).await;
    assert_no_secret_shown_or_stored(&ws, &[&output, &export, &report]).await;
}

#[tokio::test]
async fn a_key_echoed_behind_json_escapes_in_a_batch_result_is_stored_nowhere() {
    let results: String = [one_escaped, all_escaped]
        .iter()
        .enumerate()
        .map(|(i, escape)| {
            let message = echoing_escaped(*escape);
            format!(
                r#"{{"custom_id":"job-{i}","result":{{"type":"succeeded","message":{message}}}}}"#
            ) + "\n"
        })
        .collect();
    let gateway = ended_batch("msgbatch_e", (2, 0), results).await;
    let header = format!("x-gateway-token: {HEADER_SECRET}");
    let args = [
        "--via",
        "batches",
        "--poll-interval",
        "10ms",
        "--header",
        &header,
    ];
    let (ws, output) = run_jobs(&gateway, 2, &args).await;
    exited(&output, 0);
    let stored = answers(&ws.pool().await).await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|(_, text)| text == "debug: key=**** token=**** team=research-team-7"),
        "{stored:?}"
    );
    assert_no_secret_shown_or_stored(&ws, &[]).await;
}

#[tokio::test]
async fn a_redirect_quoting_a_token_percent_escaped_shows_none_of_it() {
    const TOKEN: &str = "tok/en+Secret=77f1";
    // A login page's location quoting the request's URL, as gateways that want a session do.
    let location = "https://login.example/?next=https%3A%2F%2Fgw%2Fv1%2Fmessages%3Ftoken%3Dtok%2Fen%2BSecret%3D77f1";
    let gateway = Hostile::start(move |_, _| respond(302, &[("location", location)], "")).await;
    let header = format!("x-gateway-token: {TOKEN}");
    let (ws, output) = run_jobs(&gateway, 1, &["--header", &header]).await;
    let stderr = exited(&output, 1);
    let attempts = attempts(&ws).await;
    let message = attempts[0].1.clone().unwrap_or_default();
    assert!(
        message.contains("login.example/?next=https%3A%2F%2Fgw%2Fv1%2Fmessages%3Ftoken%3D****;"),
        "{message}"
    );
    let status = ws.run(&["status"]).await;
    for shown in [&stderr, &text(&status).0] {
        assert!(
            !shown.contains("tok%2Fen") && !shown.contains("Secret%3D77f1"),
            "{shown}"
        );
    }
    for needle in ["tok%2Fen", "Secret%3D77f1", TOKEN] {
        assert!(!in_database(&ws, needle).await, "{needle} is stored");
    }
}

#[tokio::test]
async fn a_key_echoed_in_a_batch_id_or_its_results_url_is_stored_and_printed_nowhere() {
    let results = json!({"custom_id": "job-0", "result": {"type": "succeeded",
        "message": message("fine", &json!({"input_tokens": 5, "output_tokens": 3}))}})
    .to_string();
    let id: &'static str = format!("msgbatch_{}", one_escaped(TEST_KEY)).leak();
    let gateway = Hostile::start(move |seen, _| {
        // A results_url on a host named after the key, as a proxy that logs it might give.
        let url = format!("http://{TEST_KEY}.example/v1/messages/batches/x/results");
        if seen.target.contains("/results") {
            respond(200, &[], results.clone())
        } else if seen.target.starts_with("/v1/messages/batches?") {
            json_response(&json!({"data": [], "has_more": false}))
        } else {
            let batch = json!({"id": "ID-HERE", "type": "message_batch",
                "processing_status": "ended",
                "request_counts": {"processing": 0, "succeeded": 1,
                    "errored": 0, "canceled": 0, "expired": 0},
                "created_at": "2030-01-01T00:00:00Z", "results_url": url});
            let body = batch.to_string().replace("ID-HERE", id);
            respond(200, &[("content-type", "application/json")], body)
        }
    })
    .await;
    let args = ["--via", "batches", "--poll-interval", "10ms"];
    let (ws, output) = run_jobs(&gateway, 1, &args).await;
    let stderr = exited(&output, 0);
    assert!(stderr.contains("results_url on another origin"), "{stderr}");
    assert_eq!(answers(&ws.pool().await).await.len(), 1);
    let status = ws.run(&["status"]).await;
    let report = ws.run(&["report", "1"]).await;
    assert_no_secret_shown_or_stored(&ws, &[&output, &status, &report]).await;
    // The key is in no request the gateway was sent either, but in its own header.
    for seen in gateway.log() {
        assert!(!seen.target.contains("0123456789-SECRET"), "{seen:?}");
    }
}

#[tokio::test]
async fn a_gateway_on_this_machine_is_reached_directly_not_through_the_environments_proxy() {
    let proxy = Hostile::start(|_, _| respond(502, &[], "proxied")).await;
    let gateway = Hostile::start(|_, _| {
        json_response(&message(
            "direct",
            &json!({"input_tokens": 5, "output_tokens": 3}),
        ))
    })
    .await;
    let ws = Workspace::new();
    let file = ws.jobs("jobs.jsonl", 1);
    let url = gateway.url();
    let args = [
        "run",
        file.to_str().unwrap(),
        "--base-url",
        &url,
        "--api-key-env",
        KEY_ENV,
        "--max-attempts",
        "1",
    ];
    let output = ws
        .command(&args)
        .env("HTTP_PROXY", proxy.url())
        .env("http_proxy", proxy.url())
        .env("ALL_PROXY", proxy.url())
        .output()
        .await
        .unwrap();
    exited(&output, 0);
    assert!(proxy.log().is_empty(), "{:?}", proxy.log());
    assert_eq!(gateway.log().len(), 1);
}
