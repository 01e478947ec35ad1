//! The mock's Message Batches endpoints: create, retrieve, list, cancel and results, as the
//! API serves them. A batch processes for the configured time, then ends with every request
//! answered as the Messages endpoint would answer it (usage with `service_tier: "batch"`),
//! except the custom ids a test marks errored or expired; results come as JSONL in an order
//! of their own (last request first), so that clients must join on `custom_id`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::{Request, Response};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::limits::Headers;
use super::{
    Body, Dropped, Fault, Logged, State, add_headers, answer, error_response, fault_response, full,
    json_response,
};

/// How the mock's batches behave.
#[derive(Debug, Clone, Default)]
pub struct BatchConfig {
    /// From creation to the end of processing.
    pub processing: Duration,
    /// From creation to the end of processing for every batch after the first [default:
    /// `processing`]: a run's later batches (its judges', after its answers') still running
    /// once its first has ended.
    pub later_processing: Option<Duration>,
    /// Custom ids answered `errored` (an `api_error`, worth sending again) in the first
    /// batch that holds them.
    pub errored: Vec<String>,
    /// Custom ids answered `expired` in the first batch that holds them.
    pub expired: Vec<String>,
    /// How long the create call takes to answer once the batch is created (a window in
    /// which a client may die before it learns the batch's id).
    pub create_delay: Duration,
    /// [`BatchConfig::create_delay`] for every create after the first [default:
    /// `create_delay`]: a run's judges' batch, created once its answers' batch has ended.
    pub later_create_delay: Option<Duration>,
    /// Answer 404 on every batch endpoint, like gateways that do not offer them.
    pub unsupported: bool,
    /// The part of every id drawn per mock, given instead (18 characters of `[0-9A-Za-z]`):
    /// two mocks given the same one number their batches alike, as two gateways may.
    pub ids: Option<String>,
    /// Faults for the first calls of each kind, in order: each call takes the first fault of
    /// its kind not yet given, and is answered with it (its `retry-after` is the mock's
    /// `fault_retry_after`) instead of being served.
    pub faults: Vec<(Call, Fault)>,
    /// The largest create body accepted, in bytes, as a proxy in front of a gateway bounds
    /// them; a larger one is refused as `oversized` says, and no batch is created.
    pub max_body: Option<usize>,
    pub oversized: Oversized,
    /// Calls a minute to all the batch endpoints together, enforced as a token bucket as the
    /// Batches API enforces its own request limit: a call that finds it empty is answered
    /// 429 `rate_limit_error` with `retry-after`, and every answer carries the
    /// `anthropic-ratelimit-requests-*` headers.
    pub rpm: Option<u32>,
    /// What the bucket of `rpm` holds at the first call, as when another client of the key
    /// has just spent the rest [default: full].
    pub rpm_left: Option<u32>,
    /// Requests of each batch processed as soon as it is created (its first ones): a batch
    /// canceled before its end has these answered and the rest canceled.
    pub processed_first: usize,
    /// How long the first results call waits before it answers (a window in which a client
    /// may die after a cancel, before it records what the batch finished).
    pub first_results_delay: Duration,
}

/// The kind of a batch endpoint's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Create,
    List,
    Retrieve,
    Cancel,
    Results,
}

impl Call {
    /// Its place in the mock's count of calls.
    pub fn index(self) -> usize {
        match self {
            Self::Create => 0,
            Self::List => 1,
            Self::Retrieve => 2,
            Self::Cancel => 3,
            Self::Results => 4,
        }
    }
}

/// How a create body past [`BatchConfig::max_body`] is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Oversized {
    /// Read whole, then answered 413 `request_too_large`, as the API answers it.
    #[default]
    Answer,
    /// The connection closed, without an answer, once the body passes the bound (at once
    /// when its `content-length` says it will), as many proxies do: the client sees its
    /// write fail, not the 413.
    Close,
}

/// One batch the mock holds.
#[derive(Debug)]
pub struct MockBatch {
    pub id: String,
    created: Instant,
    created_wall: SystemTime,
    /// From its creation to the end of its processing.
    processing: Duration,
    canceled: Option<Instant>,
    requests: Vec<(String, Map<String, Value>)>,
    /// Why the API refuses each request, in the order of `requests`: `None` for a valid one.
    refused: Vec<Option<String>>,
    /// Custom ids that error or expire in this batch.
    errored: Vec<String>,
    expired: Vec<String>,
}

/// Every batch created, oldest first.
#[derive(Debug)]
pub struct Batches {
    held: Vec<MockBatch>,
    /// Part of every id this mock gives, different in each mock (and so in each process):
    /// a store keeps the batches of every mock run, and batch ids are unique per gateway.
    instance: String,
    /// Custom ids whose error or expiry a batch has already had.
    spent: std::collections::HashSet<String>,
    /// Every batch ends now, whatever its processing time.
    pub finished: bool,
    /// How many of [`BatchConfig::faults`] have been given.
    faults_given: std::collections::HashSet<usize>,
    /// The request bucket of [`BatchConfig::rpm`], made at the first call.
    limit: Option<super::limits::Buckets>,
    /// The first results call was answered (after [`BatchConfig::first_results_delay`]).
    results_given: bool,
}

/// What a call to a batch endpoint asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Create,
    List,
    Retrieve(String),
    Cancel(String),
    Results(String),
}

impl Route {
    pub fn call(&self) -> Call {
        match self {
            Self::Create => Call::Create,
            Self::List => Call::List,
            Self::Retrieve(_) => Call::Retrieve,
            Self::Cancel(_) => Call::Cancel,
            Self::Results(_) => Call::Results,
        }
    }
}

/// The batch route of a method and path, if the path is under `…/messages/batches`.
pub fn route(method: &hyper::Method, path: &str) -> Option<Route> {
    let (_, rest) = path.split_once("/messages/batches")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", []) => Some(Route::Create),
        ("GET", []) => Some(Route::List),
        ("GET", [id]) => Some(Route::Retrieve((*id).to_owned())),
        ("POST", [id, "cancel"]) => Some(Route::Cancel((*id).to_owned())),
        ("GET", [id, "results"]) => Some(Route::Results((*id).to_owned())),
        _ => None,
    }
}

/// Why a create call is refused: (status, error type, message).
pub type Refusal = (u16, &'static str, String);

impl Default for Batches {
    fn default() -> Self {
        // Only the ids vary between mocks; answers stay deterministic.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| {
                d.as_secs()
                    .wrapping_mul(1_000_000_000)
                    .wrapping_add(u64::from(d.subsec_nanos()))
            });
        let mut rng = fastrand::Rng::new();
        let mut instance = String::with_capacity(INSTANCE_CHARS);
        let mut mixed = nanos ^ u64::from(std::process::id()).rotate_left(32);
        for _ in 0..INSTANCE_CHARS {
            let digit = (mixed ^ rng.u64(..)) % 62;
            instance.push(char::from(BASE62[usize::try_from(digit).unwrap_or(0)]));
            mixed /= 62;
        }
        Self {
            held: Vec::new(),
            instance,
            spent: std::collections::HashSet::new(),
            finished: false,
            faults_given: std::collections::HashSet::new(),
            limit: None,
            results_given: false,
        }
    }
}

/// The characters of the API's ids.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// An id is `msgbatch_` and 24 characters, as the API's are: these, then a six-digit count.
const INSTANCE_CHARS: usize = 18;

impl Batches {
    /// Takes a call from the request bucket of `rpm`, with the headers to answer with; or
    /// how long until the bucket holds one.
    fn admit(&mut self, rpm: u32, left: Option<u32>) -> Result<Headers, (Duration, Headers)> {
        let now = Instant::now();
        let bucket = self.limit.get_or_insert_with(|| {
            let mut bucket = super::limits::Buckets::new(
                super::limits::Limits {
                    rpm: Some(rpm),
                    ..super::limits::Limits::default()
                },
                now,
            );
            if let Some(left) = left {
                bucket.requests_left(left);
            }
            bucket
        });
        match bucket.admit(0, now) {
            Ok(()) => Ok(bucket.headers(now)),
            Err(wait) => Err((wait, bucket.headers(now))),
        }
    }

    /// The fault scripted for the next call of kind `call`, if one is left.
    fn fault(&mut self, call: Call, config: &BatchConfig) -> Option<Fault> {
        let (at, (_, fault)) = config
            .faults
            .iter()
            .enumerate()
            .find(|(at, (kind, _))| *kind == call && !self.faults_given.contains(at))?;
        self.faults_given.insert(at);
        Some(*fault)
    }

    /// Creates a batch from a create call's body; `refusal` says why the API would refuse a
    /// request's params (its item then errors with an `invalid_request_error`).
    pub fn create(
        &mut self,
        body: &Value,
        config: &BatchConfig,
        refusal: &dyn Fn(&Map<String, Value>) -> Option<String>,
    ) -> Result<&MockBatch, Refusal> {
        let invalid = |message: String| (400, "invalid_request_error", message);
        let requests = body
            .get("requests")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("requests: Field required".to_owned()))?;
        if requests.is_empty() || requests.len() > 100_000 {
            return Err(invalid(format!(
                "requests: a batch holds 1 to 100000 requests, not {}",
                requests.len()
            )));
        }
        let mut held = Vec::with_capacity(requests.len());
        let mut seen = std::collections::HashSet::new();
        for (i, request) in requests.iter().enumerate() {
            let custom_id = request
                .get("custom_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let valid = (1..=64).contains(&custom_id.len())
                && custom_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(invalid(format!(
                    "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )));
            }
            if !seen.insert(custom_id) {
                return Err(invalid(format!(
                    "requests.{i}.custom_id: `{custom_id}` is not unique in the batch"
                )));
            }
            let Some(params) = request.get("params").and_then(Value::as_object) else {
                return Err(invalid(format!("requests.{i}.params: Field required")));
            };
            if params.get("stream").and_then(Value::as_bool) == Some(true) {
                return Err(invalid(format!(
                    "requests.{i}.params.stream: streaming is not supported in batches"
                )));
            }
            held.push((custom_id.to_owned(), params.clone()));
        }
        let instance = config.ids.as_deref().unwrap_or(&self.instance);
        let id = format!("msgbatch_{instance}{:06}", self.held.len() + 1);
        let mut marked = |ids: &[String]| -> Vec<String> {
            held.iter()
                .map(|(custom_id, _)| custom_id)
                .filter(|c| ids.contains(c) && self.spent.insert((*c).clone()))
                .cloned()
                .collect()
        };
        let errored = marked(&config.errored);
        let expired = marked(&config.expired);
        let refused = held.iter().map(|(_, params)| refusal(params)).collect();
        self.held.push(MockBatch {
            id,
            created: Instant::now(),
            created_wall: SystemTime::now(),
            processing: match config.later_processing {
                Some(later) if !self.held.is_empty() => later,
                _ => config.processing,
            },
            canceled: None,
            requests: held,
            refused,
            errored,
            expired,
        });
        Ok(self.held.last().expect("just pushed"))
    }

    pub fn get(&self, id: &str) -> Option<&MockBatch> {
        self.held.iter().find(|b| b.id == id)
    }

    pub fn cancel(&mut self, id: &str) -> Option<&MockBatch> {
        let batch = self.held.iter_mut().find(|b| b.id == id)?;
        batch.canceled.get_or_insert_with(Instant::now);
        Some(batch)
    }

    /// A page of batches, newest first, after `after_id` in that order.
    pub fn list(&self, after_id: Option<&str>, limit: usize, config: &BatchConfig) -> Value {
        let newest_first = self.held.iter().rev();
        let after: Vec<&MockBatch> = match after_id {
            Some(after) => newest_first.skip_while(|b| b.id != after).skip(1).collect(),
            None => newest_first.collect(),
        };
        let page: Vec<Value> = after
            .iter()
            .take(limit)
            .map(|b| b.describe(config, "", self.finished))
            .collect();
        json!({
            "data": page,
            "has_more": after.len() > limit,
            "first_id": page.first().and_then(|b| b.get("id")).cloned(),
            "last_id": page.last().and_then(|b| b.get("id")).cloned(),
        })
    }
}

impl MockBatch {
    fn ended(&self, finished: bool) -> bool {
        finished || self.canceled.is_some() || self.created.elapsed() >= self.processing
    }

    /// What one request of the batch (the `index`th) came to; `refused`, why the API
    /// refuses it.
    fn outcome(
        &self,
        index: usize,
        custom_id: &str,
        refused: Option<&String>,
        config: &BatchConfig,
    ) -> &'static str {
        if refused.is_some() || self.errored.iter().any(|id| id == custom_id) {
            "errored"
        } else if self.expired.iter().any(|id| id == custom_id) {
            "expired"
        } else if self.canceled.is_some()
            && self.created.elapsed() < self.processing
            && index >= config.processed_first
        {
            "canceled"
        } else {
            "succeeded"
        }
    }

    /// The MessageBatch object; `url` is the batch's own URL, for its `results_url`.
    pub fn describe(&self, config: &BatchConfig, url: &str, finished: bool) -> Value {
        let ended = self.ended(finished);
        let mut counts =
            json!({"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0});
        if ended {
            for (index, ((custom_id, _), refused)) in
                self.requests.iter().zip(&self.refused).enumerate()
            {
                let kind = self.outcome(index, custom_id, refused.as_ref(), config);
                counts[kind] = json!(counts[kind].as_u64().unwrap_or(0) + 1);
            }
        } else {
            counts["processing"] = json!(self.requests.len());
        }
        let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let status = match (ended, self.canceled) {
            (true, _) => "ended",
            (false, Some(_)) => "canceling",
            (false, None) => "in_progress",
        };
        json!({
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": rfc3339(self.created_wall),
            "expires_at": rfc3339(self.created_wall + Duration::from_secs(86_400)),
            "ended_at": ended.then(|| rfc3339(SystemTime::now())),
            "cancel_initiated_at": self.canceled.map(|_| rfc3339(SystemTime::now())),
            "archived_at": null,
            "results_url": (ended && !url.is_empty()).then(|| format!("{url}/results")),
        })
    }

    /// The results file, one JSON line per request, last request first; `None` while the
    /// batch is still processing.
    /// `pass` as [`super::MockConfig::pass`]: each request's draw is fixed by its custom id,
    /// so the results read twice are the same.
    pub fn results(
        &self,
        config: &BatchConfig,
        finished: bool,
        pass: &[(String, f64)],
    ) -> Option<Vec<String>> {
        if !self.ended(finished) {
            return None;
        }
        let lines = self
            .requests
            .iter()
            .zip(&self.refused)
            .enumerate()
            .rev()
            .map(|(index, ((custom_id, params), refused))| {
                let result = match self.outcome(index, custom_id, refused.as_ref(), config) {
                    "errored" if refused.is_some() => {
                        json!({"type": "errored", "error": {"type": "error",
                            "error": {"type": "invalid_request_error", "message": refused},
                            "request_id": "req_mock"}})
                    }
                    "succeeded" => {
                        let model = params.get("model").and_then(Value::as_str).unwrap_or("");
                        let seed = answer::request_seed(params);
                        let mut reply = answer::reply(params, seed);
                        if let Some(p) = answer::pass_probability(pass, model) {
                            answer::maybe_miss(&mut reply, params, p, draw(custom_id, seed));
                        }
                        let usage = crate::tokens::input_usage(
                            params,
                            &mut std::collections::HashSet::new(),
                        );
                        let mut message = answer::message(model, seed, &reply, &usage);
                        message["usage"]["service_tier"] = json!("batch");
                        json!({"type": "succeeded", "message": message})
                    }
                    "errored" => json!({"type": "errored", "error": {"type": "error",
                        "error": {"type": "api_error", "message": "Internal server error"},
                        "request_id": "req_mock"}}),
                    other => json!({"type": other}),
                };
                json!({"custom_id": custom_id, "result": result}).to_string()
            })
            .collect();
        Some(lines)
    }
}

/// The answer of a Message Batches endpoint, within the endpoints' request limit when they
/// have one; `entry` learns the fault injected, if one was.
pub(super) async fn respond(
    state: &State,
    request: Request<hyper::body::Incoming>,
    route: Route,
    entry: &mut Logged,
) -> Result<Response<Body>, Dropped> {
    let Some(rpm) = state.config.batches.rpm else {
        return serve(state, request, route, entry).await;
    };
    let admitted = state
        .batches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(rpm, state.config.batches.rpm_left);
    match admitted {
        Ok(headers) => {
            let mut response = serve(state, request, route, entry).await?;
            add_headers(&mut response, headers);
            Ok(response)
        }
        Err((wait, headers)) => {
            // Read whole first, so that the client reads the refusal rather than a write
            // that failed.
            super::read_bounded(
                request.into_body(),
                super::BATCH_BODY_BYTES,
                Oversized::Answer,
            )
            .await?;
            let fault = Fault::RateLimited(wait);
            entry.fault = Some(fault);
            let mut response = fault_response(Some(fault), None)?.ok_or(Dropped)?;
            add_headers(&mut response, headers);
            Ok(response)
        }
    }
}

/// The answer of a Message Batches endpoint, its limit aside.
async fn serve(
    state: &State,
    request: Request<hyper::body::Incoming>,
    route: Route,
    entry: &mut Logged,
) -> Result<Response<Body>, Dropped> {
    let config = &state.config.batches;
    let path = request.uri().path().to_owned();
    if config.unsupported {
        return Ok(error_response(
            404,
            "not_found_error",
            &format!("no route for {path}"),
        ));
    }
    let host = request
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let limit = config.max_body.filter(|_| route == Route::Create);
    let bytes = match read_body(request, limit, config.oversized).await? {
        Some(bytes) => bytes,
        None => {
            return Ok(error_response(
                413,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            ));
        }
    };
    // Counted as each call arrives (its body read), before it is answered.
    state
        .batch_calls
        .send_modify(|calls| calls[route.call().index()] += 1);
    let fault = state
        .batches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .fault(route.call(), config);
    if fault.is_some() {
        entry.fault = fault;
        if let Some(response) = fault_response(fault, state.config.fault_retry_after)? {
            return Ok(response);
        }
    }
    let not_found = |id: &str| {
        error_response(
            404,
            "not_found_error",
            &format!("no message batch with id {id}"),
        )
    };
    let url_of = |id: &str| {
        let base = path.split("/messages/batches").next().unwrap_or("");
        format!("http://{host}{base}/messages/batches/{id}")
    };
    if route == Route::Create {
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let created = {
            let mut held = state.batches.lock().unwrap_or_else(|e| e.into_inner());
            // A request the API would refuse errors in the batch, as it does there.
            let refusal = |params: &serde_json::Map<String, Value>| {
                state.models.refusal(params).map(|(_, message)| message)
            };
            held.create(&body, config, &refusal)
                .map(|batch| batch.describe(config, &url_of(&batch.id), false))
        };
        return Ok(match created {
            Ok(batch) => {
                let mut made = 0;
                state.batches_made.send_modify(|n| {
                    *n += 1;
                    made = *n;
                });
                let delay = match config.later_create_delay {
                    Some(later) if made > 1 => later,
                    _ => config.create_delay,
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                json_response(200, &batch)
            }
            Err((status, kind, message)) => error_response(status, kind, &message),
        });
    }
    if let Route::Results(id) = &route {
        let (lines, first) = {
            let mut held = state.batches.lock().unwrap_or_else(|e| e.into_inner());
            let finished = held.finished;
            let lines = held
                .get(id)
                .map(|b| b.results(config, finished, &state.config.pass));
            let first =
                matches!(lines, Some(Some(_))) && !std::mem::replace(&mut held.results_given, true);
            (lines, first)
        };
        if first && !config.first_results_delay.is_zero() {
            tokio::time::sleep(config.first_results_delay).await;
        }
        return Ok(match lines {
            Some(Some(lines)) => {
                let held = state
                    .results_held
                    .borrow()
                    .filter(|first| *first < lines.len());
                let body = match held {
                    Some(first) => paused(&lines, first, state.results_held.subscribe()),
                    None => full(jsonl(&lines)),
                };
                let mut response = Response::new(body);
                response.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("application/binary"),
                );
                response
            }
            Some(None) => error_response(
                400,
                "invalid_request_error",
                &format!("message batch {id} has not ended: no results yet"),
            ),
            None => not_found(id),
        });
    }
    let mut held = state.batches.lock().unwrap_or_else(|e| e.into_inner());
    let finished = held.finished;
    Ok(match route {
        Route::Create => unreachable!("answered above"),
        Route::List => {
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            let limit = param("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(20_usize)
                .clamp(1, 1000);
            json_response(200, &held.list(param("after_id").as_deref(), limit, config))
        }
        Route::Retrieve(id) => match held.get(&id) {
            Some(batch) => json_response(200, &batch.describe(config, &url_of(&id), finished)),
            None => not_found(&id),
        },
        Route::Cancel(id) => match held.cancel(&id) {
            Some(batch) => json_response(200, &batch.describe(config, &url_of(&id), finished)),
            None => not_found(&id),
        },
        Route::Results(_) => unreachable!("answered above"),
    })
}

/// Lines as a JSONL text.
fn jsonl(lines: &[String]) -> Bytes {
    let mut body = lines.join("\n");
    body.push('\n');
    Bytes::from(body)
}

/// A results file whose lines after the `first` wait until `held` is `None`.
fn paused(
    lines: &[String],
    first: usize,
    mut held: tokio::sync::watch::Receiver<Option<usize>>,
) -> Body {
    use futures_util::StreamExt as _;
    let (head, tail) = (jsonl(&lines[..first]), jsonl(&lines[first..]));
    let frames = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(head))
    })
    .chain(futures_util::stream::once(async move {
        let _ = held.wait_for(Option::is_none).await;
        Ok(hyper::body::Frame::data(tail))
    }));
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames))
}

/// A call's body; `None` when it passes its limit (the create's, set by the test, or the
/// API's own 256 MB for every batch call) and is refused with a 413 once read; a dropped
/// connection when it passes a test's limit and the mock is told to close instead.
async fn read_body(
    request: Request<hyper::body::Incoming>,
    limit: Option<usize>,
    oversized: Oversized,
) -> Result<Option<Bytes>, Dropped> {
    let Some(limit) = limit else {
        return super::read_bounded(
            request.into_body(),
            super::BATCH_BODY_BYTES,
            Oversized::Answer,
        )
        .await;
    };
    let declared = request
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if oversized == Oversized::Close
        && declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(Dropped);
    }
    super::read_bounded(request.into_body(), limit, oversized).await
}

/// A draw in [0, 1) fixed by a request's custom id and seed.
fn draw(custom_id: &str, seed: u64) -> f64 {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let mut hasher = DefaultHasher::new();
    custom_id.hash(&mut hasher);
    seed.hash(&mut hasher);
    #[expect(clippy::cast_precision_loss, reason = "53 bits of a hash")]
    let draw = (hasher.finish() >> 11) as f64 / (1_u64 << 53) as f64;
    draw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_api_paths_under_any_prefix() {
        let get = hyper::Method::GET;
        let post = hyper::Method::POST;
        assert_eq!(route(&post, "/v1/messages/batches"), Some(Route::Create));
        assert_eq!(route(&get, "/gw/v1/messages/batches"), Some(Route::List));
        assert_eq!(
            route(&get, "/v1/messages/batches/msgbatch_1"),
            Some(Route::Retrieve("msgbatch_1".into()))
        );
        assert_eq!(
            route(&post, "/v1/messages/batches/msgbatch_1/cancel"),
            Some(Route::Cancel("msgbatch_1".into()))
        );
        assert_eq!(
            route(&get, "/v1/messages/batches/msgbatch_1/results"),
            Some(Route::Results("msgbatch_1".into()))
        );
        assert_eq!(route(&post, "/v1/messages"), None);
    }

    #[test]
    fn a_create_call_with_a_bad_custom_id_is_refused_as_the_api_refuses_it() {
        let mut batches = Batches::default();
        let body = json!({"requests": [{"custom_id": "has space", "params": {}}]});
        let (status, kind, message) = batches
            .create(&body, &BatchConfig::default(), &|_| None)
            .unwrap_err();
        assert_eq!((status, kind), (400, "invalid_request_error"));
        assert!(message.starts_with("requests.0.custom_id"), "{message}");
    }
}
