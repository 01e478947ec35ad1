//! The mock's answers: deterministic text for a given request, realistic usage with prompt
//! caching, and the Message or the stream of events that carries them.
//!
//! Usage comes from [`crate::tokens`], the same local token model that `msgbatch estimate`
//! uses when a gateway cannot count tokens.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::message::last_user_text;
use crate::tokens::{PromptUsage, Tokenizer};

const WORDS: [&str; 24] = [
    "the", "batch", "model", "answers", "with", "care", "and", "every", "token", "counts",
    "toward", "a", "report", "that", "someone", "reads", "in", "the", "morning", "so", "numbers",
    "must", "add", "up",
];

/// A request to judge an answer against a rubric (its last user turn holds `<rubric-N>` and
/// `<answer-N>` sections, `N` a nonce, as judge requests are written) gets a verdict in strict
/// JSON: it fails an answer that contains `FAIL` and passes any other.
fn judge_verdict(body: &Map<String, Value>) -> Option<String> {
    let text = last_user_text(body.get("messages"));
    if !text.contains("<rubric") {
        return None;
    }
    let (_, rest) = text.split_once("<answer-")?;
    let (nonce, rest) = rest.split_once('>')?;
    let answer = rest
        .split(&format!("</answer-{nonce}>"))
        .next()
        .unwrap_or("");
    let verdict = if answer.contains("FAIL") {
        json!({"pass": false, "reason": "the answer contains FAIL"})
    } else {
        json!({"pass": true, "reason": "the answer meets the rubric"})
    };
    Some(verdict.to_string())
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
    let tokenizer = Tokenizer::of(body.get("model").and_then(Value::as_str).unwrap_or(""));
    if let Some(verdict) = judge_verdict(body) {
        return Reply {
            output_tokens: tokenizer.count(&verdict).max(1),
            text: verdict,
            stop_reason: "end_turn",
            stop_sequence: None,
        };
    }
    let prompt: String = last_user_text(body.get("messages"))
        .chars()
        .take(80)
        .collect();
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
    if tokenizer.count(&text) > max_tokens {
        let mut end = usize::try_from(tokenizer.bytes_for(max_tokens))
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
        output_tokens: tokenizer.count(&text).max(1),
        text,
        stop_reason,
        stop_sequence,
    }
}

fn usage_json(usage: &PromptUsage, output_tokens: u64) -> Value {
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
pub fn message(model: &str, seed: u64, reply: &Reply, usage: &PromptUsage) -> Value {
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
    usage: &PromptUsage,
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
