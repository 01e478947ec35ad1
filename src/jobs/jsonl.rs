//! JSONL job files: one record per line, either a bare Messages body or the Message Batches
//! shape `{"custom_id", "params"}`. Blank lines are skipped. A line longer than
//! [`MAX_RECORD_BYTES`] is never held whole: it is refused, or skipped as a bad record.

use std::io::{BufReader, Read};

use serde_json::{Map, Value};

use super::lines::{Line, LineReader};
use super::{InputError, LoadError, MAX_RECORD_BYTES, RawRecord, ReadItem, too_large};

/// Keys of a bare-body record that belong to msgbatch, not to the request.
const OWN_KEYS: [&str; 3] = ["custom_id", "tags", "expect"];

/// Why a file holding a JSON array is not read, and how to make it JSONL.
const ARRAY_HINT: &str = "this file is a JSON array, and a JSONL file holds one JSON object per \
     line: convert it with `jq -c '.[]' FILE.json > FILE.jsonl`";

/// Why a record in OpenAI's batch shape is not read, and how to convert it.
const OPENAI_HINT: &str = "this record is in OpenAI's batch shape (`custom_id`, `method`, \
     `url`, `body`), and msgbatch reads Anthropic's `{\"custom_id\", \"params\"}` with a \
     Messages body as `params`: convert it with `jq -c '{custom_id, params: (.body | \
     del(.model))}' FILE.jsonl > converted.jsonl` and give --model and --max-tokens (a system \
     message goes in the top-level `system` field)";

/// Lines end at `\n`, `\r\n` or a lone `\r`: JSON has no raw line breaks inside a record.
pub struct JsonlReader<'a, R> {
    reader: LineReader<BufReader<R>>,
    path: &'a str,
    line: u64,
    buffer: Vec<u8>,
    /// A record over the bound is a bad record and reading goes on (`--skip-invalid`);
    /// otherwise it ends the reading with an error.
    skip_too_large: bool,
}

impl<'a, R: Read> JsonlReader<'a, R> {
    pub fn new(reader: R, path: &'a str, skip_too_large: bool) -> Self {
        Self {
            reader: LineReader::new(BufReader::with_capacity(256 * 1024, reader)),
            path,
            line: 0,
            buffer: Vec::with_capacity(4096),
            skip_too_large,
        }
    }

    fn bad(&self, id: Option<String>, field: Option<&str>, reason: impl Into<String>) -> ReadItem {
        ReadItem::Bad {
            id,
            error: InputError {
                path: self.path.to_owned(),
                line: self.line,
                field: field.map(str::to_owned),
                reason: reason.into(),
            },
        }
    }

    fn parse(&self, text: &str) -> ReadItem {
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(Value::Array(_)) => return self.bad(None, None, ARRAY_HINT),
            Ok(_) => return self.bad(None, None, "a record must be a JSON object"),
            // A JSON array written over many lines opens with a line of its own.
            Err(_) if self.line == 1 && text.starts_with('[') => {
                return self.bad(None, None, ARRAY_HINT);
            }
            Err(e) => return self.bad(None, None, format!("invalid JSON: {e}")),
        };
        match self.split(object) {
            Ok(record) => ReadItem::Record(record),
            Err((id, field, reason)) => self.bad(id, Some(&field), reason),
        }
    }

    /// Separates msgbatch's envelope (`custom_id`, `tags`, `expect`) from the request body.
    fn split(
        &self,
        mut object: Map<String, Value>,
    ) -> Result<RawRecord, (Option<String>, String, String)> {
        let id = match object.remove("custom_id") {
            None => None,
            Some(Value::String(id)) if !id.is_empty() => Some(id),
            Some(_) => {
                return Err((
                    None,
                    "custom_id".into(),
                    "must be a non-empty string".into(),
                ));
            }
        };
        let tags = match object.remove("tags") {
            None | Some(Value::Null) => None,
            Some(value) => Some(parse_tags(value).map_err(|(f, r)| (id.clone(), f, r))?),
        };
        let expect = object.remove("expect").filter(|e| !e.is_null());
        if !object.contains_key("params")
            && object.get("body").is_some_and(Value::is_object)
            && (object.contains_key("url") || object.contains_key("method"))
        {
            return Err((id, "body".into(), OPENAI_HINT.into()));
        }
        let body = if let Some(params) = object.remove("params") {
            if let Some(other) = object.keys().next() {
                return Err((
                    id,
                    other.clone(),
                    "unknown key in a {\"custom_id\", \"params\"} record".into(),
                ));
            }
            match params {
                Value::Object(params) => params,
                _ => return Err((id, "params".into(), "must be an object".into())),
            }
        } else {
            debug_assert!(OWN_KEYS.iter().all(|k| !object.contains_key(*k)));
            object
        };
        Ok(RawRecord {
            line: self.line,
            id,
            body,
            tags,
            expect,
        })
    }
}

impl<R: Read> Iterator for JsonlReader<'_, R> {
    type Item = Result<ReadItem, LoadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.reader.read_line(&mut self.buffer, MAX_RECORD_BYTES) {
                Ok(Line::End) => return None,
                Ok(Line::Read) => {}
                Ok(Line::TooLong) => {
                    self.line = self.reader.line;
                    return Some(if self.skip_too_large {
                        Ok(self.bad(None, None, too_large()))
                    } else {
                        Err(LoadError::TooLarge {
                            path: self.path.to_owned(),
                            line: self.line,
                        })
                    });
                }
                Err(source) => {
                    return Some(Err(LoadError::Io {
                        path: self.path.to_owned(),
                        source,
                    }));
                }
            }
            self.line = self.reader.line;
            let text = match std::str::from_utf8(&self.buffer) {
                // A byte-order mark is not part of the first record.
                Ok(text) if self.line == 1 => text.trim_start_matches('\u{feff}').trim(),
                Ok(text) => text.trim(),
                Err(e) => return Some(Ok(self.bad(None, None, format!("not UTF-8: {e}")))),
            };
            if text.is_empty() {
                continue;
            }
            return Some(Ok(self.parse(text)));
        }
    }
}

/// Reads the optional `tags` object, whose values must be strings.
fn parse_tags(value: Value) -> Result<Map<String, Value>, (String, String)> {
    let Value::Object(tags) = value else {
        return Err(("tags".to_owned(), "must be an object of strings".to_owned()));
    };
    for (key, value) in &tags {
        if !value.is_string() {
            return Err((format!("tags.{key}"), "must be a string".to_owned()));
        }
    }
    Ok(tags)
}
