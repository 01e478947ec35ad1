//! One Messages API call: headers and auth for the chosen gateway, the request, and the answer
//! read either as one JSON body or as a stream of server-sent events. Retrying is the caller's
//! business; this module only says what happened and whether it is worth another attempt.

pub mod batches;
mod error;
pub mod partial_json;
mod retry;
pub mod sse;

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

pub use error::{AttemptError, SPEND_LIMIT_CODE};
pub use retry::{FullJitter, RetryPolicy, parse_retry_after, retry_delay};

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

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    /// Kept only to scrub it from anything a gateway echoes back.
    key: Option<ApiKey>,
    timeouts: Timeouts,
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
        let http = reqwest::Client::builder()
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
            key,
            timeouts,
        })
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
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                return Exchange {
                    result: Err(self.transport_error(&e)),
                    rate_limit: RateLimitHint::default(),
                };
            }
        };
        let headers = response.headers();
        let rate_limit = rate_limit_hint(headers);
        let request_id =
            header_text(headers, "request-id").or_else(|| header_text(headers, "x-request-id"));
        let status = response.status().as_u16();
        let result = if status != 200 {
            Err(self.http_error(response, request_id).await)
        } else if stream {
            self.read_stream(response, request_id, started, first_token)
                .await
        } else {
            self.read_body(response, request_id).await
        };
        Exchange { result, rate_limit }
    }

    /// Counts the input tokens of a request body with the gateway's `count_tokens` endpoint
    /// (the messages path with `/count_tokens` appended).
    pub async fn count_tokens(&self, body: Bytes) -> Result<u64, AttemptError> {
        #[derive(serde::Deserialize)]
        struct Counted {
            input_tokens: u64,
        }
        let url = format!("{}/count_tokens", self.url.trim_end_matches('/'));
        let counted: Counted = self
            .json_call(
                self.http.post(&url).body(body),
                "count_tokens answered without input_tokens",
            )
            .await?;
        Ok(counted.input_tokens)
    }

    /// One call whose 200 answer is a JSON document of type `T`, with the gateway's headers
    /// and the attempt's time limit; `unexpected` says what a 200 that is not one means.
    async fn json_call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        unexpected: &str,
    ) -> Result<T, AttemptError> {
        let response = request
            .headers(self.headers.clone())
            .timeout(self.timeouts.total)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let request_id = header_text(response.headers(), "request-id");
        if response.status().as_u16() != 200 {
            return Err(self.http_error(response, request_id).await);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&body).map_err(|e| AttemptError::InvalidResponse {
            message: format!("{unexpected}: {e}"),
            body: self.scrub(error::keep_body(&body)),
            request_id,
        })
    }

    async fn read_body(
        &self,
        response: reqwest::Response,
        request_id: Option<String>,
    ) -> Result<Answer, AttemptError> {
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
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
                body: self.scrub(error::keep_body(&body)),
                request_id,
            }),
        }
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
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
        let mut chunks = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.timeouts.stream_idle, chunks.next()).await;
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
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    let message = match self.transport_error(&e) {
                        AttemptError::Timeout(d) => format!("no complete answer within {d:?}"),
                        other => other.message(),
                    };
                    return Err(AttemptError::Stream {
                        error_type: "stream_cut".to_owned(),
                        message,
                        request_id,
                    });
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            for event in decoder.feed(&chunk) {
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
        response: reqwest::Response,
        request_id: Option<String>,
    ) -> AttemptError {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        let (error_type, message, error_code) = error::describe_error_body(&body);
        AttemptError::Http {
            status,
            error_type,
            message: self.scrub(Some(message)).unwrap_or_default(),
            error_code,
            body: self.scrub(error::keep_body(&body)),
            retry_after: retry::parse_retry_after(&headers),
            should_retry: retry::parse_should_retry(&headers),
            request_id,
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> AttemptError {
        if error.is_timeout() {
            return AttemptError::Timeout(self.timeouts.total);
        }
        // The chain says what really happened ("connection refused", "connection closed
        // before message completed"); the URL is left out as it adds nothing per attempt.
        let mut message = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(error);
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
        AttemptError::Connection(self.scrub(Some(message)).unwrap_or_default())
    }

    /// Removes the key from text a gateway sent back, should it ever echo it.
    fn scrub(&self, text: Option<String>) -> Option<String> {
        match (&self.key, text) {
            (Some(key), Some(text)) if !key.expose().is_empty() && text.contains(key.expose()) => {
                Some(text.replace(key.expose(), "****"))
            }
            (_, text) => text,
        }
    }
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
