//! What can go wrong with one attempt, and whether it is worth another.

use std::time::Duration;

/// Bodies longer than this are cut before they are kept with an attempt.
const KEPT_BODY_BYTES: usize = 16 * 1024;

/// The failure of one HTTP attempt.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    /// The gateway answered with an error status.
    #[error("HTTP {status} {}: {message}", error_type.as_deref().unwrap_or("error"))]
    Http {
        status: u16,
        /// `error.type` from an API error body, when the body was one.
        error_type: Option<String>,
        message: String,
        /// `error.details.error_code`, when present.
        error_code: Option<String>,
        body: Option<String>,
        retry_after: Option<Duration>,
        /// The server's `x-should-retry` hint.
        should_retry: Option<bool>,
        request_id: Option<String>,
    },
    /// No response: the connection failed, was refused, or closed early.
    #[error("connection error: {0}")]
    Connection(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A 200 whose body is not a Message.
    #[error("invalid response: {message}")]
    InvalidResponse {
        message: String,
        body: Option<String>,
        request_id: Option<String>,
    },
    /// A streamed answer that ended in an `error` event, was cut short or went idle.
    #[error("stream failed: {error_type}: {message}")]
    Stream {
        error_type: String,
        message: String,
        request_id: Option<String>,
    },
    /// An answer past its size bound. Reading stopped there, and asking again would most
    /// likely bring the same: it is not retried.
    #[error("{what} larger than {}{hint}", megabytes(*limit))]
    TooLarge {
        /// What was read: `answer`, `streamed answer`, `batch results line`.
        what: &'static str,
        limit: u64,
        /// Where the bound is set, as ` (see --flag)`, or nothing for a fixed one.
        hint: &'static str,
        request_id: Option<String>,
    },
    /// The gateway asks to wait (`retry-after`, `retry-after-ms` or a rate-limit reset) longer
    /// than `--max-retry-after`: the request is not slept on, and the run stops so that it
    /// can be resumed once the gateway is ready.
    #[error(
        "the gateway asks to wait {} before trying again, more than --max-retry-after {}; resume later",
        humantime::format_duration(whole_seconds(*asked)),
        humantime::format_duration(*limit)
    )]
    WaitTooLong {
        asked: Duration,
        limit: Duration,
        /// The status of the answer that asked.
        status: Option<u16>,
        request_id: Option<String>,
    },
}

/// `67108864` as `64 MB`, and sizes that are no whole number of megabytes in bytes.
fn megabytes(bytes: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MB) {
        format!("{} MB", bytes / MB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A wait rounded up to whole seconds, so that a message says `31years 8months …` rather
/// than nanoseconds.
fn whole_seconds(wait: Duration) -> Duration {
    Duration::from_secs(
        wait.as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0)),
    )
}

/// `error.details.error_code` of the monthly spend-cap 429: retrying cannot succeed.
pub const SPEND_LIMIT_CODE: &str = "enforced_spend_limit_reached";

impl AttemptError {
    /// Whether another attempt may succeed.
    ///
    /// The spend-cap 429 never is. Otherwise the server's `x-should-retry` hint wins; without
    /// it 408, 409, 429 and every 5xx are retried, as are failures with no response at all,
    /// unparseable 200s and broken streams. Other 4xx (400, 401, 402, 403, 404, 413, 422)
    /// are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http {
                status,
                should_retry,
                ..
            } => {
                // A redirect is never followed (the key goes only to the base URL's origin), so
                // asking again would only be redirected again, whatever the server hints.
                if self.is_spend_limit() || (300..400).contains(status) {
                    return false;
                }
                should_retry.unwrap_or(matches!(status, 408 | 409 | 429) || *status >= 500)
            }
            Self::Connection(_)
            | Self::Timeout(_)
            | Self::InvalidResponse { .. }
            | Self::Stream { .. } => true,
            Self::TooLarge { .. } | Self::WaitTooLong { .. } => false,
        }
    }

    /// The workspace or organisation has reached its spend limit.
    pub fn is_spend_limit(&self) -> bool {
        matches!(self, Self::Http { status: 429, error_code: Some(code), .. } if code == SPEND_LIMIT_CODE)
    }

    /// The server's floor for the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status the attempt ended with, if a response arrived. Invalid bodies and
    /// broken streams come after a 200.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            Self::InvalidResponse { .. } | Self::Stream { .. } | Self::TooLarge { .. } => Some(200),
            Self::WaitTooLong { status, .. } => *status,
            Self::Connection(_) | Self::Timeout(_) => None,
        }
    }

    /// A short class for storage and counting: the API's `error.type`, or a transport class.
    pub fn error_type(&self) -> String {
        match self {
            Self::Http {
                error_type: Some(t),
                ..
            } => t.clone(),
            Self::Http { status, .. } => format!("http_{status}"),
            Self::Connection(_) => "connection_error".to_owned(),
            Self::Timeout(_) => "timeout".to_owned(),
            Self::InvalidResponse { .. } => "invalid_response".to_owned(),
            Self::Stream { error_type, .. } => error_type.clone(),
            Self::TooLarge { .. } => "answer_too_large".to_owned(),
            Self::WaitTooLong { .. } => "wait_too_long".to_owned(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Http { message, .. }
            | Self::InvalidResponse { message, .. }
            | Self::Stream { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub fn body(&self) -> Option<&str> {
        match self {
            Self::Http { body, .. } | Self::InvalidResponse { body, .. } => body.as_deref(),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Http { request_id, .. }
            | Self::InvalidResponse { request_id, .. }
            | Self::Stream { request_id, .. }
            | Self::TooLarge { request_id, .. }
            | Self::WaitTooLong { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

impl AttemptError {
    /// The error with `scrub` applied to every text a gateway could have put in it.
    pub(crate) fn scrubbed(self, scrub: impl Fn(String) -> String) -> Self {
        let scrub_opt = |text: Option<String>| text.map(&scrub);
        match self {
            Self::Http {
                status,
                error_type,
                message,
                error_code,
                body,
                retry_after,
                should_retry,
                request_id,
            } => Self::Http {
                status,
                error_type: scrub_opt(error_type),
                message: scrub(message),
                error_code: scrub_opt(error_code),
                body: scrub_opt(body),
                retry_after,
                should_retry,
                request_id: scrub_opt(request_id),
            },
            Self::Connection(message) => Self::Connection(scrub(message)),
            Self::InvalidResponse {
                message,
                body,
                request_id,
            } => Self::InvalidResponse {
                message: scrub(message),
                body: scrub_opt(body),
                request_id: scrub_opt(request_id),
            },
            Self::Stream {
                error_type,
                message,
                request_id,
            } => Self::Stream {
                error_type: scrub(error_type),
                message: scrub(message),
                request_id: scrub_opt(request_id),
            },
            Self::TooLarge {
                what,
                limit,
                hint,
                request_id,
            } => Self::TooLarge {
                what,
                limit,
                hint,
                request_id: scrub_opt(request_id),
            },
            Self::WaitTooLong {
                asked,
                limit,
                status,
                request_id,
            } => Self::WaitTooLong {
                asked,
                limit,
                status,
                request_id: scrub_opt(request_id),
            },
            timeout @ Self::Timeout(_) => timeout,
        }
    }
}

/// Reads an error response body: the API's JSON error shape when it is one, else the text
/// (gateways often answer 502/503 with HTML).
pub fn describe_error_body(body: &[u8]) -> (Option<String>, String, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: Option<String>,
        message: Option<String>,
        details: Option<Details>,
    }
    #[derive(serde::Deserialize)]
    struct Details {
        error_code: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => (
            envelope
                .error
                .kind
                .map(|kind| one_line(&kind, SHOWN_FIELD_BYTES)),
            one_line(
                &envelope.error.message.unwrap_or_default(),
                SHOWN_MESSAGE_BYTES,
            ),
            envelope
                .error
                .details
                .and_then(|d| d.error_code)
                .map(|code| one_line(&code, SHOWN_FIELD_BYTES)),
        ),
        Err(_) => (
            None,
            one_line(&String::from_utf8_lossy(body), SHOWN_TEXT_BYTES),
            None,
        ),
    }
}

/// Longest error message kept from a JSON error body, in bytes (the body itself is kept
/// apart, whole up to its own bound).
pub const SHOWN_MESSAGE_BYTES: usize = 1000;
/// Longest error type or code kept.
pub const SHOWN_FIELD_BYTES: usize = 100;
/// Longest excerpt kept of an error body that is not JSON.
const SHOWN_TEXT_BYTES: usize = 200;

/// A gateway's words as one line of at most `max` bytes: every run of whitespace and control
/// characters becomes one space. The line is printed after `stopping:` and stored as the
/// reason a run stopped, so a message with line breaks cannot add lines that read as the
/// program's own.
pub fn one_line(text: &str, max: usize) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect();
    truncate(&words.join(" "), max)
}

/// Locations longer than this are cut before they are shown.
const SHOWN_LOCATION_CHARS: usize = 200;

/// Says where a 3xx answer pointed, safe to store and print: control characters removed,
/// credentials in the URL redacted, cut to [`SHOWN_LOCATION_CHARS`].
pub fn describe_redirect(location: Option<&[u8]>) -> String {
    let Some(location) = location else {
        return "the gateway answered with a redirect and no location; msgbatch does not follow redirects".to_owned();
    };
    let text: String = String::from_utf8_lossy(location)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let shown = match reqwest::Url::parse(text.trim()) {
        Ok(mut url) => {
            if !url.username().is_empty() || url.password().is_some() {
                // Either may fail on a URL that cannot carry credentials; then it has none.
                let _ = url.set_username("****");
                let _ = url.set_password(None);
            }
            url.to_string()
        }
        Err(_) => text.trim().to_owned(),
    };
    // A location often repeats the request's URL (`http://` to `https://`), whose query may
    // hold a key (`?key=…`): the value of each key-like parameter is hidden, absolute or
    // relative.
    let shown = crate::output::redacted_path(&shown).into_owned();
    let kind = if shown.starts_with("file:") {
        " (a local file)"
    } else {
        ""
    };
    let mut cut: String = shown.chars().take(SHOWN_LOCATION_CHARS).collect();
    if cut.len() < shown.len() {
        cut.push('…');
    }
    format!(
        "the gateway redirected to {cut}{kind}; msgbatch does not follow redirects, so that the key goes only to the base URL's origin (point --base-url at the right place)"
    )
}

/// Keeps at most [`KEPT_BODY_BYTES`] of a body, cut on a character boundary.
pub fn keep_body(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    Some(truncate(&String::from_utf8_lossy(body), KEPT_BODY_BYTES))
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, should_retry: Option<bool>, error_code: Option<&str>) -> AttemptError {
        AttemptError::Http {
            status,
            error_type: None,
            message: String::new(),
            error_code: error_code.map(str::to_owned),
            body: None,
            retry_after: None,
            should_retry,
            request_id: None,
        }
    }

    #[test]
    fn retry_classification_follows_the_api_table() {
        for status in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(http(status, None, None).is_retryable(), "{status}");
        }
        for status in [400, 401, 402, 403, 404, 413, 422] {
            assert!(!http(status, None, None).is_retryable(), "{status}");
        }
        assert!(AttemptError::Connection("reset".into()).is_retryable());
        assert!(AttemptError::Timeout(Duration::from_secs(1)).is_retryable());
    }

    #[test]
    fn the_server_hint_wins_but_never_over_the_spend_cap() {
        assert!(!http(500, Some(false), None).is_retryable());
        assert!(http(400, Some(true), None).is_retryable());
        let cap = http(429, Some(true), Some(SPEND_LIMIT_CODE));
        assert!(cap.is_spend_limit());
        assert!(!cap.is_retryable());
    }

    #[test]
    fn error_bodies_are_read_as_json_or_text() {
        let (kind, message, code) = describe_error_body(
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down","details":{"error_code":"enforced_spend_limit_reached"}}}"#,
        );
        assert_eq!(kind.as_deref(), Some("rate_limit_error"));
        assert_eq!(message, "slow down");
        assert_eq!(code.as_deref(), Some(SPEND_LIMIT_CODE));
        let (kind, message, _) = describe_error_body(b"<html>\n<h1>502 Bad Gateway</h1></html>");
        assert_eq!(kind, None);
        assert_eq!(message, "<html> <h1>502 Bad Gateway</h1></html>");
    }

    #[test]
    fn a_message_with_line_breaks_and_escapes_becomes_one_line() {
        let (kind, message, code) = describe_error_body(
            br#"{"error":{"type":"api_error\nx","message":"no\n  stopped: forged\r\u001b[2Kdone\t.","details":{"error_code":"a\u0000b"}}}"#,
        );
        assert_eq!(kind.as_deref(), Some("api_error x"));
        assert_eq!(message, "no stopped: forged [2Kdone .");
        assert_eq!(code.as_deref(), Some("a b"));
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "é".repeat(5000));
        let (_, message, _) = describe_error_body(long.as_bytes());
        assert!(message.len() <= SHOWN_MESSAGE_BYTES + '…'.len_utf8());
    }
}
