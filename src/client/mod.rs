//! One Messages API call: headers and auth for the chosen gateway, the request, and the answer
//! read either as one JSON body or as a stream of server-sent events. Retrying is the caller's
//! business; this module only says what happened and whether it is worth another attempt.

pub mod batches;
mod error;
pub mod partial_json;
mod retry;
mod scrub;
pub mod sse;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

pub use error::{AttemptError, SHOWN_FIELD_BYTES, SHOWN_MESSAGE_BYTES, SPEND_LIMIT_CODE, one_line};
pub use retry::{FullJitter, RetryPolicy, Unanswered, parse_retry_after, retried, retry_delay};

use crate::message::MessageSummary;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid header `{0}`")]
    Header(String),
    #[error("failed to build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// An API key. It is read from the environment only and never printed: `Debug` and `Display`
/// show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Self {
        Self(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(****)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Where and how a client sends: the Messages URL, how the key goes, the API version and any
/// extra headers.
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    pub url: String,
    pub auth: AuthStyle,
    pub anthropic_version: &'a str,
    pub headers: &'a [(String, String)],
}

/// How a gateway takes the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    /// `x-api-key: KEY`, as the API and the SDKs by default.
    XApiKey,
    /// `Authorization: Bearer KEY`, as the SDKs send an auth token and many gateways expect.
    Bearer,
}

/// Timeouts of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The whole attempt.
    pub total: Duration,
    /// Longest silence allowed between two chunks of a stream.
    pub stream_idle: Duration,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The Message as received, or as rebuilt from a stream.
    pub body: Bytes,
    pub summary: MessageSummary,
    pub status: u16,
    pub request_id: Option<String>,
    /// From sending to the first content delta, for streamed answers.
    pub ttft: Option<Duration>,
    /// From sending to the complete answer (set by the caller, which times the attempt).
    pub latency: Duration,
    pub streamed: bool,
    /// What rebuilding a streamed answer could not apply cleanly, for the result's `note`.
    pub note: Option<String>,
}

/// What the rate-limit headers of a response say about waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHint {
    /// A limit is exhausted until this time.
    pub exhausted_until: Option<SystemTime>,
    /// Each limit the headers give, with what remains of it.
    pub observed: Vec<Observed>,
}

/// Which per-minute limit a header speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    InputTokens,
    OutputTokens,
}

/// One limit as the `anthropic-ratelimit-*` headers give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub kind: LimitKind,
    pub limit: u64,
    pub remaining: u64,
}

/// The outcome of one attempt, with what its headers said about rate limits.
#[derive(Debug)]
pub struct Exchange {
    pub result: Result<Answer, AttemptError>,
    pub rate_limit: RateLimitHint,
}

/// The outcome of one call to an endpoint other than Messages (a batch endpoint), with what
/// its answer's headers said, whether or not it succeeded.
#[derive(Debug)]
pub struct Called<T> {
    pub result: Result<T, AttemptError>,
    pub rate_limit: RateLimitHint,
    /// The answer's `request-id`, when one came (an error carries its own as well).
    pub request_id: Option<String>,
}

impl<T> Called<T> {
    /// A call that failed before any answer came.
    pub fn unanswered(error: AttemptError) -> Self {
        Self {
            result: Err(error),
            rate_limit: RateLimitHint::default(),
            request_id: None,
        }
    }
}

/// The default bound of one answer, streamed or not (`--max-answer-mb`).
pub const DEFAULT_MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// What is read of an error answer: enough for any API error object and the start of a
/// proxy's HTML page. Past it the body is dropped unread, and the connection with it.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// The bound of the small JSON answers: token counts and batch objects (a page of 100
/// batches is some 50 KB).
const JSON_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

/// Header values shorter than this are not scrubbed from what a gateway says: they cannot be
/// secrets worth the name (`1`, `on`), and scrubbing them would garble every message.
const MIN_SCRUBBED_CHARS: usize = 4;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    /// The key and the extra header values, longest first, kept only to scrub them from
    /// anything a gateway echoes back.
    secrets: Arc<scrub::Secrets>,
    /// Of [`Client::secrets`], those that are surely secrets (the key, the URL's credentials,
    /// the values of headers named as credentials), longest first: scrubbed from answers too,
    /// where another header's value (`x-team: research`) may be a word of the answer.
    answer_secrets: Arc<scrub::Secrets>,
    timeouts: Timeouts,
    /// The bound of one answer, streamed or not, and of one line of a batch's results.
    max_answer_bytes: u64,
    /// Set once the user has been told that a `results_url` on another origin was read from
    /// the base URL's origin, so that they are told once.
    results_origin_noted: Arc<AtomicBool>,
}

impl Client {
    pub fn new(
        gateway: Endpoint<'_>,
        key: Option<ApiKey>,
        timeouts: Timeouts,
        pool_size: usize,
    ) -> Result<Self, ClientError> {
        install_crypto_provider();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "anthropic-version",
            HeaderValue::from_str(gateway.anthropic_version)
                .map_err(|_| ClientError::Header("anthropic-version".to_owned()))?,
        );
        for (name, value) in gateway.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ClientError::Header(name.clone()))?;
            let mut value =
                HeaderValue::from_str(value).map_err(|_| ClientError::Header(name.clone()))?;
            value.set_sensitive(true);
            headers.append(header, value);
        }
        if let Some(key) = &key {
            let (name, value) = match gateway.auth {
                AuthStyle::XApiKey => ("x-api-key", key.expose().to_owned()),
                AuthStyle::Bearer => ("authorization", format!("Bearer {}", key.expose())),
            };
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ClientError::Header(format!("{name} (the key has invalid characters)"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let header_values = |credentials_only: bool| {
            gateway
                .headers
                .iter()
                .filter(move |(name, _)| {
                    !credentials_only || crate::output::is_credential_name(name)
                })
                .map(|(_, value)| value.trim().to_owned())
                .filter(|value| value.chars().count() >= MIN_SCRUBBED_CHARS)
        };
        let sure: Vec<String> = key
            .iter()
            .map(|key| key.expose().to_owned())
            .chain(url_secrets(&gateway.url))
            .collect();
        let secrets = longest_first(header_values(false).chain(sure.iter().cloned()));
        let answer_secrets = longest_first(header_values(true).chain(sure));
        let mut builder = reqwest::Client::builder();
        if is_loopback(&gateway.url) {
            // A gateway on this machine is reached directly: through a proxy of the
            // environment (`HTTP_PROXY`), the key would leave the machine, in the clear for
            // an `http://` URL, and reach whatever listens on the proxy's own loopback.
            builder = builder.no_proxy();
        }
        let http = builder
            // Never follow a redirect: reqwest would send `x-api-key` and every extra header
            // to wherever a gateway points (it strips only `Authorization`), and turn a POST
            // into a GET still carrying the key. A 3xx is an error that says where it points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(pool_size)
            .tcp_nodelay(true)
            .user_agent(concat!("msgbatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self {
            http,
            url: gateway.url,
            headers,
            secrets: Arc::new(scrub::Secrets::new(secrets)),
            answer_secrets: Arc::new(scrub::Secrets::new(answer_secrets)),
            timeouts,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            results_origin_noted: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The client with another bound on one answer (`--max-answer-mb`).
    #[must_use]
    pub fn with_max_answer_bytes(mut self, bytes: u64) -> Self {
        self.max_answer_bytes = bytes;
        self
    }

    /// Sends one request body and reads the answer, streamed when `stream` is set.
    pub async fn send(&self, body: Bytes, stream: bool) -> Exchange {
        self.send_observed(body, stream, None).await
    }

    /// [`Client::send`], calling `first_token` when a streamed answer's first content delta
    /// arrives (for cache warm-up: from then on the prefix it writes can be read).
    pub async fn send_observed(
        &self,
        body: Bytes,
        stream: bool,
        first_token: Option<&(dyn Fn() + Send + Sync)>,
    ) -> Exchange {
        let started = Instant::now();
        let response = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .timeout(self.timeouts.total)
            .body(body.clone())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return Exchange {
                    result: Err(self.transport_error(e)),
                    rate_limit: RateLimitHint::default(),
                };
            }
        };
        let headers = response.headers();
        let rate_limit = rate_limit_hint(headers);
        let request_id = self.request_id(headers);
        let status = response.status().as_u16();
        let result = if status != 200 {
            Err(self.http_error(response, request_id).await)
        } else if stream {
            self.read_stream(response, request_id, started, first_token)
                .await
        } else {
            self.read_body(response, request_id).await
        };
        let result = match result {
            Ok(mut answer) => match self
                .scrub_answer(&mut answer)
                .or_else(|| impossible(&answer, &body))
            {
                Some(error) => Err(error),
                None => Ok(answer),
            },
            Err(e) => Err(e),
        };
        Exchange {
            result: result.map_err(|e| self.scrub_error(e)),
            rate_limit,
        }
    }

    /// Counts the input tokens of a request body with the gateway's `count_tokens` endpoint
    /// (the messages path with `/count_tokens` appended).
    pub async fn count_tokens(&self, body: Bytes) -> Result<u64, AttemptError> {
        #[derive(serde::Deserialize)]
        struct Counted {
            input_tokens: u64,
        }
        let url = self.under("count_tokens");
        let counted: Counted = self
            .json_call(
                self.http.post(&url).body(body),
                "count_tokens answered without input_tokens",
            )
            .await?;
        // A count no request could have is refused as impossible usage is: estimates and
        // token budgets would take it as it is.
        if counted.input_tokens > crate::message::MAX_INPUT_TOKENS {
            return Err(AttemptError::InvalidResponse {
                message: format!(
                    "impossible token count: {} input tokens is above any context window ({} tokens)",
                    counted.input_tokens,
                    crate::message::MAX_INPUT_TOKENS
                ),
                body: None,
                request_id: None,
            });
        }
        Ok(counted.input_tokens)
    }

    /// The messages URL with `tail` appended to its path, its query (`?api-version=…`) kept
    /// after it: `…/v1/messages/count_tokens?api-version=1`.
    fn under(&self, tail: &str) -> String {
        let (path, query) = match self.url.find(['?', '#']) {
            Some(at) => self.url.split_at(at),
            None => (self.url.as_str(), ""),
        };
        let query = query.split('#').next().unwrap_or_default();
        format!("{}/{tail}{query}", path.trim_end_matches('/'))
    }

    /// One call whose 200 answer is a JSON document of type `T`, with the gateway's headers
    /// and the attempt's time limit; `unexpected` says what a 200 that is not one means.
    async fn json_call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        unexpected: &str,
    ) -> Result<T, AttemptError> {
        self.json_exchange(request, unexpected).await.result
    }

    /// [`Client::json_call`], with what the answer's headers said: its rate limits and its
    /// request id.
    async fn json_exchange<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        unexpected: &str,
    ) -> Called<T> {
        let mut rate_limit = RateLimitHint::default();
        let mut request_id = None;
        let result = self
            .json_call_unscrubbed(request, unexpected, &mut rate_limit, &mut request_id)
            .await
            .map_err(|e| self.scrub_error(e));
        Called {
            result,
            rate_limit,
            request_id,
        }
    }

    /// One JSON call; `rate_limit` and `answer_id` learn what the answer's headers said.
    async fn json_call_unscrubbed<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        unexpected: &str,
        rate_limit: &mut RateLimitHint,
        answer_id: &mut Option<String>,
    ) -> Result<T, AttemptError> {
        let mut response = request
            .headers(self.headers.clone())
            .timeout(self.timeouts.total)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let request_id = self.request_id(response.headers());
        *rate_limit = rate_limit_hint(response.headers());
        answer_id.clone_from(&request_id);
        if response.status().as_u16() != 200 {
            return Err(self.http_error(response, request_id).await);
        }
        let body = match read_up_to(&mut response, JSON_ANSWER_BYTES).await {
            Ok(Bounded::Whole(body)) => body,
            Ok(Bounded::Over) => {
                return Err(AttemptError::TooLarge {
                    what: "token count or batch answer",
                    limit: JSON_ANSWER_BYTES,
                    hint: "",
                    request_id,
                });
            }
            Err(e) => return Err(self.transport_error(e)),
        };
        // A batch's id, its results_url and what else it names are stored and printed:
        // nothing the gateway echoed of the key may come with them.
        let body = self.scrub_json(&body).unwrap_or(body);
        serde_json::from_slice(&body).map_err(|e| AttemptError::InvalidResponse {
            message: format!("{unexpected}: {e}"),
            body: error::keep_body(&body),
            request_id,
        })
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        request_id: Option<String>,
    ) -> Result<Answer, AttemptError> {
        let body = match read_up_to(&mut response, self.max_answer_bytes).await {
            Ok(Bounded::Whole(body)) => body,
            Ok(Bounded::Over) => {
                return Err(AttemptError::TooLarge {
                    what: "answer",
                    limit: self.max_answer_bytes,
                    hint: " (see --max-answer-mb)",
                    request_id,
                });
            }
            Err(e) => return Err(self.transport_error(e)),
        };
        // JSON is UTF-8 (RFC 8259), and the answer is kept exactly as received: bytes that
        // are not UTF-8 could be neither read back as JSON nor exported unchanged.
        if let Err(e) = std::str::from_utf8(&body) {
            return Err(AttemptError::InvalidResponse {
                message: format!(
                    "the answer is not UTF-8 text (invalid byte at offset {}), so it is not JSON",
                    e.valid_up_to()
                ),
                body: error::keep_body(&body),
                request_id,
            });
        }
        match MessageSummary::parse(&body) {
            Ok(summary) => Ok(Answer {
                body,
                summary,
                status: 200,
                request_id,
                ttft: None,
                latency: Duration::ZERO,
                streamed: false,
                note: None,
            }),
            Err(message) => Err(AttemptError::InvalidResponse {
                message,
                body: error::keep_body(&body),
                request_id,
            }),
        }
    }

    async fn read_stream(
        &self,
        mut response: reqwest::Response,
        request_id: Option<String>,
        started: Instant,
        first_token: Option<&(dyn Fn() + Send + Sync)>,
    ) -> Result<Answer, AttemptError> {
        let is_event_stream = header_text(response.headers(), "content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !is_event_stream {
            // A gateway that ignores `stream` answers with a plain Message: take it.
            return self.read_body(response, request_id).await;
        }
        let fail = |f: sse::StreamFailure, request_id: &Option<String>| AttemptError::Stream {
            error_type: f.error_type,
            message: f.message,
            request_id: request_id.clone(),
        };
        let mut decoder = sse::Decoder::default();
        let mut accumulator = sse::Accumulator::default();
        let mut ttft = None;
        // Every byte of the stream counts against the answer's bound, which so bounds each
        // line and event too: memory stays under it whatever the gateway sends.
        let mut received: u64 = 0;
        loop {
            let next = tokio::time::timeout(self.timeouts.stream_idle, response.chunk()).await;
            let chunk = match next {
                Err(_) => {
                    return Err(AttemptError::Stream {
                        error_type: "stream_idle".to_owned(),
                        message: format!(
                            "no data for {:?} (see --stream-idle-timeout)",
                            self.timeouts.stream_idle
                        ),
                        request_id,
                    });
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    let message = match self.transport_error(e) {
                        AttemptError::Timeout(d) => format!("no complete answer within {d:?}"),
                        other => other.message(),
                    };
                    return Err(AttemptError::Stream {
                        error_type: "stream_cut".to_owned(),
                        message,
                        request_id,
                    });
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            received = received.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if received > self.max_answer_bytes {
                return Err(AttemptError::TooLarge {
                    what: "streamed answer",
                    limit: self.max_answer_bytes,
                    hint: " (see --max-answer-mb)",
                    request_id,
                });
            }
            let events = decoder.feed(&chunk);
            if decoder.invalid_utf8() {
                return Err(AttemptError::InvalidResponse {
                    message: "the stream is not UTF-8 text, so its events are not JSON".to_owned(),
                    body: None,
                    request_id,
                });
            }
            for event in events {
                match accumulator.apply(&event) {
                    Ok(sse::Step::Delta) if ttft.is_none() => {
                        ttft = Some(started.elapsed());
                        if let Some(first_token) = first_token {
                            first_token();
                        }
                    }
                    Ok(_) => {}
                    Err(f) => return Err(fail(f, &request_id)),
                }
            }
            if accumulator.done {
                break;
            }
        }
        let sse::Rebuilt { message, notes } =
            accumulator.finish().map_err(|f| fail(f, &request_id))?;
        let summary = MessageSummary::from_value(&message).map_err(|message| {
            AttemptError::InvalidResponse {
                message,
                body: None,
                request_id: request_id.clone(),
            }
        })?;
        let body = Bytes::from(message.to_string());
        Ok(Answer {
            body,
            summary,
            status: 200,
            request_id,
            ttft,
            latency: Duration::ZERO,
            streamed: true,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }

    async fn http_error(
        &self,
        mut response: reqwest::Response,
        request_id: Option<String>,
    ) -> AttemptError {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if (300..400).contains(&status) {
            return AttemptError::Http {
                status,
                error_type: Some("redirect".to_owned()),
                message: error::describe_redirect(
                    headers.get("location").map(HeaderValue::as_bytes),
                ),
                error_code: None,
                body: None,
                retry_after: None,
                should_retry: Some(false),
                request_id,
            };
        }
        let body = read_prefix(&mut response, ERROR_BODY_BYTES).await;
        let (error_type, message, error_code) = error::describe_error_body(&body);
        AttemptError::Http {
            status,
            error_type,
            message,
            error_code,
            body: error::keep_body(&body),
            retry_after: retry::parse_retry_after(&headers),
            should_retry: retry::parse_should_retry(&headers),
            request_id,
        }
    }

    fn transport_error(&self, error: reqwest::Error) -> AttemptError {
        if error.is_timeout() {
            return AttemptError::Timeout(self.timeouts.total);
        }
        // The chain says what really happened ("connection refused", "connection closed
        // before message completed"); the URL is left out as it adds nothing per attempt,
        // and its query may hold a key (`?key=…`). reqwest writes it normalised (`LOCALHOST`
        // as `localhost`), so it is dropped from the error rather than looked for.
        let error = error.without_url();
        let mut message = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            let text = e.to_string();
            if !message.contains(&text) {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&text);
            }
            source = e.source();
        }
        let message = message.replace(&self.url, "the gateway");
        AttemptError::Connection(self.scrub(message))
    }

    /// Removes the key and the extra header values from text a gateway sent back, should it
    /// ever echo them.
    fn scrub(&self, text: String) -> String {
        self.secrets.scrub(text)
    }

    /// [`Client::scrub`] over every text of an error, before anything stores or prints it.
    fn scrub_error(&self, error: AttemptError) -> AttemptError {
        error.scrubbed(|text| self.scrub(text))
    }

    /// An answer's request id, as the gateway's `request-id` (or `x-request-id`) gives it:
    /// scrubbed, on one line and bounded, as it is kept with every attempt.
    fn request_id(&self, headers: &HeaderMap) -> Option<String> {
        let id =
            header_text(headers, "request-id").or_else(|| header_text(headers, "x-request-id"))?;
        // A header may be hundreds of kilobytes (the HTTP client's bound); an id is some
        // thirty characters.
        let id = one_line(&self.scrub(id), MAX_REQUEST_ID_BYTES);
        (!id.is_empty()).then_some(id)
    }

    /// Replaces the secrets a gateway echoed in an answer ([`Client::scrub_json`]); the
    /// error when the answer is no Message once they are.
    fn scrub_answer(&self, answer: &mut Answer) -> Option<AttemptError> {
        answer.note = answer
            .note
            .take()
            .map(|note| self.answer_secrets.scrub(note));
        let body = self.scrub_json(&answer.body)?;
        match MessageSummary::parse(&body) {
            Ok(summary) => {
                answer.summary = summary;
                answer.body = body;
                None
            }
            Err(message) => Some(AttemptError::InvalidResponse {
                message,
                body: error::keep_body(&body),
                request_id: answer.request_id.clone(),
            }),
        }
    }

    /// A JSON document from a gateway (an answer, a line of a batch's results) with the key
    /// and every other sure secret it echoes replaced inside its strings, written plainly or
    /// behind JSON escapes (`sk-\u0061nt…`), so that none is stored; `None` when it holds
    /// none, as nearly every document does. A document that is not JSON has them replaced as
    /// text (it is refused, its start kept).
    pub(crate) fn scrub_json(&self, document: &[u8]) -> Option<Bytes> {
        self.answer_secrets.in_document(document).then(|| {
            let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(document) else {
                let text = String::from_utf8_lossy(document).into_owned();
                return Bytes::from(self.answer_secrets.scrub(text));
            };
            scrub_strings(&mut value, &|text| self.answer_secrets.scrub(text));
            Bytes::from(value.to_string())
        })
    }
}

/// Whether a URL names this machine: a loopback address, `localhost` or a name under it.
fn is_loopback(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
    else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let name = bare.trim_end_matches('.');
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// The longest request id kept, in bytes.
const MAX_REQUEST_ID_BYTES: usize = 200;

/// `secrets` without empty ones and repeats, longest first, so that a secret holding another
/// is replaced whole.
fn longest_first(secrets: impl Iterator<Item = String>) -> Vec<String> {
    let mut secrets: Vec<String> = secrets.filter(|secret| !secret.is_empty()).collect();
    secrets.sort();
    secrets.dedup();
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets
}

/// Applies `scrub` to every string of `value`, object keys included. The value was read by
/// serde_json, so it nests at most 128 deep.
fn scrub_strings(value: &mut serde_json::Value, scrub: &dyn Fn(String) -> String) {
    use serde_json::Value;
    match value {
        Value::String(text) => *text = scrub(std::mem::take(text)),
        Value::Array(items) => items.iter_mut().for_each(|item| scrub_strings(item, scrub)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                scrub_strings(&mut item, scrub);
                map.insert(scrub(key), item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The secrets a messages URL carries, to be scrubbed like the key from what a gateway says
/// (an error quoting the request's URL): the password of its authority and the values of its
/// key-like query parameters (`?key=…`), as written and as decoded.
fn url_secrets(url: &str) -> Vec<String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    if let Some(password) = parsed.password() {
        secrets.push(password.to_owned());
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
            secrets.push(decoded.into_owned());
        }
    }
    for pair in parsed.query().unwrap_or_default().split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && crate::output::is_credential_name(name)
        {
            secrets.push(value.to_owned());
            let plus_as_space = value.replace('+', " ");
            if let Ok(decoded) = percent_encoding::percent_decode_str(&plus_as_space).decode_utf8()
            {
                secrets.push(decoded.into_owned());
            }
        }
    }
    secrets.retain(|secret| secret.chars().count() >= MIN_SCRUBBED_CHARS);
    secrets
}

/// A body read whole, or found past its bound.
enum Bounded {
    Whole(Bytes),
    Over,
}

/// Reads a body frame by frame, stopping as soon as it passes `limit` bytes (at once when its
/// length says so), so that no answer holds more memory than its bound.
async fn read_up_to(
    response: &mut reqwest::Response,
    limit: u64,
) -> Result<Bounded, reqwest::Error> {
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit) {
        return Ok(Bounded::Over);
    }
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await? {
        let length = u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX);
        if length > limit {
            return Ok(Bounded::Over);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bounded::Whole(Bytes::from(body)))
}

/// The first `limit` bytes of a body (or what arrived before it failed); the rest is left
/// unread and the connection dropped with the response.
async fn read_prefix(response: &mut reqwest::Response, limit: usize) -> Bytes {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Bytes::from(body)
}

/// The error of an answer whose usage `request` (the JSON body sent) could not have produced,
/// if it is one: such figures would be billed and summed as they are.
fn impossible(answer: &Answer, request: &[u8]) -> Option<AttemptError> {
    let bounds = crate::message::RequestBounds::of(request);
    let message = answer.summary.impossible_usage(&bounds)?;
    Some(AttemptError::InvalidResponse {
        message,
        body: error::keep_body(&answer.body),
        request_id: answer.request_id.clone(),
    })
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads the `anthropic-ratelimit-*` headers: when a limit's remaining count is 0, nothing
/// should be sent before its reset time. Gateways may send none of them.
pub fn rate_limit_hint(headers: &HeaderMap) -> RateLimitHint {
    rate_limit_hint_at(headers, SystemTime::now())
}

/// The API's limits are buckets refilled continuously, and `*-reset` is when one is full
/// again: an empty bucket holds the next request only until it has refilled a little, not
/// until the reset. An empty request bucket waits for one request's worth (its share of the
/// time to the reset, by its limit); an empty token bucket for one second's refill (a
/// sixtieth of the time to the reset).
fn rate_limit_hint_at(headers: &HeaderMap, now: SystemTime) -> RateLimitHint {
    let mut until: Option<SystemTime> = None;
    let mut observed = Vec::new();
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let number = |field: &str| {
            header_text(headers, &format!("anthropic-ratelimit-{kind}-{field}"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let limit_kind = match kind {
            "requests" => Some(LimitKind::Requests),
            "input-tokens" => Some(LimitKind::InputTokens),
            "output-tokens" => Some(LimitKind::OutputTokens),
            _ => None,
        };
        if let (Some(kind), Some(limit), Some(remaining)) =
            (limit_kind, number("limit"), number("remaining"))
        {
            observed.push(Observed {
                kind,
                limit,
                remaining,
            });
        }
        if number("remaining") != Some(0) {
            continue;
        }
        let reset = header_text(headers, &format!("anthropic-ratelimit-{kind}-reset"))
            .and_then(|v| humantime::parse_rfc3339_weak(v.trim()).ok());
        let Some(reset) = reset else { continue };
        let to_reset = reset.duration_since(now).unwrap_or_default();
        let wait = match (kind, number("limit")) {
            ("requests", Some(limit)) if limit > 0 => {
                to_reset / u32::try_from(limit).unwrap_or(u32::MAX)
            }
            ("requests", _) => to_reset,
            _ => to_reset / 60,
        };
        let at = now + wait;
        until = Some(until.map_or(at, |u| u.max(at)));
    }
    RateLimitHint {
        exhausted_until: until,
        observed,
    }
}

/// rustls needs one process-wide crypto provider; ring builds quickly and everywhere.
fn install_crypto_provider() {
    // An error means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_on_this_machine_is_told_from_one_elsewhere() {
        for url in [
            "http://127.0.0.1:4000/v1/messages",
            "http://127.9.9.9/v1/messages",
            "http://[::1]:8080/v1/messages",
            "http://LocalHost./v1/messages",
            "http://gw.localhost/v1/messages",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://api.anthropic.com/v1/messages",
            "http://10.0.0.1/v1/messages",
            "http://localhost.example.com/v1/messages",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn an_exhausted_limit_gives_its_reset_time() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_static("2030-01-01T00:00:30Z"),
        );
        headers.insert(
            "anthropic-ratelimit-tokens-remaining",
            HeaderValue::from_static("12000"),
        );
        headers.insert(
            "anthropic-ratelimit-tokens-reset",
            HeaderValue::from_static("2030-01-01T00:05:00Z"),
        );
        let now = humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let at = |text: &str| Some(humantime::parse_rfc3339(text).unwrap());
        // No limit given: the whole way to the reset.
        assert_eq!(
            rate_limit_hint_at(&headers, now).exhausted_until,
            at("2030-01-01T00:00:30Z")
        );
        // 60 requests a minute, full in 30 s: one request's worth comes back in half a second.
        headers.insert(
            "anthropic-ratelimit-requests-limit",
            HeaderValue::from_static("60"),
        );
        assert_eq!(
            rate_limit_hint_at(&headers, now).exhausted_until,
            Some(now + Duration::from_millis(500))
        );
        // An empty token bucket full in 60 s: one second's refill.
        headers.remove("anthropic-ratelimit-requests-remaining");
        headers.insert(
            "anthropic-ratelimit-input-tokens-remaining",
            HeaderValue::from_static("0"),
        );
        headers.insert(
            "anthropic-ratelimit-input-tokens-reset",
            HeaderValue::from_static("2030-01-01T00:01:00Z"),
        );
        assert_eq!(
            rate_limit_hint_at(&headers, now).exhausted_until,
            Some(now + Duration::from_secs(1))
        );
        assert_eq!(rate_limit_hint(&HeaderMap::new()), RateLimitHint::default());
    }
}
