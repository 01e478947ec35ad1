//! The passes over a job file: [`load`] in one pass, or [`check`] first and then
//! [`load_checked`], each reading the file one record at a time.

use std::io;

use super::expand::Expander;
use super::ids::{Duplicate, IdKeys, IdUse, Ids, duplicates, unnamed};
use super::{InputError, InputFormat, LoadError, LoadOptions, LoadSummary, ReadItem};
use super::{csv, jsonl, source};
use crate::store::NewJob;

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

/// Reads a whole job file and validates every record as loading would, building no rows.
///
/// Ids are kept only as 128-bit hashes with their lines, in a list sorted once at the end (24
/// bytes an id, where a map would need three times as much while it grows); a file with
/// duplicates is read a third time for what they replace.
pub fn check(options: &LoadOptions) -> anyhow::Result<Checked> {
    let display = options.path.display().to_string();
    let expander = Expander::new(options, &display);
    let keys = IdKeys::default();
    let repeat = u64::from(options.repeat.max(1));
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
                summary.jobs += requests.len() as u64 * repeat;
                for (model, _) in requests {
                    *models.entry(model).or_default() += repeat;
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

/// Reads the records of `checked`'s duplicates again: each is a bad record for its duplicate
/// id, as one pass ([`load`]) reports it, whatever the first reading counted it as.
fn count_duplicates(
    options: &LoadOptions,
    display: &str,
    expander: &Expander<'_>,
    checked: &mut Checked,
) -> anyhow::Result<()> {
    let repeat = u64::from(options.repeat.max(1));
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
                summary.jobs -= requests.len() as u64 * repeat;
                for (model, _) in requests {
                    if let Some(n) = models.get_mut(&model) {
                        *n -= repeat;
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
