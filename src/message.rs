//! The parts of a Messages API response that msgbatch reads: identity, stop reason and
//! cache-aware usage. The body itself is always stored as received; this is only a view.

use serde::{Deserialize, Serialize};

/// Token usage of one response, with every optional field read as 0 when absent or null.
///
/// `input_tokens` counts only uncached input; the total input is
/// `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Total input tokens, cached or not.
    pub fn total_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }
}

/// Usage as it appears on the wire, every field optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct WireUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation: Option<CacheCreation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CacheCreation {
    #[serde(default)]
    pub ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    pub ephemeral_1h_input_tokens: Option<u64>,
}

/// No token count can reach this: 2^53, past which counts stop being exact in the JSON
/// numbers of most readers, and sums of them overflow the store's 64-bit integers.
pub const MAX_TOKEN_COUNT: u64 = 1 << 53;

/// No input (uncached, cache writes and reads, alone or together) can pass this: ten times
/// the largest context window the API offers (1M tokens, `API_NOTES.md`), so that no real
/// answer is ever refused.
pub const MAX_INPUT_TOKENS: u64 = 10_000_000;

/// Output a request may get past its `max_tokens`: a tenth of it, and at least 100 tokens, for
/// gateways that count a few tokens more than they stop at.
pub const OUTPUT_MARGIN: (u64, u64) = (10, 100);

/// What a request allows its answer to use, read from the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestBounds {
    pub max_tokens: Option<u64>,
    /// `thinking.budget_tokens`: thinking counts inside `max_tokens`, except that with the
    /// interleaved-thinking beta the budget may exceed it, so it is allowed on top.
    pub thinking_budget: Option<u64>,
}

impl RequestBounds {
    /// The bounds of a request's JSON body; none when it cannot be read.
    pub fn of(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Request {
            #[serde(default)]
            max_tokens: Option<u64>,
            #[serde(default)]
            thinking: Option<Thinking>,
        }
        #[derive(Deserialize)]
        struct Thinking {
            #[serde(default)]
            budget_tokens: Option<u64>,
        }
        serde_json::from_slice::<Request>(body).map_or_else(
            |_| Self::default(),
            |request| Self {
                max_tokens: request.max_tokens,
                thinking_budget: request.thinking.and_then(|t| t.budget_tokens),
            },
        )
    }

    /// The most output an answer to this request can report, if the request says.
    pub fn allowed_output(&self) -> Option<u64> {
        let max_tokens = self.max_tokens?;
        let (fraction, floor) = OUTPUT_MARGIN;
        let margin = (max_tokens / fraction).max(floor);
        Some(
            max_tokens
                .saturating_add(self.thinking_budget.unwrap_or(0))
                .saturating_add(margin),
        )
    }
}

impl WireUsage {
    /// Says why no request could have produced this usage, if none could: a count above
    /// [`MAX_TOKEN_COUNT`], or input above [`MAX_INPUT_TOKENS`]. Such figures would be
    /// billed, summed and reported as they are, so the answer is refused instead.
    pub fn impossible(&self) -> Option<String> {
        let split = self.cache_creation.unwrap_or_default();
        let counts = [
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
            (
                "cache_creation_input_tokens",
                self.cache_creation_input_tokens,
            ),
            ("cache_read_input_tokens", self.cache_read_input_tokens),
            (
                "cache_creation.ephemeral_5m_input_tokens",
                split.ephemeral_5m_input_tokens,
            ),
            (
                "cache_creation.ephemeral_1h_input_tokens",
                split.ephemeral_1h_input_tokens,
            ),
        ];
        for (name, count) in counts {
            let Some(count) = count else { continue };
            if count > MAX_TOKEN_COUNT {
                return Some(format!(
                    "impossible usage: {name} {count} is above any count (2^53)"
                ));
            }
            if name != "output_tokens" && count > MAX_INPUT_TOKENS {
                return Some(format!(
                    "impossible usage: {name} {count} is above any context window ({MAX_INPUT_TOKENS} tokens)"
                ));
            }
        }
        let total = self.resolve().total_input_tokens();
        (total > MAX_INPUT_TOKENS).then(|| {
            format!(
                "impossible usage: {total} input tokens in all is above any context window ({MAX_INPUT_TOKENS} tokens)"
            )
        })
    }

    /// Resolves the optional wire fields into [`Usage`].
    ///
    /// When `cache_creation` is absent every cache write is priced as a 5-minute write. When
    /// it is present but its split disagrees with `cache_creation_input_tokens`, the total wins
    /// and the difference is counted as 5-minute writes, so that the split always adds up.
    pub fn resolve(&self) -> Usage {
        let cache_1h = self
            .cache_creation
            .and_then(|c| c.ephemeral_1h_input_tokens)
            .unwrap_or(0);
        let split_5m = self
            .cache_creation
            .and_then(|c| c.ephemeral_5m_input_tokens)
            .unwrap_or(0);
        let creation = self
            .cache_creation_input_tokens
            .unwrap_or(split_5m.saturating_add(cache_1h));
        let cache_1h = cache_1h.min(creation);
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_creation_input_tokens: creation,
            cache_write_5m_tokens: creation - cache_1h,
            cache_write_1h_tokens: cache_1h,
            cache_read_input_tokens: self.cache_read_input_tokens.unwrap_or(0),
        }
    }
}

/// The summary fields of a Message.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageSummary {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// serde_json reads JSON nested at most 128 deep: a message nested deeper could be stored but
/// not read back for grading, so it is no answer.
pub const MAX_STORED_DEPTH: usize = 127;

/// How deep the arrays and objects of a JSON text nest, read in one pass without recursion.
pub fn nesting(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// How deep the arrays and objects of a JSON value nest, as [`nesting`] counts its text.
pub(crate) fn value_nesting(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Array(items) => 1 + items.iter().map(value_nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(value_nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Why a response body that is no Message is refused.
fn not_a_message(e: serde_json::Error) -> String {
    format!("response body is not a JSON message: {e}")
}

fn too_deep() -> String {
    format!(
        "the answer nests deeper than {MAX_STORED_DEPTH} levels, past what a stored answer can be read back with"
    )
}

impl MessageSummary {
    /// Parses a response body, insisting that it is a Message: a 200 whose body is anything
    /// else (an HTML page from a proxy, an error object) is not an answer.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let summary: Self = serde_json::from_slice(body).map_err(not_a_message)?;
        // The fields read here are shallow, and serde skips the others without counting
        // their depth: an answer nested past what serde_json reads back would be stored,
        // then never graded.
        if nesting(body) > MAX_STORED_DEPTH {
            return Err(too_deep());
        }
        summary.checked()
    }

    /// [`MessageSummary::parse`] for a body already read as JSON (an item of a batch's
    /// results), with the same checks, without reading its text again.
    pub fn parse_value(body: &serde_json::Value) -> Result<Self, String> {
        let summary = Self::deserialize(body).map_err(not_a_message)?;
        if value_nesting(body) > MAX_STORED_DEPTH {
            return Err(too_deep());
        }
        summary.checked()
    }

    /// [`MessageSummary::parse`] for a message already parsed (one rebuilt from a stream).
    pub fn from_value(message: &serde_json::Value) -> Result<Self, String> {
        let summary = Self::deserialize(message)
            .map_err(|e| format!("the rebuilt message is not a message: {e}"))?;
        summary.checked()
    }

    fn checked(self) -> Result<Self, String> {
        let summary = self;
        match summary.kind.as_deref() {
            Some("message") => {}
            Some(other) => return Err(format!("response type is `{other}`, not `message`")),
            None => return Err("response has no `type` field".to_owned()),
        }
        let Some(usage) = &summary.usage else {
            return Err("response has no `usage`".to_owned());
        };
        if let Some(impossible) = usage.impossible() {
            return Err(impossible);
        }
        Ok(summary)
    }

    /// Says why this answer's usage is one that `request` could not have produced, if it is:
    /// more output than its `max_tokens` allows (with [`OUTPUT_MARGIN`]), on top of the
    /// bounds every usage must keep ([`WireUsage::impossible`]).
    pub fn impossible_usage(&self, request: &RequestBounds) -> Option<String> {
        let usage = self.usage.as_ref()?;
        if let Some(impossible) = usage.impossible() {
            return Some(impossible);
        }
        let output = usage.output_tokens?;
        let allowed = request.allowed_output()?;
        (output > allowed).then(|| {
            format!(
                "impossible usage: output_tokens {output} for a request with max_tokens {}",
                request.max_tokens.unwrap_or(0)
            )
        })
    }

    pub fn usage(&self) -> Usage {
        self.usage
            .as_ref()
            .map(WireUsage::resolve)
            .unwrap_or_default()
    }
}

/// The text of the last user turn of a request's `messages`: a string content as it is, text
/// blocks joined by newlines.
pub fn last_user_text(messages: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    let content = messages
        .and_then(Value::as_array)
        .and_then(|messages| {
            messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"));
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_nested_past_what_is_read_back_is_refused() {
        let nested = |levels: usize, around: &str| {
            format!(
                r#"{{"type":"message","usage":{{"input_tokens":1,"output_tokens":1}},"extra":{}{around}{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // Brackets inside strings, escaped quotes included, are no nesting.
        assert_eq!(nesting(br#"{"a":"[[[\"[[","b":[{}]}"#), 3);
        assert!(MessageSummary::parse(nested(120, r#""[{\"""#).as_bytes()).is_ok());
        let error = MessageSummary::parse(nested(100_000, "").as_bytes()).unwrap_err();
        assert!(error.contains("nests deeper than 127 levels"), "{error}");
        assert!(MessageSummary::parse(nested(127, "").as_bytes()).is_err());
    }

    #[test]
    fn a_body_read_as_json_is_checked_as_its_text_is() {
        let bodies = [
            r#"{"type":"message","id":"m","model":"x","usage":{"input_tokens":1,"output_tokens":2}}"#,
            r#"{"type":"error","usage":{}}"#,
            r#"{"type":"message"}"#,
            r#"{"usage":{}}"#,
            r#"{"type":"message","usage":{"input_tokens":-1}}"#,
            r#"{"type":"message","usage":{"input_tokens":1,"output_tokens":99999999999}}"#,
            "[1]",
        ];
        for body in bodies {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            let (text, read) = (
                MessageSummary::parse(body.as_bytes()),
                MessageSummary::parse_value(&value),
            );
            match (&text, &read) {
                (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
                // serde says where in the text; a value has no place.
                (Err(a), Err(b)) => assert_eq!(a.split(" at line").next(), Some(b.as_str())),
                _ => panic!("{body}: {text:?} against {read:?}"),
            }
        }
        // Deeper than any text serde_json reads, as a value built in place could be.
        let mut deep = serde_json::json!([]);
        for _ in 0..127 {
            deep = serde_json::json!([deep]);
        }
        let body = serde_json::json!({"type": "message", "usage": {}, "extra": deep});
        let error = MessageSummary::parse_value(&body).unwrap_err();
        assert!(error.contains("nests deeper than 127 levels"), "{error}");
    }

    #[test]
    fn missing_cache_fields_read_as_zero_and_writes_default_to_5m() {
        let usage: WireUsage = serde_json::from_str(
            r#"{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":null}"#,
        )
        .unwrap();
        let usage = usage.resolve();
        assert_eq!(usage.cache_write_5m_tokens, 100);
        assert_eq!(usage.cache_write_1h_tokens, 0);
        assert_eq!(usage.cache_read_input_tokens, 0);
        assert_eq!(usage.total_input_tokens(), 110);
    }

    #[test]
    fn cache_creation_split_is_kept() {
        let usage: WireUsage = serde_json::from_str(
            r#"{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":300,
                "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}"#,
        )
        .unwrap();
        let usage = usage.resolve();
        assert_eq!(
            (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens),
            (100, 200)
        );
    }

    #[test]
    fn usage_no_request_could_produce_is_refused() {
        let parse = |usage: &str| {
            MessageSummary::parse(format!(r#"{{"type":"message","usage":{usage}}}"#).as_bytes())
        };
        let err = parse(r#"{"input_tokens":5,"output_tokens":9007199254740993}"#).unwrap_err();
        assert!(
            err.contains("output_tokens 9007199254740993 is above any count"),
            "{err}"
        );
        let err = parse(r#"{"input_tokens":10000001,"output_tokens":1}"#).unwrap_err();
        assert!(
            err.contains("input_tokens 10000001 is above any context window"),
            "{err}"
        );
        let err =
            parse(r#"{"input_tokens":6000000,"cache_read_input_tokens":6000000}"#).unwrap_err();
        assert!(err.contains("12000000 input tokens in all"), "{err}");
        let err = parse(r#"{"cache_creation":{"ephemeral_1h_input_tokens":18446744073709551615}}"#)
            .unwrap_err();
        assert!(err.contains("ephemeral_1h_input_tokens"), "{err}");
        // A 1M-token context filled is real.
        parse(r#"{"input_tokens":1000000,"output_tokens":64000}"#).unwrap();

        let summary = parse(r#"{"input_tokens":5,"output_tokens":11000000000000}"#).unwrap();
        let bounds = RequestBounds::of(br#"{"model":"m","max_tokens":16,"messages":[]}"#);
        let err = summary.impossible_usage(&bounds).unwrap();
        assert_eq!(
            err,
            "impossible usage: output_tokens 11000000000000 for a request with max_tokens 16"
        );
        // A few tokens past max_tokens, and a thinking budget above it, are allowed.
        let summary = parse(r#"{"input_tokens":5,"output_tokens":116}"#).unwrap();
        assert_eq!(summary.impossible_usage(&bounds), None);
        let summary = parse(r#"{"input_tokens":5,"output_tokens":5000}"#).unwrap();
        assert!(summary.impossible_usage(&bounds).is_some());
        let thinking = RequestBounds::of(
            br#"{"max_tokens":16,"thinking":{"type":"enabled","budget_tokens":8000}}"#,
        );
        assert_eq!(summary.impossible_usage(&thinking), None);
        // A request that does not say bounds nothing more.
        assert_eq!(summary.impossible_usage(&RequestBounds::of(b"{")), None);
    }

    #[test]
    fn a_non_message_200_is_rejected() {
        assert!(MessageSummary::parse(b"<html>bad gateway</html>").is_err());
        assert!(MessageSummary::parse(br#"{"type":"error","error":{}}"#).is_err());
        assert!(MessageSummary::parse(br#"{"type":"message","usage":{}}"#).is_ok());
    }
}
