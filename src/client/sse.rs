//! Server-sent events: a decoder that accepts bytes split anywhere, and the accumulator that
//! rebuilds the final Message from the Messages streaming events exactly as the SDKs do.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize as _;
use serde_json::{Map, Value};

use super::partial_json;
use crate::message::{MAX_STORED_DEPTH, value_nesting};

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
    /// How much of `buffer` is known to hold no line end: each byte is looked at once, so
    /// decoding is linear in the stream even when one line comes in many chunks.
    scanned: usize,
    name: String,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`, so a leading `\n` belongs to that line end.
    skip_newline: bool,
    /// A line was not UTF-8: the stream is not text, and its events are not JSON.
    invalid_utf8: bool,
    /// Bytes looked at for line ends, for the test that decoding is linear.
    #[cfg(test)]
    examined: usize,
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
        let mut i = self.scanned;
        while let Some(at) = memchr::memchr2(b'\n', b'\r', &self.buffer[i..]) {
            #[cfg(test)]
            {
                self.examined += at + 1;
            }
            i += at;
            let byte = self.buffer[i];
            let line = match std::str::from_utf8(&self.buffer[start..i]) {
                Ok(line) => line.to_owned(),
                Err(_) => {
                    self.invalid_utf8 = true;
                    String::from_utf8_lossy(&self.buffer[start..i]).into_owned()
                }
            };
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
        }
        #[cfg(test)]
        {
            self.examined += self.buffer.len() - i;
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        events
    }

    /// Whether a line so far was not UTF-8 (it was decoded with U+FFFD in its place).
    pub fn invalid_utf8(&self) -> bool {
        self.invalid_utf8
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

/// Rebuilds a Message from streaming events as the official SDKs' accumulators do.
///
/// Blocks are appended in the order they start (the SDKs ignore the index of
/// `content_block_start`), so a stream whose first block has index 1 rebuilds to one block,
/// never to a `null` in its place; later events find their block by the index it started
/// with. Tool input is read from its JSON deltas as the Python SDK reads it, cut short or not
/// ([`partial_json`]); input that is not JSON at all is kept as text in a note on the result.
/// Unknown block types are kept as sent, unknown fields of `message_start` and of
/// `message_delta`'s usage are kept and updated, and a delta of an unknown type is noted.
#[derive(Debug, Default)]
pub struct Accumulator {
    message: Option<Map<String, Value>>,
    /// Where in the content the latest block started with each stream index is: a lookup
    /// costs the same however many blocks a stream starts.
    positions: HashMap<usize, usize>,
    /// Raw tool-input JSON of each content block that carries input, in content order.
    tool_json: Vec<Option<String>>,
    notes: Vec<String>,
    pub done: bool,
    /// Entries looked at to find blocks, for the test that a lookup costs the same however
    /// many blocks came before.
    #[cfg(test)]
    probes: std::sync::atomic::AtomicUsize,
}

/// A rebuilt Message, and what the rebuild could not apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt {
    pub message: Value,
    /// Empty when every event applied cleanly.
    pub notes: Vec<String>,
}

/// The most notes of unknown deltas one rebuilt message keeps.
const MAX_NOTES: usize = 20;

/// Blocks whose `input` is built from `input_json_delta`s, as the SDKs track them.
const TOOL_INPUT_BLOCKS: [&str; 2] = ["tool_use", "server_tool_use"];

/// A `content_block_delta`, read without building a JSON tree: most of a stream's events are
/// these. The one decoder of deltas, for raw event data and parsed values alike.
#[derive(serde::Deserialize)]
struct BlockDelta<'a> {
    index: u64,
    #[serde(borrow)]
    delta: Delta<'a>,
}

#[derive(serde::Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
    #[serde(default)]
    citation: Option<Value>,
}

impl Accumulator {
    pub fn apply(&mut self, event: &Event) -> Result<Step, StreamFailure> {
        let data = event.data.trim();
        if event.name == "content_block_delta"
            && let Ok(delta) = serde_json::from_str::<BlockDelta<'_>>(data)
        {
            self.apply_delta(delta)?;
            return Ok(Step::Delta);
        }
        let data: Value = if data.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(data).map_err(|e| {
                StreamFailure::protocol(format!(
                    "event `{}` carries invalid JSON: {e}",
                    super::one_line(&event.name, super::SHOWN_FIELD_BYTES)
                ))
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
                let blocks = match message.get("content") {
                    Some(Value::Array(content)) if content.iter().all(Value::is_object) => {
                        content.len()
                    }
                    Some(Value::Array(_)) => {
                        return Err(StreamFailure::protocol(
                            "message_start's content holds something that is not a block",
                        ));
                    }
                    _ => {
                        message.insert("content".to_owned(), Value::Array(Vec::new()));
                        0
                    }
                };
                self.positions = (0..blocks).map(|at| (at, at)).collect();
                self.tool_json = vec![None; blocks];
                self.message = Some(message);
                Ok(Step::Continue)
            }
            "content_block_start" => {
                let index = block_index(&data)?;
                let block = match data.get("content_block") {
                    Some(Value::Object(block)) => block.clone(),
                    _ => {
                        return Err(StreamFailure::protocol(
                            "content_block_start without a block",
                        ));
                    }
                };
                let tracks_input = block
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| TOOL_INPUT_BLOCKS.contains(&t));
                let content = self.content()?;
                content.push(Value::Object(block));
                let at = content.len() - 1;
                self.positions.insert(index, at);
                self.tool_json.push(tracks_input.then(String::new));
                Ok(Step::Continue)
            }
            "content_block_delta" => {
                let delta = BlockDelta::deserialize(&data).map_err(|e| {
                    StreamFailure::protocol(format!("content_block_delta is not a delta: {e}"))
                })?;
                self.apply_delta(delta)?;
                Ok(Step::Delta)
            }
            "content_block_stop" => {
                let index = block_index(&data)?;
                let at = self.position(index)?;
                self.settle_input(at);
                Ok(Step::Continue)
            }
            "message_delta" => {
                let message = self
                    .message
                    .as_mut()
                    .ok_or_else(|| StreamFailure::protocol("message_delta before message_start"))?;
                if let Some(Value::Object(delta)) = data.get("delta") {
                    // `stop_reason`, `stop_sequence`, `stop_details`, `container` and fields
                    // added after this was written: a present value replaces the snapshot's,
                    // but a null does not wipe a container or details already given.
                    for (key, value) in delta {
                        if !value.is_null()
                            || matches!(key.as_str(), "stop_reason" | "stop_sequence")
                        {
                            message.insert(key.clone(), value.clone());
                        }
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
                // The gateway's words, kept as one bounded line as an error answer's are: a
                // stream's event may be as long as the whole answer, and is stored with
                // every attempt.
                let error = data.get("error");
                let field = |name: &str, max: usize| {
                    error
                        .and_then(|e| e.get(name))
                        .and_then(Value::as_str)
                        .map(|text| super::one_line(text, max))
                        .filter(|text| !text.is_empty())
                };
                Err(StreamFailure {
                    error_type: field("type", super::SHOWN_FIELD_BYTES)
                        .unwrap_or_else(|| "stream_error".to_owned()),
                    message: field("message", super::SHOWN_MESSAGE_BYTES)
                        .unwrap_or_else(|| "error event".to_owned()),
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

    /// Where in the content the block that started with stream index `index` is.
    fn position(&self, index: usize) -> Result<usize, StreamFailure> {
        #[cfg(test)]
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.positions.get(&index).copied().ok_or_else(|| {
            StreamFailure::protocol(format!("event for block {index}, which was never started"))
        })
    }

    fn block(&mut self, at: usize) -> Result<&mut Map<String, Value>, StreamFailure> {
        match self.content()?.get_mut(at) {
            Some(Value::Object(block)) => Ok(block),
            _ => Err(StreamFailure::protocol(format!(
                "content block {at} is not an object"
            ))),
        }
    }

    fn apply_delta(&mut self, delta: BlockDelta<'_>) -> Result<(), StreamFailure> {
        let index = usize::try_from(delta.index)
            .map_err(|_| StreamFailure::protocol("content event without a valid index"))?;
        let at = self.position(index)?;
        let Delta {
            kind,
            text,
            partial_json,
            thinking,
            signature,
            citation,
        } = delta.delta;
        if kind == "input_json_delta" {
            // Only blocks that carry input take it, as in the SDKs.
            if let Some(Some(buffer)) = self.tool_json.get_mut(at) {
                buffer.push_str(partial_json.as_deref().unwrap_or(""));
            }
            return Ok(());
        }
        let block = self.block(at)?;
        let is = |kind: &str| block.get("type").and_then(Value::as_str) == Some(kind);
        match kind.as_ref() {
            "text_delta" if is("text") => {
                append(block, "text", text.as_deref().unwrap_or(""));
            }
            "thinking_delta" if is("thinking") => {
                append(block, "thinking", thinking.as_deref().unwrap_or(""));
            }
            "signature_delta" if is("thinking") => {
                let signature = signature.unwrap_or_default().into_owned();
                block.insert("signature".to_owned(), Value::String(signature));
            }
            "citations_delta" if is("text") => {
                let citation = citation.unwrap_or(Value::Null);
                match block.get_mut("citations") {
                    Some(Value::Array(list)) => list.push(citation),
                    _ => {
                        block.insert("citations".to_owned(), Value::Array(vec![citation]));
                    }
                }
            }
            "text_delta" | "thinking_delta" | "signature_delta" | "citations_delta" => {}
            other => {
                let other = super::one_line(other, super::SHOWN_FIELD_BYTES);
                let note =
                    format!("a delta of unknown type `{other}` for block {index} was not applied");
                // A few kinds are worth telling apart; a stream of thousands would make the
                // note as long as the answer, and each new one slower to look for.
                if self.notes.len() < MAX_NOTES && !self.notes.contains(&note) {
                    self.notes.push(note);
                }
            }
        }
        Ok(())
    }

    /// Sets a tool block's `input` from its JSON deltas, read as the SDKs read them. Input
    /// that is not JSON even cut short leaves the block's `input` as it started and is kept,
    /// as text, in a note.
    fn settle_input(&mut self, at: usize) {
        let Some(buffer) = self.tool_json.get_mut(at).and_then(Option::take) else {
            return;
        };
        if buffer.is_empty() {
            return;
        }
        match partial_json::parse(&buffer) {
            Ok(input) => {
                if let Ok(block) = self.block(at) {
                    block.insert("input".to_owned(), input);
                }
            }
            Err(e) => self.notes.push(format!(
                "the tool input of content block {at} is not JSON ({e}); it is kept here as sent: {buffer}"
            )),
        }
    }

    /// The rebuilt Message once `message_stop` has arrived.
    pub fn finish(mut self) -> Result<Rebuilt, StreamFailure> {
        if !self.done || self.message.is_none() {
            return Err(StreamFailure {
                error_type: "stream_cut".to_owned(),
                message: "the stream ended before message_stop".to_owned(),
            });
        }
        // Tool blocks whose stop event never came still get what their deltas said.
        for at in 0..self.tool_json.len() {
            self.settle_input(at);
        }
        let message = Value::Object(self.message.take().unwrap_or_default());
        if value_nesting(&message) > MAX_STORED_DEPTH {
            return Err(StreamFailure::protocol(
                "the rebuilt message nests deeper than a stored answer can be read back",
            ));
        }
        Ok(Rebuilt {
            message,
            notes: self.notes,
        })
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
        accumulator.finish().map(|r| r.message)
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
    fn one_long_line_in_small_chunks_is_scanned_once() {
        let mut decoder = Decoder::default();
        let line = format!("data: {}\n\n", "x".repeat(1_000_000));
        let mut events = Vec::new();
        for chunk in line.as_bytes().chunks(100) {
            events.extend(decoder.feed(chunk));
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 1_000_000);
        // Each byte is looked at once (the blank line's end included), not once per chunk.
        assert!(
            decoder.examined <= line.len(),
            "{} bytes examined for {}",
            decoder.examined,
            line.len()
        );
        assert!(!decoder.invalid_utf8());
        decoder.feed(b"data: \xff\xfe\n\n");
        assert!(decoder.invalid_utf8());
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

    fn events(lines: &[Value]) -> String {
        lines
            .iter()
            .map(|data| {
                format!(
                    "event: {}\ndata: {data}\n\n",
                    data["type"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    fn start() -> Value {
        json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
            "model": "claude-opus-5-5", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 0}}})
    }

    fn rebuilt(stream: &str) -> Rebuilt {
        let mut decoder = Decoder::default();
        let mut accumulator = Accumulator::default();
        for event in decoder.feed(stream.as_bytes()) {
            accumulator.apply(&event).unwrap();
        }
        accumulator.finish().unwrap()
    }

    #[test]
    fn a_tool_call_cut_by_max_tokens_keeps_what_the_model_produced() {
        let stream = events(&[
            start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "book", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Paris\", \"nights\": 3, "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"guests\": [\"Ann\", \"Bo"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null}, "usage": {"output_tokens": 20}}),
            json!({"type": "message_stop"}),
        ]);
        let rebuilt = rebuilt(&stream);
        assert_eq!(
            rebuilt.message["content"][0]["input"],
            json!({"city": "Paris", "nights": 3, "guests": ["Ann"]})
        );
        assert_eq!(rebuilt.message["stop_reason"], "max_tokens");
        assert!(rebuilt.notes.is_empty());
    }

    #[test]
    fn a_first_block_with_index_1_rebuilds_to_that_one_block() {
        let stream = events(&[
            start(),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hello"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            json!({"type": "message_stop"}),
        ]);
        assert_eq!(
            rebuilt(&stream).message["content"],
            json!([{"type": "text", "text": "Hello"}])
        );
    }

    #[test]
    fn interleaved_blocks_unknown_types_and_unknown_usage_fields_are_kept() {
        let stream = events(&[
            start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "hologram", "frames": [1]}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "frame_delta", "frame": 2}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "b"}}),
            json!({"type": "brand_new_event", "x": 1}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "container": {"id": "c1"}},
                "usage": {"output_tokens": 5, "future_tokens": 7, "cache_read_input_tokens": 4}}),
            json!({"type": "message_stop"}),
        ]);
        let rebuilt = rebuilt(&stream);
        assert_eq!(
            rebuilt.message["content"],
            json!([{"type": "text", "text": "ab"}, {"type": "hologram", "frames": [1]}])
        );
        assert_eq!(rebuilt.message["container"], json!({"id": "c1"}));
        let usage = &rebuilt.message["usage"];
        assert_eq!(
            (
                usage["output_tokens"].as_u64(),
                usage["future_tokens"].as_u64()
            ),
            (Some(5), Some(7))
        );
        assert_eq!(usage["cache_read_input_tokens"], 4);
        assert_eq!(
            rebuilt.notes,
            ["a delta of unknown type `frame_delta` for block 1 was not applied"]
        );
    }

    #[test]
    fn tool_input_that_is_not_json_is_kept_as_text_in_a_note() {
        let stream = events(&[
            start(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{oops: 1}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
            json!({"type": "message_stop"}),
        ]);
        let rebuilt = rebuilt(&stream);
        assert_eq!(rebuilt.message["content"][0]["input"], json!({}));
        assert_eq!(rebuilt.notes.len(), 1);
        assert!(
            rebuilt.notes[0].contains("kept here as sent: {oops: 1}"),
            "{:?}",
            rebuilt.notes
        );
    }

    #[test]
    fn finding_a_block_costs_the_same_however_many_blocks_started() {
        let blocks = 5_000;
        let mut accumulator = Accumulator::default();
        let apply = |accumulator: &mut Accumulator, data: Value| {
            let event = Event {
                name: data["type"].as_str().unwrap_or("").to_owned(),
                data: data.to_string(),
            };
            accumulator.apply(&event).unwrap();
        };
        apply(&mut accumulator, start());
        for index in 0..blocks {
            apply(
                &mut accumulator,
                json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
            );
        }
        // Deltas for an early block: a scan from the latest block would pass them all.
        for _ in 0..blocks {
            apply(
                &mut accumulator,
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "a"}}),
            );
        }
        // A re-used index names the latest block started with it.
        apply(
            &mut accumulator,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        apply(
            &mut accumulator,
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "b"}}),
        );
        let probes = accumulator
            .probes
            .load(std::sync::atomic::Ordering::Relaxed);
        // One lookup per delta: a scan over the blocks would look at millions of entries.
        assert!(
            probes <= 2 * (blocks + 1),
            "{probes} entries looked at for {} lookups",
            blocks + 1
        );
        apply(
            &mut accumulator,
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        );
        apply(&mut accumulator, json!({"type": "message_stop"}));
        let content = accumulator.finish().unwrap().message["content"].take();
        let content = content.as_array().unwrap();
        assert_eq!(content.len(), blocks + 1);
        assert_eq!(content[0]["text"], "");
        assert_eq!(content[1]["text"], "a".repeat(blocks));
        assert_eq!(content[blocks]["text"], "b");
    }
}
