//! A local model of prompt tokens and prompt caching, shared by the mock gateway (which answers
//! with it) and `msgbatch estimate` (which predicts with it when a gateway cannot count tokens).
//!
//! Tokens are counted as one per four bytes of text (at least one per non-empty block), which
//! is close to a real tokenizer for English prose. The cache follows the API's rules: the prefix
//! is built in the order tools, system, messages; each `cache_control` marks a breakpoint; a
//! top-level `cache_control` marks the last block; prefixes shorter than
//! [`MIN_CACHEABLE_TOKENS`] are not cached.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};

/// Below this many tokens a prefix is not cached, as on the real API (which uses 1,024 to
/// 4,096 depending on the model).
pub const MIN_CACHEABLE_TOKENS: u64 = 1024;

pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        0
    } else {
        (text.len() as u64).div_ceil(4)
    }
}

/// Token count of any content value: text counts its characters, other blocks their JSON.
fn value_tokens(value: &Value) -> u64 {
    match value {
        Value::String(s) => count_tokens(s),
        Value::Object(block) => match block.get("text") {
            Some(Value::String(text))
                if block.get("type").and_then(Value::as_str) == Some("text") =>
            {
                count_tokens(text)
            }
            _ => {
                let mut block = block.clone();
                block.remove("cache_control");
                count_tokens(&Value::Object(block).to_string())
            }
        },
        other => count_tokens(&other.to_string()),
    }
}

/// Cache-aware input usage of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromptUsage {
    pub input_tokens: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

impl PromptUsage {
    pub fn total_input(&self) -> u64 {
        self.input_tokens + self.cache_write_5m + self.cache_write_1h + self.cache_read
    }
}

/// A point in the prompt where a cache entry may start or be read.
struct Breakpoint {
    /// Tokens of the prefix up to and including the marked block.
    tokens: u64,
    one_hour: bool,
    prefix_hash: u64,
}

/// Walks the prompt in cache order (tools, system, messages), returning its total token count
/// and its cache breakpoints.
fn breakpoints(body: &Map<String, Value>) -> (u64, Vec<Breakpoint>) {
    let mut blocks: Vec<&Value> = Vec::new();
    let mut owned_strings = Vec::new();
    if let Some(Value::Array(tools)) = body.get("tools") {
        blocks.extend(tools.iter());
    }
    match body.get("system") {
        Some(Value::Array(system)) => blocks.extend(system.iter()),
        Some(text @ Value::String(_)) => owned_strings.push(("system", text)),
        _ => {}
    }
    let mut hasher = DefaultHasher::new();
    body.get("model").map(Value::to_string).hash(&mut hasher);
    let mut total = 0;
    let mut points = Vec::new();
    let mut visit = |block: &Value, total: &mut u64, hasher: &mut DefaultHasher| {
        *total += value_tokens(block);
        let mut plain = block.clone();
        if let Value::Object(map) = &mut plain {
            map.remove("cache_control");
        }
        plain.to_string().hash(hasher);
        if let Some(control) = block.get("cache_control").filter(|c| !c.is_null()) {
            points.push(Breakpoint {
                tokens: *total,
                one_hour: control.get("ttl").and_then(Value::as_str) == Some("1h"),
                prefix_hash: hasher.finish(),
            });
        }
    };
    for block in blocks {
        visit(block, &mut total, &mut hasher);
    }
    for (_, text) in owned_strings {
        visit(text, &mut total, &mut hasher);
    }
    let mut last_block_hash = None;
    if let Some(Value::Array(messages)) = body.get("messages") {
        for message in messages {
            match message.get("content") {
                Some(Value::Array(content)) => {
                    for block in content {
                        visit(block, &mut total, &mut hasher);
                        last_block_hash = Some((total, hasher.finish()));
                    }
                }
                Some(text) => {
                    visit(text, &mut total, &mut hasher);
                    last_block_hash = Some((total, hasher.finish()));
                }
                None => {}
            }
        }
    }
    // Automatic caching: a top-level cache_control puts a breakpoint on the last block.
    if let (Some(control), Some((tokens, prefix_hash))) = (
        body.get("cache_control").filter(|c| !c.is_null()),
        last_block_hash,
    ) {
        points.push(Breakpoint {
            tokens,
            one_hour: control.get("ttl").and_then(Value::as_str) == Some("1h"),
            prefix_hash,
        });
    }
    (total, points)
}

/// Input-side usage of a request, reading and writing the mock's prompt cache.
pub fn input_usage(body: &Map<String, Value>, cache: &mut HashSet<u64>) -> PromptUsage {
    let (total, points) = breakpoints(body);
    let eligible: Vec<&Breakpoint> = points
        .iter()
        .filter(|p| p.tokens >= MIN_CACHEABLE_TOKENS)
        .collect();
    let read = eligible
        .iter()
        .rev()
        .find(|p| cache.contains(&p.prefix_hash))
        .map_or(0, |p| p.tokens);
    let mut usage = PromptUsage {
        cache_read: read,
        ..PromptUsage::default()
    };
    let mut covered = read;
    for point in &eligible {
        if point.tokens > covered {
            let written = point.tokens - covered;
            if point.one_hour {
                usage.cache_write_1h += written;
            } else {
                usage.cache_write_5m += written;
            }
            covered = point.tokens;
        }
        cache.insert(point.prefix_hash);
    }
    usage.input_tokens = total - covered;
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_cached_prefix_is_written_once_then_read() {
        let long = "x".repeat(8000); // 2000 tokens
        let request = |question: &str| {
            body(json!({
                "model": "m", "max_tokens": 10,
                "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": question}],
            }))
        };
        let mut cache = HashSet::new();
        let first = input_usage(&request("what is one?"), &mut cache);
        assert_eq!(
            first,
            PromptUsage {
                input_tokens: 3,
                cache_write_5m: 2000,
                cache_write_1h: 0,
                cache_read: 0
            }
        );
        let second = input_usage(&request("and two?"), &mut cache);
        assert_eq!(
            second,
            PromptUsage {
                input_tokens: 2,
                cache_write_5m: 0,
                cache_write_1h: 0,
                cache_read: 2000
            }
        );
    }

    #[test]
    fn short_prefixes_are_not_cached_and_1h_writes_are_split_out() {
        let mut cache = HashSet::new();
        let short = body(
            json!({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}], "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(input_usage(&short, &mut cache).cache_write_5m, 0);
        let long = "y".repeat(4400); // 1100 tokens
        let two = body(json!({"model": "m", "max_tokens": 5,
            "system": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                       {"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}]}));
        let usage = input_usage(&two, &mut cache);
        assert_eq!(
            (
                usage.cache_write_1h,
                usage.cache_write_5m,
                usage.input_tokens
            ),
            (1100, 1100, 1)
        );
    }
}
