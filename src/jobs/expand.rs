//! What a record becomes: defaults filled in, fanned out over models, validated, and
//! written as the rows of the store.

use super::ids::unnamed;
use super::{InputError, LoadOptions, RawRecord, sha256_hex};
use crate::request;
use crate::store::{JobState, NewJob};
use serde_json::{Map, Value};

/// A record with defaults and fan-out applied, found valid, before its requests are written.
pub(super) struct Prepared {
    id: String,
    line: u64,
    body: Map<String, Value>,
    models: Vec<String>,
    tags: Option<String>,
    expect: Option<String>,
}

/// Applies defaults and fan-out to records and validates bodies.
pub(super) struct Expander<'a> {
    options: &'a LoadOptions,
    path: &'a str,
}

pub(super) type Rejection = (Option<String>, InputError);

impl<'a> Expander<'a> {
    pub(super) fn new(options: &'a LoadOptions, path: &'a str) -> Self {
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
    pub(super) fn duplicate(&self, id: &str, line: u64, first: u64) -> Rejection {
        let error = self.error(
            line,
            Some("custom_id"),
            format!("duplicate id `{id}` (first used on line {first})"),
        );
        (Some(format!("{id}@line-{line}")), error)
    }

    /// Validates a record whose id was first used on line `first` (`None`: it is its own).
    pub(super) fn prepare(
        &self,
        record: RawRecord,
        first: Option<u64>,
    ) -> Result<Prepared, Rejection> {
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
    pub(super) fn requests_of(
        &self,
        record: RawRecord,
    ) -> Result<Vec<(String, String)>, Rejection> {
        self.prepare(record, None)
            .and_then(|mut prepared| self.requests(&mut prepared))
    }

    /// The rows of a record: one per model and sample (`--repeat`), a model's samples
    /// together.
    pub(super) fn jobs(&self, mut prepared: Prepared) -> Result<Vec<NewJob>, Rejection> {
        let requests = self.requests(&mut prepared)?;
        // Each request is the body as serde_json writes it, which reads back to the same
        // bytes: without `stream`, it is its batch params as sent.
        let params_max_tokens = (!prepared.body.contains_key("stream")).then(|| {
            prepared
                .body
                .get("max_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        });
        let repeat = self.options.repeat.max(1);
        let mut jobs = Vec::with_capacity(requests.len() * repeat as usize);
        for (model, request) in requests {
            let first = jobs.len();
            jobs.push(NewJob {
                job_id: prepared.id.clone(),
                model,
                sample: 0,
                line: prepared.line,
                request_sha256: sha256_hex(request.as_bytes()),
                request,
                tags: prepared.tags.clone(),
                expect: prepared.expect.clone(),
                state: JobState::Pending,
                error: None,
                params_max_tokens,
            });
            for sample in 1..repeat {
                let mut next = jobs[first].clone();
                next.sample = sample;
                jobs.push(next);
            }
        }
        Ok(jobs)
    }

    /// The row that records a bad line in a run started with `--skip-invalid`.
    pub(super) fn rejected(&self, id: Option<String>, error: &InputError) -> NewJob {
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
            sample: 0,
            line: error.line,
            request: String::new(),
            request_sha256: String::new(),
            tags: None,
            expect: None,
            state: JobState::Rejected,
            error: Some(reason),
            params_max_tokens: None,
        }
    }
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
