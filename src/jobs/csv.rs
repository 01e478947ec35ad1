//! CSV and TSV job files: a header row, then one job per row.
//!
//! Columns: `id`, `prompt` (the user turn), and optional `system`, `model`, `max_tokens`,
//! `temperature`, `expected` and `tag:NAME`; or a `request` column holding a whole JSON body.
//! With a prompt template, `{{column}}` placeholders are filled from the row instead of
//! reading `prompt`. Other columns are kept only as template inputs.

use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value, json};

use super::lines::LineCount;
use super::{InputError, LoadError, MAX_RECORD_BYTES, RawRecord, ReadItem, too_large};
use crate::request::MAX_BODY_BYTES;

/// Separators a table is often saved with, tried when the header does not split on the one
/// given.
const LIKELY_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// The most columns a header may name (their ends are held for every row).
const MAX_COLUMNS: usize = 100_000;

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

/// One row's fields: the text of all of them, and where each ends.
#[derive(Default)]
struct Row {
    text: String,
    ends: Vec<usize>,
}

impl Row {
    fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1],
        };
        self.text.get(start..end)
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// What reading the next row's fields found.
enum Fields {
    End,
    /// A row (or the header) of `columns` fields starting on `line`; only the fields the
    /// header has room for are kept.
    Row {
        line: u64,
        columns: usize,
    },
    /// A row longer than [`MAX_RECORD_BYTES`], of which nothing is kept.
    TooLarge {
        line: u64,
    },
    /// A row whose field `column` (0-based) is not UTF-8.
    NotUtf8 {
        line: u64,
        column: usize,
    },
}

/// Reads rows with `csv_core`, holding at most [`MAX_RECORD_BYTES`] of a row: past the bound
/// its fields are parsed into a scratch buffer and dropped, so that a row of any length (or
/// an endless one, when the caller stops there) costs no more than the bound.
struct RowReader<R> {
    input: BufReader<R>,
    parser: csv_core::Reader,
    lines: LineCount,
    /// The parsed bytes of the row being read, and where its fields end.
    bytes: Vec<u8>,
    ends: Vec<usize>,
    scratch: Vec<u8>,
    scratch_ends: Vec<usize>,
}

impl<R: Read> RowReader<R> {
    fn new(input: R, delimiter: u8) -> Self {
        Self {
            input: BufReader::with_capacity(64 * 1024, input),
            parser: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            lines: LineCount::default(),
            bytes: Vec::new(),
            ends: Vec::new(),
            scratch: vec![0; 64 * 1024],
            scratch_ends: vec![0; 1024],
        }
    }

    /// Reads the next row into `row`, keeping at most `max_columns` field ends. A row over the
    /// bound is read to its end when `skip_too_large`, else left where it passed the bound.
    fn read(
        &mut self,
        row: &mut Row,
        max_columns: usize,
        skip_too_large: bool,
    ) -> std::io::Result<Fields> {
        // Line endings between rows (blank lines) are consumed here rather than by the parser,
        // which skips them too, so that a row's line is the one it starts on.
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(Fields::End);
            }
            let blank = available.iter().position(|b| !matches!(b, b'\r' | b'\n'));
            let consumed = blank.unwrap_or(available.len());
            self.lines.observe(&available[..consumed]);
            self.input.consume(consumed);
            if blank.is_some() {
                break;
            }
        }
        let line = self.lines.line();
        let (mut kept, mut ended, mut columns, mut read) = (0, 0, 0, 0);
        let mut too_large = false;
        loop {
            let available = self.input.fill_buf()?;
            if !too_large && kept == self.bytes.len() {
                let grown = (self.bytes.len() * 2).clamp(4096, MAX_RECORD_BYTES);
                self.bytes.resize(grown, 0);
            }
            if ended == self.ends.len() && ended < max_columns {
                let grown = (self.ends.len() * 2).max(16).min(max_columns);
                self.ends.resize(grown, 0);
            }
            let output = if too_large {
                &mut self.scratch[..]
            } else {
                &mut self.bytes[kept..]
            };
            // Past the columns kept, field ends are only counted.
            let ends = if ended < max_columns {
                &mut self.ends[ended..]
            } else {
                &mut self.scratch_ends[..]
            };
            let (result, nin, nout, nend) = self.parser.read_record(available, output, ends);
            self.lines.observe(&available[..nin]);
            self.input.consume(nin);
            read += nin;
            if !too_large {
                kept += nout;
            }
            if ended < max_columns {
                ended += nend;
            }
            columns += nend;
            let full = matches!(result, csv_core::ReadRecordResult::OutputFull)
                && self.bytes.len() >= MAX_RECORD_BYTES;
            if !too_large && (read > MAX_RECORD_BYTES || full) {
                too_large = true;
                if !skip_too_large {
                    return Ok(Fields::TooLarge { line });
                }
            }
            if matches!(
                result,
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End
            ) {
                break;
            }
        }
        if too_large {
            return Ok(Fields::TooLarge { line });
        }
        let kept_columns = ended.min(max_columns);
        let mut start = 0;
        for (column, end) in self.ends[..kept_columns].iter().enumerate() {
            if std::str::from_utf8(&self.bytes[start..*end]).is_err() {
                return Ok(Fields::NotUtf8 { line, column });
            }
            start = *end;
        }
        row.text.clear();
        // Checked field by field above, so the whole is UTF-8 too.
        row.text
            .push_str(std::str::from_utf8(&self.bytes[..start]).unwrap_or_default());
        row.ends.clear();
        row.ends.extend_from_slice(&self.ends[..kept_columns]);
        Ok(Fields::Row { line, columns })
    }
}

pub struct CsvReader<'a, R> {
    rows: RowReader<R>,
    path: &'a str,
    /// Columns in the header: a row with another count is a bad row.
    width: usize,
    columns: Columns,
    template: Option<Vec<Piece>>,
    record: Row,
    expect_kind: &'static str,
    /// A row over the bound is a bad record and reading goes on; otherwise it is an error.
    skip_too_large: bool,
    /// An error ended the reading.
    done: bool,
}

impl<'a, R: Read> CsvReader<'a, R> {
    pub fn new(
        reader: R,
        path: &'a str,
        delimiter: u8,
        template: Option<&str>,
        expect_kind: &'static str,
        skip_too_large: bool,
    ) -> Result<Self, LoadError> {
        let format = |message: String| LoadError::Format {
            path: path.to_owned(),
            message,
        };
        let mut rows = RowReader::new(reader, delimiter);
        let mut header = Row::default();
        let io = |source| LoadError::Io {
            path: path.to_owned(),
            source,
        };
        // The header is read whole or not at all: every row is checked against it.
        match rows.read(&mut header, MAX_COLUMNS, false).map_err(io)? {
            Fields::Row { columns, .. } if columns > MAX_COLUMNS => {
                return Err(format(format!(
                    "the header has {columns} columns; msgbatch reads at most {MAX_COLUMNS}"
                )));
            }
            Fields::End | Fields::Row { .. } => {}
            Fields::TooLarge { line } => {
                return Err(LoadError::TooLarge {
                    path: path.to_owned(),
                    line,
                });
            }
            Fields::NotUtf8 { line, column } => {
                return Err(format(format!(
                    "cannot read the header row: line {line}, column {}: not UTF-8",
                    column + 1
                )));
            }
        }
        let headers: Vec<String> = (0..header.len())
            .map(|i| header.get(i).unwrap_or_default().to_owned())
            .collect();
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
            rows,
            path,
            width: headers.len(),
            columns,
            template,
            record: Row::default(),
            expect_kind,
            skip_too_large,
            done: false,
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
                Some(pieces) => match self.fill(pieces) {
                    Some(prompt) => Some(prompt),
                    None => {
                        return bad(
                            "prompt",
                            format!(
                                "the prompt template makes a user turn larger than {} MB",
                                MAX_BODY_BYTES >> 20
                            ),
                        );
                    }
                },
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

    /// The user turn the template makes of the row, or `None` when it would be larger than
    /// the API takes (a template may use a long column many times).
    fn fill(&self, pieces: &[Piece]) -> Option<String> {
        let mut out = String::new();
        for piece in pieces {
            let text = match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Column(index) => self.record.get(*index).unwrap_or(""),
            };
            if out.len() + text.len() > MAX_BODY_BYTES {
                return None;
            }
            out.push_str(text);
        }
        Some(out)
    }
}

impl<R: Read> Iterator for CsvReader<'_, R> {
    type Item = Result<ReadItem, LoadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let fields = match self
            .rows
            .read(&mut self.record, self.width, self.skip_too_large)
        {
            Ok(fields) => fields,
            Err(source) => {
                self.done = true;
                return Some(Err(LoadError::Io {
                    path: self.path.to_owned(),
                    source,
                }));
            }
        };
        Some(Ok(match fields {
            Fields::End => return None,
            Fields::Row { line, columns } if columns == self.width => self.build(line),
            Fields::Row { line, columns } => self.bad(
                line,
                None,
                None,
                format!("row has {columns} columns; the header has {}", self.width),
            ),
            Fields::NotUtf8 { line, column } => self.bad(
                line,
                None,
                None,
                format!("not UTF-8 (column {})", column + 1),
            ),
            Fields::TooLarge { line } if self.skip_too_large => {
                self.bad(line, None, None, too_large())
            }
            Fields::TooLarge { line } => {
                self.done = true;
                return Some(Err(LoadError::TooLarge {
                    path: self.path.to_owned(),
                    line,
                }));
            }
        }))
    }
}

/// The first likely separator other than `delimiter` that splits the header into names with a
/// `prompt` or `request` column among them.
fn other_delimiter(headers: &[String], delimiter: u8) -> Option<(u8, Vec<String>)> {
    let line = headers.join(&char::from(delimiter).to_string());
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

fn parse_template(template: &str, headers: &[String]) -> Result<Vec<Piece>, String> {
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
