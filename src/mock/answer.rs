//! The mock's answers: deterministic text for a given request, realistic usage with prompt
//! caching, and the Message or the stream of events that carries them. A request that forces a
//! tool (`tool_choice` of `tool` or `any`) gets a `tool_use` block whose input is the least
//! its `input_schema` allows; one that enables thinking gets a thinking block first.
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
    /// Every output token: the thinking's, the text's or the tool call's.
    pub output_tokens: u64,
    /// A thinking block before the answer, when the request enables thinking.
    pub thinking: Option<String>,
    /// The tool called instead of a text answer, and its input, when `tool_choice` forces one.
    pub tool: Option<(String, Value)>,
}

/// `count` deterministic words drawn from `seed`, each after a space.
fn words(seed: u64, count: u64) -> String {
    let mut text = String::new();
    let mut state = seed;
    for _ in 0..count {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        text.push(' ');
        text.push_str(WORDS[usize::try_from(state >> 59).unwrap_or(0) % WORDS.len()]);
    }
    text
}

/// `text` cut to at most `tokens` tokens, and whether it was cut.
fn cut_to(text: &mut String, tokens: u64, tokenizer: Tokenizer) -> bool {
    if tokenizer.count(text) <= tokens {
        return false;
    }
    let mut end = usize::try_from(tokenizer.bytes_for(tokens))
        .unwrap_or(usize::MAX)
        .min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// The tool a request's `tool_choice` forces, with its input schema: the named tool for
/// `{"type": "tool"}`, the first for `{"type": "any"}`.
fn forced_tool(body: &Map<String, Value>) -> Option<(String, Value)> {
    let choice = body.get("tool_choice")?;
    let tools = body.get("tools")?.as_array()?;
    let named = |tool: &&Value| tool.get("name").and_then(Value::as_str).is_some();
    let tool = match choice.get("type").and_then(Value::as_str)? {
        "tool" => {
            let name = choice.get("name").and_then(Value::as_str)?;
            tools
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(name))?
        }
        "any" => tools.iter().find(named)?,
        _ => return None,
    };
    let name = tool.get("name").and_then(Value::as_str)?.to_owned();
    let schema = tool.get("input_schema").cloned().unwrap_or(Value::Null);
    Some((name, schema))
}

/// The least value `schema` accepts, as far as the mock reads JSON Schema: `const`, the first
/// of `enum` or of `anyOf`/`oneOf`, the required properties of an object, `minItems` items of
/// an array, `minLength` characters of a string, the `minimum` of a number.
fn least_value(schema: &Value, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return least_value(first, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "null",
    };
    let minimum = |key: &str| schema.get(key).and_then(Value::as_u64).unwrap_or(0).min(64);
    match kind {
        "object" => {
            let properties = schema.get("properties");
            let required = schema.get("required").and_then(Value::as_array);
            let mut object = Map::new();
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                object.insert(name.to_owned(), least_value(property, depth + 1));
            }
            Value::Object(object)
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            Value::Array(
                (0..minimum("minItems"))
                    .map(|_| least_value(items, depth + 1))
                    .collect(),
            )
        }
        "string" => Value::String("x".repeat(usize::try_from(minimum("minLength")).unwrap_or(0))),
        "integer" | "number" => {
            let floor = schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            if floor > 0.0 {
                schema.get("minimum").cloned().unwrap_or(json!(0))
            } else {
                json!(0)
            }
        }
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

/// The thinking budget a request enables (`{"type": "enabled", "budget_tokens": N}`).
fn thinking_budget(body: &Map<String, Value>) -> Option<u64> {
    let thinking = body.get("thinking")?;
    (thinking.get("type").and_then(Value::as_str) == Some("enabled"))
        .then(|| thinking.get("budget_tokens").and_then(Value::as_u64))
        .flatten()
}

pub fn reply(body: &Map<String, Value>, seed: u64) -> Reply {
    let tokenizer = Tokenizer::of(body.get("model").and_then(Value::as_str).unwrap_or(""));
    if let Some(verdict) = judge_verdict(body) {
        return Reply {
            output_tokens: tokenizer.count(&verdict).max(1),
            text: verdict,
            stop_reason: "end_turn",
            stop_sequence: None,
            thinking: None,
            tool: None,
        };
    }
    if let Some((name, schema)) = forced_tool(body) {
        let mut input = least_value(&schema, 0);
        if !input.is_object() {
            input = Value::Object(Map::new());
        }
        return Reply {
            output_tokens: tokenizer.count(&format!("{name}{input}")).max(1),
            text: String::new(),
            stop_reason: "tool_use",
            stop_sequence: None,
            thinking: None,
            tool: Some((name, input)),
        };
    }
    let prompt: String = last_user_text(body.get("messages"))
        .chars()
        .take(80)
        .collect();
    let mut thinking_tokens = 0;
    let thinking = thinking_budget(body).map(|budget| {
        let mut thinking = format!("Thinking about: {prompt}.");
        thinking.push_str(&words(seed.rotate_left(17), 16 + seed % 40));
        cut_to(&mut thinking, budget, tokenizer);
        thinking_tokens = tokenizer.count(&thinking);
        thinking
    });
    let mut text = format!("Answer to: {prompt}.");
    text.push_str(&words(seed, 8 + seed % 90));
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
    // Thinking counts against max_tokens, before the answer.
    if cut_to(
        &mut text,
        max_tokens.saturating_sub(thinking_tokens),
        tokenizer,
    ) {
        stop_reason = "max_tokens";
        stop_sequence = None;
    }
    Reply {
        output_tokens: (thinking_tokens + tokenizer.count(&text)).max(1),
        text,
        stop_reason,
        stop_sequence,
        thinking,
        tool: None,
    }
}

/// The pass probability `pass` gives `model`, if any: by its id as the request names it.
pub fn pass_probability(pass: &[(String, f64)], model: &str) -> Option<f64> {
    pass.iter().find(|(m, _)| m == model).map(|(_, p)| *p)
}

/// A text answer that misses: it does not repeat the prompt (whose text an answer that passes
/// repeats), so a grader that looks for the prompt's expected text fails it. A drawn `roll` in
/// [0, 1) at or above `probability` turns `reply` into one.
pub fn maybe_miss(reply: &mut Reply, body: &Map<String, Value>, probability: f64, roll: f64) {
    if roll < probability || reply.tool.is_some() || judge_verdict(body).is_some() {
        return;
    }
    let tokenizer = Tokenizer::of(body.get("model").and_then(Value::as_str).unwrap_or(""));
    let mut text = "I cannot tell.".to_owned();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a seed"
    )]
    text.push_str(&words((roll * 1e9) as u64, 6));
    let before = tokenizer.count(&reply.text);
    reply.output_tokens =
        (reply.output_tokens - before.min(reply.output_tokens) + tokenizer.count(&text)).max(1);
    reply.text = text;
    if reply.stop_reason != "tool_use" {
        reply.stop_reason = "end_turn";
        reply.stop_sequence = None;
    }
}

/// The signature of a thinking block: opaque, as the API's are, and the same for the same
/// request.
fn signature(seed: u64) -> String {
    format!("EqQBCkgIBhABGAIiQ{seed:016x}mock")
}

/// The content blocks of a reply, in order.
fn content(seed: u64, reply: &Reply) -> Vec<Value> {
    let mut blocks = Vec::new();
    if let Some(thinking) = &reply.thinking {
        blocks
            .push(json!({"type": "thinking", "thinking": thinking, "signature": signature(seed)}));
    }
    match &reply.tool {
        Some((name, input)) => blocks.push(json!({"type": "tool_use",
            "id": format!("toolu_mock_{seed:016x}"), "name": name, "input": input})),
        None => blocks.push(json!({"type": "text", "text": reply.text})),
    }
    blocks
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

/// Answers given by this process, for message ids: as the API's, each answer's id is its own,
/// even for two answers to the same request (the samples of `--repeat`).
static ANSWERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The Message for a reply.
pub fn message(model: &str, seed: u64, reply: &Reply, usage: &PromptUsage) -> Value {
    let answer = ANSWERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    json!({
        "id": format!("msg_mock_{seed:016x}{answer:010x}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content(seed, reply),
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
    let mut events = vec![event(
        "message_start",
        &json!({"type": "message_start", "message": start}),
    )];
    let mut first_delta = None;
    for (index, block) in content(seed, reply).into_iter().enumerate() {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("text");
        // Each block starts empty and is filled by its deltas, as the API streams it.
        let (empty, text, delta_type, field) = match kind {
            "thinking" => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                block["thinking"].as_str().unwrap_or("").to_owned(),
                "thinking_delta",
                "thinking",
            ),
            "tool_use" => {
                let mut empty = block.clone();
                empty["input"] = json!({});
                (
                    empty,
                    block["input"].to_string(),
                    "input_json_delta",
                    "partial_json",
                )
            }
            _ => (
                json!({"type": "text", "text": ""}),
                block["text"].as_str().unwrap_or("").to_owned(),
                "text_delta",
                "text",
            ),
        };
        events.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": empty}),
        ));
        if index == 0 {
            events.push(event("ping", &json!({"type": "ping"})));
        }
        first_delta.get_or_insert(events.len());
        for piece in pieces(&text) {
            events.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": delta_type, field: piece}}),
            ));
        }
        if kind == "thinking" {
            // Sent once, just before the block stops.
            events.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "signature_delta", "signature": signature(seed)}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence},
            "usage": {"output_tokens": reply.output_tokens},
        }),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    (events, first_delta.unwrap_or(1))
}

/// A text cut into pieces of about 24 characters, at a space where there is one, as a stream
/// sends it.
fn pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.char_indices().nth(24).map_or(rest.len(), |(i, _)| i);
        if let Some(space) = rest[..cut]
            .rfind(' ')
            .filter(|s| *s > 0 && cut < rest.len())
        {
            cut = space;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
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

    /// The message a stream of `body`'s answer rebuilds to, and the stream's delta types.
    fn streamed(request: &Map<String, Value>) -> (Value, Vec<String>) {
        use crate::client::sse::{Accumulator, Decoder};
        let seed = request_seed(request);
        let answer = reply(request, seed);
        let usage = PromptUsage::default();
        let (events, _) = stream_events("m", seed, &answer, &usage);
        let mut decoder = Decoder::default();
        let mut accumulator = Accumulator::default();
        let mut deltas = Vec::new();
        for event in decoder.feed(events.concat().as_bytes()) {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            if let Some(kind) = data["delta"]["type"].as_str() {
                deltas.push(kind.to_owned());
            }
            accumulator.apply(&event).unwrap();
        }
        (accumulator.finish().unwrap().message, deltas)
    }

    #[test]
    fn thinking_streams_its_deltas_then_one_signature_and_rebuilds_to_the_plain_answer() {
        let request = body(json!({"model": "m", "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "ping"}]}));
        let seed = request_seed(&request);
        let answer = reply(&request, seed);
        let plain = message("m", seed, &answer, &PromptUsage::default());
        assert_eq!(plain["content"][0]["type"], "thinking");
        assert_eq!(plain["content"][1]["type"], "text");
        let (rebuilt, deltas) = streamed(&request);
        assert_eq!(rebuilt["content"], plain["content"]);
        assert_eq!(
            rebuilt["usage"]["output_tokens"],
            plain["usage"]["output_tokens"]
        );
        let signatures: Vec<usize> = (0..deltas.len())
            .filter(|i| deltas[*i] == "signature_delta")
            .collect();
        assert_eq!(signatures.len(), 1, "{deltas:?}");
        assert!(
            deltas[..signatures[0]]
                .iter()
                .all(|d| d == "thinking_delta")
        );
        assert!(
            deltas[signatures[0] + 1..]
                .iter()
                .all(|d| d == "text_delta")
        );
        // Thinking and answer together stay within max_tokens.
        let small = body(json!({"model": "m", "max_tokens": 1030,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "ping"}]}));
        let cut = reply(&small, request_seed(&small));
        assert!(cut.output_tokens <= 1030);
    }

    #[test]
    fn a_forced_tool_streams_its_input_as_json_deltas() {
        let request = body(json!({"model": "m", "max_tokens": 100,
            "tools": [{"name": "f", "input_schema": {"type": "object", "required": ["a", "b"],
                "properties": {"a": {"type": "array", "minItems": 2, "items": {"type": "boolean"}},
                    "b": {"anyOf": [{"type": "string", "minLength": 3}, {"type": "null"}]}}}}],
            "tool_choice": {"type": "tool", "name": "f"},
            "messages": [{"role": "user", "content": "ping"}]}));
        let seed = request_seed(&request);
        let answer = reply(&request, seed);
        assert_eq!(answer.stop_reason, "tool_use");
        let plain = message("m", seed, &answer, &PromptUsage::default());
        assert_eq!(
            plain["content"][0]["input"],
            json!({"a": [false, false], "b": "xxx"})
        );
        let (rebuilt, deltas) = streamed(&request);
        assert_eq!(rebuilt["content"], plain["content"]);
        assert_eq!(rebuilt["stop_reason"], "tool_use");
        assert!(deltas.iter().all(|d| d == "input_json_delta"), "{deltas:?}");
        // `auto` or no tool_choice answers in text.
        let mut auto = request.clone();
        auto.insert("tool_choice".into(), json!({"type": "auto"}));
        assert_eq!(reply(&auto, seed).tool, None);
    }
}
