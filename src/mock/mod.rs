//! The mock gateway: the Messages API served on loopback for demos and tests.
//!
//! It takes the key as `x-api-key` or `Authorization: Bearer` and any `anthropic-version`,
//! validates requests like the API (errors in the API's shape), answers deterministically
//! with realistic cache-aware usage, streams when asked, and injects faults on demand: 429
//! with `retry-after`, 500, 529, dropped connections, cut streams and mid-stream errors.

mod answer;
pub mod batches;
pub mod limits;

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, std::io::Error>;

/// A fault the mock injects instead of answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An error status with the API's error body for it (500, 503, 529, 400, …).
    Status(u16),
    /// 429 `rate_limit_error` with `retry-after` (whole seconds, rounded up) and
    /// `retry-after-ms`.
    RateLimited(Duration),
    /// 429 for a reached workspace spend limit, with no `retry-after`.
    SpendLimit,
    /// Close the connection without answering.
    Drop,
    /// A 200 whose body is not a Message.
    Garbage,
    /// Stream part of the answer, then close the connection.
    CutStream,
    /// Stream part of the answer, then an `overloaded_error` event.
    StreamError,
    /// A 200 whose JSON body stops halfway (a non-streamed answer cut by a proxy).
    Truncated,
}

/// Every request answered with one error status and type, as a gateway does that refuses
/// every request (LiteLLM answers a key it cannot check with `400 no_db_connection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// The error body's `error.type`; the API's type for the status when `None`.
    pub error_type: Option<String>,
}

/// Why a `STATUS[:TYPE]` rejection does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "expected STATUS[:TYPE] with a 4xx or 5xx status and a type of letters, digits and `_`, not `{0}`"
)]
pub struct RejectionError(String);

impl std::str::FromStr for Rejection {
    type Err = RejectionError;

    /// `400` or `400:no_db_connection`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || RejectionError(text.chars().take(64).collect());
        let (status, error_type) = match text.split_once(':') {
            Some((status, kind)) => (status, Some(kind)),
            None => (text, None),
        };
        let status: u16 = status.trim().parse().map_err(|_| bad())?;
        let valid_type = |kind: &str| {
            (1..=64).contains(&kind.len())
                && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if !(400..600).contains(&status) || error_type.is_some_and(|k| !valid_type(k)) {
            return Err(bad());
        }
        Ok(Self {
            status,
            error_type: error_type.map(str::to_owned),
        })
    }
}

/// The mock's options as a user gives them: to `msgbatch mock` as flags (these), to `run
/// --mock` as the same flags prefixed `--mock-` (see `cli::MockArgs`), and kept in a run's
/// settings so that `resume` starts the same mock. [`MockOptions::config`] checks them and is
/// the one way from them to a [`MockConfig`].
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MockOptions {
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Share of requests (0 to 1) that fail: 500, 502, 503 or 529, a dropped connection, or
    /// an answer cut halfway, in equal parts.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,

    /// `retry-after` (whole seconds) on the error statuses of --fail-rate.
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_retry_after: Option<u64>,

    /// How long a Message Batch processes before it ends, in milliseconds.
    #[arg(long, default_value_t = 0)]
    #[serde(skip_serializing_if = "is_zero")]
    pub batch_ms: u64,

    /// Requests of each Message Batch answered at once (its first N): a batch canceled
    /// before it ends has these answered and the rest canceled.
    #[arg(long, default_value_t = 0)]
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub batch_processed_first: usize,

    /// Answer every request with this error status and type, e.g. `400:no_db_connection`
    /// (as a gateway refusing a key does).
    #[arg(long, value_name = "STATUS[:TYPE]", value_parser = parse_rejection)]
    pub reject: Option<String>,

    /// Requests per minute, enforced as the API does (a bucket refilled continuously; 429
    /// with `retry-after` when it is empty; `anthropic-ratelimit-*` headers on every answer).
    #[arg(long = "rate-limit-rpm")]
    pub rate_limit_rpm: Option<u32>,

    /// Input tokens per minute (uncached input and cache writes), enforced likewise.
    #[arg(long = "rate-limit-itpm")]
    pub rate_limit_itpm: Option<u32>,

    /// Output tokens per minute (as produced), enforced likewise.
    #[arg(long = "rate-limit-otpm")]
    pub rate_limit_otpm: Option<u32>,

    /// Delay before the first token of a streamed answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub first_token_ms: u64,

    /// Delay between the chunks of a streamed answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub token_ms: u64,

    /// Per model, the probability that an answer passes a grader looking for the prompt's
    /// text (the answer repeats the prompt; otherwise it does not), e.g.
    /// `claude-haiku-4-5=0.7,claude-sonnet-4-6=0.8`. Each request draws on its own.
    #[arg(long, value_name = "MODEL=P,…", value_delimiter = ',', value_parser = parse_pass)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pass: Vec<(String, f64)>,
}

/// `MODEL=P`, P a probability.
pub fn parse_pass(text: &str) -> Result<(String, f64), String> {
    let Some((model, p)) = text.split_once('=') else {
        return Err(format!(
            "`{text}` is not MODEL=P, e.g. claude-haiku-4-5=0.7"
        ));
    };
    match p.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) && !model.trim().is_empty() => {
            Ok((model.trim().to_owned(), p))
        }
        _ => Err(format!(
            "`{text}`: give a model and a probability from 0 to 1, e.g. claude-haiku-4-5=0.7"
        )),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if"
)]
fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// A `STATUS[:TYPE]` the mock can answer with, kept as given.
pub fn parse_rejection(text: &str) -> Result<String, String> {
    text.parse::<Rejection>()
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

/// A mock option out of its range, named by its flag.
#[derive(Debug, thiserror::Error)]
pub enum MockOptionError {
    #[error("{flag} must be {range}")]
    OutOfRange { flag: String, range: &'static str },
    #[error("{flag}: {source}")]
    Rejection {
        flag: String,
        #[source]
        source: RejectionError,
    },
}

impl MockOptions {
    /// The mock these options describe, once checked. `flags` is how the options were given:
    /// `--` for `msgbatch mock`'s own flags, `--mock-` for `run --mock`'s (and for a run's
    /// stored options); an option out of range is named by its flag.
    pub fn config(&self, flags: &str) -> Result<MockConfig, MockOptionError> {
        let flag = |name: &str| format!("{flags}{name}");
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(MockOptionError::OutOfRange {
                flag: flag("fail-rate"),
                range: "between 0 and 1",
            });
        }
        for (name, limit) in [
            ("rate-limit-rpm", self.rate_limit_rpm),
            ("rate-limit-itpm", self.rate_limit_itpm),
            ("rate-limit-otpm", self.rate_limit_otpm),
        ] {
            if limit == Some(0) {
                return Err(MockOptionError::OutOfRange {
                    flag: flag(name),
                    range: "at least 1",
                });
            }
        }
        let reject = self
            .reject
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|source| MockOptionError::Rejection {
                flag: flag("reject"),
                source,
            })?;
        Ok(MockConfig {
            latency: Duration::from_millis(self.latency_ms),
            fail_rate: self.fail_rate,
            fault_retry_after: self.fault_retry_after.map(Duration::from_secs),
            batches: batches::BatchConfig {
                processing: Duration::from_millis(self.batch_ms),
                processed_first: self.batch_processed_first,
                ..batches::BatchConfig::default()
            },
            limits: limits::Limits {
                rpm: self.rate_limit_rpm,
                itpm: self.rate_limit_itpm,
                otpm: self.rate_limit_otpm,
            },
            first_token_delay: Duration::from_millis(self.first_token_ms),
            token_delay: Duration::from_millis(self.token_ms),
            reject,
            pass: self.pass.clone(),
            ..MockConfig::default()
        })
    }
}

/// How the mock behaves.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// Delay before each answer (or before the first event of a stream).
    pub latency: Duration,
    /// Delay between the stream's first content delta and the events before it.
    pub first_token_delay: Duration,
    /// Delay between stream chunks after the first.
    pub token_delay: Duration,
    /// Share of requests that fail: 500, 502, 503 or 529, a dropped connection, or an
    /// answer cut halfway, in equal parts.
    pub fail_rate: f64,
    /// `retry-after` sent with the error statuses of `fail_rate`'s faults.
    pub fault_retry_after: Option<Duration>,
    /// Rate limits enforced as token buckets, as the API enforces them ([`limits`]), with
    /// one set of buckets for every model, as a gateway that limits the key keeps them.
    pub limits: limits::Limits,
    /// Accept only this key.
    pub require_key: Option<String>,
    pub seed: u64,
    /// Faults for the first requests (from `script_from` on), in order, before any random
    /// ones.
    pub script: Vec<Fault>,
    /// How many requests to answer normally before the script starts.
    pub script_from: u64,
    /// Keep a log of every request (for tests).
    pub record: bool,
    /// Answer 404 on `count_tokens`, like gateways that do not offer it.
    pub no_count_tokens: bool,
    /// How the Message Batches endpoints behave.
    pub batches: batches::BatchConfig,
    /// Answer every request with this error, whatever it asks.
    pub reject: Option<Rejection>,
    /// Per model (as requests name it), the probability that an answer repeats its prompt,
    /// and so passes a grader that looks for the prompt's expected text; the rest miss. Each
    /// request draws on its own, so repeated samples of one job differ.
    pub pass: Vec<(String, f64)>,
    /// Models served besides those of the built-in price table (any of their ids, dated or
    /// alias); any other model is answered 404 `not_found_error`, as the API answers it.
    pub models: Vec<String>,
}

/// The models the mock serves.
#[derive(Debug)]
struct Models {
    table: crate::pricing::PriceTable,
    extra: HashSet<String>,
}

impl Models {
    fn new(extra: &[String]) -> Self {
        Self {
            table: crate::pricing::PriceTable::builtin(),
            extra: extra.iter().cloned().collect(),
        }
    }

    fn serves(&self, model: &str) -> bool {
        self.table.lookup(model).is_some() || self.extra.contains(model)
    }

    /// Why the API would refuse a request's body, as (error type, message): its fields, or a
    /// model it does not serve.
    fn refusal(&self, body: &serde_json::Map<String, Value>) -> Option<(&'static str, String)> {
        if let Err(e) = crate::request::validate(body) {
            return Some((
                "invalid_request_error",
                format!("{}: {}", e.field, e.reason),
            ));
        }
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        (!self.serves(model)).then(|| ("not_found_error", format!("model: {model}")))
    }
}

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub method: hyper::Method,
    pub path: String,
    pub status: u16,
    pub fault: Option<Fault>,
    pub stream: bool,
    pub body: Option<Value>,
    /// `x-api-key`, `bearer` or `none`.
    pub auth: &'static str,
    pub anthropic_version: Option<String>,
}

impl Logged {
    /// The text of the last user turn, which identifies the job in tests.
    pub fn prompt(&self) -> Option<String> {
        let content = self
            .body
            .as_ref()?
            .get("messages")?
            .as_array()?
            .last()?
            .get("content")?;
        match content {
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }
}

#[derive(Debug)]
struct State {
    config: MockConfig,
    /// Requests received; tests can wait on it.
    seen: tokio::sync::watch::Sender<u64>,
    script: Mutex<VecDeque<Fault>>,
    rng: Mutex<fastrand::Rng>,
    /// Prefixes readable from the prompt cache. A request's writes become readable only once
    /// its response has begun (its first content token), as on the API: requests that arrive
    /// before that miss and write the prefix again.
    cache: Arc<Mutex<HashSet<u64>>>,
    buckets: Mutex<limits::Buckets>,
    batches: Mutex<batches::Batches>,
    /// Batches created; tests can wait on it.
    batches_made: tokio::sync::watch::Sender<usize>,
    /// Batch endpoint calls answered, by kind ([`batches::Call::index`]).
    batch_calls: tokio::sync::watch::Sender<[usize; 5]>,
    /// Lines of a results file sent before the rest is held back
    /// ([`MockServer::hold_results`]), or `None` to send them whole.
    results_held: tokio::sync::watch::Sender<Option<usize>>,
    log: Mutex<Vec<Logged>>,
    models: Models,
}

/// A running mock gateway.
#[derive(Debug)]
pub struct MockServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
}

impl MockServer {
    /// Starts a mock on `127.0.0.1` at a free port, served by the current runtime.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self::spawn(listener, config))
    }

    /// Serves on `listener` in a background task until [`MockServer::stop`] or drop.
    pub fn spawn(listener: TcpListener, config: MockConfig) -> Self {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let state = Arc::new(State::new(config));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, Arc::clone(&state), shutdown.clone()));
        Self {
            addr,
            state,
            shutdown,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        *self.state.seen.borrow()
    }

    /// Waits until the mock has received at least `n` requests.
    pub async fn wait_for_requests(&self, n: u64) {
        let mut seen = self.state.seen.subscribe();
        // The sender lives in the state this server holds, so it cannot close first.
        let _ = seen.wait_for(|count| *count >= n).await;
    }

    /// Waits until the mock has created at least `n` batches.
    pub async fn wait_for_batches(&self, n: usize) {
        let mut made = self.state.batches_made.subscribe();
        let _ = made.wait_for(|count| *count >= n).await;
    }

    /// Waits until the mock has received at least `n` batch endpoint calls of kind `call`,
    /// counted as each arrives, before it is answered.
    pub async fn wait_for_batch_calls(&self, call: batches::Call, n: usize) {
        let mut calls = self.state.batch_calls.subscribe();
        let _ = calls.wait_for(|count| count[call.index()] >= n).await;
    }

    /// Batch endpoint calls of kind `call` received so far.
    pub fn batch_calls(&self, call: batches::Call) -> usize {
        self.state.batch_calls.borrow()[call.index()]
    }

    /// Batches created so far.
    pub fn batches_created(&self) -> usize {
        *self.state.batches_made.borrow()
    }

    /// Ends every batch's processing now.
    pub fn finish_batches(&self) {
        self.state
            .batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finished = true;
    }

    /// From now on, sends the first `lines` lines of a longer results file and holds the rest
    /// back until [`MockServer::release_results`]: a window in which a client may die with
    /// part of a batch's results recorded.
    pub fn hold_results(&self, lines: usize) {
        self.state.results_held.send_replace(Some(lines));
    }

    /// Sends the rest of every results file held back, and every one whole from now on.
    pub fn release_results(&self) {
        self.state.results_held.send_replace(None);
    }

    /// The request log (empty unless `record` was set).
    pub fn log(&self) -> Vec<Logged> {
        self.state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Accepts connections until `shutdown`.
pub async fn serve_until(listener: TcpListener, config: MockConfig, shutdown: CancellationToken) {
    serve(listener, Arc::new(State::new(config)), shutdown).await;
}

async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&state), request));
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                // A connection error here is the client's or an injected drop: nothing to do.
                _ = connection => {}
            }
        });
    }
}

/// Returned by the handler to close the connection without a response.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the mock")
    }
}

impl std::error::Error for Dropped {}

impl State {
    fn new(config: MockConfig) -> Self {
        let models = Models::new(&config.models);
        Self {
            script: Mutex::new(config.script.iter().copied().collect()),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            buckets: Mutex::new(limits::Buckets::new(
                config.limits,
                tokio::time::Instant::now(),
            )),
            config,
            seen: tokio::sync::watch::Sender::new(0),
            cache: Arc::default(),
            batches: Mutex::default(),
            batches_made: tokio::sync::watch::Sender::new(0),
            batch_calls: tokio::sync::watch::Sender::new([0; 5]),
            results_held: tokio::sync::watch::Sender::new(None),
            log: Mutex::new(Vec::new()),
            models,
        }
    }

    /// Takes a request's input from the rate-limit buckets, or says how long until it would
    /// fit, with the headers to refuse it with.
    fn admit(&self, usage: &crate::tokens::PromptUsage) -> Result<(), (Duration, limits::Headers)> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.any() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        // Cache reads are free against ITPM on current models.
        let input = usage.input_tokens + usage.cache_write_5m + usage.cache_write_1h;
        buckets
            .admit(input, now)
            .map_err(|wait| (wait, buckets.headers(now)))
    }

    /// Counts an answer's output against OTPM; the headers to answer with.
    fn produced(&self, output_tokens: u64) -> limits::Headers {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.any() {
            return Vec::new();
        }
        let now = tokio::time::Instant::now();
        buckets.produced(output_tokens, now);
        buckets.headers(now)
    }

    fn record(&self, entry: Logged) {
        if self.config.record {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry);
        }
    }

    /// The fault for this request, if any: the script first, then the rate limit, then chance.
    fn fault(&self) -> Option<Fault> {
        let arrived = *self.seen.borrow();
        if arrived > self.config.script_from
            && let Some(fault) = self
                .script
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
        {
            return Some(fault);
        }
        if self.config.fail_rate > 0.0 {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            if rng.f64() < self.config.fail_rate {
                return Some(match rng.u8(0..6) {
                    0 => Fault::Status(500),
                    1 => Fault::Status(502),
                    2 => Fault::Status(503),
                    3 => Fault::Status(529),
                    4 => Fault::Drop,
                    _ => Fault::Truncated,
                });
            }
        }
        None
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        "request-id",
        hyper::header::HeaderValue::from_static("req_mock"),
    );
    response
}

/// An error in the API's shape.
/// The API's body limit for Messages and token counts: 32 MB.
const MESSAGES_BODY_BYTES: usize = 32 * 1024 * 1024;
/// The API's body limit for a batch create: 256 MB.
const BATCH_BODY_BYTES: usize = 256 * 1024 * 1024;

/// A request's body, read frame by frame and kept up to `limit` bytes. Past it, `oversized`
/// decides: the connection is dropped there, or the rest is read and forgotten and the body
/// is `None`, to be answered 413 as the API does. The mock is a gateway others can send to
/// (`msgbatch mock`): no body grows its memory past the limit.
async fn read_bounded(
    mut body: hyper::body::Incoming,
    limit: usize,
    oversized: batches::Oversized,
) -> Result<Option<Bytes>, Dropped> {
    let mut bytes = Vec::new();
    let mut over = false;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| Dropped)?.into_data() else {
            continue;
        };
        over = over || bytes.len() + data.len() > limit;
        if over {
            if oversized == batches::Oversized::Close {
                return Err(Dropped);
            }
            bytes = Vec::new();
        } else {
            bytes.extend_from_slice(&data);
        }
    }
    Ok((!over).then(|| Bytes::from(bytes)))
}

fn error_response(status: u16, kind: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}),
    )
}

fn status_error(status: u16) -> Response<Body> {
    let (kind, message) = match status {
        400 => ("invalid_request_error", "Invalid request"),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => ("not_found_error", "Not found"),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        ),
        503 | 502 => ("api_error", "Service unavailable"),
        504 => ("timeout_error", "Request timed out"),
        529 => ("overloaded_error", "Overloaded"),
        _ => ("api_error", "Internal server error"),
    };
    error_response(status, kind, message)
}

async fn handle(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Dropped> {
    state.seen.send_modify(|n| *n += 1);
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let api_key = header("x-api-key");
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));
    let mut entry = Logged {
        at: Instant::now(),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        status: 200,
        fault: None,
        stream: false,
        body: None,
        auth: match (&api_key, &bearer) {
            (Some(_), _) => "x-api-key",
            (None, Some(_)) => "bearer",
            (None, None) => "none",
        },
        anthropic_version: header("anthropic-version"),
    };
    let key = api_key.or(bearer);
    let answered = respond(&state, request, key, &mut entry).await;
    // Every request the mock answers is logged once, with the status it got (0: dropped).
    entry.status = answered.as_ref().map_or(0, |r| r.status().as_u16());
    state.record(entry);
    answered
}

/// The answer to one request; `entry` learns what the mock made of it.
async fn respond(
    state: &State,
    request: Request<hyper::body::Incoming>,
    key: Option<String>,
    entry: &mut Logged,
) -> Result<Response<Body>, Dropped> {
    let path = &entry.path;
    let batch_route = batches::route(request.method(), path);
    let count_tokens = path.ends_with("/messages/count_tokens") && !state.config.no_count_tokens;
    if batch_route.is_none()
        && (request.method() != hyper::Method::POST
            || !(path.ends_with("/messages") || count_tokens))
    {
        return Ok(error_response(
            404,
            "not_found_error",
            &format!("no route for {path}"),
        ));
    }
    if let Some(required) = &state.config.require_key
        && key.as_ref() != Some(required)
    {
        return Ok(error_response(
            401,
            "authentication_error",
            "invalid x-api-key",
        ));
    }
    if let Some(rejection) = &state.config.reject {
        let mut response = status_error(rejection.status);
        if let Some(kind) = &rejection.error_type {
            response = error_response(
                rejection.status,
                kind,
                "the mock gateway rejects every request",
            );
        }
        return Ok(response);
    }
    if let Some(route) = batch_route {
        return batches::respond(state, request, route, entry).await;
    }
    let Some(bytes) = read_bounded(
        request.into_body(),
        MESSAGES_BODY_BYTES,
        batches::Oversized::Answer,
    )
    .await?
    else {
        return Ok(error_response(
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ));
    };
    let body: Option<serde_json::Map<String, Value>> = serde_json::from_slice(&bytes).ok();
    entry.body = body.clone().map(Value::Object);
    entry.stream = body
        .as_ref()
        .and_then(|b| b.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if entry.anthropic_version.is_none() {
        return Ok(error_response(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    let Some(body) = body else {
        return Ok(error_response(
            400,
            "invalid_request_error",
            "request body is not a JSON object",
        ));
    };
    if count_tokens {
        let usage = crate::tokens::input_usage(&body, &mut HashSet::new());
        return Ok(json_response(
            200,
            &json!({"input_tokens": usage.total_input()}),
        ));
    }
    if let Some((kind, message)) = state.models.refusal(&body) {
        let status = if kind == "not_found_error" { 404 } else { 400 };
        return Ok(error_response(status, kind, &message));
    }
    // What the cache holds is what was readable when the request arrived.
    let (usage, written) = {
        let cache = state.cache.lock().unwrap_or_else(|e| e.into_inner());
        crate::tokens::input_usage_seen(&body, |hash| cache.contains(&hash))
    };
    if let Err((wait, headers)) = state.admit(&usage) {
        // An empty bucket answers at once, as the API does.
        entry.fault = Some(Fault::RateLimited(wait));
        let mut response = status_error(429);
        let seconds = wait.as_secs_f64().ceil().max(1.0).to_string();
        response.headers_mut().insert(
            "retry-after",
            seconds.parse().expect("digits are a valid header"),
        );
        add_headers(&mut response, headers);
        return Ok(response);
    }
    let fault = state.fault();
    entry.fault = fault;
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    if let Some(response) = fault_response(fault, state.config.fault_retry_after)? {
        return Ok(response);
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let seed = answer::request_seed(&body);
    let mut reply = answer::reply(&body, seed);
    if let Some(p) = answer::pass_probability(&state.config.pass, &model) {
        answer::maybe_miss(&mut reply, &body, p, fastrand::f64());
    }
    let limit_headers = state.produced(reply.output_tokens);
    if !entry.stream {
        make_readable(&state.cache, written);
        let mut response = json_response(200, &answer::message(&model, seed, &reply, &usage));
        if fault == Some(Fault::Truncated) {
            let whole = answer::message(&model, seed, &reply, &usage).to_string();
            *response.body_mut() = full(whole[..whole.len() / 2].to_owned());
        }
        add_headers(&mut response, limit_headers);
        return Ok(response);
    }
    let (events, first_delta) = answer::stream_events(&model, seed, &reply, &usage);
    let mut response = stream_response(
        state.config.clone(),
        (Arc::clone(&state.cache), written),
        fault,
        events,
        first_delta,
    );
    add_headers(&mut response, limit_headers);
    Ok(response)
}

/// The answer a fault gives at once, if it is one that does: an error status (with
/// `retry_after`, when set), a 429 with `retry-after`, the spend cap, a body that is not JSON,
/// or a dropped connection.
fn fault_response(
    fault: Option<Fault>,
    retry_after: Option<Duration>,
) -> Result<Option<Response<Body>>, Dropped> {
    Ok(match fault {
        Some(Fault::Drop) => return Err(Dropped),
        Some(Fault::Status(status)) => {
            let mut response = status_error(status);
            if let Some(wait) = retry_after {
                response.headers_mut().insert(
                    "retry-after",
                    wait.as_secs()
                        .to_string()
                        .parse()
                        .expect("digits are a valid header"),
                );
            }
            Some(response)
        }
        Some(Fault::RateLimited(wait)) => {
            let mut response = status_error(429);
            let headers = response.headers_mut();
            let seconds = wait.as_secs_f64().ceil().max(1.0).to_string();
            headers.insert(
                "retry-after",
                seconds.parse().expect("digits are a valid header"),
            );
            headers.insert(
                "retry-after-ms",
                wait.as_millis()
                    .to_string()
                    .parse()
                    .expect("digits are a valid header"),
            );
            Some(response)
        }
        Some(Fault::SpendLimit) => Some(json_response(
            429,
            &json!({"type": "error", "error": {"type": "rate_limit_error",
                "message": "You have reached your specified workspace API usage limits.",
                "details": {"error_code": crate::client::SPEND_LIMIT_CODE}}}),
        )),
        Some(Fault::Garbage) => {
            let mut response = Response::new(full("<html><body>upstream hiccup</body></html>"));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/html"),
            );
            Some(response)
        }
        _ => None,
    })
}

/// A streamed answer, paced as the mock is configured and cut or failed as `fault` says.
fn stream_response(
    config: MockConfig,
    (cache, written): (Arc<Mutex<HashSet<u64>>>, Vec<u64>),
    fault: Option<Fault>,
    events: Vec<String>,
    first_delta: usize,
) -> Response<Body> {
    if fault.is_none() && config.first_token_delay.is_zero() && config.token_delay.is_zero() {
        // Nothing to pace: write the whole stream at once, as a fast server would.
        make_readable(&cache, written);
        let mut response = Response::new(full(events.concat()));
        set_stream_headers(&mut response);
        return response;
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        let cut_at = first_delta + 1;
        let mut written = Some(written);
        for (i, event) in events.into_iter().enumerate() {
            if i == first_delta && !config.first_token_delay.is_zero() {
                tokio::time::sleep(config.first_token_delay).await;
            } else if i > first_delta && !config.token_delay.is_zero() {
                tokio::time::sleep(config.token_delay).await;
            }
            if i == first_delta
                && let Some(written) = written.take()
            {
                // The first content token: from now on the prefix can be read.
                make_readable(&cache, written);
            }
            if i == cut_at {
                match fault {
                    Some(Fault::CutStream | Fault::Truncated) => {
                        let _ = sender
                            .send(Err(std::io::Error::other("stream cut by the mock")))
                            .await;
                        return;
                    }
                    Some(Fault::StreamError) => {
                        let error = answer::event(
                            "error",
                            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                        );
                        let _ = sender.send(Ok(Frame::data(Bytes::from(error)))).await;
                        return;
                    }
                    _ => {}
                }
            }
            if sender
                .send(Ok(Frame::data(Bytes::from(event))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed());
    set_stream_headers(&mut response);
    response
}

fn add_headers(response: &mut Response<Body>, headers: limits::Headers) {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
}

fn make_readable(cache: &Mutex<HashSet<u64>>, written: Vec<u64>) {
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(written);
}

fn set_stream_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        "request-id",
        hyper::header::HeaderValue::from_static("req_mock"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_kept_by_older_runs_read_back_and_out_of_range_ones_name_their_flag() {
        let stored: MockOptions =
            serde_json::from_str(r#"{"latency_ms": 5, "fail_rate": 0.25, "rate_limit_rpm": null}"#)
                .unwrap();
        assert_eq!(
            stored,
            MockOptions {
                latency_ms: 5,
                fail_rate: 0.25,
                ..MockOptions::default()
            }
        );
        let config = stored.config("--mock-").unwrap();
        assert_eq!(config.latency, Duration::from_millis(5));

        let refused = |options: MockOptions| options.config("--").unwrap_err().to_string();
        for rate in [1.5, -0.1, f64::NAN] {
            let options = MockOptions {
                fail_rate: rate,
                ..MockOptions::default()
            };
            assert_eq!(refused(options), "--fail-rate must be between 0 and 1");
        }
        let options = MockOptions {
            rate_limit_otpm: Some(0),
            ..MockOptions::default()
        };
        assert_eq!(refused(options), "--rate-limit-otpm must be at least 1");
        let options = MockOptions {
            reject: Some("200".into()),
            ..MockOptions::default()
        };
        assert!(refused(options).starts_with("--reject: expected STATUS[:TYPE]"));
    }
}
