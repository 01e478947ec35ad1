//! Server-sent events: a decoder that accepts bytes split anywhere, and the accumulator that
//! rebuilds the final Message from the Messages streaming events exactly as the SDKs do.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Decodes an SSE byte stream. Lines end in `\n`, `\r\n` or `\r`; a blank line ends an event;
/// chunks may split lines, events or UTF-8 characters anywhere.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of an unfinished line.
    buffer: Vec<u8>,
    name: String,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`, so a leading `\n` belongs to that line end.
    skip_newline: bool,
}

impl Decoder {
    /// Feeds a chunk and returns the events it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut chunk = chunk;
        if self.skip_newline && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.skip_newline = false;
        self.buffer.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = 0;
        while i < self.buffer.len() {
            let byte = self.buffer[i];
            if byte == b'\n' || byte == b'\r' {
                let line = String::from_utf8_lossy(&self.buffer[start..i]).into_owned();
                if byte == b'\r' {
                    if i + 1 < self.buffer.len() {
                        if self.buffer[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.skip_newline = true;
                    }
                }
                i += 1;
                start = i;
                if let Some(event) = self.line(&line) {
                    events.push(event);
                }
            } else {
                i += 1;
            }
        }
        self.buffer.drain(..start);
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if !self.has_data && self.name.is_empty() {
                return None;
            }
            let event = Event {
                name: std::mem::take(&mut self.name),
                data: std::mem::take(&mut self.data),
            };
            self.has_data = false;
            return Some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing of note (message_start, ping, block start and stop, unknown events).
    Continue,
    /// The first content delta, the point at which time to first token is taken.
    Delta,
    /// `message_stop`: the message is complete.
    Done,
}

/// Errors that make a stream a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFailure {
    pub error_type: String,
    pub message: String,
}

impl StreamFailure {
    fn protocol(message: impl Into<String>) -> Self {
        Self {
            error_type: "stream_error".to_owned(),
            message: message.into(),
        }
    }
}

/// Rebuilds a Message from streaming events.
#[derive(Debug, Default)]
pub struct Accumulator {
    message: Option<Map<String, Value>>,
    /// Partial JSON of `tool_use`-like blocks, by block index.
    json_buffers: Vec<String>,
    pub done: bool,
}

/// A content delta read without building a JSON tree: most of a stream's events are these.
#[derive(serde::Deserialize)]
struct FastDelta<'a> {
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    index: usize,
    #[serde(borrow)]
    delta: FastDeltaBody<'a>,
}

#[derive(serde::Deserialize)]
struct FastDeltaBody<'a> {
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
}

impl Accumulator {
    pub fn apply(&mut self, event: &Event) -> Result<Step, StreamFailure> {
        if event.name == "content_block_delta"
            && let Ok(fast) = serde_json::from_str::<FastDelta<'_>>(&event.data)
            && fast.kind == "content_block_delta"
        {
            let appended = match (fast.delta.kind.as_ref(), &fast.delta) {
                (
                    "text_delta",
                    FastDeltaBody {
                        text: Some(text), ..
                    },
                ) => {
                    append(self.block(fast.index)?, "text", text);
                    true
                }
                (
                    "thinking_delta",
                    FastDeltaBody {
                        thinking: Some(thinking),
                        ..
                    },
                ) => {
                    append(self.block(fast.index)?, "thinking", thinking);
                    true
                }
                (
                    "input_json_delta",
                    FastDeltaBody {
                        partial_json: Some(json),
                        ..
                    },
                ) => {
                    self.block(fast.index)?;
                    if self.json_buffers.len() <= fast.index {
                        self.json_buffers.resize(fast.index + 1, String::new());
                    }
                    self.json_buffers[fast.index].push_str(json);
                    true
                }
                // Signatures and citations take the general path below.
                _ => false,
            };
            if appended {
                return Ok(Step::Delta);
            }
        }
        let data: Value = if event.data.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(event.data.trim()).map_err(|e| {
                StreamFailure::protocol(format!("event `{}` carries invalid JSON: {e}", event.name))
            })?
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.name.as_str())
            .to_owned();
        match kind.as_str() {
            "message_start" => {
                let Some(Value::Object(message)) = data.get("message") else {
                    return Err(StreamFailure::protocol("message_start without a message"));
                };
                let mut message = message.clone();
                if !matches!(message.get("content"), Some(Value::Array(_))) {
                    message.insert("content".to_owned(), Value::Array(Vec::new()));
                }
                self.message = Some(message);
                Ok(Step::Continue)
            }
            "content_block_start" => {
                let index = block_index(&data)?;
                let block = data.get("content_block").cloned().ok_or_else(|| {
                    StreamFailure::protocol("content_block_start without a block")
                })?;
                let content = self.content()?;
                if content.len() <= index {
                    content.resize(index + 1, Value::Null);
                }
                content[index] = block;
                Ok(Step::Continue)
            }
            "content_block_delta" => {
                let index = block_index(&data)?;
                let delta = data.get("delta").ok_or_else(|| {
                    StreamFailure::protocol("content_block_delta without a delta")
                })?;
                self.apply_delta(index, delta)?;
                Ok(Step::Delta)
            }
            "content_block_stop" => {
                let index = block_index(&data)?;
                let buffer = self.json_buffers.get_mut(index).map(std::mem::take);
                if let Some(buffer) = buffer.filter(|b| !b.is_empty()) {
                    let input: Value = serde_json::from_str(&buffer).map_err(|e| {
                        StreamFailure::protocol(format!(
                            "tool input of block {index} is not JSON: {e}"
                        ))
                    })?;
                    let block = self.block(index)?;
                    block.insert("input".to_owned(), input);
                }
                Ok(Step::Continue)
            }
            "message_delta" => {
                let message = self
                    .message
                    .as_mut()
                    .ok_or_else(|| StreamFailure::protocol("message_delta before message_start"))?;
                if let Some(Value::Object(delta)) = data.get("delta") {
                    for key in ["stop_reason", "stop_sequence"] {
                        if let Some(value) = delta.get(key) {
                            message.insert(key.to_owned(), value.clone());
                        }
                    }
                    if let Some(details) = delta.get("stop_details").filter(|d| !d.is_null()) {
                        message.insert("stop_details".to_owned(), details.clone());
                    }
                }
                if let Some(Value::Object(usage)) = data.get("usage") {
                    let target = message
                        .entry("usage")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(target) = target {
                        // Every figure in message_delta is cumulative: present values replace.
                        for (key, value) in usage {
                            if !value.is_null() {
                                target.insert(key.clone(), value.clone());
                            }
                        }
                    }
                }
                Ok(Step::Continue)
            }
            "message_stop" => {
                if self.message.is_none() {
                    return Err(StreamFailure::protocol("message_stop before message_start"));
                }
                self.done = true;
                Ok(Step::Done)
            }
            "error" => {
                let error = data.get("error");
                let field = |name: &str| {
                    error
                        .and_then(|e| e.get(name))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                Err(StreamFailure {
                    error_type: field("type").unwrap_or_else(|| "stream_error".to_owned()),
                    message: field("message").unwrap_or_else(|| "error event".to_owned()),
                })
            }
            // `ping`, and event types added after this was written.
            _ => Ok(Step::Continue),
        }
    }

    fn content(&mut self) -> Result<&mut Vec<Value>, StreamFailure> {
        match self.message.as_mut().and_then(|m| m.get_mut("content")) {
            Some(Value::Array(content)) => Ok(content),
            _ => Err(StreamFailure::protocol(
                "content event before message_start",
            )),
        }
    }

    fn block(&mut self, index: usize) -> Result<&mut Map<String, Value>, StreamFailure> {
        match self.content()?.get_mut(index) {
            Some(Value::Object(block)) => Ok(block),
            _ => Err(StreamFailure::protocol(format!(
                "event for block {index}, which was never started"
            ))),
        }
    }

    fn apply_delta(&mut self, index: usize, delta: &Value) -> Result<(), StreamFailure> {
        let text = |name: &str| delta.get(name).and_then(Value::as_str).unwrap_or("");
        let kind = delta.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "input_json_delta" => {
                self.block(index)?;
                if self.json_buffers.len() <= index {
                    self.json_buffers.resize(index + 1, String::new());
                }
                self.json_buffers[index].push_str(text("partial_json"));
            }
            "text_delta" => append(self.block(index)?, "text", text("text")),
            "thinking_delta" => append(self.block(index)?, "thinking", text("thinking")),
            "signature_delta" => {
                let signature = text("signature").to_owned();
                self.block(index)?
                    .insert("signature".to_owned(), Value::String(signature));
            }
            "citations_delta" => {
                let citation = delta.get("citation").cloned().unwrap_or(Value::Null);
                let block = self.block(index)?;
                match block
                    .entry("citations")
                    .or_insert_with(|| Value::Array(Vec::new()))
                {
                    Value::Array(list) => list.push(citation),
                    other => *other = Value::Array(vec![citation]),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The rebuilt Message once `message_stop` has arrived.
    pub fn finish(self) -> Result<Value, StreamFailure> {
        match (self.done, self.message) {
            (true, Some(message)) => Ok(Value::Object(message)),
            _ => Err(StreamFailure {
                error_type: "stream_cut".to_owned(),
                message: "the stream ended before message_stop".to_owned(),
            }),
        }
    }
}

fn append(block: &mut Map<String, Value>, key: &str, text: &str) {
    match block.get_mut(key) {
        Some(Value::String(existing)) => existing.push_str(text),
        _ => {
            block.insert(key.to_owned(), Value::String(text.to_owned()));
        }
    }
}

fn block_index(data: &Value) -> Result<usize, StreamFailure> {
    data.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < 10_000)
        .ok_or_else(|| StreamFailure::protocol("content event without a valid index"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A recorded stream with text, a tool call split across deltas, pings and CRLF endings.
    pub const RECORDED: &str = concat!(
        "event: message_start\r\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":377,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}  \r\n",
        "\r\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ": a comment line\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"I'll check \u{e9}t\u{e9}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"locati\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"on\\\": \\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":65,\"cache_read_input_tokens\":12}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn expected() -> Value {
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [
                {"type": "text", "text": "I'll check \u{e9}t\u{e9}"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 377, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 12, "output_tokens": 65}
        })
    }

    fn rebuild(chunks: &[&[u8]]) -> Result<Value, StreamFailure> {
        let mut decoder = Decoder::default();
        let mut accumulator = Accumulator::default();
        for chunk in chunks {
            for event in decoder.feed(chunk) {
                accumulator.apply(&event)?;
            }
        }
        accumulator.finish()
    }

    #[test]
    fn a_recorded_stream_rebuilds_the_message_at_every_split_point() {
        let bytes = RECORDED.as_bytes();
        assert_eq!(rebuild(&[bytes]).unwrap(), expected());
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                rebuild(&[a, b]).unwrap(),
                expected(),
                "split at byte {split}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(rebuild(&singles).unwrap(), expected());
    }

    #[test]
    fn thinking_and_signature_deltas() {
        let stream = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me \"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"think.\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig==\"}}\n\n",
            "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let message = rebuild(&[stream.as_bytes()]).unwrap();
        assert_eq!(
            message["content"][0],
            json!({"type": "thinking", "thinking": "Let me think.", "signature": "sig=="})
        );
        assert_eq!(message["usage"]["output_tokens"], 9);
        assert_eq!(message["stop_reason"], "end_turn");
    }

    #[test]
    fn error_events_and_cut_streams_fail() {
        let error = "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let failure = rebuild(&[error.as_bytes()]).unwrap_err();
        assert_eq!(failure.error_type, "overloaded_error");
        let cut = &RECORDED.as_bytes()[..RECORDED.len() / 2];
        assert_eq!(rebuild(&[cut]).unwrap_err().error_type, "stream_cut");
    }
}
