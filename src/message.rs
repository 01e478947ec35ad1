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
        self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
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

impl WireUsage {
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
            .unwrap_or(split_5m + cache_1h);
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

impl MessageSummary {
    /// Parses a response body, insisting that it is a Message: a 200 whose body is anything
    /// else (an HTML page from a proxy, an error object) is not an answer.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let summary: Self = serde_json::from_slice(body)
            .map_err(|e| format!("response body is not a JSON message: {e}"))?;
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
        if summary.usage.is_none() {
            return Err("response has no `usage`".to_owned());
        }
        Ok(summary)
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
    fn a_non_message_200_is_rejected() {
        assert!(MessageSummary::parse(b"<html>bad gateway</html>").is_err());
        assert!(MessageSummary::parse(br#"{"type":"error","error":{}}"#).is_err());
        assert!(MessageSummary::parse(br#"{"type":"message","usage":{}}"#).is_ok());
    }
}
