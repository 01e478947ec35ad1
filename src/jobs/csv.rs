//! CSV and TSV job files: a header row, then one job per row.
//!
//! Columns: `id`, `prompt` (the user turn), and optional `system`, `model`, `max_tokens`,
//! `temperature`, `expected` and `tag:NAME`; or a `request` column holding a whole JSON body.
//! With a prompt template, `{{column}}` placeholders are filled from the row instead of
//! reading `prompt`. Other columns are kept only as template inputs.

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

use serde_json::{Map, Value, json};

use super::lines::{LineCounting, LineStarts};
use super::{InputError, LoadError, RawRecord, ReadItem};

/// Separators a table is often saved with, tried when the header does not split on the one
/// given.
const LIKELY_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// Where each known column sits in the header.
#[derive(Default)]
struct Columns {
    id: Option<usize>,
    prompt: Option<usize>,
    system: Option<usize>,
    model: Option<usize>,
    max_tokens: Option<usize>,
    temperature: Option<usize>,
    expected: Option<usize>,
    request: Option<usize>,
    tags: Vec<(String, usize)>,
}

/// A parsed `{{column}}` template: literal text and column indexes in order.
enum Piece {
    Text(String),
    Column(usize),
}

pub struct CsvReader<'a, R> {
    reader: csv::Reader<LineCounting<R>>,
    /// Where lines start: the parser counts only `\n`, so a record's line comes from its
    /// byte offset instead, whatever the line endings.
    lines: Rc<RefCell<LineStarts>>,
    path: &'a str,
    columns: Columns,
    template: Option<Vec<Piece>>,
    record: csv::StringRecord,
    expect_kind: &'static str,
}

impl<'a, R: Read> CsvReader<'a, R> {
    pub fn new(
        reader: R,
        path: &'a str,
        delimiter: u8,
        template: Option<&str>,
        expect_kind: &'static str,
    ) -> Result<Self, LoadError> {
        let format = |message: String| LoadError::Format {
            path: path.to_owned(),
            message,
        };
        let (reader, lines) = LineCounting::new(reader);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        let headers = reader
            .headers()
            .map_err(|e| format(format!("cannot read the header row: {e}")))?
            .clone();
        let mut columns = Columns::default();
        for (index, name) in headers.iter().enumerate() {
            let name = name.trim().trim_start_matches('\u{feff}');
            let slot = match name {
                "id" | "custom_id" => &mut columns.id,
                "prompt" => &mut columns.prompt,
                "system" => &mut columns.system,
                "model" => &mut columns.model,
                "max_tokens" => &mut columns.max_tokens,
                "temperature" => &mut columns.temperature,
                "expected" => &mut columns.expected,
                "request" => &mut columns.request,
                other => {
                    if let Some(tag) = other.strip_prefix("tag:") {
                        columns.tags.push((tag.to_owned(), index));
                    }
                    continue;
                }
            };
            if slot.replace(index).is_some() {
                return Err(format(format!("the header names column `{name}` twice")));
            }
        }
        let template = template
            .map(|t| parse_template(t, &headers).map_err(format))
            .transpose()?;
        if template.is_none() && columns.prompt.is_none() && columns.request.is_none() {
            let mut message = "the header has neither a `prompt` nor a `request` column (or give --prompt-template)".to_owned();
            if let Some((other, names)) = other_delimiter(&headers, delimiter) {
                message = format!(
                    "{message}; split on `{}` it reads {}: give --delimiter '{}'",
                    shown(other),
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    shown(other)
                );
            }
            return Err(format(message));
        }
        Ok(Self {
            reader,
            lines,
            path,
            columns,
            template,
            record: csv::StringRecord::new(),
            expect_kind,
        })
    }

    fn bad(&self, line: u64, id: Option<String>, field: Option<&str>, reason: String) -> ReadItem {
        ReadItem::Bad {
            id,
            error: InputError {
                path: self.path.to_owned(),
                line,
                field: field.map(str::to_owned),
                reason,
            },
        }
    }

    fn cell(&self, index: Option<usize>) -> Option<&str> {
        index
            .and_then(|i| self.record.get(i))
            .filter(|v| !v.trim().is_empty())
    }

    fn build(&self, line: u64) -> ReadItem {
        let id = self.cell(self.columns.id).map(|s| s.trim().to_owned());
        let bad = |field: &str, reason: String| self.bad(line, id.clone(), Some(field), reason);
        let mut body = if let Some(request) = self.cell(self.columns.request) {
            match serde_json::from_str::<Value>(request) {
                Ok(Value::Object(body)) => body,
                Ok(_) => return bad("request", "must be a JSON object".to_owned()),
                Err(e) => return bad("request", format!("invalid JSON: {e}")),
            }
        } else {
            let prompt = match &self.template {
                Some(pieces) => Some(self.fill(pieces)),
                None => self.cell(self.columns.prompt).map(str::to_owned),
            };
            let Some(prompt) = prompt.filter(|p| !p.trim().is_empty()) else {
                return bad("prompt", "is empty".to_owned());
            };
            let mut body = Map::new();
            body.insert(
                "messages".to_owned(),
                json!([{"role": "user", "content": prompt}]),
            );
            body
        };
        if let Some(model) = self.cell(self.columns.model) {
            body.insert("model".to_owned(), Value::String(model.trim().to_owned()));
        }
        if let Some(system) = self.cell(self.columns.system) {
            body.insert("system".to_owned(), Value::String(system.to_owned()));
        }
        if let Some(max_tokens) = self.cell(self.columns.max_tokens) {
            match max_tokens.trim().parse::<u64>() {
                Ok(n) => body.insert("max_tokens".to_owned(), n.into()),
                Err(_) => {
                    return bad(
                        "max_tokens",
                        format!("must be an integer of at least 1 (got `{max_tokens}`)"),
                    );
                }
            };
        }
        if let Some(temperature) = self.cell(self.columns.temperature) {
            match temperature.trim().parse::<f64>() {
                Ok(t) if t.is_finite() => body.insert("temperature".to_owned(), t.into()),
                _ => {
                    return bad(
                        "temperature",
                        format!("must be a number (got `{temperature}`)"),
                    );
                }
            };
        }
        let expect = self.cell(self.columns.expected).map(|e| {
            let mut expect = Map::new();
            let value = if self.expect_kind == "equals" {
                e.trim()
            } else {
                e
            };
            expect.insert(self.expect_kind.to_owned(), Value::String(value.to_owned()));
            Value::Object(expect)
        });
        let tags: Map<String, Value> = self
            .columns
            .tags
            .iter()
            .filter_map(|(name, index)| {
                self.cell(Some(*index))
                    .map(|v| (name.clone(), Value::String(v.to_owned())))
            })
            .collect();
        ReadItem::Record(RawRecord {
            line,
            id,
            body,
            tags: (!tags.is_empty()).then_some(tags),
            expect,
        })
    }

    /// The line where a record starts.
    fn line_of(&self, position: Option<&csv::Position>) -> u64 {
        position.map_or(0, |p| self.lines.borrow_mut().line_of(p.byte()))
    }

    fn fill(&self, pieces: &[Piece]) -> String {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Column(index) => out.push_str(self.record.get(*index).unwrap_or("")),
            }
        }
        out
    }
}

impl<R: Read> Iterator for CsvReader<'_, R> {
    type Item = Result<ReadItem, LoadError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.line_of(self.record.position());
                Some(Ok(self.build(line)))
            }
            Err(error) => {
                let line = self.line_of(error.position());
                match error.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => Some(Ok(self.bad(
                        line,
                        None,
                        None,
                        format!("row has {len} columns; the header has {expected_len}"),
                    ))),
                    csv::ErrorKind::Utf8 { .. } => Some(Ok(self.bad(
                        line,
                        None,
                        None,
                        format!("not UTF-8: {error}"),
                    ))),
                    _ => Some(Err(LoadError::Format {
                        path: self.path.to_owned(),
                        message: format!("line {line}: {error}"),
                    })),
                }
            }
        }
    }
}

/// The first likely separator other than `delimiter` that splits the header into names with a
/// `prompt` or `request` column among them.
fn other_delimiter(headers: &csv::StringRecord, delimiter: u8) -> Option<(u8, Vec<String>)> {
    let line = headers
        .iter()
        .collect::<Vec<_>>()
        .join(&char::from(delimiter).to_string());
    LIKELY_DELIMITERS
        .into_iter()
        .filter(|d| *d != delimiter)
        .find_map(|d| {
            let names: Vec<String> = line
                .split(char::from(d))
                .map(|n| n.trim().trim_start_matches('\u{feff}').to_owned())
                .collect();
            names
                .iter()
                .any(|n| n == "prompt" || n == "request")
                .then_some((d, names))
        })
}

/// A separator as the user would type it.
fn shown(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "\\t".to_owned(),
        d => char::from(d).to_string(),
    }
}

fn parse_template(template: &str, headers: &csv::StringRecord) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        pieces.push(Piece::Text(rest[..start].to_owned()));
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "the prompt template has a `{{` without a closing `}}`".to_owned())?;
        let name = after[..end].trim();
        let index = headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                format!("the prompt template uses `{{{{{name}}}}}`, which is not a column")
            })?;
        pieces.push(Piece::Column(index));
        rest = &after[end + 2..];
    }
    pieces.push(Piece::Text(rest.to_owned()));
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_text;
    use serde_json::Value;

    #[test]
    fn rows_become_requests_with_tags_and_expectations() {
        let text = "id,prompt,system,model,max_tokens,temperature,expected,tag:set\n\
                    a,\"Hello, world\",Be terse.,m,12,0.5,hi,smoke\n\
                    b,Second,,,,,,\n";
        let (summary, jobs) = load_text("jobs.csv", text, &[]);
        assert_eq!(summary.bad_records, 1, "{:?}", summary.errors);
        // Row b has no model and no default model.
        assert_eq!(summary.errors[0].line, 3);
        assert_eq!(summary.errors[0].field.as_deref(), Some("model"));
        let body: Value = serde_json::from_str(&jobs[0].request).unwrap();
        assert_eq!(body["messages"][0]["content"], "Hello, world");
        assert_eq!(body["system"], "Be terse.");
        assert_eq!(body["max_tokens"], 12);
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(jobs[0].tags.as_deref(), Some(r#"{"set":"smoke"}"#));
        assert_eq!(jobs[0].expect.as_deref(), Some(r#"{"equals":"hi"}"#));
    }

    #[test]
    fn wrong_column_counts_and_bad_numbers_name_their_line() {
        let text = "id,prompt,model,max_tokens\n\
                    a,one,m,5\n\
                    b,two,m\n\
                    c,three,m,lots\n\
                    d,\"four\nspans lines\",m,5\n\
                    e,five,m,5,extra\n";
        let (summary, jobs) = load_text("jobs.csv", text, &[]);
        let found: Vec<(u64, Option<&str>)> = summary
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_deref()))
            .collect();
        assert_eq!(found, [(3, None), (4, Some("max_tokens")), (7, None)]);
        assert!(summary.errors[0].reason.contains("3 columns"));
        let ok: Vec<_> = jobs
            .iter()
            .filter(|j| j.error.is_none())
            .map(|j| j.job_id.as_str())
            .collect();
        assert_eq!(ok, ["a", "d"]);
    }

    #[test]
    fn a_request_column_carries_a_whole_body() {
        let text = "id\trequest\nr1\t{\"model\":\"m\",\"max_tokens\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_k\":5}\n";
        let (summary, jobs) = load_text("jobs.tsv", text, &[]);
        assert_eq!(summary.bad_records, 0, "{:?}", summary.errors);
        let body: Value = serde_json::from_str(&jobs[0].request).unwrap();
        assert_eq!(body["top_k"], 5);
    }
}
