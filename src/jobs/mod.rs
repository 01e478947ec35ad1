//! Job input: streaming readers for JSONL and CSV files, defaults, fan-out over models,
//! validation, and the [`Loader`] that turns a file into store rows.
//!
//! A file is read one record at a time, so its size does not bound memory. Every bad record
//! becomes an [`InputError`] naming the file, the line and the field.

mod csv;
mod jsonl;
mod lines;
mod source;

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::request;
use crate::store::{JobState, NewJob};
use serde_json::{Map, Value};

pub use lines::{Line, LineReader};
pub use source::{Compression, check_readable};

/// Fatal problems with a job file as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("cannot read job file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{path}: line {line}: {}; nothing after it was read (pass --skip-invalid to record it as rejected and read on)",
        too_large()
    )]
    TooLarge { path: String, line: u64 },
}

/// The most bytes one record of a job file may take: the API's request size and a margin
/// for what msgbatch takes out of a record (`custom_id`, `tags`, `expect`) or a CSV row's
/// quoting. A longer record is never held whole, however long it is.
pub const MAX_RECORD_BYTES: usize = request::MAX_BODY_BYTES + (1 << 20);

/// Why a record over [`MAX_RECORD_BYTES`] is refused.
fn too_large() -> String {
    format!("record larger than {} MB", MAX_RECORD_BYTES >> 20)
}

/// One bad record: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub path: String,
    pub line: u64,
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.path, self.line)?;
        if let Some(field) = &self.field {
            write!(f, "`{field}` ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Values that fill what a record lacks.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Defaults {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub system: Option<String>,
    pub temperature: Option<f64>,
    /// Send every job as a streaming request.
    pub stream: bool,
}

/// A record as read, before defaults and fan-out.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub line: u64,
    pub id: Option<String>,
    pub body: Map<String, Value>,
    pub tags: Option<Map<String, Value>>,
    pub expect: Option<Value>,
}

/// What a reader yields for each record.
#[derive(Debug)]
pub enum ReadItem {
    Record(RawRecord),
    /// A record that could not be read; `id` is kept when it was readable.
    Bad {
        id: Option<String>,
        error: InputError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Jsonl,
    Csv { delimiter: u8 },
}

impl InputFormat {
    /// Chooses the format from the file name, under any `.gz` or `.zst`: `.csv` and `.tsv` are
    /// tables, anything else is JSONL.
    pub fn from_path(path: &Path) -> Self {
        let inner = match Compression::from_extension(path) {
            Compression::None => path.to_path_buf(),
            _ => path.with_extension(""),
        };
        match source::extension(&inner).as_deref() {
            Some("csv") => Self::Csv { delimiter: b',' },
            Some("tsv") => Self::Csv { delimiter: b'\t' },
            _ => Self::Jsonl,
        }
    }

    /// The format of a file read with `--delimiter`, when given: a table with that separator,
    /// whatever the file's name.
    pub fn with_delimiter(path: &Path, delimiter: Option<u8>) -> Self {
        match delimiter {
            Some(delimiter) => Self::Csv { delimiter },
            None => Self::from_path(path),
        }
    }

    /// `JSONL`, `CSV`, `TSV` or `CSV (delimiter ';')`.
    pub fn describe(self) -> String {
        match self {
            Self::Jsonl => "JSONL".to_owned(),
            Self::Csv { delimiter: b',' } => "CSV".to_owned(),
            Self::Csv { delimiter: b'\t' } => "TSV".to_owned(),
            Self::Csv { delimiter } => format!("CSV (delimiter `{}`)", char::from(delimiter)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The job file; `-` reads standard input.
    pub path: PathBuf,
    pub format: InputFormat,
    pub defaults: Defaults,
    /// Fan every job out to each of these models (overriding the record's own model).
    pub models: Vec<String>,
    /// Template for the user turn of CSV rows, with `{{column}}` placeholders.
    pub prompt_template: Option<String>,
    /// The grader the CSV `expected` column becomes: `equals`, `contains` or `regex`.
    pub expect_kind: &'static str,
    /// A record larger than [`MAX_RECORD_BYTES`] is a bad record and reading goes on
    /// (`--skip-invalid`); otherwise it stops the reading at once, so that an endless line
    /// (`/dev/zero`, a decompression bomb) costs no more than the bound.
    pub skip_invalid: bool,
}

/// What loading a file produced.
#[derive(Debug, Default)]
pub struct LoadSummary {
    /// Jobs ready to send (one per record and model).
    pub jobs: u64,
    /// Records that were bad, first ones kept in `errors`.
    pub bad_records: u64,
    pub errors: Vec<InputError>,
    /// Of the file as given, compressed or not.
    pub sha256: String,
    /// The format and compression read, e.g. `CSV (delimiter ';'), gzip`.
    pub format: String,
}

/// Jobs handed over together while loading.
pub type NewJobChunk = Vec<NewJob>;

/// Request bytes a chunk holds at most (a chunk also ends at `chunk_size` jobs): a file of
/// large requests is not held a whole chunk of thousands at a time. Three chunks are alive at
/// once while loading (one read, one waiting, one being inserted), each of its requests with
/// up to as much again of spare capacity.
const CHUNK_BYTES: usize = 256 << 10;

/// How many bad records are kept for display; the rest are only counted.
const KEPT_ERRORS: usize = 1000;

/// Reads a job file and hands its rows to `sink` in chunks, in one pass: duplicate ids are
/// found as they are read.
///
/// Bad records are returned in the summary; when `keep_rejected` is set they are also handed
/// to `sink` as `rejected` jobs so that the run records them.
pub fn load(
    options: &LoadOptions,
    keep_rejected: bool,
    chunk_size: usize,
    sink: impl FnMut(Vec<NewJob>) -> anyhow::Result<()>,
) -> anyhow::Result<LoadSummary> {
    let input = source::open(&options.path)?;
    load_from(options, input, keep_rejected, chunk_size, sink)
}

/// Reads jobs from `input` as [`load`] reads the file `options.path` names (which gives the
/// name errors carry and, by its extension, the compression and format).
pub fn load_from(
    options: &LoadOptions,
    input: impl io::Read,
    keep_rejected: bool,
    chunk_size: usize,
    sink: impl FnMut(Vec<NewJob>) -> anyhow::Result<()>,
) -> anyhow::Result<LoadSummary> {
    let pass = LoadPass {
        keep_rejected,
        ids: Ids::track(),
        after_line: 0,
    };
    pass.run(options, input, chunk_size, sink)
}

/// What [`check`] found in a whole job file, without keeping its records: enough to refuse
/// a bad file before anything is stored or sent, and to load it afterwards in a second pass
/// ([`load_checked`]) that needs no memory for ids.
#[derive(Debug, Default)]
pub struct Checked {
    pub summary: LoadSummary,
    /// The jobs of each model, bad records left out.
    pub models: std::collections::BTreeMap<String, u64>,
    /// Records whose id an earlier record took, in line order.
    duplicates: Vec<Duplicate>,
}

#[derive(Debug, Clone, Copy)]
struct Duplicate {
    line: u64,
    first: u64,
}

/// Reads a whole job file and validates every record as loading would, building no rows.
///
/// Ids are kept only as 128-bit hashes with their lines, in a list sorted once at the end (24
/// bytes an id, where a map would need three times as much while it grows); a file with
/// duplicates is read a third time for what they replace.
pub fn check(options: &LoadOptions) -> anyhow::Result<Checked> {
    let display = options.path.display().to_string();
    let expander = Expander::new(options, &display);
    let keys = IdKeys::default();
    let mut uses = Vec::new();
    let mut checked = Checked::default();
    let summary = &mut checked.summary;
    let models = &mut checked.models;
    let (sha256, format) = read(options, &display, source::open(&options.path)?, |item| {
        let outcome = match item {
            ReadItem::Record(record) => {
                uses.push(IdUse {
                    hash: keys.hash(record.id.as_deref(), record.line),
                    line: record.line,
                });
                expander.requests_of(record)
            }
            ReadItem::Bad { id, error } => Err((id, error)),
        };
        match outcome {
            Ok(requests) => {
                summary.jobs += requests.len() as u64;
                for (model, _) in requests {
                    *models.entry(model).or_default() += 1;
                }
            }
            Err((_, error)) => summary.bad(error),
        }
        Ok(())
    })?;
    checked.summary.sha256 = sha256;
    checked.summary.format = format;
    checked.duplicates = duplicates(uses);
    if !checked.duplicates.is_empty() {
        count_duplicates(options, &display, &expander, &mut checked)?;
    }
    Ok(checked)
}

/// An id's hash and the line of the record that used it.
struct IdUse {
    hash: [u64; 2],
    line: u64,
}

/// The records whose id an earlier record used, in line order.
fn duplicates(mut uses: Vec<IdUse>) -> Vec<Duplicate> {
    uses.sort_unstable_by_key(|u| (u.hash, u.line));
    let mut found = Vec::new();
    for group in uses.chunk_by(|a, b| a.hash == b.hash) {
        let first = group[0].line;
        found.extend(group[1..].iter().map(|u| Duplicate {
            line: u.line,
            first,
        }));
    }
    found.sort_unstable_by_key(|d| d.line);
    found
}

/// Reads the records of `checked`'s duplicates again: each is a bad record for its duplicate
/// id, as one pass ([`load`]) reports it, whatever the first reading counted it as.
fn count_duplicates(
    options: &LoadOptions,
    display: &str,
    expander: &Expander<'_>,
    checked: &mut Checked,
) -> anyhow::Result<()> {
    let mut duplicates = checked.duplicates.iter().peekable();
    let summary = &mut checked.summary;
    let models = &mut checked.models;
    let mut errors = Vec::new();
    read(options, display, source::open(&options.path)?, |item| {
        let ReadItem::Record(record) = item else {
            return Ok(());
        };
        while duplicates.next_if(|d| d.line < record.line).is_some() {}
        let Some(duplicate) = duplicates.next_if(|d| d.line == record.line) else {
            return Ok(());
        };
        let line = record.line;
        let id = record.id.clone().unwrap_or_else(|| unnamed(line));
        match expander.requests_of(record) {
            Ok(requests) => {
                summary.jobs -= requests.len() as u64;
                for (model, _) in requests {
                    if let Some(n) = models.get_mut(&model) {
                        *n -= 1;
                        if *n == 0 {
                            models.remove(&model);
                        }
                    }
                }
                summary.bad_records += 1;
            }
            // Counted bad already: its duplicate id is what is reported.
            Err(_) => summary.errors.retain(|e| e.line != line),
        }
        errors.push(expander.duplicate(&id, line, duplicate.first).1);
        Ok(())
    })?;
    summary.errors.extend(errors);
    summary.errors.sort_by_key(|e| e.line);
    summary.errors.truncate(KEPT_ERRORS);
    Ok(())
}

/// Loads a file that [`check`] has passed, skipping the records on lines up to `after_line`
/// (those a partly loaded run has stored already). The file is read again: what differs from
/// what was checked (its sha256, its jobs, its bad records) is an error, and the jobs stored
/// before it are kept.
pub fn load_checked(
    options: &LoadOptions,
    checked: &Checked,
    keep_rejected: bool,
    after_line: u64,
    chunk_size: usize,
    sink: impl FnMut(Vec<NewJob>) -> anyhow::Result<()>,
) -> anyhow::Result<LoadSummary> {
    let input = source::open(&options.path)?;
    let pass = LoadPass {
        keep_rejected,
        ids: Ids::Known {
            duplicates: &checked.duplicates,
            next: 0,
        },
        after_line,
    };
    let summary = pass.run(options, input, chunk_size, sink)?;
    let path = options.path.display();
    if summary.sha256 != checked.summary.sha256 {
        anyhow::bail!(
            "{path} changed while it was being loaded (its sha256 is not the one checked before sending)"
        );
    }
    if after_line == 0
        && (summary.jobs, summary.bad_records)
            != (checked.summary.jobs, checked.summary.bad_records)
    {
        anyhow::bail!(
            "{path} changed while it was being loaded: it now makes {} jobs and {} bad records, where the check before sending found {} and {}",
            summary.jobs,
            summary.bad_records,
            checked.summary.jobs,
            checked.summary.bad_records
        );
    }
    Ok(summary)
}

impl LoadSummary {
    fn bad(&mut self, error: InputError) {
        self.bad_records += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(error);
        }
    }
}

/// Reads the records of `input` in order and hands each to `each`; returns the sha256 of the
/// bytes as given and the format and compression read.
fn read(
    options: &LoadOptions,
    display: &str,
    input: impl io::Read,
    mut each: impl FnMut(ReadItem) -> anyhow::Result<()>,
) -> anyhow::Result<(String, String)> {
    let mut hashing = source::HashingReader::new(input);
    let format;
    {
        let (text, compression) = source::decompress(&mut hashing, &options.path)?;
        format = match compression.name() {
            Some(name) => format!("{}, {name}", options.format.describe()),
            None => options.format.describe(),
        };
        let items: Box<dyn Iterator<Item = Result<ReadItem, LoadError>>> = match options.format {
            InputFormat::Jsonl => {
                Box::new(jsonl::JsonlReader::new(text, display, options.skip_invalid))
            }
            InputFormat::Csv { delimiter } => Box::new(csv::CsvReader::new(
                text,
                display,
                delimiter,
                options.prompt_template.as_deref(),
                options.expect_kind,
                options.skip_invalid,
            )?),
        };
        for item in items {
            each(item?)?;
        }
    }
    Ok((hashing.finish(), format))
}

/// A pass that builds the rows of a file.
struct LoadPass<'a> {
    keep_rejected: bool,
    ids: Ids<'a>,
    /// Records on lines up to this one are skipped.
    after_line: u64,
}

impl LoadPass<'_> {
    fn run(
        mut self,
        options: &LoadOptions,
        input: impl io::Read,
        chunk_size: usize,
        mut sink: impl FnMut(Vec<NewJob>) -> anyhow::Result<()>,
    ) -> anyhow::Result<LoadSummary> {
        let display = options.path.display().to_string();
        let expander = Expander::new(options, &display);
        let mut summary = LoadSummary::default();
        let mut chunk = Vec::with_capacity(chunk_size);
        let mut chunk_bytes = 0;
        let (sha256, format) = read(options, &display, input, |item| {
            let outcome = match item {
                ReadItem::Record(record) => {
                    let first = self.ids.first_use(record.id.as_deref(), record.line);
                    if record.line <= self.after_line {
                        return Ok(());
                    }
                    expander
                        .prepare(record, first)
                        .and_then(|prepared| expander.jobs(prepared))
                }
                ReadItem::Bad { error, .. } if error.line <= self.after_line => return Ok(()),
                ReadItem::Bad { id, error } => Err((id, error)),
            };
            match outcome {
                Ok(jobs) => {
                    summary.jobs += jobs.len() as u64;
                    chunk_bytes += jobs.iter().map(|j| j.request.len()).sum::<usize>();
                    chunk.extend(jobs);
                }
                Err((id, error)) => {
                    if self.keep_rejected {
                        chunk.push(expander.rejected(id, &error));
                    }
                    summary.bad(error);
                }
            }
            // A chunk ends between records: a record's jobs are stored together or not at all.
            if chunk.len() >= chunk_size || chunk_bytes >= CHUNK_BYTES {
                sink(std::mem::take(&mut chunk))?;
                chunk_bytes = 0;
            }
            Ok(())
        })?;
        if !chunk.is_empty() {
            sink(chunk)?;
        }
        summary.sha256 = sha256;
        summary.format = format;
        Ok(summary)
    }
}

/// The two keys of an id's 128-bit hash.
#[derive(Default)]
struct IdKeys(
    std::collections::hash_map::RandomState,
    std::collections::hash_map::RandomState,
);

impl IdKeys {
    /// The hash of a record's id (a record without one is `line-<n>`).
    fn hash(&self, id: Option<&str>, line: u64) -> [u64; 2] {
        let hash = |id: &str| [self.0.hash_one(id), self.1.hash_one(id)];
        match id {
            Some(id) => hash(id),
            None => hash(&unnamed(line)),
        }
    }
}

/// Which earlier record, if any, took a record's id.
enum Ids<'a> {
    /// Ids seen so far, as 128-bit hashes with the line that used them.
    Track {
        seen: HashMap<[u64; 2], u64>,
        keys: IdKeys,
    },
    /// The duplicates a check found, in line order, met in turn.
    Known {
        duplicates: &'a [Duplicate],
        next: usize,
    },
}

impl Ids<'_> {
    fn track() -> Self {
        Self::Track {
            seen: HashMap::new(),
            keys: IdKeys::default(),
        }
    }

    /// The line that first used the id of the record on `line`, or `None` when the id is its
    /// own.
    fn first_use(&mut self, id: Option<&str>, line: u64) -> Option<u64> {
        match self {
            Self::Track { seen, keys } => match seen.entry(keys.hash(id, line)) {
                std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(line);
                    None
                }
            },
            Self::Known { duplicates, next } => {
                while duplicates.get(*next).is_some_and(|d| d.line < line) {
                    *next += 1;
                }
                duplicates
                    .get(*next)
                    .filter(|d| d.line == line)
                    .map(|d| d.first)
            }
        }
    }
}

/// A record with defaults and fan-out applied, found valid, before its requests are written.
struct Prepared {
    id: String,
    line: u64,
    body: Map<String, Value>,
    models: Vec<String>,
    tags: Option<String>,
    expect: Option<String>,
}

/// Applies defaults and fan-out to records and validates bodies.
struct Expander<'a> {
    options: &'a LoadOptions,
    path: &'a str,
}

type Rejection = (Option<String>, InputError);

impl<'a> Expander<'a> {
    fn new(options: &'a LoadOptions, path: &'a str) -> Self {
        Self { options, path }
    }

    fn error(&self, line: u64, field: Option<&str>, reason: impl Into<String>) -> InputError {
        InputError {
            path: self.path.to_owned(),
            line,
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }

    /// A record whose id the record on line `first` used, rejected under an id of its own.
    fn duplicate(&self, id: &str, line: u64, first: u64) -> Rejection {
        let error = self.error(
            line,
            Some("custom_id"),
            format!("duplicate id `{id}` (first used on line {first})"),
        );
        (Some(format!("{id}@line-{line}")), error)
    }

    /// Validates a record whose id was first used on line `first` (`None`: it is its own).
    fn prepare(&self, record: RawRecord, first: Option<u64>) -> Result<Prepared, Rejection> {
        let id = record.id.unwrap_or_else(|| unnamed(record.line));
        if let Some(first) = first {
            return Err(self.duplicate(&id, record.line, first));
        }

        let mut body = record.body;
        let defaults = &self.options.defaults;
        if let Some(max_tokens) = defaults.max_tokens {
            body.entry("max_tokens").or_insert(max_tokens.into());
        }
        if let Some(system) = &defaults.system {
            body.entry("system").or_insert(system.clone().into());
        }
        if let Some(temperature) = defaults.temperature {
            body.entry("temperature").or_insert(temperature.into());
        }
        if defaults.stream {
            body.insert("stream".to_owned(), Value::Bool(true));
        }
        let models: Vec<String> = if self.options.models.is_empty() {
            if let (None, Some(model)) = (body.get("model"), &defaults.model) {
                body.insert("model".to_owned(), Value::String(model.clone()));
            }
            match body.get("model") {
                Some(Value::String(model)) => vec![model.clone()],
                // Validation below names what is wrong with it.
                _ => Vec::new(),
            }
        } else {
            body.insert(
                "model".to_owned(),
                Value::String(self.options.models[0].clone()),
            );
            self.options.models.clone()
        };
        if let Err(e) = request::validate(&body) {
            return Err((Some(id), self.error(record.line, Some(&e.field), e.reason)));
        }
        if let Some(expect) = &record.expect
            && let Err(e) = crate::eval::parse(expect)
        {
            return Err((Some(id), self.error(record.line, Some(&e.field), e.reason)));
        }
        // PostgreSQL keeps no NUL in text (nor `\u0000` in JSON): refused here, on both
        // stores alike, rather than by the database halfway through storing the run.
        let nul = if id.contains('\0') {
            Some("custom_id".to_owned())
        } else {
            let tags = record
                .tags
                .as_ref()
                .and_then(|tags| nul_in_object(tags, "tags"));
            nul_in_object(&body, "").or(tags).or_else(|| {
                record
                    .expect
                    .as_ref()
                    .and_then(|e| nul_at(e, "expect".to_owned()))
            })
        };
        if let Some(field) = nul {
            let id = (!id.contains('\0')).then_some(id);
            return Err((
                id,
                self.error(
                    record.line,
                    Some(&field),
                    "contains a NUL character (\\u0000), which the store cannot keep",
                ),
            ));
        }
        Ok(Prepared {
            id,
            line: record.line,
            body,
            models,
            tags: record.tags.map(|t| Value::Object(t).to_string()),
            expect: record.expect.map(|e| e.to_string()),
        })
    }

    /// The request body of each model a record fans out to, each within the API's size.
    fn requests(&self, prepared: &mut Prepared) -> Result<Vec<(String, String)>, Rejection> {
        let mut requests = Vec::with_capacity(prepared.models.len());
        for model in &prepared.models {
            prepared
                .body
                .insert("model".to_owned(), Value::String(model.clone()));
            let request =
                serde_json::to_string(&prepared.body).expect("a JSON map always serializes");
            if request.len() > request::MAX_BODY_BYTES {
                return Err((
                    Some(prepared.id.clone()),
                    self.error(
                        prepared.line,
                        None,
                        format!(
                            "request is {} bytes; the API accepts at most {}",
                            request.len(),
                            request::MAX_BODY_BYTES
                        ),
                    ),
                ));
            }
            requests.push((model.clone(), request));
        }
        Ok(requests)
    }

    /// The request bodies a record whose id is its own makes, or why it makes none.
    fn requests_of(&self, record: RawRecord) -> Result<Vec<(String, String)>, Rejection> {
        self.prepare(record, None)
            .and_then(|mut prepared| self.requests(&mut prepared))
    }

    /// The rows of a record: one per model.
    fn jobs(&self, mut prepared: Prepared) -> Result<Vec<NewJob>, Rejection> {
        let requests = self.requests(&mut prepared)?;
        Ok(requests
            .into_iter()
            .map(|(model, request)| NewJob {
                job_id: prepared.id.clone(),
                model,
                line: prepared.line,
                request_sha256: sha256_hex(request.as_bytes()),
                request,
                tags: prepared.tags.clone(),
                expect: prepared.expect.clone(),
                state: JobState::Pending,
                error: None,
            })
            .collect())
    }

    /// The row that records a bad line in a run started with `--skip-invalid`.
    fn rejected(&self, id: Option<String>, error: &InputError) -> NewJob {
        // What the record held is quoted in the reason, and may hold a NUL, which a
        // PostgreSQL store cannot keep.
        let job_id = id
            .filter(|id| !id.contains('\0'))
            .unwrap_or_else(|| unnamed(error.line));
        let reason = match &error.field {
            Some(field) => format!("`{field}` {}", error.reason),
            None => error.reason.clone(),
        }
        .replace('\0', "\\u0000");
        NewJob {
            job_id,
            model: String::new(),
            line: error.line,
            request: String::new(),
            request_sha256: String::new(),
            tags: None,
            expect: None,
            state: JobState::Rejected,
            error: Some(reason),
        }
    }
}

/// The id of a record that gives none: its line.
fn unnamed(line: u64) -> String {
    format!("line-{line}")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Whether a NUL character appears in `value`, in a key or a string anywhere within. Every
/// record is looked at this way; only one that has a NUL is walked again for its field.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(object) => object
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

/// The field of `object` (named under `prefix`) where a NUL character first appears, in a
/// key or in a string anywhere within.
fn nul_in_object(object: &Map<String, Value>, prefix: &str) -> Option<String> {
    if !object
        .iter()
        .any(|(key, value)| key.contains('\0') || has_nul(value))
    {
        return None;
    }
    object.iter().find_map(|(key, value)| {
        let field = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if key.contains('\0') {
            Some(field.replace('\0', "\\u0000"))
        } else {
            nul_at(value, field)
        }
    })
}

/// The field within `value` (which stands at `field`) where a NUL character first appears.
fn nul_at(value: &Value, field: String) -> Option<String> {
    if !has_nul(value) {
        return None;
    }
    match value {
        Value::String(text) => text.contains('\0').then_some(field),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, format!("{field}[{i}]"))),
        Value::Object(object) => nul_in_object(object, &field),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(super) fn load_text(name: &str, text: &str, models: &[&str]) -> (LoadSummary, Vec<NewJob>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let options = LoadOptions {
            format: InputFormat::from_path(&path),
            path,
            defaults: Defaults {
                max_tokens: Some(64),
                ..Defaults::default()
            },
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            prompt_template: None,
            expect_kind: "equals",
            skip_invalid: true,
        };
        let mut jobs = Vec::new();
        let summary = load(&options, true, 3, |chunk| {
            jobs.extend(chunk);
            Ok(())
        })
        .unwrap();
        (summary, jobs)
    }

    #[test]
    fn a_checked_file_loads_as_one_pass_would_and_a_changed_one_is_refused() {
        let text = concat!(
            r#"{"custom_id":"x","params":{"messages":[{"role":"user","content":"one"}]}}"#,
            "\n",
            r#"{"custom_id":"x","params":{"messages":[{"role":"user","content":"again"}]}}"#,
            "\n",
            "{not json\n",
            r#"{"params":{"messages":[{"role":"user","content":"two"}]}}"#,
            "\n",
            r#"{"custom_id":"y","params":{"messages":[]}}"#,
            "\n",
            r#"{"custom_id":"z","params":{"messages":[{"role":"user","content":"three"}]}}"#,
            "\n",
            r#"{"custom_id":"z","params":{"messages":[]}}"#,
            "\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.jsonl");
        std::fs::write(&path, text).unwrap();
        let options = LoadOptions {
            format: InputFormat::Jsonl,
            path: path.clone(),
            defaults: Defaults {
                max_tokens: Some(64),
                ..Defaults::default()
            },
            models: vec!["m1".to_owned(), "m2".to_owned()],
            prompt_template: None,
            expect_kind: "equals",
            skip_invalid: true,
        };
        let rows =
            |jobs: &[NewJob]| -> Vec<(String, String, u64, String, JobState, Option<String>)> {
                jobs.iter()
                    .map(|j| {
                        let j = j.clone();
                        (j.job_id, j.model, j.line, j.request, j.state, j.error)
                    })
                    .collect()
            };
        let mut once = Vec::new();
        let single = load(&options, true, 2, |chunk| {
            once.extend(chunk);
            Ok(())
        })
        .unwrap();

        let checked = check(&options).unwrap();
        assert_eq!(
            (checked.summary.jobs, checked.summary.bad_records),
            (single.jobs, single.bad_records)
        );
        assert_eq!((single.jobs, single.bad_records), (6, 4));
        assert_eq!(checked.summary.errors, single.errors);
        assert_eq!(checked.summary.sha256, single.sha256);
        assert_eq!(
            checked.models.into_iter().collect::<Vec<_>>(),
            [("m1".to_owned(), 3), ("m2".to_owned(), 3)]
        );
        let checked = check(&options).unwrap();
        let mut twice = Vec::new();
        let second = load_checked(&options, &checked, true, 0, 2, |chunk| {
            twice.extend(chunk);
            Ok(())
        })
        .unwrap();
        assert_eq!(second.errors, single.errors);
        assert_eq!(
            rows(&twice),
            rows(&once),
            "the duplicate is rejected as in one pass"
        );

        // A partly loaded run goes on after its last stored line.
        let mut rest = Vec::new();
        load_checked(&options, &checked, true, 3, 2, |chunk| {
            rest.extend(chunk);
            Ok(())
        })
        .unwrap();
        let after: Vec<NewJob> = once.into_iter().filter(|j| j.line > 3).collect();
        assert_eq!(rows(&rest), rows(&after));

        // A file that changed after its check is refused, naming it.
        std::fs::write(&path, text.replace("three", "four")).unwrap();
        let error = load_checked(&options, &checked, true, 0, 2, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("jobs.jsonl changed while it was being loaded"),
            "{error}"
        );
    }

    #[test]
    fn both_jsonl_shapes_load_and_fan_out() {
        let text = concat!(
            r#"{"model":"a","max_tokens":5,"messages":[{"role":"user","content":"one"}],"tags":{"set":"x"}}"#,
            "\n\n",
            r#"{"custom_id":"q-2","params":{"messages":[{"role":"user","content":"two"}],"cache_control":{"type":"ephemeral"},"future_field":[1]}}"#,
            "\n",
        );
        let (summary, jobs) = load_text("jobs.jsonl", text, &["m1", "m2"]);
        assert_eq!(summary.bad_records, 0, "{:?}", summary.errors);
        assert_eq!(summary.jobs, 4);
        let ids: Vec<_> = jobs
            .iter()
            .map(|j| (j.job_id.as_str(), j.model.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("line-1", "m1"),
                ("line-1", "m2"),
                ("q-2", "m1"),
                ("q-2", "m2")
            ]
        );
        let body: Value = serde_json::from_str(&jobs[2].request).unwrap();
        // Unknown fields pass through; msgbatch's own keys do not reach the API.
        assert_eq!(body["future_field"], serde_json::json!([1]));
        assert_eq!(body["cache_control"]["type"], "ephemeral");
        assert_eq!(body["max_tokens"], 64);
        assert!(body.get("custom_id").is_none());
        let first: Value = serde_json::from_str(&jobs[0].request).unwrap();
        assert!(first.get("tags").is_none());
        assert_eq!(jobs[0].tags.as_deref(), Some(r#"{"set":"x"}"#));
    }

    #[test]
    fn every_bad_line_is_reported_with_line_and_field() {
        let text = concat!(
            r#"{"model":"a","messages":[{"role":"user","content":"ok"}]}"#,
            "\n",
            "{not json\n",
            r#"{"model":"a","messages":[]}"#,
            "\n",
            r#"{"model":"a","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            "\n",
            r#"{"model":"a","messages":[{"role":"robot","content":"x"}]}"#,
            "\n",
            r#"{"custom_id":"dup","params":{"model":"a","messages":[{"role":"user","content":"x"}]}}"#,
            "\n",
            r#"{"custom_id":"dup","params":{"model":"a","messages":[{"role":"user","content":"y"}]}}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"no model"}]}"#,
            "\n",
            "[1,2]\n",
        );
        let (summary, jobs) = load_text("bad.jsonl", text, &[]);
        let found: Vec<(u64, Option<&str>)> = summary
            .errors
            .iter()
            .map(|e| (e.line, e.field.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (2, None),
                (3, Some("messages")),
                (4, Some("max_tokens")),
                (5, Some("messages[0].role")),
                (7, Some("custom_id")),
                (8, Some("model")),
                (9, None),
            ]
        );
        assert!(
            summary.errors[0]
                .to_string()
                .starts_with(&format!("{}:2: invalid JSON", summary.errors[0].path))
        );
        assert!(summary.errors[4].reason.contains("first used on line 6"));
        // Kept as rejected rows with unique ids.
        let rejected: Vec<_> = jobs
            .iter()
            .filter(|j| j.state == JobState::Rejected)
            .map(|j| j.job_id.as_str())
            .collect();
        assert_eq!(
            rejected,
            [
                "line-2",
                "line-3",
                "line-4",
                "line-5",
                "dup@line-7",
                "line-8",
                "line-9"
            ]
        );
    }

    mod line_numbers {
        use super::load_text;
        use proptest::prelude::*;

        const ENDINGS: [&str; 3] = ["\n", "\r\n", "\r"];

        /// A file of good records with one bad record, built from the choices: each record's
        /// kind (0 plain, 1 spans lines, 2 followed by a blank line where the format allows),
        /// its line ending and that of any line break inside it. Returns the text and the line
        /// the bad record starts on.
        fn build(
            csv: bool,
            bom: bool,
            records: &[(u8, usize, usize)],
            bad_at: usize,
        ) -> (String, u64) {
            let mut text = String::new();
            if bom {
                text.push('\u{feff}');
            }
            let mut line = 1_u64;
            if csv {
                text.push_str("id,prompt,model,max_tokens\n");
                line += 1;
            }
            let mut bad_line = 0;
            for (i, (kind, ending, inner)) in records.iter().enumerate() {
                let ending = ENDINGS[*ending];
                let inner = ENDINGS[*inner];
                let max_tokens = if i == bad_at {
                    bad_line = line;
                    if csv { "lots" } else { "\"lots\"" }
                } else {
                    "5"
                };
                let spans = csv && *kind == 1;
                let prompt = if spans {
                    format!("first{inner}second")
                } else {
                    "one".to_owned()
                };
                if csv {
                    text.push_str(&format!("r{i},\"{prompt}\",m,{max_tokens}{ending}"));
                } else {
                    text.push_str(&format!(
                        r#"{{"custom_id":"r{i}","params":{{"model":"m","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"{prompt}"}}]}}}}{ending}"#
                    ));
                }
                line += 1 + u64::from(spans);
                if !csv && *kind == 2 {
                    text.push_str(ending);
                    line += 1;
                }
            }
            (text, bad_line)
        }

        fn check(csv: bool, bom: bool, records: &[(u8, usize, usize)], bad: usize) {
            let bad_at = bad % records.len();
            let (text, expected) = build(csv, bom, records, bad_at);
            let name = if csv { "jobs.csv" } else { "jobs.jsonl" };
            let (summary, jobs) = load_text(name, &text, &[]);
            assert_eq!(summary.bad_records, 1, "{text:?}: {:?}", summary.errors);
            let error = &summary.errors[0];
            assert_eq!(error.line, expected, "{text:?}");
            assert_eq!(error.field.as_deref(), Some("max_tokens"), "{text:?}");
            assert_eq!(jobs.len(), records.len());
        }

        proptest! {
            #[test]
            fn a_bad_csv_row_is_named_by_the_line_it_starts_on(
                bom in any::<bool>(),
                records in prop::collection::vec((0_u8..3, 0_usize..3, 0_usize..3), 1..12),
                bad in any::<usize>(),
            ) {
                check(true, bom, &records, bad);
            }

            #[test]
            fn a_bad_jsonl_record_is_named_by_its_line(
                bom in any::<bool>(),
                records in prop::collection::vec((0_u8..3, 0_usize..3, 0_usize..3), 1..12),
                bad in any::<usize>(),
            ) {
                check(false, bom, &records, bad);
            }
        }

        #[test]
        fn a_spreadsheet_csv_with_crlf_names_its_first_row_line_2() {
            let text = "id,prompt,model,max_tokens\r\na,one,m,lots\r\nb,two,m,5\r\n";
            let (summary, _) = load_text("sheet.csv", text, &[]);
            assert_eq!(summary.errors[0].line, 2);
        }
    }
}
