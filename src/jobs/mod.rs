//! Job input: streaming readers for JSONL and CSV files, defaults, fan-out over models,
//! validation, and the loading passes that turn a file into store rows.
//!
//! A file is read one record at a time, so its size does not bound memory. Every bad record
//! becomes an [`InputError`] naming the file, the line and the field.
//!
//! This module holds the data of job input and its public face; the work is done in
//! `load` (the passes over a file: [`load()`], [`check`], [`load_checked`]), `expand`
//! (defaults, fan-out over models, validation, the rows of a record), `ids` (custom ids:
//! duplicates and the id of a record that gives none) and the readers `jsonl`, `csv`,
//! `lines` and `source`.

mod csv;
mod expand;
mod ids;
mod jsonl;
mod lines;
mod load;
mod source;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::request;
use crate::store::NewJob;
use serde_json::{Map, Value};

pub use lines::{Line, LineReader};
pub use load::{Checked, check, load, load_checked, load_from};
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
    /// Samples of each job and model (`--repeat`), each its own row: at least 1.
    pub repeat: u32,
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
    /// Jobs ready to send (one per record, model and sample).
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

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobState;
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
            repeat: 1,
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
            repeat: 1,
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
    fn a_request_without_stream_is_stored_as_its_batch_params_with_its_max_tokens() {
        let text = concat!(
            r#"{"custom_id":"a","params":{"messages":[{"role":"user","content":"caf\u00e9 \"q\" \ud83d\ude00"}],"temperature":0.30000000000000004,"z":1e3,"a":[1.5e-7,18446744073709551616],"model":"x","model":"y"}}"#,
            "\n",
            r#"{"custom_id":"b","params":{"max_tokens":7,"stream":true,"messages":[{"role":"user","content":"s"}]}}"#,
            "\n",
            r#"{"custom_id":"c","params":{"stream":false,"messages":[{"role":"user","content":"t"}]}}"#,
            "\n",
            r#"{"custom_id":"d", "params": {"max_tokens": 9 ,"messages":[ {"content":"u","role":"user"} ]}}"#,
            "\n",
            "{not json\n",
        );
        let (summary, jobs) = load_text("jobs.jsonl", text, &["m1", "m2"]);
        assert_eq!((summary.jobs, summary.bad_records), (8, 1));
        let known: Vec<(&str, Option<u64>)> = jobs
            .iter()
            .map(|j| (j.job_id.as_str(), j.params_max_tokens))
            .collect();
        assert_eq!(
            known,
            [
                ("a", Some(64)),
                ("a", Some(64)),
                ("b", None),
                ("b", None),
                ("c", None),
                ("c", None),
                ("d", Some(9)),
                ("d", Some(9)),
                ("line-5", None),
            ]
        );
        // What packing takes on trust: such a request reads back to the same bytes.
        for job in jobs.iter().filter(|j| j.params_max_tokens.is_some()) {
            let read: Map<String, Value> = serde_json::from_str(&job.request).unwrap();
            assert_eq!(serde_json::to_string(&read).unwrap(), job.request);
            assert_eq!(read["max_tokens"].as_u64(), job.params_max_tokens);
        }
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
