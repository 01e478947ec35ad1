//! The mock's answers: deterministic text for a given request, realistic usage with prompt
//! caching, and the Message or the stream of events that carries them.
//!
//! Tokens are counted as one per four bytes of text (at least one per non-empty block), which
//! is close enough to a real tokenizer for cost and rate-limit behaviour to look real.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value, json};

/// Below this many tokens a prefix is not cached, as on the real API (which uses 1,024 to
/// 4,096 depending on the model).
pub const MIN_CACHEABLE_TOKENS: u64 = 1024;

const WORDS: [&str; 24] = [
    "the", "batch", "model", "answers", "with", "care", "and", "every", "token", "counts",
    "toward", "a", "report", "that", "someone", "reads", "in", "the", "morning", "so", "numbers",
    "must", "add", "up",
];

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

/// Cache-aware usage of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MockUsage {
    pub input_tokens: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

impl MockUsage {
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
pub fn input_usage(body: &Map<String, Value>, cache: &mut HashSet<u64>) -> MockUsage {
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
    let mut usage = MockUsage {
        cache_read: read,
        ..MockUsage::default()
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

/// The last user turn's text, which the answer echoes so that every job's answer is its own.
fn last_user_text(body: &Map<String, Value>) -> String {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return String::new();
    };
    let Some(message) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A stable hash of the request, leaving out `stream` so that a streamed and a plain request
/// get the same answer.
pub fn request_seed(body: &Map<String, Value>) -> u64 {
    let mut hasher = DefaultHasher::new();
    for (key, value) in body {
        if key != "stream" {
            key.hash(&mut hasher);
            value.to_string().hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The text, stop reason and output tokens of the answer to `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub stop_reason: &'static str,
    pub stop_sequence: Option<String>,
    pub output_tokens: u64,
}

pub fn reply(body: &Map<String, Value>, seed: u64) -> Reply {
    let prompt: String = last_user_text(body).chars().take(80).collect();
    let mut text = format!("Answer to: {prompt}.");
    let extra_words = 8 + seed % 90;
    let mut state = seed;
    for _ in 0..extra_words {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        text.push(' ');
        text.push_str(WORDS[usize::try_from(state >> 59).unwrap_or(0) % WORDS.len()]);
    }
    text.push('.');
    let mut stop_reason = "end_turn";
    let mut stop_sequence = None;
    if let Some(Value::Array(sequences)) = body.get("stop_sequences") {
        let first = sequences
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s).map(|at| (at, s)))
            .min();
        if let Some((at, sequence)) = first {
            text.truncate(at);
            stop_reason = "stop_sequence";
            stop_sequence = Some(sequence.to_owned());
        }
    }
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    if count_tokens(&text) > max_tokens {
        let mut end = usize::try_from(max_tokens.saturating_mul(4))
            .unwrap_or(usize::MAX)
            .min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        stop_reason = "max_tokens";
        stop_sequence = None;
    }
    Reply {
        output_tokens: count_tokens(&text).max(1),
        text,
        stop_reason,
        stop_sequence,
    }
}

fn usage_json(usage: &MockUsage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_5m + usage.cache_write_1h,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

/// The Message for a reply.
pub fn message(model: &str, seed: u64, reply: &Reply, usage: &MockUsage) -> Value {
    json!({
        "id": format!("msg_mock_{seed:016x}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": usage_json(usage, reply.output_tokens),
    })
}

/// One server-sent event.
pub fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The events that stream a reply, in order, with the index of the first content delta.
pub fn stream_events(
    model: &str,
    seed: u64,
    reply: &Reply,
    usage: &MockUsage,
) -> (Vec<String>, usize) {
    let mut start = message(model, seed, reply, usage);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["stop_sequence"] = Value::Null;
    start["usage"] = usage_json(usage, 1);
    let mut events = vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": start}),
        ),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", &json!({"type": "ping"})),
    ];
    let first_delta = events.len();
    let mut rest = reply.text.as_str();
    while !rest.is_empty() {
        let mut cut = rest.char_indices().nth(24).map_or(rest.len(), |(i, _)| i);
        if let Some(space) = rest[..cut]
            .rfind(' ')
            .filter(|s| *s > 0 && cut < rest.len())
        {
            cut = space;
        }
        let (piece, tail) = rest.split_at(cut);
        events.push(event("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
        rest = tail;
    }
    events.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence},
            "usage": {"output_tokens": reply.output_tokens},
        }),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    (events, first_delta)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            MockUsage {
                input_tokens: 3,
                cache_write_5m: 2000,
                cache_write_1h: 0,
                cache_read: 0
            }
        );
        let second = input_usage(&request("and two?"), &mut cache);
        assert_eq!(
            second,
            MockUsage {
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

    #[test]
    fn replies_are_deterministic_and_honour_max_tokens_and_stop_sequences() {
        let request = body(
            json!({"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "ping"}]}),
        );
        let seed = request_seed(&request);
        let a = reply(&request, seed);
        assert_eq!(a, reply(&request, seed));
        assert!(a.text.starts_with("Answer to: ping."));
        assert_eq!(a.stop_reason, "end_turn");
        let short = body(
            json!({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "ping"}]}),
        );
        let cut = reply(&short, request_seed(&short));
        assert_eq!((cut.stop_reason, cut.output_tokens), ("max_tokens", 3));
        let stop = body(
            json!({"model": "m", "max_tokens": 100, "stop_sequences": [":"], "messages": [{"role": "user", "content": "ping"}]}),
        );
        let stopped = reply(&stop, request_seed(&stop));
        assert_eq!(
            (stopped.text.as_str(), stopped.stop_sequence.as_deref()),
            ("Answer to", Some(":"))
        );
    }
}
